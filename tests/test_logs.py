"""The JSON log format keeps tracebacks (python-json-logger), one object per line."""

from __future__ import annotations

import json
import logging

from edge.logs import setup_logging


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


def test_a_noisy_library_is_rate_limited_with_a_suppressed_count(caplog):
    """Issue 24: asyncua logged every bad OPC UA client message at full rate; it goes through the same limiter."""
    import time

    from edge import ratelimit

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
