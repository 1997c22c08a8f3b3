"""The plant historian against a real PostgreSQL (its own cluster, tests/postgres.py) and a real Mosquitto:
one row per decision however often it arrives, gaps filled from a daemon's replay (the real API and outbox),
and no acknowledgement before the commit while the database is down (a worker killed then loses nothing)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from edge.api.app import create_app
from edge.api.server import start_api
from edge.api.state import ApiState
from edge.deliver.mqtt_sink import MqttSink
from edge.runtime.metrics import Metrics
from edge.state import ModelSlot
from historian.config import load_config
from historian.consumer import Historian
from historian.migrate import migrations
from historian.store import Store
from tests import s3server
from tests.helpers import (
    START_TIMEOUT,
    DaemonProc,
    Publisher,
    edge_config,
    free_port,
    tiny_daemon_cfg,
    wait_for,
)
from tests.postgres import Postgres, pg_bin
from tests.test_mqtt_sink import make_event

REPO = Path(__file__).resolve().parents[1]
TOKEN = "historian-test-token-0123456789"


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with Postgres() as p:
        yield p


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """What a test starts, stopped at its end in reverse order (``stack.callback(line.close)``)."""
    with ExitStack() as s:
        yield s


@pytest.fixture
def db(pg: Postgres) -> Iterator[str]:
    """A fresh database per test (the cluster is shared by the module)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield pg.url.rsplit("/", 1)[0] + f"/{name}"


def rows(url: str, sql: str = "SELECT event_id::text, seq FROM decisions ORDER BY seq") -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as c:
        return list(c.execute(sql).fetchall())


def schema_applied(url: str) -> bool:
    try:
        return rows(url, "SELECT count(*) FROM schema_migrations") == [(len(migrations()),)]
    except psycopg.errors.UndefinedTable:
        return False


def event(line: str, camera: str, i: int, defect: bool) -> dict[str, Any]:
    return {**make_event(i, defect), "line": line, "camera": camera, "part_id": f"P-{i}"}


class Line:
    """One daemon's delivery path: the real sink with its outbox, and (optionally) the real API for replay."""

    def __init__(self, tmp_path: Path, broker: Any, api: bool = False, base_topic: str | None = None,
                 model: Any = None) -> None:
        mqtt: dict[str, Any] = {"outbox_retention_s": 3600, "outbox_all_decisions": True, "publish_feedback": True}
        if base_topic:  # a topic tree of its own: no other test's (retained) messages reach this historian
            mqtt["base_topic"] = base_topic
        self.cfg = edge_config(tmp_path, broker=broker, api={"token": TOKEN, "port": 0}, mqtt=mqtt,
                               operator={"feedback_dir": str(tmp_path / "feedback")})
        self.line, self.camera = self.cfg.line + "-" + uuid.uuid4().hex[:6], self.cfg.camera
        self.sink = MqttSink(self.cfg.mqtt, f"{self.cfg.mqtt.base_topic}/{self.line}/{self.camera}", Metrics())
        self.sink.start()
        assert self.sink.wait_connected(10)
        self.server = None
        self.state = ApiState(config=self.cfg, metrics=Metrics(), models=ModelSlot(model), sink=self.sink)
        if api:
            app = create_app(self.state)
            self.server = start_api(app, self.cfg.api)

    def publish(self, n: int, start: int = 0) -> list[dict[str, Any]]:
        evs = [event(self.line, self.camera, i, defect=i % 3 == 0) for i in range(start, start + n)]
        for ev in evs:
            self.sink.publish_defect(ev)
        assert self.sink.wait_drained(20)
        return evs

    def daemon(self) -> dict[str, Any]:
        assert self.server is not None
        return {"line": self.line, "camera": self.camera, "url": self.server.url, "token": TOKEN}

    def close(self) -> None:
        if self.server is not None:
            self.server.stop(5)
        self.sink.stop(5)


def hist_cfg(mosq: Any, url: str, daemons: list[dict[str, Any]] = (), **over: Any) -> dict[str, Any]:  # type: ignore[assignment]
    return {"broker": {"host": mosq.host, "port": mosq.port, "client_id": f"hist-{uuid.uuid4().hex[:8]}",
                       "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "keepalive_s": 5,
                       "share_group": f"g{uuid.uuid4().hex[:6]}", **over.pop("broker", {})},
            "database": {"url": url, "retry_min_s": 0.2, "retry_max_s": 1.0},
            "daemons": list(daemons), "metrics": {"enabled": False}, **over}


def running(cfg: dict[str, Any]) -> Historian:
    h = Historian(load_config(None, environ={}, overrides=cfg))
    h.start()
    if not (h.connected.wait(30) and h.schema_ready.wait(30)):
        h.stop()  # not left running into the next test
        raise AssertionError(f"historian not up: MQTT connected {h.connected.is_set()}, schema {h.schema_ready.is_set()}")
    return h


def test_every_decision_is_one_row_however_often_it_arrives(tmp_path: Path, mosquitto: Any, db: str,
                                                            stack: ExitStack) -> None:
    line = Line(tmp_path, mosquitto)
    stack.callback(line.close)
    h = running(hist_cfg(mosquitto, db))
    stack.callback(h.stop)
    wait_for(lambda: h.client.is_connected(), 10, "subscribed")
    evs = line.publish(12)
    wait_for(lambda: len(rows(db)) == 12, 30, "12 rows")
    # the same messages again (a broker resend) and a replay of all of them: no new row
    with Publisher(mosquitto.host, mosquitto.port) as pub:
        for r in line.sink.outbox.since(0, 100):
            pub.send(r.payload, topic=r.topic)
    line.sink.replay(0)
    wait_for(lambda: h.written.duplicates >= 24, 30, "24 duplicates seen")
    got = rows(db)
    assert sorted(e for e, _ in got) == sorted(e["event_id"] for e in evs)
    assert [s for _, s in got] == list(range(1, 13))  # OK decisions went through the outbox too (seq)
    ok = rows(db, "SELECT count(*) FILTER (WHERE is_defect), count(*) FILTER (WHERE NOT is_defect) FROM decisions")
    assert ok == [(4, 8)]
    assert h.written.inserted == 12


def test_a_gap_is_filled_from_the_daemons_replay_and_what_is_gone_is_recorded(tmp_path: Path, mosquitto: Any,
                                                                               db: str, stack: ExitStack) -> None:
    line = Line(tmp_path, mosquitto, api=True)
    stack.callback(line.close)
    first = line.publish(5)  # nobody subscribed yet: the broker drops them; the outbox keeps them (retention)
    with sqlite3.connect(line.cfg.mqtt.outbox_path) as c:  # seq 3 is past retention
        c.execute("DELETE FROM outbox WHERE seq = 3")
    # on start the worker asks the daemon's replay for what it has not got (here: everything after seq 0)
    h = running(hist_cfg(mosquitto, db, [line.daemon()], gap_check_s=3600))
    stack.callback(h.stop)
    wait_for(lambda: {s for _, s in rows(db)} == {1, 2, 4, 5}, 30, "seq 1, 2, 4, 5 from the replay at start")
    second = line.publish(5, start=5)  # seq 6-10 arrive over MQTT
    wait_for(lambda: {s for _, s in rows(db)} >= {6, 7, 8, 9, 10}, 30, "seq 6-10")
    store = Store(db)
    assert h.check_gaps(store) == 0  # seq 3 is the only gap, and the outbox no longer has it
    got = {e: s for e, s in rows(db)}
    assert sorted(got.values()) == [1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert set(got) == {e["event_id"] for e in first + second} - {first[2]["event_id"]}
    assert rows(db, "SELECT first_seq, last_seq, reason FROM lost_ranges") == [(3, 3, "not_replayable")]
    assert store.seq_state(line.line, line.camera)[:2] == (10, [])
    assert h.check_gaps(store) == 0  # nothing asked twice
    ref, eid = rows(db, "SELECT evidence_ref, event_id::text FROM decisions WHERE seq = 1")[0]
    assert ref == f"{line.server.url}/ui/decisions/{eid}/frame.jpg"  # make_event has a frame, no crop


def test_nothing_is_acknowledged_before_its_commit_while_the_database_is_down(tmp_path: Path, mosquitto: Any,
                                                                             pg: Postgres, db: str) -> None:
    """PostgreSQL stops; 20 decisions come; the worker takes only `receive_maximum` (5) of them, acknowledges none,
    and is SIGKILLed holding them. PostgreSQL comes back, the worker restarts with its session: 20 rows, once each."""
    base = f"bi-{uuid.uuid4().hex[:8]}"  # the count below is exact: only this test's messages may arrive
    line = Line(tmp_path, mosquitto, base_topic=base)
    metrics_port = free_port()
    cfg = hist_cfg(mosquitto, db, broker={"receive_maximum": 5, "client_id": f"hist-{uuid.uuid4().hex[:8]}",
                                          "base_topic": base},
                   metrics={"enabled": True, "port": metrics_port})
    cfg_path = tmp_path / "historian.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "historian.log", "ab")

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "boxinspect.cli", "historian", "--config", str(cfg_path)],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})

    def metric(name: str) -> float:
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + " "))

    def up() -> bool:
        try:
            return metric("historian_mqtt_connected") == 1
        except OSError:
            return False

    proc = worker()
    try:
        wait_for(up, 30, "historian worker up")
        wait_for(lambda: schema_applied(db), 30, "schema")
        pg.stop()
        evs = line.publish(20)  # all PUBACKed by the broker: the daemon's part is done
        wait_for(lambda: metric("historian_messages_received_total") >= 5, 30, "5 messages taken")
        assert metric("historian_messages_received_total") == 5  # receive maximum: the broker holds the other 15
        assert metric("historian_messages_acked_total") == 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        pg.start()
        assert rows(db, "SELECT count(*) FROM decisions") == [(0,)]
        proc = worker()
        wait_for(lambda: rows(db, "SELECT count(*) FROM decisions") == [(20,)], 60, "20 rows after the restart")
        wait_for(lambda: metric("historian_messages_acked_total") >= 20, 30, "20 acknowledged")
        got = rows(db)
        assert sorted(e for e, _ in got) == sorted(e["event_id"] for e in evs)
        assert [s for _, s in got] == list(range(1, 21))
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        line.close()
        if not pg.running:
            pg.start()


def post_feedback(api: str, event_id: str, kind: str, who: str) -> None:
    """An operator's answer about a decision on the daemon's page endpoint (POST /ui/feedback), with the token."""
    import urllib.request

    body = json.dumps({"target": "decision", "id": event_id, "kind": kind, "who": who}).encode()
    req = urllib.request.Request(f"{api}/ui/feedback", body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200, resp.read()


def test_operator_feedback_reaches_the_historian_joined_to_its_decision(tmp_path: Path, mosquitto: Any, db: str,
                                                                        tiny_model: Path, stack: ExitStack) -> None:
    """Answers given on the daemon's real operator endpoint (POST /ui/feedback) go through its outbox
    (mqtt.publish_feedback): one answered before any historian runs comes from the replay at start, the others
    over MQTT; resends make no second row; their seqs count in the gap bookkeeping; the view joins each decision
    to its latest answer and `historian query --part` shows it."""
    import numpy as np

    from edge.judge.classifier import Classifier
    from edge.learn.feedback_mqtt import publish_answers
    from edge.state import LoadedModel

    line = Line(tmp_path, mosquitto, api=True, model=LoadedModel(Classifier.load(tiny_model)))
    stack.callback(line.close)
    assert publish_answers(line.cfg, line.state.operator.feedback, line.sink) is not None  # as the daemon does
    crop = np.full((64, 64, 3), 128, np.uint8)

    def answer(ev: dict[str, Any], kind: str, who: str) -> None:
        post_feedback(line.server.url, ev["event_id"], kind, who)

    evs = line.publish(3)  # seq 1-3; event 0 is a defect, 1 and 2 are OK
    for ev in evs:
        line.state.operator.on_decision(ev, crop, crop)  # the page keeps the crops of what the loop decided
    answer(evs[0], "false_reject", "anna")  # seq 4: nobody subscribed, only the outbox has it
    h = running(hist_cfg(mosquitto, db, [line.daemon()], gap_check_s=3600))
    stack.callback(h.stop)
    wait_for(lambda: rows(db, "SELECT count(*) FROM operator_feedback") == [(1,)], 30, "the answer from the replay")
    answer(evs[1], "missed_defect", "ben")  # seq 5, over MQTT
    answer(evs[0], "correct", "carl")  # seq 6: carl overrules anna
    wait_for(lambda: rows(db, "SELECT count(*) FROM operator_feedback") == [(3,)], 30, "3 answers")
    line.sink.replay(0)  # every event and answer again
    wait_for(lambda: h.written.duplicates >= 3, 30, "the replayed decisions seen")
    got = rows(db, "SELECT event_id::text, kind, label, who, seq, verdict FROM operator_feedback ORDER BY seq")
    ids = [e["event_id"] for e in evs]
    assert got == [(ids[0], "false_reject", "ok", "anna", 4, "damaged"),
                   (ids[1], "missed_defect", "defective", "ben", 5, "intact"),
                   (ids[0], "correct", "defective", "carl", 6, "damaged")]
    view = rows(db, "SELECT event_id::text, operator_label, model_label, who, part_id FROM decision_feedback "
                    "ORDER BY part_id")
    assert view == [(ids[0], "defective", "damaged", "carl", "P-0"), (ids[1], "defective", "intact", "ben", "P-1")]
    _, missing, top = Store(db).seq_state(line.line, line.camera)
    assert (missing, top) == ([], 6)  # the answers' seqs count in the bookkeeping: no gap to ask for
    assert rows(db, "SELECT count(*) FROM lost_ranges") == [(0,)]
    out = subprocess.run([sys.executable, "-m", "boxinspect.cli", "historian", "query", "--part", "P-0", "--db", db],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "operator: false_reject -> ok by anna" in out.stdout and "operator: correct -> defective by carl" in out.stdout


def test_a_real_daemon_sends_its_decision_and_the_operators_answer_to_the_historian(tmp_path: Path, mosquitto: Any,
                                                                                    db: str, tiny_model: Path,
                                                                                    stack: ExitStack) -> None:
    """The daemon as a process with the shipped wiring (mqtt.publish_feedback, outbox_all_decisions, triggered
    mode): a trigger makes a decision, an operator answers it on the page's endpoint, and the historian holds both,
    joined in decision_feedback."""
    cfg = tiny_daemon_cfg(tmp_path, tiny_model, api={"port": free_port(), "token": TOKEN},
                          mqtt={"enabled": True, "host": mosquitto.host, "port": mosquitto.port,
                                "outbox_path": "outbox.sqlite3", "publish_feedback": True, "outbox_all_decisions": True},
                          decision={"mode": "triggered"}, operator={"feedback_dir": str(tmp_path / "feedback")})
    d = DaemonProc(tmp_path, cfg).start()
    stack.callback(d.stop)
    d.wait_api(START_TIMEOUT)
    h = running(hist_cfg(mosquitto, db, [{"line": cfg["line"], "camera": cfg["camera"], "url": d.base,
                                          "token": TOKEN}], gap_check_s=3600))
    stack.callback(h.stop)
    wait_for(lambda: "listening for triggers" in d.log(), 30, "the trigger subscription", d=d)
    with Publisher(mosquitto.host, mosquitto.port) as pub:
        pub.send(json.dumps({"part_id": "A-77"}).encode(), topic=f"boxinspect/{cfg['line']}/{cfg['camera']}/trigger")
    row = wait_for(lambda: rows(db, "SELECT event_id::text, label FROM decisions"), 60, "the decision's row", d=d)
    (eid, label), = row
    post_feedback(d.base, eid, "correct", "dora")
    got = wait_for(lambda: rows(db, "SELECT v.event_id::text, v.kind, v.operator_label, v.model_label, v.who, "
                                    "v.part_id, f.seq FROM decision_feedback v JOIN operator_feedback f "
                                    "USING (event_id, answered_at)"),
                   30, "the answer's row", d=d)
    assert got == [(eid, "correct", label, label, "dora", "A-77", 2)]  # seq 1 the decision, 2 the answer


@pytest.mark.skipif(not s3server.available(), reason="moto[server] and boto3 (the dev extra) are not installed")
def test_evidence_mode_s3_copies_each_crop_once_to_a_real_s3_server(tmp_path: Path, mosquitto: Any, db: str,
                                                                      stack: ExitStack) -> None:
    """evidence.mode s3 against moto's S3 server (its own process, over HTTP): each new decision's crop is fetched
    once from the daemon's real API and uploaded, the row points at the copy; a crop the daemon no longer has
    leaves the daemon's URL in the row; a resend of every decision uploads nothing again."""
    import urllib.request

    import numpy as np

    line = Line(tmp_path, mosquitto, api=True)
    stack.callback(line.close)
    s3 = stack.enter_context(s3server.S3Server())
    s3.client().create_bucket(Bucket="evidence")
    cfg = hist_cfg(mosquitto, db, [line.daemon()], gap_check_s=3600, evidence={"mode": "s3", "s3": {
        "endpoint_url": s3.endpoint_url, "bucket": "evidence", "prefix": "plant/", "region": s3server.REGION,
        "access_key": s3server.ACCESS_KEY, "secret_key": s3server.SECRET_KEY}})
    h = running(cfg)
    stack.callback(h.stop)
    evs = [{**event(line.line, line.camera, i, defect=i == 0),
            "evidence": {"crop": f"/var/lib/boxinspect/evidence/{i}_crop.jpg", "frame": None}} for i in range(4)]
    for i, ev in enumerate(evs[:3]):  # the page keeps these crops; the daemon has none of the 4th
        crop = np.full((48, 64, 3), 40 * i, np.uint8)
        line.state.operator.on_decision(ev, crop, crop)
    for ev in evs:
        line.sink.publish_defect(ev)
    assert line.sink.wait_drained(20)
    assert h.uploader is not None
    wait_for(lambda: h.uploader.uploaded + h.uploader.failed == 4, 60, "4 crops offered")
    assert (h.uploader.uploaded, h.uploader.failed) == (3, 1)
    refs = dict(rows(db, "SELECT event_id::text, evidence_ref FROM decisions"))
    bucket = s3.client()
    for ev in evs[:3]:
        day = datetime.fromisoformat(ev["decided_at"].replace("Z", "+00:00"))
        key = f"plant/{line.line}/{line.camera}/{day:%Y/%m/%d}/{ev['event_id']}_crop.jpg"
        assert refs[ev["event_id"]] == f"s3://evidence/{key}"
        obj = bucket.get_object(Bucket="evidence", Key=key)
        served = urllib.request.urlopen(f"{line.server.url}/ui/decisions/{ev['event_id']}/crop.jpg",
                                        timeout=10).read()
        assert obj["ContentType"] == "image/jpeg" and obj["Body"].read() == served
    assert refs[evs[3]["event_id"]] == f"{line.server.url}/ui/decisions/{evs[3]['event_id']}/crop.jpg"
    line.sink.replay(0)  # every decision again: duplicates, no new upload
    wait_for(lambda: h.written.duplicates >= 4, 30, "the resent decisions seen")
    h.uploader.worker.drain(10)
    assert h.uploader.uploaded == 3
    assert bucket.list_objects_v2(Bucket="evidence")["KeyCount"] == 3


def grafana_sql(sql: str) -> str:
    """A panel's SQL with Grafana's PostgreSQL macros and the dashboard variables filled in as Grafana would."""
    import re

    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 BETWEEN now() - interval '7 days' AND now() + interval '1 day'", sql)
    sql = re.sub(r"\$__timeGroupAlias\((\w+), '1[hm]'\)", r"date_trunc('minute', \1) AS time", sql)
    return sql.replace("($line)", "('L1', 'L2')").replace("$part", "A-1").replace("$lot", "4711")


def test_the_plant_dashboards_queries_run_on_the_schema_and_query_finds_a_part(db: str) -> None:
    """Every panel, variable and annotation query of deploy/grafana/plant/plant.json runs on a migrated database
    with rows in it, as compose's read-only `grafana` role (deploy/postgres/init-grafana.sh), where check-deploy.sh
    only checks that the JSON loads; `historian query --part` finds a part."""
    from historian.records import parse

    host, port = db.split("@")[1].split("/")[0].split(":")
    init = subprocess.run(["sh", str(REPO / "deploy/postgres/init-grafana.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{os.path.dirname(pg_bin('psql'))}:{os.environ['PATH']}",
                               "PGHOST": host, "PGPORT": port, "POSTGRES_USER": "boxinspect",
                               "POSTGRES_DB": db.rsplit("/", 1)[1], "GRAFANA_DB_PASSWORD": "x"})
    assert init.returncode == 0, init.stderr  # compose's read-only role, made before the historian's schema
    store = Store(db)
    store.migrate()
    store.start_lot("L1", "4711", datetime(2020, 1, 1, tzinfo=timezone.utc))
    recs = [decision_rec(line, i) for line in ("L1", "L2") for i in range(6)]
    model = {"model_id": "tiny@1", "loaded_at": 1796507297.2, "threshold": 0.5}  # as the daemon sends it
    alarm = {"active": True, "rules": ["rate"], "changed_at": "2026-12-01T10:00:00Z", "reason": "r"}
    answer = {"kind": "false_reject", "decision_id": recs[0].event_id, "label": "intact", "who": "anna", "seq": 99,
              "answered_at": datetime.now(timezone.utc).isoformat(), "model_id": "tiny-0123abcd"}  # as the daemon sends it
    recs += [parse("boxinspect/L1/cam1/model", json.dumps(model).encode()),
             parse("boxinspect/L1/cam1/alarm", json.dumps(alarm).encode()),
             parse("boxinspect/L1/cam1/feedback", json.dumps(answer).encode())]
    assert store.write(recs).inserted == 12
    dash = json.loads((REPO / "deploy/grafana/plant/plant.json").read_text())
    sqls = [t["rawSql"] for p in dash["panels"] for t in p["targets"]]
    sqls += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    sqls += [a["target"]["rawSql"] for a in dash["annotations"]["list"]]
    with psycopg.connect(db) as c:
        c.execute("SET ROLE grafana")  # as Grafana reads: SELECT only, granted by default privileges
        for sql in sqls:
            c.execute(grafana_sql(sql)).fetchall()  # raises on a column or table the schema does not have
        lot = c.execute(grafana_sql(dash["panels"][7]["targets"][0]["rawSql"])).fetchall()
        answers = c.execute(grafana_sql(dash["panels"][10]["targets"][0]["rawSql"])).fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
            c.execute("DELETE FROM decisions")  # the role reads, nothing more
    assert len(lot) == 2  # L1's defects (i = 0, 3) got lot 4711 from lot_runs; L2 has no lot
    assert [tuple(map(str, a)) for a in answers] == [("L1", "tiny-0123abcd", "1", "0", "1", "0", "0", "0.0")]
    out = subprocess.run([sys.executable, "-m", "boxinspect.cli", "historian", "query", "--part", "A-1", "--db", db],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2 and "lot 4711" in out.stdout and "L2/cam1" in out.stdout
    none = subprocess.run([sys.executable, "-m", "boxinspect.cli", "historian", "query", "--part", "nope", "--db", db],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert none.returncode == 1 and "no decision about part 'nope'" in none.stderr


def test_the_plant_dashboard_has_the_views_the_issue_asks_for() -> None:
    """As tests/test_deploy.py checks the line dashboard: the panels a quality engineer needs, unique ids, and every
    query on the provisioned datasource (deploy/grafana/plant/datasource.yml)."""
    dash = json.loads((REPO / "deploy/grafana/plant/plant.json").read_text())
    uid = yaml.safe_load((REPO / "deploy/grafana/plant/datasource.yml").read_text())["datasources"][0]["uid"]
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for want in ("yield per line and shift", "defect pareto by model version", "part lookup", "lot", "model changes",
                 "operator answers", "spc alarms"):
        assert want in titles, want
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]} == {uid}
    assert {p["datasource"]["uid"] for p in dash["panels"]} == {uid}


def decision_rec(line: str, i: int) -> Any:
    from historian.records import decision

    return decision({**make_event(i, defect=i % 3 == 0), "line": line, "camera": "cam1", "part_id": f"A-{i}",
                     "seq": i + 1})


def _keys(model: Any, prefix: str = "") -> set[str]:
    from pydantic import BaseModel

    out = set()
    for name, f in model.model_fields.items():
        out.add(prefix + name)
        t = f.annotation
        if isinstance(t, type) and issubclass(t, BaseModel):
            out |= _keys(t, prefix + name + ".")
    return out


def _yaml_keys(d: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _yaml_keys(v, prefix + k + ".")
    return out


def test_the_example_config_documents_every_key_and_bad_settings_name_themselves(tmp_path: Path) -> None:
    from edge.config import ConfigError
    from historian.config import HistorianConfig

    example = REPO / "deploy" / "historian.example.yaml"
    assert _yaml_keys(yaml.safe_load(example.read_text())) == _keys(HistorianConfig)
    cfg = load_config(example, environ={"BOXINSPECT_HISTORIAN_DATABASE__URL": "postgresql://x@db/y",
                                        "BOXINSPECT_HISTORIAN_DAEMONS": '[{"line": "l", "camera": "c", "url": "http://d"}]'},
                      overrides={"broker": {"host": "mq", "port": 1884}})
    assert cfg.database.url.get_secret_value() == "postgresql://x@db/y" and cfg.daemon("l", "c") is not None
    assert (cfg.broker.host, cfg.broker.port) == ("mq", 1884)
    bad = tmp_path / "bad.yaml"
    bad.write_text("broker:\n  receive_maximum: 0\ndatabse: {}\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad, environ={})
    assert "broker.receive_maximum" in str(e.value) and "databse: unknown key" in str(e.value)
    out = subprocess.run([sys.executable, "-m", "boxinspect.cli", "historian", "--broker", "nohost", "--db", "x"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "expected HOST:PORT" in out.stderr


def test_the_historian_imports_neither_tensorflow_nor_the_daemon() -> None:
    code = ("import sys, historian.cli, historian.consumer, historian.store, historian.evidence; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'training', 'convert') "
            "or m in ('edge.daemon', 'edge.api.app.app', 'edge.judge.classifier')]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
