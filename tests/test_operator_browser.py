"""The operator page in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by
Selenium, against the daemon as its own process running the generated conveyor video with the real int8
model and a real Mosquitto.

It proves: the page (and /docs) load with no request to any other host (Chrome's performance log), the
counters move, a manual check shows a verdict, an action without the token is refused, a false-reject
click writes a crop into feedback/<negative class>/ while the page's counter and /metrics go up, and collection
mode fills the label queue, which the keyboard empties (2 = defect).
A screenshot is saved beside the test's files; set BOXINSPECT_SCREENSHOT=docs/img/operator.png to refresh
the one in the README.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import DaemonProc, edit_sidecar, package_copies, serving, wait_for
from tests.test_daemon import SLOW, base_cfg, positive_class

pytestmark = SLOW

TOKEN = "browser-test-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
CHROME_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--window-size=1280,1500",
)


@pytest.fixture
def daemon(tmp_path, int8_model, synth_video, mosquitto):
    video, gt = synth_video
    # model.dir holds the live package and a candidate for the Model panel: the same network with threshold 0,
    # so it calls every box a defect and disagrees with the live model on every OK box
    live, cand = package_copies(int8_model, tmp_path / "models", ("live", "cand"))
    edit_sidecar(cand, lambda doc: doc.update(threshold=0.0))
    cfg = base_cfg(tmp_path, live, video, gt, mosquitto, api={"token": TOKEN},
                   operator={"feedback_dir": str(tmp_path / "feedback")}, shadow={"dir": str(tmp_path / "shadow")})
    cfg["model"]["threshold"] = None  # the model's own threshold: OK and defect boxes both appear
    with serving(tmp_path, cfg) as d:
        yield d


@pytest.fixture
def browser(tmp_path):
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            pytest.fail(f"{path} not found: apt-get install -y {pkg} (.ci/run installs it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}")
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # A driver path given to Service: Selenium Manager is not asked to find or download anything.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class Requests:
    """Every URL the browser asked for, from Chrome's performance log (read incrementally)."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self.urls: list[str] = []

    def collect(self) -> list[str]:
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                self.urls.append(msg["params"]["request"]["url"])
            elif msg["method"] == "Network.webSocketCreated":
                self.urls.append(msg["params"]["url"])
        return self.urls

    def external(self) -> list[str]:
        out = []
        for url in self.collect():
            parts = urlsplit(url)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS:
                out.append(url)
        return out


def _text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent") or ""


def _int(driver, element_id: str) -> int:
    t = _text(driver, element_id).strip()
    return int(t) if t.isdigit() else -1


def _click_defect_decision(driver, d: DaemonProc) -> str:
    """Open a defect decision of the recent list (waits for one) and return its event id."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def click() -> str | None:
        items = driver.find_elements(By.CSS_SELECTOR, "#decisions li[data-defect='true']")
        if not items:
            return None
        try:  # the list is redrawn when a decision arrives: then look again
            event_id = items[0].get_attribute("data-event")
            items[0].click()
            return event_id
        except StaleElementReferenceException:
            return None

    event_id = wait_for(click, 240, "a defect decision on the page", d=d)
    wait_for(lambda: driver.execute_script("return document.getElementById('detail').open"), 10, "the decision dialog")
    return event_id


RED_CELLS_JS = """
const c = document.getElementById('d-heat'), px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0; for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && px[i] > 200 && px[i + 1] < 60) n++;
return n;"""


def _check_the_map_is_drawn(driver) -> None:
    """Issue 29: the open decision's map (a supervised package's: its head on every cell) is drawn over the crop;
    a cell at or above the threshold (100 %) is painted red."""
    wait_for(lambda: "where the head sees a defect" in _text(driver, "d-heat-caption"), 15, "the map's caption")
    largest = int(_text(driver, "d-heat-caption").split("largest ")[1].split(" %")[0])
    assert driver.execute_script("return !document.getElementById('d-heat').hidden")
    if largest >= 100:
        wait_for(lambda: driver.execute_script(RED_CELLS_JS) > 0, 10, "red cells on the map")


def test_operator_page_in_a_real_browser(daemon, browser, tmp_path, synth_data, int8_model):
    from selenium.webdriver.common.by import By

    d, drv = daemon, browser
    negative = next(c for c in json.loads(Path(str(int8_model) + ".json").read_text())["labels"]
                    if c != positive_class(int8_model))
    requests = Requests(drv)
    drv.get(d.base + "/")

    # Live: the frame is drawn and shown, the counters move.
    wait_for(lambda: drv.execute_script("return document.getElementById('live').naturalWidth") > 0, 60,
             "the live frame", d=d)
    wait_for(lambda: _int(drv, "c-boxes") >= 1, 240, "the first box on the page", d=d)
    first = _int(drv, "c-boxes")
    wait_for(lambda: _int(drv, "c-boxes") > first, 240, "the box counter to move", d=d)
    assert _text(drv, "st-camera").startswith("ok")
    assert "run_int8" in _text(drv, "st-model") or _text(drv, "st-model") not in ("", "not loaded")

    # An action without the token is refused: nothing is written, the page says so and asks for the token.
    _click_defect_decision(drv, d)
    _check_the_map_is_drawn(drv)
    drv.find_element(By.CSS_SELECTOR, "#d-answers button[data-kind='false_reject']").click()
    wait_for(lambda: "Refused" in _text(drv, "toast"), 15, "the refusal message")
    assert drv.find_element(By.ID, "token-form").is_displayed()
    assert not list((tmp_path / "feedback").rglob("*.jpg")) if (tmp_path / "feedback").exists() else True
    r = httpx.post(d.base + "/ui/feedback", json={"id": "x", "kind": "correct"}, timeout=10)
    assert r.status_code == 401

    # The token, entered once, is kept for the session.
    drv.find_element(By.ID, "token-input").send_keys(TOKEN)
    drv.find_element(By.ID, "token-save").click()
    assert drv.execute_script("return sessionStorage.getItem('boxinspect-token')") == TOKEN

    # Manual check of an uploaded photo: verdict, score, threshold and the crop the model saw.
    photo = sorted((synth_data / positive_class(int8_model)).glob("*.jpg"))[0]
    drv.find_element(By.ID, "check-file").send_keys(str(photo))
    wait_for(lambda: _text(drv, "check-verdict").strip() != "", 30, "the manual check's verdict", d=d)
    assert _text(drv, "check-verdict").lower() in {c.lower() for c in json.loads(
        Path(str(int8_model) + ".json").read_text())["labels"]}
    assert 0.0 <= float(_text(drv, "check-score")) <= 1.0 and float(_text(drv, "check-threshold")) > 0
    wait_for(lambda: drv.execute_script("return document.getElementById('check-seen').naturalWidth") > 0, 15,
             "the crop the model saw")

    # A false reject: the crop lands in feedback/<negative class>/, the page and /metrics count it.
    assert _int(drv, "fb-new") == 0
    metric_before = d.metric("boxinspect_feedback_total", kind="false_reject")
    event_id = _click_defect_decision(drv, d)
    drv.find_element(By.CSS_SELECTOR, "#d-answers button[data-kind='false_reject']").click()
    crop = tmp_path / "feedback" / negative / f"{event_id}.jpg"
    wait_for(crop.is_file, 15, f"{crop}", d=d)
    record = json.loads(crop.with_suffix(".json").read_text())
    assert record["decision_id"] == event_id and record["kind"] == "false_reject" and record["model_id"]
    assert (tmp_path / "feedback" / record["frame"]).is_file()
    wait_for(lambda: _int(drv, "fb-new") == 1, 15, "the page's 'new labels' counter", d=d)
    assert f"{negative}: 1" in _text(drv, "fb-counts")
    assert d.metric("boxinspect_feedback_total", kind="false_reject") == metric_before + 1

    # Collection mode from the page, then the label queue by keyboard: 2 = defect.
    every = drv.find_element(By.ID, "collect-every")
    every.clear()
    every.send_keys("1")
    drv.find_element(By.ID, "collect-on").click()
    wait_for(lambda: drv.find_element(By.ID, "queue").is_displayed(), 60, "a crop in the label queue", d=d)
    wait_for(lambda: drv.execute_script("return document.getElementById('queue-img').naturalWidth") > 0, 15,
             "the queued crop")
    drv.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "operator.png"
    drv.save_screenshot(str(shot))
    if os.environ.get("BOXINSPECT_SCREENSHOT"):
        shutil.copy(shot, os.environ["BOXINSPECT_SCREENSHOT"])
    drv.execute_script("document.activeElement.blur()")  # keys typed into an input field are not labels
    drv.find_element(By.TAG_NAME, "body").send_keys("2")
    positive_dir = tmp_path / "feedback" / positive_class(int8_model)
    labelled = wait_for(lambda: list(positive_dir.glob("*.json")), 15, "the keyboard label in feedback/", d=d)
    assert json.loads(labelled[0].read_text())["kind"] == "label"
    assert d.metric("boxinspect_feedback_total", kind="label") == 1

    # The Model panel: a candidate runs in shadow from the page, its disagreements wait with label buttons (a
    # label is feedback like any other), promote makes it live and roll back returns, each one click.
    def live_model() -> str:
        return d.get("/model", headers={"Authorization": f"Bearer {TOKEN}"}).json()["live"]["model_id"]

    live_id = live_model()
    drv.find_element(By.ID, "m-candidate").send_keys("cand.tflite")
    drv.find_element(By.ID, "m-load").click()
    wait_for(lambda: "runs in shadow" in _text(drv, "toast"), 30, "the candidate loaded from the page", d=d)
    cand_id = wait_for(lambda: drv.execute_script(
        "const r = document.querySelector('#model-rows tr[data-row=model_id]');"
        "return r && r.children[2].textContent !== '–' ? r.children[2].textContent : null"), 15, "the candidate column")
    assert cand_id != live_id
    wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, f"#disagreements li button[data-label='{negative}']"), 240,
             "a disagreement with label buttons on the page", d=d)
    assert "agreement" in _text(drv, "shadow-stats")
    item = drv.find_elements(By.CSS_SELECTOR, "#disagreements li")[0]
    name = item.get_attribute("data-name")
    item.find_element(By.CSS_SELECTOR, f"button[data-label='{negative}']").click()
    wait_for((tmp_path / "feedback" / negative / f"{name}.jpg").is_file, 15, "the disagreement's label in feedback/", d=d)
    drv.find_element(By.ID, "m-promote").click()
    wait_for(lambda: drv.execute_script("return document.getElementById('confirm-change').open"), 10, "the dialog")
    assert cand_id in _text(drv, "confirm-text") and live_id in _text(drv, "confirm-text")  # issue 26: names both
    drv.find_element(By.ID, "confirm-yes").click()
    wait_for(lambda: "Promoted" in _text(drv, "toast"), 60, "the promotion", d=d)
    assert live_model() == cand_id
    wait_for(lambda: drv.find_element(By.ID, "m-rollback").is_enabled(), 15, "the rollback button")
    drv.find_element(By.ID, "m-rollback").click()
    wait_for(lambda: drv.execute_script("return document.getElementById('confirm-change').open"), 10, "the dialog")
    drv.find_element(By.ID, "confirm-yes").click()
    wait_for(lambda: "Rolled back" in _text(drv, "toast"), 60, "the rollback", d=d)
    assert live_model() == live_id

    # Usable on a phone-sized screen: one column, nothing wider than the screen.
    drv.set_window_size(390, 844)
    wait_for(lambda: drv.execute_script("return window.innerWidth") <= 400, 10, "the phone-sized window")
    overflow = drv.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a 390 px screen"
    drv.save_screenshot(str(tmp_path / "operator-phone.png"))

    # /docs renders from the daemon's own files too.
    drv.get(d.base + "/docs")
    wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"), 60, "Swagger UI to render", d=d)

    external = requests.external()
    assert requests.urls and not external, f"requests to other hosts: {external}"
    csp_errors = [e["message"] for e in drv.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not csp_errors, csp_errors


def _roi_colour(jpeg: bytes, roi: dict) -> str:
    """The colour of the ROI rectangle's top edge (the middle of it, which no box reaches) in a drawn frame:
    ``verdict`` (the green or red of a drawn verdict) or ``none`` (the yellow of a ROI without one). The frame is
    640 px wide (operator.frame_width), as the video."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    x = roi["x"] + roi["width"] // 2
    b, g, r = (float(v) for v in np.median(img[roi["y"] - 1:roi["y"] + 1, x - 2:x + 3].reshape(-1, 3), axis=0))
    if g > 150 and r > 150 and b < 120:
        return "none"
    if (g > 150 and r < 80 and b < 80) or (r > 150 and g < 80 and b < 80):
        return "verdict"
    return f"unclear (bgr {b:.0f},{g:.0f},{r:.0f})"


def _outlined(jpeg: bytes) -> bool:
    """The live frame shows the box outline (the operator page's orange-blue BGR (255, 160, 0))."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)
    near = (np.abs(img[..., 0] - 255) < 50) & (np.abs(img[..., 1] - 160) < 50) & (img[..., 2] < 60)
    return int(near.sum()) >= 100


def test_the_page_says_inspecting_while_a_box_is_in_view_and_shows_the_result_on_its_own_frame(
        daemon, browser, synth_video, tmp_path):
    """Issue 23: while a box is in the ROI the page shows "inspecting..." with the box outlined, never a verdict
    left from the previous box; the verdict of the last box decided is drawn on the frame that decided it, in a
    result tile beside the live view. A screenshot of the tile is saved (BOXINSPECT_SCREENSHOT_DIR=docs/img)."""
    from selenium.webdriver.common.by import By

    d, drv = daemon, browser
    _, gt = synth_video
    roi = gt["roi"]
    drv.get(d.base + "/")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    wait_for(lambda: d.get("/events", headers=auth).json(), 240, "a first decision", d=d)  # a last verdict exists

    # The live view while the next box rides through: "inspecting..." on the page; the frame never carries a verdict.
    seen: dict[str, int] = {}

    def sample() -> bool:
        jpeg = d.get("/ui/frame.jpg").content
        colour = _roi_colour(jpeg, roi)
        assert colour == "none", f"the live view drew {colour} on the ROI, {seen}"
        inspecting = d.get("/ui/summary").json()["inspecting"]
        if inspecting and _outlined(jpeg):
            seen["outlined"] = seen.get("outlined", 0) + 1
        state = _text(drv, "live-state")
        assert state in ("inspecting…", "waiting for a box"), state
        key = f"{'inspecting' if inspecting else 'idle'}/{state}"
        seen[key] = seen.get(key, 0) + 1
        return (seen.get("inspecting/inspecting…", 0) >= 3 and seen.get("idle/waiting for a box", 0) >= 1
                and seen.get("outlined", 0) >= 1)

    wait_for(sample, 240, "the page saying inspecting… while a box is in view", interval=0.3, d=d)

    # The result tile: the last decision's verdict, drawn on its representative frame.
    def tile_matches_last() -> dict | None:
        last = d.get("/events", params={"limit": 1}, headers=auth).json()[0]
        shown = drv.execute_script("return document.getElementById('result-verdict').getAttribute('data-event')")
        return last if shown == last["event_id"] else None

    last = wait_for(tile_matches_last, 60, "the result tile to show the last decision", d=d)
    assert _text(drv, "result-verdict") == last["label"]
    result_jpeg = d.get("/ui/result.jpg").content
    assert _roi_colour(result_jpeg, roi) == "verdict"
    assert d.get("/ui/summary").json()["result"]["frame"] == last["decided_on"]["representative_frame"]
    wait_for(lambda: drv.execute_script("return document.getElementById('result-img').naturalWidth") > 0, 15,
             "the result image")
    tile = drv.find_element(By.CLASS_NAME, "live-pair")
    drv.execute_script("arguments[0].scrollIntoView()", tile)
    shot = tmp_path / "result-tile.png"
    tile.screenshot(str(shot))
    if os.environ.get("BOXINSPECT_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["BOXINSPECT_SCREENSHOT_DIR"]) / "result-tile.png")
