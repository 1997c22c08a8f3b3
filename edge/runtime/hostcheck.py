"""What the machine (or the sandbox around the daemon) hides that the daemon needs, said at start-up.

LiteRT turns XNNPACK on only after its CPU detection (the ``cpuinfo`` library) has read ``/proc/cpuinfo``. A
sandbox that hides it (systemd's ``ProcSubset=pid``, a container with a restricted /proc) leaves the model on
the builtin kernels: ~100x slower invokes on the tiny test model (docs/DEPLOY.md, "The unit's sandbox"), and
``/proc/stat`` missing takes the process metrics away too. The daemon still runs; this names the cause.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROC = Path("/proc")


def hidden_proc_files(proc: Path = PROC) -> list[str]:
    """The /proc files the daemon reads (CPU features, process metrics) that cannot be read here; [] on a
    machine without /proc (not Linux), where neither is looked for."""
    if not (proc / "self").exists():
        return []
    hidden = []
    for name in ("cpuinfo", "stat"):
        try:
            with open(proc / name, "rb") as f:
                f.read(1)
        except OSError:
            hidden.append(str(proc / name))
    return hidden


def proc_warning(delegate: str, proc: Path = PROC) -> str | None:
    """One line for the log when /proc hides what LiteRT and the metrics read, else None."""
    hidden = hidden_proc_files(proc)
    if not hidden:
        return None
    return (f"{' and '.join(hidden)} cannot be read (a sandbox such as systemd's ProcSubset=pid hides them): "
            f"LiteRT cannot detect the CPU, so XNNPACK is off (delegate: {delegate}) and invokes are many times "
            f"slower, and the process_* metrics are missing; allow /proc (see deploy/boxinspect.service)")


def export_disk(state_dir: Path, registry: Any) -> None:
    """``boxinspect_state_disk_free_bytes`` and ``..._size_bytes`` of the filesystem holding the state (outbox,
    evidence, feedback), read at every scrape: the "disk filling" alert (deploy/prometheus/alerts.yml)."""
    import shutil

    from prometheus_client import Gauge

    def usage(field: str) -> float:
        probe = state_dir
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        try:
            return float(getattr(shutil.disk_usage(probe), field))
        except OSError:
            return float("nan")

    Gauge("boxinspect_state_disk_free_bytes", "Free bytes on the filesystem of the state directory (outbox, "
          "evidence)", registry=registry).set_function(lambda: usage("free"))
    Gauge("boxinspect_state_disk_size_bytes", "Size of the filesystem of the state directory",
          registry=registry).set_function(lambda: usage("total"))


RETRAIN_INSTALL = "pip install 'boxinspect[retrain]'"


def retrain_missing() -> str | None:
    """What to install when this install cannot retrain (the ``retrain`` extra is not there), else None."""
    import importlib.util

    if all(importlib.util.find_spec(m) is not None for m in ("sklearn", "scipy")):
        return None
    return (f"retrain needs scikit-learn, which this edge install leaves out: {RETRAIN_INSTALL} into the "
            f"daemon's venv (/opt/boxinspect/bin/pip install ...), then restart the daemon (docs/DEPLOY.md)")
