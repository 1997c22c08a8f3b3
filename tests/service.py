"""What the tests' local servers share (tests/broker.py's Mosquitto, tests/postgres.py's PostgreSQL,
tests/s3server.py's S3): a private working folder with a log file, ``with`` support, and ``close()`` that stops
the server and removes the folder when the object made it. A subclass sets ``dir``, ``_own_dir`` and
``log_path`` and implements ``start()`` (returning itself) and ``stop()``.

Plain module, no pytest import.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import IO, Any, TypeVar

from tests.helpers import port_open

S = TypeVar("S", bound="Service")


class Service:
    dir: Path
    log_path: Path
    _own_dir: bool

    def start(self: S) -> S:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop and remove the working directory (if this object created it)."""
        self.stop()
        self.remove_dir()

    def remove_dir(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no log)"


def spawn(args: list[str], log_path: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start a server process with its output appended to ``log_path``, in a session of its own (a Ctrl-C in the
    test run does not hit it first)."""
    log: IO[bytes] = open(log_path, "ab")  # handed to the child, closed below
    try:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **popen)
    finally:
        log.close()


def wait_listening(proc: subprocess.Popen[bytes], host: str, port: int, timeout: float, what: str,
                   log_tail: Any) -> None:
    """Until ``host:port`` accepts connections; RuntimeError (with the log's tail) if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} on port {port}:\n{log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not accept connections on {host}:{port} within {timeout}s:\n{log_tail()}")
        time.sleep(0.05)
