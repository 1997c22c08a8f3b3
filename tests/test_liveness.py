"""Liveness: the loop's heartbeat, /healthz going red on a hung loop (a real daemon process), and the
sd_notify protocol over a real unix datagram socket (READY=1 after start-up, WATCHDOG=1 from the loop)."""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.runtime.liveness import EXIT_HUNG, HangExit, Heartbeat, sd_notify, watchdog_interval
from edge.runtime.testhooks import FREEZE_LOOP_ENV
from tests.helpers import START_TIMEOUT, DaemonProc, tiny_daemon_cfg, wait_for
from tests.test_daemon import SLOW, base_cfg


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_heartbeat_goes_red_only_when_the_loop_stops_turning():
    clock = FakeClock()
    hb = Heartbeat(timeout_s=30, clock=clock)
    hb.beat("waiting for a frame", camera_waiting=True)
    clock.t += 29  # an empty iteration every READ_TIMEOUT_S keeps it alive while the camera is away
    live = hb.check()
    assert live.alive and "waiting for frames from the camera" in live.reason
    hb.beat("processing frame 7 (ROI, model, decision, outbox)")
    assert hb.check().reason == "loop running"
    clock.t += 31
    live = hb.check()
    assert not live.alive and "hung" in live.reason and "processing frame 7" in live.reason
    hb.stopped()  # shutting down is not a hang
    assert hb.check().alive


@pytest.fixture()
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    yield path, sock
    sock.close()


def _drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


def test_sd_notify_sends_one_datagram_to_the_socket(notify_socket):
    path, sock = notify_socket
    assert sd_notify("READY=1\nSTATUS=hello", {"NOTIFY_SOCKET": str(path)})
    assert sock.recv(4096) == b"READY=1\nSTATUS=hello"
    assert not sd_notify("READY=1", {})  # not under systemd: nothing to do
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(path) + ".gone"})  # logged, not raised


def test_watchdog_interval_is_half_of_watchdogsec():
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({}) is None


# A launcher for the test below, and only for it: the real daemon (`boxinspect run`), with the model's
# score() blocking forever from the Nth frame on, the way a wedged accelerator delegate would.
HANG_LAUNCHER = textwrap.dedent(
    """
    import sys, threading
    from edge.judge.classifier import Classifier

    hang_after = int(sys.argv.pop(1))
    calls = [0]

    def hanging(real):
        # the loop's model call: score(), or score_all() for a package with a map (edge/judge/heatmap.py)
        def call(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] > hang_after:
                print(f"TEST HOOK: {real.__name__}() now blocks forever", flush=True)
                threading.Event().wait()
            return real(self, *args, **kwargs)
        return call

    Classifier.score = hanging(Classifier.score)
    Classifier.score_all = hanging(Classifier.score_all)
    from boxinspect.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


class HangingDaemon(DaemonProc):
    """The daemon through HANG_LAUNCHER (its loop hangs after 20 frames); the launcher imports it from this tree."""

    def __init__(self, workdir: Path, cfg: dict[str, Any]) -> None:
        super().__init__(workdir, cfg)
        self.launcher = workdir / "hang_launcher.py"
        self.launcher.write_text(HANG_LAUNCHER)
        repo = str(Path(__file__).resolve().parents[1])
        self.extra_env["PYTHONPATH"] = os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, str(self.launcher), "20", "run", "--config", str(self.cfg_path), *extra]


@SLOW
def test_hung_loop_turns_healthz_red_and_stops_the_watchdog(tmp_path, int8_model, synth_video, notify_socket):
    video, gt = synth_video
    path, sock = notify_socket
    cfg = base_cfg(
        tmp_path, int8_model, video, gt, None,
        liveness_timeout_s=3,
        # score every frame: box presence must not decide whether the model is called
        decision={"presence": {"method": "score", "learning_frames": 0}},
    )
    d = HangingDaemon(tmp_path, cfg)
    d.extra_env.update(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000")  # WatchdogSec=1s: ping every 0.5 s
    d.start()
    try:
        d.wait_api(START_TIMEOUT)
        first = _drain(sock)
        assert any(m.startswith("READY=1") for m in first), first
        # the loop turns: alive, and it pings the watchdog
        r = d.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "alive", r.text
        wait_for(lambda: "WATCHDOG=1" in _drain(sock), 30, "a WATCHDOG=1 ping", d=d)
        # then the model call blocks: /healthz goes 503 and names where the loop is stuck
        wait_for(lambda: "TEST HOOK" in d.log(), START_TIMEOUT, "the model to hang", d=d)

        def red() -> httpx.Response | None:
            r = d.get("/healthz")
            return r if r.status_code == 503 else None

        r = wait_for(red, 60, "/healthz to answer 503", d=d)
        body = r.json()
        assert body["status"] == "hung" and "processing frame" in body["reason"], body
        assert body["loop_age_s"] > 3
        _drain(sock)
        assert "WATCHDOG=1" not in _drain(sock)  # systemd would now kill and restart it
        assert d.alive()  # the API itself still answers: only the loop is stuck
    finally:
        d.stop()


# --------------------------------------------------------------------------------------------------
# Hang -> exit (edge/runtime/liveness.py HangExit): a process that exits is restarted by every runtime
# --------------------------------------------------------------------------------------------------


def test_hang_exit_waits_for_the_limit_then_logs_all_stacks_and_exits(caplog):
    clock = FakeClock()
    hb = Heartbeat(timeout_s=5, clock=clock)
    exits: list[int] = []
    guard = HangExit(hb, exit_after_s=10, exit=exits.append)
    clock.t += 100
    assert not guard.check() and not exits  # still starting (start-up has its own timeout): never
    hb.beat("processing frame 3 (ROI, model, decision)")
    clock.t += 7  # hung for /healthz (5 s), not yet for the exit
    assert not guard.check() and not exits
    clock.t += 4
    with caplog.at_level("CRITICAL", logger="edge.runtime.liveness"):
        assert guard.check()
    assert exits == [EXIT_HUNG]
    msg = caplog.records[-1].getMessage()
    assert "stuck for 11 s" in msg and "liveness_exit_s=10" in msg and "processing frame 3" in msg
    assert "(MainThread)" in msg and "test_hang_exit_waits_for_the_limit" in msg  # this thread's stack
    hb.stopped()  # a shutdown is no hang
    assert not guard.check()


@pytest.mark.slow
def test_frozen_loop_exits_the_process_with_every_thread_stack_in_its_log(tmp_path, tiny_model):
    """The daemon (a real process, JSON logs) with its loop frozen by the test hook: /metrics says the loop is
    hung, then the process exits by itself (code 4) and its log holds the stack of every thread."""
    freeze = tmp_path / "freeze"
    cfg = tiny_daemon_cfg(tmp_path, tiny_model, liveness_timeout_s=2, liveness_exit_s=8, logging={"format": "json"})
    d = DaemonProc(tmp_path, cfg)
    d.extra_env[FREEZE_LOOP_ENV] = str(freeze)
    d.start()
    try:
        d.wait_api(START_TIMEOUT)
        assert d.metric("boxinspect_loop_alive") == 1
        freeze.touch()
        wait_for(lambda: d.metric("boxinspect_loop_alive") == 0, 30, "boxinspect_loop_alive 0", d=d)
        assert d.proc is not None
        rc = d.proc.wait(timeout=60)  # the limit is 8 s: it must end by itself, no signal is sent
        assert rc == EXIT_HUNG, d.log()
    finally:
        freeze.unlink(missing_ok=True)
        d.stop()
    records = [json.loads(line) for line in d.log().splitlines()]  # every line is JSON
    hung = [r for r in records if r["level"] == "CRITICAL" and r["logger"] == "edge.runtime.liveness"]
    assert len(hung) == 1, d.log()
    msg = hung[0]["msg"]
    assert "liveness_exit_s=8" in msg and "Stacks of all threads" in msg
    # the frozen main thread and the others, each named
    assert "(MainThread)" in msg and "in frozen_loop" in msg and "(api)" in msg and "(capture-reader)" in msg
