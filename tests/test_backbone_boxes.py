"""`--weights boxes` (issue 25): the built-in backbone adapted to boxes. The shipped file is the one its build record
names, was built on none of the study sets' seeds, loads as the MobileNetV2 alpha 0.35 trunk, and is the ImageNet
trunk fine-tuned from block 7 on (the blocks before it untouched), as the record says.

What it does to accuracy is a measurement, not a test: docs/RESULTS.md "A backbone adapted to boxes"."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from training.model import BOXES_WEIGHTS, WeightsError, resolve_weights

RECORD = BOXES_WEIGHTS.with_name(BOXES_WEIGHTS.name + ".json")
STUDY_SEEDS = {3, 7, 8, 21, 31, 32, 3003, 3004, 4101, 4102}  # dev and held-out sets of docs/RESULTS.md


def test_the_shipped_backbone_is_the_file_its_record_names() -> None:
    rec = json.loads(RECORD.read_text())
    assert rec["sha256"] == hashlib.sha256(BOXES_WEIGHTS.read_bytes()).hexdigest()
    seeds = {s for kind in rec["data"].values() for s in kind["seeds"]}
    assert seeds and not seeds & STUDY_SEEDS


def test_weights_boxes_resolves_to_the_asset_for_alpha_035_only() -> None:
    assert resolve_weights("boxes", 0.35, 224) == str(BOXES_WEIGHTS)
    assert resolve_weights("BOXES", 0.35, 160) == str(BOXES_WEIGHTS)
    with pytest.raises(WeightsError, match="alpha 0.35"):
        resolve_weights("boxes", 1.0, 224)


def _block(layer_name: str) -> int:
    """MobileNetV2's block of a layer: 0 for the stem (Conv1, expanded_conv), 99 for the head (Conv_1)."""
    name = layer_name.removeprefix("bn_")
    if name.startswith("block_"):
        return int(name.split("_")[1])
    return 0 if name.startswith(("Conv1", "expanded_conv")) else 99


@pytest.mark.slow  # imports Keras (TensorFlow): not in the fast lane
def test_boxes_is_the_imagenet_trunk_fine_tuned_from_block_7(weights_path: Path) -> None:
    from training.model import build_backbone

    boxes = build_backbone(224, 0.35, resolve_weights("boxes", 0.35, 224))
    imagenet = build_backbone(224, 0.35, str(weights_path))
    from_block = json.loads(RECORD.read_text())["from_block"]
    changed = [_block(a.name) for a, b in zip(boxes.layers, imagenet.layers, strict=True)
               if not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))]
    assert len(changed) > 10 and min(changed) == from_block  # blocks before it (and every BatchNorm) untouched
