"""OPC UA users from a file (issue 24: ``opcua.allow_anonymous: false`` had no working way to log in beyond one
configured user). ``opcua.users_file``: one user a line, ``name:scrypt$<salt hex>$<hash hex>``; ``#`` starts a
comment. Make a line with::

    python -c 'from edge.deliver.opcua_users import user_line; print(user_line("plc", "the password"))' >> opcua-users

The file is read at start; a line that cannot be read stops start-up with its line number.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UsersFileError(ValueError):
    """A users file that cannot be used; the message names the file and the line."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def user_line(name: str, password: str) -> str:
    if not name or ":" in name:
        raise ValueError("a user name must be non-empty and contain no ':'")
    return f"{name}:{hash_password(password)}"


def load_users(path: Path) -> dict[str, str]:
    """name -> stored hash, from ``path``. UsersFileError for a missing file or a bad line."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsersFileError(f"opcua.users_file: cannot read {path}: {e.strerror}") from None
    users: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, stored = line.partition(":")
        parts = stored.split("$")
        if not name or len(parts) != 3 or parts[0] != "scrypt":
            raise UsersFileError(f"opcua.users_file: {path} line {n}: not 'name:scrypt$salt$hash' (edge/deliver/opcua_users.py)")
        try:
            bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
        except ValueError:
            raise UsersFileError(f"opcua.users_file: {path} line {n}: salt and hash must be hex") from None
        users[name] = stored
    return users


def check_password(stored: str, password: str) -> bool:
    _, salt, want = stored.split("$")
    got = hash_password(password, bytes.fromhex(salt)).split("$")[2]
    return hmac.compare_digest(got, want)
