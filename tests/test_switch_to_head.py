"""Issue 29, on the line: from good parts only to a supervised head, through the daemon's API.

A real anomaly package (tests/test_anomaly.py's fixture: trained on the good synthetic boxes alone, converted) is
live in a real (not started) Daemon behind its real API (tests/helpers.py ``daemon_app``); the labelled folders are
filled with synthetic boxes the way the operator's labels fill ``feedback/<class>/``. While a class has fewer than
20 labels, ``GET /ui/model`` shows the counts toward a supervised head; with 20 in each, it suggests the switch;
``POST /model/retrain {"recipe": "head"}`` fits a head-only candidate on the live backbone, which runs in shadow and
shows beside the live model by kind. Without a recipe an anomaly package retrains its own bank; the anomaly recipe
on a supervised package is refused with 422.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from edge.deliver.broker import free_port
from edge.learn.recipes import ModelKind, count_images, label_counts
from edge.learn.retrain import DEFAULT_MIN_PER_CLASS
from tests.helpers import AUTH, TEST_TOKEN, daemon_app, element_text, serving, tiny_daemon_cfg, wait_for
from tests.test_anomaly import anomaly_package  # noqa: F401  (registers the module-scoped fixture here)
from tests.test_operator_browser import browser  # noqa: F401  (the Chromium fixture)

ANOMALY = ModelKind.ANOMALY.value
HEAD = ModelKind.HEAD.value


def label(feedback: Path, synth_data: Path, cls: str, n: int) -> None:
    """``n`` synthetic boxes of ``cls`` in ``feedback/<cls>/`` (the next ones not there yet), as labels would be."""
    folder = feedback / cls
    folder.mkdir(parents=True, exist_ok=True)
    have = {p.name for p in folder.iterdir()}
    for p in [p for p in sorted((synth_data / cls).iterdir()) if p.name not in have][:n]:
        shutil.copy(p, folder / p.name)


def ui_model(client: Any) -> dict[str, Any]:
    r = client.get("/ui/model")
    assert r.status_code == 200, r.text
    return dict(r.json())


def retrained(client: Any) -> dict[str, Any]:
    """Wait for the background retrain; -> the page's model document with its candidate."""
    def done() -> dict[str, Any] | None:
        doc = ui_model(client)
        assert doc["retrain"]["state"] != "failed", doc["retrain"]
        return doc if doc["retrain"]["state"] == "done" and doc["candidate"] else None

    return dict(wait_for(done, 300, "the retrain to finish"))


def switched(tmp_path: Path, package: Path, synth_data: Path) -> tuple[Any, Any, dict[str, Any]]:
    """An anomaly package live with 20 labels per class; the head retrain the page's button asks for, finished.
    -> (app, client, the page's model document)."""
    app, client = daemon_app(tmp_path, package, token=TEST_TOKEN)
    for cls in ("ok", "defective"):
        label(tmp_path / "feedback", synth_data, cls, DEFAULT_MIN_PER_CLASS)
    assert ui_model(client)["suggestion"]["action"] == "switch_to_head"
    r = client.post("/model/retrain", json={"recipe": "head"}, headers=AUTH)
    assert r.status_code == 202, r.text
    assert r.json()["recipe"] == "head" and r.json()["state"] == "running"
    return app, client, retrained(client)


# ---------------------------------------------------------------- fast: counting, and the refusals


def test_label_counts_are_a_bounded_listing_of_images_only(tmp_path):
    ok = tmp_path / "a" / "ok"
    ok.mkdir(parents=True)
    for name in ("1.jpg", "2.PNG", "3.json", ".4.jpg", "5.txt"):
        (ok / name).write_bytes(b"x")
    (ok / "6.jpg").mkdir()  # a folder is not an image
    (tmp_path / "b" / "ok").mkdir(parents=True)
    (tmp_path / "b" / "ok" / "7.jpeg").write_bytes(b"x")
    assert count_images(ok) == 2 and count_images(ok, cap=1) == 1 and count_images(tmp_path / "none") == 0
    assert label_counts([tmp_path / "a", tmp_path / "b", tmp_path / "c"], ("ok", "defective")) == {"ok": 3, "defective": 0}


def test_a_supervised_package_gets_no_suggestion_and_the_anomaly_recipe_is_refused(tmp_path, tiny_model):
    app, client = daemon_app(tmp_path, tiny_model, token=TEST_TOKEN)
    doc = ui_model(client)
    assert doc["live"]["kind"] == HEAD and doc["suggestion"] is None
    r = client.post("/model/retrain", json={"recipe": "anomaly"}, headers=AUTH)
    assert r.status_code == 422 and "anomaly package" in r.json()["detail"], r.text
    r = client.post("/model/retrain", json={"recipe": "head", "target_frr": 0.01}, headers=AUTH)
    assert r.status_code == 422 and "target_frr" in r.json()["detail"], r.text
    assert client.post("/model/retrain", json={"recipe": "bank"}, headers=AUTH).status_code == 422
    assert ui_model(client)["retrain"]["state"] == "idle"  # nothing started
    assert not app.state.boxinspect.station.audit(10, action="retrain")


# ---------------------------------------------------------------- slow: the real anomaly package


@pytest.mark.slow
def test_labels_count_toward_a_head_then_the_switch_runs_beside_the_live_model(tmp_path, anomaly_package,  # noqa: F811
                                                                               synth_data):
    app, client = daemon_app(tmp_path, anomaly_package, token=TEST_TOKEN)
    feedback = tmp_path / "feedback"
    doc = ui_model(client)
    assert doc["live"]["kind"] == ANOMALY and doc["candidate"] is None
    s = doc["suggestion"]
    assert s["action"] is None and s["counts"] == {"ok": 0, "defective": 0} and s["needed"] == 20
    # 19 labels in a class: the progress, no switch
    label(feedback, synth_data, "ok", 30)
    label(feedback, synth_data, "defective", DEFAULT_MIN_PER_CLASS - 1)
    s = ui_model(client)["suggestion"]
    assert s["action"] is None and s["counts"] == {"ok": 30, "defective": 19} and s["needed"] == 20
    assert "defective 19/20" in s["text"]
    # the twentieth: the page suggests the switch
    label(feedback, synth_data, "defective", 1)
    s = ui_model(client)["suggestion"]
    assert s["action"] == "switch_to_head" and s["counts"] == {"ok": 30, "defective": 20}, s

    # the button's request: a supervised head on the live backbone, in the background, then in shadow
    live_id = app.state.boxinspect.models.get().classifier.model_id
    r = client.post("/model/retrain", json={"recipe": "head"}, headers=AUTH)
    assert r.status_code == 202 and r.json()["recipe"] == "head", r.text
    doc = retrained(client)
    live, cand = doc["live"], doc["candidate"]
    assert live["model_id"] == live_id and live["kind"] == ANOMALY
    assert cand["kind"] == HEAD and cand["origin"] == "retrain" and cand["model_id"] != live_id
    assert cand["retrain"]["recipe"] == "head" and cand["retrain"]["counts"] == {"ok": 30, "defective": 20}
    assert cand["metrics"]["source"] == "grouped CV (retrained head)" and cand["metrics"]["auc"] is not None
    assert doc["retrain"]["recipe"] == "head"
    # in shadow: a head-only package on the live backbone, judged from the live invoke's features
    shadow = app.state.boxinspect.model_control.shadow
    c_meta, l_meta = shadow.candidate.model.classifier.metadata, app.state.boxinspect.models.get().classifier.metadata
    assert c_meta.head is not None and c_meta.anomaly is None
    assert c_meta.features.backbone_sha256 == l_meta.features.backbone_sha256
    # the banner now points at the comparison, with no second button
    s = doc["suggestion"]
    assert s["action"] is None and "in shadow" in s["text"]
    [entry] = app.state.boxinspect.station.audit(10, action="retrain")
    assert "head recipe" in entry["what"]


@pytest.mark.slow
def test_the_supervised_head_is_promoted_over_the_anomaly_package(tmp_path, anomaly_package, synth_data):  # noqa: F811
    app, client, doc = switched(tmp_path, anomaly_package, synth_data)
    live_id, cand_id = doc["live"]["model_id"], doc["candidate"]["model_id"]
    r = client.post("/model/promote", json={"confirm": live_id, "who": "test"}, headers=AUTH)
    assert r.status_code == 200, r.text
    after = ui_model(client)
    assert after["live"]["model_id"] == cand_id and after["live"]["kind"] == HEAD
    assert after["previous"]["model_id"] == live_id and after["previous"]["kind"] == ANOMALY
    assert after["suggestion"] is None  # a supervised head is live: nothing to suggest


@pytest.mark.slow
def test_without_a_recipe_an_anomaly_package_retrains_its_bank_in_shadow(tmp_path, anomaly_package,  # noqa: F811
                                                                        synth_data):
    app, client = daemon_app(tmp_path, anomaly_package, token=TEST_TOKEN)
    label(tmp_path / "feedback", synth_data, "ok", 25)  # good parts alone
    r = client.post("/model/retrain", json={}, headers=AUTH)
    assert r.status_code == 202 and r.json()["recipe"] == "anomaly", r.text
    doc = retrained(client)
    cand = doc["candidate"]
    assert cand["kind"] == ANOMALY and cand["retrain"]["recipe"] == "anomaly" and doc["live"]["kind"] == ANOMALY
    assert cand["model_id"] != doc["live"]["model_id"]
    meta = app.state.boxinspect.model_control.shadow.candidate.model.classifier.metadata
    assert meta.anomaly is not None and meta.head is None
    assert meta.source["parent_model_id"] == doc["live"]["model_id"]
    [entry] = app.state.boxinspect.station.audit(10, action="retrain")
    assert "anomaly recipe" in entry["what"]
    # the head recipe's options do not fit the anomaly recipe
    r = client.post("/model/retrain", json={"recipe": "anomaly", "target_recall": 0.9}, headers=AUTH)
    assert r.status_code == 422, r.text


@pytest.mark.slow
def test_the_page_offers_the_switch_and_shows_both_kinds_side_by_side(tmp_path, anomaly_package, synth_data,  # noqa: F811
                                                                      browser):  # noqa: F811
    for cls in ("ok", "defective"):
        label(tmp_path / "feedback", synth_data, cls, DEFAULT_MIN_PER_CLASS)
    cfg = tiny_daemon_cfg(tmp_path, anomaly_package, api={"port": free_port(), "token": TEST_TOKEN},
                          operator={"feedback_dir": str(tmp_path / "feedback")}, shadow={"dir": str(tmp_path / "shadow")})
    with serving(tmp_path, cfg) as d:
        drv = browser
        drv.get(d.base + "/")
        drv.execute_script("sessionStorage.setItem('boxinspect-token', arguments[0])", TEST_TOKEN)
        button = wait_for(lambda: (b := drv.find_element("id", "m-switch-head")).is_displayed() and b, 30,
                          "the switch button on the page", d=d)
        assert drv.find_element("id", "head-suggestion").is_displayed()
        assert "Every class has enough labels" in element_text(drv, "head-suggestion-text")
        button.click()
        wait_for(lambda: "Supervised head retrain started" in element_text(drv, "toast"), 15, "the toast", d=d)

        def kinds() -> list[str] | None:
            row = drv.execute_script("const r = document.querySelector('#model-rows tr[data-row=kind]');"
                                     "return r && Array.from(r.children).map((c) => c.textContent)")
            return row if row and row[2] != "–" else None

        assert wait_for(kinds, 300, "the candidate's kind beside the live one's", d=d)[1:3] == [ANOMALY, HEAD]
        assert "(head recipe)" in element_text(drv, "retrain-state")
        wait_for(lambda: not drv.find_element("id", "m-switch-head").is_displayed(), 15, "the button hidden", d=d)
        assert "in shadow" in element_text(drv, "head-suggestion-text")
