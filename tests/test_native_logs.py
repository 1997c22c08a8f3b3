"""Native log lines bounded (issue 24): a corrupt video must not flood the journal with FFmpeg's decoder errors, and
whatever native code still prints on stderr passes the same rate rule as every other repeated line (JSON mode).

A real corrupt file: an MPEG-4 video written by OpenCV, 0.1 % of its frame bytes garbled with a fixed
seed. Read once by OpenCV with its defaults it prints hundreds of ``[mpeg4 @ 0x…] Error at MB: …`` lines; the daemon
loops it at full speed, so before issue 24 the lines never stopped.
"""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.runtime import nativelog
from edge.runtime.nativelog import as_template, limit_native_logger
from tests.helpers import DaemonProc, tiny_daemon_cfg, wait_for

FFMPEG_LINE = re.compile(r"^\[[\w,]+ @ 0x[0-9a-f]+\]", re.M)


def corrupt_video(path: Path, frames: int = 120) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for i in range(frames):
        img = np.full((240, 320, 3), 70, np.uint8)
        cv2.rectangle(img, (10 + 2 * i % 200, 60), (110 + 2 * i % 200, 180), (40, 120, 200), -1)
        cv2.putText(img, str(i), (20, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        w.write(img)
    w.release()
    data = bytearray(path.read_bytes())
    start, end = _mdat(data)  # the frames' bytes only: a damaged index would end the file early instead
    rnd = random.Random(24)
    for _ in range((end - start) // 1000):
        data[rnd.randrange(start, end)] = rnd.randrange(256)
    path.write_bytes(bytes(data))
    return path


def _mdat(data: bytearray) -> tuple[int, int]:
    """(first, end) byte of the payload of the file's top-level ``mdat`` box."""
    at = 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), bytes(data[at + 4:at + 8])
        if kind == b"mdat":
            return at + 8, at + size
        at += size
    raise AssertionError("no mdat box")


def test_the_corrupt_file_floods_stderr_with_opencvs_defaults(tmp_path):
    """The fault itself, outside the daemon: OpenCV's defaults print the decoder's complaints one per damaged row."""
    bad = corrupt_video(tmp_path / "bad.mp4")
    code = f"import cv2\ncap = cv2.VideoCapture({str(bad)!r})\nwhile cap.read()[0]:\n    pass\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in __import__("os").environ.items() if not k.startswith("OPENCV_")})
    assert len(FFMPEG_LINE.findall(res.stderr)) >= 40, res.stderr[-2000:]  # 86 with OpenCV 5.1 here


@pytest.mark.slow
def test_a_looping_corrupt_file_does_not_flood_the_daemons_log(tmp_path, tiny_model):
    bad = corrupt_video(tmp_path / "bad.mp4")
    cfg = tiny_daemon_cfg(tmp_path, tiny_model, source={"uri": str(bad), "loop": True, "pace": "fast"})
    d = DaemonProc(tmp_path, cfg)
    d.extra_env = {}  # OPENCV_* not set: the daemon's defaults
    d.start()
    try:
        d.wait_api()
        wait_for(lambda: d.metric("boxinspect_frames_captured_total") >= 600, 90, "five passes over the corrupt file", d=d)
        assert d.alive()
    finally:
        d.stop()
    text = d.log()
    assert "native logs: OpenCV log level error, its FFmpeg at 8" in text, text[-2000:]
    assert len(FFMPEG_LINE.findall(text)) == 0, text[-3000:]


def test_native_stderr_lines_pass_the_rate_rule_in_json_mode(tmp_path):
    """fd 2 in JSON mode: 1,000 lines of one kind (numbers differ) become one record; another kind still passes."""
    code = (
        "import os, time\n"
        "from edge.runtime.logs import setup_logging, capture_native_stderr\n"
        "setup_logging('INFO', 'json'); capture_native_stderr()\n"
        "for i in range(1000):\n"
        "    os.write(2, b'[mpeg4 @ 0x55d%x] Error at MB: %d\\n' % (i, i))\n"
        "os.write(2, b'another native line\\n')\n"
        "time.sleep(1.0)\n"  # the pump thread logs what is in the pipe; the process then exits
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    records = [json.loads(ln) for ln in res.stderr.splitlines() if ln.startswith("{")]
    native = [r["msg"] for r in records if r.get("logger") == "native"]
    assert sum("Error at MB" in m for m in native) == 1, native[:5]
    assert "another native line" in native, native[:5]


def test_native_lines_of_one_kind_are_one_template_and_the_limit_counts_them(monkeypatch):
    assert as_template("[h264 @ 0x55d1] error while decoding MB 12 7 (100%)") == (
        "[h264 @ %s] error while decoding MB %s %s (%s%%)", ("0x55d1", "12", "7", "100"))
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    native = limit_native_logger(logging.getLogger(f"native-test-{id(now)}"), interval=10.0)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    native.addHandler(handler)
    try:
        for i in range(500):
            native.warning(*_split(f"[h264 @ 0x{i:x}] error while decoding MB {i} 7"))
        native.warning(*_split("GStreamer-CRITICAL: something else"))  # another kind is never hidden
        now[0] += 10.0
        native.warning(*_split("[h264 @ 0x9] error while decoding MB 3 7"))
    finally:
        native.removeHandler(handler)
    assert seen == ["[h264 @ 0x0] error while decoding MB 0 7", "GStreamer-CRITICAL: something else",
                    "[h264 @ 0x9] error while decoding MB 3 7 (499 similar line(s) suppressed in the last 10 s)"]
    assert nativelog.AV_LOG_FATAL == 8


def _split(line: str) -> tuple[str, ...]:
    template, args = as_template(line)
    return (template, *args)
