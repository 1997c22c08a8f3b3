"""What the line learns from: the retrained head's CV AUC on the crops the daemon keeps (docs/RESULTS.md, issue 23).

    nice -n 10 python studies/evidence_crops_auc.py MODEL --work runs/crops --json docs/results/evidence_crops_auc.json
    # the same on another checkout's daemon (e.g. before issue 23), with the same labels:
    nice -n 10 python studies/evidence_crops_auc.py MODEL --work runs/crops-old --code /tmp/old-checkout ...

1. A generated conveyor video (``boxinspect synth``'s ``make_video``: ``--boxes`` boxes, ``--seed``), its ground
   truth beside it.
2. The daemon (``boxinspect run``, a real process; ``--code`` puts another checkout first on PYTHONPATH) runs
   MODEL over it with every decision's evidence kept (``evidence.ok_sample_rate: 1``), MQTT off.
3. Each decision's kept crop (``<event_id>_crop.jpg``, what feedback and collection store) is labelled with the
   ground truth of the box its frames belong to (the log's ``frames=F-L``), exactly as an operator who answers
   every box correctly would label it, into ``<work>/labels/<class>/``.
4. ``edge.learn.retrain.retrain`` fits a head on those labels ``--repeats`` times (seed = repeat: the grouped folds
   change) -> grouped-CV AUC, mean and sd. Also: how many kept crops ``boxinspect predict`` scores to the
   other verdict than their decision's, and the decisions' own AUC against the ground truth.

The retrain code is this checkout's in both arms; only the daemon that chose the crops differs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("evidence_crops_auc")
DECISION = re.compile(r"decision (\S+) score=(\S+) frames=(\d+)-(\d+) \((\d+) scored\) event=(\S+)")


def run_daemon(model: Path, video: Path, gt: dict[str, Any], work: Path, code: Path | None) -> str:
    import yaml

    cfg = {
        "line": "crops", "camera": "auc",
        "source": {"uri": str(video), "pace": "fast", "loop": False, "exit_on_end": True},
        "roi": {k: gt["roi"][k] for k in ("x", "y", "width", "height")},
        "model": {"path": str(model)},
        "mqtt": {"enabled": False, "outbox_path": str(work / "outbox.sqlite3")},
        "api": {"enabled": False},
        "evidence": {"dir": str(work / "evidence"), "ok_sample_rate": 1.0, "max_files": 100_000},
        "reject": {"deadline_ms": 600_000},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if code is not None:
        env["PYTHONPATH"] = str(code)
    out = subprocess.run([sys.executable, "-m", "boxinspect.cli", "run", "--config", str(work / "config.yaml")],
                         capture_output=True, text=True, env=env, cwd=work, timeout=3600)
    (work / "daemon.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"daemon failed ({out.returncode}); see {work / 'daemon.log'}")
    return out.stdout + out.stderr


def label_crops(text: str, gt: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """One row per decision: its frames, score, verdict, ground truth and kept crop (copied into labels/<class>/)."""
    rows = []
    for label, score, first, last, _n, eid in DECISION.findall(text):
        first_i, last_i = int(first), int(last)
        boxes = [b for b in gt["boxes"] if b["enter_frame"] <= last_i and first_i <= b["exit_frame"]]
        crops = list((work / "evidence").rglob(f"{eid}_crop.jpg"))
        if len(boxes) != 1 or not crops:
            log.warning("decision %s (frames %s-%s): %d boxes, %d crops; not labelled", eid, first, last, len(boxes),
                        len(crops))
            continue
        cls = "defective" if boxes[0]["defective"] else "ok"
        dst = work / "labels" / cls / f"{eid}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(crops[0], dst)
        rows.append({"event_id": eid, "box": boxes[0]["id"], "truth": cls, "label": label, "score": float(score),
                     "crop": str(dst)})
    return rows


def rescore(model: Path, rows: list[dict[str, Any]], threshold: float) -> int:
    """Kept crops whose own score (boxinspect predict's model call) gives the other verdict than their decision's."""
    import cv2

    from edge.judge.classifier import Classifier

    clf = Classifier.load(model)
    wrong = 0
    for r in rows:
        r["crop_score"] = clf.score(cv2.imread(r["crop"]))
        wrong += (r["crop_score"] >= threshold) != (r["score"] >= threshold)
    return wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a package with a features output (retrain fits a head on it)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--code", type=Path, default=None, help="run the daemon from this checkout (PYTHONPATH)")
    ap.add_argument("--boxes", type=int, default=60)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--difficulty", default="hard", choices=("easy", "hard"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", dest="json_out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from boxinspect.synth.video import make_video
    from edge.judge.classifier import Classifier
    from edge.learn.retrain import retrain

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    video = args.work / "conveyor.mp4"
    gt = make_video(video, n_boxes=args.boxes, defect_rate=0.4, seed=args.seed, difficulty=args.difficulty)
    log.info("video: %d boxes; running the daemon%s", len(gt["boxes"]), f" from {args.code}" if args.code else "")
    rows = label_crops(run_daemon(args.model.resolve(), video, gt, args.work, args.code), gt, args.work)
    threshold = Classifier.load(args.model).threshold
    wrong = rescore(args.model, rows, threshold)
    from sklearn.metrics import roc_auc_score

    truth = [r["truth"] == "defective" for r in rows]
    aucs = []
    for k in range(args.repeats):
        res = retrain(args.model, [args.work / "labels"], args.work / f"head-{k}", min_per_class=5, seed=k)
        aucs.append(float(res.cv.auc) if res.cv.auc is not None else float("nan"))
        log.info("repeat %d: grouped-CV AUC %.4f (%s)", k, aucs[-1], res.counts)
    out = {
        "model": str(args.model), "code": str(args.code) if args.code else "this checkout", "boxes": len(gt["boxes"]),
        "seed": args.seed, "difficulty": args.difficulty, "decisions_labelled": len(rows),
        "counts": {c: truth.count(c == "defective") for c in ("ok", "defective")},
        "decisions_auc_vs_truth": roc_auc_score(truth, [r["score"] for r in rows]),
        "kept_crops_rescored_to_the_other_verdict": wrong,
        "retrained_head_cv_auc": {"mean": statistics.fmean(aucs), "sd": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
                                  "repeats": aucs},
        "rows": rows,
    }
    text = json.dumps(out, indent=1)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    summary = {k: v for k, v in out.items() if k != "rows"}
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
