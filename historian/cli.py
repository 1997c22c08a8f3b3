"""``boxinspect historian``: run a worker, apply the schema, look up a part, record a lot change.

Handlers import their modules lazily (registration must not import psycopg or paho).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EPILOG = """\
examples:
  boxinspect historian --broker mqtt:1883 --db postgresql://boxinspect@db/boxinspect
  boxinspect historian --config deploy/historian.example.yaml        # daemons for replay, S3, metrics
  boxinspect historian query --part A-17 --db postgresql://...      # every decision about part A-17
  boxinspect historian lot --line line1 --lot 4711 --db ...          # lot 4711 starts now on line1
  boxinspect historian migrate --db ...                              # apply the schema and exit

Settings: --config FILE (deploy/historian.example.yaml documents every key), then environment variables
BOXINSPECT_HISTORIAN_<SECTION>__<KEY> (e.g. BOXINSPECT_HISTORIAN_DATABASE__URL), then --broker and --db.
"""


def _common(p: argparse.ArgumentParser, sub: bool) -> None:
    d: Any = argparse.SUPPRESS if sub else None
    p.add_argument("--config", "-c", default=d, help="YAML settings (deploy/historian.example.yaml)")
    p.add_argument("--db", default=d, metavar="URL", help="PostgreSQL, e.g. postgresql://user:pass@host:5432/db")
    p.add_argument("--broker", default=d, metavar="HOST:PORT", help="the MQTT broker the daemons publish to")


def _load(args: argparse.Namespace) -> Any:
    from edge.config import ConfigError
    from historian.config import load_config

    over: dict[str, Any] = {}
    if getattr(args, "db", None):
        over["database"] = {"url": args.db}
    if getattr(args, "broker", None):
        host, _, port = str(args.broker).rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--broker {args.broker!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
        over["broker"] = {"host": host, "port": int(port)}
    return load_config(getattr(args, "config", None), overrides=over)


def _with_config(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from edge.config import ConfigError

        try:
            cfg = _load(args)
        except ConfigError as e:
            sys.stderr.write(f"{e}\n")
            return 2
        return int(fn(cfg, args))
    return run


@_with_config
def _run(cfg: Any, args: argparse.Namespace) -> int:
    import logging
    import signal

    from historian.consumer import Historian

    h = Historian(cfg)
    if cfg.metrics.enabled:
        from prometheus_client import start_http_server

        start_http_server(cfg.metrics.port, addr=cfg.metrics.host, registry=h.metrics.registry)

    def _term(signum: int, frame: Any) -> None:
        h.request_stop()

    signal.signal(signal.SIGTERM, _term)
    logging.getLogger("historian").info(
        "historian %s: broker %s:%d, share group %s, %d daemon(s) for replay, evidence %s", cfg.client_id(),
        cfg.broker.host, cfg.broker.port, cfg.broker.share_group, len(cfg.daemons), cfg.evidence.mode)
    h.run_forever()
    return 1 if h.failed else 0


def _store(cfg: Any) -> Any:
    from historian.store import Store

    db = cfg.database
    return Store(db.url.get_secret_value(), db.partition, db.partitions_ahead, db.connect_timeout_s)


@_with_config
def _migrate(cfg: Any, args: argparse.Namespace) -> int:
    from historian.store import DatabaseDown

    try:
        applied = _store(cfg).migrate()
    except DatabaseDown as e:
        sys.stderr.write(f"historian migrate: {e}\n")
        return 1
    print(f"schema up to date ({'applied ' + ', '.join(map(str, applied)) if applied else 'nothing to apply'})")
    return 0


@_with_config
def _query(cfg: Any, args: argparse.Namespace) -> int:
    import json

    from historian.store import DatabaseDown

    try:
        rows = _store(cfg).part(args.part, args.line, args.limit)
    except DatabaseDown as e:
        sys.stderr.write(f"historian query: {e}\n")
        return 1
    if args.json:
        print(json.dumps(rows, default=str, indent=1))
        return 0 if rows else 1
    if not rows:
        sys.stderr.write(f"no decision about part {args.part!r}" + (f" on line {args.line}" if args.line else "") + "\n")
        return 1
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        print(f"{r['decided_at']:%Y-%m-%d %H:%M:%S}  {r['line']}/{r['camera']}  part {r['part_id']}  lot {r['lot'] or '-'}  "
              f"{r['label']} ({'DEFECT' if r['is_defect'] else 'ok'}, {r['action']})  score {score} / {r['threshold']}  "
              f"model {r['model_id']}  event {r['event_id']}  evidence {r['evidence_ref'] or r['evidence_path'] or '-'}")
        for f in r.get("feedback") or []:
            print(f"    operator: {f['kind']} -> {f['label']} by {f['who'] or '-'} at {f['answered_at']}")
    return 0


@_with_config
def _lot(cfg: Any, args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from historian.store import DatabaseDown

    at = datetime.fromisoformat(args.at.replace("Z", "+00:00")) if args.at else datetime.now(timezone.utc)
    try:
        _store(cfg).start_lot(args.line, args.lot or None, at)
    except DatabaseDown as e:
        sys.stderr.write(f"historian lot: {e}\n")
        return 1
    print(f"line {args.line}: lot {args.lot or '(none)'} from {at.isoformat()}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "historian",
        help="the plant historian: every line's decisions from MQTT into PostgreSQL, exactly once per part",
        description="Subscribe (MQTT 5 shared subscription $share/<group>/...) to every daemon's decisions and write "
                    "one PostgreSQL row per decision, keyed by event_id, acknowledging each message only after its row "
                    "is committed; ask the daemons' /events replay for missing seqs. Without a subcommand: run a worker.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p, sub=False)
    p.set_defaults(func=_run)
    hs = p.add_subparsers(dest="historian_command", metavar="SUBCOMMAND")
    q = hs.add_parser("query", help="every decision about one part, newest first")
    _common(q, sub=True)
    q.add_argument("--part", required=True, help="the part id (from the trigger, or the passage number)")
    q.add_argument("--line", default=None, help="only on this line")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--json", action="store_true", help="JSON rows instead of one line each")
    q.set_defaults(func=_query)
    m = hs.add_parser("migrate", help="apply the schema (plain versioned SQL files) and exit")
    _common(m, sub=True)
    m.set_defaults(func=_migrate)
    lt = hs.add_parser("lot", help="record that a lot starts on a line (decisions after it get this lot)")
    _common(lt, sub=True)
    lt.add_argument("--line", required=True)
    lt.add_argument("--lot", required=True, help="the lot; empty: no lot from then on")
    lt.add_argument("--at", default=None, help="ISO 8601 time (default now)")
    lt.set_defaults(func=_lot)
