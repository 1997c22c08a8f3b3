"""The station's records (issue 26), on the daemon as its own process over the committed tiny model:

- the decision history: filter by verdict, part id and time, paging, the CSV export (same filter), one decision
  with its images, and for an old one the words "pruned" / "not saved" instead of an image;
- shift and lot counters that survive a daemon killed with SIGKILL and started again, with ``n`` beside every
  yield; the lot reset with a reason; the history trimmed to the evidence retention at the next start.

Triggered mode (one frame a part) makes every decision on purpose: parts OK-* while the live package's
threshold (0.99) is above every score of these frames (about 0.8), then a reload of a copy with threshold 0,
so parts NG-* are all defects. No score is near a threshold.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import (
    AUTH,
    TEST_TOKEN,
    DaemonProc,
    edit_sidecar,
    package_copies,
    tiny_daemon_cfg,
    wait_for,
)
from tests.test_daemon import SLOW
from tests.test_operator_browser import browser  # noqa: F401  (the Chromium fixture)

pytestmark = SLOW


def station_packages(tiny_model: Path, into: Path) -> tuple[Path, Path]:
    """``ok.tflite`` (threshold 0.99: every box of tiny_daemon_cfg's frames is OK) and ``ng.tflite`` (threshold 0:
    every box is a defect), the same network."""
    ok, ng = package_copies(tiny_model, into, ("ok", "ng"))
    edit_sidecar(ok, lambda doc: doc.update(threshold=0.99))
    edit_sidecar(ng, lambda doc: doc.update(threshold=0.0))
    return ok, ng


def trigger_parts(api: httpx.Client, names: list[str], d: DaemonProc) -> None:
    """One triggered part per name, each waited for in the history (one decision per part)."""
    for name in names:
        before = api.get("/ui/history", params={"part": name}).json()["total"]
        assert api.post("/trigger", json={"part_id": name}).status_code == 202
        wait_for(lambda n=name, b=before: api.get("/ui/history", params={"part": n}).json()["total"] > b, 60,
                 f"the decision of part {name}", d=d)


def after_model_swap(api: httpx.Client, d: DaemonProc) -> None:
    """Wait until the loop has read a few frames since now: it takes a swapped model's threshold between frames
    (edge/daemon.py ``_follow_model_swap``), so a part triggered after this is decided with the new one."""
    start = api.get("/status").json()["loop"]["frames"]
    wait_for(lambda: api.get("/status").json()["loop"]["frames"] >= start + 3, 30, "three frames after the swap", d=d)


def station_cfg(workdir: Path, ok: Path, **over: Any) -> dict[str, Any]:
    cfg = tiny_daemon_cfg(workdir, ok, decision={"mode": "triggered", "trigger_frames": 1}, **over)
    cfg["model"]["dir"] = str(ok.parent)
    # defects keep their frame and crop; OK boxes none (ok_sample_rate 0); 4 files = the last two defects
    cfg["evidence"] = {"enabled": True, "ok_sample_rate": 0.0, "lossless_crop": False, "max_files": 4}
    return cfg


def test_history_filters_csv_images_and_counters_survive_a_restart(tmp_path, tiny_model, browser):  # noqa: F811
    ok, _ = station_packages(tiny_model, tmp_path / "models")
    cfg = station_cfg(tmp_path, ok, station={"timezone": "Europe/Berlin",
                                              "shifts": [{"name": "early", "start": "06:00"},
                                                         {"name": "late", "start": "14:00"},
                                                         {"name": "night", "start": "22:00"}]})
    cfg["api"]["token"] = TEST_TOKEN
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()
        api = httpx.Client(base_url=d.base, headers=AUTH, timeout=15)
        t0 = datetime.now(timezone.utc) - timedelta(seconds=1)
        trigger_parts(api, ["OK-1", "OK-2"], d)
        live = api.get("/ui/summary").json()["model"]["model_id"]
        r = api.post("/reload", json={"path": "ng.tflite", "confirm": live})
        assert r.status_code == 200 and r.json()["ok"], r.text
        after_model_swap(api, d)
        t_mid = datetime.now(timezone.utc)
        trigger_parts(api, ["NG-1", "NG-2", "NG-3"], d)

        # the filters: verdict, part id (contains), time; paging
        h = api.get("/ui/history").json()
        assert h["total"] == 5 and [i["part_id"] for i in h["items"]] == ["NG-3", "NG-2", "NG-1", "OK-2", "OK-1"]
        ng = api.get("/ui/history", params={"verdict": "ng"}).json()
        assert ng["total"] == 3 and all(i["is_defect"] and i["label"] == "defective" for i in ng["items"])
        oks = api.get("/ui/history", params={"verdict": "ok"}).json()
        assert oks["total"] == 2 and not any(i["is_defect"] for i in oks["items"])
        assert [i["part_id"] for i in api.get("/ui/history", params={"part": "G-2"}).json()["items"]] == ["NG-2"]
        after_mid = api.get("/ui/history", params={"since": t_mid.isoformat()}).json()
        assert [i["part_id"] for i in after_mid["items"]] == ["NG-3", "NG-2", "NG-1"]
        before_mid = api.get("/ui/history", params={"since": t0.isoformat(), "until": t_mid.isoformat()}).json()
        assert [i["part_id"] for i in before_mid["items"]] == ["OK-2", "OK-1"]
        page2 = api.get("/ui/history", params={"limit": 2, "offset": 2}).json()
        assert [i["part_id"] for i in page2["items"]] == ["NG-1", "OK-2"] and page2["total"] == 5
        assert api.get("/ui/history", params={"since": "yesterday"}).status_code == 422

        # CSV: the same filter, one row per decision, no file-system paths
        text = api.get("/ui/history.csv", params={"verdict": "ng"}).text
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["part_id"] for r in rows] == ["NG-3", "NG-2", "NG-1"] and {r["is_defect"] for r in rows} == {"True"}
        assert "/" not in "".join(r["crop"] for r in rows)

        # images: the newest defects have theirs; the oldest defect's were pruned (evidence.max_files 4); OK: not saved
        by_part = {i["part_id"]: i for i in h["items"]}
        assert by_part["NG-3"]["images"] == {"frame": "ok", "crop": "ok"}
        assert by_part["NG-1"]["images"] == {"frame": "pruned", "crop": "pruned"}
        assert by_part["OK-1"]["images"] == {"frame": "not saved", "crop": "not saved"}
        assert api.get(f"/ui/history/{by_part['NG-3']['event_id']}/crop.jpg").content[:2] == b"\xff\xd8"
        assert api.get(f"/ui/history/{by_part['NG-1']['event_id']}/crop.jpg").status_code == 404
        one = api.get(f"/ui/history/{by_part['NG-1']['event_id']}").json()
        assert one["images"]["crop"] == "pruned" and one["event"]["part_id"] == "NG-1"

        # shift and lot: the current shift is one of the configured, counted, with n; the lot reset keeps why and who
        s = api.get("/ui/summary").json()
        assert s["shift"]["name"] in ("early", "late", "night")
        assert (s["shift"]["boxes"], s["shift"]["ng"], s["shift"]["n"], s["shift"]["yield"]) == (5, 3, 5, 0.4)
        assert (s["lot"]["boxes"], s["lot"]["ng"], s["lot"]["n"]) == (5, 3, 5)
        r = api.post("/ui/lot/reset", json={"reason": "pallet 4711 done", "lot": "4712"})
        assert r.status_code == 200 and r.json()["ended"]["boxes"] == 5 and r.json()["lot"]["name"] == "4712"
        assert api.post("/ui/lot/reset", json={"reason": "x"}).status_code == 422  # a reason, not a letter
        trigger_parts(api, ["NG-4"], d)
        s = api.get("/ui/summary").json()
        assert (s["shift"]["boxes"], s["lot"]["name"], s["lot"]["boxes"], s["lot"]["yield"]) == (6, "4712", 1, 0.0)
        lots = api.get("/ui/counters").json()["lots"]
        assert lots[1]["reason"] == "pallet 4711 done" and lots[1]["who"] == "token" and lots[1]["ended"]

        d.stop()  # SIGKILL: no clean shutdown
        d.start()
        d.wait_api()
        s = api.get("/ui/summary").json()
        assert (s["shift"]["boxes"], s["shift"]["ng"], s["lot"]["name"], s["lot"]["boxes"]) == (6, 4, "4712", 1)
        # and what the operator sees after the restart: the page's shift and lot rows, with their n
        browser.get(d.base + "/")
        browser.execute_script("sessionStorage.setItem('boxinspect-token', arguments[0])", TEST_TOKEN)
        browser.get(d.base + "/")
        shift = wait_for(lambda: ("box(es)" in (x := browser.find_element("id", "c-shift").text)) and x, 30,
                         "the page's shift row", d=d)
        assert ": 6 box(es), 4 NG" in shift and "(n = 6)" in shift, shift
        assert browser.find_element("id", "c-lot").text.startswith("4712: 1 box(es)")
        assert s["counters"]["boxes"] == 0  # the process counters start again; the shift's do not
        # the history is kept within the evidence retention: evidence.max_files rows after the start's pass
        h = api.get("/ui/history").json()
        assert h["total"] == 4 and [i["part_id"] for i in h["items"]] == ["NG-4", "NG-3", "NG-2", "NG-1"]
        trigger_parts(api, ["OK-3"], d)  # model.path again after a restart: the OK package
        s = api.get("/ui/summary").json()
        assert (s["shift"]["boxes"], s["shift"]["ng"], s["lot"]["boxes"], s["lot"]["n"]) == (7, 4, 2, 2)
        assert s["lot"]["yield"] == 0.5
    finally:
        d.stop()
