"""Ed25519 package signatures (issue 24): ``boxinspect sign`` and ``model.trusted_keys`` on the daemon process.

With a trusted key configured the daemon refuses, with one line, an unsigned package, a package signed by a key not
in the list and a package resealed after it was signed (a new threshold with a fresh package hash: the hash alone
accepts it); at start-up (exit 3), on ``/reload`` and as a candidate. A signed package loads and says so.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from boxinspect.cli import main
from tests.helpers import AUTH, TEST_TOKEN, DaemonProc, edit_sidecar, package_copies, tiny_daemon_cfg


def _threshold(value: float):  # an edit_sidecar change
    def change(doc: dict) -> None:
        doc["threshold"] = value

    return change


def _keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(trusted private key, its public key, another private key)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    assert main(["sign", "--new-key", str(keys / "line")]) == 0
    assert main(["sign", "--new-key", str(keys / "other")]) == 0
    assert (keys / "line.key").stat().st_mode & 0o077 == 0  # the private key is the owner's only
    return keys / "line.key", keys / "line.pub", keys / "other.key"


def test_sign_verify_and_a_resealed_package(tmp_path, model_copy, capsys):
    key, pub, other = _keys(tmp_path)
    assert main(["sign", "--verify", str(pub), "--", str(model_copy)]) == 3  # unsigned
    assert "unsigned model package" in capsys.readouterr().err
    assert main(["sign", str(model_copy), "--key", str(key)]) == 0
    assert Path(f"{model_copy}.sig").is_file()
    assert main(["sign", str(model_copy), "--verify", str(pub)]) == 0
    assert "signature OK" in capsys.readouterr().out
    edit_sidecar(model_copy, _threshold(0.01))  # resealed: the package hash is fine, the signature is not
    assert main(["sign", str(model_copy), "--verify", str(pub)]) == 3
    assert "bad signature" in capsys.readouterr().err
    assert main(["sign", str(model_copy), "--key", str(other)]) == 0
    assert main(["sign", str(model_copy), "--verify", str(pub)]) == 3
    assert "not in model.trusted_keys" in capsys.readouterr().err
    assert main(["sign", str(model_copy), "--verify", str(other)]) == 3  # a private key is not a public one
    assert "not a PEM public key" in capsys.readouterr().err


@pytest.mark.slow
def test_daemon_with_trusted_keys_refuses_unsigned_foreign_and_resealed_packages(tmp_path, tiny_model):
    key, pub, other = _keys(tmp_path)
    models = tmp_path / "models"
    live, unsigned, foreign, resealed = package_copies(tiny_model, models, ["live", "unsigned", "foreign", "resealed"])
    for pkg, k in ((live, key), (foreign, other), (resealed, key)):
        assert main(["sign", str(pkg), "--key", str(k)]) == 0
    edit_sidecar(resealed, _threshold(0.01))
    cfg = tiny_daemon_cfg(tmp_path, live)
    cfg["model"].update(dir=str(models), trusted_keys=[str(pub)])
    cfg["api"]["token"] = TEST_TOKEN

    for pkg, words in ((unsigned, "unsigned model package"), (resealed, "bad signature")):
        once = DaemonProc(tmp_path, {**cfg, "model": {**cfg["model"], "path": str(pkg)}}, name=pkg.stem)
        assert once.run(timeout=120) == 3, once.log()
        lines = [ln for ln in once.log().splitlines() if ln.startswith("model:")]
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in once.log(), once.log()

    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()
        assert "signature OK (key" in d.log()
        live_id = d.status()["model"]["model_id"]
        for pkg, words in ((unsigned, "unsigned model package"), (foreign, "not in model.trusted_keys"),
                           (resealed, "bad signature")):
            r = httpx.post(d.base + "/reload", json={"path": pkg.name}, headers=AUTH, timeout=30)
            assert r.status_code == 422 and words in r.json()["reason"], r.text
            r = httpx.post(d.base + "/model/candidate", json={"path": pkg.name}, headers=AUTH, timeout=30)
            assert r.status_code == 422 and words in r.text, r.text
        assert d.status()["model"]["model_id"] == live_id  # the signed live model stays
        r = httpx.post(d.base + "/reload", json={"path": live.name}, headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        d.stop()
