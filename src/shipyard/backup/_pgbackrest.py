"""PostgreSQL physical backups and point-in-time recovery through pgBackRest.

shipyard writes its own pgbackrest.conf (passed with `--config`, so the host's /etc files are never
read) and drives the `pgbackrest` binary: `stanza-create`, `check`, `backup`, `info --output=json`,
`restore` and `expire`. pgBackRest must run as the OS user that owns the PostgreSQL data directory,
so when shipyard runs as root every command goes through `runuser -u <that user>`, and the
repository, log, lock and spool directories are created owned by that user.

The rendering of the config file and of the restore arguments is pure (tested without a server);
`PgBackRest` is the thin adapter over the binary, tested against a real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from shipyard.errors import BackupError, UserError
from shipyard.spec import Pitr, Postgres, Retention
from shipyard.state import rfc3339

BackupKind = Literal["full", "diff", "incr"]
CompressType = Literal["none", "gz", "lz4", "zst", "bz2"]

INSTALL_HINT = "install it with `apt-get install pgbackrest` (or `make install`, which does)"
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_ERROR_LINE = re.compile(r"ERROR: \[(\d{3})\]: (.*)")
_WARN_LINE = re.compile(r"WARN: (.*)")
_ARCHIVED_SEGMENT = re.compile(r"^([0-9A-F]{24})-[0-9a-f]{40}(\.[a-z0-9]+)?$")
_ARCHIVE_ID = re.compile(r"^\d+-\d+$")
# Characters that would break a line of the INI file or the archive_command shell line.
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class PgBackRestSettings:
    """Everything pgbackrest.conf says, resolved from the spec (see `settings_from_spec`)."""

    stanza: str
    repository: Path
    """`repo1-path`: where backups and archived WAL live."""
    data_dir: Path
    """`pg1-path`: the data directory of the running primary."""
    port: int
    work_dir: Path
    """Holds pgBackRest's `log/`, `lock/` and `spool/` directories."""
    host: str = "127.0.0.1"
    """Where shipyard itself connects (SQL) to enable archiving; pgBackRest uses the socket."""
    socket_dir: Path | None = None
    """`pg1-socket-path`; None means libpq's default (/var/run/postgresql on Debian)."""
    db_user: str = "postgres"
    """`pg1-user`: a superuser; authenticated by peer/trust on the socket, or PGPASSWORD."""
    archive_timeout: int = 60
    retention_full: int = 2
    retention_diff: int | None = None
    compress_type: CompressType = "lz4"
    compress_level: int | None = None
    process_max: int = 1
    start_fast: bool = True
    archive_async: bool = False
    archive_push_queue_max: str | None = None
    """e.g. "4GiB": past this much unarchived WAL, pgBackRest drops WAL rather than fill the disk."""
    pg_bin_dir: Path | None = None
    """PostgreSQL's binaries (pg_ctl); `/usr/lib/postgresql/<version>/bin` when it exists."""

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "log"

    @property
    def lock_dir(self) -> Path:
        return self.work_dir / "lock"

    @property
    def spool_dir(self) -> Path:
        return self.work_dir / "spool"


@dataclass(frozen=True)
class PitrBackup:
    """One backup set, as `pgbackrest info --output=json` describes it."""

    label: str
    kind: BackupKind
    started_at: datetime
    stopped_at: datetime
    """When the backup finished; the earliest time it can restore to."""
    start_lsn: str
    stop_lsn: str
    wal_start: str
    wal_stop: str
    database_size: int
    """Bytes of the database at backup time."""
    backup_size: int
    """Bytes this backup copied (all of them for a full, the changes for diff/incr)."""
    repository_size: int
    """Bytes the whole set needs in the repository, compressed."""
    repository_delta: int
    """Bytes this backup added to the repository, compressed."""
    prior: str | None
    """The backup a diff/incr depends on."""
    error: bool
    """pgBackRest found page checksum errors while copying."""


@dataclass(frozen=True)
class PitrStatus:
    """The stanza's health and range: what can be restored."""

    stanza: str
    code: int
    """pgBackRest's status code: 0 ok, 1 missing stanza path, 2 no valid backups, ..."""
    message: str
    archive_min: str | None
    archive_max: str | None
    backups: tuple[PitrBackup, ...]
    archive_id: str | None = None
    """The archive new WAL goes to (`<version>-<n>`, the current database's), None before any."""

    @property
    def exists(self) -> bool:
        return self.code not in (1, 3)

    @property
    def oldest_restorable(self) -> datetime | None:
        return min((b.stopped_at for b in self.backups), default=None)

    def check_target(self, *, time: datetime | None, lsn: str | None) -> None:
        """UserError, before anything is created, when the stanza cannot restore to `time`/`lsn`:
        it holds no backup, the time is in the future, or the target is before the end of the
        oldest backup (the message names the oldest restorable time or LSN)."""
        if not self.backups:
            raise UserError(
                f"stanza {self.stanza!r} has no backup to restore from: take one with "
                "`shipyard backup pitr full` (or `shipyard backup incremental`)"
            )
        oldest = self.backups[0]
        if time is not None:
            if time > datetime.now(UTC):
                raise UserError(f"cannot restore to {format_target_time(time)}: that time is in the future")
            if time <= oldest.stopped_at:
                raise UserError(
                    f"cannot restore to {format_target_time(time)}: the oldest restorable time is "
                    f"{rfc3339(oldest.stopped_at)} (the end of backup {oldest.label}); pick a later time"
                )
        if lsn is not None and lsn_value(lsn) < lsn_value(oldest.stop_lsn):
            raise UserError(
                f"cannot restore to LSN {lsn}: the oldest restorable LSN is {oldest.stop_lsn} "
                f"(the end of backup {oldest.label})"
            )


@dataclass(frozen=True)
class ArchivingChange:
    """What `enable_archiving` changed, and whether PostgreSQL still needs a restart."""

    changed: tuple[str, ...]
    restart_needed: bool
    restarted: bool
    message: str


# --- pure parts --------------------------------------------------------------------------------


def retention_full_count(retention: Retention) -> int:
    """Full backups to keep: as many as the restic policy keeps last, never fewer than it must verify.

    pgBackRest's count-based retention has no GFS buckets; the lead aligns this with restic's policy.
    """
    return max(1, retention.keep_last, retention.min_verified)


def settings_from_spec(
    pitr: Pitr,
    postgres: Postgres,
    *,
    work_dir: Path,
    retention: Retention | None = None,
    datastore: str = "postgres",
    base_dir: Path | None = None,
    socket_dir: Path | None = None,
    db_user: str = "postgres",
) -> PgBackRestSettings:
    """The settings for the primary of `postgres` under the spec's `backup.pitr`.

    Relative paths are taken from `base_dir` (the spec's directory). Raises UserError naming the
    field when the data directory is unknown or a path is unusable.
    """
    if postgres.local.data_dir is None:
        raise UserError(
            f"datastores.{datastore}.local.data_dir is not set: point-in-time recovery needs the data "
            "directory of the PostgreSQL primary (pgBackRest reads it directly); set it in shipyard.yaml"
        )
    repository = _absolute(pitr.repository, "backup.pitr.repository", base_dir)
    data_dir = _absolute(postgres.local.data_dir, f"datastores.{datastore}.local.data_dir", base_dir)
    candidate = Path(f"/usr/lib/postgresql/{postgres.version}/bin")
    return PgBackRestSettings(
        stanza=pitr.stanza,
        repository=repository,
        data_dir=data_dir,
        port=postgres.local.port or postgres.port,
        host=postgres.local.host,
        work_dir=work_dir,
        socket_dir=socket_dir,
        db_user=db_user,
        archive_timeout=pitr.archive_timeout,
        retention_full=retention_full_count(retention or Retention()),
        pg_bin_dir=candidate if candidate.is_dir() else None,
    )


def _absolute(value: str, field: str, base_dir: Path | None) -> Path:
    if _UNSAFE_PATH.search(value):
        raise UserError(f"{field}: a path may not contain control characters")
    path = Path(value)
    if not path.is_absolute():
        if base_dir is None:
            raise UserError(f"{field}: {value!r} must be an absolute path")
        path = base_dir / path
    return Path(os.path.normpath(path))


def render_config(settings: PgBackRestSettings) -> str:
    """pgbackrest.conf for the settings. It holds no password: pgBackRest reaches PostgreSQL over
    its UNIX socket (peer or trust), or gets PGPASSWORD from the environment."""
    paths = {
        "repo1-path": settings.repository,
        "pg1-path": settings.data_dir,
        "log-path": settings.log_dir,
        "lock-path": settings.lock_dir,
        "spool-path": settings.spool_dir,
    }
    if settings.socket_dir is not None:
        paths["pg1-socket-path"] = settings.socket_dir
    for key, path in paths.items():
        text = str(path)
        if not path.is_absolute() or _UNSAFE_PATH.search(text):
            raise UserError(f"pgBackRest option {key}: {text!r} must be an absolute path on one line")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", settings.stanza):
        raise UserError(f"backup.pitr.stanza: {settings.stanza!r} is not a valid stanza name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", settings.db_user):
        raise UserError(f"pgBackRest option pg1-user: {settings.db_user!r} is not a valid user name")
    glob = [
        f"repo1-path={settings.repository}",
        f"repo1-retention-full={settings.retention_full}",
    ]
    if settings.retention_diff is not None:
        glob.append(f"repo1-retention-diff={settings.retention_diff}")
    glob += [
        f"log-path={settings.log_dir}",
        f"lock-path={settings.lock_dir}",
        f"spool-path={settings.spool_dir}",
        "log-level-console=warn",
        "log-level-stderr=off",  # errors come once, on stdout (console), where _run reads them
        "log-level-file=info",
        f"compress-type={settings.compress_type}",
    ]
    if settings.compress_level is not None:
        glob.append(f"compress-level={settings.compress_level}")
    glob += [
        f"process-max={settings.process_max}",
        f"start-fast={'y' if settings.start_fast else 'n'}",
        f"archive-async={'y' if settings.archive_async else 'n'}",
    ]
    if settings.archive_push_queue_max is not None:
        glob.append(f"archive-push-queue-max={settings.archive_push_queue_max}")
    stanza = [
        f"pg1-path={settings.data_dir}",
        f"pg1-port={settings.port}",
        f"pg1-user={settings.db_user}",
    ]
    if settings.socket_dir is not None:
        stanza.append(f"pg1-socket-path={settings.socket_dir}")
    header = "# Written by shipyard from shipyard.yaml (backup.pitr); edits are overwritten.\n"
    return header + "[global]\n" + "\n".join(glob) + f"\n\n[{settings.stanza}]\n" + "\n".join(stanza) + "\n"


def archive_command(binary: str, config_path: Path, stanza: str) -> str:
    """The `archive_command` PostgreSQL runs for each finished WAL segment."""
    return (
        f"{shlex.quote(binary)} --config={shlex.quote(str(config_path))} "
        f"--stanza={shlex.quote(stanza)} archive-push %p"
    )


def archive_get_command(binary: str, config_path: Path, stanza: str, data_dir: Path) -> str:
    """The `restore_command` pgBackRest itself writes for a restore into `data_dir`: fetch a WAL
    file from the repository (pg1-path must be the restored server's data directory)."""
    return (
        f"{shlex.quote(binary)} --config={shlex.quote(str(config_path))} "
        f"--pg1-path={shlex.quote(str(data_dir))} "
        f'--stanza={shlex.quote(stanza)} archive-get %f "%p"'
    )


def format_target_time(moment: datetime) -> str:
    """A recovery target time PostgreSQL parses unambiguously (UTC, microseconds)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UserError(
            f"restore time {moment.isoformat()} has no time zone: give one, e.g. 2026-12-01T02:00:00Z"
        )
    text = moment.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")
    return text.removesuffix("+00:00") + "+00"


def restore_arguments(
    target_data_dir: Path,
    *,
    time: datetime | None = None,
    lsn: str | None = None,
    set_label: str | None = None,
    delta: bool = False,
    keep_archiving: bool = False,
    restore_command: str | None = None,
) -> list[str]:
    """The `pgbackrest restore` options for a recovery target (pure; `--dry-run` shows them).

    time/lsn: recover up to that point, then promote. set_label alone: the end of that backup
    (`--type=immediate`). Nothing: replay every archived WAL segment (the latest state).
    restore_command: replaces pgBackRest's own (e.g. one that also reads a pg_receivewal spool).
    """
    if time is not None and lsn is not None:
        raise UserError("give a restore time or an LSN, not both")
    if lsn is not None and not _LSN.fullmatch(lsn):
        raise UserError(f"restore LSN {lsn!r} is not an LSN like 0/3000060")
    argv = [f"--pg1-path={target_data_dir}"]
    if set_label is not None:
        if not re.fullmatch(r"\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?", set_label):
            raise UserError(f"backup set {set_label!r} is not a pgBackRest label like 20261201-020000F")
        argv.append(f"--set={set_label}")
    if time is not None:
        argv += ["--type=time", f"--target={format_target_time(time)}", "--target-action=promote"]
    elif lsn is not None:
        argv += ["--type=lsn", f"--target={lsn.upper()}", "--target-action=promote"]
    elif set_label is not None:
        argv += ["--type=immediate", "--target-action=promote"]
    # else: type "default", recover to the end of the archive; PostgreSQL then promotes by itself.
    if not keep_archiving:
        # A restored copy must not push its new timeline into the primary's archive.
        argv.append("--archive-mode=off")
    if restore_command is not None:
        if "'" in restore_command or _UNSAFE_PATH.search(restore_command):
            raise UserError("restore_command may not hold single quotes or control characters")
        argv.append(f"--recovery-option=restore_command={restore_command}")
    if delta:
        argv.append("--delta")
    return argv


def parse_info(document: Any, stanza: str) -> PitrStatus:
    """`pgbackrest info --output=json` for one stanza."""
    entries = [e for e in document if isinstance(e, dict) and e.get("name") == stanza]
    if not entries:
        return PitrStatus(stanza, 1, "missing stanza", None, None, ())
    entry = entries[0]
    archives = entry.get("archive") or []
    mins = [a["min"] for a in archives if a.get("min")]
    maxes = [a["max"] for a in archives if a.get("max")]
    backups = tuple(_parse_backup(b) for b in entry.get("backup") or [])
    status = entry.get("status") or {}
    # After a stanza-upgrade the archive of the newest database id is the one being written.
    current = max(archives, key=lambda a: int((a.get("database") or {}).get("id") or 0), default=None)
    return PitrStatus(
        stanza=stanza,
        code=int(status.get("code", 99)),
        message=str(status.get("message", "")),
        archive_min=min(mins, default=None),
        archive_max=max(maxes, default=None),
        backups=tuple(sorted(backups, key=lambda b: b.started_at)),
        archive_id=str(current["id"]) if current is not None and current.get("id") else None,
    )


def parse_archive_listing(document: Any) -> set[str]:
    """The WAL segments in `pgbackrest repo-ls --recurse --output=json` of an archive: files
    named `<segment>-<sha1 of its contents>[.<compression>]`, not empty."""
    if not isinstance(document, dict):
        raise BackupError("pgBackRest repo-ls printed something that is not a listing")
    return {
        match.group(1)
        for path, entry in document.items()
        if isinstance(entry, dict)
        and entry.get("type") == "file"
        and int(entry.get("size") or 0) > 0
        and (match := _ARCHIVED_SEGMENT.match(path.rpartition("/")[2]))
    }


def _parse_backup(raw: Mapping[str, Any]) -> PitrBackup:
    info, repository = raw["info"], raw["info"]["repository"]
    return PitrBackup(
        label=raw["label"],
        kind=raw["type"],
        started_at=datetime.fromtimestamp(raw["timestamp"]["start"], UTC),
        stopped_at=datetime.fromtimestamp(raw["timestamp"]["stop"], UTC),
        start_lsn=(raw.get("lsn") or {}).get("start", ""),
        stop_lsn=(raw.get("lsn") or {}).get("stop", ""),
        wal_start=(raw.get("archive") or {}).get("start") or "",
        wal_stop=(raw.get("archive") or {}).get("stop") or "",
        database_size=int(info["size"]),
        backup_size=int(info["delta"]),
        repository_size=int(repository["size"]),
        repository_delta=int(repository["delta"]),
        prior=raw.get("prior"),
        error=bool(raw.get("error", False)),
    )


def lsn_value(lsn: str) -> int:
    """An LSN like `0/3000060` as a number, to compare positions."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


# --- the adapter -------------------------------------------------------------------------------


class PgBackRest:
    """One stanza: the PostgreSQL primary in `settings` and its pgBackRest repository."""

    def __init__(
        self,
        settings: PgBackRestSettings,
        config_path: Path,
        *,
        os_user: str | None = None,
        binary: str = "pgbackrest",
        env: Mapping[str, str] | None = None,
        timeout: float = 3600,
    ) -> None:
        """config_path: where `write_config` puts pgbackrest.conf (e.g. under the state dir).
        os_user: the OS user PostgreSQL runs as; by default the current user, or when running as
        root the owner of the data directory (`postgres` if it does not exist yet).
        env: added to pgBackRest's environment (e.g. PGPASSWORD; never put on argv)."""
        self.settings = settings
        self.config_path = config_path
        self.os_user = os_user if os_user is not None else _default_os_user(settings.data_dir)
        self._binary = binary
        self._env = dict(env or {})
        self._timeout = timeout

    # -- setup --

    @property
    def binary(self) -> str:
        """The absolute path of pgbackrest; BackupError saying how to install it when missing."""
        found = shutil.which(self._binary)
        if found is None:
            raise BackupError(f"pgBackRest ({self._binary}) is not installed: {INSTALL_HINT}")
        return found

    def write_config(self) -> Path:
        """Write pgbackrest.conf and create the repository, log, lock and spool directories owned
        by the PostgreSQL OS user (mode 0750). Idempotent."""
        text = render_config(self.settings)
        for directory in (
            self.settings.repository,
            self.settings.log_dir,
            self.settings.lock_dir,
            self.settings.spool_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            self.own(directory)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.config_path.with_name(self.config_path.name + ".tmp")
        temporary.write_text(text)
        temporary.chmod(0o640)
        self.own(temporary)
        temporary.replace(self.config_path)
        if os.geteuid() == 0 and self.os_user != "root":
            # archive_command runs as the PostgreSQL user: it must be able to read the file.
            probe = subprocess.run(self.as_user(["test", "-r", str(self.config_path)]), check=False)
            if probe.returncode != 0:
                raise BackupError(
                    f"{self.config_path} is not readable by {self.os_user}, who runs pgBackRest: "
                    "put it in a directory that user can enter"
                )
        return self.config_path

    def enable_archiving(self, *, restart: bool = False, log_file: Path | None = None) -> ArchivingChange:
        """Point PostgreSQL's WAL archiving at this stanza with ALTER SYSTEM, then reload.

        `archive_mode` and `wal_level` only take effect on a restart: with restart=True shipyard
        restarts the server with pg_ctl (its log goes to `log_file`); otherwise the result says a
        restart is needed and `check()` fails until it happens.
        """
        wanted = {
            "archive_mode": "on",
            "archive_command": archive_command(self.binary, self.config_path, self.settings.stanza),
            "archive_timeout": str(self.settings.archive_timeout),  # pg_settings shows seconds
        }
        with self.connect() as conn:
            current = {name: self._show(conn, name) for name in (*wanted, "wal_level")}
            if current["archive_mode"] == "always":  # already archiving (on a standby too): keep it
                wanted["archive_mode"] = "always"
            changed: list[str] = []
            for name, value in wanted.items():
                if current[name] != value:
                    statement = sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                    conn.execute(statement)
                    changed.append(name)
            if current["wal_level"] == "minimal":
                conn.execute("ALTER SYSTEM SET wal_level = 'replica'")
                changed.append("wal_level")
            conn.execute("SELECT pg_reload_conf()")
        restart_needed = current["archive_mode"] not in ("on", "always") or current["wal_level"] == "minimal"
        restarted = False
        if restart_needed and restart:
            self.restart_server(log_file=log_file)
            restart_needed, restarted = False, True
        if restart_needed:
            message = (
                "WAL archiving is configured but PostgreSQL must restart for archive_mode to take effect: "
                f"restart the server whose data directory is {self.settings.data_dir} "
                "(e.g. `pg_ctl restart -D <data_dir>` or `systemctl restart postgresql`)"
            )
        else:
            message = "WAL archiving is on" + (" (PostgreSQL was restarted)" if restarted else "")
        return ArchivingChange(tuple(changed), restart_needed, restarted, message)

    def restart_server(self, *, log_file: Path | None = None) -> None:
        """Restart the primary with pg_ctl (fast shutdown), keeping its command-line options."""
        argv = [self._pg_ctl(), "-D", str(self.settings.data_dir), "-m", "fast", "-w", "-t", "120"]
        if log_file is not None:
            argv += ["-l", str(log_file)]
        self._run_pg_ctl([*argv, "restart"], "restart PostgreSQL")
        # The checkpointer starts during recovery, when archive_timeout does not apply, and may then
        # sleep for checkpoint_timeout (5 min): WAL would wait that long to be archived. A
        # checkpoint wakes it so that archive_timeout (the RPO bound) holds from now on.
        with self.connect() as conn:
            conn.execute("CHECKPOINT")

    def archive_get_command(self, data_dir: Path) -> str:
        """pgBackRest's `archive-get` line for a server restored into `data_dir`."""
        return archive_get_command(self.binary, self.config_path, self.settings.stanza, data_dir)

    def create_stanza(self) -> None:
        """Create the stanza in the repository (idempotent)."""
        self._run(["stanza-create"])

    def check(self) -> None:
        """Prove the configuration: pgBackRest reaches PostgreSQL, and a WAL switch gets archived."""
        self._run(["check"])

    # -- backups --

    def backup(self, kind: BackupKind = "full") -> PitrBackup:
        """Take a backup and return it as `info` describes it. diff/incr need a prior full
        (pgBackRest takes a full instead when there is none)."""
        if kind not in ("full", "diff", "incr"):
            raise UserError(f"backup type {kind!r} is not one of full, diff, incr")
        before = {b.label for b in self.backups()}
        self._run(["backup", f"--type={kind}"])
        new = [b for b in self.backups() if b.label not in before]
        if not new:
            raise BackupError("pgBackRest reported success but no new backup set is in the repository")
        return new[-1]

    def status(self) -> PitrStatus:
        """The stanza's status, WAL archive range and backups (oldest first)."""
        result = self._run(["info", "--output=json"], check_stanza=False)
        try:
            document = json.loads(result.stdout)
        except json.JSONDecodeError as error:
            raise BackupError(f"pgBackRest info printed something that is not JSON: {error}") from error
        return parse_info(document, self.settings.stanza)

    def backups(self) -> list[PitrBackup]:
        """The backup sets, oldest first."""
        return list(self._existing_stanza().backups)

    def archived_segments(self, archive_id: str) -> set[str]:
        """The WAL segments archive `archive_id` (`PitrStatus.archive_id`) holds, by segment
        name, as pgBackRest itself lists the repository (`repo-ls`: any repository type)."""
        if not _ARCHIVE_ID.fullmatch(archive_id):
            raise BackupError(f"{archive_id!r} is not a pgBackRest archive id like 15-1")
        path = f"archive/{self.settings.stanza}/{archive_id}"
        result = self._run(["repo-ls", "--recurse", "--output=json", path])
        try:
            return parse_archive_listing(json.loads(result.stdout or "{}"))
        except json.JSONDecodeError as error:
            raise BackupError(f"pgBackRest repo-ls printed something that is not JSON: {error}") from None

    def expire(self, *, set_label: str | None = None, retention_full: int | None = None) -> list[str]:
        """Apply the retention (repo1-retention-full from the spec, or `retention_full` here),
        or expire one set; returns the labels removed. WAL older than the oldest kept full goes too."""
        before = {b.label for b in self.backups()}
        argv = ["expire"]
        if set_label is not None:
            if set_label not in before:
                raise UserError(f"no backup set {set_label!r} in stanza {self.settings.stanza!r}")
            argv.append(f"--set={set_label}")
        if retention_full is not None:
            if retention_full < 1:
                raise UserError("retention_full must be at least 1")
            argv.append(f"--repo1-retention-full={retention_full}")
        self._run(argv)
        after = {b.label for b in self.backups()}
        return sorted(before - after)

    # -- restore --

    def restore(
        self,
        target_data_dir: Path,
        *,
        time: datetime | None = None,
        lsn: str | None = None,
        set_label: str | None = None,
        delta: bool = False,
        keep_archiving: bool = False,
        restore_command: str | None = None,
    ) -> list[str]:
        """Restore into a NEW data directory (never the primary's), set up to recover to the
        target and promote; start it with `start_restored`. Returns the pgBackRest options used.

        A target before the end of the oldest backup is a UserError naming the oldest restorable time.
        """
        arguments = restore_arguments(
            target_data_dir,
            time=time,
            lsn=lsn,
            set_label=set_label,
            delta=delta,
            keep_archiving=keep_archiving,
            restore_command=restore_command,
        )
        target = Path(os.path.realpath(target_data_dir))
        if target == Path(os.path.realpath(self.settings.data_dir)):
            raise UserError(
                f"{target_data_dir} is the primary's data directory: restore into a new directory "
                "(shipyard never restores over a running server)"
            )
        if (target / "postmaster.pid").exists():
            raise UserError(f"{target_data_dir} holds a PostgreSQL server (postmaster.pid): stop it first")
        if target.exists() and any(target.iterdir()) and not delta:
            raise UserError(f"{target_data_dir} is not empty: restore into a new or empty directory")
        status = self._existing_stanza()
        status.check_target(time=time, lsn=lsn)
        if set_label is not None and set_label not in {b.label for b in status.backups}:
            raise UserError(
                f"no backup set {set_label!r} in stanza {self.settings.stanza!r}; "
                f"sets: {', '.join(b.label for b in status.backups)}"
            )
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        target.chmod(0o700)
        self.own(target)
        # A restore is a file copy with decompression: one process per core (process-max of the
        # config is for backups, which share the machine with the live server).
        processes = max(self.settings.process_max, min(4, os.cpu_count() or 1))
        self._run(["restore", *arguments, f"--process-max={processes}"])
        return arguments

    def start_restored(
        self,
        data_dir: Path,
        *,
        port: int,
        log_file: Path,
        socket_dir: Path | None = None,
        timeout: float = 120,
    ) -> None:
        """Start a restored data directory on 127.0.0.1:`port` and wait until recovery has ended
        and it is promoted; BackupError with the server log's tail when recovery fails (e.g. a
        target time after the newest archived WAL)."""
        sockets = socket_dir or data_dir
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {shlex.quote(str(sockets))}"
        argv = [
            self._pg_ctl(),
            "-D",
            str(data_dir),
            "-o",
            options,
            "-l",
            str(log_file),
            "-w",
            "-t",
            str(int(timeout)),
        ]
        self._run_pg_ctl([*argv, "start"], "start the restored PostgreSQL", log_file=log_file)
        deadline = _time.monotonic() + timeout
        while _time.monotonic() < deadline:
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=port,
                    user=self.settings.db_user,
                    dbname="postgres",
                    connect_timeout=5,
                ) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    if row is not None and not row[0]:
                        return
            except psycopg.OperationalError:
                if not (data_dir / "postmaster.pid").exists():
                    raise BackupError(
                        "the restored PostgreSQL stopped during recovery:\n" + _tail(log_file)
                    ) from None
            _time.sleep(0.1)
        raise BackupError(
            f"the restored PostgreSQL did not finish recovery in {timeout:.0f}s:\n{_tail(log_file)}"
        )

    def stop_server(self, data_dir: Path, *, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop a server started from `data_dir` (e.g. a restored copy)."""
        self._run_pg_ctl([self._pg_ctl(), "-D", str(data_dir), "-m", mode, "-w", "stop"], "stop PostgreSQL")

    # -- plumbing --

    def _existing_stanza(self) -> PitrStatus:
        status = self.status()
        if not status.exists:
            raise BackupError(
                f"pgBackRest stanza {self.settings.stanza!r} does not exist in {self.settings.repository}: "
                "create it with `shipyard backup pitr init` (pgbackrest stanza-create)"
            )
        return status

    def connect(self) -> psycopg.Connection[Any]:
        s = self.settings
        try:
            return psycopg.connect(
                host=s.host,
                port=s.port,
                user=s.db_user,
                dbname="postgres",
                autocommit=True,
                connect_timeout=10,
            )
        except psycopg.OperationalError as error:
            raise BackupError(
                f"cannot connect to PostgreSQL at {s.host}:{s.port} as {s.db_user}: {_first_line(error)}"
            ) from None

    @staticmethod
    def _show(conn: psycopg.Connection[Any], name: str) -> str:
        row = conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()
        return "" if row is None else str(row[0])

    def as_user(self, argv: Sequence[str]) -> list[str]:
        if os.geteuid() == 0 and self.os_user != "root":
            return ["runuser", "-u", self.os_user, "--", *argv]
        return list(argv)

    def own(self, path: Path) -> None:
        if os.geteuid() == 0 and self.os_user != "root":
            shutil.chown(path, self.os_user, pwd.getpwnam(self.os_user).pw_gid)

    def _pg_ctl(self) -> str:
        return self.pg_tool("pg_ctl")

    def pg_tool(self, name: str) -> str:
        """A PostgreSQL program of the primary's version (`pg_bin_dir` first, then PATH)."""
        if self.settings.pg_bin_dir is not None and (self.settings.pg_bin_dir / name).exists():
            return str(self.settings.pg_bin_dir / name)
        found = shutil.which(name)
        if found is None:
            raise BackupError(f"{name} is not installed: install PostgreSQL (`apt-get install postgresql`)")
        return found

    def _run_pg_ctl(self, argv: list[str], what: str, *, log_file: Path | None = None) -> None:
        # The server inherits pg_ctl's stdout unless -l is given: never pipe it, or reading the
        # pipe would wait for the server to exit.
        result = subprocess.run(
            self.as_user(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if "-l" in argv else subprocess.DEVNULL,
            text=True,
            cwd="/",
            timeout=self._timeout,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or "").strip()
            if log_file is not None:
                detail += "\n" + _tail(log_file)
            raise BackupError(f"could not {what} (pg_ctl exit {result.returncode}): {detail}".strip())

    def _run(
        self, arguments: Sequence[str], *, check_stanza: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, f"--config={self.config_path}", f"--stanza={self.settings.stanza}", *arguments]
        if os.geteuid() == 0 and self.os_user != "root" and shutil.which("runuser") is None:
            raise BackupError("runuser is missing: it is needed to run pgBackRest as the PostgreSQL user")
        try:
            result = subprocess.run(
                self.as_user(argv),
                capture_output=True,
                text=True,
                cwd="/",
                env={**os.environ, **self._env},
                timeout=self._timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BackupError(f"pgbackrest {arguments[0]} did not finish in {self._timeout:.0f}s") from None
        if result.returncode != 0:
            raise self._error(arguments[0], result)
        return result

    def _error(self, command: str, result: subprocess.CompletedProcess[str]) -> BackupError | UserError:
        output = f"{result.stdout}\n{result.stderr}"
        match = _ERROR_LINE.search(output)
        code = int(match.group(1)) if match else result.returncode
        detail = match.group(2).strip() if match else (output.strip().splitlines() or ["(no output)"])[-1]
        # "no database found" is preceded by the reason as a warning (e.g. the connection error).
        warnings = [w.strip() for w in _WARN_LINE.findall(output)]
        if warnings:
            detail += " (" + "; ".join(warnings) + ")"
        return classify_error(command, code, detail, self.settings)


def classify_error(
    command: str, code: int, detail: str, settings: PgBackRestSettings
) -> BackupError | UserError:
    """A BackupError whose message says what went wrong and what to do, from pgBackRest's
    `ERROR: [code]: detail` line (pure, so every branch is unit-tested)."""
    s = settings
    lowered = detail.lower()
    if code == 87 or "archive_mode must be enabled" in lowered:
        return BackupError(
            f"WAL archiving is not enabled on PostgreSQL ({s.data_dir}): enable it with "
            "`shipyard backup pitr init` and restart PostgreSQL (archive_mode needs a restart)"
        )
    if code == 75 and "stop time less than" in lowered:
        return UserError(f"no backup ends before the restore target ({detail}); pick a later time")
    if "info file" in lowered and ("missing" in lowered or "unable to load" in lowered):
        return BackupError(
            f"pgBackRest stanza {s.stanza!r} does not exist in {s.repository}: create it with "
            "`shipyard backup pitr init` (pgbackrest stanza-create)"
        )
    if "archive_command" in lowered and "invalid" in lowered:
        return BackupError(
            f"PostgreSQL's archive_command does not push to stanza {s.stanza!r}: "
            f"run `shipyard backup pitr init` ({detail})"
        )
    if code == 82 or "was not archived before" in lowered:
        return BackupError(
            f"PostgreSQL is not archiving WAL to {s.repository} ({detail}): check archive_command and "
            "the PostgreSQL log"
        )
    if code in (27, 56, 57) or "connect" in lowered or "unable to find primary" in lowered:
        where = f"socket {s.socket_dir}" if s.socket_dir else "the default socket"
        return BackupError(
            f"pgBackRest cannot reach PostgreSQL (port {s.port}, {where}, data directory {s.data_dir}): "
            f"is the server running? ({detail})"
        )
    if code == 28 or ("lock" in lowered and "held" in lowered):
        return BackupError(f"another pgBackRest command holds the stanza's lock: retry later ({detail})")
    return BackupError(f"pgbackrest {command} failed [{code:03d}]: {detail}")


def _default_os_user(data_dir: Path) -> str:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    with contextlib.suppress(OSError, KeyError):
        owner = pwd.getpwuid(data_dir.stat().st_uid).pw_name
        if owner != "root":
            return owner
    return "postgres"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _tail(log_file: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log_file})"
