"""The JSON log format keeps tracebacks (python-json-logger), one object per line, and covers every line a
daemon writes (uvicorn's, native code's, start-up errors)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from edge.runtime.logs import setup_logging
from tests.helpers import START_TIMEOUT, DaemonProc, tiny_daemon_cfg, wait_for


def test_json_logs_keep_the_traceback(capsys):
    setup_logging("INFO", "json")
    try:
        try:
            {}["missing"]
        except KeyError:
            logging.getLogger("edge.test").exception("frame %d failed", 7)
        logging.getLogger("edge.test").info("plain")
    finally:
        setup_logging("INFO", "text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [r["msg"] for r in lines] == ["frame 7 failed", "plain"]
    assert lines[0]["level"] == "ERROR" and lines[0]["logger"] == "edge.test"
    assert "Traceback" in lines[0]["exc_info"] and "KeyError: 'missing'" in lines[0]["exc_info"]
    assert "exc_info" not in lines[1]


@pytest.mark.slow
def test_every_line_of_the_daemon_is_json(tmp_path, tiny_model):
    """A real daemon with ``logging.format: json``: its own lines, LiteRT's native stderr line, uvicorn's line
    about a garbage request, and a start-up error: every line parses as JSON."""
    d = DaemonProc(tmp_path, tiny_daemon_cfg(tmp_path, tiny_model, logging={"format": "json"})).start()
    try:
        d.wait_api(START_TIMEOUT)
        host, port = d.base.rsplit("/", 1)[-1].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"GARBAGE\r\n\r\n")
            assert b"400" in s.recv(200)
        wait_for(lambda: '"uvicorn.error"' in d.log(), 30, "uvicorn's line", d=d)
    finally:
        d.stop()
    records = [json.loads(line) for line in d.log().splitlines()]
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "native", "edge.daemon", "edge.judge.classifier"} <= loggers, loggers
    # a bad config, with JSON asked for by the environment: one JSON record naming the key
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt: {port: eighty}\n")
    env = dict(os.environ, BOXINSPECT_LOGGING__FORMAT="json")
    run = subprocess.run([sys.executable, "-m", "boxinspect.cli", "run", str(bad)], capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 2
    errors = [r for r in map(json.loads, run.stderr.strip().splitlines()) if r["level"] == "CRITICAL"]
    assert len(errors) == 1 and "mqtt.port" in errors[0]["msg"], run.stderr


def test_a_noisy_library_is_rate_limited_with_a_suppressed_count(caplog):
    """Issue 24: asyncua logged every bad OPC UA client message at full rate; it goes through the same limiter."""
    import time

    from edge.runtime import ratelimit

    noisy = logging.getLogger("asyncua.server.uaprocessor")
    with caplog.at_level(logging.WARNING, logger="asyncua"):
        ratelimit.install_library_limits(0.2)
        for i in range(1000):
            noisy.warning("bad message from client %d", i)
        time.sleep(0.25)
        noisy.warning("bad message from client %d", 1000)
    for h in logging.getLogger().handlers:
        h.filters = [f for f in h.filters if not isinstance(f, ratelimit.LibraryRateLimitFilter)]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("asyncua")]
    assert len(lines) == 2, lines[:5]
    assert "999 similar line(s) suppressed" in lines[1]
