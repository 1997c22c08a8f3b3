"""Evaluate a run: scores on val and test, the operating threshold, plots and report.

The threshold is chosen on the run's out-of-fold scores (linear recipe) or the validation split (never on
test) by ``training.operating.choose``: a cost ratio (default 2: a missed defect costs two false rejects) or
the highest threshold whose defect recall is >= ``target_recall`` (``operating.choose_threshold``), placed halfway to
the next lower score so a small numeric change (e.g. int8 quantisation) does not flip the boundary case. A box
is a defect when ``score >= threshold``. Test metrics are then reported at that threshold and at 0.5.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge.judge.fusion import FUSION_RULES, fuse_parts, part_and_view
from edge.judge.localize import CropSpec, crop_from_config
from training import data as data_mod
from training import split as split_mod
from training.quiet import native_output_to_log

log = logging.getLogger(__name__)

CAPTIONS = {
    "roc": "ROC curve (red dot: operating threshold)",
    "pr": "Precision-recall curve",
    "confusion_matrix": "Confusion matrices at the operating threshold and at 0.5",
    "curves": "Loss and accuracy per epoch, phase 1 then phase 2 (dotted line)",
    "scores": "Scores by true class",
    "tradeoff": "Trade-off: good boxes rejected per 1,000 vs defects missed per 100 (red: operating point, 95% CI)",
}
TABLE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


class EvaluateError(RuntimeError):
    """The run cannot be evaluated (one readable sentence)."""


def bootstrap_ci(y_true: np.ndarray, scores: np.ndarray, threshold: float, n: int = 1000, seed: int = 0) -> dict:
    """95% percentile-bootstrap intervals (resampling images) for AUC, accuracy and recall at ``threshold``."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    aucs, accs, recs = [], [], []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        yi, si = y[i], s[i]
        pred = si >= threshold
        accs.append(np.mean(pred == (yi == 1)))
        if yi.sum() and (1 - yi).sum():
            aucs.append(roc_auc_score(yi, si))
            recs.append(np.mean(pred[yi == 1]))

    def ci(v: list[float]) -> list[float] | None:
        return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None

    return {"n_resamples": n, "roc_auc": ci(aucs), "accuracy": ci(accs), "recall": ci(recs)}


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float, names: list[str]) -> dict:
    """Accuracy, precision, recall, F1, specificity, confusion matrix and sklearn's classification report."""
    from sklearn.metrics import classification_report, confusion_matrix

    y = np.asarray(y_true).astype(int).ravel()
    pred = (np.asarray(scores).ravel() >= threshold).astype(int)
    cm = confusion_matrix(y, pred, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    rep = classification_report(y, pred, labels=[0, 1], target_names=names, output_dict=True, zero_division=0)
    text = classification_report(y, pred, labels=[0, 1], target_names=names, digits=2, zero_division=0)
    return {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / max(1, len(y)),
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, tp + fn),
        "specificity": tn / max(1, tn + fp),
        "f1": 2 * tp / max(1, 2 * tp + fp + fn),
        "macro_f1": rep["macro avg"]["f1-score"],
        "confusion_matrix": {"labels": names, "matrix": cm.tolist(), "tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "classification_report": rep,
        "classification_report_text": text,
    }


def threshold_table(y_true: np.ndarray, scores: np.ndarray, thresholds) -> list[dict]:
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores).ravel()
    rows = []
    for t in sorted(set(float(t) for t in thresholds)):
        pred = s >= t
        tp = int(np.sum(pred & (y == 1)))
        fp = int(np.sum(pred & (y == 0)))
        fn = int(np.sum(~pred & (y == 1)))
        tn = int(np.sum(~pred & (y == 0)))
        rows.append({
            "threshold": round(t, 4), "recall": tp / max(1, tp + fn), "precision": tp / max(1, tp + fp),
            "specificity": tn / max(1, tn + fp), "false_rejects": fp, "missed_defects": fn,
            "accuracy": (tp + tn) / max(1, len(y)),
        })
    return rows


def multi_view_metrics(paths: list[Path], y: np.ndarray, s: np.ndarray, val_paths: list[Path], y_val: np.ndarray,
                       s_val: np.ndarray, target_recall: float | None = None,
                       cost_ratio: float | None = None) -> dict | None:
    """Per-view and per-part metrics when the images are views of parts (``<part>_<view>.<ext>``), else None.

    Per view: AUC of each camera alone. Per part, for every fusion rule (edge/judge/fusion.py): the views' scores
    fused, a threshold chosen on the fused validation parts (the same rule as the run: training.operating.choose), and AUC, recall and
    specificity on the evaluated split's parts at that threshold."""
    from sklearn.metrics import roc_auc_score

    from training import operating

    views = [part_and_view(p)[1] for p in paths]
    if not any(v is not None for v in views):
        return None

    def auc(yy: np.ndarray, ss: np.ndarray) -> float | None:
        return float(roc_auc_score(yy, ss)) if len(np.unique(yy)) == 2 else None

    per_view = {}
    for v in sorted({v for v in views if v is not None}):
        idx = np.array([i for i, x in enumerate(views) if x == v])
        per_view[v] = {"n": int(len(idx)), "auc": auc(y[idx], s[idx])}
    per_part = {}
    for rule in FUSION_RULES:
        parts, fs, fy, nv = fuse_parts(paths, s, y, rule)
        row: dict = {"n_parts": len(parts), "views_per_part": float(np.mean(nv)), "auc": auc(fy, fs)}
        if len(val_paths):
            _, vs, vy, _ = fuse_parts(val_paths, s_val, y_val, rule)
            thr = operating.choose(vy, vs, target_recall, cost_ratio)["threshold"]
            pred = fs >= thr
            row.update(threshold=float(thr),
                       recall=float(np.mean(pred[fy == 1])) if np.any(fy == 1) else None,
                       specificity=float(np.mean(~pred[fy == 0])) if np.any(fy == 0) else None)
        per_part[rule] = row
    return {"per_view": per_view, "per_part": per_part,
            "note": "per_part: views of one part fused by each rule; threshold chosen on fused val parts"}


def _names(classes: list[str], positive: str) -> list[str]:
    """[negative name, positive name] for the binary report."""
    others = [c for c in classes if c != positive]
    neg = others[0] if len(others) == 1 else "not-" + positive
    return [neg, positive]


def _scores(model, split: split_mod.Split, name: str, root: Path, img_size: int, positive: str,
            crop: CropSpec | None = None):
    items = split.select(name)
    loaded = data_mod.load_images([root / it["path"] for it in items], [it["label"] for it in items], img_size,
                                  crop)
    if len(loaded.paths) == 0:
        return np.zeros(0), np.zeros(0), loaded
    with native_output_to_log("Keras predict"):
        s = model.predict(loaded.pixels.astype(np.float32), batch_size=64, verbose=0).ravel()
    y = np.array([1 if lab == positive else 0 for lab in loaded.labels])
    return y, s.astype(np.float64), loaded


# ---------------------------------------------------------------- plots


def _plots(out: Path, y: np.ndarray, s: np.ndarray, y_val: np.ndarray, s_val: np.ndarray, m: dict,
           history: dict, names: list[str], split: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def save(fig, key: str) -> None:
        """Lay out, write out/KEY.png, close, and record it under KEY."""
        fig.tight_layout()
        files[key] = out / f"{key}.png"
        fig.savefig(files[key], dpi=110)
        plt.close(fig)

    thr = m["threshold"]

    if len(np.unique(y)) == 2:
        fig, ax = plt.subplots(figsize=(4.9, 4.5))
        RocCurveDisplay.from_predictions(y, s, ax=ax, name=f"{split} (n={len(y)})")
        if len(np.unique(y_val)) == 2:
            RocCurveDisplay.from_predictions(y_val, s_val, ax=ax, name=f"val (n={len(y_val)})", curve_kwargs={"linestyle": "--"})
        a = m["at_threshold"]
        ax.plot(1 - a["specificity"], a["recall"], "o", color="red", label=f"threshold {thr:.3f}")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_title(f"ROC, positive = {names[1]}")
        ax.legend(loc="lower right")
        save(fig, "roc")

        fig, ax = plt.subplots(figsize=(4.9, 4.5))
        PrecisionRecallDisplay.from_predictions(y, s, ax=ax, name=f"{split} (n={len(y)})")
        ax.plot(a["recall"], a["precision"], "o", color="red", label=f"threshold {thr:.3f}")
        ax.set_title(f"Precision-recall, positive = {names[1]}")
        ax.legend(loc="lower left")
        save(fig, "pr")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key, title in ((axes[0], "at_threshold", f"threshold {thr:.3f}"), (axes[1], "at_0.5", "threshold 0.5")):
        cm = np.array(m[key]["confusion_matrix"]["matrix"])
        ConfusionMatrixDisplay(cm, display_labels=names).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(f"{split}, {title}")
    save(fig, "confusion_matrix")

    phases = [(k, v) for k, v in history.items() if isinstance(v, dict) and "history" in v]
    if phases:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            start = 0
            for i, (pname, ph) in enumerate(phases):
                h = ph["history"]
                n = len(h.get(metric, []))
                xs = np.arange(start + 1, start + n + 1)
                colour = f"C{i}"
                if n:
                    ax.plot(xs, h[metric], "-", color=colour, label=f"{pname} train")
                    ax.plot(xs, h.get("val_" + metric, [np.nan] * n), "--", color=colour, label=f"{pname} val")
                if i > 0:
                    ax.axvline(start + 0.5, color="grey", linestyle=":")
                start += n
            ax.set_xlabel("epoch")
            ax.set_title(metric)
            ax.legend()
        save(fig, "curves")

    fig, ax = plt.subplots(figsize=(7, 3.8))
    bins = np.linspace(0, 1, 41)
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label=names[0])
    ax.hist(s[y == 1], bins=bins, alpha=0.6, label=names[1])
    ax.axvline(thr, color="red", label=f"threshold {thr:.3f}")
    ax.axvline(0.5, color="grey", linestyle=":", label="0.5")
    ax.set_xlabel(f"score = P({names[1]})")
    ax.set_title(f"Score distribution, {split}")
    ax.legend()
    save(fig, "scores")
    return files


# ---------------------------------------------------------------- HTML


def _img_tag(path: Path, alt: str) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _crop_section(m: dict, run_dir: Path) -> str:
    """The report's crop section: how many images were cropped, the fallbacks and why, the warning, and the
    contact sheet of crops, worst first (edge/judge/crops.py)."""
    c = m.get("crops")
    if not c:
        return ""
    esc = html.escape
    warn = f'<p class="warn"><b>Warning:</b> {esc(c["warning"])}</p>' if c.get("warning") else ""
    reasons = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in sorted(c["reasons"].items()))
    sheet = run_dir / "report" / "crops.png"
    img = (f"<figure>{_img_tag(sheet, 'crops')}<figcaption>Each {esc(m['split'])} image with its box (left) and the "
           "crop the model sees (right), worst first: whole-frame fallbacks, then the lowest IoU when the boxes "
           "are known</figcaption></figure>") if sheet.is_file() else ""
    return f"""<h2>Crops ({esc(m['split'])} split)</h2>
<p>{esc(c['sentence'])}</p>{warn}
<table><tr><th>whole frame because</th><th>images</th></tr>{reasons}</table>
{img}"""


def _html(m: dict, files: dict[str, Path], cfg: dict, run_dir: Path) -> str:
    a, h = m["at_threshold"], m["at_0.5"]
    esc = html.escape

    def row(label: str, d: dict) -> str:
        return (f"<tr><td>{esc(label)}</td><td>{d['threshold']:.3f}</td><td>{d['accuracy']:.3f}</td>"
                f"<td>{d['precision']:.3f}</td><td>{d['recall']:.3f}</td><td>{d['specificity']:.3f}</td>"
                f"<td>{d['f1']:.3f}</td><td>{d['macro_f1']:.3f}</td>"
                f"<td>{d['confusion_matrix']['fn']}</td><td>{d['confusion_matrix']['fp']}</td></tr>")

    trs = "".join(
        f"<tr><td>{r['threshold']:.3f}</td><td>{r['recall']:.3f}</td><td>{r['precision']:.3f}</td>"
        f"<td>{r['specificity']:.3f}</td><td>{r['missed_defects']}</td><td>{r['false_rejects']}</td>"
        f"<td>{r['accuracy']:.3f}</td></tr>"
        for r in m["threshold_table"]
    )
    imgs = "".join(
        f"<figure>{_img_tag(p, k)}<figcaption>{esc(CAPTIONS.get(k, k))}</figcaption></figure>" for k, p in files.items()
    )
    counts = m.get("split_counts", {})
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
    if m.get("ci95", {}).get("roc_auc"):
        lo, hi = m["ci95"]["roc_auc"]
        auc += f" <small>(95% bootstrap CI {lo:.3f} to {hi:.3f})</small>"
    sel = m["threshold_selection"]
    op_li = "".join(f"<li><b>{esc(k)}</b> (n={r['n_good'] + r['n_defect']}): {esc(r['sentence'])}</li>"
                    for k, r in m.get("operating_point", {}).items())
    tr_rows = "".join(
        f"<tr><td>{r['threshold']:.3f}</td><td>{r['rejected_per_1000_good']:.0f} "
        f"({r['rejected_per_1000_good_ci95'][0]:.0f}-{r['rejected_per_1000_good_ci95'][1]:.0f})</td>"
        f"<td>{r['missed_per_100_defects']:.0f} ({r['missed_per_100_defects_ci95'][0]:.0f}-"
        f"{r['missed_per_100_defects_ci95'][1]:.0f})</td><td>{r['recall']:.3f}</td><td>{r['specificity']:.3f}</td></tr>"
        for r in m.get("tradeoff", []))
    cfg_rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(json.dumps(cfg.get(k)))}</td></tr>"
        for k in ("data_dir", "classes", "positive_class", "recipe", "C_chosen", "flip_tta", "img_size", "crop", "alpha",
                  "weights", "epochs",
                  "fine_tune_epochs", "unfreeze_blocks", "learning_rate", "fine_tune_learning_rate", "balance",
                  "augment", "seed", "wall_time_s")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>boxinspect evaluation: {esc(run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; max-width: 1150px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 18px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 9px; text-align: right; }}
th {{ background: #f2f2f2; }} td:first-child {{ text-align: left; }}
pre {{ background: #f7f7f7; padding: 10px; display: inline-block; }}
.warn {{ background: #fff3cd; border: 1px solid #e0b000; padding: 8px; }}
figure {{ display: inline-block; margin: 6px; vertical-align: top; }}
img {{ max-width: 1080px; border: 1px solid #ddd; }}
.big {{ font-size: 1.25em; }}
</style></head><body>
<h1>Evaluation of run <code>{esc(run_dir.name)}</code></h1>
<p>{esc(m['created_at'])} &middot; split <b>{esc(m['split'])}</b> (n={m['n']}, {m['n_positive']} {esc(m['positive_class'])})
&middot; classes {esc(', '.join(m['classes']))} &middot; positive class <b>{esc(m['positive_class'])}</b></p>
<p class="big">ROC AUC <b>{auc}</b> &middot; operating threshold <b>{m['threshold']:.3f}</b>
(rule: {esc(sel.get('rule') or f"defect recall >= {sel['target_recall']}")}, chosen on the
{esc('out-of-fold scores of train+val' if sel.get('split') == 'oof' else 'validation split')}: recall
{sel['recall']:.3f}{'; ' + esc(sel['fallback']) if sel.get('fallback') else ''})</p>
<h2>Operating point in the line's terms</h2>
<ul>{op_li}</ul>
<table><tr><th>threshold</th><th>good boxes rejected per 1,000 (95% CI)</th><th>defects missed per 100 (95% CI)</th>
<th>recall</th><th>specificity</th></tr>{tr_rows}</table>
<p><small>Trade-off on the {esc('out-of-fold scores (train+val)' if m.get('tradeoff_on') == 'oof' else m['split'] + ' split')};
intervals are 95% Wilson intervals for the proportions.</small></p>
{_crop_section(m, run_dir)}
<h2>{esc(m['split'])} metrics</h2>
<table><tr><th>at</th><th>threshold</th><th>accuracy</th><th>precision</th><th>recall</th><th>specificity</th>
<th>F1 ({esc(m['positive_class'])})</th><th>macro F1</th><th>missed defects</th><th>false rejects</th></tr>
{row('operating threshold', a)}{row('0.5', h)}</table>
<h3>Classification report at the operating threshold ({a['threshold']:.3f})</h3>
<pre>{esc(a['classification_report_text'])}</pre>
<h3>Classification report at 0.5</h3>
<pre>{esc(h['classification_report_text'])}</pre>
<h2>Plots</h2>
{imgs}
<h2>Threshold table ({esc(m['split'])})</h2>
<table><tr><th>threshold</th><th>recall</th><th>precision</th><th>specificity</th><th>missed defects</th>
<th>false rejects</th><th>accuracy</th></tr>{trs}</table>
<h2>Split (grouped by near-duplicate clusters)</h2>
<pre>{esc(json.dumps(counts, indent=1))}</pre>
<h2>Training configuration</h2>
<table>{cfg_rows}</table>
</body></html>
"""


# ---------------------------------------------------------------- main entry


def _oof(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, scores) of the out-of-fold scores a linear-recipe run saved (oof_scores.csv), if any."""
    import csv

    path = run_dir / "oof_scores.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    return np.array([int(r["y"]) for r in rows]), np.array([float(r["score"]) for r in rows])


def evaluate(run_dir: Path, target_recall: float | None = None, split: str = "test", data_dir: Path | None = None,
             cost_ratio: float | None = None) -> dict:
    """Evaluate ``run_dir``; writes metrics.json and report/ (PNGs + report.html) and returns the metrics.

    The operating threshold comes from the run's out-of-fold scores (``oof_scores.csv``, written by the
    linear recipe: every train+val image scored by a model that did not see it) when present, else from
    the validation split. Rule: ``target_recall`` or ``cost_ratio``; neither: ``operating.DEFAULT_COST_RATIO``.
    ``data_dir`` overrides the data folder recorded in train_config.json (if the data moved).
    """
    from training import operating

    run_dir = Path(run_dir)
    if target_recall is not None and not 0 < target_recall <= 1:
        raise EvaluateError(f"target recall must be in (0, 1], got {target_recall}")
    try:
        cfg = json.loads((run_dir / "train_config.json").read_text())
        history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").exists() else {}
        sp = split_mod.load_split(run_dir / "split.json")
    except (OSError, json.JSONDecodeError, split_mod.SplitError) as e:
        raise EvaluateError(f"{run_dir} is not a complete run directory: {e}") from e
    if not (run_dir / "model.keras").is_file():
        raise EvaluateError(f"{run_dir / 'model.keras'} not found; train first")
    root = Path(data_dir or cfg["data_dir"])
    if not root.is_dir():
        raise EvaluateError(f"data folder {root} not found (pass data_dir= if it moved)")

    import keras

    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    positive = cfg["positive_class"]
    names = _names(cfg["classes"], positive)
    img_size = int(cfg["img_size"])

    crop = crop_from_config(cfg)
    y_val, s_val, loaded_val = _scores(model, sp, "val", root, img_size, positive, crop)
    y, s, loaded = _scores(model, sp, split, root, img_size, positive, crop)
    if len(y) == 0:
        raise EvaluateError(f"split {split!r} has no readable images")
    oof = _oof(run_dir)
    sel_y, sel_s, sel_split = (oof[0], oof[1], "oof") if oof is not None else (y_val, s_val, "val")
    try:
        sel = operating.choose(sel_y, sel_s, target_recall, cost_ratio)
    except ValueError as e:
        raise EvaluateError(str(e)) from e
    sel.setdefault("target_recall", None)
    sel.setdefault("fallback", None)
    sel.setdefault("precision", None)
    if sel["fallback"]:
        log.warning("threshold: %s", sel["fallback"])
    thr = sel["threshold"]

    from sklearn.metrics import average_precision_score, roc_auc_score

    both = len(np.unique(y)) == 2
    m: dict = {
        "run": str(run_dir),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": split,
        "classes": cfg["classes"],
        "positive_class": positive,
        "n": int(len(y)),
        "n_positive": int(np.sum(y == 1)),
        "threshold": float(thr),
        "threshold_rule": "defect if score >= threshold",
        "threshold_selection": {**sel, "split": sel_split},
        "roc_auc": float(roc_auc_score(y, s)) if both else None,
        "average_precision": float(average_precision_score(y, s)) if both else None,
        # the linear recipe fits on train + val, so its val AUC would be in-sample: report the OOF AUC instead
        "val_roc_auc": (float(roc_auc_score(y_val, s_val)) if len(np.unique(y_val)) == 2 and oof is None
                        else None),
        "oof_roc_auc": float(roc_auc_score(oof[0], oof[1])) if oof is not None else None,
        "at_threshold": binary_metrics(y, s, thr, names),
        "at_0.5": binary_metrics(y, s, 0.5, names),
        "threshold_table": threshold_table(y, s, list(TABLE_THRESHOLDS) + [thr]),
        "split_counts": sp.counts(),
        "img_size": img_size,
        "crop": crop.model_dump(mode="json"),
        "balance": cfg.get("balance"),
    }
    m["ci95"] = bootstrap_ci(y, s, thr)
    op_rows = {split: operating.tradeoff_row(y, s, thr)}
    if oof is not None:
        op_rows["oof"] = operating.tradeoff_row(oof[0], oof[1], thr)
    m["operating_point"] = {k: {**r, "sentence": operating.sentence(r)} for k, r in op_rows.items()}
    m["tradeoff"] = operating.tradeoff(oof[0] if oof is not None else y, oof[1] if oof is not None else s,
                                       sorted(set(TABLE_THRESHOLDS) | {thr}))
    m["tradeoff_on"] = "oof" if oof is not None else split
    m["accuracy"] = m["at_threshold"]["accuracy"]
    m["classification_report_text"] = m["at_threshold"]["classification_report_text"]
    if loaded.unreadable:
        m["unreadable"] = [str(p) for p in loaded.unreadable]
    mv = multi_view_metrics(loaded.paths, y, s, loaded_val.paths, y_val, s_val, target_recall, cost_ratio)
    if mv is not None:
        m["multi_view"] = mv

    if crop.method != "none":
        from edge.judge.crops import fallback_warning, report_crops

        stats = report_crops(loaded.paths, crop, run_dir / "report", root=root)
        m["crops"] = {**stats.to_dict(), "warning": fallback_warning(stats, crop)}
    files = _plots(run_dir / "report", y, s, y_val, s_val, m, history, names, split)
    files["tradeoff"] = run_dir / "report" / "tradeoff.png"
    operating.plot_tradeoff(files["tradeoff"], oof[0] if oof is not None else y, oof[1] if oof is not None else s,
                            thr, f"Trade-off ({'out-of-fold, train+val' if oof is not None else split})")
    with open(run_dir / "report" / f"scores_{split}.csv", "w") as f:  # per-image scores, for error analysis
        f.write("path,label,score,predicted_defect\n")
        for p, lab, sc in zip(loaded.paths, loaded.labels, s.tolist(), strict=True):
            f.write(f"{Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else p},{lab},"
                    f"{sc:.6f},{int(sc >= thr)}\n")
    m["report"] = {k: str(p.relative_to(run_dir)) for k, p in files.items()}
    (run_dir / "report" / "report.html").write_text(_html(m, files, cfg, run_dir))
    m["report"]["html"] = "report/report.html"
    m["report"]["scores"] = f"report/scores_{split}.csv"
    (run_dir / "metrics.json").write_text(json.dumps(m, indent=1))
    log.info("evaluated %s on %s (n=%d): AUC %s, threshold %.3f, recall %.3f, precision %.3f",
             run_dir, split, len(y), "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}", thr,
             m["at_threshold"]["recall"], m["at_threshold"]["precision"])
    return m
