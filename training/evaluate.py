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
from dataclasses import dataclass
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
            crop: CropSpec | None = None, finder: str | None = None):
    items = split.select(name)
    loaded = data_mod.load_images([root / it["path"] for it in items], [it["label"] for it in items], img_size,
                                  crop, finder)
    if len(loaded.paths) == 0:
        return np.zeros(0), np.zeros(0), loaded
    with native_output_to_log("Keras predict"):
        s = model.predict(loaded.pixels.astype(np.float32), batch_size=64, verbose=0).ravel()
    y = np.array([1 if lab == positive else 0 for lab in loaded.labels])
    return y, s.astype(np.float64), loaded


# ---------------------------------------------------------------- plots


class _Figures:
    """Report figures: each is laid out, written as out/KEY.png, closed and recorded under KEY (in order)."""

    def __init__(self, out: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.out = out
        self.files: dict[str, Path] = {}
        out.mkdir(parents=True, exist_ok=True)

    def save(self, fig, key: str) -> None:
        fig.tight_layout()
        self.files[key] = self.out / f"{key}.png"
        fig.savefig(self.files[key], dpi=110)
        self.plt.close(fig)


def _plots(out: Path, y: np.ndarray, s: np.ndarray, y_val: np.ndarray, s_val: np.ndarray, m: dict,
           history: dict, names: list[str], split: str) -> dict[str, Path]:
    figs = _Figures(out)
    if len(np.unique(y)) == 2:
        _plot_roc(figs, y, s, y_val, s_val, m, names, split)
        _plot_pr(figs, y, s, m, names, split)
    _plot_confusion(figs, m, names, split)
    _plot_curves(figs, history)
    _plot_scores(figs, y, s, m["threshold"], names, split)
    return figs.files


def _plot_roc(figs: _Figures, y: np.ndarray, s: np.ndarray, y_val: np.ndarray, s_val: np.ndarray, m: dict,
              names: list[str], split: str) -> None:
    from sklearn.metrics import RocCurveDisplay

    thr = m["threshold"]
    fig, ax = figs.plt.subplots(figsize=(4.9, 4.5))
    RocCurveDisplay.from_predictions(y, s, ax=ax, name=f"{split} (n={len(y)})")
    if len(np.unique(y_val)) == 2:
        RocCurveDisplay.from_predictions(y_val, s_val, ax=ax, name=f"val (n={len(y_val)})", curve_kwargs={"linestyle": "--"})
    a = m["at_threshold"]
    ax.plot(1 - a["specificity"], a["recall"], "o", color="red", label=f"threshold {thr:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_title(f"ROC, positive = {names[1]}")
    ax.legend(loc="lower right")
    figs.save(fig, "roc")


def _plot_pr(figs: _Figures, y: np.ndarray, s: np.ndarray, m: dict, names: list[str], split: str) -> None:
    from sklearn.metrics import PrecisionRecallDisplay

    fig, ax = figs.plt.subplots(figsize=(4.9, 4.5))
    PrecisionRecallDisplay.from_predictions(y, s, ax=ax, name=f"{split} (n={len(y)})")
    a = m["at_threshold"]
    ax.plot(a["recall"], a["precision"], "o", color="red", label=f"threshold {m['threshold']:.3f}")
    ax.set_title(f"Precision-recall, positive = {names[1]}")
    ax.legend(loc="lower left")
    figs.save(fig, "pr")


def _plot_confusion(figs: _Figures, m: dict, names: list[str], split: str) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, axes = figs.plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key, title in ((axes[0], "at_threshold", f"threshold {m['threshold']:.3f}"),
                           (axes[1], "at_0.5", "threshold 0.5")):
        cm = np.array(m[key]["confusion_matrix"]["matrix"])
        ConfusionMatrixDisplay(cm, display_labels=names).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(f"{split}, {title}")
    figs.save(fig, "confusion_matrix")


def _plot_curves(figs: _Figures, history: dict) -> None:
    """Loss and accuracy per epoch of each training phase in history.json (none: no figure)."""
    phases = [(k, v) for k, v in history.items() if isinstance(v, dict) and "history" in v]
    if not phases:
        return
    fig, axes = figs.plt.subplots(1, 2, figsize=(11, 4.2))
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
    figs.save(fig, "curves")


def _plot_scores(figs: _Figures, y: np.ndarray, s: np.ndarray, thr: float, names: list[str], split: str) -> None:
    fig, ax = figs.plt.subplots(figsize=(7, 3.8))
    bins = np.linspace(0, 1, 41)
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label=names[0])
    ax.hist(s[y == 1], bins=bins, alpha=0.6, label=names[1])
    ax.axvline(thr, color="red", label=f"threshold {thr:.3f}")
    ax.axvline(0.5, color="grey", linestyle=":", label="0.5")
    ax.set_xlabel(f"score = P({names[1]})")
    ax.set_title(f"Score distribution, {split}")
    ax.legend()
    figs.save(fig, "scores")


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
    """The self-contained report page (plots inlined), section by section."""
    return (_html_head(run_dir) + _html_summary(m) + _html_operating_point(m) + _crop_section(m, run_dir) + "\n"
            + _html_metrics(m) + _html_plots_and_tables(m, files, cfg))


def _html_head(run_dir: Path) -> str:
    esc = html.escape
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
"""


def _html_summary(m: dict) -> str:
    """The split, the classes, the AUC (with its bootstrap CI) and how the operating threshold was chosen."""
    esc = html.escape
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
    if m.get("ci95", {}).get("roc_auc"):
        lo, hi = m["ci95"]["roc_auc"]
        auc += f" <small>(95% bootstrap CI {lo:.3f} to {hi:.3f})</small>"
    sel = m["threshold_selection"]
    return f"""<p>{esc(m['created_at'])} &middot; split <b>{esc(m['split'])}</b> (n={m['n']}, {m['n_positive']} {esc(m['positive_class'])})
&middot; classes {esc(', '.join(m['classes']))} &middot; positive class <b>{esc(m['positive_class'])}</b></p>
<p class="big">ROC AUC <b>{auc}</b> &middot; operating threshold <b>{m['threshold']:.3f}</b>
(rule: {esc(sel.get('rule') or f"defect recall >= {sel['target_recall']}")}, chosen on the
{esc('out-of-fold scores of train+val' if sel.get('split') == 'oof' else 'validation split')}: recall
{sel['recall']:.3f}{'; ' + esc(sel['fallback']) if sel.get('fallback') else ''})</p>
"""


def _html_operating_point(m: dict) -> str:
    """The operating point in the line's terms and the trade-off table with its intervals."""
    esc = html.escape
    op_li = "".join(f"<li><b>{esc(k)}</b> (n={r['n_good'] + r['n_defect']}): {esc(r['sentence'])}</li>"
                    for k, r in m.get("operating_point", {}).items())
    tr_rows = "".join(
        f"<tr><td>{r['threshold']:.3f}</td><td>{r['rejected_per_1000_good']:.0f} "
        f"({r['rejected_per_1000_good_ci95'][0]:.0f}-{r['rejected_per_1000_good_ci95'][1]:.0f})</td>"
        f"<td>{r['missed_per_100_defects']:.0f} ({r['missed_per_100_defects_ci95'][0]:.0f}-"
        f"{r['missed_per_100_defects_ci95'][1]:.0f})</td><td>{r['recall']:.3f}</td><td>{r['specificity']:.3f}</td></tr>"
        for r in m.get("tradeoff", []))
    return f"""<h2>Operating point in the line's terms</h2>
<ul>{op_li}</ul>
<table><tr><th>threshold</th><th>good boxes rejected per 1,000 (95% CI)</th><th>defects missed per 100 (95% CI)</th>
<th>recall</th><th>specificity</th></tr>{tr_rows}</table>
<p><small>Trade-off on the {esc('out-of-fold scores (train+val)' if m.get('tradeoff_on') == 'oof' else m['split'] + ' split')};
intervals are 95% Wilson intervals for the proportions.</small></p>
"""


def _html_metrics(m: dict) -> str:
    """The split's metrics at the operating threshold and at 0.5, with both classification reports."""
    a, h = m["at_threshold"], m["at_0.5"]
    esc = html.escape

    def row(label: str, d: dict) -> str:
        return (f"<tr><td>{esc(label)}</td><td>{d['threshold']:.3f}</td><td>{d['accuracy']:.3f}</td>"
                f"<td>{d['precision']:.3f}</td><td>{d['recall']:.3f}</td><td>{d['specificity']:.3f}</td>"
                f"<td>{d['f1']:.3f}</td><td>{d['macro_f1']:.3f}</td>"
                f"<td>{d['confusion_matrix']['fn']}</td><td>{d['confusion_matrix']['fp']}</td></tr>")

    return f"""<h2>{esc(m['split'])} metrics</h2>
<table><tr><th>at</th><th>threshold</th><th>accuracy</th><th>precision</th><th>recall</th><th>specificity</th>
<th>F1 ({esc(m['positive_class'])})</th><th>macro F1</th><th>missed defects</th><th>false rejects</th></tr>
{row('operating threshold', a)}{row('0.5', h)}</table>
<h3>Classification report at the operating threshold ({a['threshold']:.3f})</h3>
<pre>{esc(a['classification_report_text'])}</pre>
<h3>Classification report at 0.5</h3>
<pre>{esc(h['classification_report_text'])}</pre>
"""


def _html_plots_and_tables(m: dict, files: dict[str, Path], cfg: dict) -> str:
    """The plots (inlined PNGs), the threshold table, the split counts and the training configuration."""
    esc = html.escape
    imgs = "".join(
        f"<figure>{_img_tag(p, k)}<figcaption>{esc(CAPTIONS.get(k, k))}</figcaption></figure>" for k, p in files.items()
    )
    trs = "".join(
        f"<tr><td>{r['threshold']:.3f}</td><td>{r['recall']:.3f}</td><td>{r['precision']:.3f}</td>"
        f"<td>{r['specificity']:.3f}</td><td>{r['missed_defects']}</td><td>{r['false_rejects']}</td>"
        f"<td>{r['accuracy']:.3f}</td></tr>"
        for r in m["threshold_table"]
    )
    cfg_rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(json.dumps(cfg.get(k)))}</td></tr>"
        for k in ("data_dir", "classes", "positive_class", "recipe", "C_chosen", "flip_tta", "pooling", "img_size", "crop",
                  "alpha", "weights", "epochs", "fine_tune_epochs", "unfreeze_blocks", "learning_rate", "fine_tune_learning_rate", "balance",
                  "augment", "seed", "wall_time_s")
    )
    return f"""<h2>Plots</h2>
{imgs}
<h2>Threshold table ({esc(m['split'])})</h2>
<table><tr><th>threshold</th><th>recall</th><th>precision</th><th>specificity</th><th>missed defects</th>
<th>false rejects</th><th>accuracy</th></tr>{trs}</table>
<h2>Split (grouped by near-duplicate clusters)</h2>
<pre>{esc(json.dumps(m.get("split_counts", {}), indent=1))}</pre>
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


@dataclass
class _Run:
    """What evaluate reads from a run directory (and the data folder its images are in)."""

    cfg: dict
    history: dict
    split: split_mod.Split
    root: Path
    finder: str | None = None  # the learned box finder the run was cropped with (train --finder), checked


def run_finder(cfg: dict) -> str | None:
    """The learned box finder recorded in train_config.json (train --finder), or None; EvaluateError when it is
    missing or its content changed (the images would be cropped otherwise than in training)."""
    from edge.judge.crops import recorded_finder

    try:
        return recorded_finder(cfg.get("finder"))
    except ValueError as e:
        raise EvaluateError(str(e)) from e


@dataclass
class _Scored:
    """The Keras scores evaluate works from: the evaluated split, the validation split, and the run's
    out-of-fold scores (linear recipe) if it saved them."""

    y: np.ndarray
    s: np.ndarray
    loaded: data_mod.Loaded
    y_val: np.ndarray
    s_val: np.ndarray
    loaded_val: data_mod.Loaded
    oof: tuple[np.ndarray, np.ndarray] | None

    def tradeoff_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """The scores the trade-off is drawn on: the out-of-fold ones when present, else the evaluated split's."""
        return (self.oof[0], self.oof[1]) if self.oof is not None else (self.y, self.s)


def evaluate(run_dir: Path, target_recall: float | None = None, split: str = "test", data_dir: Path | None = None,
             cost_ratio: float | None = None, empty_belt: Path | None = None) -> dict:
    """Evaluate ``run_dir``; writes metrics.json and report/ (PNGs + report.html) and returns the metrics.

    The operating threshold comes from the run's out-of-fold scores (``oof_scores.csv``, written by the
    linear recipe: every train+val image scored by a model that did not see it) when present, else from
    the validation split. Rule: ``target_recall`` or ``cost_ratio``; neither: ``operating.DEFAULT_COST_RATIO``.
    ``data_dir`` overrides the data folder recorded in train_config.json (if the data moved), ``empty_belt``
    the crop's empty-belt folder (``crop.empty_belt``, if those frames moved).
    """
    run_dir = Path(run_dir)
    if target_recall is not None and not 0 < target_recall <= 1:
        raise EvaluateError(f"target recall must be in (0, 1], got {target_recall}")
    run = _load_run(run_dir, data_dir)
    crop = crop_from_config(run.cfg)
    if empty_belt is not None:
        if crop.method != "auto":
            raise EvaluateError(f"--empty needs a run cropped with auto (this one: {crop.method})")
        from edge.judge.localize import load_belt

        try:
            load_belt(Path(empty_belt).resolve())
        except ValueError as e:
            raise EvaluateError(f"--empty: {e}") from e
        crop = crop.model_copy(update={"empty_belt": str(Path(empty_belt).resolve())})
    sc = _score(run_dir, run, split, crop)
    sel = _select_threshold(sc, target_recall, cost_ratio)
    names = _names(run.cfg["classes"], run.cfg["positive_class"])
    m = _metrics(run_dir, run, sc, split, sel, names, crop)
    mv = multi_view_metrics(sc.loaded.paths, sc.y, sc.s, sc.loaded_val.paths, sc.y_val, sc.s_val, target_recall,
                            cost_ratio)
    if mv is not None:
        m["multi_view"] = mv
    _write_report(run_dir, run, sc, m, names, crop)
    log.info("evaluated %s on %s (n=%d): AUC %s, threshold %.3f, recall %.3f, precision %.3f",
             run_dir, split, len(sc.y), "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}", sel["threshold"],
             m["at_threshold"]["recall"], m["at_threshold"]["precision"])
    return m


def _load_run(run_dir: Path, data_dir: Path | None) -> _Run:
    """train_config.json, history.json (if any), split.json and the data folder; EvaluateError if incomplete."""
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
    return _Run(cfg, history, sp, root, run_finder(cfg))


def _score(run_dir: Path, run: _Run, split: str, crop: CropSpec) -> _Scored:
    """The run's Keras model on the validation split and on ``split``, and its out-of-fold scores."""
    import keras

    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    positive = run.cfg["positive_class"]
    img_size = int(run.cfg["img_size"])
    y_val, s_val, loaded_val = _scores(model, run.split, "val", run.root, img_size, positive, crop, run.finder)
    y, s, loaded = _scores(model, run.split, split, run.root, img_size, positive, crop, run.finder)
    if len(y) == 0:
        raise EvaluateError(f"split {split!r} has no readable images")
    return _Scored(y, s, loaded, y_val, s_val, loaded_val, _oof(run_dir))


def _select_threshold(sc: _Scored, target_recall: float | None, cost_ratio: float | None) -> dict:
    """The operating threshold by the rule (training.operating.choose) on the out-of-fold scores, else on
    the validation split; the dict records the rule, the fallback (if any) and the split it was chosen on."""
    from training import operating

    sel_y, sel_s, sel_split = (sc.oof[0], sc.oof[1], "oof") if sc.oof is not None else (sc.y_val, sc.s_val, "val")
    try:
        sel = operating.choose(sel_y, sel_s, target_recall, cost_ratio)
    except ValueError as e:
        raise EvaluateError(str(e)) from e
    sel.setdefault("target_recall", None)
    sel.setdefault("fallback", None)
    sel.setdefault("precision", None)
    if sel["fallback"]:
        log.warning("threshold: %s", sel["fallback"])
    return {**sel, "split": sel_split}


def _metrics(run_dir: Path, run: _Run, sc: _Scored, split: str, sel: dict, names: list[str],
             crop: CropSpec) -> dict:
    """metrics.json's numbers: AUCs, the metrics at the threshold and at 0.5, the threshold table, bootstrap
    intervals, the operating point in the line's terms and the trade-off."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from training import operating

    y, s, oof, thr = sc.y, sc.s, sc.oof, sel["threshold"]
    both = len(np.unique(y)) == 2
    m: dict = {
        "run": str(run_dir),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": split,
        "classes": run.cfg["classes"],
        "positive_class": run.cfg["positive_class"],
        "n": int(len(y)),
        "n_positive": int(np.sum(y == 1)),
        "threshold": float(thr),
        "threshold_rule": "defect if score >= threshold",
        "threshold_selection": sel,
        "roc_auc": float(roc_auc_score(y, s)) if both else None,
        "average_precision": float(average_precision_score(y, s)) if both else None,
        # the linear recipe fits on train + val, so its val AUC would be in-sample: report the OOF AUC instead
        "val_roc_auc": (float(roc_auc_score(sc.y_val, sc.s_val)) if len(np.unique(sc.y_val)) == 2 and oof is None
                        else None),
        "oof_roc_auc": float(roc_auc_score(oof[0], oof[1])) if oof is not None else None,
        "at_threshold": binary_metrics(y, s, thr, names),
        "at_0.5": binary_metrics(y, s, 0.5, names),
        "threshold_table": threshold_table(y, s, list(TABLE_THRESHOLDS) + [thr]),
        "split_counts": run.split.counts(),
        "img_size": int(run.cfg["img_size"]),
        "crop": crop.model_dump(mode="json"),
        "balance": run.cfg.get("balance"),
    }
    m["ci95"] = bootstrap_ci(y, s, thr)
    op_rows = {split: operating.tradeoff_row(y, s, thr)}
    if oof is not None:
        op_rows["oof"] = operating.tradeoff_row(oof[0], oof[1], thr)
    m["operating_point"] = {k: {**r, "sentence": operating.sentence(r)} for k, r in op_rows.items()}
    m["tradeoff"] = operating.tradeoff(*sc.tradeoff_scores(), sorted(set(TABLE_THRESHOLDS) | {thr}))
    m["tradeoff_on"] = "oof" if oof is not None else split
    m["accuracy"] = m["at_threshold"]["accuracy"]
    m["classification_report_text"] = m["at_threshold"]["classification_report_text"]
    if sc.loaded.unreadable:
        m["unreadable"] = [str(p) for p in sc.loaded.unreadable]
    return m


def _write_report(run_dir: Path, run: _Run, sc: _Scored, m: dict, names: list[str], crop: CropSpec) -> None:
    """report/ (crop sheet, plots, trade-off, per-image scores, report.html), then metrics.json; adds the
    crop summary and the report's files to ``m``."""
    from training import operating

    split, thr, report = m["split"], m["threshold_selection"]["threshold"], run_dir / "report"
    if crop.method != "none":
        from edge.judge.crops import fallback_warning, report_crops

        stats = report_crops(sc.loaded.paths, crop, report, root=run.root, finder=run.finder)
        m["crops"] = {**stats.to_dict(), "warning": fallback_warning(stats, crop)}
    files = _plots(report, sc.y, sc.s, sc.y_val, sc.s_val, m, run.history, names, split)
    files["tradeoff"] = report / "tradeoff.png"
    operating.plot_tradeoff(files["tradeoff"], *sc.tradeoff_scores(), thr,
                            f"Trade-off ({'out-of-fold, train+val' if sc.oof is not None else split})")
    _write_scores_csv(report / f"scores_{split}.csv", sc, run.root, thr)
    m["report"] = {k: str(p.relative_to(run_dir)) for k, p in files.items()}
    (report / "report.html").write_text(_html(m, files, run.cfg, run_dir))
    m["report"]["html"] = "report/report.html"
    m["report"]["scores"] = f"report/scores_{split}.csv"
    (run_dir / "metrics.json").write_text(json.dumps(m, indent=1))


def _write_scores_csv(path: Path, sc: _Scored, root: Path, thr: float) -> None:
    """Per-image scores of the evaluated split, for error analysis."""
    with open(path, "w") as f:
        f.write("path,label,score,predicted_defect\n")
        for p, lab, score in zip(sc.loaded.paths, sc.loaded.labels, sc.s.tolist(), strict=True):
            f.write(f"{Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else p},{lab},"
                    f"{score:.6f},{int(score >= thr)}\n")
