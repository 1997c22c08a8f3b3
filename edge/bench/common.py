"""What the benches share: the machine they ran on, and the daemon as its own process (its config, start, stop,
CPU time) behind one command-line front for the three daemon benches."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from edge.judge.classifier import ModelError
from edge.runtime.versions import installed_versions


def emit(text: str, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        info: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, val = line.split(":", 1)
                info.setdefault(key.strip().lower(), val.strip())
        # x86: "model name"; Raspberry Pi: "Model" (board) or "Hardware"; "model" on x86 is just a number
        for key in ("model name", "hardware", "model"):
            if info.get(key) and not info[key].isdigit():
                cpu = info[key]
                break
    except OSError:
        pass
    versions = installed_versions("ai-edge-litert", "tflite-runtime", "tensorflow", "tensorflow-cpu", "numpy",
                                "opencv-python-headless")
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": _commit(),
    }


def _commit() -> str | None:
    """The git commit of this code (with ``+dirty`` for uncommitted changes), or None outside a checkout."""
    repo = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "") if rev else None


def _parse_roi(text: str | None) -> Any:
    from edge.config import RoiConfig

    if not text:
        return RoiConfig()
    x, y, w, h = (int(v) for v in text.split(","))
    return RoiConfig(x=x, y=y, width=w, height=h)


def _roi_from_ground_truth(source: str) -> str | None:
    """``boxinspect synth --video`` writes the ROI into conveyor.json beside the video."""
    gt = Path(source).with_suffix(".json")
    try:
        r = json.loads(gt.read_text())["roi"]
        return f"{r['x']},{r['y']},{r['width']},{r['height']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def daemon_bench_main(args: argparse.Namespace, what: str, run: Callable[..., dict[str, Any]],
                       summary: Callable[[dict[str, Any]], str]) -> int:
    """The CLI of the three daemon benches (pipeline, idle, soak): check the arguments, run, print the summary,
    write the JSON. Exit 2 for bad arguments, 1 when the run fails."""
    import yaml

    if not args.source or not args.pipeline_model:
        emit(f"error: bench {what} needs --source VIDEO and --model MODEL.tflite", sys.stderr)
        return 2
    try:
        threads = int(str(args.threads).split(",")[0])
        roi = _parse_roi(args.roi or _roi_from_ground_truth(args.source))
        host, _, port = args.broker.rpartition(":")
        broker = (host, int(port))
        overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    except (ValueError, TypeError) as e:
        emit(f"error: {e}", sys.stderr)
        return 2
    try:
        res = run(args.source, args.pipeline_model, threads, args.duration, roi=roi, broker=broker, overrides=overrides)
    except (ModelError, ValueError, RuntimeError) as e:
        emit(f"error: {e}", sys.stderr)
        return 1
    emit(summary(res))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


def daemon_config(workdir: Path, source: str, model: str, threads: int, roi: Any, broker: tuple[str, int],
                   overrides: dict[str, Any] | None = None) -> Path:
    import yaml

    cfg: dict[str, Any] = {
        "line": "bench",
        "camera": "pipeline",
        "source": {"uri": str(Path(source).resolve()), "pace": "fast", "loop": True, "exit_on_end": False},
        "roi": {"x": roi.x, "y": roi.y, "width": roi.width, "height": roi.height},
        "model": {"path": str(Path(model).resolve()), "num_threads": threads},
        "mqtt": {"enabled": True, "host": broker[0], "port": broker[1], "base_topic": f"bench{os.getpid()}",
                 "client_id": f"boxinspect-bench-{os.getpid()}",  # two benches on one broker must not evict each other
                 "outbox_path": str(workdir / "outbox.sqlite3"), "stats_interval_s": 5},
        "evidence": {"enabled": True, "dir": str(workdir / "evidence")},
        "api": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "logging": {"level": "INFO"},
    }
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = workdir / "daemon.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def start_daemon(cfg_path: Path, workdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``boxinspect run --config CFG [extra]`` as its own process, its log in ``workdir/daemon.log``; returns once
    the daemon logs that it is inspecting (or raises with the log's tail)."""
    logf = workdir / "daemon.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    with open(logf, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "boxinspect.cli", "run", "--config", str(cfg_path), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    deadline = time.monotonic() + 120
    while "running: line=" not in logf.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_daemon(proc, 5)
            raise RuntimeError("the daemon did not start:\n" + logf.read_text(errors="replace")[-3000:])
        time.sleep(0.1)
    return proc, logf


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    """The process's resident set size in MB (``VmRSS``), None if the kernel does not say."""
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return round(int(ln.split()[1]) / 1024, 1)
    return None
