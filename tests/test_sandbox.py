"""The daemon inside the shipped systemd unit's sandbox, as far as this machine (systemd not PID 1) can build it.

``unshare --mount --pid --fork`` and a fresh ``/proc`` mounted with the options the unit asks for
(``ProtectProc=`` -> ``hidepid=``, ``ProcSubset=`` -> ``subset=``) reproduce what the unit does to /proc, read
from deploy/boxinspect.service itself. Around it, what else can be rebuilt without systemd: no new privileges
and an empty capability bounding set (``NoNewPrivileges=``, ``CapabilityBoundingSet=``), a read-only
/usr, /etc and code (``ProtectSystem=strict``), ``MemoryDenyWriteExecute=`` (the kernel's PR_SET_MDWE, which
systemd uses where it exists) and ``UMask=``. Not rebuilt: the system-call filter, address families, devices,
PrivateTmp and ProtectHome (the test interpreter lives under /root).

Three daemons run at once, under the same load: one with no sandbox, one in the shipped unit's sandbox, one in
the same sandbox plus ``ProcSubset=pid`` (the unit as it was). The shipped one must run the model like the
unsandboxed one (XNNPACK, self-test passes, invoke p50 of the self-test within a wide factor: the bug made it
~100x slower; the exact figures are in docs/DEPLOY.md), and the old one must show the bug, so the test can fail.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import START_TIMEOUT, DaemonProc, tiny_daemon_cfg, wait_for

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "boxinspect.service"
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
# Speed is not asserted here (a timed test fails on a loaded machine: CI once saw 46x with XNNPACK on in both).
# What made the unit slow is asserted exactly: the runtime path (XNNPACK or the builtin kernels), the self-test and
# the process metrics. The invoke p50 of each run is printed; the figures are in docs/DEPLOY.md.


def unit_service() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    return unit["Service"]


def proc_mount_options(svc: configparser.SectionProxy) -> list[str]:
    """The /proc mount options systemd derives from the unit (systemd.exec(5): ProtectProc=, ProcSubset=)."""
    opts = []
    if svc.get("ProtectProc", "default") != "default":
        opts.append(f"hidepid={svc['ProtectProc']}")
    if svc.get("ProcSubset", "all") == "pid":
        opts.append("subset=pid")
    return opts


def _can_sandbox() -> str | None:
    if not sys.platform.startswith("linux") or not shutil.which("unshare") or not shutil.which("setpriv"):
        return "needs Linux with unshare and setpriv"
    probe = subprocess.run(["unshare", "--mount", "--pid", "--fork", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"unshare --mount --pid failed here: {probe.stderr.decode().strip()}"
    return None


# Run in the sandbox as its last step: MemoryDenyWriteExecute (inherited by the daemon, kept across exec), then
# the daemon. The kernel's MDWE (Linux 6.3+) is what systemd uses for MemoryDenyWriteExecute= where it exists.
MDWE_EXEC = (
    "import ctypes, os, sys\n"
    f"if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
    "    print('sandbox: PR_SET_MDWE not available, MemoryDenyWriteExecute not reproduced', flush=True)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'boxinspect.cli', *sys.argv[1:]])\n"
)


class SandboxedDaemon(DaemonProc):
    """The daemon behind ``unshare`` with the unit's /proc, privileges, read-only system and umask."""

    def __init__(self, workdir: Path, cfg: dict[str, Any], svc: configparser.SectionProxy, proc_opts: list[str],
                 name: str) -> None:
        super().__init__(workdir, cfg, name)
        self.svc = svc
        self.proc_opts = proc_opts

    def command(self, *extra: str) -> list[str]:
        read_only = sorted({"/usr", "/etc", str(REPO), sys.base_prefix, sys.prefix})
        script = "set -eu\n"
        script += f"mount -t proc -o {','.join(self.proc_opts) or 'defaults'} proc /proc\n"
        if self.svc.get("ProtectSystem") == "strict":
            for d in read_only:
                script += f"mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}'\n"
        script += f"umask {self.svc.get('UMask', '0022')}\n"
        privs = []
        if self.svc.get("NoNewPrivileges") == "yes":
            privs.append("--no-new-privs")
        if "CapabilityBoundingSet" in self.svc and not self.svc["CapabilityBoundingSet"].strip():
            privs += ["--bounding-set=-all", "--inh-caps=-all"]
        mdwe = ["-c", MDWE_EXEC] if self.svc.get("MemoryDenyWriteExecute") == "yes" else ["-m", "boxinspect.cli"]
        script += 'exec setpriv "$@"\n'
        return ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
                "sh", "-c", script, "sandbox", *privs, sys.executable, *mdwe,
                "run", "--config", str(self.cfg_path), *extra]


def _model_state(d: DaemonProc) -> dict[str, Any]:
    from tests.helpers import metric

    text = d.get("/metrics").text
    delegate = next((line.split('delegate="')[1].split('"')[0] for line in text.splitlines()
                     if line.startswith("boxinspect_model_info{")), "")
    return {
        "delegate": delegate,
        "ready": metric(text, "boxinspect_model_ready"),
        "invoke_p50_s": metric(text, "boxinspect_model_invoke_p50_seconds"),
        "process_metrics": metric(text, "process_cpu_seconds_total", default=None) is not None,
    }


@pytest.mark.slow
def test_daemon_in_the_shipped_units_sandbox_runs_at_full_speed(tmp_path, tiny_model):
    why = _can_sandbox()
    if why:
        pytest.skip(why)
    svc = unit_service()
    shipped = proc_mount_options(svc)
    assert "subset=pid" not in shipped, "ProcSubset=pid is back in the unit: it hides /proc/cpuinfo"
    runs = {
        "plain": lambda w, c: DaemonProc(w, c, "plain"),
        "shipped": lambda w, c: SandboxedDaemon(w, c, svc, shipped, "shipped"),
        "old_unit": lambda w, c: SandboxedDaemon(w, c, svc, [*shipped, "subset=pid"], "old_unit"),
    }
    daemons = {}
    try:
        for name, make in runs.items():
            work = tmp_path / name
            work.mkdir()
            daemons[name] = make(work, tiny_daemon_cfg(work, tiny_model)).start()
        state = {}
        for name, d in daemons.items():
            d.wait_api(START_TIMEOUT)
            state[name] = _model_state(d)
            assert "sandbox: PR_SET_MDWE not available" not in d.log()
        print(f"model state per run: {state}")  # (pytest -s) the figures docs/DEPLOY.md quotes
        plain, ok, old = state["plain"], state["shipped"], state["old_unit"]
        assert plain["delegate"] == "XNNPACK" and plain["ready"] == 1, (plain, daemons["plain"].log())
        # the shipped sandbox: same runtime path, self-test passes, process metrics there
        assert ok["delegate"] == "XNNPACK", (ok, daemons["shipped"].log())
        assert ok["ready"] == 1 and ok["process_metrics"], (ok, daemons["shipped"].log())
        # the unit as it was (ProcSubset=pid): no XNNPACK, failed self-test, the cause named in the log
        assert old["delegate"].startswith("none"), old
        assert old["ready"] == 0 and not old["process_metrics"], old
        wait_for(lambda: "/proc/cpuinfo and /proc/stat cannot be read" in daemons["old_unit"].log(), 10,
                 "the warning naming the hidden /proc files", d=daemons["old_unit"])
        assert "cannot be read" not in daemons["shipped"].log()
    finally:
        for d in daemons.values():
            d.stop()
