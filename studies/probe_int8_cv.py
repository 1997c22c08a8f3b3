"""CV of the linear head on a converted package's own features output (int8: what the edge's head and
`boxinspect retrain` see), on exactly the folds of `boxinspect cv` (training.cv.run_cv with its feature step
replaced by the package's features of the whole photo resized to the input size, crop none as in the cv rows).
usage: python studies/probe_int8_cv.py PACKAGE.tflite OUT_DIR SEED [DATA]  (features cached in OUT_DIR.npy)"""
import sys
from pathlib import Path

import numpy as np

import training.cv as cv
from edge.judge.classifier import Classifier
from training import data as data_mod

pkg, out, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
PARCELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "parcel-damage"  # ../shared beside the repo
data = Path(sys.argv[4]) if len(sys.argv) > 4 else PARCELS
clf = Classifier.load(pkg, num_threads=1)
size = clf.metadata.input.height
cache = out.with_suffix(".npy")


def package_features(cfg: cv.CVConfig, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    if cache.exists():
        x = np.load(cache)
    else:
        x = np.stack([clf.score_features_rgb(data_mod.resize(data_mod.read_rgb(p), size))[1] for p in paths])
        np.save(cache, x)
    return x.astype(np.float64), np.ones(len(paths), bool)


cv.linear_features = package_features
print(cv.format_summary(cv.run_cv(cv.CVConfig(data_dir=data, out_dir=out, seed=seed, img_size=size))))  # noqa: T201
