"""Frozen MobileNetV2 features (global-average-pooled), cached on disk.

A frozen-backbone recipe only needs the pooled backbone output of every image once. The cache is keyed by
the image file's content hash (SHA-1 of its bytes) and by everything that changes the feature: input size,
width multiplier (alpha), the weight file (name + size + mtime), mirrored or not, the crop method, the
learned box finder's sha256 (``--finder``) and the scales (several input sizes averaged, ``training.model.pooled_features``). One
``.npz`` per key under the cache folder (default ``~/.cache/boxinspect/features``, or
``$BOXINSPECT_FEATURE_CACHE``), written atomically, so repeated cross-validation of a linear head costs
seconds after the first pass.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training import data as data_mod

if TYPE_CHECKING:
    from edge.judge.localize import CropShape
    from training.model import Pooling

log = logging.getLogger(__name__)

CACHE_ENV = "BOXINSPECT_FEATURE_CACHE"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(os.path.expanduser("~")) / ".cache" / "boxinspect" / "features"


def file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FeatureSpec:
    """What the cached features depend on."""

    img_size: int
    alpha: float
    weights_path: str | None  # resolved weight file (None = random init: never cached)
    flip: bool = False  # features of the horizontally mirrored image
    crop: str = "none"  # crop method applied before resizing (edge.judge.localize), "none" = whole frame
    # mean of the pooled features at these input sizes (the largest = img_size, the others resized inside the
    # model, as model.keras does); () = one size, img_size
    scales: tuple[int, ...] = ()
    empty_belt: str | None = None  # crop: the learned empty belt's folder (CropSpec.empty_belt); None: none
    finder: str | None = None  # a learned box finder .tflite answering before the crop search (--finder); None: none
    shape: CropShape = "square"  # the crop's shape around the box (edge.judge.localize.shaped)
    pooling: Pooling = "gap"  # the feature vector (training.model.POOLINGS)

    def key(self) -> str:
        w = "none"
        if self.weights_path:
            p = Path(self.weights_path)
            st = p.stat()
            w = f"{p.name}:{st.st_size}:{int(st.st_mtime)}"
        raw = f"v1|{self.img_size}|{self.alpha}|{w}|flip={int(self.flip)}|crop={self.crop}"
        if self.crop != "none":  # a changed localiser makes other crops: its version is part of the key
            from edge.judge.localize import LOCALIZER_VERSION, stills_tag

            raw += f"|localizer={LOCALIZER_VERSION}"
            raw += f"|selfbelt={stills_tag()}" if stills_tag() else ""  # crops from the data set's own belt
        if self.empty_belt and self.crop != "none":  # other crops: the folder and what is in it
            from edge.judge.localize import empty_belt_folders

            files = sorted(f"{p}:{p.stat().st_size}:{int(p.stat().st_mtime)}"
                           for ps in empty_belt_folders(self.empty_belt).values() for p in ps)
            raw += "|empty=" + hashlib.sha1("\n".join([self.empty_belt, *files]).encode()).hexdigest()
        if self.finder:  # other crops: the finder's content, how its box is taken, the localiser of its fallback
            from edge.judge.crops import LEARNED_RULE_VERSION, finder_sha256
            from edge.judge.localize import LOCALIZER_VERSION

            raw += f"|finder={finder_sha256(self.finder)}|localizer={LOCALIZER_VERSION}"
            raw += f"|learned_rule={LEARNED_RULE_VERSION}"
        if self.shape != "square" and self.crop != "none":  # the square crop keeps the key it always had
            raw += f"|shape={self.shape}"
        if self.pooling != "gap":  # "gap" keeps the key it always had
            raw += f"|pooling={self.pooling}"
        if len(self.scales) > 1:  # one size keeps the key it always had (existing caches stay valid)
            raw += "|scales=" + ",".join(str(s) for s in sorted(self.scales))
        return hashlib.sha1(raw.encode()).hexdigest()[:16]


def prepare_pixels(rgb: np.ndarray, size: int, crop: str = "none", empty_belt: str | None = None,
                   finder: str | None = None, shape: CropShape = "square") -> np.ndarray:
    """Crop (if asked; with the learned empty belt of ``empty_belt``, the ``finder``'s box first, cut in ``shape``)
    and resize one RGB image like training does."""
    if crop != "none" or finder:
        rgb = crop_rgb(rgb, crop, empty_belt, finder, shape)
    return data_mod.resize(rgb, size)


def crop_rgb(rgb: np.ndarray, method: str, empty_belt: str | None = None, finder: str | None = None,
             shape: CropShape = "square") -> np.ndarray:
    """Crop an RGB image to the box with edge.judge.localize (the same code the edge uses), cut in ``shape``; with a
    ``finder`` file, its box first (edge.judge.crops.locate_still)."""
    import cv2

    try:
        from edge.judge import crops, localize
    except ImportError as e:  # pragma: no cover - depends on edge/judge/localize.py being present
        raise ValueError(f"crop method {method!r} needs edge/judge/localize.py, which is not available: {e}") from e
    spec = localize.shaped(localize.CropSpec(method=method, empty_belt=empty_belt), shape)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    loc = crops.locate_still(bgr, spec, finder=crops.open_finder(finder) if finder else None)
    return cv2.cvtColor(localize.crop(bgr, loc, spec), cv2.COLOR_BGR2RGB)


class FeatureExtractor:
    """Pooled frozen-backbone features for image files, with the on-disk cache."""

    def __init__(self, spec: FeatureSpec, cache_dir: Path | None = None, batch_size: int = 32):
        self.spec = spec
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._model = None

    @property
    def cache_file(self) -> Path:
        return self.cache_dir / f"{self.spec.key()}.npz"

    def _load_cache(self) -> dict[str, np.ndarray]:
        if self.spec.weights_path is None or not self.cache_file.is_file():
            return {}
        try:
            with np.load(self.cache_file) as z:
                return dict(zip(z["hashes"].tolist(), z["features"], strict=True))
        except (OSError, ValueError, KeyError) as e:
            log.warning("feature cache %s unreadable (%s); recomputing", self.cache_file, e)
            return {}

    def _save_cache(self, store: dict[str, np.ndarray]) -> None:
        if self.spec.weights_path is None or not store:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        hashes = np.array(list(store.keys()))
        feats = np.stack(list(store.values())).astype(np.float32)
        with tempfile.NamedTemporaryFile(dir=self.cache_dir, suffix=".npz.tmp", delete=False) as f:
            np.savez(f, hashes=hashes, features=feats)
        os.replace(f.name, self.cache_file)

    def model(self):
        if self._model is None:
            from training import model as model_mod

            # the same graph as model.keras upstream of its head (one function builds both)
            self._model = model_mod.build_feature_model(self.spec.img_size, self.spec.alpha, self.spec.weights_path,
                                                        self.spec.scales or None, pooling=self.spec.pooling)
        return self._model

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """One RGB image -> the model's uint8 input (crop, resize); a subclass may crop differently."""
        return prepare_pixels(rgb, self.spec.img_size, self.spec.crop, self.spec.empty_belt, self.spec.finder,
                              self.spec.shape)

    def features_of_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Features of already-prepared uint8 pixels (N, S, S, 3); mirrored first if the spec says so."""
        x = pixels[:, :, ::-1, :] if self.spec.flip else pixels
        return np.asarray(self.model().predict(x.astype(np.float32), batch_size=self.batch_size, verbose=0))

    def features(self, paths: list[Path], progress: bool = True) -> tuple[np.ndarray, list[bool]]:
        """Features for ``paths`` (N, D) and a per-path readable flag; unreadable files get a row of NaN."""
        store = self._load_cache()
        hashes = [file_sha1(Path(p)) for p in paths]
        todo = [i for i, h in enumerate(hashes) if h not in store]
        ok = [True] * len(paths)
        if todo:
            t0 = time.monotonic()
            log.info("features: %d of %d images not cached (%s); computing at %s px%s%s", len(todo), len(paths),
                     self.cache_file.name, " + ".join(str(s) for s in (self.spec.scales or (self.spec.img_size,))),
                     ", mirrored" if self.spec.flip else "",
                     (f", crop {self.spec.crop}" if self.spec.crop != "none" else "")
                     + (f" ({self.spec.shape})" if self.spec.crop != "none" and self.spec.shape != "square" else "")
                     + (f", learned finder {self.spec.finder} first" if self.spec.finder else ""))
            chunk = 128
            for s in range(0, len(todo), chunk):
                idx = todo[s:s + chunk]
                arrays, keep = [], []
                for i in idx:
                    rgb = data_mod.read_rgb(paths[i])
                    if rgb is None:
                        ok[i] = False
                        continue
                    arrays.append(self.prepare(rgb))
                    keep.append(i)
                if arrays:
                    f = self.features_of_pixels(np.stack(arrays))
                    for i, row in zip(keep, f, strict=True):
                        store[hashes[i]] = row.astype(np.float32)
                if progress:
                    done = min(s + chunk, len(todo))
                    el = time.monotonic() - t0
                    log.info("features %d/%d (%.0f s, ~%.0f s left)", done, len(todo), el,
                             el / done * (len(todo) - done))
            self._save_cache(store)
        dim = next(iter(store.values())).shape[0] if store else 0
        out = np.full((len(paths), dim), np.nan, np.float32)
        for i, h in enumerate(hashes):
            if h in store and ok[i]:
                out[i] = store[h]
            else:
                ok[i] = False
        return out, ok
