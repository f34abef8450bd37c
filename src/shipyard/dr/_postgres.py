"""A thin adapter over one PostgreSQL node: SQL on loopback or a host, and its server binaries.

Server-side tools (`pg_ctl`, `pg_controldata`, `pg_rewind`, `pg_basebackup`) run as the owner of
the node's data directory: PostgreSQL refuses root, so a root caller runs them through `runuser`.
Passwords never reach argv: libpq reads `PGPASSWORD` (or `~/.pgpass`) from the environment.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ..errors import DrError

CONNECT_TIMEOUT_S = 2


@dataclass(frozen=True)
class Node:
    """One PostgreSQL server of a datastore, named by its role in the spec (`primary`, `standby`)."""

    name: str
    host: str
    port: int
    data_dir: str | None
    application_name: str
    """What it calls itself to its upstream when it streams (`synchronous_standby_names` names it)."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Admin:
    """How shipyard connects for failover: a superuser (pg_promote, pg_rewind) on `database`."""

    user: str = "postgres"
    database: str = "postgres"
    version: str = "15"


def conninfo(host: str, port: int, admin: Admin, **extra: str) -> str:
    """A libpq connection string (no password: libpq takes it from the environment)."""
    params = {"host": host, "port": str(port), "user": admin.user, "dbname": admin.database, **extra}
    return " ".join(f"{key}={_quote_conninfo(value)}" for key, value in params.items())


def _quote_conninfo(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/:" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def connect(host: str, port: int, admin: Admin, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """An autocommit connection; a failure to connect raises psycopg.OperationalError."""
    with psycopg.connect(
        conninfo(host, port, admin, connect_timeout=str(max(1, round(timeout_s)))),
        autocommit=True,
    ) as connection:
        yield connection


def query_one(node: Node, admin: Admin, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    with connect(node.host, node.port, admin) as connection:
        cursor = connection.execute(sql, params)
        row = cursor.fetchone() if cursor.description else None
        return tuple(row) if row is not None else None


def reachable(node: Node, admin: Admin) -> bool:
    try:
        query_one(node, admin, "SELECT 1")
    except psycopg.Error:
        return False
    return True


# --- what a node reports -------------------------------------------------------------------------


@dataclass(frozen=True)
class Replica:
    """A standby as its upstream sees it (`pg_stat_replication`)."""

    application_name: str
    state: str
    sync_state: str
    lag_bytes: int | None
    """How far its replayed WAL is behind the upstream's current WAL."""


@dataclass(frozen=True)
class NodeStatus:
    """What one node says about itself; `reachable` False leaves the rest unknown."""

    reachable: bool
    in_recovery: bool | None = None
    receiver_status: str | None = None
    """`streaming` when a standby's WAL receiver is connected to its upstream."""
    receive_lsn: str | None = None
    replay_lsn: str | None = None
    replicas: tuple[Replica, ...] = ()
    synchronous_standby_names: str = ""
    error: str | None = None


def node_status(node: Node, admin: Admin) -> NodeStatus:
    try:
        with connect(node.host, node.port, admin) as connection:
            in_recovery = bool(connection.execute("SELECT pg_is_in_recovery()").fetchone()[0])
            sync_names = str(connection.execute("SHOW synchronous_standby_names").fetchone()[0])
            if in_recovery:
                receiver = connection.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
                lsns = connection.execute(
                    "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text"
                ).fetchone()
                return NodeStatus(
                    reachable=True,
                    in_recovery=True,
                    receiver_status=str(receiver[0]) if receiver else None,
                    receive_lsn=lsns[0] if lsns else None,
                    replay_lsn=lsns[1] if lsns else None,
                    synchronous_standby_names=sync_names,
                )
            rows = connection.execute(
                "SELECT application_name, state, sync_state,"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint"
                " FROM pg_stat_replication"
            ).fetchall()
            replicas = tuple(
                Replica(str(r[0]), str(r[1]), str(r[2]), None if r[3] is None else int(r[3])) for r in rows
            )
            return NodeStatus(
                reachable=True, in_recovery=False, replicas=replicas, synchronous_standby_names=sync_names
            )
    except psycopg.Error as error:
        return NodeStatus(reachable=False, error=_first_line(str(error)))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def lsn_value(lsn: str) -> int:
    """`16/B374D848` as a byte position."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def promote(node: Node, admin: Admin, timeout_s: int = 60) -> None:
    """`pg_promote(wait => true)`: returns once the node accepts writes."""
    try:
        row = query_one(node, admin, "SELECT pg_promote(true, %s)", (timeout_s,))
    except psycopg.Error as error:
        raise DrError(f"promoting {node.name} ({node.address}) failed: {_first_line(str(error))}") from error
    if not row or row[0] is not True:
        raise DrError(f"{node.name} ({node.address}) did not finish promotion within {timeout_s} s")


def set_synchronous_standby(node: Node, admin: Admin, standby_application_name: str | None) -> None:
    """Make `node` (a primary) wait for `standby_application_name` on every commit, or for none.

    ALTER SYSTEM + reload: `synchronous_commit` is `on`, so a COMMIT returns only once the standby
    has flushed its WAL (RPO 0). None clears it, so a primary without a replica does not block.
    """
    names = f'"{standby_application_name}"' if standby_application_name else ""
    try:
        with connect(node.host, node.port, admin) as connection:
            connection.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            connection.execute("ALTER SYSTEM SET synchronous_commit = 'on'")
            connection.execute("SELECT pg_reload_conf()")
            # The reload is asynchronous: wait until this backend sees the new value.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                shown = connection.execute("SHOW synchronous_standby_names").fetchone()
                if shown and str(shown[0]).strip() == names:
                    return
                time.sleep(0.05)
    except psycopg.Error as error:
        raise DrError(
            f"configuring synchronous replication on {node.name} ({node.address}) failed:"
            f" {_first_line(str(error))}"
        ) from error
    raise DrError(f"{node.name} ({node.address}) did not take synchronous_standby_names = {names!r}")


def write_probe(host: str, port: int, admin: Admin, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A real write transaction (assigns and commits a transaction id); raises psycopg.Error."""
    with connect(host, port, admin, timeout_s) as connection:
        connection.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
        connection.execute("SELECT txid_current()")


# --- server binaries -----------------------------------------------------------------------------


def pg_tool(name: str, version: str) -> str:
    candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise DrError(f"{name} is not installed; install Debian's postgresql-{version}")
    return found


def _owner_argv(argv: list[str], data_dir: str) -> list[str]:
    """`argv` as the owner of `data_dir` (or of its parent, before it exists) when we are root."""
    if os.geteuid() != 0:
        return argv
    path = Path(data_dir)
    while not path.exists() and path != path.parent:
        path = path.parent
    owner = pwd.getpwuid(path.stat().st_uid).pw_name
    return argv if owner == "root" else ["runuser", "-u", owner, "--", *argv]


def run_tool(argv: list[str], data_dir: str, timeout_s: float = 120) -> str:
    """Run a server tool as the data directory's owner; its output, or DrError with its message."""
    full = _owner_argv(argv, data_dir)
    try:
        result = subprocess.run(
            full, capture_output=True, text=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as error:
        raise DrError(f"{argv[0]} is not installed") from error
    except subprocess.TimeoutExpired as error:
        raise DrError(f"`{Path(argv[0]).name}` did not finish within {timeout_s:g} s") from error
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        raise DrError(f"`{Path(argv[0]).name}` failed (exit {result.returncode}): {message}")
    return result.stdout


def stop(node: Node, admin: Admin, timeout_s: int = 60) -> None:
    """`pg_ctl stop -m fast`: sessions end, WAL up to the shutdown checkpoint reaches the standbys."""
    assert node.data_dir is not None
    run_tool(
        [
            pg_tool("pg_ctl", admin.version),
            "-D",
            node.data_dir,
            "-m",
            "fast",
            "-t",
            str(timeout_s),
            "-w",
            "stop",
        ],
        node.data_dir,
        timeout_s + 10,
    )


def start(node: Node, admin: Admin, timeout_s: int = 60) -> None:
    """`pg_ctl start` on the node's port and host (per-node settings that copies of a data
    directory, by pg_rewind or pg_basebackup, must not carry over)."""
    assert node.data_dir is not None
    options = f"-p {node.port} -c listen_addresses={shlex.quote(node.host)}"
    log = Path(node.data_dir) / "shipyard-pg_ctl.log"
    try:
        _start(node, admin, options, str(log), timeout_s)
    except DrError as error:
        tail = _tail(log)
        raise DrError(
            error.message + (f"\nthe server's log ({log}) ends:\n{tail}" if tail else "")
        ) from error


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start(node: Node, admin: Admin, options: str, log: str, timeout_s: int) -> None:
    assert node.data_dir is not None
    run_tool(
        [
            pg_tool("pg_ctl", admin.version),
            "-D",
            node.data_dir,
            "-o",
            options,
            "-l",
            log,
            "-t",
            str(timeout_s),
            "-w",
            "start",
        ],
        node.data_dir,
        timeout_s + 10,
    )


def is_running(node: Node, admin: Admin) -> bool:
    """Whether a postmaster runs on the node's data directory (`pg_ctl status`)."""
    assert node.data_dir is not None
    argv = _owner_argv([pg_tool("pg_ctl", admin.version), "-D", node.data_dir, "status"], node.data_dir)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return result.returncode == 0


def checkpoint_lsn(node: Node, admin: Admin) -> str:
    """The stopped node's last checkpoint (its shutdown checkpoint after a clean stop)."""
    assert node.data_dir is not None
    output = run_tool([pg_tool("pg_controldata", admin.version), "-D", node.data_dir], node.data_dir, 30)
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Latest checkpoint location":
            return value.strip()
    raise DrError(f"pg_controldata of {node.data_dir} shows no checkpoint location")


def rewind(node: Node, source: Node, admin: Admin) -> None:
    """`pg_rewind` the stopped `node` onto `source`'s timeline (needs wal_log_hints or checksums)."""
    assert node.data_dir is not None
    run_tool(
        [
            pg_tool("pg_rewind", admin.version),
            "--target-pgdata",
            node.data_dir,
            "--source-server",
            conninfo(source.host, source.port, admin),
        ],
        node.data_dir,
        600,
    )


def basebackup(node: Node, source: Node, admin: Admin) -> Path:
    """Replace `node`'s data directory by a fresh copy of `source` (`pg_basebackup`); the old one is
    kept beside it, renamed, and its path returned."""
    assert node.data_dir is not None
    data_dir = Path(node.data_dir)
    kept = data_dir.with_name(f"{data_dir.name}.before-failback-{time.strftime('%Y%m%dT%H%M%S')}")
    if data_dir.exists():
        data_dir.rename(kept)
    run_tool(
        [
            pg_tool("pg_basebackup", admin.version),
            "-d",
            conninfo(source.host, source.port, admin),
            "-D",
            str(data_dir),
            "-X",
            "stream",
            "-c",
            "fast",
        ],
        str(data_dir),
        1800,
    )
    return kept


def make_standby(node: Node, upstream: Node, admin: Admin) -> None:
    """Configure the stopped `node` to stream from `upstream` under its own application name.

    Copies (pg_rewind, pg_basebackup) bring the source's postgresql.auto.conf along: its
    primary_conninfo and synchronous_standby_names are the source's and are replaced here.
    """
    assert node.data_dir is not None
    data_dir = Path(node.data_dir)
    auto = data_dir / "postgresql.auto.conf"
    kept = [
        line
        for line in (auto.read_text().splitlines() if auto.exists() else [])
        if line.split("=", 1)[0].strip() not in ("primary_conninfo", "synchronous_standby_names")
    ]
    primary = conninfo(upstream.host, upstream.port, admin, application_name=node.application_name)
    kept.append("primary_conninfo = '" + primary.replace("'", "''") + "'")
    auto.write_text("\n".join(kept) + "\n")
    signal = data_dir / "standby.signal"
    signal.write_text("")
    if os.geteuid() == 0:
        stat = data_dir.stat()
        for path in (auto, signal):
            os.chown(path, stat.st_uid, stat.st_gid)
            path.chmod(0o600)
