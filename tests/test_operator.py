"""The operator page's endpoints on the real FastAPI app with the real int8 model: feedback lands in the
folder-per-class layout training reads, actions need the token, bad uploads get 4xx, every response carries
the CSP, /docs is served from local files, collection mode and the label queue, and the export command."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from boxinspect.dataset import export
from edge.api.app import create_app
from edge.api.operator import STATIC_DIR
from edge.api.page_state import OperatorState
from edge.api.state import ApiState
from edge.capture.frames import Frame
from edge.judge.classifier import Classifier
from edge.judge.decision import Decision
from edge.runtime.metrics import Metrics
from edge.state import LoadedModel, ModelSlot
from tests.helpers import edge_config, metric

TOKEN = "line-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def loaded(int8_model: Path) -> LoadedModel:
    return LoadedModel(Classifier.load(int8_model))


@pytest.fixture(scope="module")
def images(synth_data: Path) -> dict[str, list[Path]]:
    """A few real synthetic box photos per class folder (ok/, defective/)."""
    return {d.name: sorted(d.glob("*.png"))[:6] + sorted(d.glob("*.jpg"))[:6]
            for d in sorted(synth_data.iterdir()) if d.is_dir()}


def _app(tmp_path: Path, model: Path, loaded: LoadedModel, token: str | None = TOKEN, roi: dict | None = None,
         **operator) -> tuple[TestClient, ApiState]:
    cfg = edge_config(tmp_path, model, mqtt={"enabled": False}, api={"token": token}, roi=roi or {},
                      operator={"feedback_dir": str(tmp_path / "feedback"), **operator})
    state = ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(loaded))
    return TestClient(create_app(state)), state


def _decide(state: ApiState, loaded: LoadedModel, image: np.ndarray) -> dict:
    """One decision the way the daemon makes it: the real model's score, the event, the page's hook."""
    clf = loaded.classifier
    score = clf.score(image)
    thr = clf.threshold
    defect = score >= thr
    now = time.time()
    d = Decision(str(uuid.uuid4()), None, clf.metadata.positive_class if defect else clf.metadata.negative_class,
                 bool(defect), score, score, score, 3, 0, 2, thr, clf.model_id, now, now, "continuous")
    event = d.to_event(state.config.line, state.config.camera)
    state.events.add(event)
    state.metrics.decisions.labels(label=event["label"]).inc()  # as Daemon._on_decision counts it
    if defect:
        state.metrics.defects.inc()
    state.operator.on_decision(event, image, image)
    return event


def _metric(client: TestClient, name: str, **labels: str) -> float:
    return float(metric(client.get("/metrics").text, name, **labels) or 0.0)


def test_page_and_every_response_forbid_external_origins(tmp_path, int8_model, loaded):
    client, _ = _app(tmp_path, int8_model, loaded)
    for path in ("/", "/ui/summary", "/healthz", "/static/app.js", "/docs"):
        r = client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp, path
        assert "http" not in csp and "*" not in csp, path
    assert client.post("/ui/feedback", json={}).headers["content-security-policy"]
    # The page's own files name no other origin (no CDN, no web font, no analytics).
    for f in STATIC_DIR.iterdir():
        text = f.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{f.name} names an external origin"


def test_docs_work_offline(tmp_path, int8_model, loaded):
    client, _ = _app(tmp_path, int8_model, loaded)
    html = client.get("/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for a in assets:
        if a.startswith("data:"):
            continue
        assert a.startswith("/"), f"/docs loads {a} from elsewhere"
        assert client.get(a).status_code == 200, a
    assert "validatorUrl: null" in client.get("/static/docs.js").text  # no badge fetched from the web
    assert client.get("/openapi.json").json()["paths"]["/ui/feedback"]


def test_read_only_views_are_open_and_actions_need_the_token(tmp_path, int8_model, loaded, images):
    client, state = _app(tmp_path, int8_model, loaded)
    img = cv2.imread(str(images["ok"][0]))
    ev = _decide(state, loaded, img)
    for path in ("/", "/ui/summary", "/ui/decisions", f"/ui/decisions/{ev['event_id']}/crop.jpg", "/ui/queue"):
        assert client.get(path).status_code == 200, path
    assert client.get("/ui/summary").json()["token_required"] is True
    body = {"target": "decision", "id": ev["event_id"], "kind": "correct"}
    actions = [
        ("/ui/feedback", {"json": body}),
        ("/ui/check", {"files": {"file": ("a.png", images["ok"][0].read_bytes(), "image/png")}}),
        ("/ui/check/current", {}),
        ("/ui/collection", {"json": {"enabled": True}}),
        ("/ui/queue/x", {"json": {"label": "skip"}}),
        ("/reload", {}),
    ]
    for path, kw in actions:
        r = client.post(path, **kw)
        assert r.status_code == 401, (path, r.status_code, r.text)
        r = client.post(path, headers={"Authorization": "Bearer wrong"}, **kw)
        assert r.status_code == 401, path
    assert not (tmp_path / "feedback").exists() or not any((tmp_path / "feedback").rglob("*.jpg"))
    assert client.post("/ui/feedback", json=body, headers=AUTH).status_code == 200


def test_false_reject_stores_crop_frame_and_record_in_the_training_layout(tmp_path, int8_model, loaded, images):
    client, state = _app(tmp_path, int8_model, loaded)
    neg, pos = loaded.classifier.metadata.negative_class, loaded.classifier.metadata.positive_class
    events = [_decide(state, loaded, cv2.imread(str(p))) for p in images[pos]]
    defect = next(e for e in events if e["is_defect"])
    summary0 = client.get("/ui/summary").json()
    assert summary0["counters"]["boxes"] == len(events) and summary0["counters"]["last_n"]["boxes"] == len(events)
    before = _metric(client, "boxinspect_feedback_total", kind="false_reject")

    r = client.post("/ui/feedback", json={"target": "decision", "id": defect["event_id"], "kind": "false_reject",
                                          "who": "anna"}, headers=AUTH)
    assert r.status_code == 200, r.text
    crop = tmp_path / "feedback" / neg / f"{defect['event_id']}.jpg"
    record = json.loads(crop.with_suffix(".json").read_text())
    assert cv2.imread(str(crop)) is not None
    assert (tmp_path / "feedback" / record["frame"]).is_file()
    assert record["decision_id"] == defect["event_id"] and record["model_id"] == loaded.classifier.model_id
    assert record["score"] == defect["score"] and record["who"] == "anna" and record["kind"] == "false_reject"
    assert record["created_at"].endswith("Z")
    assert _metric(client, "boxinspect_feedback_total", kind="false_reject") == before + 1
    fb = client.get("/ui/summary").json()["feedback"]
    assert fb["counts"] == {neg: 1} and fb["new_since_model"] == 1
    assert next(d for d in client.get("/ui/decisions").json() if d["event_id"] == defect["event_id"])["answered"] == neg

    # Changing one's mind moves the crop: a decision is never in two classes.
    r = client.post("/ui/feedback", json={"id": defect["event_id"], "kind": "correct"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["label"] == pos
    assert not crop.exists() and (tmp_path / "feedback" / pos / crop.name).is_file()
    assert client.get("/ui/summary").json()["feedback"]["counts"] == {pos: 1}

    # training/data.py reads the folder as a data set as it is: the crops, not the frames or the records.
    from training.data import scan

    ok_event = next(e for e in events if not e["is_defect"]) if not all(e["is_defect"] for e in events) else None
    if ok_event is None:
        ok_event = _decide(state, loaded, cv2.imread(str(images[neg][0])))
    kind = "correct" if not ok_event["is_defect"] else "false_reject"
    assert client.post("/ui/feedback", json={"id": ok_event["event_id"], "kind": kind}, headers=AUTH).status_code == 200
    found = scan(tmp_path / "feedback")
    assert sorted(found.classes) == sorted([neg, pos]) and len(found.paths) == 2
    assert all(p.parent.name in (neg, pos) and p.suffix == ".jpg" for p in found.paths)


def test_feedback_that_does_not_fit_is_refused_with_4xx(tmp_path, int8_model, loaded, images):
    client, state = _app(tmp_path, int8_model, loaded)
    ok_event = None
    for p in images["ok"]:
        e = _decide(state, loaded, cv2.imread(str(p)))
        if not e["is_defect"]:
            ok_event = e
            break
    assert ok_event is not None
    cases = [
        ({"id": ok_event["event_id"], "kind": "false_reject"}, 422),  # an OK verdict cannot be a false reject
        ({"id": "no-such-decision", "kind": "correct"}, 404),
        ({"target": "check", "id": "no-such-check", "kind": "correct"}, 404),
        ({"id": ok_event["event_id"], "kind": "maybe"}, 422),
        ({"kind": "correct"}, 422),
        ({"id": "", "kind": "correct"}, 422),
        ({"id": "../../etc/passwd", "kind": "correct"}, 404),
    ]
    for body, code in cases:
        r = client.post("/ui/feedback", json=body, headers=AUTH)
        assert r.status_code == code, (body, r.status_code, r.text)
    r = client.post("/ui/feedback", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert not any((tmp_path / "feedback").rglob("*.jpg")) if (tmp_path / "feedback").exists() else True


def test_manual_check_upload_and_current_frame(tmp_path, int8_model, loaded, images):
    client, state = _app(tmp_path, int8_model, loaded)
    pos = loaded.classifier.metadata.positive_class
    path = images[pos][0]
    r = client.post("/ui/check", files={"file": (path.name, path.read_bytes(), "image/png")}, headers=AUTH)
    assert r.status_code == 200, r.text
    rec = r.json()
    expected = loaded.classifier.score(cv2.imread(str(path)))
    assert rec["score"] == pytest.approx(expected, abs=1e-6)
    assert rec["threshold"] == pytest.approx(loaded.classifier.threshold) and rec["label"] in loaded.classifier.metadata.labels
    seen = cv2.imdecode(np.frombuffer(client.get(f"/ui/checks/{rec['check_id']}/seen.jpg").content, np.uint8), cv2.IMREAD_COLOR)
    spec = loaded.classifier.metadata.input
    assert seen.shape[:2] == (spec.height, spec.width)  # the crop the model saw, at its input size

    kind = "correct"
    r = client.post("/ui/feedback", json={"target": "check", "id": rec["check_id"], "kind": kind}, headers=AUTH)
    assert r.status_code == 200 and (tmp_path / "feedback" / r.json()["label"] / f"{rec['check_id']}.jpg").is_file()

    assert client.post("/ui/check/current", headers=AUTH).status_code == 503  # no frame yet: said, not crashed
    frame = cv2.imread(str(images["ok"][0]))
    state.latest.set_frame(Frame(frame, 7, time.time()))
    r = client.post("/ui/check/current", headers=AUTH)
    assert r.status_code == 200 and r.json()["source"] == "current frame"
    assert client.get("/ui/frame.jpg").headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"", 422),
        (b"not an image at all", 415),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 415),  # a PNG header and nothing behind it
        (b"\xff\xd8\xff\xe0" + b"\x00" * 100, 415),  # a truncated JPEG
    ],
)
def test_bad_uploads_get_4xx(tmp_path, int8_model, loaded, payload, code):
    client, _ = _app(tmp_path, int8_model, loaded)
    r = client.post("/ui/check", files={"file": ("x.jpg", payload, "image/jpeg")}, headers=AUTH)
    assert r.status_code == code, r.text
    assert client.post("/ui/check", headers=AUTH).status_code == 422  # no file field
    assert client.post("/ui/check", data={"file": "text"}, headers=AUTH).status_code == 422


def test_oversized_upload_is_413(tmp_path, int8_model, loaded):
    client, _ = _app(tmp_path, int8_model, loaded)
    big = b"\xff\xd8" + b"\x00" * (10_000_000 + 10)
    r = client.post("/ui/check", files={"file": ("big.jpg", big, "image/jpeg")}, headers=AUTH)
    assert r.status_code == 413


def test_collection_mode_and_label_queue(tmp_path, int8_model, loaded, images):
    client, state = _app(tmp_path, int8_model, loaded, collect_every=2, collect_max_files=2)
    client.headers.update(AUTH)  # issue 24: collection and labels store data, so they need the token
    neg, pos = loaded.classifier.metadata.negative_class, loaded.classifier.metadata.positive_class
    box = cv2.imread(str(images["ok"][0]))
    _decide(state, loaded, box)
    assert client.get("/ui/queue").json()["waiting"] == 0  # collection is off by default
    r = client.post("/ui/collection", json={"enabled": True, "every": 2})
    assert r.status_code == 200 and r.json() == {"enabled": True, "every": 2, "queued": 0}
    r = client.post("/ui/collection", json={"every": 2})  # the interval alone leaves collection on
    assert r.status_code == 200 and r.json()["enabled"] is True
    assert client.post("/ui/collection", json={"every": 0}).status_code == 422
    for _ in range(7):
        _decide(state, loaded, box)
    q = client.get("/ui/queue").json()
    assert q["waiting"] == 2  # 3 collected (every 2nd of 7), retention keeps the newest 2
    assert _metric(client, "boxinspect_collected_total") == 3
    first, second = (item["name"] for item in q["items"])
    assert client.get(f"/ui/queue/{first}.jpg").headers["content-type"] == "image/jpeg"
    assert client.post(f"/ui/queue/{first}", json={"label": "banana"}).status_code == 422
    r = client.post(f"/ui/queue/{first}", json={"label": pos})
    assert r.status_code == 200 and (tmp_path / "feedback" / pos / f"{first}.jpg").is_file()
    assert client.post(f"/ui/queue/{first}", json={"label": pos}).status_code == 404  # already labelled
    assert client.post(f"/ui/queue/{second}", json={"label": "skip"}).status_code == 200
    assert client.get("/ui/queue").json()["waiting"] == 0
    assert not any((tmp_path / "feedback" / ".unlabelled").glob("*.jpg"))
    assert _metric(client, "boxinspect_feedback_total", kind="label") == 1
    assert client.get("/ui/summary").json()["feedback"]["counts"] == {pos: 1}
    assert neg not in client.get("/ui/summary").json()["feedback"]["counts"]


def test_summary_counts_and_rates(tmp_path, int8_model, loaded, images):
    client, state = _app(tmp_path, int8_model, loaded, rate_window=3)
    verdicts = [_decide(state, loaded, cv2.imread(str(p)))["is_defect"] for cls in images for p in images[cls][:3]]
    c = client.get("/ui/summary").json()["counters"]
    assert c["boxes"] == len(verdicts) and c["defects"] == sum(verdicts)
    assert c["last_n"]["boxes"] == 3 and c["last_n"]["rate"] == pytest.approx(sum(verdicts[-3:]) / 3, abs=1e-4)
    assert c["last_hour"]["boxes"] == len(verdicts)
    d = client.get("/ui/decisions?limit=2").json()
    assert len(d) == 2 and all(x["images"] for x in d)
    thumb = client.get(f"/ui/decisions/{d[0]['event_id']}/thumb.jpg")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"


def test_last_hour_rate_keeps_per_minute_counts_not_one_entry_per_decision(tmp_path):
    """The soak's slow RSS creep (docs/BENCHMARKS.md): the last-hour rate kept every decision of the hour. 90
    minutes of one decision a second must leave at most 60 minute counts, and the last hour's counts exact."""
    now = [1_800_000_000.0]  # a whole minute
    op = OperatorState(edge_config(tmp_path), Metrics(), clock=lambda: now[0])
    for i in range(90 * 60):
        now[0] = 1_800_000_000.0 + i
        op.on_decision({"event_id": f"e{i}", "is_defect": i % 3 == 0}, None, None)
    kept = range(30 * 60, 90 * 60)  # the current minute (89) and the 59 before it
    hour = op.rates()["last_hour"]
    assert hour["boxes"] == len(kept) and hour["defects"] == sum(i % 3 == 0 for i in kept)
    assert len(op._hour) <= 60
    now[0] += 2 * 3600.0  # a stopped line: the hour empties
    assert op.rates()["last_hour"] == {"boxes": 0, "defects": 0, "rate": None}


# ------------------------------------------------------------------------------------- dataset export


def _write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def test_export_merges_and_reports_duplicates(tmp_path, images):
    ok_imgs = [cv2.imread(str(p)) for p in images["ok"][:4]]
    bad_imgs = [cv2.imread(str(p)) for p in images["defective"][:3]]
    data = tmp_path / "data"
    _write(data / "ok" / "old0.png", ok_imgs[0])
    _write(data / "defective" / "old1.png", bad_imgs[0])
    fb = tmp_path / "feedback"
    _write(fb / "ok" / "a.jpg", ok_imgs[0])  # already in the data set (re-encoded as JPEG: same hash)
    _write(fb / "ok" / "b.jpg", ok_imgs[1])
    _write(fb / "ok" / "b2.jpg", cv2.flip(ok_imgs[1], 1))  # a mirrored copy of b
    _write(fb / "ok" / "c.jpg", ok_imgs[2])
    _write(fb / "defective" / "d.jpg", bad_imgs[1])
    _write(fb / "defective" / "e.jpg", ok_imgs[3])
    _write(fb / "ok" / "e2.jpg", ok_imgs[3])  # the same picture labelled both ways: a conflict
    _write(fb / ".frames" / "b.jpg", ok_imgs[1])  # full frames are not labels
    (fb / "ok" / "b.json").write_text("{}")

    report = export(fb, data)
    assert report.classes["ok"].existing == 1 and report.classes["defective"].existing == 1
    assert report.classes["defective"].added == 2  # d, e (defective is exported first, alphabetically)
    assert report.classes["ok"].added == 2  # b, c
    assert report.classes["ok"].duplicates == 2  # a (in data), b2 (mirror of b)
    assert report.classes["ok"].conflicts == 1 and report.conflicts[0]["feedback"].endswith("e2.jpg")
    assert sorted(p.name for p in (data / "ok").iterdir()) == ["fb_b.jpg", "fb_c.jpg", "old0.png"]
    assert not (data / ".frames").exists()
    again = export(fb, data)
    assert again.added == 0 and again.duplicates == 7  # a second export adds nothing


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    from boxinspect.cli import main

    assert main(["dataset", "export", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["dataset", "export", str(tmp_path / "empty"), "--out", str(tmp_path / "d")]) == 2
    assert "no class folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the stores on their own


def test_feedback_and_queue_survive_a_restart(tmp_path):
    """A restarted daemon counts the labels already on disk, and the label queue still holds its crops."""
    from edge.learn.feedback import Collector, FeedbackStore

    crop = np.full((40, 60, 3), 120, np.uint8)
    store = FeedbackStore(tmp_path / "fb")
    store.save("a1", "ok", "false_reject", crop, crop, {"decision_id": "a1"})
    t = time.time()
    time.sleep(0.01)
    store.save("b2", "defective", "missed_defect", crop, None, {"decision_id": "b2"})
    again = FeedbackStore(tmp_path / "fb")
    assert again.counts() == {"ok": 1, "defective": 1} and again.since(t) == 1
    with pytest.raises(ValueError):
        again.save("c3", "../up", "correct", crop, None, {})
    col = Collector(tmp_path / "fb", every=1, max_files=5, max_age_days=1, enabled=True)
    col.offer({"event_id": "e1", "label": "ok"}, crop)
    col.offer({"event_id": "e2", "label": "ok"}, None)  # no crop: nothing to save
    assert [i["name"] for i in Collector(tmp_path / "fb", 1, 5, 1).items()] == ["e1"]
    assert FeedbackStore(tmp_path / "fb").counts() == {"ok": 1, "defective": 1}  # the queue is not a class


def test_a_kept_feedback_crop_names_itself_and_a_data_set_photo_does_not(tmp_path):
    """Retrain scores a crop the store kept as it is (``already_cropped``: it is the model's crop) and searches any
    other image: the store's record beside the crop is what tells them apart."""
    import shutil

    from edge.learn.feedback import FeedbackStore, is_kept_crop

    crop = np.full((40, 60, 3), 120, np.uint8)
    FeedbackStore(tmp_path / "fb").save("a1", "ok", "false_reject", crop, crop, {"decision_id": "a1"})
    kept = tmp_path / "fb" / "ok" / "a1.jpg"
    assert is_kept_crop(kept)
    photo = tmp_path / "data" / "ok" / "p1.jpg"  # a folder-per-class data set: no record
    photo.parent.mkdir(parents=True)
    shutil.copy(kept, photo)
    assert not is_kept_crop(photo)
    photo.with_suffix(".json").write_text('{"crop": "ok/other.jpg"}')  # a record of another file
    assert not is_kept_crop(photo)
    photo.with_suffix(".json").write_text("not json")
    assert not is_kept_crop(photo)


def test_live_frame_draws_the_located_box(tmp_path, int8_model, loaded):
    client, state = _app(tmp_path, int8_model, loaded, roi={"x": 100, "y": 50, "width": 300, "height": 250})
    frame = np.full((360, 640, 3), 90, np.uint8)
    state.latest.set_frame(Frame(frame, 1, time.time()))
    state.latest.set_box((200, 120, 320, 240))
    img = cv2.imdecode(np.frombuffer(client.get("/ui/frame.jpg").content, np.uint8), cv2.IMREAD_COLOR)
    b, g, r = (int(v) for v in img[180, 201])  # on the box's left edge
    assert b > 200 and r < 80, (b, g, r)  # drawn in the box colour (BGR 255, 160, 0)
    assert int(frame[180, 201, 0]) == 90  # on a copy: the loop's frame is untouched


def test_check_current_frame_says_no_box_on_an_empty_belt(tmp_path, int8_model, loaded, synth_video):
    """Issue 23: "Check the current frame" locates the box first. On an empty belt it says "no box": nothing is
    classified and there is nothing to answer, so an empty belt can never be stored as "ok"."""
    from tests.helpers import video_frames

    video, gt = synth_video
    box = gt["boxes"][0]
    roi = {k: gt["roi"][k] for k in ("x", "y", "width", "height")}
    client, state = _app(tmp_path, int8_model, loaded, roi=roi)
    frames = list(video_frames(video, box["full_end"] + 1))
    state.latest.set_frame(Frame(frames[0], 0, time.time()))  # the belt before the first box
    r = client.post("/ui/check/current", headers=AUTH)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["no_box"] is True and rec["label"] is None and rec["score"] is None and rec["check_id"] is None
    assert client.post("/ui/feedback", json={"target": "check", "id": "None", "kind": "correct"},
                       headers=AUTH).status_code == 404
    assert not (tmp_path / "feedback").exists() or not list((tmp_path / "feedback").rglob("*.jpg"))
    centre = (box["full_start"] + box["full_end"]) // 2  # the whole box inside the ROI
    state.latest.set_frame(Frame(frames[centre], centre, time.time()))
    rec = client.post("/ui/check/current", headers=AUTH).json()
    assert not rec.get("no_box") and rec["label"] in loaded.labels and rec["check_id"]
