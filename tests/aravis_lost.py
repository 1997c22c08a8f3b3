"""A lost GigE Vision camera, let go of while Aravis' heartbeat thread is still in Python (see ``edge.capture.genicam``).

``python tests/aravis_lost.py handler|source``, with Aravis' fake camera answering on 127.0.0.1. It opens the camera,
prints ``opened`` and waits for the caller to kill the camera; then:

- ``handler``: the pattern the product used to have, a Python ``control-lost`` handler (made to linger, so the race
  is certain rather than rare). The main thread lets go of the camera while the handler runs; the handler's return
  then drops the device's last reference on the heartbeat thread and GLib aborts the process (SIGTRAP).
- ``source``: the product's ``GenICamSource``: it connects no handler, finds the loss by polling, is released the way
  the capture releases a lost camera, and the process lives on (``survived``, exit 0).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.capture.gi_support import require

ADDRESS = "127.0.0.1"


def wait_for_kill() -> None:
    print("opened", flush=True)
    sys.stdin.readline()  # the caller writes a line once the camera is dead


def handler() -> None:
    camera = require("Aravis").Camera.new(ADDRESS)
    inside = threading.Event()

    def on_lost(*_: object) -> None:
        inside.set()
        time.sleep(1.0)  # still in the handler, holding its wrapper of the device, while the main thread lets go

    camera.get_device().connect("control-lost", on_lost)
    wait_for_kill()
    if not inside.wait(30):
        sys.exit("no control-lost signal within 30 s")
    camera = None
    gc.collect()
    time.sleep(3.0)


def source() -> None:
    from gi.repository import GObject

    from edge.capture.genicam import open_genicam
    from edge.config import SourceConfig

    cfg = SourceConfig(kind="genicam", uri=ADDRESS, fps=20, width=320, height=240, genicam={"pixel_format": "Mono8"})
    src, why = open_genicam(cfg, 2.0)
    assert src is not None, why
    device = src.camera.get_device()  # type: ignore[attr-defined]
    assert not GObject.signal_has_handler_pending(device, GObject.signal_lookup("control-lost", device), 0, True), \
        "a Python control-lost handler runs on Aravis' heartbeat thread"
    assert src.read()[0]
    device = None
    wait_for_kill()
    deadline = time.monotonic() + 30
    while src.read()[0] or not src.lost.is_set():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the loss was never noticed"
    src.release()  # lost: let go of on a thread of its own, as the capture does
    src = None
    gc.collect()
    time.sleep(3.0)


if __name__ == "__main__":
    {"handler": handler, "source": source}[sys.argv[1]]()
    print("survived", flush=True)
