"""A real Mosquitto broker for tests: a subprocess on a free 127.0.0.1 port with a generated config.

Plain module, no pytest import, so tests, conftest fixtures and scripts can all use it::

    from tests.broker import Broker

    with Broker() as broker:                       # anonymous access
        ... connect to broker.host, broker.port ...
        broker.stop()                              # broker away (port stays reserved for restart)
        broker.start()                             # back on the same port

    with Broker(users={"edge": "s3cret"}) as broker:   # password file, anonymous access refused
        ...

The port is chosen once and kept across stop()/start()/restart(), so clients reconnect to the same
address after an outage. Persistence is off by default: a restarted broker has no retained messages
or sessions. ``Broker(persistence=True)`` keeps them across a graceful stop()/start() (SIGTERM makes
Mosquitto save its database), which lets a test subscriber with a persistent session (clean_session
False, QoS 1) receive what was published while it was reconnecting.
The broker log goes to ``broker.log_path`` (``broker.log_text()`` reads it, handy in assert messages).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port, port_open
from tests.service import Service

MOSQUITTO = os.environ.get("BOXINSPECT_MOSQUITTO") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else shutil.which("mosquitto") or "/usr/sbin/mosquitto"
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


class BrokerError(RuntimeError):
    """The broker could not be started (the message carries the tail of its log)."""


class Broker(Service):
    """One Mosquitto process. ``start()`` returns once the port accepts connections."""

    def __init__(
        self,
        port: int | None = None,
        users: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        workdir: str | Path | None = None,
        extra_config: str = "",
        mosquitto: str = MOSQUITTO,
        persistence: bool = False,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.users = dict(users or {})
        self.mosquitto = mosquitto
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="boxinspect-broker-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.extra_config = extra_config
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    # -- config ---------------------------------------------------------------------------------
    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence true" if self.persistence else "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
        ]
        if self.persistence:
            lines.append(f"persistence_location {self.dir}/")
        try:
            lines.append(f"user {getpass.getuser()}")  # as root: stay root, so it can read our files
        except (KeyError, OSError):
            pass
        if self.users:
            pw = self.dir / "passwd"
            pw.unlink(missing_ok=True)
            for i, (user, password) in enumerate(self.users.items()):
                args = [MOSQUITTO_PASSWD, "-b"] + (["-c"] if i == 0 else []) + [str(pw), user, password]
                res = subprocess.run(args, capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    raise BrokerError(f"mosquitto_passwd failed for user {user!r}: {res.stderr.strip() or res.stdout.strip()}")
            pw.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if self.extra_config:
            lines.append(self.extra_config)
        self.conf_path.write_text("\n".join(lines) + "\n")

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Broker:
        if self.running:
            return self
        if not Path(self.mosquitto).exists():
            raise BrokerError(f"mosquitto not found at {self.mosquitto} (install the mosquitto package)")
        deadline = time.monotonic() + timeout
        # A previous instance may still hold the port for a moment after stop().
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        log = open(self.log_path, "ab")  # handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                [self.mosquitto, "-c", str(self.conf_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the test run does not hit the broker first
            )
        finally:
            log.close()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with code {self.proc.returncode} on port {self.port}:\n{self.log_tail()}"
                )
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not accept connections on {self.host}:{self.port} within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop (SIGTERM); SIGKILL if it does not exit within ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case it was paused
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self.proc = None

    def kill(self) -> None:
        """Abrupt stop (SIGKILL): clients see their TCP connection reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered (a hung broker; PUBACKs stop)."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 10.0) -> Broker:
        self.stop()
        return self.start(timeout)

    # -- diagnostics (close, with, log_text and log_tail: tests/service.py) ------------------------
    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        auth = f", users={sorted(self.users)}" if self.users else ""
        return f"Broker({self.host}:{self.port}, {state}{auth})"
