"""Inspection from good parts only (issue 29): the numpy scoring (fast), and a real anomaly package trained on
the good synthetic boxes alone, converted, loaded, self-tested, and run by the daemon over the conveyor video:
one event per box, each with its anomaly map, and the stored model input re-scores to the event's score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.judge import anomaly as an
from edge.judge.classifier import Classifier, ModelError
from tests.helpers import (
    DaemonProc,
    Publisher,
    Subscriber,
    cache_lock,
    first_occurrences,
    free_port,
    package_copies,
    topic_base,
    wait_for,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "edge" / "event.schema.json").read_text())


# ---------------------------------------------------------------- numpy scoring (fast)


def test_coreset_covers_every_cluster_and_distances_are_exact():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 50, (8, 16)).astype(np.float32)
    x = np.concatenate([c + rng.normal(0, 0.1, (200, 16)).astype(np.float32) for c in centres])
    idx = an.greedy_coreset(x, 8, proj_dim=8)
    assert sorted(set(idx // 200)) == list(range(8)), "k-centre must pick one point of every far cluster"
    q = rng.normal(0, 1, (5, 16)).astype(np.float32)
    want = np.sqrt(((q[:, None, :] - x[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(an.min_distances(q, x), want, rtol=1e-4, atol=1e-3)


def test_a_patch_unlike_the_good_ones_scores_above_the_threshold_and_shows_where():
    rng = np.random.default_rng(1)
    good = rng.normal(0, 1, (40, 6, 6, 12)).astype(np.float32)
    groups = np.arange(40)
    for method in an.METHODS:
        pc = an.PatchCore.fit(good, groups, ratio=0.5, min_size=10) if method == "patchcore" else None
        pd = an.Padim.fit(good, n_channels=12) if method == "padim" else None
        scorer = an.AnomalyScorer(method, 1.0, patchcore=pc, padim=pd)
        held = [float(scorer.cell_distances(rng.normal(0, 1, (6, 6, 12)).astype(np.float32)).max()) for _ in range(30)]
        thr = an.frr_threshold(np.array(held), target_frr=0.01)
        scorer.threshold_distance = thr["distance"]
        assert thr["distance_ci95"][0] <= thr["distance"] <= thr["distance_ci95"][1] * 1.5
        bad = rng.normal(0, 1, (6, 6, 12)).astype(np.float32)
        bad[2, 4] += 12.0
        s, cells = scorer.score_map(bad)
        assert s >= 0.5, method
        assert np.unravel_index(np.argmax(cells), cells.shape) == (2, 4), method
        grid = an.heat_grid(cells, scorer.threshold_distance)
        assert grid["values"][2 * 6 + 4] == grid["max"] >= 100
        back = an.AnomalyScorer.from_file(_write(scorer))
        assert back.score_map(bad)[0] == pytest.approx(s, rel=1e-6)


def test_the_border_rule_leaves_the_edge_ring_out_of_the_score_but_in_the_map():
    """With the aligned crop the outer ring of cells is the box's outline and belt: border=1 ignores it for the
    decision (the map keeps it), survives the bank file, and a sidecar that disagrees refuses to load."""
    from edge.judge.model_package import AnomalySpec

    rng = np.random.default_rng(2)
    good = rng.normal(0, 1, (30, 6, 6, 12)).astype(np.float32)
    pc = an.PatchCore.fit(good, np.arange(30), ratio=0.5, min_size=10)
    scorer = an.AnomalyScorer("patchcore", 5.0, patchcore=pc, border=1)
    edge, inner = good[0].copy(), good[0].copy()
    edge[0, 3] += 20.0
    inner[2, 3] += 20.0
    s_edge, cells = scorer.score_map(edge)
    assert cells[0, 3] == cells.max() > 10.0 and s_edge < 0.5 <= scorer.score_map(inner)[0]
    assert an.AnomalyScorer("patchcore", 5.0, patchcore=pc).score_map(edge)[0] >= 0.5  # border 0: every cell
    grid = an.heat_grid(cells, 5.0, border=1)  # the event's map: every cell, max = what the decision counts
    assert grid["border"] == 1 and max(grid["values"]) == grid["values"][3] > 100 > grid["max"]
    path = _write(scorer)
    assert an.AnomalyScorer.from_file(path).border == 1
    from edge.judge.model_package import sha256_file

    spec = AnomalySpec(method="patchcore", bank_file=path.name, bank_sha256=sha256_file(path), bank_rows=pc.bank.shape[0],
                       threshold_distance=5.0, patches_output_name="p", patches_output_position=0, grid=(6, 6, 12))
    with pytest.raises(ValueError, match="border"):
        an.load_package_scorer(path, spec)
    assert an.load_package_scorer(path, spec.model_copy(update={"border": 1})).border == 1


def _write(scorer: an.AnomalyScorer) -> Path:
    import tempfile

    p = Path(tempfile.mkdtemp()) / "bank.npz"
    p.write_bytes(scorer.to_bytes())
    return p


def test_threshold_rule_is_the_target_rate_of_a_lognormal_tail():
    rng = np.random.default_rng(2)
    d = np.exp(rng.normal(1.0, 0.2, 2000))
    thr = an.frr_threshold(d, target_frr=0.01, n_boot=50)
    assert np.mean(d >= thr["distance"]) == pytest.approx(0.01, abs=0.006)
    assert thr["frr_ci95"][0] < 0.01 < thr["frr_ci95"][1]
    assert an.normalise(thr["distance"], thr["distance"]) == 0.5


# ---------------------------------------------------------------- a real package (slow: TensorFlow, convert)


@pytest.fixture(scope="module")
def anomaly_package(model_cache: Path, synth_data: Path, weights_path: Path) -> Path:
    """Trained on the GOOD synthetic boxes only (a data folder with ok/ alone), converted to fp16."""
    from convert.tflite import convert_run
    from edge.judge.localize import NO_CROP
    from training.train import TrainConfig, train

    root = model_cache / "anomaly"
    out = root / "run" / "model_fp16.tflite"
    with cache_lock(root):
        if not Path(str(out) + ".json").is_file():
            shutil.rmtree(root, ignore_errors=True)
            (root / "data").mkdir(parents=True)
            (root / "data" / "ok").symlink_to(synth_data / "ok", target_is_directory=True)
            train(TrainConfig(data_dir=root / "data", out_dir=root / "run", recipe="anomaly", img_size=128,
                              weights=str(weights_path), crop=NO_CROP, target_frr=0.01))
            convert_run(root / "run", "fp16", out=out)
    return out


@pytest.mark.slow
def test_the_package_carries_bank_and_rule_under_its_hash(anomaly_package: Path, tmp_path: Path):
    clf = Classifier.load(anomaly_package)
    assert clf.anomaly is not None and clf.metadata.anomaly is not None
    assert clf.threshold == 0.5 and clf.self_test() == []
    assert clf.has_features  # the pooled features: a supervised head can be retrained on this backbone later
    [copy] = package_copies(anomaly_package, tmp_path)
    bank = copy.with_name(clf.metadata.anomaly.bank_file)
    shutil.copy(anomaly_package.with_name(bank.name), bank)
    Classifier.load(copy)
    scorer = an.AnomalyScorer.from_file(bank)
    scorer.patchcore.bank[0] += 1.0  # type: ignore[union-attr]
    bank.write_bytes(scorer.to_bytes())
    with pytest.raises(ModelError, match="sha256 mismatch"):
        Classifier.load(copy)
    bank.unlink()
    with pytest.raises(ModelError, match="not found"):
        Classifier.load(copy)


@pytest.mark.slow
def test_daemon_one_event_per_box_with_a_map_that_rescoring_reproduces(tmp_path, anomaly_package, synth_video,
                                                                       mosquitto):
    video, gt = synth_video
    host, port = mosquitto.host, mosquitto.port
    cfg = {
        "line": "t", "camera": "anomaly",
        "source": {"uri": str(video), "pace": "fast", "loop": False, "exit_on_end": True},
        "roi": {k: gt["roi"][k] for k in ("x", "y", "width", "height")},
        # threshold 0: every box is a defect event, so each one reaches the subscriber with its map and evidence
        "model": {"path": str(anomaly_package), "threshold": 0.0},
        "mqtt": {"enabled": True, "host": host, "port": port, "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "api": {"port": free_port()},
        "evidence": {"dir": str(tmp_path / "evidence")},
        "reject": {"deadline_ms": 120_000},
    }
    sub = Subscriber(host, port, f"{topic_base(cfg)}/defect")
    d = DaemonProc(tmp_path, cfg).start()
    try:
        rc = d.wait(240)
        ids = [eid for _, _, eid in d.decisions()]
        wait_for(lambda: set(ids) <= set(sub.ids()), 20, "every event at the subscriber", d=d)
    finally:
        d.stop()
        sub.close()
    assert rc == 0, d.log()
    events = first_occurrences(sub.messages)
    assert len(events) == len(gt["boxes"]), d.log()
    clf = Classifier.load(anomaly_package)
    for ev in events:
        jsonschema.validate(ev, SCHEMA)
        m = ev["anomaly_map"]
        b, grid = m.get("border", 0), np.array(m["values"]).reshape(m["rows"], m["cols"])
        assert m["rows"] * m["cols"] == len(m["values"]) and grid[b:m["rows"] - b, b:m["cols"] - b].max() == m["max"]
        # the map explains its crop's score (score = d / (d + d_thr)); the map is the representative record's,
        # the frame that decided (its crop is the evidence): its score is that record's recorded score
        assert an.normalise(m["max"] / 100.0, 1.0) == pytest.approx(m["score"], abs=0.01)
        assert m["score"] == pytest.approx(ev["decided_on"]["representative_score"], abs=1e-6)
        rgb = cv2.cvtColor(cv2.imread(m["input"]), cv2.COLOR_BGR2RGB)
        again = clf.score_rgb(rgb)  # re-scoring the stored evidence
        assert again == pytest.approx(m["score"], abs=2e-6)  # the event rounds scores to 6 decimals
        assert (again >= clf.threshold) == (m["score"] >= clf.threshold)


@pytest.mark.slow
def test_retrain_anomaly_builds_a_candidate_from_good_crops_alone(anomaly_package, synth_data, tmp_path):
    from edge.learn.retrain_anomaly import retrain_anomaly

    good = tmp_path / "feedback" / "ok"
    good.mkdir(parents=True)
    for p in sorted((synth_data / "ok").iterdir())[:30]:
        shutil.copy(p, good / p.name)
    cand = retrain_anomaly(anomaly_package, [tmp_path / "feedback"], tmp_path / "cand", target_frr=0.01)
    clf, parent = Classifier.load(cand), Classifier.load(anomaly_package)
    assert clf.self_test() == [] and clf.model_id != parent.model_id
    assert clf.metadata.anomaly is not None and clf.metadata.anomaly.bank_file == cand.stem + ".bank.npz"
    assert clf.metadata.source["parent_model_id"] == parent.model_id


def test_retrain_anomaly_refuses_a_package_without_a_bank(tiny_model, tmp_path):
    from edge.learn.retrain import RetrainError
    from edge.learn.retrain_anomaly import retrain_anomaly

    with pytest.raises(RetrainError, match="not an anomaly package"):
        retrain_anomaly(tiny_model, [tmp_path], tmp_path / "cand")


@pytest.mark.slow
def test_bench_model_times_an_anomaly_package(anomaly_package, tmp_path, capsys):
    """``boxinspect bench MODEL`` on an anomaly package: the invoke alone and the whole per-crop cost (pre-processing,
    invoke, the patch map scored against the bank); it used to stop with "an anomaly model has no score output"."""
    from boxinspect.cli import main

    out = tmp_path / "b.json"
    assert main(["bench", str(anomaly_package), "--threads", "1", "--runs", "5", "--warmup", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    rows = Classifier.load(anomaly_package).anomaly.bank_rows  # type: ignore[union-attr]
    assert res["anomaly_bank_rows"] == rows > 0 and f"bank ({rows} rows)" in text
    [r] = res["results"]
    for key in ("invoke", "preprocess_invoke"):
        assert 0 < r[key]["min_ms"] <= r[key]["median_ms"] <= r[key]["p99_ms"]


# ---------------------------------------------------------------- one bank per view (third pass)


def test_per_view_banks_score_each_view_by_its_own_bank_and_fall_back_to_the_pooled_one():
    rng = np.random.default_rng(4)
    top, obl = rng.normal(0, 1, (12, 4, 4, 8)), rng.normal(5, 1, (12, 4, 4, 8))

    def scorer(maps: np.ndarray, thr: float) -> an.AnomalyScorer:
        return an.AnomalyScorer("patchcore", thr, patchcore=an.PatchCore.fit(maps, np.arange(len(maps)), 1.0, min_size=1))

    pooled = scorer(np.concatenate([top, obl]), 2.0)
    pooled.views = {"top": scorer(top, 1.5), "oblique": scorer(obl, 3.0)}
    back = an.AnomalyScorer.from_file(_write(pooled))
    assert back.view_thresholds == {"oblique": 3.0, "top": 1.5} and back.bank_rows == pooled.bank_rows
    q = rng.normal(5, 1, (4, 4, 8)).astype(np.float32)  # an oblique-like crop
    s_obl, cells = back.score_map(q, "oblique")
    assert s_obl == pytest.approx(an.normalise(cells.max(), 3.0))
    assert np.allclose(cells, pooled.views["oblique"].cell_distances(q))
    s_top = back.score_map(q, "top")[0]
    assert s_top > s_obl  # the top bank has never seen an oblique-like patch: it is far from it
    assert back.score_map(q, "side")[0] == back.score_map(q, None)[0] == pooled.score_map(q)[0]  # the pooled bank
    with pytest.raises(ValueError, match="views of its own"):
        an.AnomalyScorer("patchcore", 1.0, patchcore=pooled.patchcore, views={"top": pooled})


@pytest.fixture(scope="module")
def per_view_package(model_cache: Path, weights_path: Path) -> Path:
    """Trained on the GOOD parts of synth line scenes (two views per part, ``<part>_<view>.jpg``) with one bank
    per view (``--anomaly-banks per-view``), converted to fp16."""
    from boxinspect.synth.line import make_line_dataset
    from convert.tflite import convert_run
    from edge.judge.localize import NO_CROP
    from training.train import TrainConfig, train

    root = model_cache / "anomaly_views"
    out = root / "run" / "model_fp16.tflite"
    with cache_lock(root):
        if not Path(str(out) + ".json").is_file():
            shutil.rmtree(root, ignore_errors=True)
            make_line_dataset(root / "lines", n_per_class=30, seed=5, frame_size=(320, 240), progress=False)
            (root / "data").mkdir(parents=True)
            (root / "data" / "ok").symlink_to(root / "lines" / "ok", target_is_directory=True)
            train(TrainConfig(data_dir=root / "data", out_dir=root / "run", recipe="anomaly", img_size=128,
                              weights=str(weights_path), crop=NO_CROP, target_frr=0.01, anomaly_banks="per-view"))
            convert_run(root / "run", "fp16", out=out)
    return out


@pytest.mark.slow
def test_a_per_view_package_scores_by_view_under_its_hash(per_view_package: Path):
    from training.data import read_bgr

    clf = Classifier.load(per_view_package)
    assert clf.anomaly is not None and clf.metadata.anomaly is not None
    assert set(clf.anomaly.views) == {"top", "oblique"}
    assert clf.metadata.anomaly.views == clf.anomaly.view_thresholds
    assert clf.self_test() == []  # golden samples are named <part>_<view>.jpg: each scored by its view's bank
    root = per_view_package.parents[1]
    bgr = read_bgr(next((root / "lines" / "defective").glob("*_oblique.jpg")))
    s_view = clf.score(bgr, view="oblique")
    rgb = clf.preprocess(bgr)
    sc = clf.anomaly.views["oblique"]
    cells = sc.cell_distances(clf.runner.run_patches(rgb)[1])
    assert s_view == pytest.approx(an.normalise(sc.crop_distance(cells), sc.threshold_distance), abs=1e-9)
    assert s_view != clf.score(bgr, view="top")
    assert clf.score(bgr, view="side") == clf.score(bgr) != s_view  # unknown view or none: the pooled bank
    train_cfg = json.loads((per_view_package.parent / "train_config.json").read_text())
    assert set(train_cfg["anomaly"]["views"]) == {"top", "oblique"}


@pytest.mark.slow
def test_daemon_scores_each_source_by_its_views_bank_and_the_evidence_rescores(tmp_path, per_view_package,
                                                                               mosquitto):
    from boxinspect.synth.line import render_line_part
    from tests.test_daemon import views_cfg

    part = render_line_part(5, 40, "defective", "tear", kit=None)
    views = {v: cv2.resize(part["views"][v], (320, 240)) for v in ("top", "oblique")}
    cfg = views_cfg(tmp_path, per_view_package, views, mosquitto,
                    decision={"mode": "triggered", "trigger_frames": 3, "fusion": "max"},
                    evidence={"dir": str(tmp_path / "evidence"), "ok_sample_rate": 1.0})
    pub = Publisher(mosquitto.host, mosquitto.port, f"{topic_base(cfg)}/trigger")
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_triggers()
        pub.send({"part_id": "P-1"})
        wait_for(lambda: len(d.get("/events").json()) >= 1, 90, "a fused decision", d=d)
        [event] = d.get("/events").json()
    finally:
        pub.close()
        d.stop()
    clf = Classifier.load(per_view_package)
    m = event["anomaly_map"]
    assert m["view"] in ("top", "oblique") and set(event["views"]) == {"top", "oblique"}
    rgb = cv2.cvtColor(cv2.imread(m["input"]), cv2.COLOR_BGR2RGB)
    again = clf.score_rgb(rgb, m["view"])  # re-scoring the stored evidence by the view's bank
    assert again == pytest.approx(m["score"], abs=2e-6)
    assert (again >= clf.threshold) == (m["score"] >= clf.threshold)
    assert clf.score_rgb(rgb) != pytest.approx(m["score"], abs=2e-6)  # the pooled bank would not have given it
    assert an.normalise(m["max"] / 100.0, 1.0) == pytest.approx(again, abs=0.01)  # the map is that view's
