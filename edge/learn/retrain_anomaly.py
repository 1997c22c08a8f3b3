"""``boxinspect retrain --recipe anomaly``: a new bank of good parts on the device, from ``feedback/ok/`` (issue 29).

The deployed package must be an anomaly package (``train --recipe anomaly``, converted). No TensorFlow: every good
crop goes through the package's own .tflite (the daemon's crop, ``Classifier.preprocess``; one invoke for its patch
map), the bank is fitted by the code ``boxinspect train`` uses (training/anomaly.py: greedy coreset or per-cell
Gaussians, TensorFlow-free) and the threshold is set by the same rule from good parts only (leave-one-group-out
distances, ``edge/anomaly.frr_threshold``, groups = near-duplicates + views of one part, training/split.py).

Candidate layout (``out_dir``), loaded, shadowed and promoted like a head candidate (edge/learn/shadow.py)::

    <name>.tflite        the parent's .tflite, hardlinked (copied across file systems): same sha256
    <name>.bank.npz      the new bank (and threshold distance)
    <name>.tflite.json   the parent's sidecar with the new ``anomaly`` block (bank sha256, threshold), golden
                         samples re-scored through the new bank, a new ``package_sha256``
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge.judge import anomaly as an
from edge.judge.classifier import Classifier
from edge.judge.localize import already_cropped
from edge.judge.model_package import (
    GoldenSample,
    TrainingDataSummary,
    decode_golden,
    sha256_file,
    utc_now,
)
from edge.learn.feedback import is_kept_crop
from edge.learn.retrain import (
    HASH_SIZE,
    PROGRESS_EVERY,
    RetrainError,
    candidate_path,
    image_groups,
    list_labelled,
    write_candidate,
)

log = logging.getLogger(__name__)

DEFAULT_MIN_GOOD = 20


def _good_patches(clf: Classifier, paths: list[Path], progress: Callable[[str, int, int], None] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    from training.data import read_bgr, resize
    from training.split import image_hashes

    maps, hashes, keep = [], [], []
    for i, p in enumerate(paths):
        if progress is not None and i % PROGRESS_EVERY == 0:
            progress("patch maps of the good crops", i, len(paths))
        bgr = read_bgr(p)
        if bgr is None:
            log.warning("skipping unreadable image %s", p)
            continue
        located = already_cropped(bgr) if is_kept_crop(p) else None  # a kept feedback crop is the model's crop
        maps.append(clf.runner.run_patches(clf.preprocess(bgr, located))[1])
        hashes.append(image_hashes(resize(bgr[:, :, ::-1], HASH_SIZE)))
        keep.append(i)
    return np.stack(maps), np.stack(hashes), keep


def retrain_anomaly(package: Path, label_dirs: list[Path], out_dir: Path, *, target_frr: float | None = None,
                    min_good: int = DEFAULT_MIN_GOOD, name: str | None = None, num_threads: int = 1,
                    seed: int = 0, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Fit a new bank on the good crops of ``label_dirs`` (``<dir>/<negative class>/``); returns the candidate's
    .tflite. RetrainError (one sentence) when it cannot. ``progress(stage, done, total)``: as retrain's (the daemon's
    retrain job shows it)."""
    from training import anomaly as ta

    t0 = time.monotonic()
    clf = Classifier.load(package, num_threads=num_threads)
    meta = clf.metadata
    if meta.anomaly is None or clf.anomaly is None:
        raise RetrainError(f"{package} is not an anomaly package (train --recipe anomaly, then convert): "
                           "retrain it with the default recipe (a head)")
    found = list_labelled(label_dirs, [meta.negative_class])
    if len(found.paths) < min_good:
        raise RetrainError(f"{len(found.paths)} good image(s) in {', '.join(map(str, label_dirs))}/"
                           f"{meta.negative_class}: at least {min_good} are needed")
    patches, hashes, keep = _good_patches(clf, found.paths, progress)
    if progress is not None:
        progress("fitting the bank", len(found.paths), len(found.paths))
    rel = [f"{found.paths[i].parent.name}/{found.paths[i].name}" for i in keep]
    groups = image_groups(rel, hashes)
    method = meta.anomaly.method
    scorer = ta.fit_scorer(method, patches, groups, seed, border=meta.anomaly.border)
    rule = float(target_frr if target_frr is not None else meta.anomaly.threshold_rule.get("target_frr",
                                                                                           an.DEFAULT_TARGET_FRR))
    thr = ta.set_threshold(method, scorer, patches, groups, rule, seed)
    name = name or f"{re.sub(r'-bank-[0-9TZ]+$', '', meta.name)}-bank-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    dst = candidate_path(clf.path, out_dir, name)
    bank = dst.with_name(f"{name}.bank.npz")
    bank.write_bytes(scorer.to_bytes())
    golden = [GoldenSample(name=g.name, label=g.label, png_b64=g.png_b64,
                           expected_score=scorer.score_map(clf.runner.run_patches(decode_golden(g.png_b64))[1])[0])
              for g in meta.golden]
    spec = meta.anomaly.model_copy(update={"bank_file": bank.name, "bank_sha256": sha256_file(bank),
                                           "bank_rows": scorer.bank_rows, "threshold_distance": thr["distance"],
                                           "threshold_rule": thr, "views": {}})  # one bank (retrain pools views)
    new = meta.model_copy(update={
        "name": name, "anomaly": spec, "golden": golden, "metrics": None, "cv_metrics": None, "created_at": utc_now(),
        "threshold_source": f"retrain --recipe anomaly: {thr['rule']}",
        "training_data": TrainingDataSummary(data_dir=None, counts={"train": {meta.negative_class: len(keep)}}),
        "source": {"parent_model_id": clf.model_id, "parent_path": str(clf.path.resolve()),
                   "built_by": "boxinspect retrain --recipe anomaly (edge/learn/retrain_anomaly.py)"}})
    cand = write_candidate(clf.path, dst, new)
    log.info("candidate %s: %s bank of %d good crops (%d groups), threshold distance %.3f (FRR %g, expected 95%% CI "
             "%.4f-%.4f), %.1f s", cand.model_id, method, len(keep), len(np.unique(groups)), thr["distance"], rule,
             *thr["frr_ci95"], time.monotonic() - t0)
    return dst
