"""The station view (/station, issue 26) in a real browser: headless Chromium driven by Selenium against the daemon
as its own process (the committed tiny model, triggered mode, a real Mosquitto for the stack-light output).

It proves: the result tile's verdict is at least 48 px at 1920x1080 and 1280x800 (measured from the DOM); the
layout does not move at 1280x800 when content grows; an NG is held on the tile (flashing) until someone with
the operate role acknowledges it from the keyboard (with who and when), while newer parts are decided; the SPC
alarm flashes its tile and is acknowledged the same way; the stack light's MQTT topic follows; after the daemon
is killed every tile is greyed out and says "no data since HH:MM:SS". On the operator page, a decision gets
feedback with the keyboard only. Set STATION_SCREENSHOT_DIR=docs/img (scripts/station-screenshots.sh) to
refresh the screenshots in docs/.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from edge.capture.roi import BAD_BGR, OK_BGR, VERDICT_TEXT_BGR
from tests.helpers import (
    DaemonProc,
    Subscriber,
    edit_sidecar,
    package_copies,
    serving,
    tiny_daemon_cfg,
    wait_for,
)
from tests.test_daemon import SLOW
from tests.test_operator_browser import Requests, browser  # noqa: F401 (registers its fixture here)

TOKEN = "station-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STACK_NG = "plant/test/stacklight/red"
STACK_SPC = "plant/test/stacklight/amber"
TILES = ("live", "result", "counters", "alarm")


@pytest.fixture
def station_daemon(tmp_path, tiny_model, mosquitto):
    # two packages of the same network: "ng" calls every part a defect (threshold 0), "ok" none (threshold 1: the
    # int8 output never reaches 1.0); a reload between them decides what the next part is
    ng, ok = package_copies(tiny_model, tmp_path / "models", ("ng", "ok"))
    edit_sidecar(ng, lambda doc: doc.update(threshold=0.0))
    edit_sidecar(ok, lambda doc: doc.update(threshold=1.0))
    cfg = tiny_daemon_cfg(
        tmp_path, ng,
        decision={"mode": "triggered", "trigger_frames": 2},
        mqtt={"enabled": True, "host": mosquitto.host, "port": mosquitto.port,
              "outbox_path": str(tmp_path / "outbox.sqlite3"), "reconnect_min_s": 1, "reconnect_max_s": 2},
        operator={"feedback_dir": str(tmp_path / "feedback")},
        spc={"enabled": True, "consecutive": 2},
        station={"outputs": {"ng": STACK_NG, "spc": STACK_SPC}},
    )
    cfg["api"]["token"] = TOKEN
    cfg["model"]["dir"] = str(ng.parent)
    with serving(tmp_path, cfg) as d:
        yield d


@pytest.fixture
def chromium(request):
    """The operator page test's headless Chromium (tests/test_operator_browser.py ``browser``)."""
    return request.getfixturevalue("browser")


def _text(drv, element_id: str) -> str:
    return drv.find_element("id", element_id).get_attribute("textContent") or ""


def _viewport(drv, width: int, height: int) -> None:
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    wait_for(lambda: drv.execute_script("return [innerWidth, innerHeight]") == [width, height], 10, f"{width}x{height}")


def _font_px(drv, element_id: str) -> float:
    return float(drv.execute_script(f"return parseFloat(getComputedStyle(document.getElementById('{element_id}')).fontSize)"))


def _part(d: DaemonProc, part_id: str, boxes: int) -> dict:
    """Trigger a part and wait until it is decided (the ``boxes``-th decision); its event."""
    r = httpx.post(d.base + "/trigger", json={"part_id": part_id}, headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text
    wait_for(lambda: len(d.get("/events", headers=AUTH).json()) >= boxes, 60, f"part {part_id} decided", d=d)
    event = d.get("/events", params={"limit": 1}, headers=AUTH).json()[0]
    assert event["part_id"] == part_id
    return event


def _tile_event(drv) -> str | None:
    return drv.execute_script("return document.getElementById('st-verdict').getAttribute('data-event')")


def _flashing(drv, element_id: str) -> bool:
    return bool(drv.execute_script(f"return document.getElementById('{element_id}').classList.contains('alarm')"))


def _retained(sub: Subscriber, topic: str) -> dict | None:
    msgs = sub.json(topic)
    return msgs[-1] if msgs else None


def _key(drv, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(drv).send_keys(keys).perform()


def _shot(drv, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    drv.save_screenshot(str(shot))
    if os.environ.get("STATION_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["STATION_SCREENSHOT_DIR"]) / name)


def _rects(drv) -> list:
    return drv.execute_script(
        "return [document.documentElement.clientWidth, ...[...document.querySelectorAll('[data-tile], #st-verdict, #ack-ng')]"
        ".map(e => { const r = e.getBoundingClientRect(); return [e.id, r.x, r.y, r.width, r.height]; })]")


@SLOW
def test_station_view_tile_alarms_acknowledge_and_staleness(station_daemon, chromium, mosquitto, tmp_path):
    d, drv = station_daemon, chromium
    requests = Requests(drv)
    sub = Subscriber(mosquitto.host, mosquitto.port, [STACK_NG, STACK_SPC])
    try:
        _viewport(drv, 1920, 1080)
        drv.get(d.base + "/station")
        wait_for(lambda: drv.execute_script("return document.getElementById('st-live').naturalWidth") > 0, 30,
                 "the live image", d=d)
        assert _text(drv, "st-live-mode") == "live stream"  # MJPEG: /ui/stream.mjpg

        # An NG part: the tile shows it large, flashing, held; the stack light's NG output goes on.
        first = _part(d, "P-1", 1)
        wait_for(lambda: _tile_event(drv) == first["event_id"], 15, "the NG on the tile", d=d)
        assert _text(drv, "st-verdict") == "NG" and "P-1" in _text(drv, "st-part")
        assert drv.find_element("id", "tile-result").get_attribute("data-frozen") == "true"
        assert _flashing(drv, "tile-result")
        assert _font_px(drv, "st-verdict") >= 48, _font_px(drv, "st-verdict")
        wait_for(lambda: drv.execute_script("return document.getElementById('st-crop').naturalWidth") > 0, 15,
                 "the crop that decided")
        assert sub.wait_for(lambda s: (_retained(s, STACK_NG) or {}).get("active") is True, 15), sub.raw

        # A second NG raises the SPC alarm (2 in a row): its tile flashes, its output goes on.
        second = _part(d, "P-2", 2)
        wait_for(lambda: _tile_event(drv) == second["event_id"], 15, "the newest NG on the tile", d=d)
        wait_for(lambda: _flashing(drv, "tile-alarm"), 15, "the SPC alarm", d=d)
        assert _text(drv, "st-spc") == "SPC ALARM"
        assert sub.wait_for(lambda s: (_retained(s, STACK_SPC) or {}).get("active") is True, 15), sub.raw
        wait_for(lambda: "NG 2 / 2 boxes" in _text(drv, "st-ng"), 15, "the counters with the sample size", d=d)
        _shot(drv, tmp_path, "station-alarm.png")

        # An OK part after it: the NG stays on the tile until someone acknowledges it.
        reload = httpx.post(d.base + "/reload", json={"path": "ok.tflite"}, headers=AUTH, timeout=60)
        assert reload.status_code == 200, reload.text
        third = _part(d, "P-3", 3)
        assert third["is_defect"] is False
        wait_for(lambda: "newest: OK P-3" in _text(drv, "st-frozen-note"), 15, "the newest part named under the NG", d=d)
        assert _tile_event(drv) == second["event_id"] and _text(drv, "st-verdict") == "NG"

        # Keyboard only: A without a credential is refused (the token form opens); T, the token, Enter; then A.
        _key(drv, "a")
        wait_for(lambda: drv.find_element("id", "token-form").is_displayed(), 15, "the token form after a refusal")
        assert _tile_event(drv) == second["event_id"]
        _key(drv, TOKEN + "\n")
        _key(drv, "a")
        wait_for(lambda: _tile_event(drv) == third["event_id"], 15, "the OK part after the acknowledgement", d=d)
        assert _text(drv, "st-verdict") == "OK"
        assert drv.find_element("id", "tile-result").get_attribute("data-frozen") == "false"
        assert "acknowledged by token at" in _text(drv, "st-last-ack")
        ack = d.get("/ui/station").json()["acks"][0]
        assert ack["alarm"] == "ng" and ack["event_id"] == second["event_id"] and ack["who"] == "token" and ack["at"]
        assert sub.wait_for(lambda s: (_retained(s, STACK_NG) or {}).get("active") is False, 15), sub.raw
        assert _retained(sub, STACK_NG)["acknowledged_by"] == "token"
        _key(drv, "q")  # the SPC alarm: acknowledged, it stops flashing (it stays raised until its rules clear)
        wait_for(lambda: _text(drv, "st-spc") == "SPC alarm (acknowledged)", 15, "the SPC acknowledgement", d=d)
        assert not _flashing(drv, "tile-alarm")
        assert sub.wait_for(lambda s: (_retained(s, STACK_SPC) or {}).get("active") is False, 15), sub.raw
        assert drv.find_element("id", "ack-ng").get_attribute("disabled") is not None
        _shot(drv, tmp_path, "station.png")

        # 1280x800: still >= 48 px, and nothing moves when content grows (no page scrollbar appears).
        _viewport(drv, 1280, 800)
        assert _font_px(drv, "st-verdict") >= 48, _font_px(drv, "st-verdict")
        before = _rects(drv)
        drv.execute_script("const ul = document.getElementById('st-reasons');"
                           "for (let i = 0; i < 40; i++) { const li = document.createElement('li');"
                           " li.textContent = 'a long reason that grows the page ' + i; ul.append(li); }"
                           "document.getElementById('st-frozen-note').textContent += ' more text '.repeat(40);")
        after = _rects(drv)
        assert after == before, f"the layout moved when content grew:\n{before}\n{after}"
        assert drv.execute_script("return document.documentElement.scrollHeight <= innerHeight")

        # Stop the daemon: every tile goes grey and says since when it has no data.
        killed = time.time()
        d.stop()
        wait_for(lambda: all(drv.find_element("id", f"tile-{t}").get_attribute("data-stale") == "true" for t in TILES),
                 20, "every tile stale after the daemon stopped")
        print(f"tiles stale {time.time() - killed:.1f} s after the kill (limit station.stale_after_s = 3 s + a poll)")
        for t in TILES:
            age = _text(drv, f"age-{t}")
            assert age.startswith("no data since "), age
            shown = datetime.strptime(age.removeprefix("no data since "), "%H:%M:%S").time()
            assert shown <= datetime.fromtimestamp(killed + 1).time(), (t, age)

        external = requests.external()
        assert requests.urls and not external, f"requests to other hosts: {external}"
        csp_errors = [e["message"] for e in drv.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not csp_errors, csp_errors
    finally:
        sub.close()


@SLOW
def test_keyboard_only_feedback_on_a_decision(station_daemon, chromium, tmp_path):
    """The operator page's recent decisions: Tab reaches one, Enter opens it, Tab reaches an answer, Enter stores it."""
    from selenium.webdriver.common.keys import Keys

    d, drv = station_daemon, chromium
    event = _part(d, "K-1", 1)
    drv.get(d.base + "/")
    drv.execute_script(f"sessionStorage.setItem('boxinspect-token', '{TOKEN}')")  # signed in earlier
    wait_for(lambda: drv.execute_script(f"return !!document.querySelector('#decisions li[data-event=\"{event['event_id']}\"]')"),
             30, "the decision on the page", d=d)

    def tab_to(selector: str, limit: int = 80) -> None:
        for _ in range(limit):
            if drv.execute_script("return document.activeElement.matches(arguments[0])", selector):
                return
            _key(drv, Keys.TAB)
        raise AssertionError(f"Tab never reached {selector}")

    tab_to("#decisions li")
    assert drv.execute_script("return document.activeElement.getAttribute('data-event')") == event["event_id"]
    _key(drv, Keys.ENTER)
    wait_for(lambda: drv.execute_script("return document.getElementById('detail').open"), 10, "the decision dialog")
    tab_to("#d-answers button[data-kind='false_reject']")
    _key(drv, Keys.ENTER)
    record = tmp_path / "feedback" / "ok" / f"{event['event_id']}.json"
    wait_for(record.is_file, 15, str(record), d=d)
    assert json.loads(record.read_text())["kind"] == "false_reject"
    # targets of at least 44 px, and a disabled button does not look like an enabled one
    sizes = drv.execute_script("return [...document.querySelectorAll('button')].filter(b => b.offsetParent)"
                               ".map(b => [b.id || b.textContent, b.getBoundingClientRect().height])")
    assert sizes and all(h >= 44 for _, h in sizes), sizes
    looks = drv.execute_script("const b = document.getElementById('m-promote'); return [b.disabled, getComputedStyle(b).borderStyle]")
    assert looks == [True, "dashed"], looks


def _luminance(bgr: tuple[int, int, int]) -> float:
    def lin(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    b, g, r = bgr
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def test_the_verdict_label_on_the_frame_meets_wcag_aa():
    """The OK label drawn on the frame was white on green, 2.27:1; WCAG AA asks for 4.5:1."""
    for background in (OK_BGR, BAD_BGR):
        hi, lo = sorted((_luminance(background), _luminance(VERDICT_TEXT_BGR)), reverse=True)
        assert (hi + 0.05) / (lo + 0.05) >= 4.5, background
    hi, lo = _luminance((255, 255, 255)), _luminance(OK_BGR)
    assert round((hi + 0.05) / (lo + 0.05), 2) == 2.27  # the old label, for the record


class _Reader(threading.Thread):
    """One MJPEG client that keeps reading, as a browser does, until told to stop."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.status, self.parts, self.stop = url, 0, 0, threading.Event()
        self.type, self.error = "", None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=10) as r:
                self.status = r.status_code
                self.type = r.headers.get("content-type", "")
                for chunk in r.iter_bytes():
                    self.parts += chunk.count(b"--boxinspect-frame")
                    if self.stop.is_set() or r.status_code != 200:
                        return
        except httpx.HTTPError as e:  # the daemon went away: the test's own assertions say what was seen
            self.error = e


@SLOW
def test_the_mjpeg_stream_is_bounded_and_a_closed_stream_frees_its_slot(station_daemon):
    """``station.stream_max_clients`` (4) streams at once, each a multipart JPEG stream; the fifth gets 503 (the page
    then polls /ui/frame.jpg); closing one lets the next in."""
    d = station_daemon
    wait_for(lambda: d.get("/ui/frame.jpg").status_code == 200, 30, "a first frame", d=d)
    url = d.base + "/ui/stream.mjpg"
    readers = [_Reader(url) for _ in range(4)]
    try:
        for r in readers:
            r.start()
        wait_for(lambda: all(r.parts >= 2 for r in readers), 30, "frames on four streams", d=d)
        assert all(r.status == 200 and r.type.startswith("multipart/x-mixed-replace") for r in readers)
        refused = d.get("/ui/stream.mjpg")
        assert refused.status_code == 503 and "stream_max_clients" in refused.json()["detail"]
        readers[0].stop.set()
        readers[0].join(15)

        def next_one_in() -> bool:
            r = _Reader(url)
            r.start()
            readers.append(r)
            wait_for(lambda: r.status != 0, 15, "an answer")
            return r.status == 200

        wait_for(next_one_in, 30, "a slot freed by the closed stream", interval=0.5, d=d)
    finally:
        for r in readers:
            r.stop.set()
        for r in readers:
            r.join(15)
