"""Multi-view parts: view naming, fusion rules, splits that keep a part's views together, per-part metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.judge.fusion import FUSION_RULES, fuse, fuse_parts, part_and_view, part_keys


def test_part_and_view_from_file_names() -> None:
    assert part_and_view("defective/defective-00012-dent_top.jpg") == ("defective-00012-dent", "top")
    assert part_and_view("x/p7_oblique.png") == ("p7", "oblique")
    assert part_and_view("p7_CAM2.jpg") == ("p7", "cam2")
    # single-view names stay single: a trailing "_00001" or "_dent" is not a view
    assert part_and_view("ok/ok_00001.jpg") == ("ok_00001", None)
    assert part_and_view("defective/defective_00003_dent.jpg") == ("defective_00003_dent", None)
    assert part_keys(["a/x.jpg", "b/x.jpg"]) == ["file:a/x.jpg", "file:b/x.jpg"]
    assert part_keys(["ok/p1_top.jpg", "ok/p1_side.jpg"]) == ["part:p1", "part:p1"]


def test_fusion_rules() -> None:
    s = [0.2, 0.5]
    assert fuse(s, "max") == 0.5
    assert fuse(s, "mean") == pytest.approx(0.35)
    assert fuse(s, "noisy_or") == pytest.approx(1 - 0.8 * 0.5)
    for rule in FUSION_RULES:
        assert fuse([0.3], rule) == pytest.approx(0.3)  # one view: every rule is the identity
        assert 0.0 <= fuse([0.0, 1.0, 0.4], rule) <= 1.0
    with pytest.raises(ValueError, match="unknown fusion rule"):
        fuse(s, "min")
    with pytest.raises(ValueError):
        fuse([], "max")


def test_fuse_parts_groups_views() -> None:
    paths = ["ok/a_top.jpg", "ok/a_oblique.jpg", "defective/b_top.jpg", "defective/b_oblique.jpg", "ok/c.jpg"]
    parts, fused, y, nv = fuse_parts(paths, [0.1, 0.3, 0.2, 0.9, 0.4], [0, 0, 1, 1, 0], "max")
    assert parts == ["part:a", "part:b", "file:ok/c.jpg"]
    assert fused.tolist() == [0.3, 0.9, 0.4] and y.tolist() == [0, 1, 0] and nv.tolist() == [2, 2, 1]


def test_split_keeps_the_views_of_a_part_together(tmp_path: Path) -> None:
    """On rendered line scenes (two views per part) no part has views in two splits."""
    from boxinspect.synth import make_line_dataset
    from training import data as data_mod
    from training import split as split_mod

    make_line_dataset(tmp_path, n_per_class=15, seed=9, progress=False)
    images = data_mod.scan(tmp_path)
    loaded = data_mod.load_images(images.paths, images.labels, 32)
    hashes = np.stack([split_mod.image_hashes(p) for p in loaded.pixels])
    rel = [images.rel(p) for p in loaded.paths]
    for seed in range(3):
        sp = split_mod.make_split(rel, loaded.labels, hashes, images.classes, images.positive_class, seed=seed,
                                  dup_threshold=-1)
        where: dict[str, set[str]] = {}
        for it in sp.items:
            where.setdefault(part_and_view(it["path"])[0], set()).add(it["split"])
        assert len(where) == 30 and all(len(s) == 1 for s in where.values())
        assert not split_mod.leaks(sp)
        assert {it["split"] for it in sp.items} == {"train", "val", "test"}
        assert sp.info["multi_view_images"] == 60


def test_multi_view_metrics_per_view_and_per_part() -> None:
    from training.evaluate import multi_view_metrics

    rng = np.random.default_rng(0)
    n = 40  # parts; a defect shows in one view only (the other view scores like an OK part)
    paths, y, s = [], [], []
    for i in range(n):
        lab = i % 2
        seen = rng.integers(2)
        for v, view in enumerate(("top", "oblique")):
            paths.append(Path(f"{'defective' if lab else 'ok'}/p{i}_{view}.jpg"))
            y.append(lab)
            s.append(float(rng.uniform(0.6, 1.0) if lab and v == seen else rng.uniform(0.0, 0.7)))
    y_a, s_a = np.array(y), np.array(s)
    m = multi_view_metrics(paths, y_a, s_a, paths, y_a, s_a, target_recall=0.95)
    assert m is not None and set(m["per_view"]) == {"top", "oblique"}
    assert m["per_view"]["top"]["n"] == n
    assert set(m["per_part"]) == set(FUSION_RULES) and m["per_part"]["max"]["n_parts"] == n
    # a defect visible in one view: the part's max beats any single view
    assert m["per_part"]["max"]["auc"] > max(r["auc"] for r in m["per_view"].values())
    assert m["per_part"]["max"]["recall"] >= 0.95
    assert multi_view_metrics([Path("ok/a.jpg")], np.array([0]), np.array([0.1]), [], np.array([]), np.array([])) is None
