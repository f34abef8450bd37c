"""Point-in-time recovery as the CLI drives it: the pgBackRest stanza of a stack, from its spec.

Glue between the spec (`backup.pitr`, `datastores.<name>.local`), the state store (every step that
changes the world is audited before and after) and the `PgBackRest` adapter. The config file lives
at one fixed path per stack and environment under the state directory, because PostgreSQL's
`archive_command` names it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.orm import Session, sessionmaker

from ..errors import BackupError, UserError
from ..host import free_port
from ..host import state_dir as host_state_dir
from ..spec import Postgres, Stack, byte_count
from ..state import record_audit, rfc3339
from ._pgbackrest import (
    BackupKind,
    PgBackRest,
    PitrBackup,
    PitrStatus,
    archive_command,
    format_target_time,
    render_config,
    restore_arguments,
    settings_from_spec,
)
from ._walstream import WalStream, WalStreamSettings, restore_command, spool_dir_for

_SOCKET_LINE = re.compile(r"^pg1-socket-path=(.+)$", re.MULTILINE)
_KIND_WORDS = {"full": "full", "diff": "differential", "incr": "incremental"}


@dataclass(frozen=True)
class PitrStanza:
    """A stack's stanza: which datastore it protects, and the adapter over it."""

    stack: Stack
    datastore: str
    pgbackrest: PgBackRest

    @property
    def target(self) -> str:
        """The audit log's name for it."""
        return f"{self.stack.name}/{self.stack.environment}/{self.pgbackrest.settings.stanza}"

    @property
    def streams(self) -> bool:
        """`backup.pitr.stream`: WAL is also streamed by pg_receivewal (see `wal_stream`)."""
        pitr = self.stack.backup.pitr if self.stack.backup else None
        return pitr is not None and pitr.stream

    def wal_stream(self) -> WalStream:
        """The pg_receivewal of this stanza: spool next to the repository, slot per stanza."""
        s = self.pgbackrest.settings
        pitr = self.stack.backup.pitr if self.stack.backup else None
        limit = pitr.stream_max_wal if pitr else None
        settings = WalStreamSettings(
            spool_dir=spool_dir_for(s.repository, s.stanza),
            host=s.host,
            port=s.port,
            user=s.db_user,
            slot=f"shipyard_{s.stanza.lower().replace('-', '_').replace('.', '_')}"[:63],
            pg_bin_dir=s.pg_bin_dir,
            max_slot_wal=None if limit is None else byte_count(limit),
        )
        return WalStream(settings, os_user=self.pgbackrest.os_user)

    def restore_command(self, data_dir: Path) -> str | None:
        """The restore_command for a copy restored into `data_dir`: pgBackRest's archive, then the
        stream's spool; None (pgBackRest's own) when WAL is not streamed."""
        if not self.streams:
            return None
        return restore_command(
            self.pgbackrest.archive_get_command(data_dir), self.wal_stream().settings.wal_dir
        )


@dataclass(frozen=True)
class PitrBackupResult:
    backup: PitrBackup
    requested: BackupKind
    stanza: str

    @property
    def promoted_to_full(self) -> bool:
        """pgBackRest takes a full when a diff/incr has no full to build on."""
        return self.requested != "full" and self.backup.kind == "full"

    def as_data(self) -> dict[str, Any]:
        return {
            "stanza": self.stanza,
            "requested": self.requested,
            "promoted_to_full": self.promoted_to_full,
            **backup_data(self.backup),
        }


@dataclass(frozen=True)
class PitrRestoreResult:
    data_dir: Path
    port: int
    log_file: Path
    arguments: list[str]
    target: dict[str, str | None]
    os_user: str
    stop_command: list[str] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.os_user,
            "log_file": str(self.log_file),
            "target": self.target,
            "pgbackrest_arguments": self.arguments,
            "stop_command": self.stop_command,
        }


def state_dir() -> Path:
    """`$SHIPYARD_STATE_DIR` (default `.shipyard`), absolute: archive_command must not depend on a cwd."""
    return host_state_dir().resolve()


def pitr_work_dir(stack: Stack) -> Path:
    """`<state dir>/pgbackrest/<stack>-<env>/`: pgbackrest.conf and pgBackRest's log, lock, spool."""
    return state_dir() / "pgbackrest" / f"{stack.name}-{stack.environment or 'default'}"


def pitr_config_path(stack: Stack) -> Path:
    return pitr_work_dir(stack) / "pgbackrest.conf"


def postgres_datastore(stack: Stack, name: str | None) -> tuple[str, Postgres]:
    """The datastore `name`, or the stack's only PostgreSQL one; UserError naming the choices."""
    found = {n: d for n, d in stack.datastores.items() if isinstance(d, Postgres)}
    if name is not None:
        if name not in found:
            raise UserError(
                f"--datastore {name!r} is not a PostgreSQL datastore of {stack.name}; "
                f"choose one of: {', '.join(sorted(found)) or '(none)'}"
            )
        return name, found[name]
    if len(found) == 1:
        return next(iter(found.items()))
    if not found:
        raise UserError(f"stack {stack.name} has no PostgreSQL datastore: point-in-time recovery needs one")
    raise UserError(
        f"stack {stack.name} has several PostgreSQL datastores: "
        f"pick one with --datastore ({', '.join(sorted(found))})"
    )


def open_stanza(
    stack: Stack,
    *,
    base_dir: Path,
    datastore: str | None = None,
    discover_socket: bool = False,
    require_config: bool = True,
) -> PitrStanza:
    """The stanza of `stack` under `backup.pitr`.

    discover_socket: ask the running server where its UNIX socket is (`pitr init`); otherwise the
    socket path comes from the config `pitr init` wrote. require_config: UserError when `pitr init`
    has not run yet.
    """
    if stack.backup is None or stack.backup.pitr is None:
        raise UserError(
            f"backup.pitr is not set for {stack.name}: add "
            "`backup: pitr: {repository: /var/lib/pgbackrest}` to shipyard.yaml to use point-in-time recovery"
        )
    name, postgres = postgres_datastore(stack, datastore)
    config_path = pitr_config_path(stack)
    socket_dir: Path | None = None
    if discover_socket:
        socket_dir = _server_socket_dir(postgres, name)
    elif config_path.exists():
        match = _SOCKET_LINE.search(config_path.read_text())
        socket_dir = Path(match.group(1).strip()) if match else None
    elif require_config:
        raise UserError(
            f"point-in-time recovery is not set up for {stack.name} ({stack.environment}): "
            f"run `shipyard backup pitr init` first (no {config_path})"
        )
    settings = settings_from_spec(
        stack.backup.pitr,
        postgres,
        work_dir=pitr_work_dir(stack),
        retention=stack.backup.retention,
        datastore=name,
        base_dir=base_dir,
        socket_dir=socket_dir,
    )
    return PitrStanza(stack, name, PgBackRest(settings, config_path))


def _server_socket_dir(postgres: Postgres, name: str) -> Path | None:
    """Where the server listens on a UNIX socket: pgBackRest connects there, not over TCP."""
    host, port = postgres.local.host, postgres.local.port or postgres.port
    try:
        with psycopg.connect(
            host=host, port=port, user="postgres", dbname="postgres", connect_timeout=10
        ) as conn:
            row = conn.execute("SHOW unix_socket_directories").fetchone()
    except psycopg.OperationalError as error:
        first = (str(error).strip().splitlines() or ["unreachable"])[0]
        raise BackupError(
            f"cannot connect to PostgreSQL datastore {name} at {host}:{port} as postgres: {first}"
        ) from None
    for entry in str(row[0] if row else "").split(","):
        if entry.strip().startswith("/"):
            return Path(entry.strip())
    return None


def _audit(
    sessions: sessionmaker[Session], actor: str, action: str, target: str, after: dict[str, Any], outcome: str
) -> None:
    record_audit(
        sessions,
        actor=actor,
        action=action,
        target_kind="pitr_stanza",
        target=target,
        after=after,
        outcome=outcome,
    )


@contextmanager
def _audited(
    sessions: sessionmaker[Session], actor: str, action: str, target: str, facts: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Record `started` before the block and `ok` (with what the block added) or `failed` after."""
    _audit(sessions, actor, action, target, facts, "started")
    after = dict(facts)
    try:
        yield after
    except BaseException as error:
        message = getattr(error, "message", None) or type(error).__name__
        _audit(sessions, actor, action, target, {**after, "error": str(message)[:500]}, "failed")
        raise
    _audit(sessions, actor, action, target, after, "ok")


# --- init --------------------------------------------------------------------------------------


def plan_init(stanza: PitrStanza) -> dict[str, Any]:
    """What `pitr init` would write and set (a dry run: nothing changes)."""
    pg = stanza.pgbackrest
    s = pg.settings
    return {
        "dry_run": True,
        "datastore": stanza.datastore,
        "stanza": s.stanza,
        "config_path": str(pg.config_path),
        "config": render_config(s),
        "repository": str(s.repository),
        "data_dir": str(s.data_dir),
        "postgresql_settings": {
            "archive_mode": "on",
            "archive_command": archive_command(pg.binary, pg.config_path, s.stanza),
            "archive_timeout": str(s.archive_timeout),
        },
    }


def init_stanza(
    sessions: sessionmaker[Session], stanza: PitrStanza, *, actor: str, restart: bool
) -> dict[str, Any]:
    """Write pgbackrest.conf, point archiving at it, create the stanza and, when archiving is live,
    prove it with `pgbackrest check`."""
    pg = stanza.pgbackrest
    facts = {"datastore": stanza.datastore, "config_path": str(pg.config_path), "restart": restart}
    with _audited(sessions, actor, "backup.pitr.init", stanza.target, facts) as after:
        pg.write_config()
        log_file = pg.settings.log_dir / "postgresql.log"
        change = pg.enable_archiving(restart=restart, log_file=log_file)
        pg.create_stanza()
        if not change.restart_needed:
            pg.check()
        if stanza.streams and not change.restart_needed:
            after["stream_pid"] = stanza.wal_stream().start()
        after.update(
            changed=list(change.changed),
            restart_needed=change.restart_needed,
            restarted=change.restarted,
            checked=not change.restart_needed,
        )
    return {
        **after,
        "stanza": pg.settings.stanza,
        "repository": str(pg.settings.repository),
        "message": change.message,
        "server_log": str(log_file) if change.restarted else None,
    }


# --- backups -----------------------------------------------------------------------------------


def backup_data(backup: PitrBackup) -> dict[str, Any]:
    return {
        "label": backup.label,
        "kind": backup.kind,
        "started_at": rfc3339(backup.started_at),
        "stopped_at": rfc3339(backup.stopped_at),
        "start_lsn": backup.start_lsn,
        "stop_lsn": backup.stop_lsn,
        "wal_start": backup.wal_start,
        "wal_stop": backup.wal_stop,
        "database_size": backup.database_size,
        "backup_size": backup.backup_size,
        "repository_delta": backup.repository_delta,
        "prior": backup.prior,
        "error": backup.error,
    }


def take_backup(
    sessions: sessionmaker[Session], stanza: PitrStanza, kind: BackupKind, *, actor: str
) -> PitrBackupResult:
    """A pgBackRest backup (full, diff or incr), audited before and after; then the WAL spool
    is pruned of what the archive now holds (the audit says how much)."""
    facts = {"datastore": stanza.datastore, "requested": kind}
    with _audited(sessions, actor, f"backup.pitr.{kind}", stanza.target, facts) as after:
        result = PitrBackupResult(stanza.pgbackrest.backup(kind), kind, stanza.pgbackrest.settings.stanza)
        after.update(label=result.backup.label, kind=result.backup.kind, stop_lsn=result.backup.stop_lsn)
        after.update(_prune_after(stanza))
    return result


def kind_word(kind: str) -> str:
    return _KIND_WORDS.get(kind, kind)


# --- the restorable window ---------------------------------------------------------------------


def newest_archived_at(status: PitrStatus, repository: Path) -> datetime | None:
    """When the newest archived WAL segment reached the repository (its file's mtime): no commit
    after that moment can be restored yet."""
    if status.archive_max is None:
        return None
    segment = status.archive_max
    pattern = f"*/{segment[:16]}/{segment}-*"
    try:
        times = [p.stat().st_mtime for p in (repository / "archive" / status.stanza).glob(pattern)]
    except OSError:
        return None
    return datetime.fromtimestamp(max(times), UTC) if times else None


def newest_streamed_at(stanza: PitrStanza) -> datetime | None:
    """When pg_receivewal last wrote to the spool (None when WAL is not streamed)."""
    if not stanza.streams:
        return None
    try:
        times = [p.stat().st_mtime for p in stanza.wal_stream().settings.wal_dir.iterdir()]
    except OSError:
        return None
    return datetime.fromtimestamp(max(times), UTC) if times else None


def window_data(stanza: PitrStanza, status: PitrStatus) -> dict[str, Any]:
    """The stanza's backups and restorable window (oldest backup end -> the newest WAL archived
    or, with `backup.pitr.stream`, received by pg_receivewal)."""
    archived = newest_archived_at(status, stanza.pgbackrest.settings.repository)
    streamed = newest_streamed_at(stanza)
    known = [moment for moment in (archived, streamed) if moment is not None]
    newest = max(known) if known else None
    if newest is not None and status.backups:
        newest = max(newest, status.backups[-1].stopped_at)
    oldest = status.oldest_restorable
    return {
        "stanza": status.stanza,
        "datastore": stanza.datastore,
        "status": {"code": status.code, "message": status.message},
        "window": {
            "from": rfc3339(oldest) if oldest else None,
            "to": rfc3339(newest) if newest and oldest else None,
            "from_lsn": status.backups[0].stop_lsn if status.backups else None,
            "archive_min": status.archive_min,
            "archive_max": status.archive_max,
            "streamed_at": rfc3339(streamed) if streamed else None,
        },
        "backups": [backup_data(b) for b in status.backups],
    }


def check_target(status: PitrStatus, *, time: datetime | None, lsn: str | None) -> None:
    """Before anything is created: BackupError when the stanza does not exist, else UserError when
    the target is outside what it can restore (`PitrStatus.check_target`)."""
    if not status.exists:
        raise BackupError(
            f"pgBackRest stanza {status.stanza!r} does not exist: run `shipyard backup pitr init`"
        )
    status.check_target(time=time, lsn=lsn)


# --- restore -----------------------------------------------------------------------------------


def parse_target_time(text: str) -> datetime:
    """`--time`: ISO 8601 with a zone, e.g. 2026-12-01T02:00:00Z."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"--time {text!r} is not a time like 2026-12-01T02:00:00Z") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UserError(f"--time {text!r} has no time zone: add one, e.g. {text.strip()}Z for UTC")
    return moment


def plan_restore_pitr(
    stanza: PitrStanza, *, time: datetime | None, lsn: str | None, target_dir: Path | None, port: int | None
) -> dict[str, Any]:
    """What a PITR restore would do (reads the repository; creates nothing)."""
    data_dir = (target_dir or Path(tempfile.gettempdir()) / "shipyard-pitr-restore-XXXXXX") / "data"
    arguments = restore_arguments(
        data_dir, time=time, lsn=lsn, restore_command=stanza.restore_command(data_dir)
    )
    status = stanza.pgbackrest.status()
    check_target(status, time=time, lsn=lsn)
    return {
        "dry_run": True,
        "stanza": status.stanza,
        "data_dir": str(data_dir),
        "port": port,
        "pgbackrest_arguments": arguments,
        "window": window_data(stanza, status)["window"],
    }


def restore_pitr(
    sessions: sessionmaker[Session],
    stanza: PitrStanza,
    *,
    actor: str,
    time: datetime | None,
    lsn: str | None,
    target_dir: Path | None,
    port: int | None,
    serve_wal: Callable[[str], str] | None = None,
) -> PitrRestoreResult:
    """Restore the stanza to `time`/`lsn` into a new scratch data directory and start it there
    (left running; the result says how to connect and stop it). Never touches the primary.

    serve_wal: given pgBackRest's `archive-get` command line for the copy, the restore_command to
    use instead of the stanza's own (a drill's `WalAtDisaster.restore_command`).
    """
    pg = stanza.pgbackrest
    restore_arguments(Path("/nonexistent"), time=time, lsn=lsn)  # validates the target first
    if target_dir is not None and target_dir.exists() and any(target_dir.iterdir()):
        raise UserError(f"--target-dir {target_dir} is not empty: give a new or empty directory")
    check_target(pg.status(), time=time, lsn=lsn)
    port = port or free_port()
    target = {"time": format_target_time(time) if time else None, "lsn": lsn}
    facts = {"datastore": stanza.datastore, "target": target, "port": port}
    with _audited(sessions, actor, "backup.pitr.restore", stanza.target, facts) as after:
        base = target_dir or Path(tempfile.mkdtemp(prefix="shipyard-pitr-restore-"))
        base.mkdir(parents=True, exist_ok=True)
        _give(base, pg.os_user)
        data_dir, log_file = base / "data", base / "postgresql.log"
        after["data_dir"] = str(data_dir)
        command = (
            serve_wal(pg.archive_get_command(data_dir)) if serve_wal else stanza.restore_command(data_dir)
        )
        arguments = pg.restore(data_dir, time=time, lsn=lsn, restore_command=command)
        pg.start_restored(data_dir, port=port, log_file=log_file)
    return PitrRestoreResult(
        data_dir=data_dir,
        port=port,
        log_file=log_file,
        arguments=arguments,
        target=target,
        os_user=pg.settings.db_user,
        stop_command=_stop_command(pg, data_dir),
    )


def _give(path: Path, user: str) -> None:
    """The PostgreSQL user must own the scratch base: the restored server writes its log there."""
    if os.geteuid() == 0 and user != "root":
        shutil.chown(path, user, pwd.getpwnam(user).pw_gid)


def _stop_command(pg: PgBackRest, data_dir: Path) -> list[str]:
    bin_dir = pg.settings.pg_bin_dir
    pg_ctl = str(bin_dir / "pg_ctl") if bin_dir and (bin_dir / "pg_ctl").exists() else "pg_ctl"
    argv = [pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"]
    if os.geteuid() == 0 and pg.os_user != "root":
        return ["runuser", "-u", pg.os_user, "--", *argv]
    return argv


# --- expire ------------------------------------------------------------------------------------


def plan_expire(backups: list[PitrBackup], retention_full: int) -> list[str]:
    """The labels `pgbackrest expire` removes with repo1-retention-full=N: every set older than
    the Nth newest full (diff/incr depend on their full, so they go with it). Pure."""
    fulls = [b for b in backups if b.kind == "full"]
    if len(fulls) <= retention_full:
        return []
    oldest_kept = fulls[-retention_full]
    return sorted(b.label for b in backups if b.started_at < oldest_kept.started_at)


def expire_stanza(
    sessions: sessionmaker[Session], stanza: PitrStanza, *, actor: str, dry_run: bool
) -> dict[str, Any]:
    """Apply the full-backup retention (`pgbackrest expire`); with dry_run only report it."""
    pg = stanza.pgbackrest
    retention_full = pg.settings.retention_full
    backups = pg.backups()
    planned = plan_expire(backups, retention_full)
    data: dict[str, Any] = {
        "stanza": pg.settings.stanza,
        "retention_full": retention_full,
        "dry_run": dry_run,
    }
    if dry_run:
        return {**data, "expire": planned, "keep": [b.label for b in backups if b.label not in planned]}
    facts = {"datastore": stanza.datastore, "retention_full": retention_full, "planned": planned}
    with _audited(sessions, actor, "backup.pitr.expire", stanza.target, facts) as after:
        removed = pg.expire(retention_full=retention_full)
        after["expired"] = removed
        # In step with the expiry: WAL older than the oldest kept backup leaves the spool too.
        after.update(pruned := _prune_after(stanza))
    kept = [b.label for b in pg.backups()]
    return {**data, "expire": removed, "keep": kept, **pruned}


# --- the WAL spool -----------------------------------------------------------------------------


def prune_spool(stanza: PitrStanza) -> list[str]:
    """Delete the pg_receivewal spool's segments that pgBackRest's archive holds, by its own
    listing of the repository, and those older than the oldest backup's first WAL segment (no
    restore reads them; pgBackRest's expiry drops them from the archive too). Returns the
    segments deleted; nothing when WAL is not streamed. See `WalStream.prune`."""
    if not stanza.streams:
        return []
    stream = stanza.wal_stream()
    if not stream.settings.wal_dir.is_dir():
        return []
    pg = stanza.pgbackrest
    status = pg.status()
    if not status.exists or status.archive_id is None:
        return []
    archived = pg.archived_segments(status.archive_id)
    oldest = status.backups[0].wal_start if status.backups else None
    return stream.prune(archived, needed_from=oldest or None)


def _prune_after(stanza: PitrStanza) -> dict[str, Any]:
    """Prune the spool after a backup or an expiry; a failure is reported, not raised: the
    backup or expiry itself succeeded (the scheduled stream check raises it, every minute)."""
    if not stanza.streams:
        return {}
    try:
        return {"spool_pruned": len(prune_spool(stanza))}
    except BackupError as exc:
        return {"spool_prune_error": exc.message}


# --- WAL streaming (pg_receivewal) -------------------------------------------------------------


def _require_stream(stanza: PitrStanza) -> WalStream:
    if not stanza.streams:
        raise UserError(
            "backup.pitr.stream is not on: add `stream: true` under backup.pitr in shipyard.yaml "
            "to stream WAL with pg_receivewal"
        )
    return stanza.wal_stream()


def start_stream(sessions: sessionmaker[Session], stanza: PitrStanza, *, actor: str) -> dict[str, Any]:
    """Start pg_receivewal (detached; it reconnects by itself) and wait until it streams; then
    prune its spool of what pgBackRest's archive holds (`prune_spool`).

    A receiver already running is left alone and nothing is audited (serve asks every minute)."""
    stream = _require_stream(stanza)
    running = stream.running_pid() is not None
    if not running:
        facts = {"datastore": stanza.datastore, "slot": stream.settings.slot}
        with _audited(sessions, actor, "backup.pitr.stream.start", stanza.target, facts) as after:
            after["pid"] = stream.start()
    # The scheduler's minute: prune the spool of what the archive gained since (routine
    # housekeeping, not audited; a failure fails this run, so that it shows).
    prune_spool(stanza)
    if running:
        return stream_status(stanza)
    return {**stream.status().as_data(), "spool": str(stream.settings.wal_dir), "slot": stream.settings.slot}


def stop_stream(
    sessions: sessionmaker[Session], stanza: PitrStanza, *, actor: str, drop_slot: bool
) -> dict[str, Any]:
    """Stop pg_receivewal; with drop_slot the primary also stops keeping WAL for it."""
    stream = _require_stream(stanza)
    facts = {"datastore": stanza.datastore, "slot": stream.settings.slot, "drop_slot": drop_slot}
    with _audited(sessions, actor, "backup.pitr.stream.stop", stanza.target, facts) as after:
        after["stopped"] = stream.stop()
        if drop_slot:
            stream.drop_slot()
    return {**after, **stream.status().as_data()}


def stream_status(stanza: PitrStanza) -> dict[str, Any]:
    stream = _require_stream(stanza)
    return {**stream.status().as_data(), "spool": str(stream.settings.wal_dir), "slot": stream.settings.slot}
