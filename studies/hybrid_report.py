"""Tables from studies/hybrid_study.py outputs: the summary, pooled over data sets, and per defect type.

    .venv/bin/python studies/hybrid_report.py OUT1.json [OUT2.json ...] [--variants linear,mil,lin_mil]

Pooled rows treat the folds of all given files as one list (paired differences to ``linear`` fold by fold).
Per defect type: per-part AUC (max over views) of each type's parts against all good parts of the fold, mean over
the folds.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np
from hybrid_study import summarise, table

from training.parts import fuse_parts
from training.split import part_ids

log = logging.getLogger("hybrid_report")


def per_defect(rows: list[dict], variants: list[str]) -> str:
    from sklearn.metrics import roc_auc_score

    acc: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        rel = r["test"]
        parts = part_ids(rel)
        kind = [m.group(1) if (m := re.search(r"defective-\d+-([a-z-]+)_", Path(p).name)) else "ok" for p in rel]
        y = np.array([k != "ok" for k in kind], int)
        for v in variants:
            yp, sp = fuse_parts(parts, y, np.array(r["raw"][v]), "max")
            _, kp = fuse_parts(parts, np.arange(len(kind)), np.arange(len(kind)), "max")
            ktype = np.array([kind[int(i)] for i in kp])
            for t in sorted(set(kind) - {"ok"}):
                sel = (ktype == t) | (yp == 0)
                if (ktype == t).any():
                    acc.setdefault(t, {}).setdefault(v, []).append(float(roc_auc_score(yp[sel], sp[sel])))
    lines = ["| defect | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for t, by in acc.items():
        lines.append(f"| {t} | " + " | ".join(f"{np.mean(by[v]):.3f}" for v in variants) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--variants", default="")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    all_rows = []
    for f in a.files:
        rows = json.loads(f.read_text())["folds"]
        all_rows += rows
        log.info("## %s (%d folds)\n%s\n", f, len(rows), table(summarise(rows)))
    if len(a.files) > 1:
        log.info("## pooled (%d folds)\n%s\n", len(all_rows), table(summarise(all_rows)))
    variants = a.variants.split(",") if a.variants else list(all_rows[0]["raw"])
    log.info("## per defect type, per part (max), pooled\n%s", per_defect(all_rows, variants))


if __name__ == "__main__":
    main()
