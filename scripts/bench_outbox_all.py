"""What `mqtt.outbox_all_decisions: true` costs a daemon at 2 parts/s: every OK decision through the outbox
(one fsync'd SQLite commit each, QoS 1) instead of only the defects. docs/BENCHMARKS.md.

    nice -n 10 .venv/bin/python scripts/bench_outbox_all.py --seconds 60 --rate 2 --out docs/bench/outbox_all.json

The daemon's own sink (edge/deliver/mqtt_sink.py) against a real Mosquitto; the events are the daemon's decision events
(tests/test_mqtt_sink.make_event). Two runs of the same length: `off` stores 1 in 10 decisions (the defects of
a 10 % defect rate) and sends the rest as QoS 0 results; `on` stores all. Reported per run: the time
publish_defect()/publish_result() takes in the daemon's publisher thread (median, p99), the process CPU and the
bytes written to disk (/proc/self/io write_bytes) per decision, and the outbox file at the end (with the default
retention of an hour a 2 parts/s line keeps 7,200 rows in it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import parse_config  # noqa: E402
from edge.deliver.mqtt_sink import MqttSink  # noqa: E402
from edge.runtime.metrics import Metrics  # noqa: E402
from scripts.bench_historian import emit  # noqa: E402
from tests.broker import Broker  # noqa: E402
from tests.test_mqtt_sink import make_event  # noqa: E402


def write_bytes() -> int:
    for ln in Path("/proc/self/io").read_text().splitlines():
        if ln.startswith("write_bytes:"):
            return int(ln.split()[1])
    return 0


def run(broker: Broker, all_decisions: bool, seconds: float, rate: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="outbox-all-"))
    cfg = parse_config({"mqtt": {"host": broker.host, "port": broker.port, "outbox_path": str(work / "outbox.sqlite3"),
                                 "publish_results": True, "outbox_all_decisions": all_decisions}}, environ={})
    sink = MqttSink(cfg.mqtt, "boxinspect/bench/cam1", Metrics())
    sink.start()
    assert sink.wait_connected(10)
    n = int(seconds * rate)
    lat: list[float] = []
    cpu0, io0, t0 = time.process_time(), write_bytes(), time.monotonic()
    for i in range(n):
        ev = make_event(i, defect=i % 10 == 0)
        s = time.perf_counter()
        if ev["is_defect"] or all_decisions:
            sink.publish_defect(ev)
        sink.publish_result(ev)
        lat.append((time.perf_counter() - s) * 1000)
        time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    assert sink.wait_drained(30)
    cpu, io = time.process_time() - cpu0, write_bytes() - io0
    rows = len(sink.outbox.since(0, 100_000))
    sink.stop(10)
    size = sum(p.stat().st_size for p in work.glob("outbox.sqlite3*"))
    lat.sort()
    return {"outbox_all_decisions": all_decisions, "decisions": n, "stored": rows,
            "publish_ms_median": round(statistics.median(lat), 3), "publish_ms_p99": round(lat[int(0.99 * (n - 1))], 3),
            "cpu_ms_per_decision": round(cpu * 1000 / n, 3), "disk_write_bytes_per_decision": round(io / n),
            "disk_write_mb_per_day_at_rate": round(io / n * rate * 86400 / 1e6, 1),
            "outbox_files_bytes": size, "outbox_bytes_per_stored_row": round(size / max(1, rows)),
            "outbox_mb_kept_1h_retention_at_rate": round(size / max(1, rows) * rate * 3600 / 1e6, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rate", type=float, default=2.0, help="decisions per second")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with Broker() as broker:
        res = {"rate_per_s": args.rate, "seconds": args.seconds,
               "runs": [run(broker, False, args.seconds, args.rate), run(broker, True, args.seconds, args.rate)]}
    emit(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
