"""Backups as verbs: take a set, verify it, restore from it, prune, check freshness; and the one
view of a set that the CLI and the API show. Point-in-time recovery too: set up the pgBackRest
stanza, take its backups, show its restorable window, keep the WAL stream going (start, stop,
status) and restore to a moment, an LSN or the latest.

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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from .. import backup
from ..backup import (
    ArtefactHealth,
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
from ..errors import StateStoreMissing, UserError
from ..spec import BackupWhat
from ..state import rfc3339, utcnow
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
    "ImportSets",
    "InitPitr",
    "PitrBackupTaken",
    "PitrBackupView",
    "PitrInitialised",
    "PitrRestored",
    "PitrStatusView",
    "PitrTarget",
    "PitrWindow",
    "PitrWindowListed",
    "Prune",
    "Pruned",
    "RepositorySet",
    "RestorableWindow",
    "Restore",
    "RestorePitr",
    "Restored",
    "SetsImported",
    "SourceAge",
    "StartWalStream",
    "StopWalStream",
    "TakeBackup",
    "TakePitrBackup",
    "Verified",
    "Verify",
    "WalStreamChecked",
    "WalStreamStarted",
    "WalStreamStatus",
    "WalStreamStopped",
    "backup_set",
    "backup_sets",
    "byte_size",
    "check_freshness",
    "import_sets",
    "init_pitr",
    "pitr_window",
    "plan_init_pitr",
    "plan_restore",
    "plan_restore_pitr",
    "plan_take_backup",
    "plan_take_pitr_backup",
    "prune",
    "repository_sets",
    "restore",
    "restore_pitr",
    "start_wal_stream",
    "stop_wal_stream",
    "take_backup",
    "take_pitr_backup",
    "verify",
    "wal_stream_status",
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
    intact: bool
    """It can be restored: its set is restorable and no check found it damaged."""
    health: ArtefactHealth | None = None
    """Its last integrity check (a verification's or a failed restore's); None: unchecked."""


class BackupSetView(BaseModel):
    """A backup set as the CLI and the API show it: `artefacts` summarises what it holds; one
    set shown alone also carries its whole manifest and verification report."""

    model_config = ConfigDict(frozen=True)

    id: str
    stack: str
    environment: str
    kind: str
    state: str
    """running | complete | verified | partial (some artefacts damaged, the others intact) | failed"""
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
    health: dict[str, ArtefactHealth] = {}
    """Artefact name → its last integrity check (a verification's, or a restore's that found it
    damaged); an unchecked artefact has no entry."""

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
            health=backup_set.health,
            artefacts=[
                ArtefactSummary(
                    name=a.name,
                    type=a.type,
                    snapshot_id=a.snapshot_id,
                    raw_bytes=a.raw_bytes,
                    data_added=a.data_added,
                    intact=backup_set.intact(a.name),
                    health=backup_set.health.get(a.name),
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


# --- the repository's own record of its sets -----------------------------------------------------


class RepositorySet(BaseModel):
    """A set as the repository alone records it (its manifest copy), and what the state store says."""

    model_config = ConfigDict(frozen=True)

    id: str
    manifest_file: str
    """`<sha256>.json`: the copy's name is its content's hash."""
    kind: str | None
    started_at: str | None
    finished_at: str | None
    artefacts: list[str]
    problem: str | None
    """Why the copy cannot be trusted (it does not hash to its name, or cannot be read)."""
    state: str | None
    """The set's state in the state store; None: the state store does not know it."""


def repository_sets(ws: Workspace) -> list[RepositorySet]:
    """The sets whose manifests the stack's restic repository holds, oldest first; read from the
    repository alone (after the state store was lost, `import_sets` records them again)."""
    repository = backup.open_repository(ws.stack, ws.workdir)
    try:
        known = {s.id: s.state for s in backup.list_sets(ws.sessions)}
    except StateStoreMissing:  # the store was lost: what this listing is for
        known = {}
    listed: list[RepositorySet] = []
    for stored in backup.stored_manifests(repository):
        manifest = stored.manifest
        listed.append(
            RepositorySet(
                id=stored.set_id,
                manifest_file=stored.filename,
                kind=manifest.kind if manifest else None,
                started_at=manifest.started_at if manifest else None,
                finished_at=manifest.finished_at if manifest else None,
                artefacts=[a.name for a in manifest.artefacts] if manifest else [],
                problem=stored.problem,
                state=known.get(stored.set_id),
            )
        )
    return listed


class ImportSets(Request):
    """Record in the state store the sets the repository holds and the store does not (all, or
    those named), as `complete`: verify them before trusting them again."""

    kind: Literal["backup-import"] = "backup-import"
    set_ids: tuple[SetId, ...] = ()
    dry_run: bool = False


class ImportedSetOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    outcome: str
    """imported | present (already in the state store) | damaged | other stack"""
    detail: str


class SetsImported(Result):
    sets: list[ImportedSetOut]
    dry_run: bool

    def summary(self) -> str:
        imported = sum(1 for s in self.sets if s.outcome == "imported")
        verb = "would import" if self.dry_run else "imported"
        return f"{verb} {imported} of the repository's {len(self.sets)} sets"


def import_sets(ws: Workspace, request: ImportSets) -> SetsImported:
    """Record the repository's sets in the state store. A dry run creates no store: with none
    there, it plans against an empty one (in memory), which is what a lost store is."""
    repository = backup.open_repository(ws.stack, ws.workdir)
    sessions = ws.sessions if not request.dry_run else _existing_or_empty(ws)
    outcomes = backup.import_sets(
        sessions, ws.stack, repository, set_ids=list(request.set_ids) or None, actor=ws.actor,
        dry_run=request.dry_run,
    )  # fmt: skip
    return SetsImported(
        sets=[ImportedSetOut(id=o.set_id, outcome=o.outcome, detail=o.detail) for o in outcomes],
        dry_run=request.dry_run,
    )


def _existing_or_empty(ws: Workspace) -> sessionmaker[Session]:
    from ..state import open_engine, open_existing, session_factory  # noqa: PLC0415 (as Workspace)

    if ws.opened_sessions is not None:
        return ws.opened_sessions
    try:
        return session_factory(open_existing(ws.database_url))
    except StateStoreMissing:
        return session_factory(open_engine("sqlite://"))


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
    read_data: Annotated[str, Field(pattern=r"^(full|\d+(\.\d+)?%|\d+/\d+|\d+[KMGT]?)$")] | None = None
    """How much of the repository's data `restic check` reads back: `full`, a subset (`10%`,
    `2/5`, `500M`), or None: the next of the stack's `backup.read_data_subsets` rotation."""


class Verified(Result):
    backup_set: BackupSetView
    every_pack_read_within: str
    """How long the read-data rotation takes to read every pack (`backup.read_data_subsets`)."""

    def summary(self) -> str:
        checks = self.backup_set.verification.checks if self.backup_set.verification else []
        return f"set {self.backup_set.id} verified: {len(checks)} checks"


def verify(
    ws: Workspace,
    request: Verify,
    *,
    parallel: int | None = None,
    on_step: StepHandler | None = None,
) -> Verified:
    """Prove a set restorable: it becomes `verified`; damaged artefacts make it `partial` (or
    `failed`) with VerificationError naming them (and a page).

    parallel: pg_restore's jobs."""
    verified = backup.verify_set(
        ws.sessions,
        ws.stack,
        request.set_id,
        base_dir=ws.workdir,
        read_data=request.read_data,
        jobs=parallel,
        on_step=on_step,
        notifier=ws.notifier,
        actor=ws.actor,
    )
    period = backup.rotation_period(ws.stack, now=utcnow())
    return Verified(backup_set=BackupSetView.of(verified), every_pack_read_within=period)


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


class PrunedSnapshot(BaseModel):
    """A restic snapshot prune forgets (or, in a dry run, would)."""

    model_config = ConfigDict(frozen=True)

    id: str
    set: str
    holds: str
    """The artefact it holds, or `manifest` (the set's record in the repository)."""
    reason: str


class Pruned(Result):
    keep: dict[str, list[str]]
    """Each kept set, with why (`newest verified`, `daily 2026-12-01`, …)."""
    drop: list[str]
    ignored: list[str]
    """Sets that are not restorable: neither kept nor counted."""
    forgotten_snapshots: int
    """How many snapshots were forgotten (0 in a dry run)."""
    snapshots: list[PrunedSnapshot]
    """Every snapshot forgotten, or in a dry run every one the run would forget."""
    dry_run: bool
    pitr: dict[str, Any] | None
    """pgBackRest's expiry (`stanza`, `retention_full`, `keep`, `expire`), `{"skipped": why}`
    before `pitr init`, or None without `backup.pitr`."""

    def summary(self) -> str:
        if self.dry_run:
            return (
                f"would drop {len(self.drop)} sets ({len(self.snapshots)} snapshots), keep {len(self.keep)}"
            )
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
        forgotten_snapshots=0 if request.dry_run else result.forgotten_snapshots,
        snapshots=[
            PrunedSnapshot(id=d.id, set=d.set_id, holds=d.holds, reason=d.reason) for d in result.snapshots
        ],
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


def _stanza(
    ws: Workspace, datastore: str | None, *, discover_socket: bool = False, require_config: bool = True
) -> backup.PitrStanza:
    """The pgBackRest stanza of a PostgreSQL datastore (default: the stack's only one); UserError
    without `backup.pitr`, or (require_config) before `pitr init` wrote its config."""
    return backup.open_stanza(
        ws.stack,
        base_dir=ws.workdir,
        datastore=datastore,
        discover_socket=discover_socket,
        require_config=require_config,
    )


class StartWalStream(Request):
    """Start pg_receivewal on its replication slot (`backup.pitr.stream`); a running one is left
    alone, so the scheduler asks every minute."""

    kind: Literal["wal-stream-start"] = "wal-stream-start"
    datastore: str | None = None
    """The PostgreSQL datastore (default: the stack's only one)."""


class _WalStreamState(Result):
    """pg_receivewal and its replication slot, as `stream start` and `stream status` show them."""

    running: bool
    pid: int | None
    slot_exists: bool
    slot_active: bool
    restart_lsn: str | None
    """The oldest WAL the primary keeps for the receiver."""
    newest_segment: str | None
    """The newest file in the spool (`.partial` while a segment is being received)."""
    wal_status: str | None
    """The slot's: reserved, extended, unreserved (about to be given up) or lost."""
    safe_wal_size: int | None
    """Bytes of WAL that may still be written before the slot is given up (None: no limit)."""
    spool: str
    slot: str

    def summary(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "not running"
        return f"pg_receivewal {state} on slot {self.slot}; newest WAL {self.newest_segment or '(none)'}"


class WalStreamStarted(_WalStreamState):
    """pg_receivewal after `start_wal_stream`: running, or left running when it already was."""


def start_wal_stream(ws: Workspace, request: StartWalStream) -> WalStreamStarted:
    """Create the replication slot and start pg_receivewal (detached; it reconnects by itself)."""
    stanza = _stanza(ws, request.datastore)
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
    stanza = _stanza(ws, request.datastore)
    result = backup.take_backup(ws.sessions, stanza, request.what, actor=ws.actor)
    return PitrBackupTaken.model_validate(result.as_data())


def plan_take_pitr_backup(ws: Workspace, request: TakePitrBackup) -> dict[str, Any]:
    """What `take_pitr_backup` would take, touching nothing (--dry-run): `would_take` is a full
    when a diff or incr has no full to build on."""
    stanza = _stanza(ws, request.datastore)
    has_full = any(b.kind == "full" for b in stanza.pgbackrest.backups())
    return {
        "dry_run": True,
        "stanza": stanza.pgbackrest.settings.stanza,
        "requested": request.what,
        "would_take": request.what if request.what == "full" or has_full else "full",
    }


# --- setting the stanza up ----------------------------------------------------------------------


class InitPitr(Request):
    """Set up point-in-time recovery of a PostgreSQL datastore: write pgbackrest.conf, turn WAL
    archiving on (ALTER SYSTEM), create the stanza and prove it with `pgbackrest check`; with
    `backup.pitr.stream`, start pg_receivewal too. Safe to repeat."""

    kind: Literal["pitr-init"] = "pitr-init"
    datastore: str | None = None
    """The PostgreSQL datastore (default: the stack's only one)."""
    restart: bool = False
    """Restart PostgreSQL (pg_ctl) when turning archive_mode on needs it."""


class PitrInitialised(Result):
    datastore: str
    config_path: str
    restart: bool
    stream_pid: int | None = None
    """pg_receivewal's pid (`backup.pitr.stream`, once WAL is archived)."""
    changed: list[str]
    """The PostgreSQL settings this run changed."""
    restart_needed: bool
    """archive_mode waits for a restart: nothing is archived yet (rerun with `restart`)."""
    restarted: bool
    checked: bool
    """`pgbackrest check` passed: WAL reaches the repository."""
    stanza: str
    repository: str
    message: str
    server_log: str | None
    """Where PostgreSQL's output goes after shipyard restarted it."""

    @property
    def ok(self) -> bool:
        """False while PostgreSQL must restart before WAL is archived (a job then fails)."""
        return not self.restart_needed

    @model_serializer(mode="wrap")
    def _stream_pid_when_streaming(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # `pitr init -o json` has only ever had `stream_pid` when it started pg_receivewal.
        document: dict[str, Any] = handler(self)
        if document.get("stream_pid") is None:
            document.pop("stream_pid", None)
        return document

    def summary(self) -> str:
        if self.restart_needed:
            return f"stanza {self.stanza} set up but not ready: {self.message}"
        return f"stanza {self.stanza} ready in {self.repository}: WAL archived and checked"


def init_pitr(ws: Workspace, request: InitPitr) -> PitrInitialised:
    """Set the stanza up, audited before and after; `restart_needed` (and `ok` False) when
    PostgreSQL must restart first and `restart` was not given."""
    stanza = _stanza(ws, request.datastore, discover_socket=True, require_config=False)
    result = backup.init_stanza(ws.sessions, stanza, actor=ws.actor, restart=request.restart)
    return PitrInitialised.model_validate(result)


def plan_init_pitr(ws: Workspace, request: InitPitr) -> dict[str, Any]:
    """What `init_pitr` would write and set, touching nothing (--dry-run): the config, the
    PostgreSQL settings, the stanza and its repository."""
    return backup.plan_init(_stanza(ws, request.datastore, discover_socket=True, require_config=False))


# --- the restorable window ----------------------------------------------------------------------

_IsoTime = Annotated[dt.datetime, PlainSerializer(rfc3339, return_type=str)]
"""A time as every `-o json` shows it: RFC 3339 in UTC with `Z`."""


class PitrWindow(Request):
    """The stanza's pgBackRest backups, and the window they restore to."""

    kind: Literal["pitr-window"] = "pitr-window"
    datastore: str | None = None


class PitrStatusView(BaseModel):
    """pgBackRest's word on the stanza (`pgbackrest info`): code 0 is ok."""

    model_config = ConfigDict(frozen=True)

    code: int
    message: str


class RestorableWindow(BaseModel):
    """From the end of the oldest backup to the newest WAL archived or (`backup.pitr.stream`)
    received by pg_receivewal."""

    model_config = ConfigDict(
        frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    from_: _IsoTime | None = Field(alias="from")
    """The earliest moment a restore reaches (None before any backup)."""
    to: _IsoTime | None
    """The newest (None before any backup or archived WAL)."""
    from_lsn: str | None
    archive_min: str | None
    archive_max: str | None
    streamed_at: _IsoTime | None
    """When pg_receivewal last wrote to the spool (None when WAL is not streamed)."""


class PitrBackupView(BaseModel):
    """One pgBackRest backup in the listing."""

    model_config = ConfigDict(frozen=True)

    label: str
    kind: BackupKind
    started_at: _IsoTime
    stopped_at: _IsoTime
    """When it finished: the earliest moment it restores to."""
    start_lsn: str
    stop_lsn: str
    wal_start: str
    wal_stop: str
    database_size: int
    backup_size: int
    """Bytes copied (all of them for a full, the changes for a diff or incr)."""
    repository_delta: int
    prior: str | None
    """The backup a diff or incr builds on."""
    error: bool


class PitrWindowListed(Result):
    stanza: str
    datastore: str
    status: PitrStatusView
    window: RestorableWindow
    backups: list[PitrBackupView]
    """Oldest first."""

    def summary(self) -> str:
        if not self.backups:
            return f"stanza {self.stanza}: no backups yet"
        oldest = rfc3339(self.window.from_) if self.window.from_ else "-"
        newest = rfc3339(self.window.to) if self.window.to else "the newest archived WAL"
        return f"stanza {self.stanza}: {len(self.backups)} backups, restorable from {oldest} to {newest}"


def pitr_window(ws: Workspace, request: PitrWindow) -> PitrWindowListed:
    """The backups and the restorable window, from `pgbackrest info` and the repository's newest
    WAL (reads only; needs `pitr init` first)."""
    stanza = _stanza(ws, request.datastore)
    return PitrWindowListed.model_validate(backup.window_data(stanza, stanza.pgbackrest.status()))


# --- the WAL stream: stop and status (start is above) -------------------------------------------


class StopWalStream(Request):
    """Stop pg_receivewal. Its slot keeps WAL for it on the primary until dropped (`drop_slot`)."""

    kind: Literal["wal-stream-stop"] = "wal-stream-stop"
    datastore: str | None = None
    drop_slot: bool = False


class WalStreamStopped(Result):
    datastore: str
    slot: str
    drop_slot: bool
    stopped: bool
    """False when no pg_receivewal was running."""
    running: bool
    pid: int | None
    slot_exists: bool
    slot_active: bool
    restart_lsn: str | None
    newest_segment: str | None
    wal_status: str | None
    safe_wal_size: int | None

    def summary(self) -> str:
        done = "stopped pg_receivewal" if self.stopped else "pg_receivewal was not running"
        slot = "dropped" if self.drop_slot else "kept (the primary keeps WAL for it)"
        return f"{done}; slot {self.slot} {slot}"


def stop_wal_stream(ws: Workspace, request: StopWalStream) -> WalStreamStopped:
    """Stop pg_receivewal (and drop its slot when asked), audited before and after."""
    stanza = _stanza(ws, request.datastore)
    stopped = backup.stop_stream(ws.sessions, stanza, actor=ws.actor, drop_slot=request.drop_slot)
    return WalStreamStopped.model_validate(stopped)


class WalStreamStatus(Request):
    """Is pg_receivewal running, how is its slot, and what is the newest WAL in the spool?"""

    kind: Literal["wal-stream-status"] = "wal-stream-status"
    datastore: str | None = None


class WalStreamChecked(_WalStreamState):
    @property
    def ok(self) -> bool:
        """False when pg_receivewal is not running (a job then fails; the CLI exits 1)."""
        return self.running


def wal_stream_status(ws: Workspace, request: WalStreamStatus) -> WalStreamChecked:
    """The receiver, its slot and the spool (reads only)."""
    stanza = _stanza(ws, request.datastore)
    return WalStreamChecked.model_validate(backup.stream_status(stanza))


# --- restoring to a point in time ---------------------------------------------------------------


class RestorePitr(Request):
    """Restore a PostgreSQL datastore from pgBackRest to a moment (`time`), a WAL position (`lsn`)
    or the newest state the repository holds (`latest`): a new scratch data directory with a server
    started on it, left running. Never touches the primary."""

    kind: Literal["pitr-restore"] = "pitr-restore"
    datastore: str | None = None
    time: str | None = None
    """ISO 8601 with a zone, e.g. 2026-12-01T02:00:00Z."""
    lsn: str | None = None
    """A WAL position, e.g. 0/3000060."""
    latest: bool = False
    """The newest backup and all the WAL after it."""
    target_dir: str | None = None
    """Where the copy goes (`<target_dir>/data`; default: a new temp directory); new or empty."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """The restored server's port (default: a free one)."""

    @model_validator(mode="after")
    def _one_target(self) -> RestorePitr:
        # A UserError, not a ValueError: the CLI and the jobs refuse the request in these words.
        if self.latest and (self.time is not None or self.lsn is not None):
            raise UserError("--latest restores to the end of the archive: give it without --time/--lsn")
        if self.time is not None and self.lsn is not None:
            raise UserError("give --time or --lsn, not both")
        if not self.latest and self.time is None and self.lsn is None:
            raise UserError(
                "say where to restore to: a time (--time), an LSN (--lsn) or the latest (--latest)"
            )
        return self


class PitrTarget(BaseModel):
    """Where recovery stopped: pgBackRest's time (`2026-12-01 02:00:00.000000+00`) or the LSN;
    neither for the latest."""

    model_config = ConfigDict(frozen=True)

    time: str | None
    lsn: str | None


class PitrRestored(Result):
    stanza: str
    data_dir: str
    host: str
    port: int
    user: str
    """Who to connect as (the datastore's user)."""
    log_file: str
    target: PitrTarget
    pgbackrest_arguments: list[str]
    stop_command: list[str]
    """Stops the restored server (it is left running)."""

    @property
    def point(self) -> str:
        """What it was restored to, in words: a time, `LSN 0/3000060` or `the latest`."""
        if self.target.time:
            return self.target.time
        return f"LSN {self.target.lsn}" if self.target.lsn else "the latest"

    def summary(self) -> str:
        return f"stanza {self.stanza} restored to {self.point} into {self.data_dir}: {self.host}:{self.port}"


def _restore_target(request: RestorePitr) -> tuple[dt.datetime | None, Path | None]:
    moment = backup.parse_target_time(request.time) if request.time is not None else None
    return moment, Path(request.target_dir).resolve() if request.target_dir is not None else None


def restore_pitr(ws: Workspace, request: RestorePitr) -> PitrRestored:
    """Restore into scratch and start the copy, audited before and after. A target outside the
    restorable window, or a target_dir that is not empty, is a UserError before anything is made."""
    moment, target_dir = _restore_target(request)
    stanza = _stanza(ws, request.datastore)
    result = backup.restore_pitr(
        ws.sessions, stanza, actor=ws.actor, time=moment, lsn=request.lsn, target_dir=target_dir,
        port=request.port,
    )  # fmt: skip
    return PitrRestored.model_validate({"stanza": stanza.pgbackrest.settings.stanza, **result.as_data()})


def plan_restore_pitr(ws: Workspace, request: RestorePitr) -> dict[str, Any]:
    """What `restore_pitr` would do, creating nothing (--dry-run; reads the repository): the data
    directory, pgBackRest's restore arguments and the restorable window."""
    moment, target_dir = _restore_target(request)
    stanza = _stanza(ws, request.datastore)
    return backup.plan_restore_pitr(
        stanza, time=moment, lsn=request.lsn, target_dir=target_dir, port=request.port
    )
