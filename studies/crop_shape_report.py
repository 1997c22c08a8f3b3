"""Paired table of ``boxinspect cv`` runs that differ in one setting (docs/RESULTS.md "An upright crop for the linear
head"): per view and per part (max / mean) AUC of each arm, and A - B over the shared folds with the folds where A
is higher.

    python studies/crop_shape_report.py OUT.json NAME=A_DIR,B_DIR [NAME=A_DIR,B_DIR ...]
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("crop_shape_report")


def fold_aucs(run: Path) -> dict[str, list[float]]:
    """Per-fold AUCs of a cv run: per view and per part (max, mean)."""
    s = json.loads((run / "summary.json").read_text())
    out = {"view": [float(f["roc_auc"]) for f in s["folds"]]}
    for rule in ("max", "mean"):
        out[rule] = [float(f["roc_auc"]) for f in s["folds_per_part"][rule]]
    return out


def pair(a: Path, b: Path) -> dict[str, dict[str, float]]:
    fa, fb = fold_aucs(a), fold_aucs(b)
    res = {}
    for k in ("view", "max", "mean"):
        x, y = np.array(fa[k]), np.array(fb[k])
        d = x - y
        res[k] = {"a": float(x.mean()), "a_sd": float(x.std(ddof=1)), "b": float(y.mean()), "b_sd": float(y.std(ddof=1)),
                  "d": float(d.mean()), "d_sd": float(d.std(ddof=1)), "up": int((d > 0).sum()), "n": len(d)}
    return res


def main(out: str, pairs: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = {}
    for p in pairs:
        name, dirs = p.split("=", 1)
        a, b = dirs.split(",")
        rows[name] = {"a": a, "b": b, **pair(Path(a), Path(b))}
        r = rows[name]
        log.info("| %s | %s |", name, " | ".join(
            f"{r[k]['b']:.3f} -> {r[k]['a']:.3f} ({r[k]['d']:+.3f} ± {r[k]['d_sd']:.3f}, {r[k]['up']}/{r[k]['n']})"
            for k in ("view", "max", "mean")))
    Path(out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
