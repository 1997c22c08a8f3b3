"""Capture against real sources: a local HTTP MJPEG server that goes away and comes back, video files
and image folders read through OpenCV."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture.frames import Capture, Frame
from edge.capture.roi import crop, draw_overlay, frame_stats
from edge.capture.source import safe_uri
from edge.config import RoiConfig, SourceConfig, guess_kind
from edge.runtime.metrics import Metrics
from tests.helpers import metric, wait_for


class MjpegServer:
    """multipart/x-mixed-replace JPEG stream on 127.0.0.1:<port>; can pause, stop and restart on the same port."""

    def __init__(self, fps: float = 20.0) -> None:
        self.fps = fps
        self.port = 0
        self.paused = threading.Event()
        self.running = threading.Event()
        self.srv: ThreadingHTTPServer | None = None
        self.sent = 0

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                rng = np.random.default_rng(0)
                try:
                    while owner.running.is_set():
                        if owner.paused.is_set():
                            time.sleep(0.02)
                            continue
                        img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)  # changes every frame
                        ok, buf = cv2.imencode(".jpg", img)
                        data = buf.tobytes()
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data) + data + b"\r\n"
                        )
                        owner.sent += 1
                        time.sleep(1 / owner.fps)
                except OSError:
                    pass

        ThreadingHTTPServer.allow_reuse_address = True
        srv = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        srv.daemon_threads = True
        self.port = srv.server_address[1]
        self.srv = srv
        self.running.set()
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the listener and every open stream (the camera goes away)."""
        self.running.clear()
        assert self.srv is not None
        self.srv.shutdown()
        self.srv.server_close()
        time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"


def write_video(path: Path, n: int, fps: float = 30.0, size: tuple[int, int] = (160, 120)) -> None:
    """Frame i is a flat grey of level 10 + 4*i (so the order can be read back)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), 10 + 4 * i, np.uint8))
    w.release()


def level(f: Frame) -> int:
    return round((float(f.image.mean()) - 10) / 4)


def test_guess_kind_and_masking(tmp_path: Path) -> None:
    assert guess_kind("0") == "usb"
    assert guess_kind("/dev/video2") == "usb"
    assert guess_kind("rtsp://user:pw@cam/stream") == "rtsp"
    assert guess_kind("http://127.0.0.1:8000/x.mjpg") == "rtsp"
    assert guess_kind(str(tmp_path)) == "folder"
    assert guess_kind(str(tmp_path / "belt.mp4")) == "file"
    assert safe_uri("rtsp://user:pw@cam/stream") == "rtsp://***@cam/stream"


def test_stream_disappears_and_recovers_without_restart(caplog: pytest.LogCaptureFixture) -> None:
    """stalled (open, no frames), then disconnected (server gone), then ok again on the same port."""
    caplog.set_level(logging.INFO, logger="edge.capture.frames")  # every state change is logged where it is made
    server = MjpegServer()
    server.start()
    m = Metrics()
    cfg = SourceConfig(uri=server.url, stall_timeout_s=0.4, reconnect_initial_s=0.1, reconnect_max_s=0.4)
    cap = Capture(cfg, m)
    cap.start()
    try:
        assert cap.kind == "rtsp"
        f = cap.read(timeout=10)
        assert f is not None and f.image.shape == (96, 128, 3) and f.image.dtype == np.uint8
        assert cap.state == "ok"
        assert metric(m, "boxinspect_camera_state", default=None, state="ok") == 1

        # The camera keeps the connection but sends nothing: stalled, then back to ok when it resumes.
        server.paused.set()
        wait_for(lambda: cap.state == "stalled", 5, "stalled")
        assert metric(m, "boxinspect_camera_state", default=None, state="stalled") == 1
        assert metric(m, "boxinspect_camera_state", default=None, state="ok") == 0
        server.paused.clear()
        wait_for(lambda: cap.state == "ok", 10, "ok after the stall")

        # The camera goes away entirely: disconnected, retrying with backoff.
        server.stop()
        wait_for(lambda: cap.state == "disconnected", 10, "disconnected")
        assert metric(m, "boxinspect_camera_state", default=None, state="disconnected") == 1
        time.sleep(1.0)  # a few failed reconnect attempts
        assert cap.state == "disconnected"

        # It comes back on the same port: the same Capture recovers by itself.
        server.start()
        wait_for(lambda: cap.state == "ok", 15, "ok after reconnect")
        before = cap.stats()["frames"]
        got = cap.read(timeout=5)
        assert got is not None
        assert got.index >= before - 1
        wait_for(lambda: cap.stats()["frames"] > before + 3, 10, "new frames after reconnect")
        st = cap.stats()
        assert st["reconnects"] >= 1
        assert st["state"] == "ok"
        assert metric(m, "boxinspect_camera_state", default=None, state="ok") == 1
        assert metric(m, "boxinspect_camera_state", default=None, state="disconnected") == 0
        cap.stop()  # the camera still sends: compare the counter and the stats once no frame can arrive between
        assert metric(m, "boxinspect_frames_captured_total", default=None) == cap.stats()["frames"]
    finally:
        cap.stop()
        server.stop()
    # The state changes as the capture made them (its log, not a polling thread that a loaded machine may not
    # schedule during a short stall): through all three states, in this order.
    states = [r.getMessage().removeprefix("capture: camera ").split(" (was")[0] for r in caplog.records
              if r.name == "edge.capture.frames" and r.getMessage().startswith("capture: camera ")]
    rest = iter(states)  # stalled, ok, disconnected, ok must appear in this order (other changes may come between)
    assert all(any(s == want for s in rest) for want in ("stalled", "ok", "disconnected", "ok")), states


def test_file_fast_delivers_every_frame_in_order(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 40)
    m = Metrics()
    cap = Capture(SourceConfig(uri=str(path), pace="fast"), m).start()
    frames: list[Frame] = []
    try:
        while not cap.finished:
            f = cap.read(timeout=5)
            if f is not None:
                frames.append(f)
                time.sleep(0.005)  # a consumer slower than the reader: backpressure, not drops
    finally:
        cap.stop()
    assert [f.index for f in frames] == list(range(40))
    assert [level(f) for f in frames] == list(range(40))
    assert cap.state == "ended"
    st = cap.stats()
    assert st["frames"] == 40 and st["dropped"] == 0
    assert metric(m, "boxinspect_frames_dropped_total", default=None) == 0
    assert metric(m, "boxinspect_camera_state", default=None, state="ended") == 1
    assert cap.read(timeout=0.1) is None


def test_file_realtime_keeps_only_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 45, fps=30)
    m = Metrics()
    cap = Capture(SourceConfig(uri=str(path), pace="realtime"), m).start()
    frames: list[Frame] = []
    try:
        while not cap.finished:
            newest = cap.latest()
            f = cap.read(timeout=5)
            if f is not None:
                # What we get is the newest frame captured, never an older one left waiting.
                assert newest is None or f.index >= newest.index
                frames.append(f)
                time.sleep(0.2)  # a slow consumer (a slow model on a Pi)
    finally:
        cap.stop()
    idx = [f.index for f in frames]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert len(frames) < 45
    assert [level(f) for f in frames] == idx  # each frame carries its own content
    st = cap.stats()
    assert set(st) >= {"fps", "frames", "dropped", "reconnects", "state", "since", "frozen", "brightness",
                       "sharpness", "last_frame_age_s"}
    assert st["brightness"] == pytest.approx(10 + 4 * 44, abs=3) and st["last_frame_age_s"] >= 0
    assert metric(m, "boxinspect_frame_brightness", default=None) == pytest.approx(st["brightness"], abs=0.01)
    assert st["frames"] == 45
    assert st["dropped"] == 45 - len(frames)
    assert metric(m, "boxinspect_frames_dropped_total", default=None) == st["dropped"]
    assert idx[-1] == 44  # the last frame of the file was delivered, not lost


def test_folder_moved_away_and_back(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((40, 60, 3), 10 + 4 * i, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / "999.png").write_bytes(b"broken")  # unreadable: skipped with a warning
    away = tmp_path / "away"
    shutil.move(folder, away)
    m = Metrics()
    cfg = SourceConfig(uri=str(folder), kind="folder", pace="fast", reconnect_initial_s=0.05, reconnect_max_s=0.2)
    cap = Capture(cfg, m).start()
    try:
        wait_for(lambda: cap.state == "disconnected", 5, "disconnected")
        assert cap.read(timeout=0.3) is None
        shutil.move(away, folder)
        frames = []
        while not cap.finished:
            f = cap.read(timeout=5)
            if f is not None:
                frames.append(f)
    finally:
        cap.stop()
    assert [level(f) for f in frames] == [0, 1, 2, 3, 4]
    assert cap.state == "ended"


def test_folder_loop_and_frozen_picture(tmp_path: Path) -> None:
    """One identical image shown over and over is a frozen picture; a changing one clears it."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((60, 80, 3), 120, np.uint8))
    m = Metrics()
    cfg = SourceConfig(uri=str(folder), pace="fast", loop=True, frozen_frames=5, frozen_tolerance=0.5)
    cap = Capture(cfg, m).start()
    try:
        frames = [cap.read(timeout=5) for _ in range(6)]
        assert all(f is not None for f in frames)
        assert [f.index for f in frames] == list(range(6))
        wait_for(lambda: cap.frozen, 5, "frozen")
        assert metric(m, "boxinspect_camera_frozen", default=None) == 1
        assert cap.stats()["frozen"] is True
        # A new picture arrives: no longer frozen.
        cv2.imwrite(str(folder / "b.png"), np.full((60, 80, 3), 30, np.uint8))
        deadline = time.monotonic() + 10
        while cap.frozen and time.monotonic() < deadline:
            cap.read(timeout=1)
        assert not cap.frozen
        assert metric(m, "boxinspect_camera_frozen", default=None) == 0
    finally:
        cap.stop()


def test_missing_file_is_disconnected_and_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "later.avi"
    cfg = SourceConfig(uri=str(path), pace="fast", reconnect_initial_s=0.05, reconnect_max_s=0.1)
    caplog.set_level(logging.INFO, logger="edge.capture.frames")
    cap = Capture(cfg).start()
    try:
        wait_for(lambda: "later.avi not found" in caplog.text, 5, "a warning naming the missing file")
        assert cap.state == "disconnected"
        assert caplog.text.count("camera disconnected") == 1  # said once, not on every retry
        write_video(tmp_path / "tmp.avi", 5)
        (tmp_path / "tmp.avi").rename(path)
        frames = []
        while not cap.finished:
            f = cap.read(timeout=5)
            if f is not None:
                frames.append(f)
        assert [f.index for f in frames] == list(range(5))
    finally:
        cap.stop()


def test_frame_stats_brightness_and_sharpness() -> None:
    flat = np.full((360, 640, 3), 200, np.uint8)
    b, s = frame_stats(flat)
    assert b == pytest.approx(200, abs=0.5) and s == pytest.approx(0, abs=1e-3)
    checker = (np.indices((360, 640)).sum(axis=0) // 20 % 2 * 255).astype(np.uint8)
    checker = cv2.cvtColor(checker, cv2.COLOR_GRAY2BGR)
    blurred = cv2.GaussianBlur(checker, (31, 31), 10)
    assert frame_stats(checker)[1] > 5 * frame_stats(blurred)[1]


def test_roi_crop_clamps_and_names_the_key() -> None:
    img = np.zeros((360, 640, 3), np.uint8)
    assert crop(img, RoiConfig()).shape == (360, 640, 3)
    assert crop(img, RoiConfig(x=600, y=300, width=100, height=100)).shape == (60, 40, 3)
    with pytest.raises(ValueError, match=r"roi\.x=700"):
        crop(img, RoiConfig(x=700))
    with pytest.raises(ValueError, match=r"roi\.y=400"):
        crop(img, RoiConfig(y=400))
    out = draw_overlay(img, RoiConfig(x=10, y=50, width=200, height=100), "defective", 0.93, is_defect=True)
    assert out.shape == img.shape and img.max() == 0  # the input is not modified
    assert tuple(out[50, 100]) == (0, 0, 255)  # red rectangle edge
    ok = draw_overlay(img, RoiConfig(x=10, y=50, width=200, height=100), "ok", 0.1)
    assert tuple(ok[50, 100]) == (0, 200, 0)

