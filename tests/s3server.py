"""A real S3-compatible server for tests: moto's server (``moto[server]``, the dev extra) as its own process on a
free 127.0.0.1 port. The historian talks to it over HTTP with boto3 as it would to MinIO or AWS; nothing in the
client is mocked.

Plain module, no pytest import::

    from tests.s3server import S3Server

    with S3Server() as s3:
        s3.endpoint_url               # http://127.0.0.1:<port>
        s3.client().create_bucket(Bucket="evidence")
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.helpers import free_port
from tests.service import Service, spawn, wait_listening

ACCESS_KEY = "boxinspect-test"
SECRET_KEY = "boxinspect-test-secret"
REGION = "us-east-1"


def available() -> bool:
    return importlib.util.find_spec("moto") is not None and importlib.util.find_spec("boto3") is not None


class S3Server(Service):
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.dir = Path(tempfile.mkdtemp(prefix="boxinspect-s3-"))
        self._own_dir = True
        self.log_path = self.dir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> S3Server:
        self.proc = spawn([sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)], self.log_path)
        wait_listening(self.proc, self.host, self.port, timeout, "moto's S3 server", self.log_tail)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY)
