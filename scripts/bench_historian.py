"""Historian benchmarks for docs/BENCHMARKS.md: one worker's throughput in rows/s, and PostgreSQL's size per
million decisions (table + indexes), on this machine, with a real Mosquitto and a real PostgreSQL.

    nice -n 10 .venv/bin/python scripts/bench_historian.py --messages 20000 --rows 200000 --out docs/bench/historian.json

Throughput: a worker opens its persistent session and stops; `--messages` decision events are published to the
broker (QoS 1; the broker queues them for the session); the worker starts again and the clock runs from its
start to the last row committed (MQTT in, parse, INSERT ... ON CONFLICT in batches, commit, PUBACK).
Size: `--rows` decisions written straight into the table in batches of 1000 (the same INSERT the worker runs),
10 lines, realistic events (part id, evidence path, model id); size = the decisions partitions with their
indexes, per row, scaled to a million.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from historian.config import load_config  # noqa: E402
from historian.consumer import Historian  # noqa: E402
from historian.records import decision  # noqa: E402
from historian.store import Store  # noqa: E402
from tests.broker import Broker  # noqa: E402
from tests.helpers import Publisher  # noqa: E402
from tests.postgres import Postgres  # noqa: E402

log = logging.getLogger("bench-historian")


def event(i: int, line: str, at: datetime) -> dict[str, Any]:
    eid = str(uuid.uuid4())
    t = at.isoformat().replace("+00:00", "Z")
    defect = i % 10 == 0
    s = 0.91 if defect else 0.07
    return {"schema_version": 2, "event_id": eid, "seq": i + 1, "line": line, "camera": "cam1", "part_id": str(i),
            "kind": "model", "label": "damaged" if defect else "intact", "is_defect": defect,
            "action": "reject" if defect else "pass", "reason": None, "score": s, "max_score": s, "mean_score": s,
            "frame_count": 7, "first_frame": 7 * i, "last_frame": 7 * i + 6, "threshold": 0.42,
            "model_id": "parcel-int8@5e1c9a0b3f2d", "captured_at": t, "decided_at": t, "deadline_at": t,
            "slack_ms": 1980.5, "late": False, "mode": "continuous", "published_at": t,
            "evidence": {"frame": f"evidence/2026-12-05/{eid}_frame.jpg", "crop": f"evidence/2026-12-05/{eid}_crop.jpg"}}


def throughput(pg: Postgres, broker: Broker, n: int) -> dict[str, Any]:
    db = "tput"
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {db}")
    url = pg.url.rsplit("/", 1)[0] + "/" + db
    cfg = load_config(None, environ={}, overrides={
        "broker": {"host": broker.host, "port": broker.port, "client_id": "bench-worker", "receive_maximum": 1000},
        "database": {"url": url}, "metrics": {"enabled": False}, "batch_max": 500})
    h = Historian(cfg)
    h.start()
    assert h.connected.wait(10) and h.schema_ready.wait(30)
    time.sleep(1)  # the SUBACK
    h.stop()
    now = datetime.now(timezone.utc)
    t0 = time.monotonic()
    with Publisher(broker.host, broker.port) as pub:
        for i in range(n):
            line = f"line{i % 10:02d}"
            info = pub.client.publish(f"boxinspect/{line}/cam1/{'defect' if i % 10 == 0 else 'ok'}",
                                      json.dumps(event(i, line, now + timedelta(milliseconds=i))), qos=1)
        info.wait_for_publish(60)
    publish_s = time.monotonic() - t0
    h = Historian(cfg)
    t0 = time.monotonic()
    h.start()
    store = Store(url)
    while store.count("SELECT count(*) FROM decisions") < n:
        time.sleep(0.2)
        if time.monotonic() - t0 > 600:
            break
    dt = time.monotonic() - t0
    rows = store.count("SELECT count(*) FROM decisions")
    h.stop()
    return {"messages": n, "rows": rows, "seconds": round(dt, 2), "rows_per_s": round(rows / dt, 1),
            "publish_seconds": round(publish_s, 2), "batch_max": 500, "receive_maximum": 1000}


def size(pg: Postgres, n: int) -> dict[str, Any]:
    db = "size"
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {db}")
    url = pg.url.rsplit("/", 1)[0] + "/" + db
    store = Store(url)
    store.migrate()
    start = datetime.now(timezone.utc)
    t0 = time.monotonic()
    for b in range(0, n, 1000):
        recs = [decision(event(i, f"line{i % 10:02d}", start + timedelta(milliseconds=50 * i))) for i in range(b, min(n, b + 1000))]
        store.write(recs)
    write_s = time.monotonic() - t0
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("VACUUM ANALYZE decisions")
        table = int(c.execute("SELECT sum(pg_table_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'decisions'::regclass").fetchone()[0])  # type: ignore[index]
        idx = int(c.execute("SELECT sum(pg_indexes_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'decisions'::regclass").fetchone()[0])  # type: ignore[index]
        rows = int(c.execute("SELECT count(*) FROM decisions").fetchone()[0])  # type: ignore[index]
    per_row = (table + idx) / rows
    year = 50 * 2 * 86400 * 365
    return {"rows": rows, "direct_write_seconds": round(write_s, 1), "direct_rows_per_s": round(rows / write_s, 1),
            "table_bytes": table, "index_bytes": idx, "bytes_per_row": round(per_row, 1),
            "gb_per_million": round(per_row * 1e6 / 1e9, 3),
            "plant_50_lines_2_per_s_rows_per_year": year, "plant_tb_per_year": round(per_row * year / 1e12, 2)}


def emit(res: dict[str, Any], out: Path | None) -> None:
    """The result as JSON on stdout, and in ``out`` if given."""
    text = json.dumps(res, indent=1)
    sys.stdout.write(text + "\n")
    if out is not None:
        out.write_text(text + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    res: dict[str, Any] = {"machine": f"{platform.node()} {platform.machine()}, {__import__('os').cpu_count()} cores",
                           "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with Broker(persistence=False, extra_config="max_queued_messages 1000000") as broker, Postgres() as pg:
        with psycopg.connect(pg.url) as c:
            res["postgres"] = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        res["throughput"] = throughput(pg, broker, args.messages)
        res["size"] = size(pg, args.rows)
    emit(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
