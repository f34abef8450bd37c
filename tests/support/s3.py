"""A local S3-compatible server for tests: moto's standalone server on a free loopback port.

moto keeps everything in memory and does not check credentials, so the keys below are only
there because restic (like any S3 client) refuses to sign requests without them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support.servers import free_port

ACCESS_KEY_ID = "shipyard-test-key"
SECRET_ACCESS_KEY = "shipyard-test-secret-0123456789"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = field(default=SECRET_ACCESS_KEY, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """What an S3 client (restic) needs in its environment."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def restic_url(self, prefix: str) -> str:
        return f"s3:{self.endpoint}/{self.bucket}/{prefix}"

    def list_keys(self, prefix: str = "") -> list[str]:
        """Object keys in the bucket (moto answers unsigned requests)."""
        with urllib.request.urlopen(f"{self.endpoint}/{self.bucket}?list-type=2&prefix={prefix}") as reply:
            body = reply.read().decode()
        keys = []
        for part in body.split("<Key>")[1:]:
            keys.append(part.split("</Key>", 1)[0])
        return keys


ROOT = Path(__file__).resolve().parents[2]


def moto_server_command() -> list[str]:
    """How to start moto's server, first found of: `$SHIPYARD_MOTO_SERVER`; a tool venv at
    `.venv-moto/` (moto pins python-dateutil<3, which clashes with kubernetes>=37 in the project
    venv, so it may live apart); the project venv; PATH."""
    configured = os.environ.get("SHIPYARD_MOTO_SERVER")
    candidates = [
        Path(configured) if configured else None,
        ROOT / ".venv-moto" / "bin" / "moto_server",
        Path(sys.executable).parent / "moto_server",
    ]
    for candidate in candidates:
        if candidate is not None and candidate.exists():
            return [str(candidate)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    raise RuntimeError(
        "moto's S3 server is not installed: `pip install 'moto[server]>=5'` into .venv-moto "
        "(python3 -m venv .venv-moto) or the project venv, or set SHIPYARD_MOTO_SERVER"
    )


@contextlib.contextmanager
def s3_server(bucket: str = "shipyard-backups") -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port, create `bucket`, stop it afterwards."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="shipyard-s3-")) / "moto.log"
    env = {**os.environ, "MOTO_PORT": str(port)}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [*moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        _wait_until_up(endpoint, process, log)
        request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as reply:
            if reply.status != 200:
                raise RuntimeError(f"moto refused to create bucket {bucket}: HTTP {reply.status}")
        yield S3Server(endpoint=endpoint, bucket=bucket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(log.parent, ignore_errors=True)


def _wait_until_up(endpoint: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {endpoint} within 30 s")
