"""Convert a run of the ``anomaly`` recipe (training/anomaly.py) into a model package, like any other run.

The .tflite (int8 / fp16 / float32, calibrated on the training split as usual) has two outputs: the pooled
features and the patch map. Quantisation moves the patch vectors, so the bank is REBUILT from the converted
model's own patch maps of the training good crops (the same coreset rows the run chose, ``bank_index.npy``;
PaDiM refits its Gaussians), and the threshold distance is set again by the run's rule (held-out good crops,
leave-one-group-out, target false-reject rate). The bank goes to ``<name>.bank.npz`` beside the .tflite and
the sidecar's ``anomaly`` block holds its sha256, so the package hash covers it (edge/judge/model_package.py).

Gate: the Keras model with the run's own bank and the converted model with its bank score the held-out test
split (good parts held out by train, and any defects); macro F1 at each one's threshold (0.5) and AUC (when
defects are present) may drop at most the usual margins. Golden samples are scored through the bank, so the
device self-test covers the model, the bank and the scoring rule.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from convert import common as ct
from edge.judge import anomaly as an
from edge.judge.classifier import Runner
from edge.judge.fusion import part_and_view
from edge.judge.model_package import AnomalySpec, GoldenSample, encode_golden, sha256_file, write_metadata
from training.quiet import native_output_to_log

log = logging.getLogger(__name__)


def _patches(runner: Runner, x: np.ndarray) -> np.ndarray:
    return np.stack([runner.run_patches(img)[1] for img in x]) if len(x) else np.zeros((0, 1, 1, 1), np.float32)


def _rebuild_one(run: ct.RunInfo, p: np.ndarray, groups: np.ndarray, index_file: str) -> tuple[an.AnomalyScorer, dict]:
    """One bank (or Gaussians) from the converted model's patch maps ``p`` of its good crops: PatchCore takes the
    rows the run chose (``index_file``: image into ``p``, cell), PaDiM refits; the threshold by the run's rule."""
    from training import anomaly as ta

    cfg = run.config["anomaly"]
    method, seed, border = cfg["method"], int(run.config.get("seed", 0)), int(cfg.get("border", 0))
    if method == "patchcore":
        idx = np.load(run.run_dir / index_file)
        bank = np.ascontiguousarray(p[idx[:, 0]].reshape(len(idx), -1, p.shape[-1])[np.arange(len(idx)), idx[:, 1]])
        scorer = an.AnomalyScorer(method, 1.0, patchcore=an.PatchCore(bank, groups[idx[:, 0]]), border=border)
    else:
        scorer = ta.fit_scorer(method, p, groups, seed, border=border)
    return scorer, ta.set_threshold(method, scorer, p, groups, float(cfg["threshold"]["target_frr"]), seed)


def _rebuilt_scorer(run: ct.RunInfo, runner: Runner, train: list[ct.Item], groups: np.ndarray,
                    h: int, w: int) -> tuple[an.AnomalyScorer, dict]:
    """The bank (or Gaussians) and threshold in the converted model's feature space; and every view's, when the
    run holds one bank per view (``bank_index.<view>.npy``: rows into that view's training crops, in order)."""
    from training import anomaly as ta

    cfg = run.config["anomaly"]
    kept, x = ct.load_items(train, h, w, run.crop)
    if len(kept) != len(train):
        raise ct.ConvertError("training images of the anomaly run are missing or unreadable: cannot rebuild its bank")
    p = _patches(runner, x)
    scorer, thr = _rebuild_one(run, p, groups, "bank_index.npy")
    views = ta.view_names([it.path.name for it in train])
    for v in cfg.get("views") or {}:
        m = views == v
        scorer.views[v] = _rebuild_one(run, p[m], groups[m], f"bank_index.{v}.npy")[0]
    log.info("bank rebuilt from the converted model: %s; threshold distance %.3f (Keras run: %.3f)%s",
             f"{scorer.bank_rows} patches" if scorer.patchcore is not None else "per-cell Gaussians",
             thr["distance"], cfg["threshold"]["distance"],
             "".join(f"; view {v}: {sc.bank_rows} patches, threshold distance {sc.threshold_distance:.3f} (Keras run: "
                     f"{cfg['views'][v]:.3f})" for v, sc in scorer.views.items()))
    return scorer, thr


def convert_anomaly(run: ct.RunInfo, fmt: str, out: Path | None, representative_count: int, gate: bool,
                    max_f1_drop: float, max_auc_drop: float) -> Path:
    """``convert_run`` for an anomaly run (same steps, the bank instead of a score output)."""
    if run.finder is not None:  # train refuses --finder with the anomaly recipe; a hand-edited run is refused here
        raise ct.ConvertError(f"{run.run_dir}: an anomaly run cropped with a learned box finder cannot be packaged")
    model, keras_path, h, w = ct.load_keras(run)
    out = Path(out) if out else run.run_dir / f"model_{fmt}.tflite"
    by_split = ct.items_by_split(run)
    rep = ct.calibration_images(run, by_split, fmt, h, w, representative_count)
    split = json.loads((run.run_dir / "split.json").read_text())
    train = by_split.get("train", [])
    groups = np.array([it["group"] for it in split["items"] if it["split"] == "train"])
    ev = ct.load_eval_set(by_split, h, w, gate, run.crop)
    log.info("converting %s (anomaly, %s) to %s", keras_path, run.config["anomaly"]["method"], fmt)
    # the last feature map too (the pooled features' source): a supervised head retrained on this package later
    # (the switch, edge/learn/recipes.py) draws its map from it (edge/judge/head_map.py)
    export, has_cells = ct.with_cells(model, model, "")
    tmp = ct.write_tmp(out, ct.convert_bytes(export, fmt, rep))
    bank_path = out.with_name(out.stem + ".bank.npz")
    try:
        with native_output_to_log("LiteRT"):
            runner = Runner(tmp, num_threads=2)
        scorer, thr = _rebuilt_scorer(run, runner, train, groups, h, w)
        outcome = _gate(run, model, runner, scorer, ev, fmt, gate, max_f1_drop, max_auc_drop)
        golden = _golden(run, runner, scorer, ev)
        features = ct.features_spec_of(runner, tmp, "gap")
        tmp.replace(out)
        bank_path.write_bytes(scorer.to_bytes())
        meta = ct.build_metadata(run, fmt, out, keras_path, runner, h, w, 0.5,
                            f"anomaly: score 0.5 = threshold distance {thr['distance']:.4f} ({thr['rule']})",
                            outcome.metrics, 0 if rep is None else len(rep), golden, features)
        meta.golden_tolerance = 0.02 if fmt == "int8" else 0.01  # scores, not the patch output's quantisation step
        meta.output.meaning = "patch map (1, H, W, C); the score is computed in numpy against the bank (anomaly)"
        grid = runner._patches["shape"][1:] if runner._patches is not None else (0, 0, 0)
        meta.cells = ct.cells_spec_of(runner, model, "") if has_cells and features else None
        meta.anomaly = AnomalySpec(
            method=scorer.method, bank_file=bank_path.name, bank_sha256=sha256_file(bank_path),
            bank_rows=scorer.bank_rows, threshold_distance=thr["distance"], threshold_rule=thr,
            patches_output_name=str(runner._patches["name"]) if runner._patches is not None else "",
            patches_output_position=int(runner.patches_position or 0), grid=tuple(int(v) for v in grid),
            layers=list(run.config["anomaly"].get("layers", [])), border=scorer.border, views=scorer.view_thresholds)
        write_metadata(meta, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    if gate and not outcome.passed:
        bank_path.unlink(missing_ok=True)
        raise ct.gate_rejection(out, fmt, outcome, max_f1_drop, max_auc_drop)
    log.info("wrote %s, %s and %s (threshold distance %.4f, expected false-reject rate 95%% CI %.4f-%.4f)", out,
             bank_path.name, out.name + ".json", thr["distance"], *thr["frr_ci95"])
    return out


def _gate(run: ct.RunInfo, model, runner: Runner, scorer: an.AnomalyScorer, ev: ct.EvalSet, fmt: str, gate: bool,
          max_f1_drop: float, max_auc_drop: float) -> ct.GateOutcome:
    from edge.judge.model_package import PackageMetrics
    from training import anomaly as ta

    if not len(ev.items):
        log.warning("no held-out images: the package has no metrics and no gate was run")
        return ct.GateOutcome(None, True, 0.0, 0.0)
    y = ct.labels01(run, ev.items)
    keras_scorer = an.AnomalyScorer.from_file(run.run_dir / run.config["anomaly"]["bank_file"])
    with native_output_to_log("Keras predict"):
        kp = np.asarray(model.predict(ev.x.astype(np.float32), batch_size=16, verbose=0)[1])
    views = ta.view_names([it.path.name for it in ev.items])  # per-view banks: each crop by its view's
    ks = ta.view_scores(keras_scorer, kp, views)
    ts = ta.view_scores(scorer, _patches(runner, ev.x), views)
    km, tm = ct.split_metrics(y, np.asarray(ks), 0.5), ct.split_metrics(y, ts, 0.5)
    f1_drop = km.macro_f1 - tm.macro_f1
    auc_drop = (km.auc - tm.auc) if (km.auc is not None and tm.auc is not None) else 0.0
    passed = f1_drop <= max_f1_drop + 1e-9 and auc_drop <= max_auc_drop + 1e-9
    agreement = float(np.mean((np.asarray(ks) >= 0.5) == (ts >= 0.5)))
    log.info("accuracy on %s split (anomaly, threshold 0.5):\n%s", ev.split, ct.gate_table(km, tm, agreement, fmt))
    metrics = PackageMetrics(split=ev.split, keras=km, tflite=tm, agreement=agreement,
                             max_abs_score_diff=float(np.max(np.abs(np.asarray(ks) - ts))), gate_passed=passed,
                             max_f1_drop=max_f1_drop, max_auc_drop=max_auc_drop, keras_threshold=0.5)
    return ct.GateOutcome(metrics, passed, f1_drop, auc_drop)


def _golden(run: ct.RunInfo, runner: Runner, scorer: an.AnomalyScorer, ev: ct.EvalSet) -> list[GoldenSample]:
    golden = []
    for cls in (run.positive_class, next(c for c in run.classes if c != run.positive_class)):
        for i in [i for i, it in enumerate(ev.items) if it.label == cls][:ct.GOLDEN_PER_CLASS]:
            s = scorer.score_map(runner.run_patches(ev.x[i])[1], part_and_view(ev.items[i].path.name)[1])[0]
            golden.append(GoldenSample(name=ev.items[i].path.name, label=cls, png_b64=encode_golden(ev.x[i]),
                                       expected_score=float(s)))
    return golden
