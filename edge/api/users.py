"""Named users with roles (issue 26): ``api.users_file``, one user a line, ``name:role:sha256$<hex>``.

Each user has their own API token, sent like ``api.token`` (``Authorization: Bearer <token>``; the page keeps it for
the session). The file holds only the SHA-256 of each token: a token is 32 random bytes (256 bits) made by
``boxinspect users add``, so a fast hash is as safe as a slow one and a request costs one hash and one lookup
(the same scheme as GitHub's and GitLab's access tokens). Roles:

- ``viewer``: the live image, status, history, the audit log (``Role.VIEW``);
- ``operator``: + feedback, labels, checks, acknowledge, lot reset, triggers (``Role.OPERATE``);
- ``engineer``: + reload, retrain, candidate, promote, roll back, event replay (``Role.ENGINEER``).

Make a user (prints the token once; the file is written 0600, a user of the same name is replaced)::

    boxinspect users add alice --role engineer --config config.yaml

The file is read again when it changes (checked at most once a second): adding or removing a user needs no
restart. A line that cannot be read stops start-up with its line number; later, a broken file keeps the users
read before (logged).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from edge.runtime.principal import Role

log = logging.getLogger(__name__)

RECHECK_S = 1.0


class UserRole(str, Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"


GRANTS: dict[UserRole, frozenset[Role]] = {
    UserRole.VIEWER: frozenset({Role.VIEW}),
    UserRole.OPERATOR: frozenset({Role.VIEW, Role.OPERATE}),
    UserRole.ENGINEER: frozenset({Role.VIEW, Role.OPERATE, Role.ENGINEER}),
}


class UsersFileError(ValueError):
    """A users file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class User:
    name: str
    role: UserRole

    @property
    def roles(self) -> frozenset[Role]:
        return GRANTS[self.role]


def hash_token(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


def parse_users(text: str, path: Path) -> dict[str, User]:
    """token hash -> User. UsersFileError names the line that cannot be read."""
    users: dict[str, User] = {}
    names: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(":")
        if len(parts) != 3 or not parts[0] or not parts[2].startswith("sha256$") or len(parts[2]) != 71:
            raise UsersFileError(f"api.users_file: {path} line {n}: not 'name:role:sha256$<64 hex>' (edge/api/users.py)")
        name, role, stored = parts
        try:
            users[stored] = User(name, UserRole(role))
        except ValueError:
            raise UsersFileError(f"api.users_file: {path} line {n}: role {role!r} is not one of "
                                 f"{', '.join(r.value for r in UserRole)}") from None
        if name in names:
            raise UsersFileError(f"api.users_file: {path} line {n}: user {name!r} appears twice")
        names.add(name)
    return users


class UsersFile:
    """The users of ``api.users_file``, read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp: tuple[float, int] | None = None
        self._users: dict[str, User] = {}
        if self.path.exists():  # a missing file is no users yet (`boxinspect users add` makes it)
            self._load(strict=True)
        else:
            log.warning("api.users_file %s does not exist yet: no named users (boxinspect users add NAME --role R)", self.path)

    def _load(self, strict: bool) -> None:
        try:
            st = self.path.stat()
            users = parse_users(self.path.read_text(), self.path)
        except FileNotFoundError:
            users, st = {}, None
        except (OSError, UsersFileError) as e:
            if strict:
                raise UsersFileError(str(e)) from None
            log.error("api.users_file: %s; keeping the %d user(s) read before", e, len(self._users))
            return
        self._stamp = (st.st_mtime, st.st_size) if st is not None else None
        if users != self._users:
            log.info("api.users_file %s: %d user(s)", self.path, len(users))
        self._users = users

    def _fresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return
        self._checked = now
        try:
            st = self.path.stat()
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._load(strict=False)

    def find(self, token: str) -> User | None:
        """The user whose token this is, or None."""
        with self._lock:
            self._fresh()
            return self._users.get(hash_token(token))

    def names(self) -> set[str]:
        with self._lock:
            self._fresh()
            return {u.name for u in self._users.values()}

    def __len__(self) -> int:
        return len(self.names())


def add_user(path: Path, name: str, role: UserRole, token: str | None = None) -> str:
    """Write ``name`` with ``role`` and a new token (returned, never stored) to ``path``; replaces a user of that name."""
    if not name or any(c in name for c in ":#\n ") or len(name) > 80:
        raise UsersFileError("a user name must be 1-80 characters without ':', '#' or spaces")
    token = token or secrets.token_urlsafe(32)
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [ln for ln in lines if ln.split("#", 1)[0].strip().split(":")[0] != name]
    kept.append(f"{name}:{role.value}:{hash_token(token)}")
    parse_users("\n".join(kept), path)  # never write a file the daemon would refuse
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(kept) + "\n")
    os.replace(tmp, path)
    return token


def remove_user(path: Path, name: str) -> bool:
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [ln for ln in lines if ln.split("#", 1)[0].strip().split(":")[0] != name]
    if len(kept) == len(lines):
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(kept) + ("\n" if kept else ""))
    os.replace(tmp, path)
    return True


# -- `boxinspect users ...` ------------------------------------------------------------------------------------------

def _users_path(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    if not args.config:
        raise SystemExit("boxinspect users: give --config FILE (its api.users_file) or --file USERS_FILE")
    from edge.config import load_config

    cfg = load_config(args.config)
    if cfg.api.users_file is None:
        raise SystemExit(f"boxinspect users: {args.config} sets no api.users_file; set it (e.g. users_file: api-users)")
    return Path(cfg.api.users_file)


def _say(text: str) -> None:
    """CLI output (the token is printed once, on stdout, for the person who ran the command)."""
    sys.stdout.write(text + "\n")


def _cmd(args: argparse.Namespace) -> int:
    path = _users_path(args)
    try:
        if args.users_command == "add":
            token = add_user(path, args.name, UserRole(args.role))
            _say(f"user {args.name} ({args.role}) written to {path}; their token (shown once, keep it secret):")
            _say(token)
        elif args.users_command == "remove":
            if not remove_user(path, args.name):
                _say(f"no user {args.name} in {path}")
                return 1
            _say(f"user {args.name} removed from {path}")
        else:
            users = parse_users(path.read_text(), path) if path.exists() else {}
            for u in sorted(users.values(), key=lambda u: u.name):
                _say(f"{u.name}\t{u.role.value}")
    except UsersFileError as e:
        _say(f"error: {e}")
        return 2
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "users", help="named API users with roles (viewer, operator, engineer): add, remove, list",
        description="Manage api.users_file (edge/api/users.py). `add` makes a random token, prints it once and "
                    "stores only its SHA-256; the daemon reads the file again when it changes. "
                    "Roles: viewer (views), operator (+ feedback, acknowledge, lot reset), "
                    "engineer (+ reload, retrain, promote, roll back).",
    )
    usub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    a = usub.add_parser("add", help="add a user (or give an existing one a new token and role)",
                        description="Add NAME with ROLE to the users file and print their new token once (only its "
                                    "SHA-256 is stored). An existing NAME gets a new token and the role given.")
    a.add_argument("name", help="the user's name: what the audit trail, feedback records and model changes show")
    a.add_argument("--role", required=True, choices=[r.value for r in UserRole],
                   help="viewer: views; operator: + feedback, acknowledge, lot reset; engineer: + reload, retrain, "
                        "promote, roll back")
    r = usub.add_parser("remove", help="remove a user")
    r.add_argument("name", help="the user to remove")
    ls = usub.add_parser("list", help="list the users and their roles")
    for q in (a, r, ls):
        q.add_argument("--config", "-c", default=None, metavar="FILE", help="the daemon config (its api.users_file)")
        q.add_argument("--file", default=None, metavar="USERS_FILE", help="the users file itself (instead of --config)")
    p.set_defaults(func=_cmd)
