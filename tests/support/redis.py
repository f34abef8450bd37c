"""A real redis-server for integration tests: free loopback port, temp dir, no persistence."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.servers import free_port


@dataclass(frozen=True)
class RedisServer:
    port: int
    directory: Path
    password: str | None = None

    def cli(self, *args: str) -> str:
        """Run a redis-cli command against the server; its stdout."""
        env = {"REDISCLI_AUTH": self.password} if self.password else None
        result = subprocess.run(
            ["redis-cli", "--no-auth-warning", "-h", "127.0.0.1", "-p", str(self.port), *args],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        return result.stdout.strip()


@contextlib.contextmanager
def redis_server(password: str | None = None) -> Iterator[RedisServer]:
    """redis-server on a free loopback port in a temp dir (`--save ""`, no AOF), stopped after.

    `repl-diskless-sync-delay 0`: `redis-cli --rdb` otherwise waits Redis's default 5 s for
    more replicas to join the transfer."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed; run `make install` (Debian's redis-server)")
    directory = Path(tempfile.mkdtemp(prefix="shipyard-redis-"))
    port = free_port()
    argv = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0",
        "--daemonize", "no", "--logfile", str(directory / "log"),
    ]  # fmt: skip
    if password:
        argv += ["--requirepass", password]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port=port, directory=directory, password=password)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if server.cli("ping") == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"redis-server did not start; see {directory / 'log'}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
