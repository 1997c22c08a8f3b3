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
