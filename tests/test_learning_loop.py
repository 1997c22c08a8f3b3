"""Issue 11's must-show: the line teaches itself, end to end, with no TensorFlow anywhere in the loop.

1. A daemon (a real process, a real Mosquitto) runs a package trained on half of a data set: the head of the
   committed tiny package (tests/fixtures/build_tiny_model.py, made by our own convert) fitted by
   ``edge.learn.retrain`` on half of a synthetic data set. Its frames are the generated conveyor video.
2. Labels for the other half arrive through the feedback API: each photo is checked (``POST /ui/check``) and
   answered (``POST /ui/feedback``: correct, false reject or missed defect), so the crops land in
   ``feedback/<class>/`` exactly as an operator's answers do.
3. ``POST /model/retrain`` fits a new head in the daemon (feedback + ``shadow.retrain_data``, the first half),
   and the candidate runs in shadow: every decided box is judged by it from the live invoke's features (a dot
   product: ``fast_path`` counts them), its agreement is reported by ``GET /model`` and ``/metrics``, and it
   publishes nothing.
4. ``POST /model/promote``, then ``POST /model/rollback``, each checked on the real broker: the retained
   ``<base>/model`` message names the new live model, what a rollback returns to, both models' metrics and
   the shadow statistics, and validates against edge/model.schema.json.

Runs in the full venv and in the edge-only venv (scripts/check-edge-install.sh EXTRA_TESTS in .ci/run).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from tests.helpers import DaemonProc, Subscriber, metric, wait_for
from tests.test_daemon import SLOW, base_cfg

pytestmark = SLOW

TOKEN = "learning-loop-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "edge" / "model.schema.json").read_text())
PER_CLASS = 24  # per class in the whole data set; each half gets 12
MIN_PER_CLASS = 8


def halves(data: Path, tmp: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """Even-numbered images of each class -> ``tmp/base/<class>/`` (the first half, a folder-per-class data
    set); the odd-numbered ones -> [(path, class)] (the second half, labelled later on the line)."""
    base, line = tmp / "base", []
    for cls_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        images = sorted(cls_dir.glob("*.jpg")) + sorted(cls_dir.glob("*.png"))
        (base / cls_dir.name).mkdir(parents=True)
        for i, img in enumerate(images):
            if i % 2 == 0:
                shutil.copy(img, base / cls_dir.name / img.name)
            else:
                line.append((img, cls_dir.name))
    return base, line


def model_docs(sub: Subscriber) -> list[dict[str, Any]]:
    return sub.json("/model")


def test_the_line_teaches_itself_without_tensorflow(tmp_path, tiny_model, synth_video, mosquitto):
    from boxinspect.synth import make_dataset
    from edge.learn.retrain import retrain

    video, gt = synth_video
    make_dataset(tmp_path / "data", n_per_class=PER_CLASS, size=96, seed=11, progress=False)
    base, line = halves(tmp_path / "data", tmp_path)
    # 1. the package the daemon starts with: the tiny backbone with a head fitted on the first half only
    first = retrain(tiny_model, [base], tmp_path / "models" / "first", min_per_class=MIN_PER_CLASS)
    live_path = Path(first.candidate)
    cfg = base_cfg(tmp_path, live_path, video, gt, mosquitto, api={"token": TOKEN},
                   operator={"feedback_dir": str(tmp_path / "feedback")},
                   shadow={"dir": str(tmp_path / "shadow"), "retrain_data": [str(base)]})
    cfg["model"]["threshold"] = None  # each package's own threshold (the live one's and the candidate's)
    cfg["model"]["dir"] = str(tmp_path / "models")
    topic_base = f"boxinspect/{cfg['line']}/{cfg['camera']}"
    d = DaemonProc(tmp_path, cfg).start()
    sub = None
    try:
        d.wait_api()
        api = httpx.Client(base_url=d.base, headers=AUTH, timeout=60)
        sub = Subscriber(mosquitto.host, mosquitto.port, [f"{topic_base}/model", f"{topic_base}/defect"])
        start = wait_for(lambda: model_docs(sub), 30, "the retained model message", d=d)[-1]
        jsonschema.validate(start, SCHEMA)
        a_id = start["model_id"]
        assert a_id == first.model_id and start["change"] is None and start["previous_model_id"] is None

        # 2. the second half's labels arrive through the feedback API (check, then answer)
        for img, truth in line:
            with img.open("rb") as fh:
                r = api.post("/ui/check", files={"file": (img.name, fh, "image/jpeg")})
            assert r.status_code == 200, r.text
            check = r.json()
            said_defect, is_defect = check["is_defect"], truth == "defective"
            kind = "correct" if said_defect == is_defect else ("false_reject" if said_defect else "missed_defect")
            r = api.post("/ui/feedback", json={"target": "check", "id": check["check_id"], "kind": kind, "who": "e2e"})
            assert r.status_code == 200, r.text
            assert r.json()["label"] == truth
        for cls in ("ok", "defective"):
            assert len(list((tmp_path / "feedback" / cls).glob("*.jpg"))) == PER_CLASS // 2

        # 3. retrain in the daemon, in the background; the candidate then runs in shadow
        r = api.post("/model/retrain", json={"min_per_class": MIN_PER_CLASS})
        assert r.status_code == 202, r.text
        assert api.post("/model/retrain", json={}).status_code in (202, 409)  # one at a time (or already done)

        def retrained() -> dict[str, Any] | None:
            doc = api.get("/model").json()
            assert doc["retrain"]["state"] != "failed", doc["retrain"]
            return doc if doc["retrain"]["state"] == "done" and doc["candidate"] else None

        doc = wait_for(retrained, 180, "the retrain to finish", d=d)
        cand = doc["candidate"]
        b_id = cand["model_id"]
        assert b_id != a_id and cand["origin"] == "retrain"
        assert sum(cand["retrain"]["counts"].values()) == 2 * PER_CLASS  # both halves: feedback + retrain_data
        assert cand["metrics"]["source"].startswith("grouped CV") and cand["metrics"]["auc"] is not None
        assert doc["live"]["metrics"]["source"].startswith("grouped CV")  # side by side with the live head's
        shadow = wait_for(lambda: (s := api.get("/model").json()["shadow"])["judged"] >= 3 and s, 240,
                          "three boxes judged in shadow", d=d)
        # a dot product per box; only a box whose best frame was scored before the candidate came may take an invoke
        assert shadow["fast_path"] >= max(2, shadow["judged"] - 1) and shadow["errors"] == 0
        assert shadow["agreed"] + shadow["disagreed"] == shadow["judged"]
        ratio = metric(d.get("/metrics").text, "boxinspect_shadow_agreement_ratio")
        assert ratio is not None and 0.0 <= ratio <= 1.0
        assert d.metric("boxinspect_shadow_boxes_total") >= 3
        assert {e["model_id"] for e in sub.json("/defect")} <= {a_id}  # the candidate never publishes

        # 4a. promote: the retained message on the real broker names the new model and why
        r = api.post("/model/promote", json={"who": "e2e"})
        assert r.status_code == 200, r.text
        assert r.json()["live"]["model_id"] == b_id and r.json()["previous"]["model_id"] == a_id
        promo = wait_for(lambda: [m for m in model_docs(sub) if m["model_id"] == b_id], 30,
                         "the promoted model on MQTT", d=d)[-1]
        jsonschema.validate(promo, SCHEMA)
        change = promo["change"]
        assert change["action"] == "promote" and change["who"] == "e2e" and promo["previous_model_id"] == a_id
        assert change["from"]["model_id"] == a_id and change["to"]["model_id"] == b_id
        assert change["to"]["metrics"]["auc"] == cand["metrics"]["auc"]
        assert change["from"]["metrics"]["source"].startswith("grouped CV")
        assert change["shadow"]["judged"] >= 3
        with Subscriber(mosquitto.host, mosquitto.port, f"{topic_base}/model") as late:  # retained for newcomers
            wait_for(lambda: late.raw, 15, "the retained model message")
            assert late.raw[-1][2] and json.loads(late.raw[-1][1])["model_id"] == b_id
        assert "model promote:" in d.log()

        # 4b. roll back: one call, the first model is live again
        r = api.post("/model/rollback", json={"who": "e2e"})
        assert r.status_code == 200, r.text
        assert r.json()["live"]["model_id"] == a_id and r.json()["previous"]["model_id"] == b_id
        back = wait_for(lambda: [m for m in model_docs(sub) if m["model_id"] == a_id and m["change"]], 30,
                        "the rollback on MQTT", d=d)[-1]
        jsonschema.validate(back, SCHEMA)
        assert back["change"]["action"] == "rollback" and back["previous_model_id"] == b_id
        with Subscriber(mosquitto.host, mosquitto.port, f"{topic_base}/model") as late:
            wait_for(lambda: late.raw, 15, "the retained model message")
            retained = json.loads(late.raw[-1][1])
            assert late.raw[-1][2] and retained["model_id"] == a_id and retained["change"]["action"] == "rollback"
        assert [h["action"] for h in api.get("/model").json()["history"]] == ["rollback", "promote"]
        d.send(signal.SIGTERM)
        assert d.wait(60) == 0, d.log()[-3000:]
    finally:
        if sub is not None:
            sub.close()
        d.stop()

