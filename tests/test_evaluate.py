"""Threshold selection, metrics and the evaluation report."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

from training.evaluate import (
    EvaluateError,
    binary_metrics,
    bootstrap_ci,
    evaluate,
    threshold_table,
)
from training.operating import choose_threshold


def _scores(n_pos: int, n_neg: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.beta(5, 2, n_pos), rng.beta(2, 5, n_neg)])
    y = np.concatenate([np.ones(n_pos, int), np.zeros(n_neg, int)])
    return y, s


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 0.99, 1.0])
@pytest.mark.parametrize("n_pos,n_neg,seed", [(100, 200, 0), (7, 50, 1), (40, 40, 2)])
def test_threshold_meets_target_recall_and_is_the_highest_that_does(target, n_pos, n_neg, seed):
    y, s = _scores(n_pos, n_neg, seed)
    sel = choose_threshold(y, s, target)
    t = sel["threshold"]
    recall = np.mean(s[y == 1] >= t)
    assert recall >= target
    assert sel["recall"] == pytest.approx(recall)
    # the next positive score above t gives recall below target: t is the highest threshold that works
    above = np.sort(s[(y == 1) & (s > t)])
    if len(above):
        assert np.mean(s[y == 1] >= above[0] + 1e-12) < target
    # the threshold sits strictly between scores, so tiny numeric changes do not flip a decision
    assert not np.any(np.isclose(s, t, rtol=0, atol=1e-12))


def test_threshold_with_ties_and_perfect_separation():
    y = np.array([1, 1, 1, 1, 0, 0, 0])
    s = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.2])
    sel = choose_threshold(y, s, 0.95)
    assert 0.2 < sel["threshold"] < 0.9 and sel["recall"] == 1.0 and sel["precision"] == 1.0


def test_threshold_without_positives_falls_back_to_half():
    sel = choose_threshold(np.zeros(5), np.linspace(0, 1, 5), 0.95)
    assert sel["threshold"] == 0.5 and sel["fallback"]


def test_binary_metrics_agree_with_sklearn():
    y, s = _scores(30, 70, 3)
    m = binary_metrics(y, s, 0.42, ["intact", "damaged"])
    pred = (s >= 0.42).astype(int)
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["confusion_matrix"]["matrix"] == confusion_matrix(y, pred).tolist()
    text = m["classification_report_text"]
    for word in ("intact", "damaged", "accuracy", "macro avg", "weighted avg", "support"):
        assert word in text


def test_threshold_table_is_monotone():
    y, s = _scores(50, 50, 4)
    rows = threshold_table(y, s, [0.1, 0.3, 0.5, 0.7, 0.9])
    recalls = [r["recall"] for r in rows]
    assert recalls == sorted(recalls, reverse=True)
    assert all(r["missed_defects"] + round(r["recall"] * 50) == 50 for r in rows)


def test_bootstrap_interval_brackets_the_estimate_and_shrinks_with_n():
    from sklearn.metrics import roc_auc_score

    y, s = _scores(40, 60, 5)
    ci = bootstrap_ci(y, s, 0.5, n=400)
    assert ci["roc_auc"][0] < roc_auc_score(y, s) < ci["roc_auc"][1]
    y4, s4 = np.tile(y, 4), np.tile(s, 4)
    ci4 = bootstrap_ci(y4, s4, 0.5, n=400)
    assert ci4["roc_auc"][1] - ci4["roc_auc"][0] < ci["roc_auc"][1] - ci["roc_auc"][0]


def test_evaluate_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(EvaluateError, match="not a complete run"):
        evaluate(tmp_path)


@pytest.mark.slow
def test_evaluate_writes_metrics_and_a_self_contained_report(tiny_run, tmp_path):
    run = tmp_path / "run"  # a copy: the shared cached run stays as the fixture made it
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("report", "phase1"))
    m = evaluate(run, target_recall=0.9)
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["threshold"] == pytest.approx(m["threshold"]) and 0 < doc["threshold"] < 1
    sel = doc["threshold_selection"]
    assert sel["split"] == "val" and sel["target_recall"] == 0.9
    assert sel["recall"] >= 0.9 or sel["fallback"]
    assert doc["split"] == "test" and doc["n"] == sum(doc["split_counts"]["test"].values())
    for key in ("at_threshold", "at_0.5"):
        cm = doc[key]["confusion_matrix"]
        assert cm["tn"] + cm["fp"] + cm["fn"] + cm["tp"] == doc["n"]
    assert doc["roc_auc"] is not None and 0 <= doc["roc_auc"] <= 1
    report = run / "report"
    for name in ("roc.png", "pr.png", "confusion_matrix.png", "curves.png", "scores.png", "tradeoff.png"):
        assert (report / name).stat().st_size > 5000, name
    page = (report / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "macro avg" in page and "ROC AUC" in page
    # the operating point in the line's terms, with its interval
    op = doc["operating_point"]["test"]
    assert op["false_rejects"] + op["missed"] == doc["at_threshold"]["confusion_matrix"]["fp"] + \
        doc["at_threshold"]["confusion_matrix"]["fn"]
    assert op["rejected_per_1000_good_ci95"][0] <= op["rejected_per_1000_good"] <= op["rejected_per_1000_good_ci95"][1]
    assert "of 1,000 good boxes are rejected" in page and "of 100 defects are missed" in page
    rows = (report / "scores_test.csv").read_text().splitlines()
    assert rows[0] == "path,label,score,predicted_defect" and len(rows) == doc["n"] + 1
    assert doc["ci95"]["roc_auc"][0] <= doc["roc_auc"] <= doc["ci95"]["roc_auc"][1]
