"""Paired comparison of two `boxinspect cv` runs on the same data and folds (same seed, same --folds/--repeats).

    python scripts/paired_cv.py CV_A CV_B        # e.g. a crop run against a whole-frame run

Prints per-view AUC and, for multi-view data, per-part AUC for every fusion rule: the mean and sd of each run
over its folds and the per-fold paired difference A - B (mean, sd, n). Folds are matched by (repeat, fold).
"""

import json
import sys
from pathlib import Path

import numpy as np


def _rows(summary: dict, rule: str | None) -> dict[tuple[int, int], float]:
    rows = summary["folds"] if rule is None else (summary.get("folds_per_part") or {}).get(rule) or []
    return {(r["repeat"], r["fold"]): r["roc_auc"] for r in rows if r.get("roc_auc") is not None}


def main(a_dir: str, b_dir: str) -> None:
    a = json.loads((Path(a_dir) / "summary.json").read_text())
    b = json.loads((Path(b_dir) / "summary.json").read_text())
    rules = [None, *sorted((a.get("folds_per_part") or {}).keys())]
    for rule in rules:
        ra, rb = _rows(a, rule), _rows(b, rule)
        keys = sorted(set(ra) & set(rb))
        if not keys:
            continue
        va, vb = np.array([ra[k] for k in keys]), np.array([rb[k] for k in keys])
        d = va - vb
        name = "per view" if rule is None else f"per part ({rule})"
        print(f"{name:22s} A {va.mean():.3f} +- {va.std(ddof=1):.3f}  B {vb.mean():.3f} +- {vb.std(ddof=1):.3f}  "  # noqa: T201
              f"A-B {d.mean():+.3f} +- {d.std(ddof=1):.3f} (n={len(d)} folds)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
