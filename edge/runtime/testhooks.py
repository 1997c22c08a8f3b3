"""TEST-ONLY hooks. Nothing here does anything unless its environment variable is set; never set them in production.

``TESTONLY_BOXINSPECT_SLOW_MODEL_FILE``: path of a file. While the file exists, every model score in the daemon's
loop first sleeps for the number of seconds written in it (a stalled or overloaded classifier, on demand). The
tests of the deadline fail-safe (tests/test_plant_daemon.py) use it; the model itself is untouched.

``TESTONLY_BOXINSPECT_CAMERA_HANG_FILE``: path of a file holding ``<frame index> <seconds>``. The capture, about to
read that frame, stops delivering for that many seconds, once (a camera that hangs with a box in view; issue 24).
"""

from __future__ import annotations

import os
import time
from typing import Any

SLOW_MODEL_ENV = "TESTONLY_BOXINSPECT_SLOW_MODEL_FILE"
_PATH = os.environ.get(SLOW_MODEL_ENV)


def slow_model_delay() -> None:
    if not _PATH:
        return
    try:
        with open(_PATH) as f:
            seconds = float(f.read().strip() or 0)
    except (OSError, ValueError):
        return
    if seconds > 0:
        time.sleep(seconds)


FREEZE_LOOP_ENV = "TESTONLY_BOXINSPECT_FREEZE_LOOP_FILE"
_FREEZE_PATH = os.environ.get(FREEZE_LOOP_ENV)


def frozen_loop() -> None:
    """``TESTONLY_BOXINSPECT_FREEZE_LOOP_FILE``: while that file exists, the inspection loop blocks here (a hung
    loop on demand, for the liveness tests in tests/test_liveness.py). A no-op unless the variable is set."""
    while _FREEZE_PATH and os.path.exists(_FREEZE_PATH):
        time.sleep(0.05)


CAMERA_HANG_ENV = "TESTONLY_BOXINSPECT_CAMERA_HANG_FILE"
_HANG_PATH = os.environ.get(CAMERA_HANG_ENV)
_hung = False


def camera_hang(index: int, stop: Any) -> None:
    """Block (until ``stop`` is set) for the seconds in the hang file when the capture reaches its frame index."""
    global _hung
    if not _HANG_PATH or _hung:
        return
    try:
        with open(_HANG_PATH) as f:
            at, seconds = f.read().split()
    except (OSError, ValueError):
        return
    if index >= int(at):
        _hung = True
        stop.wait(float(seconds))
