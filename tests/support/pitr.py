"""Point-in-time recovery test rig: a real PostgreSQL archiving into a real pgBackRest repository,
a writer that commits a row every 100 ms, and a watcher of the archive to measure the RPO.

Everything runs as the `postgres` OS user when the tests run as root (see support.servers).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from shipyard.backup import ScratchPostgres
from shipyard.backup._pgbackrest import ArchivingChange, PgBackRest, PgBackRestSettings, lsn_value
from support.servers import Postgres, free_port, postgres_server

WAL_SEGMENT = 16 * 1024 * 1024
_SEGMENT_FILE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})-[0-9a-f]{40}")


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Commit:
    """One row the writer committed, with client-side times around the commit and the WAL insert
    position right after it (an upper bound of the commit record's end)."""

    seq: int
    sent: datetime
    returned: datetime
    lsn_after: int


@dataclass
class PitrPrimary:
    server: Postgres
    pgbackrest: PgBackRest
    base: Path
    archiving: ArchivingChange
    error_before_archiving: str

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.server.url(), autocommit=True)

    def new_dir(self, name: str) -> Path:
        """A path under the rig's directory (which the postgres user owns) that does not exist yet."""
        return self.base / f"{name}-{time.monotonic_ns()}"


@contextlib.contextmanager
def pitr_primary(*, archive_timeout: int = 1, archive_async: bool = False) -> Iterator[PitrPrimary]:
    """A PostgreSQL with WAL archiving into a fresh stanza (archive_timeout in seconds)."""
    with postgres_server() as server:
        base = Path(tempfile.mkdtemp(prefix="shipyard-pitr-"))
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        try:
            settings = PgBackRestSettings(
                stanza="main",
                repository=base / "repo",
                data_dir=server.datadir,
                port=server.port,
                work_dir=base / "work",
                socket_dir=server.datadir.parent / "sockets",
                db_user=server.user,
                archive_timeout=archive_timeout,
                retention_full=2,
                compress_type="lz4",
                compress_level=1,
                process_max=2,
                archive_async=archive_async,
            )
            pgbackrest = PgBackRest(settings, base / "conf" / "pgbackrest.conf")
            pgbackrest.write_config()
            pgbackrest.create_stanza()
            error_before = ""
            try:
                pgbackrest.check()
            except Exception as error:  # recorded for the test that asserts the message
                error_before = str(error)
            archiving = pgbackrest.enable_archiving(restart=True, log_file=server.datadir.parent / "log")
            yield PitrPrimary(server, pgbackrest, base, archiving, error_before)
        finally:
            shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def started(primary: PitrPrimary, data_dir: Path) -> Iterator[Postgres]:
    """Start a restored data directory on a free port; stop it afterwards."""
    port = free_port()
    pgbackrest = primary.pgbackrest
    try:
        pgbackrest.start_restored(data_dir, port=port, log_file=data_dir.parent / f"{data_dir.name}.log")
        yield Postgres(port=port, datadir=data_dir, user=primary.server.user)
    finally:
        with contextlib.suppress(Exception):
            pgbackrest.stop_server(data_dir, mode="immediate")


@dataclass
class RowWriter:
    """Commits `INSERT (seq, clock_timestamp())` every `interval` seconds, autocommit, in a thread."""

    url: str
    interval: float = 0.1
    table: str = "pitr_rows"
    commits: list[Commit] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self, first_seq: int = 1) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(first_seq,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.error is not None:
            raise self.error

    def _run(self, seq: int) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self._stop.is_set():
                    sent = now_utc()
                    conn.execute(
                        sql.SQL("INSERT INTO {} (seq) VALUES (%s)").format(sql.Identifier(self.table)), (seq,)
                    )
                    returned = now_utc()
                    row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
                    assert row is not None
                    self.commits.append(Commit(seq, sent, returned, lsn_value(str(row[0]))))
                    seq += 1
                    self._stop.wait(self.interval)
        except BaseException as error:
            self.error = error


def archived_end(repository: Path, stanza: str) -> int:
    """The WAL position up to which the repository holds every segment (end of the newest one)."""
    newest = -1
    for path in (repository / "archive" / stanza).glob("*/*/*"):
        match = _SEGMENT_FILE.match(path.name)
        if match:
            newest = max(newest, int(match.group(2), 16) * 256 + int(match.group(3), 16))
    return (newest + 1) * WAL_SEGMENT


@dataclass
class ArchiveWatcher:
    """Samples (time, archived WAL end) every `period` seconds from the repository itself."""

    repository: Path
    stanza: str
    period: float = 0.05
    samples: list[tuple[datetime, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((now_utc(), archived_end(self.repository, self.stanza)))
            self._stop.wait(self.period)


@dataclass(frozen=True)
class RpoFigures:
    samples: int
    median: float
    p95: float
    worst: float


def rpo_figures(commits: list[Commit], samples: list[tuple[datetime, int]], since: datetime) -> RpoFigures:
    """For each moment X the primary could have vanished (each sample after `since`): X minus the
    commit time of the newest row whose commit record is in the archive, i.e. the seconds of
    committed writes that a restore from the repository alone would lose."""
    losses: list[float] = []
    for moment, end in samples:
        if moment < since:
            continue
        safe = [c.returned for c in commits if c.returned <= moment and c.lsn_after <= end]
        if safe:
            losses.append((moment - max(safe)).total_seconds())
    if not losses:
        return RpoFigures(0, float("nan"), float("nan"), float("nan"))
    ordered = sorted(losses)
    return RpoFigures(
        samples=len(losses),
        median=statistics.median(ordered),
        p95=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        worst=ordered[-1],
    )


def switch_wal_and_wait(primary: PitrPrimary, timeout: float = 60) -> int:
    """Close the current WAL segment (pg_switch_wal) and wait until the repository holds it."""
    with primary.connect() as conn:
        row = conn.execute("SELECT pg_switch_wal()::text").fetchone()
    assert row is not None
    switched = lsn_value(str(row[0]))
    settings = primary.pgbackrest.settings
    deadline = time.monotonic() + timeout
    while archived_end(settings.repository, settings.stanza) < switched:
        if time.monotonic() > deadline:
            raise TimeoutError(f"WAL up to {row[0]} was not archived within {timeout}s")
        time.sleep(0.05)
    return switched


def wait_streamed(url: str, timeout: float = 60) -> None:
    """Until the receiver has flushed everything the primary wrote so far."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT bool_or(flush_lsn >= pg_current_wal_lsn()) FROM pg_stat_replication"
            ).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.05)
    raise AssertionError("pg_receivewal did not catch up")


STREAM_SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    user: {user}
    local: {{port: {port}, data_dir: {data_dir}}}
backup:
  repository: ./restic
  password: ${{env:PITR_RESTIC_PASSWORD}}
  pitr: {{repository: ./pgbackrest, stanza: shop, archive_timeout: 60, stream: true}}
environments:
  test: {{}}
"""
"""A stack whose PostgreSQL (format in its user, port, data_dir) streams its WAL to a spool; its
restic password is read from $PITR_RESTIC_PASSWORD."""


def use_stream_stack(base: Path, server: ScratchPostgres, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write STREAM_SPEC for `server` into `base` and point the CLI at it (its state store, state
    dir, actor and spec, by environment; `base` the working directory); returns the spec's path."""
    spec = base / "shipyard.yaml"
    spec.write_text(STREAM_SPEC.format(user=server.user, port=server.port, data_dir=server.data_dir))
    for key, value in {
        "PITR_RESTIC_PASSWORD": "unused",
        "SHIPYARD_DATABASE_URL": f"sqlite:///{base / 'state.db'}",
        "SHIPYARD_STATE_DIR": str(base / "state"),
        "SHIPYARD_ACTOR": "tester",
        "SHIPYARD_SPEC": str(spec),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(base)
    return spec
