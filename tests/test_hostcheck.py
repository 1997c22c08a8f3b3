"""What the machine or sandbox hides, named at start-up (edge/runtime/hostcheck.py); what to install for retrain."""

from __future__ import annotations

import importlib.util

from edge.runtime.hostcheck import export_disk, proc_warning, retrain_missing
from tests.helpers import metric


def test_a_proc_without_cpuinfo_is_named(tmp_path):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "cpuinfo").write_text("processor : 0\n")
    (proc / "stat").write_text("cpu 1 2 3\n")
    assert proc_warning("XNNPACK", proc) is None
    (proc / "cpuinfo").unlink()  # what ProcSubset=pid does
    msg = proc_warning("none (builtin kernels)", proc)
    assert msg and f"{proc}/cpuinfo cannot be read" in msg and "XNNPACK is off" in msg and "ProcSubset=pid" in msg
    assert proc_warning("x", tmp_path / "no-proc-here") is None  # not Linux: nothing to say


def test_retrain_missing_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    assert retrain_missing() is None  # this venv has the train extra, so scikit-learn
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    msg = retrain_missing()
    assert msg and "pip install 'boxinspect[retrain]'" in msg


def test_state_disk_is_exported(tmp_path):
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    export_disk(tmp_path / "not" / "yet" / "made", reg)  # the state dir may not exist yet: its parent counts
    free = metric(reg, "boxinspect_state_disk_free_bytes")
    size = metric(reg, "boxinspect_state_disk_size_bytes")
    assert size and free is not None and 0 < free <= size
