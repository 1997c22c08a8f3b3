"""The golden samples' verdicts (issue 24): convert records what the converted model itself decided on each golden
sample (``expected_label``, not the ground truth), and a package whose threshold or labels no longer give those
verdicts is refused: the daemon does not start (exit 3, one line), whatever loads it says why.

Before issue 24 a sidecar resealed by hand with a wrong threshold (a fresh ``package_sha256``) passed every check:
the golden samples compared scores only, and the scores do not depend on the threshold.
"""

from __future__ import annotations

import json

import pytest

from edge.judge.classifier import Classifier, ModelError
from edge.judge.model_package import load_metadata, sidecar_path, write_metadata
from edge.state import verdict
from tests.helpers import DaemonProc, edit_sidecar, tiny_daemon_cfg

WRONG_THRESHOLD = 0.5  # the tiny package's threshold is 0.074: 4 of its 6 golden samples change sides at 0.5


def _remade(model):
    """The package as convert writes it now (verdicts recorded): the committed fixture predates them."""
    write_metadata(load_metadata(model), model)
    return load_metadata(model)


def test_convert_records_verdicts_and_a_resealed_threshold_or_label_is_refused(model_copy):
    meta = _remade(model_copy)
    labels = (meta.negative_class, meta.positive_class)
    assert [g.expected_label for g in meta.golden] == [verdict(g.expected_score, meta.threshold, labels)[0]
                                                       for g in meta.golden]
    assert Classifier.load(model_copy).self_test() == []
    original = sidecar_path(model_copy).read_text()

    edit_sidecar(model_copy, lambda d: d.update(threshold=WRONG_THRESHOLD), verdicts=False)  # resealed by hand
    with pytest.raises(ModelError, match=r"contradicts its own golden verdicts \(4 of 6; golden\[0\]"):
        Classifier.load(model_copy)

    sidecar_path(model_copy).write_text(original)
    edit_sidecar(model_copy, lambda d: d.update(positive_class="ok"), verdicts=False)  # labels swapped
    with pytest.raises(ModelError, match=r"contradicts its own golden verdicts \(6 of 6"):
        Classifier.load(model_copy)

    sidecar_path(model_copy).write_text(original)
    edit_sidecar(model_copy, lambda d: d.update(threshold=WRONG_THRESHOLD))  # re-made by convert: verdicts again
    assert Classifier.load(model_copy).self_test() == []


@pytest.mark.slow
def test_daemon_refuses_to_start_on_a_resealed_threshold(tmp_path, model_copy):
    _remade(model_copy)
    edit_sidecar(model_copy, lambda d: d.update(threshold=WRONG_THRESHOLD), verdicts=False)
    d = DaemonProc(tmp_path, tiny_daemon_cfg(tmp_path, model_copy))
    assert d.run(timeout=120) == 3, d.log()
    lines = [ln for ln in d.log().splitlines() if ln.startswith("model:")]
    assert len(lines) == 1 and "contradicts its own golden verdicts" in lines[0], d.log()
    assert "Traceback" not in d.log()


@pytest.mark.slow
def test_the_converted_int8_package_records_the_verdicts_its_model_gives(int8_model):
    meta = load_metadata(int8_model)
    clf = Classifier.load(int8_model)
    labels = (meta.negative_class, meta.positive_class)
    assert meta.golden and all(g.expected_label in meta.labels for g in meta.golden)
    for g in meta.golden:
        assert g.expected_label == verdict(g.expected_score, meta.threshold, labels)[0]
    assert clf.self_test() == []  # so the model, run now, gives these scores and with them these verdicts
    doc = json.loads(sidecar_path(int8_model).read_text())
    assert all("expected_label" in g for g in doc["golden"])
