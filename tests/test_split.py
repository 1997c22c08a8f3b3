"""The split never lets copies of one photo straddle train/val/test; data loading skips bad files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from training import data as data_mod
from training.split import (
    SplitError,
    assign_splits,
    image_hashes,
    leaks,
    load_split,
    make_split,
    near_duplicate_groups,
)


def _photo(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A distinct 'photo': smooth random structure (low-frequency noise plus a few shapes)."""
    low = rng.uniform(0, 255, (6, 6, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(3):
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, c, int(rng.integers(5, 20)), tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _copies(img: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Near-duplicates: mirrored, rotated 90/180, noised, re-encoded and brightened copies."""
    noisy = np.clip(img.astype(np.float32) + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    return [
        np.fliplr(img).copy(),
        np.rot90(img, 1).copy(),
        np.rot90(np.flipud(img), 2).copy(),
        noisy,
        np.fliplr(np.rot90(noisy, 3)).copy(),
        cv2.imdecode(buf, cv2.IMREAD_COLOR),
        np.clip(img.astype(np.int16) + 15, 0, 255).astype(np.uint8),
    ]


@pytest.fixture(scope="module")
def dup_set():
    """90 distinct photos (1/3 defective), most with 1-4 near-duplicate copies. Returns (labels, origin, hashes)."""
    rng = np.random.default_rng(7)
    labels, origin, hashes = [], [], []
    for i in range(90):
        label = "defective" if i % 3 == 0 else "ok"
        base = _photo(rng)
        imgs = [base]
        if i % 4:
            copies = _copies(base, rng)
            pick = rng.choice(len(copies), int(rng.integers(1, 5)), replace=False)
            imgs += [copies[k] for k in pick]
        for im in imgs:
            labels.append(label)
            origin.append(i)
            hashes.append(image_hashes(im))
    return labels, np.array(origin), np.stack(hashes)


def test_copies_cluster_with_their_original(dup_set):
    labels, origin, hashes = dup_set
    groups = near_duplicate_groups(hashes, threshold=6)
    for o in np.unique(origin):
        assert len(set(groups[origin == o].tolist())) == 1, f"copies of photo {o} were not grouped"
    # ...and distinct photos are not lumped together (a few chance merges at most).
    assert len(np.unique(groups)) >= 0.9 * len(np.unique(origin))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_never_leaks_a_near_duplicate(dup_set, seed):
    labels, origin, hashes = dup_set
    paths = [f"{lab}/{k:04d}.png" for k, lab in enumerate(labels)]
    sp = make_split(paths, labels, hashes, ["defective", "ok"], "defective", seed=seed)
    assert leaks(sp) == []
    by_origin: dict[int, set[str]] = {}
    for it, o in zip(sp.items, origin.tolist(), strict=True):
        by_origin.setdefault(o, set()).add(it["split"])
    straddling = [o for o, s in by_origin.items() if len(s) > 1]
    assert straddling == [], f"copies of photos {straddling} are in more than one split"
    n = len(labels)
    frac = Counter(it["split"] for it in sp.items)
    assert frac["test"] >= 0.15 * n
    assert frac["val"] > 0 and frac["train"] > frac["test"]
    # stratified: every split holds both classes
    for s, c in sp.counts().items():
        assert c["defective"] > 0 and c["ok"] > 0, (s, c)


def test_without_grouping_copies_do_leak(dup_set):
    """The check above can fail: with grouping off, copies end up on both sides of the split."""
    labels, origin, hashes = dup_set
    paths = [f"x/{k}.png" for k in range(len(labels))]
    sp = make_split(paths, labels, hashes, ["defective", "ok"], "defective", dup_threshold=-1)
    by_origin: dict[int, set[str]] = {}
    for it, o in zip(sp.items, origin.tolist(), strict=True):
        by_origin.setdefault(o, set()).add(it["split"])
    assert any(len(s) > 1 for s in by_origin.values())


def test_manifest_round_trip(tmp_path, dup_set):
    labels, _, hashes = dup_set
    paths = [f"{lab}/{k:04d}.png" for k, lab in enumerate(labels)]
    sp = make_split(paths, labels, hashes, ["defective", "ok"], "defective", seed=3)
    sp.save(tmp_path / "split.json")
    again = load_split(tmp_path / "split.json")
    assert again.items == sp.items
    assert again.classes == ["defective", "ok"] and again.positive_class == "defective"
    assert again.counts() == sp.counts()
    assert again.info["dup_threshold"] == 6


def test_same_seed_same_split(dup_set):
    labels, _, hashes = dup_set
    paths = [str(k) for k in range(len(labels))]
    a = make_split(paths, labels, hashes, ["defective", "ok"], "defective", seed=5)
    b = make_split(paths, labels, hashes, ["defective", "ok"], "defective", seed=5)
    assert a.items == b.items


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(SplitError, match="group"):
        assign_splits(["a", "b", "a"], np.array([0, 0, 1]), seed=0)


def test_bad_manifest_is_a_clear_error(tmp_path):
    p = tmp_path / "split.json"
    p.write_text('{"items": [{"path": "a.png", "label": "ok", "group": 0, "split": "holdout"}], '
                 '"classes": ["ok", "defective"], "positive_class": "defective"}')
    with pytest.raises(SplitError, match="holdout"):
        load_split(p)


def test_formats_read_and_corrupt_files_skipped(tmp_path):
    rng = np.random.default_rng(0)
    img = _photo(rng, 64)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    for cls in ("ok", "damaged"):
        (tmp_path / cls).mkdir()
        for ext in ("jpg", "png", "bmp", "webp", "tiff"):
            assert cv2.imwrite(str(tmp_path / cls / f"a.{ext}"), bgr)
    (tmp_path / "ok" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "ok" / "empty.png").write_bytes(b"")
    (tmp_path / "ok" / "notes.txt").write_text("not an image, ignored")
    images = data_mod.scan(tmp_path)
    assert images.classes == ["damaged", "ok"] and images.positive_class == "damaged"
    assert len(images.paths) == 12
    loaded = data_mod.load_images(images.paths, images.labels, 32)
    assert len(loaded.paths) == 10 and loaded.pixels.shape == (10, 32, 32, 3)
    assert sorted(p.name for p in loaded.unreadable) == ["corrupt.jpg", "empty.png"]
    # colour order is RGB
    png = loaded.pixels[[p.name for p in loaded.paths].index("a.png")]
    assert np.abs(png.astype(int) - cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)).max() <= 1


def test_positive_class_must_be_explicit_when_unknown(tmp_path):
    for cls in ("good", "bad"):
        (tmp_path / cls).mkdir()
        cv2.imwrite(str(tmp_path / cls / "x.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(data_mod.DataError, match="--positive-class"):
        data_mod.scan(tmp_path)
    assert data_mod.scan(tmp_path, positive_class="bad").positive_class == "bad"
    with pytest.raises(data_mod.DataError, match="not one of"):
        data_mod.scan(tmp_path, positive_class="dented")


@pytest.fixture(scope="module")
def fixed_camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Belt scenes from four fixed cameras (100 parts x 2 views, a seed no study or finder build uses)."""
    from boxinspect.synth.belt import make_belt_dataset

    root = tmp_path_factory.mktemp("fixed") / "belt"
    make_belt_dataset(root, n_per_class=50, seed=1114, progress=False)
    return root


@pytest.mark.slow
def test_near_duplicates_are_judged_on_the_crop_the_model_sees(fixed_camera: Path) -> None:
    """On a fixed camera every whole frame is mostly the same belt: frame hashes chain different boxes into a few big
    groups (lumpy folds); the crops keep one group per part or close (cv and the anomaly recipe hash crops now, as
    train always has)."""
    from edge.judge.boxfinder import BUILTIN
    from edge.judge.localize import CropSpec, shaped
    from training.split import crop_hashes, merge_groups, near_duplicate_groups, part_ids

    images = data_mod.scan(fixed_camera, None, None)
    parts = part_ids([images.rel(p) for p in images.paths])
    assert len(set(parts)) == 100
    sizes = {}
    for name, crop, finder in (("frame", None, None), ("crop", shaped(CropSpec(method="auto"), "aligned"), str(BUILTIN))):
        loaded, hashes = crop_hashes(images.paths, images.labels, crop, finder)
        assert len(loaded.pixels) == len(images.paths) and not loaded.unreadable
        g = merge_groups(near_duplicate_groups(hashes).tolist(), parts)
        sizes[name] = (len(np.unique(g)), int(np.bincount(g).max()))
    # measured (groups, photos in the largest): frame (77, 22), crop (97, 4); synth belt seeds 31 / 32 gave frame
    # (71, 58) / (46, 90) and crop (91, 8) / (96, 4)
    assert sizes["frame"][1] >= 14, sizes  # the frames chain at least 7 parts together: the test can fail
    assert sizes["crop"][0] >= 85 and sizes["crop"][1] <= 10, sizes
