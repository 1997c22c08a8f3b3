"""Retrain the head on the device: labelled crops -> the deployed backbone's features -> a new logistic head.

    retrain(package: Path, label_dirs: list[Path], out_dir: Path, *, target_recall: float | None = None,
            cost_ratio: float | None = None, min_per_class: int = DEFAULT_MIN_PER_CLASS, C: float | None = None,
            name: str | None = None, num_threads: int = 1, seed: int = 0,
            progress: Callable[[str, int, int], None] | None = None) -> RetrainResult

No TensorFlow: the features come from the deployed .tflite's second output (convert exports the pooled
backbone features; edge/judge/model_package.py ``FeaturesSpec``), the head is fitted with scikit-learn (part of the
edge install) by the very code ``boxinspect train`` uses for its default recipe (training/linear.py: global
standardisation + L2 logistic regression, class weights balanced, C by grouped 5-fold CV), and the threshold
is chosen on the out-of-fold scores of that CV by the same rule (training/operating.py: a target recall, or a
cost ratio, default 2). Both modules are TensorFlow-free; tests/test_retrain.py runs this in a venv without
TensorFlow.

Steps:
  1. load the package (it must have a features output: packages converted before issue 11 have none);
  2. list ``<dir>/<class>/*.jpg|png|...`` in every label dir (the operator page's ``feedback/`` and any
     folder-per-class data set; class folders are the package's labels; dot-folders are skipped);
  3. for every image: the model input exactly as the daemon makes it (``model_input``: the package's box
     crop, then resize; a crop the feedback store kept, named by its record, is the model's crop already and is
     only resized), one invoke -> (live score, features); and a dHash of the image for the groups;
  4. refuse when a class has fewer than ``min_per_class`` images (:class:`RetrainError`, one sentence);
  5. groups = near-duplicate clusters (dHash over the 8 dihedral transforms, training/split.py) joined with
     the views of one part (``<part>_<view>.jpg``), so CV never tests on a copy of a training image;
  6. fit the head with C chosen by grouped CV (ROC AUC); CV metrics = the out-of-fold scores at that C;
     threshold by the rule on those scores;
  7. write the candidate, a head-only package (layout below), load it and run its self-test.

Candidate layout (``out_dir``)::

    <name>.tflite          the parent's .tflite, hardlinked (copied across file systems): same sha256
    <name>.tflite.json     the parent's sidecar with ``head`` (mean, scale, weights, bias), the new
                           ``threshold``, ``cv_metrics``, golden samples re-scored through the head, and a
                           new ``package_sha256`` (which covers the head)
    <name>.retrain.json    the report: counts, CV metrics, C per fold AUC, the live model's AUC on the same
                           labels, time and peak memory

``name`` defaults to ``<parent name>-head-<UTC time>``. The candidate is loaded like any package
(``Classifier.load``, ``model.path``, the API's reload), and its ``backbone_sha256`` equals the parent's,
so the daemon can score it in shadow from the live model's features (``Classifier.head_score``).

Time and memory: per image, a decode, the daemon's box crop (the box search is most of the cost) and one
invoke, in ``num_threads`` threads (default 1: inside the daemon the loop keeps the other core); then the
fit, seconds; ``peak_rss_mb`` is the process's peak resident memory (ru_maxrss) at the end, so inside
the daemon it includes the daemon. Benchmark: ``boxinspect bench retrain`` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.judge.classifier import Classifier, ModelError
from edge.judge.images import IMAGE_EXTS
from edge.judge.localize import already_cropped
from edge.judge.model_package import (
    CVMetrics,
    GoldenSample,
    LinearHead,
    ModelMetadata,
    TrainingDataSummary,
    decode_golden,
    sidecar_path,
    utc_now,
    write_metadata,
)
from edge.learn.feedback import is_kept_crop
from edge.runtime.versions import installed_versions

log = logging.getLogger(__name__)

DEFAULT_MIN_PER_CLASS = 20  # below this a 5-fold grouped CV has ~4 images of a class per test fold
HASH_SIZE = 64  # the image is reduced to this before the dHash (as training/cv.py)
PROGRESS_EVERY = 100


class RetrainError(ValueError):
    """Retraining cannot run as asked; the message is one sentence for the person at the line."""


@dataclass
class RetrainResult:
    candidate: Path  # the candidate's .tflite (its sidecar beside it)
    model_id: str
    parent_model_id: str
    backbone_sha256: str
    threshold: float
    cv: CVMetrics  # the candidate's grouped-CV metrics (also in its sidecar as cv_metrics)
    counts: dict[str, int]  # class -> images used
    live_auc: float | None  # the deployed package's own score on the same labels (AUC), for comparison
    live_cv: CVMetrics | None  # the deployed package's cv_metrics from its sidecar (None if it has none)
    inner_auc: dict[str, float] = field(default_factory=dict)  # C -> mean grouped-CV AUC
    skipped: list[str] = field(default_factory=list)  # unreadable image files
    seconds: float = 0.0  # wall time
    cpu_seconds: float = 0.0  # CPU time of this process meanwhile (all threads): the cost on an idle machine
    features_seconds: float = 0.0
    fit_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    report: Path | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidate"] = str(self.candidate)
        d["report"] = str(self.report) if self.report else None
        d["cv"] = self.cv.model_dump(mode="json")
        d["live_cv"] = self.live_cv.model_dump(mode="json") if self.live_cv else None
        return d


@dataclass
class _Labelled:
    paths: list[Path]
    labels: list[str]
    sources: list[str]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def list_labelled(label_dirs: list[Path], labels: list[str]) -> _Labelled:
    """Images of ``<dir>/<class>/`` for each class of ``labels`` in each dir (dot-files/folders skipped)."""
    paths: list[Path] = []
    labs: list[str] = []
    sources: list[str] = []
    for d in label_dirs:
        d = Path(d)
        if not d.is_dir():
            raise RetrainError(f"label folder {d} does not exist or is not a folder")
        found = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        other = [c for c in found if c not in labels]
        if other:
            log.warning("%s: ignoring folder(s) %s: not a class of the model %s", d, other, labels)
        n0 = len(paths)
        for cls in labels:
            folder = d / cls
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
                    paths.append(p)
                    labs.append(cls)
        log.info("labels: %d image(s) in %s", len(paths) - n0, d)
        sources.append(str(d.resolve()))
    return _Labelled(paths, labs, sources)


def image_groups(rel: list[str], hashes: np.ndarray) -> np.ndarray:
    """Near-duplicate clusters joined with the views of one part (training/split.py, TensorFlow-free)."""
    from edge.judge.fusion import part_keys
    from training.split import merge_groups, near_duplicate_groups

    return np.asarray(merge_groups(near_duplicate_groups(hashes).tolist(), part_keys(rel)), dtype=np.int64)


def _candidate_name(parent: str) -> str:
    base = re.sub(r"-head-\d{8}T\d{6}Z$", "", parent)
    return f"{base}-head-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    tmp.replace(dst)


def candidate_path(parent: Path, out_dir: Path, name: str) -> Path:
    """``out_dir/<name>.tflite`` (out_dir made), RetrainError for a bad name or the deployed package itself."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}", name):
        raise RetrainError(f"invalid candidate name {name!r} (letters, digits, . _ -)")
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"{name}.tflite"
    if dst.resolve() == parent.resolve():
        raise RetrainError(f"the candidate would replace the deployed package {parent}; choose another out_dir")
    return dst


def write_candidate(parent: Path, dst: Path, meta: ModelMetadata) -> Classifier:
    """Link the parent's .tflite to ``dst`` (and its learned box finder, when it carries one), write ``meta`` beside
    it, load it and run its self-test (RetrainError)."""
    _link_or_copy(parent, dst)
    if meta.finder is not None:  # the candidate crops as its parent did: the same finder file beside it
        _link_or_copy(parent.with_name(meta.finder.file), dst.with_name(meta.finder.file))
    write_metadata(meta, dst)
    try:
        cand = Classifier.load(dst, num_threads=1)
    except ModelError as e:
        raise RetrainError(f"the written candidate does not load: {e}") from e
    failures = cand.self_test()
    if failures:
        raise RetrainError(f"the written candidate fails its self-test: {failures[0]}")
    return cand


def _metrics_at(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    from training.cv import fold_metrics

    return {k: float(v) for k, v in fold_metrics(y, s, threshold).items()}


@dataclass
class _Extracted:
    """One pass over the labelled images: for each readable one (its index in ``keep``) the features, the
    live model's score and the dHash; the unreadable files; the wall time."""

    feats: list[np.ndarray] = field(default_factory=list)
    live: list[float] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)
    keep: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Fitted:
    """The new head (the fitted scaler + logistic regression, training.linear.fit), its CV metrics at the
    chosen threshold, and the live model's AUC on the same labels."""

    fit: dict[str, Any]
    cv: CVMetrics
    threshold: float
    rule: str
    live_auc: float | None
    seconds: float


def retrain(
    package: Path,
    label_dirs: list[Path],
    out_dir: Path,
    *,
    target_recall: float | None = None,
    cost_ratio: float | None = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    C: float | None = None,  # the regularisation constant's usual name
    name: str | None = None,
    num_threads: int = 1,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> RetrainResult:
    """Fit a new head for ``package`` on the labelled folders and write a head-only candidate package into
    ``out_dir`` (see the module docstring). RetrainError (one sentence) for unusable input; ModelError if the
    package cannot be loaded. ``progress(stage, done, total)`` is called as features are extracted."""
    t0, c0 = time.monotonic(), time.process_time()
    _check_options(target_recall, cost_ratio, min_per_class)
    clf = _load_parent(package, num_threads)
    meta = clf.metadata
    labels = list(meta.labels)
    found = list_labelled(list(label_dirs), labels)
    counts = _enough_labels(found, labels, min_per_class)
    assert meta.features is not None  # _load_parent refused a package without
    log.info("retrain %s on %d labelled images (%s) from %d folder(s); backbone %s", clf.model_id,
             len(found.paths), ", ".join(f"{c} {n}" for c, n in counts.items()), len(found.sources),
             meta.features.backbone_sha256[:12])

    ex = _extract(clf, package, found, num_threads, progress)
    if ex.skipped:
        counts = {c: sum(1 for i in ex.keep if found.labels[i] == c) for c in labels}
        short = {c: k for c, k in counts.items() if k < min_per_class}
        if short:
            raise RetrainError(f"not enough readable labels: {short} (need {min_per_class} per class)")
    x = np.stack(ex.feats).astype(np.float64)
    y = np.array([1 if found.labels[i] == meta.positive_class else 0 for i in ex.keep])
    rel = [f"{found.labels[i]}/{found.paths[i].name}" for i in ex.keep]
    groups = image_groups(rel, np.stack(ex.hashes))
    log.info("groups: %d near-duplicate/part groups for %d images", len(np.unique(groups)), len(y))

    fitted = _fit_head(x, y, groups, counts, ex.live, C=C, seed=seed, target_recall=target_recall,
                       cost_ratio=cost_ratio, progress=progress)
    head = _linear_head(fitted.fit["model"], clf.model_id, counts, found.sources)
    result = _write_candidate(clf, head, fitted.cv, fitted.threshold, fitted.rule, Path(out_dir), name, found, ex.keep)
    result.counts, result.live_auc, result.skipped = counts, fitted.live_auc, ex.skipped
    result.inner_auc = {f"{c:g}": float(a) for c, a in (fitted.fit["inner_auc"] or {}).items()}
    result.features_seconds, result.fit_seconds = round(ex.seconds, 2), round(fitted.seconds, 2)
    result.seconds = round(time.monotonic() - t0, 2)
    result.cpu_seconds = round(time.process_time() - c0, 2)
    result.peak_rss_mb = round(peak_rss_mb(), 1)
    _write_report(result)
    log.info("wrote candidate %s (%s) in %.1f s (features %.1f s for %d images, fit %.1f s), peak memory %.0f MiB",
             result.candidate, result.model_id, result.seconds, ex.seconds, len(y), fitted.seconds,
             result.peak_rss_mb)
    return result


def _check_options(target_recall: float | None, cost_ratio: float | None, min_per_class: int) -> None:
    if target_recall is not None and cost_ratio is not None:
        raise RetrainError("give a target recall or a cost ratio, not both")
    if target_recall is not None and not 0 < target_recall <= 1:
        raise RetrainError(f"target recall must be in (0, 1], got {target_recall}")
    if cost_ratio is not None and not cost_ratio > 0:
        raise RetrainError(f"cost ratio must be > 0, got {cost_ratio}")
    if min_per_class < 2:
        raise RetrainError(f"min_per_class must be at least 2, got {min_per_class}")


def _load_parent(package: Path, num_threads: int) -> Classifier:
    """The deployed package; RetrainError when it has no features output to fit a head on."""
    clf = Classifier.load(package, num_threads=num_threads)
    if clf.metadata.features is None:
        raise RetrainError(f"{package} has no features output (converted before on-device retraining): "
                           "re-run boxinspect convert with this version, then deploy that package")
    return clf


def _enough_labels(found: _Labelled, labels: list[str], min_per_class: int) -> dict[str, int]:
    """Images per class; RetrainError (saying what to do) when a class has fewer than ``min_per_class``."""
    counts = {c: found.labels.count(c) for c in labels}
    short = {c: n for c, n in counts.items() if n < min_per_class}
    if short:
        raise RetrainError(
            "not enough labels to retrain: " + ", ".join(f"{c} has {n}" for c, n in short.items())
            + f" (need at least {min_per_class} per class; label more boxes on the operator page, or lower "
            "--min-per-class at the price of a noisier estimate)")
    return counts


def _extract(clf: Classifier, package: Path, found: _Labelled, num_threads: int,
             progress: Callable[[str, int, int], None] | None) -> _Extracted:
    """Features, live scores and hashes: one decode, one invoke per image, with a progress line every
    PROGRESS_EVERY images; unreadable images are skipped (and listed)."""
    from training.data import read_bgr, resize
    from training.split import image_hashes

    t1 = time.monotonic()
    ex = _Extracted()
    n = len(found.paths)

    def one(p: Path) -> tuple[float, np.ndarray, np.ndarray] | None:
        """Decode, the daemon's crop (most of the cost: the box search; none for a kept feedback crop, which is
        the model's crop already), one invoke, the dHash."""
        bgr = read_bgr(p)
        if bgr is None:
            return None
        s, f = clf.score_features(bgr, already_cropped(bgr) if is_kept_crop(p) else None)
        if f is None or not np.all(np.isfinite(f)):
            raise ModelError(f"{package}: no finite features for {p}")
        return s, f, image_hashes(resize(bgr[:, :, ::-1], HASH_SIZE))

    # the decode and the crop run in ``num_threads`` threads (OpenCV and numpy release the GIL); the invokes
    # are serialised by the interpreter's lock
    with ThreadPoolExecutor(max_workers=max(1, num_threads), thread_name_prefix="retrain") as pool:
        for i, got in enumerate(pool.map(one, found.paths)):
            if got is None:
                log.warning("skipping unreadable image %s", found.paths[i])
                ex.skipped.append(str(found.paths[i]))
            else:
                ex.live.append(got[0])
                ex.feats.append(got[1])
                ex.hashes.append(got[2])
                ex.keep.append(i)
            done = i + 1
            if done % PROGRESS_EVERY == 0 or done == n:
                el = time.monotonic() - t1
                log.info("features %d/%d (%.0f s, ~%.0f s left)", done, n, el, el / done * (n - done))
                if progress is not None:
                    progress("features", done, n)
    ex.seconds = time.monotonic() - t1
    return ex


def _fit_head(x: np.ndarray, y: np.ndarray, groups: np.ndarray, counts: dict[str, int], live: list[float], *,
              C: float | None, seed: int, target_recall: float | None, cost_ratio: float | None,
              progress: Callable[[str, int, int], None] | None) -> _Fitted:
    """The head with C by grouped CV, the threshold by the rule on the out-of-fold scores, the CV metrics there."""
    from sklearn.metrics import roc_auc_score

    from training import linear, operating

    t2 = time.monotonic()
    if progress is not None:
        progress("fit", 0, 1)
    try:
        fit = linear.fit(x, y, groups, c=C, seed=seed)
    except ValueError as e:
        raise RetrainError(f"cannot cross-validate: {e} (label more distinct boxes)") from e
    if fit["inner_auc"]:
        log.info("C by grouped %d-fold CV: %s -> C = %g", linear.INNER_FOLDS,
                 ", ".join(f"{c:g}: {a:.3f}" for c, a in fit["inner_auc"].items()), fit["C"])
    oof = np.asarray(fit["oof"], np.float64)
    op = operating.choose(y, oof, target_recall, cost_ratio)
    thr = float(op["threshold"])
    m = _metrics_at(y, oof, thr)
    t_fit = time.monotonic() - t2
    k_folds = len(linear.inner_splits(y, groups, seed=seed))
    cv = CVMetrics(
        n=int(len(y)), counts=counts, folds=k_folds, groups=len(np.unique(groups)), auc=float(m["roc_auc"]),
        macro_f1=float(m["macro_f1"]), recall=float(m["recall"]), specificity=float(m["specificity"]),
        threshold=thr, rule=str(op["rule"]), C=float(fit["C"]),
        note=f"out-of-fold scores of the grouped {k_folds}-fold CV that chose C (on-device retrain)",
    )
    live_auc = float(roc_auc_score(y, np.asarray(live))) if len(set(y.tolist())) == 2 else None
    log.info("candidate head: CV AUC %.3f (live model on the same labels: %s); threshold %.3f (%s): %s",
             cv.auc, f"{live_auc:.3f}" if live_auc is not None else "n/a", thr, op["rule"],
             operating.sentence(operating.tradeoff_row(y, oof, thr)))
    return _Fitted(fit, cv, thr, str(op["rule"]), live_auc, t_fit)


def _linear_head(model: Any, parent_model_id: str, counts: dict[str, int], sources: list[str]) -> LinearHead:
    """The sidecar's ``head`` from the fitted pipeline (its scaler first, its logistic regression last)."""
    scaler, lr = model[0], model[-1]
    return LinearHead(
        mean=[float(v) for v in scaler.mean_], scale=[float(v) for v in scaler.scale_],
        weights=[float(v) for v in lr.coef_.ravel()], bias=float(lr.intercept_[0]),
        parent_model_id=parent_model_id, trained_at=utc_now(), trained_on=counts, sources=sources,
    )


def _write_report(result: RetrainResult) -> None:
    """``<name>.retrain.json`` beside the candidate (its path recorded in ``result.report``)."""
    report = result.candidate.with_name(result.candidate.name[: -len(".tflite")] + ".retrain.json")
    result.report = report
    report.write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")


def _write_candidate(clf: Classifier, head: LinearHead, cv: CVMetrics, thr: float, rule: str, out_dir: Path,
                     name: str | None, found: _Labelled, keep: list[int]) -> RetrainResult:
    meta = clf.metadata
    name = name or _candidate_name(meta.name)
    dst = candidate_path(clf.path, out_dir, name)
    # golden samples: the parent's images, re-scored through the new head with the parent's interpreter (its
    # features as the parent computes them: also an anomaly package's, whose .tflite has no score output)
    folded = head.folded()
    golden = []
    for g in meta.golden:
        _, f = clf.score_features_rgb(decode_golden(g.png_b64))
        assert f is not None
        z = float(np.dot(f.astype(np.float64), folded[0]) + folded[1])
        golden.append(GoldenSample(name=g.name, label=g.label, png_b64=g.png_b64,
                                   expected_score=1.0 / (1.0 + float(np.exp(-min(max(z, -500.0), 500.0))))))
    by_source: dict[str, dict[str, int]] = {}
    for i in keep:
        src = str(found.paths[i].parent.parent.resolve())
        by_source.setdefault(src, {}).setdefault(found.labels[i], 0)
        by_source[src][found.labels[i]] += 1
    versions = installed_versions("boxinspect", "numpy", "scikit-learn", "ai-edge-litert", "opencv-python-headless")
    new = ModelMetadata.model_validate({
        **meta.model_dump(mode="json", exclude={"package_sha256", "head", "golden", "metrics", "cv_metrics", "anomaly"}),
        "name": name,
        "threshold": thr,
        "threshold_source": f"retrain: {rule} on the out-of-fold scores of the grouped CV",
        "metrics": None,
        "training_data": TrainingDataSummary(data_dir=None, counts=by_source, representative_count=0),
        "source": {"parent_model_id": clf.model_id, "parent_path": str(clf.path.resolve()),
                   "built_by": "boxinspect retrain (edge/learn/retrain.py)"},
        "created_at": utc_now(),
        "tool_version": versions.get("boxinspect", "unknown"),
        "versions": versions,
        "golden": [g.model_dump() for g in golden],
        "head": head.model_dump(),
        "cv_metrics": cv.model_dump(),
    })
    cand = write_candidate(clf.path, dst, new)
    assert sidecar_path(dst).is_file()
    return RetrainResult(
        candidate=dst, model_id=cand.model_id, parent_model_id=clf.model_id,
        backbone_sha256=str(cand.backbone_sha256), threshold=thr, cv=cv, counts={}, live_auc=None,
        live_cv=meta.cv_metrics,
    )
