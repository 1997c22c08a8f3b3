"""Operating point: the score threshold a line runs at, chosen on out-of-fold scores, and its trade-off.

Two rules (a box is a defect when ``score >= threshold``):
  * target recall: the highest threshold whose defect recall is >= the target (``choose_threshold``);
  * cost ratio: the threshold that minimises ``cost_ratio * missed defects + false rejects``, i.e. a missed
    defect costs ``cost_ratio`` times a good box sent to a human.
Thresholds are placed halfway to the next lower score, so a tiny score change (int8) does not flip the
boundary case. ``tradeoff`` turns scores into the line's language: of 1,000 good boxes N are rejected and of
100 defects M are missed, with 95% Wilson intervals.
"""

from __future__ import annotations

import math

import numpy as np

PER_GOOD = 1000
PER_DEFECT = 100
# The default rule when neither a target recall nor a cost ratio is given: a missed defect costs as much as two
# good boxes sent to a human. Measured on parcel-damage out-of-fold scores (docs/RESULTS.md, "Operating point"):
# a target recall of 0.95 there rejects 738 of 1,000 good boxes, which no line accepts; this rule misses 15 of 100
# defects while rejecting 473 of 1,000. A line with a good model (AUC > 0.98) gets nearly the same threshold from either rule.
DEFAULT_COST_RATIO = 2.0


def _midpoint_below(s: np.ndarray, t: float) -> float:
    below = s[s < t]
    return float((t + below.max()) / 2.0) if len(below) else float(t * 0.999)


def threshold_for_cost(y_true: np.ndarray, scores: np.ndarray, cost_ratio: float) -> dict:
    """Threshold minimising ``cost_ratio * FN + FP`` on (y_true, scores); ties go to the higher threshold.

    Returns {"threshold", "rule", "cost_ratio", "expected_cost_per_box", "recall", "specificity", "n", "n_pos"}.
    """
    if not cost_ratio > 0:
        raise ValueError(f"cost ratio must be > 0, got {cost_ratio}")
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(s) == 0:
        raise ValueError("no scores")
    cand = np.unique(s)[::-1]  # descending; threshold = each distinct score (defect if s >= t)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    best_cost = float(cost_ratio * n_pos)  # threshold above every score: all passed, every defect missed
    best_t = float(cand[0] + max(1e-6, abs(cand[0]) * 1e-6))
    for t in cand:
        pred = s >= t
        fn = int(np.sum(~pred & (y == 1)))
        fp = int(np.sum(pred & (y == 0)))
        cost = cost_ratio * fn + fp
        if cost < best_cost - 1e-12:
            best_cost, best_t = cost, float(t)
    thr = best_t if best_t > cand[0] else _midpoint_below(s, best_t)
    pred = s >= thr
    return {
        "threshold": thr,
        "rule": f"minimise {cost_ratio:g} x missed defects + false rejects",
        "cost_ratio": float(cost_ratio),
        "expected_cost_per_box": best_cost / len(s),
        "recall": float(np.mean(pred[y == 1])) if n_pos else None,
        "specificity": float(np.mean(~pred[y == 0])) if n_neg else None,
        "n": int(len(s)),
        "n_pos": n_pos,
    }


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, target_recall: float = 0.95) -> dict:
    """Highest threshold with recall >= target on (y_true, scores); defect if score >= threshold.

    Returns {"threshold", "recall", "precision", "target_recall", "n_pos", "n", "fallback"}.
    With no positives the threshold falls back to 0.5 (``fallback`` says why).
    """
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.sort(s[y == 1])[::-1]
    out = {"target_recall": target_recall, "n_pos": int(len(pos)), "n": int(len(s)), "fallback": None}
    if len(pos) == 0:
        out.update(threshold=0.5, fallback="no positive examples in the selection split; 0.5 used")
    else:
        k = max(1, math.ceil(target_recall * len(pos) - 1e-9))
        kth = pos[k - 1]  # the k-th highest positive score: recall is k/P at threshold kth
        below = s[s < kth]
        thr = (kth + below.max()) / 2.0 if len(below) else kth * 0.999
        out["threshold"] = float(thr)
    pred = s >= out["threshold"]
    tp = int(np.sum(pred & (y == 1)))
    out["recall"] = tp / max(1, int(np.sum(y == 1)))
    out["precision"] = tp / max(1, int(np.sum(pred)))
    return out


def choose(y_true: np.ndarray, scores: np.ndarray, target_recall: float | None = None,
           cost_ratio: float | None = None) -> dict:
    """The operating threshold by target recall or cost ratio (at most one given); neither: DEFAULT_COST_RATIO."""
    if target_recall is not None and cost_ratio is not None:
        raise ValueError("give a target recall or a cost ratio, not both")
    if target_recall is None:
        return threshold_for_cost(y_true, scores, DEFAULT_COST_RATIO if cost_ratio is None else cost_ratio)
    out = choose_threshold(y_true, scores, target_recall)
    out["rule"] = f"highest threshold with defect recall >= {target_recall:g}"
    return out


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials (scipy)."""
    if n == 0:
        return (float("nan"), float("nan"))
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def tradeoff_row(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """At ``threshold``: false rejects per 1,000 good boxes and missed defects per 100 defects, with 95% CIs."""
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    pred = s >= threshold
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    fr_lo, fr_hi = wilson(fp, n_neg)
    mi_lo, mi_hi = wilson(fn, n_pos)
    return {
        "threshold": float(threshold),
        "false_rejects": fp, "n_good": n_neg, "missed": fn, "n_defect": n_pos,
        "rejected_per_1000_good": PER_GOOD * fp / max(1, n_neg),
        "rejected_per_1000_good_ci95": [PER_GOOD * fr_lo, PER_GOOD * fr_hi],
        "missed_per_100_defects": PER_DEFECT * fn / max(1, n_pos),
        "missed_per_100_defects_ci95": [PER_DEFECT * mi_lo, PER_DEFECT * mi_hi],
        "recall": 1 - fn / max(1, n_pos),
        "specificity": 1 - fp / max(1, n_neg),
    }


def tradeoff(y_true: np.ndarray, scores: np.ndarray, thresholds=None, n_points: int = 19) -> list[dict]:
    """The whole trade-off curve: one :func:`tradeoff_row` per threshold (default: score quantiles)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if thresholds is None:
        thresholds = np.quantile(s, np.linspace(0.05, 0.95, n_points))
    return [tradeoff_row(y_true, s, float(t)) for t in sorted(set(float(t) for t in thresholds))]


def sentence(row: dict) -> str:
    """'At threshold 0.31, 412 of 1,000 good boxes are rejected (95% CI 380-445) and 5 of 100 defects ...'."""
    lo, hi = row["rejected_per_1000_good_ci95"]
    mlo, mhi = row["missed_per_100_defects_ci95"]
    return (f"at threshold {row['threshold']:.3f}, {row['rejected_per_1000_good']:.0f} of 1,000 good boxes are "
            f"rejected (95% CI {lo:.0f}-{hi:.0f}) and {row['missed_per_100_defects']:.0f} of 100 defects are "
            f"missed (95% CI {mlo:.0f}-{mhi:.0f})")


def draw_tradeoff(ax, y_true: np.ndarray, scores: np.ndarray, threshold: float | None, title: str = "") -> None:
    """False rejects per 1,000 good vs missed per 100 defects over all thresholds, operating point in red."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y_true).astype(int).ravel()
    fpr, tpr, _ = roc_curve(y, scores)
    ax.plot(PER_GOOD * fpr, PER_DEFECT * (1 - tpr), "-", label="all thresholds")
    if threshold is not None:
        r = tradeoff_row(y, scores, threshold)
        x0, y0 = r["rejected_per_1000_good"], r["missed_per_100_defects"]
        (xl, xh), (yl, yh) = r["rejected_per_1000_good_ci95"], r["missed_per_100_defects_ci95"]
        ax.errorbar([x0], [y0], xerr=[[x0 - xl], [xh - x0]], yerr=[[y0 - yl], [yh - y0]], fmt="o", color="red",
                    label=f"threshold {threshold:.3f} (95% CI)")
    ax.set_xlabel("good boxes rejected, per 1,000")
    ax.set_ylabel("defects missed, per 100")
    ax.set_xlim(0, PER_GOOD)
    ax.set_ylim(0, PER_DEFECT)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Trade-off: false rejects vs missed defects")
    ax.legend()


def plot_tradeoff(path, y_true: np.ndarray, scores: np.ndarray, threshold: float | None, title: str = "") -> None:
    """:func:`draw_tradeoff` as its own PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    draw_tradeoff(ax, y_true, scores, threshold, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
