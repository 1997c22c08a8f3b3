"""Plot of the feature-probe paired differences (docs/results/cv_parcel_features.png) from runs/probe/results."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

R = Path("runs/probe/results")
lab = {
    "gem224": "224 px, GeM-3 pooling", "max224": "224 px, max pooling", "avgmax224": "224 px, avg + max pooling",
    "ml16": "224 px, GAP + GAP(block 16 expand)", "ml13": "224 px, GAP + GAP(block 13 expand)",
    "ml10": "224 px, GAP + GAP(block 10 expand)", "ml6": "224 px, GAP + GAP(block 6 expand)",
    "ml13std": "224 px, GAP + block 13, per-feature std", "s256": "256 px", "s288": "288 px", "s320": "320 px",
    "s288gem": "288 px, GeM-3", "s320ml16": "320 px, GAP + block 16", "s288ml16": "288 px, GAP + block 16",
    "s288flip": "288 px + flip", "s320flip": "320 px + flip", "ms224_256": "mean of 224 and 256 px",
    "ms224_288": "mean of 224 and 288 px", "ms224_320": "mean of 224 and 320 px",
    "ms160_288": "mean of 160 and 288 px", "ms160_320": "mean of 160 and 320 px",
}
base = np.array([f["roc_auc"] for f in json.loads((R / "base.json").read_text())["folds"]])
base2 = np.array([f["roc_auc"] for f in json.loads((R / "base2.json").read_text())["folds"]])
rows = []
for k, t in lab.items():
    d = np.array([f["roc_auc"] for f in json.loads((R / f"{k}.json").read_text())["folds"]]) - base
    d2 = None
    if (R / f"{k}2.json").is_file():
        d2 = np.array([f["roc_auc"] for f in json.loads((R / f"{k}2.json").read_text())["folds"]]) - base2
    rows.append((t, d, d2))
rows.sort(key=lambda r: r[1].mean())
fig, ax = plt.subplots(figsize=(11, 7.5))
for i, (_t, d, d2) in enumerate(rows):
    ok = d.mean() > d.std(ddof=1)
    ax.errorbar(d.mean(), i, xerr=d.std(ddof=1), fmt="o", color="tab:green" if ok else "tab:grey", capsize=3)
    ax.plot(d, np.full(len(d), i) + 0.15, ".", color="tab:blue", alpha=0.4, ms=4)
    if d2 is not None:
        ax.errorbar(d2.mean(), i - 0.25, xerr=d2.std(ddof=1), fmt="s", color="tab:orange", capsize=3, ms=4)
ax.axvline(0, color="k", lw=0.8)
ax.set_yticks(range(len(rows)), [r[0] for r in rows])
ax.set_xlabel("ROC AUC minus the default (frozen 224 px GAP + logistic), paired per fold")
ax.set_title(fontsize=10, label="parcel-damage, 10 grouped folds (seeds 0-1): mean ± sd of the paired difference\n"
             "green = wins by more than its sd; orange squares = re-check on 10 new folds (seeds 2-3)")
fig.tight_layout()
fig.savefig("docs/results/cv_parcel_features.png", dpi=100)
