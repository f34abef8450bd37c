"""A real PostgreSQL primary with a streaming replica behind a real HAProxy TCP proxy, on loopback.

    with replicated_postgres() as cluster:          # primary + standby (pg_basebackup) + HAProxy
        cluster.spec_file(tmp_path, rpo="0")         # a shipyard.yaml naming both nodes
        writer = Writer(cluster.proxy_port); writer.start(); ...; writer.stop()

Both nodes run as `postgres` (PostgreSQL refuses root) in one temp dir that user owns, with
`wal_log_hints=on` so pg_rewind can rebuild a former primary. Per-node settings (port, address)
are given on pg_ctl's command line, not in the data directory, because pg_rewind and
pg_basebackup copy a data directory's config files from the other node; shipyard starts nodes
the same way. HAProxy's TCP backend (named after the datastore) holds both servers, without health checks
(a standby accepts connections too, so only the admin state decides the role): `primary` ready,
`standby` in maintenance; shipyard switches them through the runtime API.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from shipyard.dr import application_name
from shipyard.rollout.targets.haproxy import (
    HAProxyClient,
    ProxyPaths,
    check_config,
    start_haproxy,
    stop_haproxy,
)
from support.haproxy import HAPROXY
from support.servers import free_port, pg_bin

DATASTORE = "db"
ADMIN = "postgres"


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str]) -> str:
    result = subprocess.run(as_postgres(argv), capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {result.stderr or result.stdout}")
    return result.stdout


@dataclass(frozen=True)
class PgNode:
    port: int
    data_dir: Path

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1"
        log = str(self.data_dir / "shipyard-pg_ctl.log")
        _run([_tool("pg_ctl"), "-D", str(self.data_dir), "-o", options, "-l", log, "-w", "start"])

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(
            as_postgres([_tool("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
            capture_output=True,
            check=False,
        )

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=ADMIN,
            dbname="postgres",
            autocommit=True,
            connect_timeout=2,
        )

    def scalar(self, sql: str) -> object:
        """The first column of the first row of `sql` (None for a statement that returns none)."""
        with self.connect() as connection:
            cursor = connection.execute(sql)
            row = cursor.fetchone() if cursor.description else None
            return row[0] if row else None


def _tool(name: str) -> str:
    path = pg_bin(name)
    if path is None:
        raise RuntimeError(
            "PostgreSQL is not installed; run `make install` (it installs Debian's postgresql)"
        )
    return path


@dataclass
class Cluster:
    base: Path
    primary: PgNode
    standby: PgNode
    proxy_port: int
    proxy_paths: ProxyPaths

    @property
    def client(self) -> HAProxyClient:
        return HAProxyClient(self.proxy_paths.admin_socket)

    @property
    def proxy_args(self) -> list[str]:
        return [
            "--proxy-socket",
            str(self.proxy_paths.admin_socket),
            "--proxy-address",
            f"127.0.0.1:{self.proxy_port}",
        ]

    def server_states(self) -> dict[str, str]:
        """Each server's state as HAProxy's stats show it: `maint` or `ready` (no health checks)."""
        return {
            s.server: "maint" if s.status == "MAINT" else "ready" for s in self.client.show_stat(DATASTORE)
        }

    def spec_text(self, *, rpo: str = "0", standby: bool = True) -> str:
        lines = [
            "name: shop",
            "datastores:",
            f"  {DATASTORE}:",
            "    kind: postgresql",
            "    storage: {size: 1Gi}",
            f"    local: {{host: 127.0.0.1, port: {self.primary.port}, data_dir: {self.primary.data_dir}}}",
        ]
        if standby:
            node = self.standby
            lines.append(f"    standby: {{host: 127.0.0.1, port: {node.port}, data_dir: {node.data_dir}}}")
        lines.append(f"dr: {{rto: 30s, rpo: {rpo}}}")
        return "\n".join(lines) + "\n"

    def spec_file(self, directory: Path, *, rpo: str = "0", standby: bool = True) -> Path:
        path = directory / "shipyard.yaml"
        path.write_text(self.spec_text(rpo=rpo, standby=standby))
        return path

    def wait_streaming(self, upstream: PgNode, name: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        sql = f"SELECT state FROM pg_stat_replication WHERE application_name = '{name}'"
        while upstream.scalar(sql) != "streaming":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} does not stream from port {upstream.port}")
            time.sleep(0.05)


_CONF = """
wal_level = replica
wal_log_hints = on
max_wal_senders = 10
wal_keep_size = 256MB
hot_standby = on
fsync = off
unix_socket_directories = '{sockets}'
"""

_HAPROXY_CFG = """global
    stats socket {socket} mode 600 level admin
    stats timeout 30s
    pidfile {pid}
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend fe_{ds}
    bind 127.0.0.1:{port}
    default_backend {ds}
backend {ds}
    server primary 127.0.0.1:{primary}
    server standby 127.0.0.1:{standby}
"""


_TEMPLATE: list[Path] = []


def _template() -> Path:
    """An initdb'd data directory, made once per test process and copied for each cluster
    (initdb is the slowest part of starting one)."""
    if not _TEMPLATE:
        base = Path(tempfile.mkdtemp(prefix="sy-repl-template-"))
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        data = str(base / "data")
        _run([_tool("initdb"), "-D", data, "-U", ADMIN, "--auth=trust", "-E", "UTF8", "--no-sync"])
        _TEMPLATE.append(Path(data))
    return _TEMPLATE[0]


@contextlib.contextmanager
def replicated_postgres() -> Iterator[Cluster]:
    """A primary, a streaming standby (`application_name` as shipyard names it) and an HAProxy in
    front (primary ready, standby in maint); everything stopped and removed afterwards."""
    if HAPROXY is None:
        raise RuntimeError("HAProxy is not installed; run `make install` (it installs Debian's haproxy)")
    base = Path(tempfile.mkdtemp(prefix="sy-repl-"))
    sockets = base / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
    primary = PgNode(free_port(), base / "primary")
    standby = PgNode(free_port(), base / "standby")
    proxy_dir = Path(tempfile.mkdtemp(prefix="sy-dbproxy-"))
    paths = ProxyPaths(proxy_dir)
    try:
        _run(["cp", "-a", str(_template()), str(primary.data_dir)])
        with (primary.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(_CONF.format(sockets=sockets))
        primary.start()
        conninfo = f"host=127.0.0.1 port={primary.port} user={ADMIN}"
        _run(
            [
                _tool("pg_basebackup"),
                "-d",
                conninfo,
                "-D",
                str(standby.data_dir),
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ]
        )
        name = application_name(DATASTORE, "standby")
        with (standby.data_dir / "postgresql.auto.conf").open("a") as auto:
            auto.write(f"primary_conninfo = '{conninfo} application_name={name}'\n")
        _run(["touch", str(standby.data_dir / "standby.signal")])
        standby.start()
        proxy_port = free_port()
        paths.config.write_text(
            _HAPROXY_CFG.format(
                socket=paths.admin_socket,
                pid=paths.pid_file,
                ds=DATASTORE,
                port=proxy_port,
                primary=primary.port,
                standby=standby.port,
            )
        )
        check_config(paths.config, HAPROXY)
        start_haproxy(paths, HAPROXY)
        # In maint through the runtime API, not `disabled` in the config: HAProxy 2.6 keeps a
        # config-disabled server's CMAINT bit in `show servers state` even once it is ready.
        HAProxyClient(paths.admin_socket).set_state(DATASTORE, "standby", "maint")
        cluster = Cluster(base, primary, standby, proxy_port, paths)
        cluster.wait_streaming(primary, name)
        yield cluster
    finally:
        stop_haproxy(paths)
        for node in (primary, standby):
            node.stop()
        shutil.rmtree(proxy_dir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Writer:
    """Inserts rows through the proxy in autocommit, one at a time, remembering every id whose
    COMMIT returned; on a connection error it reconnects and goes on with the next id (the id
    whose commit did not return is neither counted as committed nor reused)."""

    port: int
    table: str = "drill"
    committed: list[int] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait_for(self, count: int, timeout_s: float = 30) -> None:
        """Wait until `count` more rows have committed."""
        target = len(self.committed) + count
        deadline = time.monotonic() + timeout_s
        while len(self.committed) < target:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the writer committed {len(self.committed)} of {target} rows ({self.errors} errors)"
                )
            time.sleep(0.02)

    def _run(self) -> None:
        next_id = 1
        connection: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = psycopg.connect(
                        host="127.0.0.1",
                        port=self.port,
                        user=ADMIN,
                        dbname="postgres",
                        autocommit=True,
                        connect_timeout=2,
                    )
                row_id, next_id = next_id, next_id + 1
                connection.execute(f"INSERT INTO {self.table} (id) VALUES (%s)", (row_id,))
                self.committed.append(row_id)
            except psycopg.Error:
                self.errors += 1
                if connection is not None:
                    with contextlib.suppress(psycopg.Error):
                        connection.close()
                connection = None
                time.sleep(0.02)
        if connection is not None:
            connection.close()
