"""A real PostgreSQL for tests: its own cluster (initdb) in a temporary folder, on a free 127.0.0.1 port.

Plain module, no pytest import, so tests and scripts (scripts/fleet_historian.py) share it::

    from tests.postgres import Postgres

    with Postgres() as pg:          # initdb + pg_ctl start; trust auth on 127.0.0.1 only
        pg.url                       # postgresql://boxinspect@127.0.0.1:<port>/boxinspect
        pg.stop(); pg.start()        # an outage (the data stays)

Debian's ``postgresql`` package puts the binaries in /usr/lib/postgresql/<version>/bin (``.ci/run`` installs it).
PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user the package creates
(or ``nobody``), and the commands run as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers import free_port, port_open
from tests.service import Service


class PostgresError(RuntimeError):
    """The cluster could not be made or started (the message has the tail of its log)."""


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise PostgresError(f"{name} not found: install Debian's postgresql package (apt-get install -y postgresql)")
    return path


def available() -> bool:
    try:
        pg_bin("initdb")
        return True
    except PostgresError:
        return False


class Postgres(Service):
    def __init__(self, port: int | None = None, workdir: str | Path | None = None, db: str = "boxinspect",
                 user: str = "boxinspect") -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="boxinspect-pg-"))
        self._own_dir = workdir is None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.db, self.user = db, user
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            name = "postgres" if _user_exists("postgres") else "nobody"
            pw = pwd.getpwnam(name)
            self._run_as = {"user": pw.pw_uid, "group": pw.pw_gid}
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.dir.chmod(0o700)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.db}"

    def _cmd(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=self.dir, check=False,
                             **self._run_as)
        if check and res.returncode != 0:
            raise PostgresError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}"
                                f"\n{self.log_tail()}")
        return res

    def init(self) -> Postgres:
        if not (self.data / "PG_VERSION").exists():
            self._cmd(pg_bin("initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                      "--no-instructions")
            with open(self.data / "postgresql.conf", "a") as f:
                f.write(f"\nlisten_addresses = '{self.host}'\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                        "fsync = on\nshared_buffers = 32MB\nmax_connections = 60\n")
        return self

    def start(self, timeout: float = 60.0) -> Postgres:
        self.init()
        self._cmd(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", str(int(timeout)),
                  "start")
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if time.monotonic() > deadline:
                raise PostgresError(f"postgres did not listen on {self.port}\n{self.log_tail()}")
            time.sleep(0.1)
        if self._cmd(pg_bin("psql") if _has("psql") else "psql", "-h", self.host, "-p", str(self.port), "-U", self.user,
                     "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{self.db}'").stdout.strip() != "1":
            self._cmd(pg_bin("createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, self.db)
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._cmd(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return port_open(self.host, self.port)

    def size_bytes(self) -> int:
        import psycopg

        with psycopg.connect(self.url) as c:
            return int(c.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]

    def close(self) -> None:
        self.stop("immediate")
        self.remove_dir()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _has(name: str) -> bool:
    try:
        pg_bin(name)
        return True
    except PostgresError:
        return False
