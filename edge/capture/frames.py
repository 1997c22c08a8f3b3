"""Frames from a camera, a network stream, a video file or an image folder, with health monitoring.

A reader thread opens the source, reads frames and keeps only the newest one (``pace: realtime``), so
a slow consumer never builds up lag; a replaced frame counts as dropped. Video files and image folders
with ``pace: fast`` instead deliver every frame in order through a small bounded queue (the reader
waits for the consumer; nothing is dropped).

The source is reopened with exponential backoff when opening or reading fails. The camera state is
``ok``, ``stalled`` (open, but no new frame for ``stall_timeout_s``), ``disconnected`` (open/read
failed, retrying) or ``ended`` (file/folder finished, not looping). Each change is logged once and
published as a metric, as are a frozen-picture flag, brightness and sharpness of every frame.

Idle rate (``source.idle_fps``): the inspection loop reports after every frame whether the belt is empty
(``presence``). Once it has been empty for ``source.idle_after_s``, the reader decodes only every N-th frame
(N = camera fps / idle_fps) and only ``grab()``s the others (on a camera a buffer dequeue, no JPEG decode or
colour conversion; on a file no colour conversion); the first report of anything in the ROI brings back every
frame. Skipped frames keep their place in the frame numbering (``Frame.index`` stays the camera's frame
number) and are neither dropped nor handed out. ``pace: fast`` hands out every frame (benches and replays
decide exactly as before) unless ``idle_in_fast_pace`` is set, which replays a file as a camera that keeps up
would be decoded: the reader then waits for the loop's report on each frame before reading the next.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.capture.roi import grey_stats, small_grey
from edge.capture.source import OPEN_TIMEOUT_S, Source, TriggerStamp, safe_uri
from edge.config import SourceConfig, guess_kind
from edge.runtime.metrics import Metrics
from edge.runtime.testhooks import camera_hang
from edge.state import CameraState

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
FAST_QUEUE = 8  # frames buffered between reader and consumer with pace: fast
DEFAULT_FOLDER_FPS = 10.0
DEFAULT_FILE_FPS = 25.0
FROZEN_WIDTH = 320  # the frozen-picture check compares frames subsampled to about this width


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8
    index: int  # 0, 1, 2, ... in capture order; gaps mean dropped frames
    captured_at: float  # time.time() when the frame was read
    brightness: float = 0.0  # mean grey level 0-255 (downscaled)
    sharpness: float = 0.0  # variance of the Laplacian (downscaled)
    view: str | None = None  # several views (MultiCapture): which camera took it
    trigger: TriggerStamp | None = None  # taken on a camera trigger (GenICam trigger mode): its count and time


class _CvSource(Source):
    def __init__(self, cap: cv2.VideoCapture, finite: bool) -> None:
        self.cap = cap
        self.finite = finite
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) if finite else 0
        self.frame_count = int(count) if count and 0 < count < 1e9 else 0  # from the container; 0 = unknown

    def read(self, decode: bool = True) -> tuple[bool, np.ndarray | None]:
        if not decode:
            return bool(self.cap.grab()), None
        ok, img = self.cap.read()
        return bool(ok) and img is not None, img

    def release(self) -> None:
        self.cap.release()


class _FolderSource(Source):
    finite = True

    def __init__(self, files: list[Path], fps: float | None) -> None:
        self.files = files
        self.pos = 0
        self.fps = fps

    def read(self, decode: bool = True) -> tuple[bool, np.ndarray | None]:
        if not decode:
            self.pos += 1
            return self.pos <= len(self.files), None
        while self.pos < len(self.files):
            f = self.files[self.pos]
            self.pos += 1
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is not None:
                return True, img
            log.warning("capture: skipping unreadable image %s", f)
        return False, None


@dataclass
class _IdleRate:
    """The idle rate's bookkeeping (module docstring), by camera frame number (``Frame.index``).

    The reader asks ``should_decode()`` before each frame and says ``grabbed()`` or ``decoded()`` after it;
    the loop's ``report`` on each frame it got starts the idle rate (``idle_after_s`` of empty belt) or ends
    it (``busy``). The capture holds its lock where reader and loop meet."""

    idle_fps: float
    idle_after_s: float
    fps: Callable[[], float] = field(repr=False)  # the source's frame rate, asked only when needed
    enabled: bool = False  # the loop reports on every frame (Capture.enable_idle_rate)
    idle: bool = False  # decoding at the idle rate now
    empty_since: int | None = None  # the first frame of the current empty stretch
    since_decoded: int = 0  # frames grabbed without decoding since the last decoded one
    reported: int = -1  # the last frame the loop reported on
    delivered: int = -1  # the last frame handed out
    skipped: int = 0  # frames grabbed, not decoded
    periods: int = 0  # times the idle rate started

    def step(self) -> int:
        """Decode every ``step``-th frame while idle (camera fps / idle_fps)."""
        return max(1, round(self.fps() / self.idle_fps)) if self.idle_fps > 0 else 1

    def should_decode(self) -> bool:
        """Decode the next frame (else only grab it)."""
        return not self.idle or self.since_decoded + 1 >= self.step()

    def grabbed(self) -> None:
        """A frame was grabbed and not decoded."""
        self.since_decoded += 1
        self.skipped += 1

    def decoded(self) -> int:
        """A frame was decoded; returns how many camera frames it stands for (itself and those grabbed before it)."""
        frames, self.since_decoded = 1 + self.since_decoded, 0
        return frames

    def report(self, index: int, empty: bool) -> None:
        """The loop's report on frame ``index``: anything in the ROI ends the idle rate at once, ``idle_after_s``
        of empty belt starts it."""
        self.reported = index
        if not empty:
            self.busy(index)
        elif self.empty_since is None:
            self.empty_since = index
        elif not self.idle and index - self.empty_since >= max(1, round(self.idle_after_s * self.fps())):
            self.idle = True
            self.periods += 1
            log.debug("capture: belt empty since frame %d; decoding every %d-th frame", self.empty_since, self.step())

    def busy(self, index: int) -> None:
        """Something in the ROI on frame ``index``: decode every frame from the next one on."""
        self.empty_since = None
        if self.idle:
            self.idle = False
            log.debug("capture: frame %d: something in the ROI; decoding every frame", index)

    def restart(self) -> None:
        """A (re)connected camera starts at every frame; the idle rate starts anew."""
        self.idle, self.empty_since = False, None


class Capture:
    """Frames from ``cfg`` on a reader thread. See the module docstring."""

    def __init__(self, cfg: SourceConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.kind = cfg.kind if cfg.kind != "auto" else guess_kind(cfg.uri)
        self.fast = cfg.pace == "fast" and self.kind in ("file", "folder", "gstreamer")
        if cfg.pace == "fast" and not self.fast:
            log.info("capture: pace 'fast' applies to files and folders only; %s runs in realtime", self.kind)
        self._cond = threading.Condition(threading.RLock())
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._queue: deque[Frame] = deque()
        self._newest: Frame | None = None  # realtime: newest frame not yet returned
        self._latest: Frame | None = None
        self._state = CameraState.DISCONNECTED
        self._since = time.time()
        self._index = 0
        self._frames = 0
        self._dropped = 0
        self._reconnects = 0
        self._progress = time.monotonic()  # last frame (or end of an intentional wait)
        self._waiting = False  # pacing sleep or backpressure: no frame expected, not a stall
        self._times: deque[float] = deque(maxlen=60)
        self._prev_grey: np.ndarray | None = None
        # reader-thread buffers for the grey thumbnail (no allocation per frame)
        self._greys: list[np.ndarray] = []
        self._same = 0
        self.frozen = False
        self._first_failure_logged = False
        self.truncated: str | None = None  # "truncated at frame N of M" when a file ended early
        self.delivered_any = False  # at least one frame came from the source
        self._read_timeout_s = max(2.0, 2 * cfg.stall_timeout_s)
        self._src_fps: float | None = None
        self._open_src: Source | None = None  # the open source (software_trigger)
        # idle rate (module docstring): off until the loop calls enable_idle_rate()
        self.idle_in_fast_pace = False  # replays: decode a fast-paced file as a live camera would be (lockstep)
        self._rate = _IdleRate(cfg.idle_fps, cfg.idle_after_s, self._fps)
        if metrics is not None:
            metrics.set_camera_state(self._state)
            metrics.camera_frozen.set(0)

    # ------------------------------------------------------------------ public
    def start(self) -> Capture:
        if self._threads:
            return self
        self._stop.clear()
        reader = threading.Thread(target=self._run, name="capture-reader", daemon=True)
        watch = threading.Thread(target=self._watch, name="capture-watchdog", daemon=True)
        self._threads = [reader, watch]
        log.info("capture: starting %s source %s (pace %s)", self.kind, safe_uri(self.cfg.uri), "fast" if self.fast else "realtime")
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        wait = self._read_timeout_s + 1.0 if timeout is None else timeout
        for t in self._threads:
            t.join(wait)
            if t.is_alive():
                log.warning("capture: %s did not stop within %.1f s (blocked in a read)", t.name, wait)
        self._threads = []

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def read(self, timeout: float = 1.0) -> Frame | None:
        """The next frame (fast: in order; realtime: the newest not yet returned), or None after ``timeout``
        or once the source has ended and everything was delivered."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.fast and self._queue:
                    f = self._queue.popleft()
                    self._cond.notify_all()
                    return f
                if not self.fast and self._newest is not None:
                    f, self._newest = self._newest, None
                    return f
                if self._state == CameraState.ENDED or self._stop.is_set():
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def latest(self) -> Frame | None:
        """The newest frame captured, returned by ``read`` or not (for snapshots)."""
        return self._latest

    def enable_idle_rate(self) -> bool:
        """The loop will call ``presence`` after every frame. Returns whether the idle rate applies here
        (``source.idle_fps`` > 0, and pace realtime or ``idle_in_fast_pace``)."""
        self._rate.enabled = self.cfg.idle_fps > 0 and (not self.fast or self.idle_in_fast_pace)
        return self._rate.enabled

    def presence(self, index: int, empty: bool) -> None:
        """The loop's report on frame ``index``: is the belt empty? Anything in the ROI ends the idle rate at once
        (the next frame is decoded); ``source.idle_after_s`` of empty belt starts it."""
        if not self._rate.enabled:
            return
        with self._cond:
            self._rate.report(index, empty)
            self._cond.notify_all()

    def software_trigger(self) -> bool:
        """Fire the camera's software trigger (``source.genicam.trigger: software``). False when no camera that
        takes one is open (disconnected, or another kind of source); the camera's error is logged."""
        src = self._open_src
        fire = getattr(src, "software_trigger", None)
        if fire is None:
            return False
        try:
            fire()
            return True
        except Exception as e:  # GLib.Error from the camera: it is being lost; the reader reconnects
            log.warning("capture: software trigger failed: %s", e)
            return False

    @property
    def idle(self) -> bool:
        """Decoding at the idle rate now."""
        return self._rate.idle

    @property
    def idle_skipped(self) -> int:
        """Frames grabbed, not decoded (idle rate)."""
        return self._rate.skipped

    @property
    def idle_periods(self) -> int:
        """Times the idle rate started."""
        return self._rate.periods

    def _fps(self) -> float:
        """The source's frame rate: from the source, else as measured, else DEFAULT_FILE_FPS."""
        if self._src_fps:
            return self._src_fps
        times = self._times
        if len(times) >= 2 and times[-1] > times[0]:
            return (len(times) - 1) / (times[-1] - times[0])
        return DEFAULT_FILE_FPS

    @property
    def state(self) -> CameraState:
        return self._state

    @property
    def finished(self) -> bool:
        """True once a file/folder has ended and every frame has been handed out."""
        with self._cond:
            return self._state == CameraState.ENDED and not self._queue and self._newest is None

    def stats(self) -> dict[str, Any]:
        with self._cond:
            latest = self._latest
            times = list(self._times)
            now_m = time.monotonic()
            fps = 0.0
            if len(times) >= 2 and now_m - times[-1] < 2.0:
                fps = (len(times) - 1) / max(times[-1] - times[0], 1e-6)
            return {
                "kind": self.kind,
                "uri": safe_uri(self.cfg.uri),
                "fps": round(fps, 2),
                "frames": self._frames,
                "dropped": self._dropped,
                "reconnects": self._reconnects,
                "state": self._state,
                "since": self._since,
                "truncated": self.truncated,
                "frozen": self.frozen,
                "idle": self._rate.idle,
                "idle_skipped": self._rate.skipped,
                "brightness": None if latest is None else round(latest.brightness, 2),
                "sharpness": None if latest is None else round(latest.sharpness, 2),
                "last_frame_age_s": None if latest is None else round(time.time() - latest.captured_at, 3),
            }

    # ---------------------------------------------------------------- internals
    def _set_state(self, state: CameraState, reason: str = "") -> None:
        with self._cond:
            if state == self._state:
                return
            old, self._state, self._since = self._state, state, time.time()
            if self.metrics is not None:
                self.metrics.set_camera_state(state)
            self._cond.notify_all()
        why = f": {reason}" if reason else ""
        if state == CameraState.OK:
            log.info("capture: camera ok (was %s)%s", old, why)
        elif state == CameraState.ENDED:
            log.info("capture: source ended after %d frames%s", self._frames, why)
        else:
            log.warning("capture: camera %s (was %s)%s", state, old, why)

    def _sleep(self, seconds: float) -> None:
        """An intentional wait (backoff, pacing): interruptible by stop, never counted as a stall."""
        self._waiting = True
        try:
            self._stop.wait(max(0.0, seconds))
        finally:
            self._progress = time.monotonic()
            self._waiting = False

    def _open(self) -> tuple[Source | None, str]:
        cfg, uri = self.cfg, self.cfg.uri.strip()
        if self.kind == "gstreamer":
            from edge.capture.gstreamer import open_gstreamer

            return open_gstreamer(cfg, self._read_timeout_s)
        if self.kind == "genicam":
            from edge.capture.genicam import open_genicam

            return open_genicam(cfg, self._read_timeout_s, self.metrics)
        if self.kind == "folder":
            d = Path(uri)
            if not d.is_dir():
                return None, f"image folder {safe_uri(uri)} not found"
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
            if not files:
                return None, f"image folder {safe_uri(uri)} holds no images ({', '.join(sorted(IMAGE_EXTS))})"
            return _FolderSource(files, cfg.fps or DEFAULT_FOLDER_FPS), ""
        if self.kind == "file":
            if not Path(uri).is_file():
                return None, f"video file {safe_uri(uri)} not found"
            cap = cv2.VideoCapture(uri)
            if not cap.isOpened():
                cap.release()
                return None, f"OpenCV cannot open video file {safe_uri(uri)}"
            src = _CvSource(cap, finite=True)
            src.fps = src.fps or cfg.fps or DEFAULT_FILE_FPS
            return src, ""
        if self.kind == "usb":
            target: int | str = int(uri) if uri.isdigit() else uri
            cap = cv2.VideoCapture(target)
            if not cap.isOpened():
                cap.release()
                return None, f"cannot open camera {safe_uri(uri)}"
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if cfg.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            if cfg.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            if cfg.fps:
                cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            return _CvSource(cap, finite=False), ""
        # Network stream through FFmpeg, with open/read timeouts so a dead peer cannot block forever.
        # RTSP over TCP: UDP loses packets on busy factory networks (smeared, half-grey frames). An
        # OPENCV_FFMPEG_CAPTURE_OPTIONS set by the operator wins.
        if uri.lower().startswith(("rtsp://", "rtsps://")) and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(OPEN_TIMEOUT_S * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self._read_timeout_s * 1000),
        ]
        cap = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None, f"cannot open stream {safe_uri(uri)}"
        return _CvSource(cap, finite=False), ""

    def _run(self) -> None:
        backoff = self.cfg.reconnect_initial_s
        opened_once = False
        while not self._stop.is_set():
            try:
                src, reason = self._open()
            except Exception as e:  # OpenCV can raise on odd URIs; keep retrying like any failure
                src, reason = None, f"open failed: {str(e).replace(self.cfg.uri, safe_uri(self.cfg.uri))}"
            if src is None:
                if not opened_once and not self._first_failure_logged:
                    # The state starts as "disconnected", so this is no state change: say it anyway.
                    self._first_failure_logged = True
                    log.warning("capture: camera disconnected: %s; retrying (backoff up to %g s)", reason, self.cfg.reconnect_max_s)
                self._set_state(CameraState.DISCONNECTED, f"{reason}; retrying in {backoff:.1f} s")
                log.debug("capture: %s; next attempt in %.1f s", reason, backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                continue
            if opened_once and self._state == CameraState.DISCONNECTED:
                self._reconnects += 1
            if not opened_once or self._state == CameraState.DISCONNECTED:
                self._log_opened(src)
                with self._cond:
                    self._rate.restart()
            opened_once = True
            self._progress = time.monotonic()
            self._open_src = src
            try:
                result, n = self._pump(src)
            except Exception:
                log.exception("capture: reading %s failed", safe_uri(self.cfg.uri))
                result, n = "error", 0
            finally:
                self._open_src = None
                src.release()
            if n:
                backoff = self.cfg.reconnect_initial_s
            if result == "stop":
                break
            if result == "end" and n == 0:
                result = "error"  # a file that yields nothing is broken, not finished
                reason = "source opened but delivered no frame"
            expected = getattr(src, "frame_count", 0)
            if result == "end" and expected and n < expected - max(2, expected // 100):
                # The container promised more frames than the file holds: a cut-off copy or a disk error.
                self.truncated = f"truncated at frame {n} of {expected}"
                log.error("capture: video file %s %s (the container's frame count)", safe_uri(self.cfg.uri), self.truncated)
            if result == "end":
                if self.cfg.loop:
                    log.debug("capture: looping %s", safe_uri(self.cfg.uri))
                    continue
                self._set_state(CameraState.ENDED, self.truncated or "")
                break
            self._set_state(CameraState.DISCONNECTED, f"{reason or 'read failed'}; retrying in {backoff:.1f} s")
            self._sleep(backoff)
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)
        with self._cond:
            self._cond.notify_all()

    def _log_opened(self, src: Source) -> None:
        cfg = self.cfg
        if isinstance(src, _FolderSource):
            log.info("capture: %d images in %s", len(src.files), safe_uri(cfg.uri))
            return
        if not isinstance(src, _CvSource):
            return
        w = int(src.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(src.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        asked = ""
        if self.kind == "usb" and (cfg.width or cfg.height or cfg.fps):
            asked = f" (asked for {cfg.width or '?'}x{cfg.height or '?'} @ {cfg.fps or '?'} fps)"
        fps = f"{src.fps:g} fps" if src.fps else "unknown fps"
        log.info("capture: opened %s: %dx%d @ %s%s", safe_uri(cfg.uri), w, h, fps, asked)

    def _pump(self, src: Source) -> tuple[str, int]:
        """Read until the source fails/ends or stop is requested. Returns (result, frames read)."""
        paced = src.finite and not self.fast
        period = 1.0 / src.fps if paced and src.fps else 0.0
        self._src_fps = src.fps
        lockstep = self.fast and self._rate.enabled  # idle_in_fast_pace: decode as a camera that keeps up would
        next_t = time.monotonic()
        n = 0
        while not self._stop.is_set():
            if lockstep:
                self._await_report()
            decode = self._rate.should_decode() or src.awaits_trigger
            camera_hang(self._index, self._stop)  # test-only (edge/runtime/testhooks.py); a no-op unless its variable is set
            ok, img = src.read(decode)
            if self._stop.is_set():
                return "stop", n
            if ok and img is None and src.awaits_trigger:  # no trigger yet, the camera answers: not a stall
                self._progress = time.monotonic()
                if self._state != CameraState.OK:
                    self._set_state(CameraState.OK, "the camera answers; waiting for triggers")
                continue
            if not ok or (decode and img is None):
                return ("end" if src.finite else "error"), n
            if img is not None:
                self._deliver(img, src.stamp)
            else:
                self._skipped()
            n += 1
            if period:
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    self._sleep(delay)
                elif delay < -period:  # fell behind (slow disk/CPU): do not rush to catch up
                    next_t = time.monotonic()
        return "stop", n

    def _await_report(self) -> None:
        """Lockstep (``idle_in_fast_pace``): wait until the loop has reported on the last frame handed out."""
        with self._cond:
            self._waiting = True
            while self._rate.reported < self._rate.delivered and not self._stop.is_set():
                self._cond.wait(0.1)
            self._waiting = False
            self._progress = time.monotonic()

    def _skipped(self) -> None:
        """A frame grabbed and not decoded (idle rate): it counts as captured, keeps its index, is not handed out."""
        with self._cond:
            self._index += 1
            self._frames += 1
            self._rate.grabbed()
            if self.metrics is not None:
                self.metrics.frames_captured.inc()
            self._times.append(time.monotonic())
            self._progress = time.monotonic()

    def _deliver(self, img: np.ndarray, stamp: TriggerStamp | None = None) -> None:
        now = time.time()
        if img.dtype != np.uint8:
            img = cv2.convertScaleAbs(img)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        grey = self._thumb(img)  # one small grey copy serves the frozen check and the frame statistics
        brightness, sharpness = grey_stats(small_grey(grey))
        self._check_frozen(grey, self._rate.decoded())
        frame = Frame(img, self._index, now, brightness, sharpness, trigger=stamp)
        self._rate.delivered = self._index
        self._index += 1
        self.delivered_any = True
        if self._state != CameraState.OK:
            self._set_state(CameraState.OK, f"reconnect #{self._reconnects}" if self._reconnects else "")
        m = self.metrics
        with self._cond:
            self._frames += 1
            if m is not None:
                m.frames_captured.inc()
                m.frame_brightness.set(brightness)
                m.frame_sharpness.set(sharpness)
            self._times.append(time.monotonic())
            self._progress = time.monotonic()
            self._latest = frame
            if self.fast:
                self._waiting = True
                while len(self._queue) >= FAST_QUEUE and not self._stop.is_set():
                    self._cond.wait(0.1)
                self._waiting = False
                self._progress = time.monotonic()
                self._queue.append(frame)
            else:
                if self._newest is not None:
                    self._dropped += 1
                    if m is not None:
                        m.frames_dropped.inc()
                self._newest = frame
            self._cond.notify_all()

    def _thumb(self, img: np.ndarray) -> np.ndarray:
        """The green channel (most of the luminance), subsampled to about FROZEN_WIDTH wide by taking every
        ``step``-th pixel, into one of two reused buffers: ~40 us for a 640x360 frame (a grey conversion and a
        resize cost ~140 us).

        Nearest-neighbour subsampling (not area averaging) keeps each pixel's sensor noise, so a live but idle
        scene still differs from frame to frame while a frozen feed repeats the same pixels exactly."""
        h, w = img.shape[:2]
        step = max(1, w // FROZEN_WIDTH)
        view = img[::step, ::step, 1]
        if not self._greys or self._greys[0].shape != view.shape:
            self._greys = [np.empty(view.shape, np.uint8) for _ in range(2)]
        out = self._greys[0] if self._greys[0] is not self._prev_grey else self._greys[1]
        np.copyto(out, view)
        return out

    def _check_frozen(self, grey: np.ndarray, frames: int = 1) -> None:
        """``frames``: how many camera frames this one stands for (the idle rate decodes every N-th)."""
        prev, self._prev_grey = self._prev_grey, grey
        if prev is None or prev.shape != grey.shape:
            self._same = 0
            return
        diff = float(cv2.mean(cv2.absdiff(grey, prev))[0])
        self._same = self._same + frames if diff < self.cfg.frozen_tolerance else 0
        frozen = self._same + 1 >= self.cfg.frozen_frames
        if frozen != self.frozen:
            # metric first: whoever sees the flag change also sees the metric (tests read both)
            if self.metrics is not None:
                self.metrics.camera_frozen.set(1 if frozen else 0)
            self.frozen = frozen
            if frozen:
                log.warning(
                    "capture: picture frozen: %d consecutive frames differ by less than %.2f grey levels",
                    self._same + 1,
                    self.cfg.frozen_tolerance,
                )
            else:
                log.info("capture: picture changes again (no longer frozen)")

    def _watch(self) -> None:
        tick = min(0.2, self.cfg.stall_timeout_s / 4)
        while not self._stop.wait(tick):
            if self._state == CameraState.ENDED:
                return
            if (
                self._state == CameraState.OK
                and not self._waiting
                and time.monotonic() - self._progress > self.cfg.stall_timeout_s
            ):
                self._set_state(CameraState.STALLED, f"no new frame for {self.cfg.stall_timeout_s:g} s")


_STATE_RANK = {CameraState.DISCONNECTED: 3, CameraState.STALLED: 2, CameraState.ENDED: 1, CameraState.OK: 0}


class MultiCapture:
    """Several cameras in one process (config ``sources``), read as one stream of frames tagged with their view.

    Each view is an ordinary :class:`Capture` (own reader thread, reconnects, stall and freeze detection);
    ``read`` takes the next frame of whichever view has one, round robin, so a busy camera cannot starve the
    other. ``state`` is the worst view's state, ``finished`` is true when every view has ended."""

    def __init__(self, views: list[tuple[str, SourceConfig]], metrics: Any = None) -> None:
        if not views:
            raise ValueError("MultiCapture needs at least one view")
        self.captures = [(name, Capture(cfg, metrics)) for name, cfg in views]
        self._next = 0
        self.kind = "multi"

    @property
    def truncated(self) -> str | None:
        """The first view whose video file ended early, if any."""
        return next((f"{name}: {c.truncated}" for name, c in self.captures if c.truncated), None)

    @truncated.setter
    def truncated(self, value: str | None) -> None:
        raise AttributeError("MultiCapture.truncated comes from its views")

    @property
    def delivered_any(self) -> bool:
        return any(c.delivered_any for _, c in self.captures)

    def start(self) -> MultiCapture:
        for _, c in self.captures:
            c.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        for _, c in self.captures:
            c.stop(timeout)

    def read(self, timeout: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + timeout
        n = len(self.captures)
        while True:
            for k in range(n):
                i = (self._next + k) % n
                name, cap = self.captures[i]
                f = cap.read(timeout=0.0)
                if f is not None:
                    self._next = (i + 1) % n
                    f.view = name
                    return f
            if self.finished or time.monotonic() >= deadline:
                return None
            time.sleep(0.003)

    def latest(self) -> Frame | None:
        return self.captures[0][1].latest()

    @property
    def state(self) -> CameraState:
        return max((c.state for _, c in self.captures), key=lambda s: _STATE_RANK[s])

    @property
    def finished(self) -> bool:
        return all(c.finished for _, c in self.captures)

    @property
    def frozen(self) -> bool:
        return any(c.frozen for _, c in self.captures)

    @frozen.setter
    def frozen(self, value: bool) -> None:
        raise AttributeError("MultiCapture.frozen comes from its views")

    def stats(self) -> dict[str, Any]:
        return {"state": self.state, "frozen": self.frozen, "views": {name: c.stats() for name, c in self.captures}}
