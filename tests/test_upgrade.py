"""Upgrades keep what the previous release stored: its undelivered defect events reach the broker.

The previous release is commit 548d7c7 (the repository has no tags): its edge/, boxinspect/, training/ and
convert/ are taken with ``git archive`` into a temp dir and run with this venv (``PYTHONPATH`` puts them in front
of this checkout), with the model package of that release (its tiny fixture). That daemon runs with its broker away, decides three parts (triggered mode, the tiny model)
and stops, leaving three defect events in its outbox. Then this release's daemon starts on the same state
directory and package with the broker up: the same three events arrive, and the outbox file carries this release's schema
version. (Outside a git checkout with that commit, the test is skipped and says why.)
"""

from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.deliver.outbox import SCHEMA_VERSION
from tests.broker import Broker
from tests.helpers import START_TIMEOUT, DaemonProc, Subscriber, tiny_daemon_cfg, topic_base, wait_for

REPO = Path(__file__).resolve().parents[1]
PREVIOUS_RELEASE = "548d7c7"


def previous_release(into: Path) -> Path:
    """The previous release's Python packages, unpacked into ``into`` (skip if the commit is not there)."""
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_RELEASE,
                          "edge", "boxinspect", "training", "convert", "tests/fixtures"], capture_output=True)
    if tar.returncode != 0:
        pytest.skip(f"commit {PREVIOUS_RELEASE} not available here: {tar.stderr.decode().strip()[:200]}")
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
        t.extractall(into)
    return into


class OldDaemon(DaemonProc):
    """The daemon of the previous release: its code first on the path (not this checkout's)."""

    def __init__(self, workdir: Path, cfg: dict[str, Any], code: Path) -> None:
        super().__init__(workdir, cfg, "old")
        self.extra_env["PYTHONPATH"] = os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])


def _event_ids(log: str) -> list[str]:
    return re.findall(r"decision defective .*event=([0-9a-f-]{36})", log)


@pytest.mark.slow
def test_events_left_by_the_previous_release_reach_the_broker_after_the_upgrade(tmp_path):
    code = previous_release(tmp_path / "previous")
    # the model package deployed with the previous release (its own tiny fixture): the old daemon reads it, and the
    # upgraded daemon must read it too (a plant upgrades the software and keeps its model)
    package = code / "tests" / "fixtures" / "tiny_int8.tflite"
    broker = Broker()  # chosen now, started only after the old daemon has gone
    cfg = tiny_daemon_cfg(
        tmp_path, package,
        decision={"mode": "triggered"},
        mqtt={"enabled": True, "host": broker.host, "port": broker.port, "outbox_path": "outbox.sqlite3",
              "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        reject={"deadline_ms": 5000},
        shutdown_timeout_s=3,
    )
    old = OldDaemon(tmp_path, cfg, code).start()
    try:
        old.wait_api(START_TIMEOUT)
        assert "boxinspect_loop_alive" not in old.get("/metrics").text  # it is the old code that runs
        for i in range(3):
            r = httpx.post(old.base + "/trigger", json={"part_id": f"UPG-{i}"}, timeout=5)
            assert r.status_code == 202, r.text
            wait_for(lambda n=i: len(_event_ids(old.log())) > n, 60, f"the old daemon's decision {i}", d=old)
        wait_for(lambda: old.metric("boxinspect_outbox_depth") == 3, 30, "3 events in the old outbox", d=old)
        old.send(signal.SIGTERM)
        assert old.wait(60) == 0, old.log()
    finally:
        old.stop()
    left = _event_ids(old.log())
    outbox = tmp_path / "state" / "outbox.sqlite3"
    with sqlite3.connect(outbox) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0] == 3

    with broker, Subscriber(broker.host, broker.port, f"{topic_base(cfg)}/defect") as sub:
        new = DaemonProc(tmp_path, cfg, "new").start()
        try:
            new.wait_api(START_TIMEOUT)
            assert new.metric("boxinspect_loop_alive") == 1  # this release
            assert sub.wait_for(lambda s: len(s.on("/defect")) >= 3, 60), new.log()
            wait_for(lambda: new.metric("boxinspect_outbox_depth") == 0, 30, "the outbox to drain", d=new)
        finally:
            new.stop()
        assert sorted(m["event_id"] for m in sub.json("/defect")) == sorted(left)
    with sqlite3.connect(outbox) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_outbox_of_a_newer_release_is_refused_not_rewritten(tmp_path):
    """A downgrade: the file of a newer schema stays as it is, and the error says what to do."""
    from edge.deliver.outbox import Outbox, OutboxError

    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(OutboxError, match=f"schema {SCHEMA_VERSION + 1} was written by a newer boxinspect"):
        Outbox(path, max_events=10)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_feedback_records_carry_their_schema(tmp_path, caplog):
    import json

    import numpy as np

    from edge.learn.feedback import FEEDBACK_SCHEMA, FeedbackStore

    store = FeedbackStore(tmp_path / "fb")
    rec = store.save("e1", "ok", "correct", np.zeros((8, 8, 3), np.uint8), None, {"event_id": "e1"})
    assert rec["schema"] == FEEDBACK_SCHEMA
    assert json.loads((tmp_path / "fb" / "ok" / "e1.json").read_text())["schema"] == FEEDBACK_SCHEMA
    (tmp_path / "fb" / "ok" / "e2.json").write_text(json.dumps({"schema": FEEDBACK_SCHEMA + 1, "kind": "label"}))
    (tmp_path / "fb" / "ok" / "e3.json").write_text(json.dumps({"kind": "label"}))  # 0.1.0: no schema
    with caplog.at_level("WARNING", logger="edge.learn.feedback"):
        again = FeedbackStore(tmp_path / "fb")
    assert again.counts().get("ok") == 3
    assert "1 record(s)" in caplog.text and "newer boxinspect" in caplog.text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
