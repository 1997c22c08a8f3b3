"""``boxinspect bench soak``: the daemon at pace fast for a long time, its RSS sampled."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from edge.bench.common import (
    daemon_bench_main,
    daemon_config,
    machine_info,
    proc_cpu_s,
    rss_mb,
    start_daemon,
    stop_daemon,
)


def bench_soak(source: str, model: str, threads: int = 1, duration: float = 600.0, every: float = 10.0,
               roi: Any = None, broker: tuple[str, int] = ("127.0.0.1", 1883),
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The daemon (pace fast, looped source, MQTT, evidence and API on) for ``duration`` s, RSS every ``every`` s."""
    import tempfile

    from edge.config import RoiConfig
    from edge.deliver.broker import DemoBroker

    roi = roi or RoiConfig()
    mqtt = DemoBroker(*broker)
    kind = mqtt.start()
    samples: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            cfg_path = daemon_config(Path(tmp), source, model, threads, roi, broker, overrides)
            proc, logf = start_daemon(cfg_path, Path(tmp))
            try:
                t0 = time.monotonic()
                c0 = proc_cpu_s(proc.pid)
                while True:
                    t = time.monotonic() - t0
                    samples.append({"t_s": round(t, 1), "rss_mb": rss_mb(proc.pid),
                                    "cpu_s": round(proc_cpu_s(proc.pid) - c0, 1), "load_1m": os.getloadavg()[0]})
                    if t >= duration or proc.poll() is not None:
                        break
                    time.sleep(min(every, max(0.0, duration - t)))
            finally:
                stop_daemon(proc, 60)
            text = logf.read_text(errors="replace")
    finally:
        mqtt.stop()
    rss = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    status = [ln for ln in text.splitlines() if "status: fps=" in ln or "stopped: frames=" in ln]
    return {
        "kind": "soak",
        "source": str(source),
        "model": str(model),
        "threads": threads,
        "broker": f"{broker[0]}:{broker[1]} ({kind})",
        "overrides": overrides or {},
        "duration_s": duration,
        "rss_mb": {"start": rss[0] if rss else None, "end": rss[-1] if rss else None, "max": max(rss) if rss else None},
        "exit_code": proc.returncode,
        "samples": samples,
        "status_lines": status[-3:],
        "errors": [ln for ln in text.splitlines() if " ERROR " in ln][:5],
        "machine": machine_info(),
    }


def _soak_summary(res: dict[str, Any]) -> str:
    r = res["rss_mb"]
    return (f"soak: {res['duration_s']:g} s at pace fast, RSS start {r['start']} MB, end {r['end']} MB, max {r['max']} MB; "
            f"exit {res['exit_code']}; {res['status_lines'][-1] if res['status_lines'] else ''}")


def soak_main(args: argparse.Namespace) -> int:
    return daemon_bench_main(args, "soak", bench_soak, _soak_summary)
