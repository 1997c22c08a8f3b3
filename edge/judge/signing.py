"""Ed25519 signatures of model packages (issue 24), and the ``boxinspect sign`` subcommand.

A package is ``<name>.tflite`` + its sidecar ``<name>.tflite.json``. The sidecar's ``package_sha256`` covers the
whole sidecar, which holds the sha256 of the .tflite (and of an anomaly package's bank): signing that one digest
signs the package. The signature lies beside the package as ``<name>.tflite.sig`` (JSON: algorithm, key id,
the signed ``package_sha256``, the base64 signature), so signing changes neither file and the model id stays.

Signed message: ``b"boxinspect model package v1\\n" + package_sha256``. Key id: the first 16 hex digits of the
sha256 of the raw 32-byte public key.

The daemon verifies when ``model.trusted_keys`` names one or more public keys (PEM): at start-up, on ``/reload``,
promote and rollback, and for a shadow candidate. Then an unsigned package, a signature by a key not in the list,
or a package changed after signing is refused with one line that says which (start-up: exit code 3). With no key
configured (the default) nothing is checked: the package hash still refuses an edited sidecar, but anyone who can
write the model folder can reseal one; docs/RELIABILITY.md says so.

``cryptography`` is imported only here, and only when something is signed or verified.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.judge.classifier import ModelError
from edge.judge.model_package import PackageError, verify_package

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_SUFFIX = ".sig"
ALGORITHM = "ed25519"
MESSAGE_PREFIX = b"boxinspect model package v1\n"
MAX_SIGNATURE_BYTES = 4096

log = logging.getLogger(__name__)


def signature_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + SIGNATURE_SUFFIX)


def _message(package_sha256: str) -> bytes:
    return MESSAGE_PREFIX + package_sha256.encode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def new_key(private_path: Path, public_path: Path) -> str:
    """A new Ed25519 key pair: the private key as PEM (mode 0600, never overwritten), the public key as PEM."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return key_id(key.public_key())


def _load_private(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise PackageError(f"{path}: not an unencrypted PEM private key ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PackageError(f"{path}: a {type(key).__name__}, not an Ed25519 key (boxinspect sign --new-key makes one)")
    return key


def load_trusted_keys(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """``model.trusted_keys``: key id -> public key. PackageError (one line naming the file) for a bad file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    keys: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        try:
            key = load_pem_public_key(p.read_bytes())
        except OSError as e:
            raise PackageError(f"model.trusted_keys: cannot read {p}: {e.strerror or e}") from None
        except (ValueError, TypeError) as e:
            raise PackageError(f"model.trusted_keys: {p} is not a PEM public key ({' '.join(str(e).split())[:120]})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise PackageError(f"model.trusted_keys: {p} is a {type(key).__name__}, not an Ed25519 public key")
        keys[key_id(key)] = key
    return keys


def sign_package(model_path: str | Path, private_key: Path) -> Path:
    """Verify the package (hashes), sign its ``package_sha256``, write ``<model>.sig``. -> the signature file."""
    meta = verify_package(model_path)
    key = _load_private(private_key)
    sig = key.sign(_message(meta.package_sha256))
    doc = {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()), "package_sha256": meta.package_sha256,
           "model_id": meta.model_id, "signature": base64.b64encode(sig).decode("ascii")}
    out = signature_path(model_path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


def _read_signature(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_SIGNATURE_BYTES:
            raise ValueError("too large")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError(f"unsigned model package: {path} is missing and model.trusted_keys is set "
                           "(sign it with `boxinspect sign MODEL --key KEY`)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PackageError(f"unreadable package signature {path}: {' '.join(str(e).split())[:120]}") from None
    if not isinstance(doc, dict) or doc.get("algorithm") != ALGORITHM or not isinstance(doc.get("signature"), str):
        raise PackageError(f"package signature {path} is not an {ALGORITHM} signature of boxinspect sign")
    return doc


def verify_signature(model_path: str | Path, package_sha256: str, trusted: dict[str, Ed25519PublicKey]) -> str:
    """Check ``<model>.sig`` against the trusted keys; -> the key id that signed. PackageError (one line) if the
    package is unsigned, signed by another key, or changed after it was signed."""
    from cryptography.exceptions import InvalidSignature

    path = signature_path(model_path)
    doc = _read_signature(path)
    kid = str(doc.get("key_id"))
    key = trusted.get(kid)
    if key is None:
        raise PackageError(f"model package signed by key {kid[:16]!r}, which is not in model.trusted_keys "
                           f"({', '.join(sorted(trusted)) or 'none'})")
    try:
        sig = base64.b64decode(doc["signature"], validate=True)
        key.verify(sig, _message(package_sha256))
    except (ValueError, InvalidSignature):
        raise PackageError(f"bad signature on model package {Path(model_path).name}: it was changed after it was "
                           f"signed by key {kid} (package {package_sha256[:12]}), or the signature was") from None
    return kid


def check_signature(model_path: str | Path, package_sha256: str, key_files: list[Path]) -> str:
    """The daemon's check (``model.trusted_keys``): -> the signing key id; ModelError (one line) otherwise."""
    try:
        kid = verify_signature(model_path, package_sha256, load_trusted_keys(key_files))
    except PackageError as e:
        raise ModelError(str(e)) from None
    log.info("model package %s: signature OK (key %s)", Path(model_path).name, kid)
    return kid


# -- boxinspect sign ------------------------------------------------------------------------------------------
def _sign(args: argparse.Namespace) -> int:
    try:
        if args.new_key:
            base = Path(args.new_key)
            priv, pub = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
            kid = new_key(priv, pub)
            sys.stdout.write(f"key {kid}: private {priv} (keep it off the line), public {pub} (for model.trusted_keys)\n")
            return 0
        if not args.model:
            sys.stderr.write("boxinspect sign: give MODEL (and --key or --verify), or --new-key NAME\n")
            return 2
        if args.verify:
            meta = verify_package(args.model)
            kid = verify_signature(args.model, meta.package_sha256, load_trusted_keys([Path(p) for p in args.verify]))
            sys.stdout.write(f"{meta.model_id}: signature OK (key {kid})\n")
            return 0
        if not args.key:
            sys.stderr.write("boxinspect sign: --key PRIVATE_KEY is needed to sign\n")
            return 2
        sys.stdout.write(f"{sign_package(args.model, Path(args.key))}\n")
        return 0
    except (PackageError, FileExistsError) as e:
        sys.stderr.write(f"boxinspect sign: {e}\n")
        return 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sign", help="sign a model package (Ed25519) so a daemon with model.trusted_keys accepts it",
        description="Sign MODEL (.tflite + its sidecar) with an Ed25519 private key: writes MODEL.sig beside it "
                    "(the package itself is unchanged). A daemon whose model.trusted_keys lists the public key then "
                    "loads it, and refuses unsigned packages, other keys' and packages changed after signing.",
        epilog="examples:\n  boxinspect sign --new-key keys/line1          # keys/line1.key (private), keys/line1.pub\n"
               "  boxinspect sign runs/m1/model_int8.tflite --key keys/line1.key\n"
               "  boxinspect sign runs/m1/model_int8.tflite --verify keys/line1.pub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", help="the .tflite of the package")
    p.add_argument("--key", help="the Ed25519 private key (PEM) to sign with")
    p.add_argument("--verify", nargs="+", metavar="PUBLIC_KEY", help="check MODEL's signature against these keys")
    p.add_argument("--new-key", metavar="NAME", help="make a key pair NAME.key (private, 0600) and NAME.pub")
    p.set_defaults(func=_sign)
