"""Shadow mode, promote and roll back in-process (edge/learn/shadow.py): the real loop, decider and API over real frames
of the generated conveyor video; score functions stand in for the models where the test is about counting, the
committed tiny package where it is about swapping real packages."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.api.state import ApiState
from edge.daemon import EXIT_OK, Daemon, load_model
from edge.judge.classifier import ModelError
from edge.learn.lifecycle import active_model_path
from tests.helpers import (
    AUTH,
    RecordingSink,
    ReplayCapture,
    edit_sidecar,
    fake_model,
    metric,
    package_copies,
    video_frames,
    wait_for,
    with_token,
)
from tests.test_loop import FIRST_BOXES, ground_truth_scores, loop_cfg, run_in_thread

TOKEN = "shadow-test-token"


def shadow_cfg(tmp_path: Path, gt: dict[str, Any], **over: Any):
    return loop_cfg(tmp_path, gt, shadow={"dir": str(tmp_path / "shadow")},
                    operator={"feedback_dir": str(tmp_path / "feedback")}, **over)


def run_video_with_candidate(tmp_path: Path, synth_video, candidate_fn, live_fn=None):
    """Replay the first boxes with a ground-truth live model and ``candidate_fn`` in shadow; -> (daemon, sink)."""
    video, gt = synth_video
    frames = gt["boxes"][FIRST_BOXES - 1]["exit_frame"] + 20
    capture = ReplayCapture(video_frames(video, frames))
    sink = RecordingSink()
    live = live_fn(capture) if live_fn else ground_truth_scores(capture, gt)
    cand = fake_model(candidate_fn, model_id="cand@0000000000c1")

    def loader(path):
        if Path(path).name != "cand.tflite":
            raise ModelError(f"{path}: not found")
        return cand

    d = Daemon(shadow_cfg(tmp_path, gt), fake_model(live), capture=capture, sink=sink, loader=loader)
    d.model_control.load_candidate(tmp_path / "cand.tflite")
    assert d.run() == EXIT_OK
    assert d.shadow.wait_idle(60), "the shadow worker did not finish its queue"
    return d, sink


def test_shadow_counts_agreements_and_keeps_disagreements_for_review(tmp_path, synth_video):
    # a candidate that passes every box: it disagrees exactly on the boxes the live model rejects
    d, sink = run_video_with_candidate(tmp_path, synth_video, lambda roi: 0.0)
    decisions, defects = sink.results, sink.defects
    assert len(decisions) == FIRST_BOXES and 0 < len(defects) < len(decisions)
    s = d.shadow.doc()
    assert s["judged"] == len(decisions) and s["errors"] == 0 and s["skipped"] == 0
    assert s["disagreed"] == len(defects) == s["live_defect_candidate_ok"]
    assert s["live_ok_candidate_defect"] == 0 and s["agreed"] == len(decisions) - len(defects)
    assert s["agreement_ratio"] == pytest.approx(s["agreed"] / s["judged"], abs=1e-4)
    # the candidate never publishes: every defect event is the live model's
    assert {e["model_id"] for e in sink.results} == {"fake@000000000001"}
    assert metric(d.metrics, "boxinspect_shadow_disagreements_total") == len(defects)
    assert metric(d.metrics, "boxinspect_shadow_boxes_total") == len(decisions)
    assert metric(d.metrics, "boxinspect_shadow_agreement_ratio") == pytest.approx(s["agreed"] / s["judged"])
    # the disagreeing crops wait on disk, one per rejected box, and a label makes them feedback like any other
    kept = sorted(p.stem for p in (tmp_path / "shadow" / "disagreements").glob("*.jpg"))
    assert kept == sorted(e["event_id"] for e in defects)
    client = TestClient(create_app(with_token(d.state.config) and d.state), headers=AUTH)
    view = client.get("/ui/model").json()
    assert str(tmp_path) not in json.dumps(view)  # the open page's view names no file paths
    assert view["candidate"]["model_id"] == "cand@0000000000c1" and view["shadow"]["disagreed"] == len(defects)
    first = view["disagreements"][0]
    assert first["live"]["label"] == "defective" and first["candidate"]["label"] == "ok"
    assert client.get(f"/ui/shadow/{first['name']}.jpg").headers["content-type"] == "image/jpeg"
    assert client.post(f"/ui/shadow/{first['name']}", json={"label": "nonsense"}).status_code == 422
    r = client.post(f"/ui/shadow/{first['name']}", json={"label": "defective", "who": "test"})
    assert r.status_code == 200, r.text
    assert (tmp_path / "feedback" / "defective" / f"{first['name']}.jpg").is_file()
    assert r.json()["source"] == "shadow disagreement" and r.json()["kind"] == "label"
    assert client.post(f"/ui/shadow/{first['name']}", json={"label": "ok"}).status_code == 404  # gone from the queue
    assert len(d.shadow.store) == len(defects) - 1


def test_an_identical_candidate_agrees_on_every_box(tmp_path, synth_video):
    seen: dict[int, float] = {}  # the live score of each ROI array (alive while the shadow holds it)

    def live_fn(capture):
        _, gt = synth_video
        base = ground_truth_scores(capture, gt)

        def score(roi: np.ndarray) -> float:
            seen[id(roi)] = base(roi)
            return seen[id(roi)]

        return score

    d, sink = run_video_with_candidate(tmp_path, synth_video, lambda roi: seen[id(roi)], live_fn)
    s = d.shadow.doc()
    assert s["judged"] == len(sink.results) == FIRST_BOXES
    assert s["agreement_ratio"] == 1.0 and s["disagreed"] == 0 and not list((tmp_path / "shadow").rglob("*.jpg"))


def test_a_crashing_candidate_does_not_stop_or_change_inspection(tmp_path, synth_video, caplog):
    def broken(roi: np.ndarray) -> float:
        raise RuntimeError("candidate interpreter exploded")

    d, sink = run_video_with_candidate(tmp_path, synth_video, broken)
    assert d.stop_reason == "end of the source"
    assert len(sink.results) == FIRST_BOXES and sink.defects  # every box decided, defects published
    s = d.shadow.doc()
    assert s["errors"] == FIRST_BOXES and s["judged"] == 0 and "exploded" in (s["last_error"] or "")
    assert metric(d.metrics, "boxinspect_shadow_errors_total") == FIRST_BOXES
    assert sum("judging a box failed" in r.getMessage() for r in caplog.records) == 1  # logged once, then counted


@pytest.fixture()
def two_packages(tmp_path: Path, tiny_model: Path) -> tuple[Path, Path]:
    """The tiny package twice in one model dir: ``a.tflite`` and ``b.tflite`` (another threshold, so another id)."""
    a, b = package_copies(tiny_model, tmp_path / "models", ("a", "b"))
    edit_sidecar(b, lambda doc: doc.update(threshold=0.25))
    return a, b


def test_promote_and_rollback_through_the_api_with_real_packages(tmp_path, synth_video, two_packages):
    video, gt = synth_video
    a, b = two_packages
    cfg = shadow_cfg(tmp_path, gt, model={"path": str(a)}, api={"enabled": True, "port": 0, "token": TOKEN})
    capture = ReplayCapture(itertools.cycle(list(video_frames(video, gt["boxes"][2]["exit_frame"]))), end=False)
    sink = RecordingSink()
    d = Daemon(cfg, load_model(cfg, a), capture=capture, sink=sink)
    t, code = run_in_thread(d)
    try:
        wait_for(lambda: d.api_url, 60, "the API")
        import httpx

        auth = {"Authorization": f"Bearer {TOKEN}"}
        api = httpx.Client(base_url=d.api_url, timeout=60)
        a_id = api.get("/model", headers=auth).json()["live"]["model_id"]
        assert api.post("/model/candidate", json={"path": "b.tflite"}).status_code == 401
        assert api.post("/model/candidate", json={"path": "../b.tflite"}, headers=auth).status_code == 404
        assert api.post("/model/promote", headers=auth).status_code == 409  # no candidate yet
        assert api.post("/model/rollback", headers=auth).status_code == 409  # nothing to roll back to
        r = api.post("/model/candidate", json={"path": "b.tflite"}, headers=auth)
        assert r.status_code == 200, r.text
        b_id = r.json()["candidate"]["model_id"]
        assert b_id != a_id and r.json()["candidate"]["threshold"] == 0.25
        wait_for(lambda: api.get("/model", headers=auth).json()["shadow"]["judged"] >= 1, 120, "a box judged in shadow")
        r = api.post("/model/promote", json={"who": "tester"}, headers=auth)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["live"]["model_id"] == b_id and doc["previous"]["model_id"] == a_id and doc["candidate"] is None
        promo = sink.models[-1]
        assert promo["model_id"] == b_id and promo["previous_model_id"] == a_id
        assert promo["change"]["action"] == "promote" and promo["change"]["who"] == "tester"
        assert promo["change"]["from"]["model_id"] == a_id and promo["change"]["to"]["model_id"] == b_id
        assert promo["change"]["shadow"]["judged"] >= 1  # the shadow statistics the promotion was based on
        assert promo["change"]["from"]["metrics"]["source"] == promo["change"]["to"]["metrics"]["source"] == "test split (convert)"
        wait_for(lambda: d.decider.model_id == b_id, 30, "the loop to follow the promotion")
        r = api.post("/model/rollback", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["live"]["model_id"] == a_id and r.json()["previous"]["model_id"] == b_id
        back = sink.models[-1]
        assert back["model_id"] == a_id and back["change"]["action"] == "rollback" and back["previous_model_id"] == b_id
        assert [h["action"] for h in api.get("/model", headers=auth).json()["history"]] == ["rollback", "promote"]
        r = api.post("/model/rollback", headers=auth)  # a rollback of the rollback: b is live again
        assert r.status_code == 200 and r.json()["live"]["model_id"] == b_id, r.text
    finally:
        d.stop_requested.set()
        t.join(30)
    assert code == [EXIT_OK]
    assert d.metrics.value(d.metrics.reloads, outcome="ok") == 3
    schema = json.loads((Path(__file__).resolve().parents[1] / "edge" / "model.schema.json").read_text())
    for doc in sink.models:  # the start, the promotion, the rollback: each a valid retained model document
        jsonschema.validate(doc, schema)
    assert [m["change"] and m["change"]["action"] for m in sink.models] == [None, "promote", "rollback", "rollback"]

    # A restart keeps the promoted package, and what a rollback returns to (<shadow.dir>/active.json).
    assert active_model_path(cfg) == b
    again = Daemon(cfg, load_model(cfg, active_model_path(cfg)), sink=RecordingSink())
    assert again.models.get().classifier.model_id == b_id
    assert again.model_control.previous["model_id"] == a_id and len(again.model_control.history) == 3
    assert again.model_control.rollback()["live"]["model_id"] == a_id
    assert active_model_path(cfg) == a
    # a config that names another model.path wins over the record
    other = shadow_cfg(tmp_path, gt, model={"path": str(b)})
    assert active_model_path(other) == b and Daemon(other, load_model(other, b)).model_control.previous is None


def test_model_changes_need_a_token_like_reload(tmp_path, synth_video, two_packages):
    _, gt = synth_video
    a, _ = two_packages
    cfg = shadow_cfg(tmp_path, gt, model={"path": str(a)})
    d = Daemon(cfg, load_model(cfg, a), sink=RecordingSink())
    state = ApiState(config=cfg, metrics=d.metrics, models=d.models, model_control=d.model_control)
    client = TestClient(create_app(state))
    for path in ("/model/promote", "/model/rollback", "/model/retrain"):
        r = client.post(path)
        assert r.status_code == 403 and "api.token" in r.json()["detail"]
    assert client.post("/model/candidate", json={"path": "b.tflite"}).status_code == 403
    assert client.get("/ui/model").json()["live"]["model_id"] == d.models.get().classifier.model_id
    assert client.get("/model").status_code == 403  # the full document names files: engineer role (issue 24)


def test_bench_candidate_times_the_head_on_live_features_only_for_a_head_on_the_live_backbone(
        tmp_path, tiny_model, few_boxes, two_packages):
    from edge.bench import bench_shadow, format_shadow
    from edge.learn.retrain import retrain

    head = retrain(tiny_model, [few_boxes], tmp_path / "cand", min_per_class=4, C=1.0).candidate  # no C search
    res = bench_shadow(tiny_model, head, threads=1, runs=5, warmup=1)
    assert res["fast_path"] and res["results"]["candidate_head_on_live_features"]["median_ms"] >= 0
    assert "judged from the live features" in format_shadow(res)
    _, other = two_packages  # a full package (same network, another threshold): no head, a second invoke
    res = bench_shadow(tiny_model, other, threads=1, runs=5, warmup=1)
    assert not res["fast_path"] and res["results"]["candidate_head_on_live_features"] is None
    assert res["results"]["candidate_invoke"]["median_ms"] > 0


def test_threshold_copies_disagree_exactly_on_the_decisions_between_the_thresholds(tmp_path, synth_video, int8_model):
    """Shadow judges like the live model (issue 23): two copies of the live package that differ only in their
    threshold (0.05 and 0.999) score the same records the live decision was made on, aggregate them the same
    way and apply their threshold by the same rule. So a copy disagrees exactly on the decisions whose aggregate
    lies between its threshold and the live one, and the two together exactly on those between 0.05 and 0.999;
    each disagreement card shows both aggregates and thresholds and keeps the crop that decided."""
    video, gt = synth_video
    low, high = package_copies(int8_model, tmp_path / "models", ("low", "high"))
    edit_sidecar(low, lambda doc: doc.update(threshold=0.05))
    edit_sidecar(high, lambda doc: doc.update(threshold=0.999))
    n_frames = gt["boxes"][-1]["exit_frame"] + 20
    disagreements, decisions = {}, {}
    for name, cand in (("low", low), ("high", high)):
        (tmp_path / name).mkdir()
        cfg = shadow_cfg(tmp_path / name, gt, model={"path": str(int8_model), "dir": str(tmp_path / "models")})
        sink = RecordingSink()
        d = Daemon(cfg, load_model(cfg, int8_model), capture=ReplayCapture(video_frames(video, n_frames)), sink=sink)
        d.model_control.load_candidate(cand)
        assert d.run() == EXIT_OK
        assert d.shadow.wait_idle(120), "the shadow worker did not finish its queue"
        live_thr = d.models.get().threshold()
        assert 0.05 < live_thr < 0.999
        s = d.shadow.doc()
        events = sink.results
        assert s["judged"] == len(events) >= len(gt["boxes"]) - 1 and s["errors"] == s["skipped"] == 0
        lo, hi = sorted((live_thr, 0.05 if name == "low" else 0.999))
        between = {e["event_id"] for e in events if lo <= e["score"] < hi}
        cards = {c["name"]: c for c in d.shadow.store.items(1000)}
        assert set(cards) == between and s["disagreed"] == len(between)
        by_id = {e["event_id"]: e for e in events}
        for eid, card in cards.items():
            e = by_id[eid]
            assert card["live"]["score"] == pytest.approx(e["score"], abs=1e-6) and card["live"]["threshold"] == live_thr
            assert card["candidate"]["score"] == pytest.approx(e["score"], abs=1e-6)  # same records, same aggregate
            assert card["candidate"]["label"] != card["live"]["label"]
            assert card["frames"]["frames"] == e["decided_on"]["frames"]
            assert (tmp_path / name / "shadow" / "disagreements" / f"{eid}.jpg").is_file()
        disagreements[name], decisions[name] = between, [(e["decided_on"]["frames"], e["score"]) for e in events]
    assert decisions["low"] == decisions["high"]  # the same video, the same live decisions
    both = disagreements["low"] | disagreements["high"]
    assert len(both) == sum(0.05 <= score < 0.999 for _, score in decisions["low"]) > 0
