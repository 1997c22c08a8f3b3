"""The committed tiny model (tests/fixtures/) the fast lane uses: a valid package, and says when it is stale."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from edge.judge.classifier import Classifier
from edge.judge.model_package import load_metadata, sha256_file
from tests.fixtures.build_tiny_model import FORMAT, SOURCE, source_hash


def test_tiny_model_is_a_valid_int8_package(tiny_model: Path) -> None:
    meta = load_metadata(tiny_model)
    assert meta.format == "int8" and meta.sha256 == sha256_file(tiny_model)
    clf = Classifier.load(tiny_model)
    assert clf.self_test() == []  # golden samples reproduce: the runtime reads it as convert wrote it


def test_tiny_model_records_what_built_it() -> None:
    rec = json.loads(SOURCE.read_text())
    assert rec["command"] and len(rec["source_hash"]) == 16
    if rec["format_hash"] != source_hash(FORMAT):
        warnings.warn(
            "edge/judge/model_package.py changed since tests/fixtures/tiny_int8.tflite was built; if the package format "
            "changed, rebuild it: python -m tests.fixtures.build_tiny_model",
            stacklevel=1,
        )
