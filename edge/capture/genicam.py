"""``source.kind: genicam``: GigE Vision and USB3 Vision cameras through Aravis 0.8 (PyGObject, Debian
``gir1.2-aravis-0.8``).

``source.uri`` names the camera as Aravis lists it (``arv-tool-0.8``): its device id (``Aravis-Fake-GV01``,
``Basler-21234567``), serial number, physical id (MAC) or IP address. Every open (and every reconnect: a restarted
camera forgets its settings) writes ``source.genicam`` to the camera (pixel format, sensor ROI from
``offset_x/offset_y`` and ``source.width/height``, exposure and gain with their auto modes off, ``source.fps``,
the trigger, extra ``features``), reads each back and logs what the camera made of it (``settings``).

Trigger mode (``genicam.trigger: software | hardware``): the camera takes one frame per trigger (``TriggerSoftware``
or a rising edge on ``trigger_line``). Each such frame carries a ``TriggerStamp``: the camera's frame count (the
GigE Vision block id; one per trigger) and the host time the frame arrived (``at``; ``camera_ns`` is the camera's
own timestamp). While no trigger comes the source checks the camera answers, so a stopped belt is neither a stall
nor a disconnect; a camera that stops answering is (its control channel lost, or a failed register read).

Control loss is polled (``GvDevice.is_controller``), never handled through Aravis' ``control-lost`` signal. That
signal is emitted on the device's heartbeat thread; a Python handler there holds a wrapper of the device, and if the
reader lets go of the lost camera meanwhile, the wrapper's release is the device's last reference, its finalizer
joins the heartbeat thread from that same thread and GLib aborts the process ("Resource deadlock avoided during
pthread_join"). It killed a test worker in one full test run of four here; ``tests/aravis_lost.py`` reproduces it
every time.

Frames whose packets did not all arrive are dropped (an incomplete frame would be classified as a smeared box)
and counted in ``boxinspect_camera_incomplete_frames_total``; the stream's missing packets in
``boxinspect_camera_lost_packets_total``.

Why Aravis (not harvesters + a vendor GenTL producer): it is packaged by Debian and Pi OS for arm64 and amd64
(``apt install gir1.2-aravis-0.8``), speaks GigE Vision and USB3 Vision itself with no vendor SDK, and ships a fake
GigE Vision camera (``arv-fake-gv-camera-0.8``) that speaks the real GVCP/GVSP protocol, which the tests use.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any

import cv2
import numpy as np

from edge.capture.gi_support import GiMissing, require
from edge.capture.source import Source, TriggerStamp, safe_uri
from edge.config import GenICamConfig, SourceConfig
from edge.runtime.metrics import Metrics

log = logging.getLogger(__name__)

TRIGGER_POLL_S = 0.5  # trigger mode: how often the source checks that the camera still answers
# GenICam (PFNC) Bayer names give the first row's first two pixels; OpenCV's codes name a 2x2 block one row and
# one column in, hence the crossed names (its BayerRGGB aliases say the same).
BAYER = {"BayerRG": cv2.COLOR_BayerBG2BGR, "BayerBG": cv2.COLOR_BayerRG2BGR,
         "BayerGR": cv2.COLOR_BayerGB2BGR, "BayerGB": cv2.COLOR_BayerGR2BGR}
BITS = {"8": 8, "10": 10, "12": 12, "14": 14, "16": 16}


def to_bgr(data: bytes, width: int, height: int, pixel_format: str) -> np.ndarray:
    """A frame's payload as a BGR (colour formats) or grey (Mono) uint8 image. Mono/Bayer 10-16 bit (unpacked,
    little endian) are scaled to 8 bit. ValueError for a format this does not read (packed ones, YUV)."""
    family, bits = pixel_format.rstrip("p"), 8
    for suffix, b in BITS.items():
        if family.endswith(suffix):
            family, bits = family[: -len(suffix)], b
            break
    if pixel_format.endswith("p") or family not in {"Mono", "RGB", "BGR", *BAYER}:
        raise ValueError(f"pixel format {pixel_format} is not read here: set source.genicam.pixel_format to "
                         "Mono8, Mono16, a Bayer..8/16 or RGB8")
    channels = 3 if family in ("RGB", "BGR") else 1
    if bits == 8:
        img = np.frombuffer(data, np.uint8, count=width * height * channels).reshape(height, width, channels)
    else:
        wide = np.frombuffer(data, "<u2", count=width * height * channels).reshape(height, width, channels)
        img = np.right_shift(wide, bits - 8).astype(np.uint8)
    if family in BAYER:
        return cv2.cvtColor(img[:, :, 0], BAYER[family])
    if family == "RGB":
        return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    return img[:, :, 0] if channels == 1 else img.copy()


def find_camera(Aravis: Any, wanted: str) -> tuple[str, str] | None:
    """(what to open the camera by, its name for part ids) for ``wanted`` (device id, serial, physical id or
    address), or None. A GigE Vision camera is opened by its address (the interface that reaches it), others by id."""
    Aravis.update_device_list()
    for i in range(Aravis.get_n_devices()):
        ids = (Aravis.get_device_id(i), Aravis.get_device_serial_nbr(i), Aravis.get_device_physical_id(i),
               Aravis.get_device_address(i))
        if wanted in ids:
            gige = Aravis.get_device_protocol(i) == "GigEVision" and ids[3]
            return (ids[3] if gige else ids[0]), (ids[1] or ids[0])
    return None


def _set(what: str, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as e:  # GLib.Error: the camera refused (out of range, not writable)
        raise ValueError(f"source.genicam: the camera refused {what} {args[-1] if args else ''}: {e}") from e


def _in_bounds(key: str, asked: float | None, bounds: tuple[float, float]) -> None:
    """ValueError naming the camera's range when ``asked`` is outside it (cameras clamp silently)."""
    lo, hi = bounds
    if asked is not None and not lo <= asked <= hi:
        raise ValueError(f"source.{key} = {asked:g} is outside this camera's range {lo:g} .. {hi:g}")


def configure(camera: Any, g: GenICamConfig, cfg: SourceConfig) -> dict[str, Any]:
    """Write ``g`` (and ``cfg.fps/width/height``) to the camera; what it reads back. ValueError if refused."""
    dev = camera.get_device()
    _in_bounds("genicam.exposure_us", g.exposure_us, camera.get_exposure_time_bounds())
    _in_bounds("genicam.gain_db", g.gain_db, camera.get_gain_bounds())
    _in_bounds("fps", cfg.fps, camera.get_frame_rate_bounds())
    for name, value in g.features.items():
        setter = {bool: dev.set_boolean_feature_value, int: dev.set_integer_feature_value,
                  float: dev.set_float_feature_value}.get(type(value), dev.set_string_feature_value)
        _set(f"feature {name} =", setter, name, value)
    if g.pixel_format:
        _set("pixel format", camera.set_pixel_format_from_string, g.pixel_format)
    if cfg.width or cfg.height or g.offset_x or g.offset_y:
        _, _, w, h = camera.get_region()
        _set("region", camera.set_region, g.offset_x, g.offset_y, cfg.width or w, cfg.height or h)
    if g.exposure_us is not None:
        if camera.is_exposure_auto_available():
            camera.set_exposure_time_auto(require("Aravis").Auto.OFF)
        _set("exposure time (us)", camera.set_exposure_time, g.exposure_us)
    if g.gain_db is not None:
        if camera.is_gain_auto_available():
            camera.set_gain_auto(require("Aravis").Auto.OFF)
        _set("gain (dB)", camera.set_gain, g.gain_db)
    if cfg.fps:
        _set("frame rate", camera.set_frame_rate, cfg.fps)
    if g.packet_size and camera.is_gv_device():
        _set("packet size", camera.gv_set_packet_size, g.packet_size)
    if g.trigger == "off":
        camera.clear_triggers()
    else:
        _set("trigger source", camera.set_trigger, "Software" if g.trigger == "software" else g.trigger_line)
        if g.trigger == "hardware" and dev.is_feature_available("TriggerActivation"):
            _set("trigger activation", dev.set_string_feature_value, "TriggerActivation", g.trigger_activation)
    got = read_back(camera)
    for key, asked in (("exposure_us", g.exposure_us), ("gain_db", g.gain_db), ("fps", cfg.fps)):
        if asked is not None and abs(float(got[key]) - asked) > 0.01 * max(abs(asked), 1.0):
            # cameras round to their own steps (exposure in line times, gain in raw units): say what it took
            log.warning("capture: GenICam camera set %s = %g (asked for %g)", key, got[key], asked)
    return got


def read_back(camera: Any) -> dict[str, Any]:
    """The camera's current settings, as it reports them."""
    x, y, w, h = camera.get_region()
    dev = camera.get_device()
    trigger = dev.get_string_feature_value("TriggerMode") if dev.is_feature_available("TriggerMode") else "Off"
    return {
        "pixel_format": camera.get_pixel_format_as_string(),
        "region": [x, y, w, h],
        "exposure_us": camera.get_exposure_time(),
        "gain_db": camera.get_gain(),
        "fps": camera.get_frame_rate(),
        "trigger": trigger,
        "trigger_source": dev.get_string_feature_value("TriggerSource") if trigger == "On" else None,
    }


class GenICamSource(Source):
    """One camera, acquiring. See the module docstring."""

    def __init__(self, camera: Any, name: str, g: GenICamConfig, read_timeout_s: float, metrics: Metrics | None) -> None:
        self.Aravis = require("Aravis")
        self.camera = camera
        self.name = name
        self.metrics = metrics
        self.awaits_trigger = g.trigger != "off"
        self.read_timeout_s = read_timeout_s
        self.lost = threading.Event()
        self.gige = bool(camera.is_gv_device())
        self.lost_packets = 0
        self.incomplete = 0
        self.settings = read_back(camera)
        self.fps = None if self.awaits_trigger else float(self.settings["fps"]) or None
        self.pixel_format = str(self.settings["pixel_format"])
        self.stream = camera.create_stream(None, None)
        if self.stream is None:
            raise ValueError("the camera gave no stream")
        size = camera.get_payload()
        for _ in range(g.buffers):
            self.stream.push_buffer(self.Aravis.Buffer.new_allocate(size))
        camera.set_acquisition_mode(self.Aravis.AcquisitionMode.CONTINUOUS)
        camera.start_acquisition()

    def software_trigger(self) -> None:
        """Fire the camera's TriggerSoftware (genicam.trigger: software)."""
        self.camera.software_trigger()

    def read(self, decode: bool = True) -> tuple[bool, np.ndarray | None]:
        """The next complete frame; (True, None) in trigger mode when none came within TRIGGER_POLL_S but the camera
        answers; (False, None) when the camera is lost or (free run) sent nothing within the read timeout."""
        self.stamp = None
        deadline = time.monotonic() + (TRIGGER_POLL_S if self.awaits_trigger else self.read_timeout_s)
        while not self._control_lost():
            left = deadline - time.monotonic()
            buf = self.stream.timeout_pop_buffer(max(1, int(left * 1e6))) if left > 0 else None
            self._count_losses()
            if buf is None:
                return (self._answers(), None) if self.awaits_trigger else (False, None)
            try:
                if buf.get_status() != self.Aravis.BufferStatus.SUCCESS:
                    self._incomplete(buf)
                    continue
                img = to_bgr(buf.get_data(), buf.get_image_width(), buf.get_image_height(), self.pixel_format) \
                    if decode else None
                if self.awaits_trigger:
                    self.stamp = TriggerStamp(buf.get_frame_id(), buf.get_system_timestamp() / 1e9 or time.time(),
                                              self.name)
                return True, img
            finally:
                self.stream.push_buffer(buf)
        log.warning("capture: GenICam camera %s: control lost (no heartbeat answer)", self.name)
        return False, None

    def _control_lost(self) -> bool:
        """True once a GigE Vision camera's heartbeat has lost control of it, or a register read failed (polled: see
        the module docstring for why this is not a ``control-lost`` handler)."""
        if not self.lost.is_set() and self.gige and not self.camera.get_device().is_controller():
            self.lost.set()
        return self.lost.is_set()

    def _answers(self) -> bool:
        try:
            self.camera.get_device().get_integer_feature_value("Width")
            return not self._control_lost()
        except Exception as e:  # GLib.Error: timeout on the control channel
            log.warning("capture: GenICam camera %s does not answer: %s", self.name, e)
            self.lost.set()
            return False

    def _incomplete(self, buf: Any) -> None:
        self.incomplete += 1
        if self.metrics is not None:
            self.metrics.camera_incomplete_frames.inc()
        log.debug("capture: GenICam frame %d incomplete (%s): dropped", buf.get_frame_id(), buf.get_status().value_nick)

    def _count_losses(self) -> None:
        try:
            lost = int(self.stream.get_info_uint64_by_name("n_missing_packets"))
        except Exception:  # a USB3 Vision stream has no packets
            return
        if lost > self.lost_packets and self.metrics is not None:
            self.metrics.camera_lost_packets.inc(lost - self.lost_packets)
        self.lost_packets = max(lost, self.lost_packets)

    def release(self) -> None:
        """Stop the acquisition and let go of the camera. A lost camera is let go of on a thread of its own: each
        register write to it (acquisition stop, control release) waits out Aravis' retries, and the reader should be
        reconnecting meanwhile."""
        camera, stream, self.camera, self.stream = self.camera, self.stream, None, None
        lost = self.lost.is_set()

        def close() -> None:
            nonlocal camera, stream
            if not lost:
                try:
                    camera.stop_acquisition()
                except Exception as e:  # it went between the last read and now
                    log.debug("capture: stopping the GenICam acquisition: %s", e)
            stream = camera = None  # the last references: Aravis releases the camera's control channel

        if lost:
            threading.Thread(target=close, name="genicam-release", daemon=True).start()
        else:
            close()


def _is_address(wanted: str) -> bool:
    """True for an IP address (a camera on another subnet answers to it without discovery)."""
    try:
        ipaddress.ip_address(wanted)
    except ValueError:
        return False
    return True


def open_genicam(cfg: SourceConfig, read_timeout_s: float, metrics: Metrics | None = None) -> tuple[Source | None, str]:
    """Find, configure and start the camera in ``cfg.uri``: (source, "") or (None, why not)."""
    wanted = cfg.uri.strip()
    try:
        Aravis = require("Aravis")
    except GiMissing as e:
        return None, str(e)
    found = find_camera(Aravis, wanted)
    if found is None and not _is_address(wanted):
        # Not discovered (yet: a camera just restarted, or discovery answered late under load). Opening a GigE Vision
        # camera by its id then gives a control channel whose stream delivers no frames (measured on Aravis' fake
        # camera), and a triggered camera would wait for ever looking healthy; the reconnect loop retries instead.
        return None, f"GenICam camera {safe_uri(wanted)} not discovered on any interface (yet); retrying"
    target, name = found if found is not None else (wanted, wanted)  # an address not discovered: try it directly
    try:
        camera = Aravis.Camera.new(target)
    except Exception as e:  # GLib.Error: not found / cannot connect
        return None, f"GenICam camera {safe_uri(wanted)} not found or not answering ({e})"
    try:
        settings = configure(camera, cfg.genicam, cfg)
        src = GenICamSource(camera, name, cfg.genicam, read_timeout_s, metrics)
    except Exception as e:  # the camera refused a setting, or died while being set up
        return None, f"GenICam camera {name}: {e}"
    log.info("capture: opened GenICam camera %s (%s %s, via %s): %s", name, camera.get_vendor_name(),
             camera.get_model_name(), target, settings)
    return src, ""
