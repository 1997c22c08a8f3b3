"""Poisoning visible before promote (issue 24, item 4): 50 flipped labels from one source, and a candidate that
disagrees with the live model on most recent parts. The card names the disagreement and the source; promote is
refused (409) until confirmed. On 548d7c7 the page offered one-click promote with no warning."""

from __future__ import annotations

from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.runtime.principal import Principal, Role, current_principal
from tests.helpers import AUTH, with_token
from tests.test_shadow import run_video_with_candidate


def test_fifty_flipped_labels_and_a_disagreeing_candidate_need_a_confirmed_promote(tmp_path, synth_video):
    d, sink = run_video_with_candidate(tmp_path, synth_video, lambda roi: 1.0)  # a candidate that rejects every box
    cfg = with_token(d.state.config)
    cfg.shadow.confirm_min_parts = 3
    sh = d.shadow.doc()
    share = sh["disagreed"] / sh["judged"]
    assert sh["judged"] >= 3 and share > cfg.shadow.confirm_above, sh  # the premise: it disagrees on most parts
    client = TestClient(create_app(d.state), headers=AUTH)
    store = d.state.operator.feedback if d.state.operator is not None else None
    if store is None:  # the daemon made no operator state (API off in this config): the app made one
        store = client.app.state.boxinspect.operator.feedback
    # 50 good boxes labelled "defective" by one client
    reset = current_principal.set(Principal("token", frozenset(Role), "10.9.8.7:4242"))
    try:
        import numpy as np

        crop = np.full((40, 40, 3), 128, np.uint8)
        for i in range(50):
            store.save(f"poison-{i}", "defective", "label", crop, None,
                       {"verdict": "ok", "who": "mallory", "source": "collection"})
    finally:
        current_principal.reset(reset)
    card = client.get("/ui/model").json()
    review = card["review"]
    assert review["needs_confirmation"] is True
    assert f"{sh['disagreed']} of the last {sh['judged']} parts" in review["warning"]
    audit = review["label_audit"]
    assert audit["disagree_with_live"] == 50 and audit["labels"] == 50
    assert audit["disagreeing_sources"] == {"mallory (token from 10.9.8.7:4242)": 50}
    assert review["cv"] is not None  # the CV stands next to the recent parts on the card
    r = client.post("/model/promote", json={"who": "eve"})
    assert r.status_code == 409 and "confirm" in r.json()["detail"], r.text
    assert d.models.get().classifier.model_id != "cand@0000000000c1"
    r = client.post("/model/promote", json={"who": "eve", "confirm": True})
    assert r.status_code != 409 or "confirm" not in r.json()["detail"], r.text  # past the gate (the swap decides)


def test_an_agreeing_candidate_needs_no_confirmation(tmp_path, synth_video):
    d, _ = run_video_with_candidate(tmp_path, synth_video, lambda roi: 0.0)
    cfg = with_token(d.state.config)
    cfg.shadow.confirm_above = 0.99
    client = TestClient(create_app(d.state), headers=AUTH)
    review = client.get("/ui/model").json()["review"]
    assert review["needs_confirmation"] is False and review["warning"] is None
