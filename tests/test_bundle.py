"""The offline bundle (scripts/bundle.sh): one tarball that installs boxinspect[edge] with no network.

Built here for this machine (x86_64) and the running Python, then unpacked and installed by its own install.sh
in a clean venv inside a network namespace with no network at all (``unshare --net``), pip with --no-index and
no pip config (so no local wheel folder helps either). The installed daemon then runs the self-test on the
committed tiny model package, and prints the example config the wheel ships. (The aarch64 bundle is built the
same way, downloads only: its listing is in docs/DEPLOY.md, "Offline install".)
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64") or not shutil.which("unshare"),
                    reason="needs linux x86_64/aarch64 and unshare")
def test_offline_bundle_installs_without_network_and_passes_the_self_test(tmp_path, tiny_model):
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    plat = f"linux_{platform.machine()}"
    build = subprocess.run(["bash", str(REPO / "scripts" / "bundle.sh"), "--platform", plat, "--python", py,
                            "--out", str(tmp_path / "dist")], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PIP_PYTHON=sys.executable))
    assert build.returncode == 0, build.stdout + build.stderr
    tarballs = list((tmp_path / "dist").glob(f"boxinspect-*-{plat}-py{py}.tar.gz"))
    assert len(tarballs) == 1, build.stdout
    with tarfile.open(tarballs[0]) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        for want in ("install.sh", "config.example.yaml", "boxinspect.service", "constraints.txt", "README.txt"):
            assert f"{top}/{want}" in names, want
        assert any(n.startswith(f"{top}/wheels/boxinspect-") for n in names)
        tar.extractall(tmp_path / "site", filter="data") if sys.version_info >= (3, 12) else tar.extractall(tmp_path / "site")
    bundle = tmp_path / "site" / top
    assert (bundle / "config.example.yaml").read_text() == (REPO / "deploy" / "config.example.yaml").read_text()
    prefix = tmp_path / "opt" / "boxinspect"
    # a clean environment: no pip config (no local wheel folders), no index, and no network at all
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PREFIX": str(prefix), "PYTHON": sys.executable,
           "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_COMPILE": "1"}  # (no .pyc: the test's only speed-up; install.sh compiles on a device)
    inst = subprocess.run(["unshare", "--net", "sh", str(bundle / "install.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    assert f"installed in {prefix}" in inst.stdout
    boxinspect = prefix / "bin" / "boxinspect"
    test = subprocess.run([str(boxinspect), "selftest", str(tiny_model)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert test.returncode == 0 and "self-test passed" in test.stdout and "XNNPACK" in test.stdout, test.stderr
    example = subprocess.run([str(boxinspect), "config", "example"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert example.stdout == (REPO / "deploy" / "config.example.yaml").read_text()  # shipped in the wheel
    lean = subprocess.run([str(prefix / "bin" / "python"), "-c", "import sklearn"], capture_output=True)
    assert lean.returncode != 0  # the edge install without the retrain extra
