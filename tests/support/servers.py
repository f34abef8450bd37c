"""Real servers for integration tests, started on free loopback ports in temp dirs.

PostgreSQL refuses to run as root, and CI runs as root: the server then runs as the `postgres`
system user that Debian's package creates, in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_bin(name: str) -> str | None:
    for directory in PG_BIN_CANDIDATES:
        if (directory / name).exists():
            return str(directory / name)
    return shutil.which(name)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass(frozen=True)
class Postgres:
    port: int
    datadir: Path
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        psql = pg_bin("psql") or "psql"
        result = subprocess.run(
            [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", database, "-Atc", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def stop(self) -> None:
        """Stop the server (fast shutdown: connections are cut), as an outage of the store."""
        pg_ctl = pg_bin("pg_ctl") or "pg_ctl"
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(self.datadir), "-m", "fast", "-w", "stop"]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        """Start it again after `stop()`, on the same port and data."""
        _pg_start(self.datadir, self.port)


def _pg_start(datadir: Path, port: int) -> None:
    """`pg_ctl start` on a data directory laid out as `postgres_server` makes it."""
    pg_ctl = pg_bin("pg_ctl") or "pg_ctl"
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {datadir.parent / 'sockets'} -c fsync=off"
    subprocess.run(
        _as_postgres(
            [pg_ctl, "-D", str(datadir), "-o", options, "-l", str(datadir.parent / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A throwaway PostgreSQL on a free loopback port (trust auth, loopback only)."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError(
            "PostgreSQL is not installed; run `make install` (it installs Debian's postgresql)"
        )
    base = Path(tempfile.mkdtemp(prefix="shipyard-pg-"))
    datadir, sockets = base / "data", base / "sockets"
    sockets.mkdir()
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres([initdb, "-D", str(datadir), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    _pg_start(datadir, port)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        yield Postgres(port=port, datadir=datadir, user=user)
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(datadir), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            check=False,  # stopping is best effort: the directory is removed either way
        )
        shutil.rmtree(base, ignore_errors=True)
