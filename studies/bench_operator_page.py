#!/usr/bin/env python3
"""What an open operator page costs the inspection loop: loop fps with the page closed vs open.

Runs the daemon as its own process on a video, then alternates windows of ``--seconds``: page closed, page
open, and reports the loop's fps and the daemon's CPU (process CPU seconds from /metrics, so it includes the
API thread that serves the page). With ``--pace realtime`` (default) the video plays at its own fps as a
camera would, and the page's cost shows as CPU; with ``--pace fast`` every frame is taken as fast as the loop
goes, and it shows as fps (noisy on a shared machine). "Open" is either N emulated pages making exactly the requests
edge/api/static/app.js makes (frame every 0.5 s, summary every 1 s, decisions every 2 s, queue every 3 s) or,
with ``--browser``, real headless Chromium windows. The windows alternate (closed, open, closed, open, ...)
so a neighbour's load on a shared machine hits both alike. Prints one Markdown table row per condition.

    .venv/bin/python studies/bench_operator_page.py --model runs/m1/model_int8.tflite \\
        --video data/synth/video/conveyor.mp4 --rounds 3 --seconds 20 --pages 1,4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from edge.deliver.broker import free_port

PAGE_REQUESTS = (("/ui/frame.jpg", 0.5), ("/ui/summary", 1.0), ("/ui/decisions?limit=24", 2.0), ("/ui/queue?limit=1", 3.0))


class EmulatedPage:
    """One page's polling, request for request, in a thread."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = threading.Event()
        self.requests = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        due = {path: 0.0 for path, _ in PAGE_REQUESTS}
        with httpx.Client(base_url=self.base, timeout=10) as c:
            while not self.stop.is_set():
                now = time.monotonic()
                for path, every in PAGE_REQUESTS:
                    if now >= due[path]:
                        c.get(path)
                        self.requests += 1
                        due[path] = now + every
                self.stop.wait(0.05)

    def __enter__(self) -> EmulatedPage:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


class BrowserPage:
    def __init__(self, base: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        opts = Options()
        opts.binary_location = "/usr/bin/chromium"
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='bench-chromium-')}"):
            opts.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.base = base

    def __enter__(self) -> BrowserPage:
        self.driver.get(self.base + "/")
        return self

    def __exit__(self, *exc: object) -> None:
        self.driver.quit()


def frames(base: str) -> tuple[float, int, float]:
    s = httpx.get(base + "/ui/summary", timeout=10).json()
    cpu = 0.0
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith("boxinspect_process_cpu_seconds "):
            cpu = float(line.split()[1])
    return time.monotonic(), int(s["counters"]["frames"]), cpu


def window(base: str, seconds: float) -> tuple[float, float, float]:
    """(loop fps, daemon CPU in % of one core, daemon CPU ms per frame) over one window."""
    t0, n0, c0 = frames(base)
    time.sleep(seconds)
    t1, n1, c1 = frames(base)
    return (n1 - n0) / (t1 - t0), 100.0 * (c1 - c0) / (t1 - t0), 1000.0 * (c1 - c0) / max(1, n1 - n0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the .tflite (sidecar beside it)")
    ap.add_argument("--video", required=True, help="a conveyor video; its ground truth .json (boxinspect synth) gives the ROI")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of one measuring window")
    ap.add_argument("--rounds", type=int, default=3, help="closed/open pairs per page count")
    ap.add_argument("--pages", default="1", help="comma-separated numbers of open pages to compare (default 1)")
    ap.add_argument("--browser", action="store_true", help="open real headless Chromium pages instead of emulating them")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--pace", choices=("fast", "realtime"), default="realtime",
                    help="realtime: the video's own fps, as a camera delivers (compare CPU); fast: as fast as the loop "
                    "goes (compare fps)")
    args = ap.parse_args()

    video = Path(args.video).resolve()
    gt_path = video.with_suffix(".json")
    roi = json.loads(gt_path.read_text())["roi"] if gt_path.exists() else {}
    work = Path(tempfile.mkdtemp(prefix="bench-page-"))
    port = free_port()
    cfg = {
        "source": {"uri": str(video), "loop": True, "pace": args.pace},
        "roi": {k: roi[k] for k in ("x", "y", "width", "height")} if roi else {},
        "model": {"path": str(Path(args.model).resolve())},
        "mqtt": {"enabled": False, "outbox_path": str(work / "outbox.sqlite3")},
        "api": {"port": port},
        "evidence": {"dir": str(work / "evidence")},
        "operator": {"feedback_dir": str(work / "feedback")},
        "logging": {"level": "WARNING"},
    }
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    log = open(work / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "boxinspect.cli", "run", "--config", str(work / "cfg.yaml")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.stderr.write((work / "daemon.log").read_text())
                return 1
            time.sleep(0.5)
        time.sleep(args.warmup)
        page_kind = "Chromium" if args.browser else "emulated"
        rows = []
        for n in [int(x) for x in args.pages.split(",")]:
            closed: list[tuple[float, float, float]] = []
            opened: list[tuple[float, float, float]] = []
            for _ in range(args.rounds):
                closed.append(window(base, args.seconds))
                pages = [(BrowserPage if args.browser else EmulatedPage)(base) for _ in range(n)]
                for p in pages:
                    p.__enter__()
                try:
                    time.sleep(2.0)  # let the pages load
                    opened.append(window(base, args.seconds))
                finally:
                    for p in pages:
                        p.__exit__(None, None, None)
            c = [statistics.median(x[i] for x in closed) for i in range(3)]
            o = [statistics.median(x[i] for x in opened) for i in range(3)]
            rows.append(f"| {args.pace} | {n} {page_kind} | {c[0]:.1f} / {o[0]:.1f} | {c[1]:.1f} / {o[1]:.1f} | "
                        f"{c[2]:.2f} / {o[2]:.2f} |")
            sys.stderr.write(f"pages={n}: closed {[tuple(round(v, 2) for v in x) for x in closed]}\n"
                             f"         open   {[tuple(round(v, 2) for v in x) for x in opened]}\n")
        out = sys.stdout
        out.write("| pace | pages open | loop fps, closed / open | daemon CPU % of a core, closed / open | "
                  "CPU ms per frame, closed / open |\n")
        out.write("| --- | --- | --- | --- | --- |\n")
        for r in rows:
            out.write(r + "\n")
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
