"""Parts of multi-view data sets: whether a set is multi-view and one (label, score) per part by a fusion rule.
Its own module so the CV and the anomaly recipe share it without importing each other."""

from __future__ import annotations

import numpy as np

FUSIONS = ("max", "mean", "noisy_or")


def is_multiview(parts: list[str]) -> bool:
    """True when most files share their part id with another file (a multi-view data set)."""
    from collections import Counter

    c = Counter(parts)
    return sum(n for n in c.values() if n > 1) >= 0.5 * len(parts)


def fuse(scores: np.ndarray, rule: str) -> float:
    s = np.asarray(scores, dtype=np.float64)
    if rule == "max":
        return float(s.max())
    if rule == "mean":
        return float(s.mean())
    if rule == "noisy_or":
        return float(1.0 - np.prod(1.0 - np.clip(s, 0.0, 1.0)))
    raise ValueError(f"unknown fusion rule {rule!r} (choose {', '.join(FUSIONS)})")


def fuse_parts(parts: list[str], y: np.ndarray, s: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """One (label, score) per part: label = any view defective, score = fusion of the view scores."""
    by: dict[str, list[int]] = {}
    for i, p in enumerate(parts):
        by.setdefault(p, []).append(i)
    ys = np.array([int(np.max(y[idx])) for idx in by.values()])
    ss = np.array([fuse(s[idx], rule) for idx in by.values()])
    return ys, ss
