"""The determinism check's verdict (tests/determinism.py) can fail: identical builds pass, builds whose int8 macro F1
differs by less than the fixture's margin pass with the difference stated, a larger difference fails. The builds
themselves run in `bash scripts/test.sh --repeat N` and beside pytest in CI (.ci/run)."""

from __future__ import annotations

from tests.determinism import compare, describe
from tests.tiny_build import TINY_INT8_MAX_F1_DROP


def _build(int8_f1: float, keras_f1: float = 0.98, scores: tuple[float, ...] = (0.1, 0.9), sha: str = "a") -> dict:
    return {"tflite_sha256": sha, "threshold": 0.6, "keras_test_scores": list(scores),
            "int8_test_scores": list(scores), "int8_macro_f1": int8_f1, "f1_drop": keras_f1 - int8_f1}


def test_identical_builds_pass() -> None:
    c = compare(_build(0.95), _build(0.95))
    assert c["identical"] and c["ok"] and c["int8_macro_f1_diff"] == 0.0
    assert c["margin"] == TINY_INT8_MAX_F1_DROP - (0.98 - 0.95)
    assert describe(c, 100).startswith("identical")


def test_a_difference_inside_the_margin_passes_and_is_stated() -> None:
    c = compare(_build(0.95), _build(0.94, scores=(0.1, 0.8), sha="b"))
    assert not c["identical"] and c["ok"]
    assert abs(c["int8_macro_f1_diff"] - 0.01) < 1e-12 and abs(c["keras_scores_max_diff"] - 0.1) < 1e-12
    text = describe(c, 100)
    assert "NOT bit-identical" in text and "difference 0.0100" in text and "within" in text


def test_a_difference_beyond_the_margin_fails() -> None:
    # build 2 lost 0.09 against its Keras model: margin 0.10 - 0.09 = 0.01 < the 0.06 between the builds
    c = compare(_build(0.95), _build(0.89, sha="b"))
    assert not c["ok"] and "OVER" in describe(c, 100)
