"""Anomaly scoring from good parts only (issue 29): patch features -> memory bank or per-location Gaussian.

The model package of the ``anomaly`` recipe (``boxinspect train --recipe anomaly``) is a .tflite whose outputs
are the backbone's pooled features (as every package's) and a *patch map*: mid-level MobileNetV2 features,
one vector per cell of a coarse grid over the crop (``training/anomaly.py`` builds it). Scoring happens here,
in numpy, no TensorFlow:

* ``patchcore`` (the default, chosen by CV in docs/RESULTS.md): a memory bank of patch vectors of good parts,
  reduced by greedy coreset sampling (k-centre). A cell's distance is the L2 distance of its vector to the
  nearest bank vector; the crop's distance is the largest cell distance. The cell distances are the heatmap.
* ``padim``: a Gaussian per grid cell (mean and inverse covariance of a fixed channel subset); a cell's
  distance is its Mahalanobis distance.

The decision threshold is a distance, set from good parts only at a target false-reject rate (``frr_threshold``).
The package's score is ``d / (d + d_thr)``: 0 for a perfect match, 0.5 exactly at the threshold distance and
towards 1 far above it, so the package threshold is 0.5, the daemon's threshold rule (defect iff score >=
threshold) and its override work unchanged, and a higher score is more defect-like, as for every package.

The bank (``<package>.bank.npz``) lives beside the .tflite; the sidecar's ``anomaly`` block names it with its
sha256, so the package hash (edge/judge/model_package.py) covers the bank and the scoring rule. A package trained
with one bank per view (``AnomalyScorer.views``) holds them in the same file next to the pooled bank, each with its
own threshold distance (the sidecar's ``anomaly.views``); a crop is scored by its view's bank, and a crop of no view
or of a view the package has no bank for by the pooled bank (a fallback, not a refusal: predict of a single photo,
a renamed camera and the golden samples keep working; the daemon says at load which sources fall back).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

METHODS = ("patchcore", "padim")
DEFAULT_TARGET_FRR = 0.001
_BANK_CHUNK = 8192  # bank rows per distance block: bounds the (cells x chunk) temporary


# ---------------------------------------------------------------- fitting (numpy; used by training and retrain)


def greedy_coreset(x: np.ndarray, n: int, proj_dim: int = 64, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-centre (PatchCore's coreset): each next row is the one
    farthest from those chosen so far. Distances on a random Gaussian projection to ``proj_dim`` dimensions
    (Johnson-Lindenstrauss), as PatchCore does, so the cost is O(len(x) * n * proj_dim)."""
    m = len(x)
    if n >= m:
        return np.arange(m)
    rng = np.random.default_rng(seed)
    xf = np.asarray(x, np.float32)
    if xf.shape[1] > proj_dim:
        proj = rng.standard_normal((xf.shape[1], proj_dim)).astype(np.float32) / np.float32(math.sqrt(proj_dim))
        xf = xf @ proj
    sq = np.einsum("ij,ij->i", xf, xf)
    chosen = np.empty(n, np.int64)
    chosen[0] = int(rng.integers(m))
    c = xf[chosen[0]]
    mind = sq - 2.0 * (xf @ c) + float(c @ c)
    for k in range(1, n):
        i = int(np.argmax(mind))
        chosen[k] = i
        c = xf[i]
        np.minimum(mind, sq - 2.0 * (xf @ c) + float(c @ c), out=mind)
    return chosen


def min_distances(q: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray | None = None,
                  exclude: np.ndarray | None = None) -> np.ndarray:
    """L2 distance of every row of ``q`` (M, D) to its nearest row of ``bank`` (N, D), in blocks of the bank.
    ``exclude`` (N,) bool: bank rows that may not be the neighbour (leave-one-group-out scoring)."""
    q = np.asarray(q, np.float32)
    qsq = np.einsum("ij,ij->i", q, q)
    best = np.full(len(q), np.inf, np.float32)
    if bank_sq is None:
        bank_sq = np.einsum("ij,ij->i", bank, bank)
    for s in range(0, len(bank), _BANK_CHUNK):
        b = bank[s:s + _BANK_CHUNK]
        d2 = bank_sq[s:s + _BANK_CHUNK][None, :] - 2.0 * (q @ b.T)
        if exclude is not None:
            d2[:, exclude[s:s + _BANK_CHUNK]] = np.inf
        np.minimum(best, d2.min(axis=1), out=best)
    out: np.ndarray = np.sqrt(np.maximum(best + qsq, 0.0))
    return out


@dataclass
class PatchCore:
    """A coreset memory bank of good patch vectors. ``source`` (N,) = the group each bank row came from."""

    bank: np.ndarray  # (N, D) float32
    source: np.ndarray  # (N,) int64 group id of the image the row came from (-1: unknown)
    index: np.ndarray | None = None  # (N,) row of the fitted flat patch array each bank row is (fit only)

    @classmethod
    def fit(cls, patches: np.ndarray, groups: np.ndarray, ratio: float = 0.1, max_size: int = 10000,
            min_size: int = 1000, seed: int = 0) -> PatchCore:
        """``patches`` (M, H, W, D) of M good images, ``groups`` (M,): the bank is a greedy coreset of all M*H*W
        patch vectors, ``ratio`` of them clipped to [min_size, max_size]."""
        m, h, w, d = patches.shape
        flat = patches.reshape(-1, d).astype(np.float32)
        n = int(min(len(flat), max(min_size, min(max_size, round(ratio * len(flat))))))
        idx = greedy_coreset(flat, n, seed=seed)
        src = np.repeat(np.asarray(groups, np.int64), h * w)[idx]
        return cls(np.ascontiguousarray(flat[idx]), src, idx)

    def cell_distances(self, patches: np.ndarray, exclude_group: int | None = None) -> np.ndarray:
        """(H, W) nearest-bank distances of one image's patch map (H, W, D)."""
        h, w, d = patches.shape
        ex = (self.source == exclude_group) if exclude_group is not None else None
        return min_distances(patches.reshape(-1, d), self.bank, exclude=ex).reshape(h, w)


@dataclass
class Padim:
    """A Gaussian per grid cell over ``channels`` (a fixed subset of the patch channels)."""

    channels: np.ndarray  # (K,) int64
    mean: np.ndarray  # (H*W, K) float32
    inv_cov: np.ndarray  # (H*W, K, K) float32

    @classmethod
    def fit(cls, patches: np.ndarray, n_channels: int = 64, eps: float = 0.01, seed: int = 0) -> Padim:
        m, h, w, d = patches.shape
        rng = np.random.default_rng(seed)
        ch = np.sort(rng.choice(d, size=min(n_channels, d), replace=False))
        x = patches.reshape(m, h * w, d)[:, :, ch].astype(np.float64)  # (M, L, K)
        mean = x.mean(axis=0)
        xc = x - mean[None]
        cov = np.einsum("mlk,mlj->lkj", xc, xc) / max(1, m - 1)
        k = len(ch)
        cov += eps * np.eye(k)[None] * np.maximum(np.trace(cov, axis1=1, axis2=2) / k, 1e-6)[:, None, None]
        return cls(ch, mean.astype(np.float32), np.linalg.inv(cov).astype(np.float32))

    def cell_distances(self, patches: np.ndarray) -> np.ndarray:
        h, w, _ = patches.shape
        x = patches.reshape(h * w, -1)[:, self.channels] - self.mean
        d2 = np.einsum("lk,lkj,lj->l", x, self.inv_cov, x)
        out: np.ndarray = np.sqrt(np.maximum(d2, 0.0)).reshape(h, w)
        return out


# ---------------------------------------------------------------- threshold from good parts only


def _lognormal_threshold(d: np.ndarray, target_frr: float) -> tuple[float, float, float]:
    logd = np.log(np.maximum(d, 1e-9))
    mu, sd = float(np.mean(logd)), float(np.std(logd, ddof=1)) if len(d) > 1 else 0.0
    return float(math.exp(mu + NormalDist().inv_cdf(1.0 - target_frr) * sd)), mu, sd


def _floor(d: np.ndarray, target_frr: float) -> float:
    """The empirical (1 - target) quantile of good distances; their max when there are too few to show it."""
    return float(np.quantile(d, 1.0 - target_frr)) if len(d) * target_frr >= 1 else float(d.max())


def frr_threshold(d_good: np.ndarray, groups: np.ndarray | None = None, target_frr: float = DEFAULT_TARGET_FRR,
                  n_boot: int = 300, seed: int = 0) -> dict[str, Any]:
    """The distance threshold with a false-reject rate of ``target_frr`` on good parts, from held-out distances
    of good parts only (``d_good``: each scored by a bank that did not hold its own group).

    A rate of 1 in 1,000 is beyond what a few hundred good crops can show directly, so the tail is modelled: the
    log-distances of good parts are fitted with a normal distribution and the threshold is its (1 - target)
    quantile, never below the empirical one (the largest good distance seen when there are fewer than 1/target). The 95% interval of the threshold comes from a
    bootstrap over groups (views of one part, near-duplicates resampled together), and with it the false-reject
    rate the chosen threshold would have under each bootstrap fit (its 95% interval). ``empirical_frr`` is the
    share of the given good distances at or above the threshold, with its Wilson interval.
    """
    from training.operating import wilson

    d = np.asarray(d_good, np.float64)
    g = np.arange(len(d)) if groups is None else np.asarray(groups)
    fin = np.isfinite(d)
    d, g = d[fin], g[fin]
    if len(d) < 5:
        raise ValueError(f"need at least 5 good crops to set a threshold, got {len(d)}")
    thr, mu, sd = _lognormal_threshold(d, target_frr)
    thr = max(thr, _floor(d, target_frr))
    rng = np.random.default_rng(seed)
    ug = np.unique(g)
    members = [np.nonzero(g == u)[0] for u in ug]
    boots, frrs = [], []
    for _ in range(n_boot):
        pick = np.concatenate([members[i] for i in rng.integers(len(ug), size=len(ug))])
        t, m, s = _lognormal_threshold(d[pick], target_frr)
        boots.append(max(t, _floor(d[pick], target_frr)))
        frrs.append(1.0 - NormalDist().cdf((math.log(thr) - m) / s) if s > 0 else 0.0)
    k = int(np.sum(d >= thr))
    return {
        "distance": thr, "target_frr": target_frr, "n_good": int(len(d)), "n_groups": int(len(ug)),
        "rule": f"lognormal tail of {len(d)} held-out good distances at FRR {target_frr:g} (at least their "
                f"empirical {1 - target_frr:g} quantile, or their max when there are fewer than 1/FRR)",
        "log_mean": mu, "log_sd": sd,
        "distance_ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "frr_ci95": [float(np.percentile(frrs, 2.5)), float(np.percentile(frrs, 97.5))],
        "empirical_frr": k / len(d), "empirical_frr_ci95": list(wilson(k, len(d))),
    }


def normalise(distance: float | np.ndarray, threshold_distance: float) -> Any:
    """The package score of a distance: ``d / (d + d_thr)``, 0.5 at the threshold distance."""
    d = np.maximum(np.asarray(distance, np.float64), 0.0)
    s = d / (d + float(threshold_distance))
    return float(s) if np.ndim(s) == 0 else s


# ---------------------------------------------------------------- the scorer a package carries


@dataclass
class AnomalyScorer:
    """The scoring rule of an anomaly package: a fitted bank (or Gaussians) and the threshold distance."""

    method: str
    threshold_distance: float
    patchcore: PatchCore | None = None
    padim: Padim | None = None
    border: int = 0  # rings of grid cells along the crop's edge left out of its distance (still in the map)
    # one bank per view name (``<part>_<view>.jpg`` in training, the source's ``view`` on the line): each a scorer
    # of its own, with its own threshold from that view's held-out good crops. This scorer's own bank (all views
    # pooled) scores a crop of no view or of a view the package has no bank for (``for_view``).
    views: dict[str, AnomalyScorer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.border < 0:
            raise ValueError(f"border must be >= 0, got {self.border}")
        if any(v.views for v in self.views.values()):
            raise ValueError("a per-view scorer cannot hold views of its own")
        self._bank_sq = (np.einsum("ij,ij->i", self.patchcore.bank, self.patchcore.bank)
                         if self.patchcore is not None else None)

    def for_view(self, view: str | None) -> AnomalyScorer:
        """The scorer of a crop seen by ``view``: that view's bank when the package has one, else the pooled bank
        (a crop of no view, or of a view unknown to the package: a fallback, never a refusal)."""
        return self.views.get(view, self) if view is not None else self

    def cell_distances(self, patches: np.ndarray) -> np.ndarray:
        """(H, W) distances of one patch map (H, W, D) (float32)."""
        p = np.asarray(patches, np.float32)
        if self.patchcore is not None:
            h, w, d = p.shape
            return min_distances(p.reshape(-1, d), self.patchcore.bank, self._bank_sq).reshape(h, w)
        assert self.padim is not None
        return self.padim.cell_distances(p)

    def crop_distance(self, cells: np.ndarray) -> float:
        """The crop's distance: its largest cell distance inside ``border`` rings of edge cells (with the recipe's
        upright, tight crop the edge cells are the box's outline and the belt beyond it, which vary between good
        parts more than anything on the box; docs/RESULTS.md, "Good parts only")."""
        b = min(self.border, (min(cells.shape) - 1) // 2)
        return float((cells[b:cells.shape[0] - b, b:cells.shape[1] - b] if b else cells).max())

    def score_map(self, patches: np.ndarray, view: str | None = None) -> tuple[float, np.ndarray]:
        """(package score in [0, 1), cell distances (H, W)) of one patch map, seen by ``view`` (``for_view``)."""
        sc = self.for_view(view)
        cells = sc.cell_distances(patches)
        return normalise(sc.crop_distance(cells), sc.threshold_distance), cells

    @property
    def bank_bytes(self) -> int:
        """Memory of the bank(s): the pooled one and every view's."""
        own = (int(self.patchcore.bank.nbytes + (self._bank_sq.nbytes if self._bank_sq is not None else 0))
               if self.patchcore is not None else
               int(self.padim.mean.nbytes + self.padim.inv_cov.nbytes) if self.padim is not None else 0)
        return own + sum(v.bank_bytes for v in self.views.values())

    @property
    def bank_rows(self) -> int:
        """Patch vectors in the pooled bank (each view's: ``views[v].bank_rows``)."""
        return int(len(self.patchcore.bank)) if self.patchcore is not None else 0

    @property
    def view_thresholds(self) -> dict[str, float]:
        """{view: its threshold distance}: what the sidecar's ``anomaly.views`` records ({} for one bank)."""
        return {v: float(sc.threshold_distance) for v, sc in sorted(self.views.items())}

    # -------------------------------------------------------- file (npz, no pickle)
    def _arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"threshold_distance": np.array(self.threshold_distance, np.float64),
                                         "method": np.array(self.method), "border": np.array(self.border, np.int64)}
        if self.patchcore is not None:
            arrays.update(bank=self.patchcore.bank.astype(np.float32), source=self.patchcore.source)
        if self.padim is not None:
            arrays.update(channels=self.padim.channels, mean=self.padim.mean, inv_cov=self.padim.inv_cov)
        return {prefix + k: v for k, v in arrays.items()}

    def to_bytes(self) -> bytes:
        """The bank file: the pooled scorer's arrays, and per view ``view.<name>.<array>`` with ``views`` naming them."""
        buf = io.BytesIO()
        arrays = self._arrays()
        if self.views:
            arrays["views"] = np.array(sorted(self.views))
            for v, sc in self.views.items():
                arrays.update(sc._arrays(f"view.{v}."))
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def _of_arrays(cls, z: Any, prefix: str = "") -> AnomalyScorer:
        method = str(z[prefix + "method"])
        thr = float(z[prefix + "threshold_distance"])
        border = int(z[prefix + "border"]) if prefix + "border" in z.files else 0  # banks before the border rule
        if method == "patchcore":
            return cls(method, thr, patchcore=PatchCore(np.ascontiguousarray(z[prefix + "bank"], np.float32),
                                                        np.asarray(z[prefix + "source"], np.int64)), border=border)
        if method == "padim":
            return cls(method, thr, padim=Padim(z[prefix + "channels"], z[prefix + "mean"], z[prefix + "inv_cov"]),
                       border=border)
        raise ValueError(f"unknown anomaly method {method!r} (known: {', '.join(METHODS)})")

    @classmethod
    def from_file(cls, path: str | Path) -> AnomalyScorer:
        """Read a bank file (one bank, or a pooled bank and one per view); ValueError (one line) when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                scorer = cls._of_arrays(z)
                views = [str(v) for v in z["views"]] if "views" in z.files else []  # banks before per-view: none
                scorer.views = {v: cls._of_arrays(z, f"view.{v}.") for v in views}
                return scorer
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not an anomaly bank ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------- the heatmap an event carries


def heat_grid(cells: np.ndarray, threshold_distance: float, border: int = 0) -> dict[str, Any]:
    """The coarse anomaly map of one decision, for its event: cell distances in percent of the threshold
    distance (100 = at the threshold; the crop is a defect when any cell inside the scorer's ``border`` reaches
    100), row-major. ``max`` is the largest value the decision counts (inside ``border`` rings of edge cells;
    every cell when 0); ``border`` is given when not 0."""
    h, w = cells.shape
    pct = np.clip(np.rint(100.0 * np.asarray(cells, np.float64) / float(threshold_distance)), 0, 999).astype(int)
    b = min(border, (min(h, w) - 1) // 2)
    out: dict[str, Any] = {"rows": int(h), "cols": int(w), "unit": "percent of the threshold distance",
                           "values": pct.ravel().tolist(), "max": int(pct[b:h - b, b:w - b].max())}
    if b:
        out["border"] = int(b)
    return out


def load_package_scorer(model_path: str | Path, spec: Any, verify_hash: bool = True) -> AnomalyScorer:
    """The scorer of an anomaly package: the bank file named by the sidecar's ``anomaly`` block (an
    ``edge.judge.model_package.AnomalySpec``), beside the .tflite, checked against its sha256 and threshold. ValueError
    (one line) when it is missing, altered or not the bank the sidecar describes."""
    from edge.judge.model_package import companion_file

    path = companion_file(model_path, spec.bank_file, spec.bank_sha256, "anomaly bank", verify_hash)  # PackageError
    scorer = AnomalyScorer.from_file(path)
    if scorer.method != spec.method or scorer.border != spec.border or not math.isclose(
            scorer.threshold_distance, spec.threshold_distance, rel_tol=1e-9):
        raise ValueError(f"{path}: method/border/threshold ({scorer.method}, {scorer.border}, "
                         f"{scorer.threshold_distance:g}) differ from the sidecar's ({spec.method}, {spec.border}, "
                         f"{spec.threshold_distance:g})")
    views = dict(getattr(spec, "views", {}) or {})
    if set(scorer.views) != set(views) or any(not math.isclose(scorer.views[v].threshold_distance, t, rel_tol=1e-9)
                                              for v, t in views.items()):
        raise ValueError(f"{path}: per-view banks {scorer.view_thresholds or 'none'} differ from the sidecar's "
                         f"{views or 'none'}")
    return scorer
