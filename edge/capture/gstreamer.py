"""``source.kind: gstreamer``: frames from a GStreamer pipeline that ends in ``appsink``, through PyGObject (Gst).

``source.uri`` is the pipeline in ``gst-launch-1.0`` syntax. Its appsink (the one named ``sink``, else the only one)
is set to hand out BGR (or GRAY8) frames unless the pipeline gives it caps itself, so a ``videoconvert`` before it
is all a pipeline needs. Why PyGObject and not an OpenCV built with GStreamer: the product's OpenCV is the PyPI
wheel (no GStreamer), the bus gives the pipeline's own error message (``Could not connect to server``) for the
logs and /status, and the same ``gi`` also drives Aravis for GenICam cameras (docs/DEPLOY.md, "Cameras").

Live pipelines (a camera, ``rtspsrc``: the pipeline does not preroll) keep only the newest frame in the appsink
(``drop``, ``max-buffers=1``), and an end of stream or an error is a failure: the capture reconnects with backoff,
as for any camera. Other pipelines (``filesrc``) are files: they end at end of stream, are paced by the capture at
their frame rate (``pace: realtime``) or deliver every frame in order (``pace: fast``).

Presets (docs/DEPLOY.md, "Cameras"): ``libcamerasrc`` (Pi camera), ``nvarguscamerasrc ! nvvidconv`` (Jetson CSI),
``v4l2src`` (USB), ``rtspsrc`` with its jitter buffer (``latency``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge.capture.gi_support import GiMissing, require
from edge.capture.source import OPEN_TIMEOUT_S, Source, safe_uri
from edge.config import SourceConfig

log = logging.getLogger(__name__)

DEFAULT_CAPS = "video/x-raw,format={BGR,GRAY8}"
# source.uri for the cameras of the boards the product names (docs/DEPLOY.md, "Cameras"); tests/test_cameras.py
# parses each one whose elements this machine has
PRESETS = {
    "pi-camera": "libcamerasrc ! video/x-raw,width=1280,height=720,framerate=30/1 ! videoconvert ! appsink",
    "jetson-csi": "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
                  "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink",
    "usb": "v4l2src device=/dev/video0 ! image/jpeg,width=1280,height=720,framerate=30/1 ! jpegdec ! videoconvert ! "
           "appsink",
    "rtsp": "rtspsrc location=rtsp://user:password@camera/stream protocols=tcp latency=200 drop-on-latency=true ! "
            "decodebin ! videoconvert ! appsink",
    "jetson-rtsp": "rtspsrc location=rtsp://user:password@camera/stream protocols=tcp latency=200 drop-on-latency=true "
                   "! rtph264depay ! h264parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
                   "appsink",
}
CHANNELS = {"BGR": 3, "GRAY8": 1, "BGRx": 4, "BGRA": 4}


class GstSource(Source):
    """One playing pipeline; ``read`` pulls the appsink's next sample."""

    def __init__(self, pipeline: Any, sink: Any, live: bool, read_timeout_s: float) -> None:
        self.Gst = require("Gst")
        self.GstVideo = require("GstVideo")
        self.pipeline = pipeline
        self.sink = sink
        self.finite = not live
        self.timeout_ns = int(read_timeout_s * 1e9)
        self.bus = pipeline.get_bus()
        self.fps = _caps_fps(self.GstVideo, sink.get_static_pad("sink").get_current_caps())
        self.error = ""

    def read(self, decode: bool = True) -> tuple[bool, np.ndarray | None]:
        sample = self.sink.emit("try-pull-sample", self.timeout_ns)
        if sample is None:
            self.error = self._bus_error() or ("end of stream" if self.sink.get_property("eos") else "no frame in time")
            if not self.finite or self.error != "end of stream":
                log.warning("capture: GStreamer pipeline: %s", self.error)
            return False, None
        if not decode:
            return True, None
        if self.fps is None:
            self.fps = _caps_fps(self.GstVideo, sample.get_caps())
        return True, _to_array(self.Gst, self.GstVideo, sample)

    def _bus_error(self) -> str:
        msg = self.bus.pop_filtered(self.Gst.MessageType.ERROR)
        if msg is None:
            return ""
        err, debug = msg.parse_error()
        return f"{msg.src.get_name()}: {err.message}"

    def release(self) -> None:
        self.pipeline.set_state(self.Gst.State.NULL)


def _caps_fps(GstVideo: Any, caps: Any) -> float | None:
    if caps is None:
        return None
    info = GstVideo.VideoInfo.new_from_caps(caps)
    return info.fps_n / info.fps_d if info is not None and info.fps_n > 0 and info.fps_d > 0 else None


def _to_array(Gst: Any, GstVideo: Any, sample: Any) -> np.ndarray:
    """The sample as an HxW(xC) uint8 array (rows of the buffer's stride cut to the image's width)."""
    info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
    fmt = GstVideo.VideoFormat.to_string(info.finfo.format)
    channels = CHANNELS.get(fmt)
    if channels is None:
        raise ValueError(f"appsink delivers {fmt}; put 'videoconvert ! video/x-raw,format=BGR' before it")
    buf = sample.get_buffer()
    ok, mapped = buf.map(Gst.MapFlags.READ)
    if not ok:
        raise ValueError("cannot map the GStreamer buffer")
    try:
        stride = info.stride[0]
        rows = np.frombuffer(mapped.data, np.uint8, count=stride * info.height).reshape(info.height, stride)
        img = rows[:, : info.width * channels].reshape(info.height, info.width, channels)
        return img[:, :, 0] if channels == 1 else np.ascontiguousarray(img[:, :, :3])
    finally:
        buf.unmap(mapped)


def _find_appsink(Gst: Any, pipeline: Any) -> Any:
    """The appsink named ``sink``, else the pipeline's only appsink, else None."""
    named = pipeline.get_by_name("sink")
    if named is not None and named.get_factory().get_name() == "appsink":
        return named
    sinks, it = [], pipeline.iterate_sinks()
    while True:
        res, element = it.next()
        if res != Gst.IteratorResult.OK:
            break
        if element.get_factory().get_name() == "appsink":
            sinks.append(element)
    return sinks[0] if len(sinks) == 1 else None


def _wait_paused(Gst: Any, pipeline: Any) -> tuple[bool, str]:
    """PAUSED: (live, "") or (False, the error). A live pipeline does not preroll (NO_PREROLL)."""
    ret = pipeline.set_state(Gst.State.PAUSED)
    if ret == Gst.StateChangeReturn.ASYNC:
        ret, _, _ = pipeline.get_state(int(OPEN_TIMEOUT_S * Gst.SECOND))
    if ret == Gst.StateChangeReturn.NO_PREROLL:
        return True, ""
    if ret == Gst.StateChangeReturn.SUCCESS:
        return False, ""
    msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
    why = f"{msg.src.get_name()}: {msg.parse_error()[0].message}" if msg is not None else f"state change {ret.value_nick}"
    return False, why


def open_gstreamer(cfg: SourceConfig, read_timeout_s: float) -> tuple[Source | None, str]:
    """Parse, configure and start the pipeline in ``cfg.uri``: (source, "") or (None, why it did not open)."""
    where = f"GStreamer pipeline {safe_uri(cfg.uri)}"
    try:
        Gst = require("Gst")
    except GiMissing as e:
        return None, str(e)
    try:
        pipeline = Gst.parse_launch(cfg.uri.strip())
    except Exception as e:  # GLib.Error: the parser's message names the element or property
        return None, f"{where} does not parse: {e}"
    sink = _find_appsink(Gst, pipeline)
    if sink is None:
        return None, f"{where}: it must end in one appsink (or name one 'sink')"
    if sink.get_property("caps") is None:
        sink.set_property("caps", Gst.Caps.from_string(DEFAULT_CAPS))
    sink.set_property("emit-signals", False)
    live, why = _wait_paused(Gst, pipeline)
    if why:
        pipeline.set_state(Gst.State.NULL)
        return None, f"{where} did not start: {why}"
    # live: the newest frame only; a file: every frame, paced by the capture (pace realtime) or as fast as the loop
    # takes them (pace fast); the appsink's full queue holds the file's decoder back, never the clock
    sink.set_property("sync", False)
    sink.set_property("drop", live)
    sink.set_property("max-buffers", 1 if live else 4)
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        pipeline.set_state(Gst.State.NULL)
        return None, f"{where} did not play"
    src = GstSource(pipeline, sink, live, read_timeout_s)
    log.info("capture: opened %s (%s%s)", where, "live" if live else "file",
             f", {src.fps:g} fps" if src.fps else "")
    return src, ""
