"""Roles, confirmation and the audit trail (issue 26), end to end: the daemon as its own process (committed tiny
model, triggered mode), a real Mosquitto, users made with the real CLI (``boxinspect users add``), and Debian's
headless Chromium on the operator page and the history page.

- The role matrix: a viewer, an operator and an engineer each try every action (feedback, lot reset, reload,
  candidate, retrain, promote, roll back) and a view; 2xx or 403, as the roles say. ``api.viewing: token``:
  nobody anonymous sees anything but the page shells.
- ``who`` is the user in every feedback record and model change.
- Promote with a confirmation naming another model: 409, nothing changes. Promote from the page: the dialog names
  both models, and the change shows on the history page's audit log, in the daemon's log and on the retained
  ``<base>/audit`` topic with the engineer's name.
- The history page: the NG filter, the CSV link with the same filter, a pruned decision opened shows words, not a
  broken image. Screenshots: set STATION_SCREENSHOTS=docs/img to refresh docs/img/history.png and audit.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import DaemonProc, Subscriber, topic_base, wait_for
from tests.helpers import element_text as _text
from tests.test_daemon import SLOW
from tests.test_operator_browser import browser  # noqa: F401  (the Chromium fixture)
from tests.test_station_records import after_model_swap, station_cfg, station_packages, trigger_parts

pytestmark = SLOW

USERS = {"vera": "viewer", "otto": "operator", "erin": "engineer"}


def add_users(users_file: Path) -> dict[str, str]:
    """name -> token, each made by ``boxinspect users add`` (which prints the token once, on its last line)."""
    out = {}
    for name, role in USERS.items():
        r = subprocess.run([sys.executable, "-m", "boxinspect.cli", "users", "add", name, "--role", role,
                            "--file", str(users_file)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = r.stdout.strip().splitlines()[-1]
    text = users_file.read_text()
    assert all(tok not in text for tok in out.values()) and text.count("sha256$") == 3  # hashes only
    assert oct(users_file.stat().st_mode & 0o777) == "0o600"
    return out


def role_matrix(d: DaemonProc, tokens: dict[str, str], event_ids: list[str]) -> None:
    clients = {n: httpx.Client(base_url=d.base, headers={"Authorization": f"Bearer {t}"}, timeout=30)
               for n, t in tokens.items()}

    def live() -> str:
        return clients["vera"].get("/ui/summary").json()["model"]["model_id"]

    actions = [  # (what, method, path, body (a callable: made just before the request), who may)
        ("feedback", "POST", "/ui/feedback", lambda n: {"id": event_ids[list(USERS).index(n)], "kind": "correct"}, {"otto", "erin"}),
        ("lot reset", "POST", "/ui/lot/reset", lambda n: {"reason": f"matrix {n}"}, {"otto", "erin"}),
        ("reload", "POST", "/reload", lambda n: {"confirm": live()}, {"erin"}),
        ("candidate", "POST", "/model/candidate", lambda n: {"path": "ng.tflite"}, {"erin"}),
        ("retrain", "POST", "/model/retrain", lambda n: {}, {"erin"}),
        ("promote", "POST", "/model/promote", lambda n: {"confirm": live()}, {"erin"}),
        ("rollback", "POST", "/model/rollback", lambda n: {"confirm": live()}, {"erin"}),
        ("view history", "GET", "/ui/history", None, {"vera", "otto", "erin"}),
        ("view audit", "GET", "/ui/audit", None, {"vera", "otto", "erin"}),
    ]
    seen = {}
    for what, method, path, body, allowed in actions:
        for name in USERS:  # viewer, operator, engineer: the engineer last, so the change happens once
            kw = {"json": body(name)} if body is not None else {}
            status = clients[name].request(method, path, **kw).status_code
            seen[(what, name)] = status
            ok = 200 <= status < 300
            assert ok == (name in allowed) and (ok or status == 403), (what, name, status, seen)
    anon = httpx.Client(base_url=d.base, timeout=10)
    assert anon.get("/ui/history").status_code == 401 and anon.get("/ui/summary").status_code == 401
    assert anon.get("/static/history.html").status_code == 200  # the shell only; its data needs a login


def test_roles_confirmation_and_audit_trail_end_to_end(tmp_path, tiny_model, mosquitto, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    ok, _ = station_packages(tiny_model, tmp_path / "models")
    cfg = station_cfg(tmp_path, ok, mqtt={"enabled": True, "host": mosquitto.host, "port": mosquitto.port,
                                          "outbox_path": "outbox.sqlite3"},
                      operator={"feedback_dir": str(tmp_path / "feedback")}, shadow={"dir": str(tmp_path / "shadow")})
    cfg["api"].update(users_file=str(tmp_path / "api-users"), viewing="token")
    tokens = add_users(tmp_path / "api-users")
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()
        api = httpx.Client(base_url=d.base, headers={"Authorization": f"Bearer {tokens['erin']}"}, timeout=30)
        trigger_parts(api, ["OK-1", "OK-2", "OK-3"], d)
        ids = [i["event_id"] for i in api.get("/ui/history").json()["items"]]
        role_matrix(d, tokens, ids)
        records = [json.loads(p.read_text()) for p in (tmp_path / "feedback").glob("*/*.json")]
        assert sorted(r["who"] for r in records) == ["erin", "otto"], records
        assert [h["who"] for h in api.get("/model").json()["history"]] == ["erin", "erin"]
        wait_for(lambda: api.get("/model").json()["retrain"]["state"] != "running", 60, "the retrain to end", d=d)

        # a confirmation that names a model other than the live one: 409, nothing changes
        live = api.get("/ui/summary").json()["model"]["model_id"]
        assert api.post("/model/candidate", json={"path": "ng.tflite"}).status_code == 200
        cand = api.get("/model").json()["candidate"]["model_id"]
        r = api.post("/model/promote", json={"confirm": cand})
        assert r.status_code == 409 and live in r.json()["detail"] and api.get("/ui/summary").json()["model"]["model_id"] == live

        # promote from the page, as erin: the dialog names both models
        drv = browser
        drv.get(d.base + "/static/history.html")
        drv.execute_script("sessionStorage.setItem('boxinspect-token', arguments[0])", tokens["erin"])
        drv.get(d.base + "/")
        wait_for(lambda: drv.find_element(By.ID, "m-promote").is_enabled(), 30, "the promote button", d=d)
        drv.find_element(By.ID, "m-promote").click()
        wait_for(lambda: drv.execute_script("return document.getElementById('confirm-change').open"), 10, "the dialog")
        text = _text(drv, "confirm-text")
        assert cand in text and live in text, text
        drv.find_element(By.ID, "confirm-yes").click()
        wait_for(lambda: "Promoted" in _text(drv, "toast"), 60, "the promotion", d=d)
        assert api.get("/ui/summary").json()["model"]["model_id"] == cand

        # the audit trail: in the log, retained on <base>/audit, on the history page
        assert f"AUDIT promote by erin: promoted {cand} over {live}" in d.log()
        with Subscriber(mosquitto.host, mosquitto.port, f"{topic_base(cfg)}/audit") as sub:
            wait_for(lambda: sub.raw, 15, "the retained audit message")
            topic, payload, retained = sub.raw[0]
            entry = json.loads(payload)
            assert retained and (entry["who"], entry["action"], entry["before"], entry["after"]) == ("erin", "promote", live, cand)
        after_model_swap(api, d)
        trigger_parts(api, ["NG-1", "NG-2", "NG-3"], d)  # the promoted package calls every box a defect
        drv.get(d.base + "/static/history.html")
        row = wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "#a-rows tr[data-action='promote']"), 30, "the audit row")
        assert row[0].find_element(By.CSS_SELECTOR, "td.who").text == "erin" and cand in row[0].text
        actions = [r.get_attribute("data-action") for r in drv.find_elements(By.CSS_SELECTOR, "#a-rows tr")]
        assert {"feedback", "lot reset", "reload", "candidate", "retrain", "promote", "rollback"} <= set(actions)
        _shot(drv, tmp_path, "audit.png", "audit")

        # the history page: the NG filter, the CSV with the same filter, a pruned decision opened
        wait_for(lambda: len(drv.find_elements(By.CSS_SELECTOR, "#h-rows tr")) >= 6, 30, "the history rows")
        Select(drv.find_element(By.ID, "f-verdict")).select_by_value("ng")
        drv.find_element(By.ID, "f-apply").click()
        wait_for(lambda: _text(drv, "h-total") == "(3 matching)", 15, "the NG filter")
        verdicts = [td.text for td in drv.find_elements(By.CSS_SELECTOR, "#h-rows tr td:nth-child(2)")]
        assert verdicts == ["NG", "NG", "NG"]
        href = drv.find_element(By.ID, "csv").get_attribute("href")
        assert "verdict=ng" in href
        rows = api.get(href).text.strip().splitlines()
        assert len(rows) == 4 and all(",True," in r for r in rows[1:])
        oldest = drv.find_elements(By.CSS_SELECTOR, "#h-rows tr")[-1]  # NG-1: its evidence was pruned
        oldest.find_element(By.CSS_SELECTOR, "button.open").click()
        wait_for(lambda: drv.execute_script("return document.getElementById('h-detail').open"), 10, "the detail")
        wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "#hd-images p.gone"), 10, "the pruned note")
        assert "evidence retention" in drv.find_element(By.CSS_SELECTOR, "#hd-images p.gone").text
        assert not drv.find_elements(By.CSS_SELECTOR, "#hd-images img")
        drv.execute_script("document.getElementById('h-detail').close()")
        drv.find_elements(By.CSS_SELECTOR, "#h-rows tr")[0].find_element(By.CSS_SELECTOR, "button.open").click()
        wait_for(lambda: drv.execute_script(
            "const i = document.querySelectorAll('#hd-images img');"
            "return i.length === 2 && [...i].every((x) => x.complete && x.naturalWidth > 0)"), 15, "the newest NG's images")
        drv.execute_script("document.getElementById('h-detail').close(); window.scrollTo(0, 0)")
        assert "n = " in _text(drv, "h-shift") and drv.find_elements(By.CSS_SELECTOR, "#trend polyline")
        _shot(drv, tmp_path, "history.png", None)
        broken = drv.execute_script("return [...document.images].filter((i) => i.complete && i.naturalWidth === 0).length")
        assert broken == 0
    finally:
        d.stop()


def _shot(drv, tmp_path: Path, name: str, scroll_to: str | None) -> None:
    if scroll_to:
        drv.execute_script(f"document.getElementById('{scroll_to}').scrollIntoView()")
    shot = tmp_path / name
    drv.save_screenshot(str(shot))
    target = os.environ.get("STATION_SCREENSHOTS")
    if target:
        shutil.copy(shot, Path(target) / name)
