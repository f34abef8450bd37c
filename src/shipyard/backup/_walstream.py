"""Streaming WAL into a spool next to the pgBackRest repository with PostgreSQL's `pg_receivewal`.

archive_command only sees a WAL segment once it is closed (at best every `archive_timeout`), so a
primary lost between two switches takes up to that much committed work with it. `pg_receivewal`
receives WAL as it is written, over a replication slot (the primary keeps WAL the receiver has not
confirmed, so nothing is lost while it reconnects), and keeps the open segment as `<name>.partial`.
A restore then asks pgBackRest's archive first, then the spool's complete segments, then the
`.partial` one (see `restore_command`).

Supervision is pg_receivewal's own: without `--no-loop` it reconnects by itself whenever the
connection drops, so shipyard only starts it detached (a pid file in the spool), stops it and
reports on it; nothing runs inside a shipyard process.

pg_receivewal never deletes what it received, and every segment it closes is a full 16 MB file
(with `archive_timeout: 1`, one a second under writes), so shipyard prunes the spool (`prune`):
a segment goes once pgBackRest's archive provably holds it (a restore asks the archive first, so
the spool's copy would never be read again), or once it is older than the oldest backup's WAL
(what pgBackRest's expiry drops too: no restore starts before it). Everything else stays: the
un-archived tail is what only the spool can restore. `_pitr_ops.prune_spool` runs it after each
pgBackRest backup and expire, and every minute with the scheduler's stream check.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import time as _time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from shipyard.errors import BackupError, UserError
from shipyard.host import pid_alive

_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")
_SEGMENT = re.compile(r"^[0-9A-F]{24}(\.partial)?$")
_COMPLETE = re.compile(r"^[0-9A-F]{24}$")
PID_FILE = "pg_receivewal.pid"
LOG_FILE = "pg_receivewal.log"
LOCK_FILE = "spool.lock"
"""flock()ed shared while the spool is read as it stands (`held`), exclusively to prune it."""


@dataclass(frozen=True)
class WalStreamSettings:
    """Where pg_receivewal connects and where it writes."""

    spool_dir: Path
    """Received WAL: complete segments and the open `<segment>.partial`."""
    host: str
    port: int
    user: str = "postgres"
    slot: str = "shipyard_walstream"
    synchronous: bool = True
    """`--synchronous`: flush every write at once and report it (needed to be a synchronous standby)."""
    pg_bin_dir: Path | None = None
    max_slot_wal: int | None = None
    """Bytes of WAL the slot may hold back (`max_slot_wal_keep_size`); None leaves the server's."""

    @property
    def wal_dir(self) -> Path:
        return self.spool_dir / "wal"


@dataclass(frozen=True)
class WalStreamStatus:
    running: bool
    pid: int | None
    slot_exists: bool
    slot_active: bool
    restart_lsn: str | None
    """Oldest WAL the primary keeps for the receiver."""
    newest_segment: str | None
    """The newest file in the spool (`.partial` while a segment is being received)."""
    wal_status: str | None = None
    """The slot's `wal_status`: reserved, extended, unreserved (about to be given up) or lost."""
    safe_wal_size: int | None = None
    """Bytes of WAL that may still be written before the slot is given up (None: no limit)."""

    def as_data(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "pid": self.pid,
            "slot_exists": self.slot_exists,
            "slot_active": self.slot_active,
            "restart_lsn": self.restart_lsn,
            "newest_segment": self.newest_segment,
            "wal_status": self.wal_status,
            "safe_wal_size": self.safe_wal_size,
        }


# --- pure parts --------------------------------------------------------------------------------


def spool_dir_for(repository: Path, stanza: str) -> Path:
    """`<repository>.walstream/<stanza>`: next to pgBackRest's repository, outside its tree."""
    return repository.with_name(repository.name + ".walstream") / stanza


def receivewal_argv(settings: WalStreamSettings, binary: str) -> list[str]:
    """pg_receivewal streaming into the spool through the slot, reconnecting by itself."""
    if not _SLOT.fullmatch(settings.slot):
        raise UserError(f"replication slot {settings.slot!r}: use 1-63 of a-z, 0-9 and _")
    argv = [
        binary,
        f"--directory={settings.wal_dir}",
        f"--host={settings.host}",
        f"--port={settings.port}",
        f"--username={settings.user}",
        f"--slot={settings.slot}",
        "--no-password",
    ]
    if settings.synchronous:
        argv.append("--synchronous")
    return argv


def prunable(names: Iterable[str], archived: Collection[str], *, needed_from: str | None) -> list[str]:
    """The spool files that may go: complete segments in `archived` (what pgBackRest's archive
    holds), and complete segments before `needed_from` (the first WAL segment of the oldest
    backup: no restore reads WAL from before it). The `.partial` segment, files that are not
    segments, and every segment from `needed_from` on that the archive lacks, stay. Pure."""
    start = _position(needed_from) if needed_from and _COMPLETE.fullmatch(needed_from) else None
    return sorted(
        name
        for name in names
        if _COMPLETE.fullmatch(name) and (name in archived or (start is not None and _position(name) < start))
    )


def _position(segment: str) -> int:
    """A segment's place in the WAL, whatever its timeline (log and segment number)."""
    return int(segment[8:24], 16)


def restore_command(archive_get: str, wal_dir: Path) -> str:
    """PostgreSQL's restore_command: pgBackRest's archive first, then the spool's complete segment,
    then its `.partial` one (the tail that was never archived), copied under the segment's name.

    `archive_get` is the pgBackRest `archive-get %f "%p"` command line.
    """
    spool = str(wal_dir)
    if shlex.quote(spool) != spool:
        raise UserError(f"WAL spool {spool!r}: use a path without spaces or shell characters")
    return f'{archive_get} || cp {spool}/%f "%p" 2>/dev/null || cp {spool}/%f.partial "%p" 2>/dev/null'


# --- the adapter -------------------------------------------------------------------------------


class WalStream:
    """pg_receivewal for one primary: create its slot, start, stop, status."""

    def __init__(self, settings: WalStreamSettings, *, os_user: str | None = None) -> None:
        """os_user: who runs pg_receivewal and owns the spool (when root: `postgres` by default)."""
        self.settings = settings
        if os_user is None:
            os_user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.os_user = os_user

    @property
    def pid_file(self) -> Path:
        return self.settings.spool_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.settings.spool_dir / LOG_FILE

    def binary(self) -> str:
        bin_dir = self.settings.pg_bin_dir
        if bin_dir is not None and (bin_dir / "pg_receivewal").exists():
            return str(bin_dir / "pg_receivewal")
        found = shutil.which("pg_receivewal")
        if found is None:
            raise BackupError(
                "pg_receivewal is not installed: install PostgreSQL's client tools "
                "(`apt-get install postgresql-client`)"
            )
        return found

    def create_slot(self) -> None:
        """The physical replication slot (idempotent): the primary keeps WAL until it is received."""
        argv = [*receivewal_argv(self.settings, self.binary()), "--create-slot", "--if-not-exists"]
        result = subprocess.run(
            argv, capture_output=True, text=True, cwd="/", timeout=60, check=False, **self._user()
        )
        if result.returncode != 0:
            raise BackupError(f"pg_receivewal could not create slot {self.settings.slot}: {_last(result)}")

    def drop_slot(self) -> None:
        """Drop the slot, so the primary stops keeping WAL for a receiver that is gone."""
        with self._connect() as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (self.settings.slot,),
            )

    def start(self, *, timeout: float = 30) -> int:
        """Create the spool and the slot, start pg_receivewal detached and wait until it streams.
        Returns its pid; a receiver already running is kept."""
        current = self.running_pid()
        if current is not None:
            return current
        for directory in (self.settings.spool_dir, self.settings.wal_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._own(directory)
        self._limit_slot_wal()
        if self.status().wal_status == "lost":
            # PostgreSQL gave the slot up (max_slot_wal_keep_size): the WAL after the spool's end
            # is gone from the primary, and pg_receivewal would ask for it forever. Stream from
            # now on a new slot with a fresh spool; the old one is set aside (what it held and
            # what was missed are in pgBackRest's archive: WAL leaves the primary only archived).
            self.drop_slot()
            aside = self.settings.spool_dir / f"wal.lost-{_time.strftime('%Y%m%dT%H%M%S')}"
            os.replace(self.settings.wal_dir, aside)
            self.settings.wal_dir.mkdir(mode=0o750)
            self._own(self.settings.wal_dir)
        self.create_slot()
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            process = subprocess.Popen(
                receivewal_argv(self.settings, self.binary()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                start_new_session=True,  # outlives the shipyard command that started it
                **self._user(),
            )
        finally:
            log.close()
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = _time.monotonic() + timeout
        while _time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise BackupError(f"pg_receivewal exited (code {process.returncode}):\n{self._tail()}")
            if self.status().slot_active:
                return process.pid
            _time.sleep(0.05)
        raise BackupError(f"pg_receivewal did not start streaming in {timeout:.0f}s:\n{self._tail()}")

    def stop(self, *, timeout: float = 15) -> bool:
        """Stop the receiver (SIGTERM: it flushes what it has). False when none was running."""
        pid = self.running_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = _time.monotonic() + timeout
        while _time.monotonic() < deadline and pid_alive(pid):
            _reap(pid)
            _time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The spool stays as it stands meanwhile: nothing is pruned from it (a shared lock).

        For a reader that learns the archive's end and then copies the spool beyond it (a
        drill's `freeze_wal`): a prune in between could delete a segment the archive gained
        meanwhile, which the reader would then find in neither."""
        with self._spool_lock(fcntl.LOCK_SH):
            yield

    def prune(self, archived: Collection[str], *, needed_from: str | None) -> list[str]:
        """Delete the spool segments `prunable` names (see there) and return them, oldest first.

        `archived` must come from pgBackRest's own listing of its archive (see
        `_pitr_ops.prune_spool`); a segment is deleted only when it names it (or it is older
        than `needed_from`)."""
        wal_dir = self.settings.wal_dir
        if not wal_dir.is_dir():
            return []
        with self._spool_lock(fcntl.LOCK_EX):
            gone = prunable([p.name for p in wal_dir.iterdir()], archived, needed_from=needed_from)
            for name in gone:
                (wal_dir / name).unlink(missing_ok=True)
        return gone

    @contextlib.contextmanager
    def _spool_lock(self, operation: int) -> Iterator[None]:
        if not self.settings.spool_dir.is_dir():  # no spool yet: nothing to keep still
            yield
            return
        try:
            descriptor = os.open(self.settings.spool_dir / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o640)
        except OSError as exc:
            raise BackupError(
                f"cannot open the WAL spool's lock {self.settings.spool_dir / LOCK_FILE}: "
                f"{exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(descriptor, operation)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def running_pid(self) -> int | None:
        """The receiver's pid when the pid file names a live pg_receivewal."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        _reap(pid)
        if not pid_alive(pid):
            return None
        with contextlib.suppress(OSError):
            if b"pg_receivewal" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return None  # the pid was reused by something else
        return pid

    def status(self) -> WalStreamStatus:
        pid = self.running_pid()
        exists = active = False
        restart_lsn: str | None = None
        wal_status: str | None = None
        safe_wal_size: int | None = None
        with contextlib.suppress(BackupError), self._connect() as conn:
            row = conn.execute(
                "SELECT active, restart_lsn::text, wal_status, safe_wal_size"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (self.settings.slot,),
            ).fetchone()
            if row is not None:
                exists, active = True, bool(row[0])
                restart_lsn, wal_status, safe_wal_size = row[1], row[2], row[3]
        names = []
        with contextlib.suppress(OSError):
            names = sorted(p.name for p in self.settings.wal_dir.iterdir() if _SEGMENT.match(p.name))
        return WalStreamStatus(
            pid is not None,
            pid,
            exists,
            active,
            restart_lsn,
            names[-1] if names else None,
            wal_status,
            None if safe_wal_size is None else int(safe_wal_size),
        )

    def _limit_slot_wal(self) -> None:
        """Set `max_slot_wal_keep_size` to `max_slot_wal` (a reload is enough)."""
        if self.settings.max_slot_wal is None:
            return
        wanted = -(-self.settings.max_slot_wal // (1024 * 1024))  # the setting is in whole MB
        with self._connect() as conn:
            row = conn.execute(
                "SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'"
            ).fetchone()
            if row is not None and int(row[0]) != wanted:
                conn.execute(f"ALTER SYSTEM SET max_slot_wal_keep_size = '{wanted}MB'")
                conn.execute("SELECT pg_reload_conf()")

    # -- plumbing --

    def _connect(self) -> psycopg.Connection[Any]:
        s = self.settings
        try:
            return psycopg.connect(
                host=s.host, port=s.port, user=s.user, dbname="postgres", autocommit=True, connect_timeout=5
            )
        except psycopg.OperationalError as error:
            first = (str(error).strip().splitlines() or ["unreachable"])[0]
            raise BackupError(f"cannot connect to PostgreSQL at {s.host}:{s.port}: {first}") from None

    def _user(self) -> dict[str, Any]:
        if os.geteuid() == 0 and self.os_user != "root":
            entry = pwd.getpwnam(self.os_user)
            return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        return {}

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0 and self.os_user != "root":
            shutil.chown(path, self.os_user, pwd.getpwnam(self.os_user).pw_gid)

    def _tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _reap(pid: int) -> None:
    """Collect the exit status when the receiver is our own child (started in this process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _last(result: subprocess.CompletedProcess[str]) -> str:
    return ((result.stderr or result.stdout).strip().splitlines() or ["(no output)"])[-1]
