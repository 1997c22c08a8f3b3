"""Leakage-safe train/val/test split: near-duplicate clusters never straddle two splits.

Near-duplicates are found with a difference hash (dHash, 64 bits) computed on all eight dihedral
transforms (four rotations by 90 degrees, each mirrored), so a flipped or rotated copy of a photo hashes
close to the original. Two images whose smallest Hamming distance is <= ``threshold`` are linked, and
linked images form one group (connected components). The views of one part (files ``<part>_<view>.<ext>``, see
edge/judge/fusion.py) are linked too, so a part never has a view in train and another in test. Groups are then
split with scikit-learn's ``StratifiedGroupKFold``: stratified by class, grouped by cluster. The result is written as a manifest
(``split.json``) that can be reused to reproduce a run.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge.judge.fusion import part_keys

if TYPE_CHECKING:
    from edge.judge.localize import CropSpec
    from training.data import Loaded

log = logging.getLogger(__name__)

MAX_VIEWS = 8  # a "part" with more files than this is not a part (part_ids)
_VIEW_RE = re.compile(r"^(?P<part>.+)_(?P<view>[^_]+)$")

SPLITS = ("train", "val", "test")
DEFAULT_DUP_THRESHOLD = 6
MANIFEST_VERSION = 1


class SplitError(ValueError):
    """The data cannot be split as asked (one readable sentence)."""


def dihedral(img: np.ndarray) -> list[np.ndarray]:
    """The eight rotations/reflections of a square image."""
    out = []
    for k in range(4):
        r = np.rot90(img, k)
        out.append(r)
        out.append(np.fliplr(r))
    return out


def _dhash(gray32: np.ndarray) -> np.ndarray:
    small = cv2.resize(gray32, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = small[:, 1:] > small[:, :-1]
    return np.packbits(bits.reshape(-1)).view(">u8")[0]


def image_hashes(rgb: np.ndarray) -> np.ndarray:
    """Eight 64-bit dHashes of an RGB (or grey) image, one per dihedral transform (index 0 = as is)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    gray32 = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)
    return np.array([_dhash(np.ascontiguousarray(t)) for t in dihedral(gray32)], dtype=np.uint64)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of an unsigned-integer array: ``np.bitwise_count`` (numpy 2) for any numpy the
    edge install allows (its floor is 1.24; ``boxinspect dataset export`` runs on the edge)."""
    x = np.ascontiguousarray(x)
    as_bytes = x.view(np.uint8).reshape(*x.shape, x.dtype.itemsize)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.int16)


def hamming_matrix(hashes: np.ndarray) -> np.ndarray:
    """Pairwise transform-invariant distance: min over transforms of the Hamming distance (N x N, int)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    ident = hashes[:, 0]
    dist = np.empty((n, n), dtype=np.int16)
    chunk = 256
    for s in range(0, n, chunk):
        a = ident[s:s + chunk, None, None]  # (c, 1, 1)
        d = popcount(a ^ hashes[None, :, :]).min(axis=2)  # (c, n)
        dist[s:s + chunk] = d
    return np.minimum(dist, dist.T)


def near_duplicate_groups(hashes: np.ndarray, threshold: int = DEFAULT_DUP_THRESHOLD) -> np.ndarray:
    """Cluster ids (0..G-1, in order of first appearance): connected components of pairs within ``threshold``."""
    n = len(hashes)
    if threshold < 0 or n < 2:
        return np.arange(n, dtype=np.int64)
    ii, jj = np.nonzero(np.triu(hamming_matrix(hashes) <= threshold, k=1))
    return connected_groups(n, ii, jj)


def crop_hashes(paths: list[Path], labels: list[str], crop: CropSpec | None = None,
                finder: str | None = None) -> tuple[Loaded, np.ndarray]:
    """The readable images (small, cropped as the model will see them: ``crop`` with the ``finder``'s box first)
    and their transform-invariant dHashes. Near-duplicates are judged on what the model sees: on a fixed camera every
    whole frame is mostly the same belt, and frame hashes linked different boxes into a few big groups (synth belt
    scenes: 100 parts in 46-71 groups, one of 90 photos; with crops: one group per part), while the crops of
    web photos keep their true duplicates (``train`` has always hashed its crops)."""
    from training.data import HASH_SIZE, load_images

    loaded = load_images(paths, labels, HASH_SIZE, crop, finder)
    hashes = np.stack([image_hashes(px) for px in loaded.pixels]) if len(loaded.pixels) else np.zeros((0, 8), np.uint64)
    return loaded, hashes


def merge_groups(*labelings: list) -> np.ndarray:
    """Connected components of items linked by equal labels in any of the labelings (0..G-1, in order of
    first appearance); e.g. near-duplicate clusters joined by part id, so the views of a part stay together."""
    n = len(labelings[0])
    ii: list[int] = []
    jj: list[int] = []
    for lab in labelings:
        first: dict = {}
        for i, v in enumerate(lab):
            ii.append(i)
            jj.append(first.setdefault(v, i))
    return connected_groups(n, np.asarray(ii, dtype=np.int64), np.asarray(jj, dtype=np.int64))


def connected_groups(n: int, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    """Group ids 0..G-1, numbered in order of first appearance, of ``n`` items linked by the pairs
    ``(ii[k], jj[k])`` (SciPy's connected components of the undirected graph)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(ii), dtype=np.int8), (ii, jj)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def part_ids(rel_paths: list[str]) -> list[str]:
    """Part id per file: ``<part>`` of ``<class>/<part>_<view>.<ext>``, else the file's own path.

    A view token is not all digits (``ok_00012.jpg`` is one image, not view 00012 of part ``ok``), and a
    "part" with more than MAX_VIEWS files is not a part: its files count as single images.
    """
    raw = []
    for r in rel_paths:
        stem = Path(r).stem
        m = _VIEW_RE.match(stem)
        raw.append(m.group("part") if m and not m.group("view").isdigit() else None)
    n = Counter(p for p in raw if p is not None)
    return [p if p is not None and n[p] <= MAX_VIEWS else r for p, r in zip(raw, rel_paths, strict=True)]


def first_fold(labels: np.ndarray, groups: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Boolean mask of one StratifiedGroupKFold fold holding about ``frac`` (never less) of the items."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = max(2, int(np.floor(1.0 / frac + 1e-9)))
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise SplitError(
            f"only {n_groups} near-duplicate group(s) for a {frac:.0%} split; add images or "
            f"lower --dup-threshold"
        )
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    _, fold = next(sgkf.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), bool)
    mask[fold] = True
    return mask


def assign_splits(
    labels: list[str], groups: np.ndarray, val_frac: float = 0.15, test_frac: float = 0.2, seed: int = 0
) -> list[str]:
    """Split names per item: stratified by label, whole groups only.

    Fractions are met from above in steps of 1/k (k folds): test 0.2 -> 1 of 5 folds, 0.15 -> 1 of 6.
    """
    if not (0 < test_frac < 0.5 and 0 < val_frac < 0.5):
        raise SplitError(f"val and test fractions must be in (0, 0.5); got val={val_frac} test={test_frac}")
    labels_a = np.asarray(labels)
    groups = np.asarray(groups)
    split = np.array(["train"] * len(labels_a), dtype=object)
    test = first_fold(labels_a, groups, test_frac, seed)
    split[test] = "test"
    rest = np.nonzero(~test)[0]
    rel_val = val_frac / (1.0 - test.mean())
    val_rest = first_fold(labels_a[rest], groups[rest], rel_val, seed + 1)
    split[rest[val_rest]] = "val"
    return split.tolist()


@dataclass
class Split:
    """A split manifest: one entry per image, with its cluster and split."""

    items: list[dict]
    classes: list[str]
    positive_class: str
    info: dict

    def select(self, name: str) -> list[dict]:
        return [it for it in self.items if it["split"] == name]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for s in SPLITS:
            c = Counter(it["label"] for it in self.items if it["split"] == s)
            out[s] = {k: c.get(k, 0) for k in self.classes}
        return out

    def to_json(self) -> dict:
        return {
            "version": MANIFEST_VERSION,
            "classes": self.classes,
            "positive_class": self.positive_class,
            **self.info,
            "counts": self.counts(),
            "items": self.items,
        }

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))


def make_split(
    rel_paths: list[str],
    labels: list[str],
    hashes: np.ndarray,
    classes: list[str],
    positive_class: str,
    val_frac: float = 0.15,
    test_frac: float = 0.2,
    seed: int = 0,
    dup_threshold: int = DEFAULT_DUP_THRESHOLD,
) -> Split:
    """Cluster near-duplicates and the views of one part (``<part>_<view>.<ext>``, edge/judge/fusion.py), and split
    whole clusters; also logs the clusters found."""
    groups = near_duplicate_groups(hashes, dup_threshold)
    keys = part_keys(rel_paths)
    n_multi = sum(1 for k in keys if k.startswith("part:"))
    if n_multi:
        groups = merge_groups(groups.tolist(), keys)
        log.info("multi-view: %d images are views of %d parts; a part's views stay in one split", n_multi,
                 len({k for k in keys if k.startswith("part:")}))
    sizes = Counter(groups.tolist())
    multi = [g for g, n in sizes.items() if n > 1]
    log.info(
        "near-duplicates: %d images in %d groups (%d groups with copies, largest %d; dHash x8 dihedral, "
        "Hamming <= %d)",
        len(groups), len(sizes), len(multi), max(sizes.values()) if sizes else 0, dup_threshold,
    )
    if sizes and max(sizes.values()) > 0.2 * len(groups):
        log.warning(
            "one near-duplicate group holds %d of %d images; images may be too uniform for dHash "
            "(try a lower --dup-threshold)", max(sizes.values()), len(groups),
        )
    splits = assign_splits(labels, groups, val_frac, test_frac, seed)
    items = [
        {"path": p, "label": lab, "group": int(g), "split": s}
        for p, lab, g, s in zip(rel_paths, labels, groups.tolist(), splits, strict=True)
    ]
    info = {
        "method": "StratifiedGroupKFold over dHash near-duplicate clusters (8 dihedral transforms), "
                  "joined with the views of one part",
        "multi_view_images": n_multi,
        "dup_threshold": dup_threshold,
        "val_frac": val_frac,
        "test_frac": test_frac,
        "seed": seed,
        "n_groups": len(sizes),
        "n_groups_with_copies": len(multi),
    }
    return Split(items, list(classes), positive_class, info)


def load_split(path: Path) -> Split:
    """Read a split manifest written by :meth:`Split.save`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SplitError(f"cannot read split manifest {path}: {e}") from e
    try:
        items = doc["items"]
        classes = doc["classes"]
        positive = doc["positive_class"]
        bad = {it["split"] for it in items} - set(SPLITS)
    except (KeyError, TypeError) as e:
        raise SplitError(f"split manifest {path} lacks {e}; expected items/classes/positive_class") from e
    if bad:
        raise SplitError(f"split manifest {path} has unknown split name(s) {sorted(bad)}")
    info = {k: v for k, v in doc.items() if k not in ("items", "classes", "positive_class", "counts", "version")}
    return Split(items, classes, positive, info)


def leaks(split: Split) -> list[int]:
    """Groups present in more than one split (empty list = no leakage)."""
    seen: dict[int, set[str]] = {}
    for it in split.items:
        seen.setdefault(it["group"], set()).add(it["split"])
    return sorted(g for g, s in seen.items() if len(s) > 1)
