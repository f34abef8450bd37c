"""Backups as verbs: take a set, verify it, restore from it, prune, check freshness, keep the WAL
stream going, take a pgBackRest backup; and the one view of a set that the CLI and the API show.

Every edge calls these: `shipyard backup …` and `shipyard restore …`, the API's `/backups`
routes and the dashboard (as jobs), `serve`'s scheduler and the Kubernetes CronJobs (through
`python -m shipyard.jobs`). Progress is reported through optional callbacks; nothing here prints.

Options that tune how a verb runs but not what it does (parallel pg_dump/pg_restore jobs, how
much of the repository `restic check` reads back) are keyword arguments, not request fields: a
job runs with the defaults.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from .. import backup
from ..backup import (
    BackupKind,
    BackupSet,
    Into,
    Manifest,
    PhaseHandler,
    ProgressHandler,
    RestoreResult,
    RestoreWhat,
    StepHandler,
    Verification,
)
from ..errors import UserError
from ..spec import BackupWhat
from ..state import utcnow
from ._base import Request, Result
from ._workspace import Workspace

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "ArtefactSummary",
    "BackupSetView",
    "BackupTaken",
    "CheckFreshness",
    "FreshnessChecked",
    "PitrBackupTaken",
    "Prune",
    "Pruned",
    "Restore",
    "Restored",
    "SourceAge",
    "StartWalStream",
    "TakeBackup",
    "TakePitrBackup",
    "Verified",
    "Verify",
    "WalStreamStarted",
    "backup_set",
    "backup_sets",
    "byte_size",
    "check_freshness",
    "plan_restore",
    "plan_take_backup",
    "prune",
    "restore",
    "start_wal_stream",
    "take_backup",
    "take_pitr_backup",
    "verify",
]

SetId = str
"""A set's id. Its shape (`SET_ID_PATTERN`) is checked where ids come in from outside (API routes,
jobs); here an id of no set is a NotFoundError that says how to list them."""


def byte_size(count: int | None) -> str:
    """A byte count for people: `512 B`, `12.4 MiB`; `-` when unknown."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


# --- the one view of a set ------------------------------------------------------------------------


class ArtefactSummary(BaseModel):
    """An artefact of a set in a listing: what it is and how big."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    snapshot_id: str | None
    raw_bytes: int | None
    data_added: int | None


class BackupSetView(BaseModel):
    """A backup set as the CLI and the API show it: `artefacts` summarises what it holds; one
    set shown alone also carries its whole manifest and verification report."""

    model_config = ConfigDict(frozen=True)

    id: str
    stack: str
    environment: str
    kind: str
    state: str
    """running | complete | failed | verified"""
    restorable: bool
    phase: str | None
    actor: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    verified_at: dt.datetime | None
    error: str | None
    manifest: Manifest | None
    """None in listings (`GET /backups`); `GET /backups/{id}` and the CLI show it."""
    verification: Verification | None
    """The last verification's report (None in listings, and before any)."""
    artefacts: list[ArtefactSummary]

    DETAIL: ClassVar[tuple[str, ...]] = ("manifest", "verification")
    """The fields only a set shown alone has."""

    @classmethod
    def of(cls, backup_set: BackupSet, *, detail: bool = True) -> BackupSetView:
        return cls(
            id=backup_set.id,
            stack=backup_set.stack,
            environment=backup_set.environment,
            kind=backup_set.kind,
            state=backup_set.state,
            restorable=backup_set.restorable,
            phase=backup_set.phase,
            actor=backup_set.actor,
            started_at=backup_set.started_at,
            finished_at=backup_set.finished_at,
            verified_at=backup_set.verified_at,
            error=backup_set.error,
            manifest=backup_set.manifest if detail else None,
            verification=backup_set.verification if detail else None,
            artefacts=[
                ArtefactSummary(
                    name=a.name,
                    type=a.type,
                    snapshot_id=a.snapshot_id,
                    raw_bytes=a.raw_bytes,
                    data_added=a.data_added,
                )
                for a in backup_set.artefacts
            ],
        )


def backup_sets(
    sessions: sessionmaker[Session],
    *,
    stack: str | None = None,
    environment: str | None = None,
    limit: int | None = None,
) -> list[BackupSetView]:
    """Sets newest first (of one stack or environment when given); abandoned ones marked failed.

    Reads the state store only, so it takes its sessions rather than a workspace: listing needs no
    spec (`shipyard backup list`, `GET /backups`)."""
    sets = backup.list_sets(sessions, stack=stack, environment=environment)
    return [BackupSetView.of(s, detail=False) for s in sets[:limit]]


def backup_set(sessions: sessionmaker[Session], set_id: str) -> BackupSetView:
    """One set; NotFoundError (exit 2, HTTP 404) when there is none."""
    return BackupSetView.of(backup.get_set(sessions, set_id))


# --- taking a set ---------------------------------------------------------------------------------


class TakeBackup(Request):
    """Take a backup set: every source (`full`), or the PostgreSQL datastores, the file volumes
    or the Redis datastores only."""

    kind: Literal["backup"] = "backup"
    what: BackupWhat = "full"


class BackupTaken(Result):
    backup_set: BackupSetView

    def summary(self) -> str:
        artefacts = self.backup_set.artefacts
        size = sum(a.raw_bytes or 0 for a in artefacts)
        return f"set {self.backup_set.id} taken: {len(artefacts)} artefacts, {byte_size(size)}"


def take_backup(
    ws: Workspace,
    request: TakeBackup,
    *,
    parallel: int | None = None,
    on_progress: ProgressHandler | None = None,
    on_phase: PhaseHandler | None = None,
) -> BackupTaken:
    """Back up the sources into one set, recorded before anything is read; raises (after
    recording the set failed and paging) when a source cannot be read or stored.

    parallel: pg_dump's jobs (default: up to 4, one per core)."""
    taken = backup.run_backup(
        ws.stack,
        request.what,
        ws.sessions,
        base_dir=ws.workdir,
        actor=ws.actor,
        jobs=parallel,
        on_progress=on_progress,
        on_phase=on_phase,
        notifier=ws.notifier,
    )
    return BackupTaken(backup_set=BackupSetView.of(taken))


def plan_take_backup(ws: Workspace, request: TakeBackup) -> dict[str, Any]:
    """What `take_backup` would read and where it would store it, touching nothing (--dry-run);
    `missing_tools` names what must be installed first."""
    return backup.plan_backup(ws.stack, request.what, ws.workdir)


# --- verifying one --------------------------------------------------------------------------------


class Verify(Request):
    """Restore a set into scratch servers and check it against its manifest; then `restic check`.
    No set id: the newest restorable set of the stack."""

    kind: Literal["verify"] = "verify"
    set_id: SetId | None = None


class Verified(Result):
    backup_set: BackupSetView

    def summary(self) -> str:
        checks = self.backup_set.verification.checks if self.backup_set.verification else []
        return f"set {self.backup_set.id} verified: {len(checks)} checks"


def verify(
    ws: Workspace,
    request: Verify,
    *,
    read_data_subset: str | None = "10%",
    parallel: int | None = None,
    on_step: StepHandler | None = None,
) -> Verified:
    """Prove a set restorable: it becomes `verified`, or `failed` with VerificationError naming
    the artefact whose data did not match (and pages).

    read_data_subset: how much of the repository's data `restic check` reads back.
    parallel: pg_restore's jobs."""
    verified = backup.verify_set(
        ws.sessions,
        ws.stack,
        request.set_id,
        base_dir=ws.workdir,
        read_data_subset=read_data_subset,
        jobs=parallel,
        on_step=on_step,
        notifier=ws.notifier,
        actor=ws.actor,
    )
    return Verified(backup_set=BackupSetView.of(verified))


# --- restoring from one ---------------------------------------------------------------------------


class Restore(Request):
    """Restore from a set: into scratch (new servers or a directory, left for people to look at)
    or, with `yes`, over the live data after a safety backup of it.

    No set id: the newest restorable set holding such an artefact."""

    kind: Literal["restore"] = "restore"
    what: RestoreWhat
    set_id: SetId | None = None
    into: Into = "scratch"
    datastore: str | None = None
    """database, redis: which datastore of the set (default: its only one)."""
    path: str | None = None
    """files: which volume of the set, by its absolute path (default: its only one)."""
    yes: bool = False
    """Confirms overwriting live data (`into: live`)."""
    target_dir: str | None = None
    """scratch: where the data goes (default: a new temp directory)."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """database, redis into scratch: the scratch server's port (default: a free one)."""

    @model_serializer(mode="wrap")
    def _given_options_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A stored request says what was asked: the options left at their defaults are left out
        # (a job from the API or the dashboard is `{kind, what, set_id, into}`).
        document: dict[str, Any] = handler(self)
        for name in _RESTORE_OPTIONS:
            if name in document and document[name] == Restore.model_fields[name].default:
                del document[name]
        return document


_RESTORE_OPTIONS = ("datastore", "path", "yes", "target_dir", "port")


class Restored(Result):
    set_id: str
    what: RestoreWhat
    into: Into
    restored: list[RestoreResult]
    """One per artefact restored (volumes: one per file volume of the set)."""

    def summary(self) -> str:
        return f"set {self.set_id} restored into {self.into}: {self.what}"


def _check_restore_options(request: Restore) -> None:
    if request.datastore is not None and request.what not in ("database", "redis"):
        raise UserError(f"a datastore is named only to restore a database or redis, not {request.what}")
    if request.path is not None and request.what != "files":
        raise UserError("a path names one file volume: give it to restore files (volumes restores them all)")
    if request.port is not None and request.what not in ("database", "redis"):
        raise UserError("a port is given only to restore a database or redis into a scratch server")


def restore(
    ws: Workspace,
    request: Restore,
    *,
    parallel: int | None = None,
    on_progress: ProgressHandler | None = None,
) -> Restored:
    """Restore one kind of artefact of a set (volumes: every file volume of it); audited before
    and after. A scratch server is left running: its result says how to stop it.

    parallel: pg_restore's jobs. on_progress: the safety backup's upload (into live)."""
    _check_restore_options(request)
    target_dir = Path(request.target_dir) if request.target_dir is not None else None
    common: dict[str, Any] = {
        "base_dir": ws.workdir,
        "actor": ws.actor,
        "set_id": request.set_id,
        "into": request.into,
        "yes": request.yes,
        "target_dir": target_dir,
    }
    results: list[RestoreResult]
    if request.what == "database":
        results = [
            backup.restore_database(
                ws.sessions, ws.stack, datastore=request.datastore, port=request.port, jobs=parallel,
                on_progress=on_progress, **common,
            )
        ]  # fmt: skip
    elif request.what == "redis":
        results = [
            backup.restore_redis(
                ws.sessions, ws.stack, datastore=request.datastore, port=request.port,
                on_progress=on_progress, **common,
            )
        ]  # fmt: skip
    elif request.what == "files":
        results = [
            backup.restore_files(ws.sessions, ws.stack, path=request.path, on_progress=on_progress, **common)
        ]
    else:
        results = backup.restore_volumes(ws.sessions, ws.stack, on_progress=on_progress, **common)
    return Restored(set_id=results[0].set_id, what=request.what, into=request.into, restored=results)


def plan_restore(ws: Workspace, request: Restore) -> dict[str, Any]:
    """What `restore` would do, touching nothing (--dry-run): the set, the artefacts, and the
    safety backup a restore over live data takes first."""
    _check_restore_options(request)
    if request.what == "volumes":
        return backup.plan_restore_volumes(ws.sessions, ws.stack, set_id=request.set_id, into=request.into)
    name = request.path if request.what == "files" else request.datastore
    return backup.plan_restore(
        ws.sessions, ws.stack, request.what, set_id=request.set_id, name=name, into=request.into
    )


# --- pruning --------------------------------------------------------------------------------------


class Prune(Request):
    """Delete the sets the spec's retention no longer keeps (never the newest verified), and
    expire pgBackRest's backups past `backup.pitr`'s full-backup retention."""

    kind: Literal["backup-prune"] = "backup-prune"
    dry_run: bool = False


class Pruned(Result):
    keep: dict[str, list[str]]
    """Each kept set, with why (`newest verified`, `daily 2026-12-01`, …)."""
    drop: list[str]
    ignored: list[str]
    """Sets that are not restorable: neither kept nor counted."""
    forgotten_snapshots: int
    dry_run: bool
    pitr: dict[str, Any] | None
    """pgBackRest's expiry (`stanza`, `retention_full`, `keep`, `expire`), `{"skipped": why}`
    before `pitr init`, or None without `backup.pitr`."""

    def summary(self) -> str:
        if self.dry_run:
            return f"would drop {len(self.drop)} sets, keep {len(self.keep)}"
        return (
            f"dropped {len(self.drop)} sets ({self.forgotten_snapshots} snapshots forgotten),"
            f" kept {len(self.keep)}"
        )


def prune(ws: Workspace, request: Prune) -> Pruned:
    """Apply the retention policy: restic snapshots forgotten and pruned, then the sets' records
    (failed sets' partial snapshots are forgotten too, their records kept as history)."""
    result = backup.prune(ws.sessions, ws.stack, base_dir=ws.workdir, actor=ws.actor, dry_run=request.dry_run)
    return Pruned(
        keep={k: list(v) for k, v in result.plan.keep.items()},
        drop=list(result.plan.drop),
        ignored=list(result.plan.ignored),
        forgotten_snapshots=result.forgotten_snapshots,
        dry_run=request.dry_run,
        pitr=_expire_pitr(ws, request.dry_run),
    )


def _expire_pitr(ws: Workspace, dry_run: bool) -> dict[str, Any] | None:
    """pgBackRest's own retention (`expire`) for the stanza, when `backup.pitr` is configured."""
    stack = ws.stack
    if stack.backup is None or stack.backup.pitr is None:
        return None
    stanza = backup.open_stanza(stack, base_dir=ws.workdir, require_config=False)
    if not stanza.pgbackrest.config_path.exists():
        return {"skipped": "not set up yet (`shipyard backup pitr init`): nothing to expire"}
    return backup.expire_stanza(ws.sessions, stanza, actor=ws.actor, dry_run=dry_run)


# --- freshness ------------------------------------------------------------------------------------


class CheckFreshness(Request):
    """Is each source's newest restorable backup younger than the RPO (`dr.rpo`)? Pages if not."""

    kind: Literal["backup-freshness"] = "backup-freshness"


class SourceAge(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    """The artefact name: `postgres:db`, `redis:cache`, `files:/srv/uploads`."""
    newest_set: str | None
    age_s: float | None
    """Seconds since the newest restorable copy's point in time; None when there is none."""
    limit_s: float
    stale: bool


class FreshnessChecked(Result):
    ok: bool
    """False when a source has no restorable backup younger than the RPO (a job then fails)."""
    sources: list[SourceAge]

    def summary(self) -> str:
        limit = f"{self.sources[0].limit_s:.0f} s" if self.sources else "-"
        stale = [s for s in self.sources if s.stale]
        if not stale:
            return f"backups fresh: {len(self.sources)} sources within the RPO ({limit})"
        ages = ", ".join(f"{s.source} ({'none' if s.age_s is None else f'{s.age_s:.0f} s'})" for s in stale)
        return f"{len(stale)} of {len(self.sources)} sources older than the RPO ({limit}): {ages}"


def check_freshness(ws: Workspace, request: CheckFreshness) -> FreshnessChecked:
    """Each backed-up source's newest restorable copy against `dr.rpo`; stale ones page."""
    report = backup.check_freshness(ws.sessions, ws.stack, now=utcnow(), notifier=ws.notifier)
    sources = [SourceAge.model_validate(f.as_data()) for f in report]
    return FreshnessChecked(ok=not any(s.stale for s in sources), sources=sources)


# --- point-in-time recovery: the WAL stream and pgBackRest backups ------------------------------


class StartWalStream(Request):
    """Start pg_receivewal on its replication slot (`backup.pitr.stream`); a running one is left
    alone, so the scheduler asks every minute."""

    kind: Literal["wal-stream-start"] = "wal-stream-start"
    datastore: str | None = None
    """The PostgreSQL datastore (default: the stack's only one)."""


class WalStreamStarted(Result):
    running: bool
    pid: int | None
    slot_exists: bool
    slot_active: bool
    restart_lsn: str | None
    newest_segment: str | None
    wal_status: str | None
    safe_wal_size: int | None
    spool: str
    slot: str

    def summary(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "not running"
        return f"pg_receivewal {state} on slot {self.slot}; newest WAL {self.newest_segment or '(none)'}"


def start_wal_stream(ws: Workspace, request: StartWalStream) -> WalStreamStarted:
    """Create the replication slot and start pg_receivewal (detached; it reconnects by itself)."""
    stanza = backup.open_stanza(ws.stack, base_dir=ws.workdir, datastore=request.datastore)
    return WalStreamStarted.model_validate(backup.start_stream(ws.sessions, stanza, actor=ws.actor))


class TakePitrBackup(Request):
    """A pgBackRest backup of the PostgreSQL primary: full, differential or incremental (the
    `incremental` key of `backup.schedules`). A diff or incr with no full to build on is taken
    as a full."""

    kind: Literal["pitr-backup"] = "pitr-backup"
    what: BackupKind = "incr"
    datastore: str | None = None


class PitrBackupTaken(Result):
    stanza: str
    requested: BackupKind
    promoted_to_full: bool
    label: str
    kind: BackupKind
    started_at: dt.datetime
    stopped_at: dt.datetime
    """The earliest moment this backup restores to."""
    start_lsn: str
    stop_lsn: str
    wal_start: str
    wal_stop: str
    database_size: int
    backup_size: int
    repository_delta: int
    prior: str | None
    error: bool

    def summary(self) -> str:
        took = f"{backup.kind_word(self.kind)} backup {self.label} of stanza {self.stanza} taken"
        instead = (
            f" (instead of {backup.kind_word(self.requested)}: no full existed)"
            if self.promoted_to_full
            else ""
        )
        return f"{took}{instead}: {byte_size(self.backup_size)} copied"


def take_pitr_backup(ws: Workspace, request: TakePitrBackup) -> PitrBackupTaken:
    """A pgBackRest backup, audited before and after."""
    stanza = backup.open_stanza(ws.stack, base_dir=ws.workdir, datastore=request.datastore)
    result = backup.take_backup(ws.sessions, stanza, request.what, actor=ws.actor)
    return PitrBackupTaken.model_validate(result.as_data())
