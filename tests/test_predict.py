"""``boxinspect predict`` and ``boxinspect bench`` on a real converted model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from boxinspect.cli import main
from edge.judge.classifier import Classifier


@pytest.fixture()
def image_folder(few_boxes: Path, tmp_path: Path) -> Path:
    """A nested folder of 6 real synthetic images plus one corrupt file."""
    folder = tmp_path / "imgs"
    for cls in sorted(p.name for p in few_boxes.iterdir() if p.is_dir()):
        sub = folder / cls / "nested"
        sub.mkdir(parents=True)
        for src in sorted((few_boxes / cls).iterdir())[:3]:
            (sub / src.name).write_bytes(src.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def test_predict_prints_json_and_csv(tiny_model: Path, image_folder: Path, tmp_path: Path, capsys):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    rc = main(["predict", str(tiny_model), str(image_folder), str(tmp_path / "missing.png"),
               "--json", str(out_json), "--csv", str(out_csv), "--threads", "1"])
    cap = capsys.readouterr()
    assert rc == 0
    clf = Classifier.load(tiny_model)
    doc = json.loads(out_json.read_text())
    assert doc["model"] == clf.model_id and doc["runtime"] == "litert"
    good = [r for r in doc["results"] if r["error"] is None]
    bad = {Path(r["path"]).name: r["error"] for r in doc["results"] if r["error"]}
    assert len(good) == 6
    assert bad == {"broken.jpg": "not a readable image", "missing.png": "no such file"}
    for r in good:
        expected = clf.predict(cv2.imread(r["path"]))
        assert r["label"] == expected.label and r["score"] == pytest.approx(expected.score, abs=1e-6)
        line = next(ln for ln in cap.out.splitlines() if ln.startswith(r["path"]))
        assert f"{r['label']}" in line and f"{r['score']:.4f}" in line and " ms" in line
    assert "broken.jpg" in cap.err and "ERROR not a readable image" in cap.err
    assert "6 classified" in cap.out and "2 unreadable" in cap.out
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 8 and {r["path"] for r in rows} == {r["path"] for r in doc["results"]}


def test_predict_json_to_stdout_and_threshold_override(tiny_model: Path, image_folder: Path, capsys):
    good = next(p for p in sorted(image_folder.rglob("*")) if p.is_file() and p.name != "broken.jpg")
    rc = main(["predict", str(tiny_model), str(image_folder / "broken.jpg"), str(good), "--json", "-", "--threshold", "0"])
    cap = capsys.readouterr()
    assert rc == 0
    doc = json.loads(cap.out)  # stdout holds only the JSON; the table went to stderr
    assert doc["threshold"] == 0.0
    assert [r["is_defect"] for r in doc["results"] if r["error"] is None] == [True]


def test_predict_fails_when_nothing_is_readable(tiny_model: Path, tmp_path: Path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"junk")
    assert main(["predict", str(tiny_model), str(tmp_path / "a.jpg")]) == 1
    assert main(["predict", str(tiny_model), str(tmp_path / "empty_dir_missing")]) == 1
    assert "ERROR" in capsys.readouterr().err


def test_predict_reports_a_bad_model_in_one_line(tmp_path: Path, capsys):
    bad = tmp_path / "m.tflite"
    bad.write_bytes(b"junk")
    assert main(["predict", str(bad), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "missing metadata sidecar" in err[-1]


def test_bench_writes_a_table_and_json(tiny_model: Path, tmp_path: Path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", str(tiny_model), "--threads", "1,2", "--runs", "5", "--warmup", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "delegate=XNNPACK" in text and "threads" in text
    res = json.loads(out.read_text())
    assert [r["threads"] for r in res["results"]] == [1, 2]
    for r in res["results"]:
        for key in ("invoke", "preprocess_invoke"):
            s = r[key]
            assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["p99_ms"]
    assert res["machine"]["cores"] >= 1 and res["runtime"] == "litert"
    assert main(["bench", str(tiny_model), "--threads", "0"]) == 2
