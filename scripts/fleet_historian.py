"""Fleet simulation of the plant historian: N daemons (each on its own synthetic conveyor video, its own line id)
-> one Mosquitto -> 2 historian workers on one shared subscription -> one real PostgreSQL, for M minutes, with
faults: one worker SIGKILLed (restarted after a while, as a supervisor would), PostgreSQL restarted, the broker
restarted. At the end every decision in each daemon's own outbox must be exactly one row: 0 lost, 0 duplicated.

Not part of the test suite (minutes of wall time, a dozen processes). Run niced:

    nice -n 10 .venv/bin/python scripts/fleet_historian.py --daemons 10 --minutes 10 --out docs/bench/fleet_historian.json

The daemons use the committed tiny model (tests/fixtures/tiny_int8.tflite: its scores mean nothing, which is fine:
this is about delivery) and `mqtt.outbox_all_decisions: true`, so every decision (OK too) is in the outbox with
a seq; their outboxes keep acknowledged rows for a day (`outbox_retention_s`), which is what we count against.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from boxinspect.synth.video import make_video  # noqa: E402
from tests.broker import Broker  # noqa: E402
from tests.helpers import DaemonProc, free_port, port_open  # noqa: E402
from tests.postgres import Postgres  # noqa: E402

log = logging.getLogger("fleet")
TOKEN = "fleet-token-0123456789abcdef"
MODEL = REPO / "tests" / "fixtures" / "tiny_int8.tflite"


def nice10() -> None:
    os.nice(10)


class NiceDaemon(DaemonProc):
    preexec_fn = staticmethod(nice10)


def daemon_cfg(work: Path, i: int, video: Path, gt: dict[str, Any], broker: Broker) -> dict[str, Any]:
    return {
        "line": f"line{i:02d}", "camera": "cam1",
        "source": {"uri": str(video), "pace": "realtime", "loop": True},
        "roi": {k: gt["roi"][k] for k in ("x", "y", "width", "height")},
        "model": {"path": str(MODEL), "threshold": 0.5},
        "mqtt": {"host": broker.host, "port": broker.port, "outbox_path": str(work / "outbox.sqlite3"),
                 "outbox_all_decisions": True, "outbox_retention_s": 86400, "reconnect_min_s": 0.5,
                 "reconnect_max_s": 2, "stats_interval_s": 30},
        "api": {"port": free_port(), "token": TOKEN},
        "evidence": {"dir": str(work / "evidence")},
        "reject": {"deadline_ms": 120_000},
        "shutdown_timeout_s": 30,
    }


class Worker:
    def __init__(self, name: str, work: Path, cfg: dict[str, Any]) -> None:
        self.name, self.cfg_path, self.log_path = name, work / f"{name}.yaml", work / f"{name}.log"
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "boxinspect.cli", "historian", "--config", str(self.cfg_path)],
                                         cwd=REPO, stdout=f, stderr=subprocess.STDOUT, preexec_fn=nice10,
                                         env={**os.environ, "PYTHONPATH": str(REPO)})

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def outbox_decisions(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        return {str(e): int(s) for s, e, t in c.execute("SELECT seq, event_id, topic FROM outbox")
                if t.endswith("/defect") or t.endswith("/ok")}


def outbox_meta(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        return {str(k): int(v) for k, v in c.execute("SELECT key, value FROM meta")}


def tally(pg: Postgres, daemons: list[NiceDaemon]) -> dict[str, Any]:
    with psycopg.connect(pg.url) as c:
        rows: dict[str, int] = {}
        for eid, n in c.execute("SELECT event_id::text, count(*) FROM decisions GROUP BY event_id"):
            rows[str(eid)] = int(n)
        lost_ranges = c.execute("SELECT line, first_seq, last_seq, reason FROM lost_ranges").fetchall()
    per: dict[str, Any] = {}
    total = missing = dup = 0
    published: set[str] = set()
    for d in daemons:
        ob = outbox_decisions(Path(d.cfg["mqtt"]["outbox_path"]))
        published |= set(ob)
        miss = [e for e in ob if rows.get(e, 0) == 0]
        dups = [e for e in ob if rows.get(e, 0) > 1]
        meta = outbox_meta(Path(d.cfg["mqtt"]["outbox_path"]))
        per[d.cfg["line"]] = {"decisions_in_outbox": len(ob), "max_seq": max(ob.values(), default=0), "rows_missing": len(miss),
                              "rows_duplicated": len(dups), "outbox_dropped": meta.get("dropped", 0),
                              "outbox_lost": meta.get("lost", 0)}
        total += len(ob)
        missing += len(miss)
        dup += len(dups)
    extra = [e for e in rows if e not in published]
    return {"decisions_published": total, "rows": sum(rows.values()), "distinct_event_ids": len(rows), "lost": missing,
            "duplicated": dup, "rows_not_in_any_outbox": len(extra), "lost_ranges": [list(map(str, r)) for r in lost_ranges],
            "per_daemon": per}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemons", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=8, help="synthetic video frame rate (low keeps the CPU low)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a new temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the cleanup below runs on a plain kill too
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="fleet-historian-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timeline: list[tuple[float, str]] = []

    def mark(what: str) -> None:
        timeline.append((round(time.time() - t0, 1), what))
        log.info("[%5.0f s] %s", time.time() - t0, what)

    broker = Broker(persistence=True, workdir=work / "broker",
                    extra_config="autosave_on_changes true\nautosave_interval 1\nmax_queued_messages 100000")
    broker.start()
    pg = Postgres(workdir=work / "pg")
    pg.start()
    daemons: list[NiceDaemon] = []
    workers: list[Worker] = []
    try:
        for i in range(args.daemons):
            dwork = work / f"d{i:02d}"
            dwork.mkdir(exist_ok=True)
            video = dwork / "conveyor.mp4"
            gt = make_video(video, n_boxes=6, defect_rate=0.5, seed=100 + i, fps=args.fps)
            d = NiceDaemon(dwork, daemon_cfg(dwork, i, video, gt, broker), name=f"daemon{i:02d}")
            daemons.append(d.start())
        mark(f"{len(daemons)} daemons started")
        hcfg = {"broker": {"host": broker.host, "port": broker.port, "share_group": "historian",
                           "reconnect_min_s": 0.5, "reconnect_max_s": 2, "session_expiry_s": 3600},
                "database": {"url": pg.url, "retry_min_s": 0.5, "retry_max_s": 2},
                "daemons": [{"line": d.cfg["line"], "camera": "cam1", "url": f"http://127.0.0.1:{d.cfg['api']['port']}",
                             "token": TOKEN} for d in daemons],
                "gap_check_s": 30}
        for name in ("historian-a", "historian-b"):
            w = Worker(name, work, {**hcfg, "broker": {**hcfg["broker"], "client_id": name},
                                    "metrics": {"port": free_port()}})
            w.start()
            workers.append(w)
        mark("2 historian workers started (shared subscription $share/historian/...)")
        run_s = args.minutes * 60
        plan = [(0.25, "kill"), (0.25 + 30 / run_s, "restart-worker"), (0.5, "pg"), (0.75, "broker")]
        for frac, what in plan:
            while time.time() - t0 < frac * run_s:
                time.sleep(1)
            if what == "kill":
                workers[0].kill()
                mark("historian-a SIGKILLed")
            elif what == "restart-worker":
                workers[0].start()
                mark("historian-a started again")
            elif what == "pg":
                pg.stop("fast")
                mark("PostgreSQL stopped")
                time.sleep(15)
                pg.start()
                mark("PostgreSQL started again")
            elif what == "broker":
                broker.stop()
                mark("Mosquitto stopped")
                time.sleep(10)
                broker.start()
                mark("Mosquitto started again")
        while time.time() - t0 < run_s:
            time.sleep(1)
        for d in daemons:
            d.send(signal.SIGTERM)
        for d in daemons:
            d.wait(60)
        mark("daemons stopped (outboxes drained to the broker)")
        # The daemons are gone, their APIs too: what the broker still delivers is written; a gap would stay a gap.
        deadline = time.time() + 120
        result = tally(pg, daemons)
        while (result["lost"] or result["duplicated"]) and time.time() < deadline:
            time.sleep(5)
            result = tally(pg, daemons)
        mark(f"tally: {result['decisions_published']} published, {result['rows']} rows, {result['lost']} lost, "
             f"{result['duplicated']} duplicated")
        with psycopg.connect(pg.url) as c:
            result["db_size_bytes"] = int(c.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
            result["decisions_table_bytes"] = int(c.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'decisions'::regclass"
            ).fetchone()[0])  # type: ignore[index]
            result["replayed_rows_hint"] = "see the workers' logs: 'replay: N row(s) added'"
        result.update(daemons=len(daemons), workers=2, minutes=args.minutes, fps=args.fps, timeline=timeline,
                      wall_s=round(time.time() - t0, 1), work=str(work))
        for w in workers:
            text = w.log_path.read_text(errors="replace")
            result[f"{w.name}_replay_lines"] = [ln for ln in text.splitlines() if "replay:" in ln or "recorded as lost" in ln][-20:]
        sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "per_daemon"}, indent=1) + "\n")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        return 0 if result["lost"] == 0 and result["duplicated"] == 0 and result["decisions_published"] > 0 else 1
    finally:
        for w in workers:
            w.stop()
        for d in daemons:
            d.stop()
        pg.close() if args.work is None else pg.stop()
        broker.stop()
        if port_open(broker.host, broker.port):
            log.warning("broker port still open")


if __name__ == "__main__":
    sys.exit(main())
