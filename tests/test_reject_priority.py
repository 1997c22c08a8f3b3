"""Reject commands on their own priority path (issue 24): no event replay or publishing backlog delays or drops one.

The daemon runs as a real process behind a slow link to the real broker (tests/slowlink.py: every connection 100 ms
each way), with 3,000 acknowledged events kept for replay in its outbox, and a client replays them in pages of 1,000
as fast as ``api.replays_per_minute`` allows: the event connection carries thousands of re-published events queued in
paho behind its in-flight window. Meanwhile a PLC announces parts; every part is rejected (threshold 0). Each part's
command must arrive on ``<base>/reject`` before its ``deadline_at``, none lost.

On the event connection (``reject.mqtt_own_connection: false``, what main did) the commands queue behind the replay:
checked by hand, they arrived seconds after their deadlines (docs/RELIABILITY.md, fault 62).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.deliver.outbox import Outbox
from tests.helpers import (
    AUTH,
    TEST_TOKEN,
    DaemonProc,
    Publisher,
    epoch_s,
    tiny_daemon_cfg,
    topic_base,
    wait_for,
)
from tests.slowlink import SlowLink
from tests.test_combined import Arrivals

KEPT_EVENTS = 3000
PARTS = 12
DEADLINE_MS = 3000.0
LINK_DELAY_S = 0.1


def _fill_outbox(path: Path, topic: str, n: int) -> None:
    """``n`` acknowledged events of about 1.5 kB, kept for replay (one transaction, not n fsyncs)."""
    Outbox(path, retention_s=3600).close()
    now = time.time()
    pad = "x" * 1400
    rows = [(topic, f'{{"event_id":"{i}","kind":"model","pad":"{pad}"}}'.encode(), str(uuid.uuid4()), now, now)
            for i in range(n)]
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO outbox (topic, payload, event_id, created_at, acked_at) VALUES (?, ?, ?, ?, ?)", rows)


def _replay_flood(base: str, stop: threading.Event, counts: dict[str, int]) -> None:
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as c:
        while not stop.is_set():
            try:
                code = c.get("/events", params={"since_seq": 0}).status_code
            except httpx.HTTPError:
                code = 0
            counts[str(code)] = counts.get(str(code), 0) + 1
            if code == 429:
                stop.wait(0.2)


def priority_cfg(tmp_path: Path, tiny_model: Path, link: SlowLink, **reject: Any) -> dict[str, Any]:
    cfg = tiny_daemon_cfg(tmp_path, tiny_model)
    cfg["model"]["threshold"] = 0.0  # every part is a defect: every part gets a command
    cfg["mqtt"] = {"enabled": True, "host": "127.0.0.1", "port": link.port, "outbox_path": str(tmp_path / "outbox.sqlite3"),
                   "outbox_retention_s": 3600, "reconnect_min_s": 1, "reconnect_max_s": 2, "publish_results": True}
    cfg["decision"] = {"mode": "triggered", "trigger_frames": 2}
    cfg["reject"] = {"deadline_ms": DEADLINE_MS, "on_timeout": "reject", "mqtt": True, **reject}
    cfg["api"].update(token=TEST_TOKEN, replay_page_max=1000)  # api.replays_per_minute as shipped (30)
    return cfg


@pytest.mark.slow
def test_reject_commands_meet_their_deadline_under_a_replay_backlog(tmp_path, tiny_model, mosquitto):
    link = SlowLink((mosquitto.host, mosquitto.port), LINK_DELAY_S)
    cfg = priority_cfg(tmp_path, tiny_model, link)
    base = topic_base(cfg)
    _fill_outbox(tmp_path / "outbox.sqlite3", f"{base}/defect", KEPT_EVENTS)
    arr = Arrivals(mosquitto.host, mosquitto.port, [f"{base}/reject"])
    plc = Publisher(mosquitto.host, mosquitto.port, f"{base}/trigger")
    d = DaemonProc(tmp_path, cfg).start()
    stop, counts = threading.Event(), {}
    flood = threading.Thread(target=_replay_flood, args=(d.base, stop, counts), daemon=True)
    parts = [f"p{i}" for i in range(PARTS)]
    try:
        d.wait_triggers(90)
        if cfg["reject"].get("mqtt_own_connection", True):
            wait_for(lambda: "reject commands: connected" in d.log(), 30, "the command connection", d=d)
        flood.start()
        wait_for(lambda: counts.get("200", 0) >= 3, 60, "three replays of 1,000 events", d=d)
        for pid in parts:
            plc.send({"part_id": pid})
            time.sleep(0.5)
        wait_for(lambda: {p["part_id"] for p, _ in arr.on("/reject")} >= set(parts), DEADLINE_MS / 1000 + 30,
                 "a command for every part", d=d)
        assert d.alive(), d.log()[-3000:]
    finally:
        stop.set()
        arr.close()
        plc.close()
        d.stop()
        link.close()
    commands = {p["part_id"]: (p, t) for p, t in arr.on("/reject") if p["part_id"] in parts}
    assert set(commands) == set(parts), (sorted(commands), counts)  # 0 lost
    # a timeout decision is made at the deadline; a model decision's command must arrive before it
    model = {pid: (p, t) for pid, (p, t) in commands.items() if p["kind"] == "model"}
    late = {pid: round(t - epoch_s(p["deadline_at"]), 2) for pid, (p, t) in model.items() if t > epoch_s(p["deadline_at"])}
    after_trigger = sorted(round(t - epoch_s(p["deadline_at"]) + DEADLINE_MS / 1000, 2) for p, t in model.values())
    print(f"{len(model)} model-decided commands, arrival after the trigger (s): {after_trigger}; replays: {counts}")
    assert not late, (late, counts)
    assert len(model) >= PARTS // 2, commands  # the model decided them (not only the deadline watchdog)
    assert counts.get("200", 0) >= 3, counts  # the backlog was there: at least 3,000 events re-published
