"""DR drills: recover from a simulated disaster into scratch copies and measure RTO and RPO.

A drill never touches the live stack. The four modes of seed 003's `test-dr-plan.sh`:

    backup   take a backup set of every source; DISASTER; verify the set (restore it into scratch
             servers and run the spec's checks)
    restore  DISASTER; pick the newest restorable set; restore every source into scratch; health
             check each restored source
    partial  as restore, for the PostgreSQL datastores only
    full     take a backup set of every source, then as restore

and a fifth, `failover` (`_failover_drill.py`): kill the primary of a scratch copy of the `ha:
patroni` datastore under writes and measure how long Patroni takes to bring writes back.

The core here is pure: `plan_drill` says which phases a mode runs, and `run_drill` runs phases
given as plain callables, times each with an injected clock, stops at the first failure and
measures what was achieved:

    RTO  disaster -> the last phase (the last health check) passed; not achieved when one failed
    RPO  the largest data loss over the restored sources: disaster - restore point, or with PITR
         the committed writes between the restore point and the last write before the disaster
    MTTR the mean RTO of this drill and the earlier drills of the same mode, stack and environment
         that recovered (read from the drills table)

Each is compared with the spec's `dr:` targets (whole seconds). The adapter that builds real
phases from the backup package lives below the core.

With `backup.pitr` set, the PostgreSQL datastore it protects is recovered the way a real disaster
would be: at the disaster the drill freezes the WAL that existed outside the primary (pgBackRest's
archive and, when streamed, the pg_receivewal spool), restores the newest pgBackRest backup into
scratch and replays exactly that WAL. Its RPO is the seconds of committed writes lost: from the
last commit the copy replayed to the last commit the primary had made, read from the primary's WAL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from sqlalchemy.orm import Session, sessionmaker

from ..backup import (
    BackupSet,
    PitrRestoreResult,
    PitrStanza,
    RedisSource,
    RestoreResult,
    ScratchPostgres,
    ScratchRedis,
    WalAtDisaster,
    freeze_wal,
    list_sets,
    open_stanza,
    redis_dbsize,
    restore_database,
    restore_files,
    restore_pitr,
    restore_redis,
    row_counts,
    run_backup,
    tree_digest,
    verify_set,
)
from ..errors import DrError, ShipyardError, UserError
from ..monitor import Notifier
from ..spec import DRILL_MODES, DrillMode, DrTargets, Postgres, Stack
from ..state import DrillRow, record_audit
from ._history import drill_history, record_drill
from ._report import (
    DrillResult,
    PhaseKind,
    PhaseRecord,
    PhaseStatus,
    RestorePoint,
    TargetCheck,
    drill_data,
    drill_event,
    write_report,
)

if TYPE_CHECKING:
    from ._failover_drill import FailoverDrillPhases

Clock = Callable[[], float]
"""Seconds since the epoch, e.g. `time.time`; tests pass a fake one."""

SourceKind = Literal["postgresql", "redis", "files"]


@dataclass(frozen=True)
class DrillSource:
    """One thing the spec backs up: a datastore or a file volume."""

    name: str
    """The backup set's artefact name: `postgres:<datastore>`, `redis:<datastore>`, `files:<path>`."""
    kind: SourceKind
    pitr: bool = False
    """Recovered by point-in-time recovery (pgBackRest and WAL), not from a backup set."""


@dataclass(frozen=True)
class PlannedPhase:
    name: str
    """Unique in the plan; the key of the phase's callable."""
    kind: PhaseKind
    source: DrillSource | None = None


@dataclass(frozen=True)
class DrillPlan:
    mode: DrillMode
    phases: tuple[PlannedPhase, ...]
    disaster_before: int
    """The index of the first phase after the simulated disaster: its start is the disaster,
    unless the phase fixes the instant itself (`PhaseOutcome.disaster_at`)."""
    recovered_after: int | None = None
    """The index of the phase whose end is the recovery (the RTO's end); None: the last phase. A
    failover drill recovers when writes succeed again, before it checks the loss and the rejoin."""


@dataclass(frozen=True)
class PhaseOutcome:
    """What a phase returns. A phase that cannot go on raises a ShipyardError (or OSError) instead,
    or returns ok=False with the reason in `detail`."""

    ok: bool = True
    detail: str = ""
    points: tuple[RestorePoint, ...] = ()
    """Restore points the phase established; a later point for the same source replaces one."""
    disaster_at: float | None = None
    """From the phase the disaster falls before: the instant it fixed the disaster at, when that
    is not the phase's start (a PITR drill's WAL freeze: the copy reflects that instant)."""


Phase = Callable[[], PhaseOutcome]


def drill_sources(stack: Stack) -> tuple[DrillSource, ...]:
    """The sources the spec's backup covers, datastores first, in the spec's order."""
    if stack.backup is None:
        raise UserError(
            f"{stack.name}/{stack.environment or '-'} has no `backup:` section: a drill restores"
            " the spec's backups, so add backup.repository, backup.password and backup.sources"
        )
    sources: list[DrillSource] = []
    postgres = [name for name, datastore in stack.datastores.items() if isinstance(datastore, Postgres)]
    # backup.pitr protects the stack's PostgreSQL datastore; with several, `pitr` commands name one
    # each time, so a drill cannot tell which and restores them all from backup sets.
    pitr = stack.backup.pitr is not None and len(postgres) == 1
    for name in stack.backup.sources.datastores:
        datastore = stack.datastores.get(name)
        if datastore is None:
            raise UserError(f"backup.sources.datastores names {name!r}, which is not a datastore of the spec")
        if isinstance(datastore, Postgres):
            sources.append(DrillSource(f"postgres:{name}", "postgresql", pitr=pitr))
        else:
            sources.append(DrillSource(f"redis:{name}", "redis"))
    if pitr and postgres[0] not in stack.backup.sources.datastores:
        sources.insert(0, DrillSource(f"postgres:{postgres[0]}", "postgresql", pitr=True))
    sources += [DrillSource(f"files:{volume}", "files") for volume in stack.backup.sources.volumes]
    return tuple(sources)


def plan_drill(mode: str, sources: Sequence[DrillSource]) -> DrillPlan:
    """The phases a mode runs over `sources`, and where the simulated disaster falls."""
    if mode not in DRILL_MODES:
        raise UserError(f"drill mode {mode!r}: use one of {', '.join(DRILL_MODES)}")
    chosen = [source for source in sources if mode != "partial" or source.kind == "postgresql"]
    if not chosen and mode == "partial":
        raise UserError(
            "a partial drill restores the PostgreSQL datastores, and backup.sources.datastores names none:"
            " add one, or run a restore drill"
        )
    if not chosen:
        raise UserError(
            f"a {mode} drill needs something to back up, and backup.sources is empty:"
            " list datastores under backup.sources.datastores or directories under backup.sources.volumes"
        )
    if mode == "backup":
        phases = (PlannedPhase("take backup set", "backup"), PlannedPhase("verify backup set", "verify"))
        return DrillPlan("backup", phases, disaster_before=1)
    before = [PlannedPhase("take backup set", "backup")] if mode == "full" else []
    recovery = [PlannedPhase("select newest restorable set", "select")]
    recovery += [PlannedPhase(f"restore {source.name}", "restore", source) for source in chosen]
    recovery += [PlannedPhase(f"health {source.name}", "health", source) for source in chosen]
    return DrillPlan(mode, (*before, *recovery), disaster_before=len(before))


def _checks(
    targets: DrTargets | None, rto: float | None, rpo: float | None, mttr: float | None
) -> tuple[TargetCheck, ...]:
    return (
        TargetCheck("rto", targets.rto if targets else None, rto),
        TargetCheck("rpo", targets.rpo if targets else None, rpo),
        TargetCheck("mttr", targets.mttr if targets else None, mttr),
    )


def run_drill(
    plan: DrillPlan,
    phases: Mapping[str, Phase],
    *,
    targets: DrTargets | None,
    stack: str,
    environment: str,
    clock: Clock = time.time,
    previous_recoveries: Sequence[float] = (),
) -> DrillResult:
    """Run the plan's phases in order, timing each; stop at the first failure.

    `previous_recoveries` are the RTOs of earlier drills, for MTTR.
    """
    missing = [planned.name for planned in plan.phases if planned.name not in phases]
    if missing:
        raise DrError(f"the drill has no way to run phase(s) {', '.join(missing)}")
    records: list[PhaseRecord] = []
    points: dict[str, RestorePoint] = {}
    started_at = last_ended = clock()
    disaster_at: float | None = None
    recovered_at: float | None = None
    recovery = len(plan.phases) - 1 if plan.recovered_after is None else plan.recovered_after
    failed = False
    for index, planned in enumerate(plan.phases):
        source = planned.source.name if planned.source else None
        if failed:
            records.append(PhaseRecord(planned.name, planned.kind, source, "skipped", None))
            continue
        began = clock()
        if index == plan.disaster_before:
            disaster_at = began
        try:
            outcome = phases[planned.name]()
        except (ShipyardError, OSError) as exc:
            reason = exc.message if isinstance(exc, ShipyardError) else f"{type(exc).__name__}: {exc}"
            outcome = PhaseOutcome(ok=False, detail=reason)
        ended = last_ended = clock()
        failed = not outcome.ok
        if index == plan.disaster_before and outcome.disaster_at is not None:
            disaster_at = outcome.disaster_at  # the report's disaster is what the copies reflect
        if index == recovery:
            recovered_at = ended
        for point in outcome.points:
            points.pop(point.source, None)  # re-inserted last: the table lists points as reached
            points[point.source] = point
        status: PhaseStatus = "failed" if failed else "passed"
        records.append(PhaseRecord(planned.name, planned.kind, source, status, ended - began, outcome.detail))
    finished_at = last_ended
    # RTO ends when the recovery phase (the last health check, the verification, or the first
    # write after a failover) passed; not achieved when any phase failed.
    rto = (
        None
        if failed or disaster_at is None or recovered_at is None
        else max(0.0, recovered_at - disaster_at)
    )
    rpo = (
        max(point.loss_seconds(disaster_at) for point in points.values())
        if points and disaster_at is not None
        else None
    )
    recoveries = [*previous_recoveries, rto] if rto is not None else []
    mttr = statistics.fmean(recoveries) if recoveries else None
    return DrillResult(
        mode=plan.mode,
        stack=stack,
        environment=environment,
        started_at=started_at,
        finished_at=finished_at,
        disaster_at=disaster_at,
        phases=tuple(records),
        points=tuple(points.values()),
        rto=rto,
        rpo=rpo,
        mttr=mttr,
        mttr_drills=len(recoveries),
        checks=_checks(targets, rto, rpo, mttr),
    )


# --- The adapter: real phases from the backup package --------------------------------------------


@dataclass(frozen=True)
class DrillRun:
    """A drill as run against the stack's backups, and where its report was written."""

    result: DrillResult
    markdown: Path
    json: Path
    drill_id: int
    """Its row in the drills table."""


def _parse_time(text: object, fallback: dt.datetime) -> dt.datetime:
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            moment = dt.datetime.fromisoformat(text)
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return fallback


def restore_point_of(backup_set: BackupSet, name: str, snapshot_time: str | None = None) -> RestorePoint:
    """The moment artefact `name` of a set reflects: PostgreSQL's exported snapshot time (given);
    for Redis and files, which are read while the set runs, the set's start (the earliest their
    data can be)."""
    return RestorePoint(name, backup_set.id, _parse_time(snapshot_time, backup_set.started_at))


def _restore_point(backup_set: BackupSet, name: str) -> RestorePoint:
    artefact = backup_set.artefact(name)
    snapshot_time = artefact.snapshot_time if artefact is not None and artefact.type == "postgres" else None
    return restore_point_of(backup_set, name, snapshot_time)


class _BackupPhases:
    """The phases of a drill over the stack's real backups; scratch servers it starts are stopped
    and their directories removed by `close()`, whatever happened."""

    def __init__(
        self,
        stack: Stack,
        sessions: sessionmaker[Session],
        *,
        base_dir: Path,
        actor: str,
        clock: Clock,
        notifier: Notifier,
    ) -> None:
        self.stack = stack
        self.sessions = sessions
        self.base_dir = base_dir
        self.actor = actor
        self.clock = clock
        self.notifier = notifier
        self.taken: BackupSet | None = None
        self.chosen: dict[str, BackupSet] = {}
        """Per source, the set it is restored from."""
        self.restored: dict[str, RestoreResult] = {}
        self.frozen: dict[str, tuple[PitrStanza, WalAtDisaster]] = {}
        self.recovered: dict[str, PitrRestoreResult] = {}
        self._cleanups: list[Callable[[], None]] = []

    def phases(self, plan: DrillPlan) -> dict[str, Phase]:
        built: dict[str, Phase] = {}
        for planned in plan.phases:
            if planned.kind == "backup":
                built[planned.name] = self.take_backup
            elif planned.kind == "verify":
                built[planned.name] = self.verify
            elif planned.kind == "select":
                wanted = [p.source for p in plan.phases if p.kind == "restore" and p.source is not None]
                built[planned.name] = functools.partial(self.select, wanted)
            elif planned.source is not None and planned.kind == "restore":
                restore = self.recover if planned.source.pitr else self.restore
                built[planned.name] = functools.partial(restore, planned.source)
            elif planned.source is not None and planned.kind == "health":
                health = self.recovered_health if planned.source.pitr else self.health
                built[planned.name] = functools.partial(health, planned.source)
        return built

    def take_backup(self) -> PhaseOutcome:
        taken = run_backup(
            self.stack,
            "full",
            self.sessions,
            base_dir=self.base_dir,
            actor=self.actor,
            notifier=self.notifier,
        )
        self.taken = taken
        points = tuple(_restore_point(taken, artefact.name) for artefact in taken.artefacts)
        names = ", ".join(artefact.name for artefact in taken.artefacts)
        return PhaseOutcome(detail=f"set {taken.id}: {names}", points=points)

    def verify(self) -> PhaseOutcome:
        if self.taken is None:
            raise DrError("no backup set was taken to verify")
        verified = verify_set(
            self.sessions,
            self.stack,
            self.taken.id,
            base_dir=self.base_dir,
            notifier=self.notifier,
            actor=self.actor,
        )
        checks = verified.verification.checks if verified.verification is not None else []
        return PhaseOutcome(detail=f"set {verified.id} {verified.state}: {len(checks)} checks passed")

    def select(self, sources: Sequence[DrillSource]) -> PhaseOutcome:
        """For a PITR source, the WAL that existed outside the primary at the disaster; for each
        other source, the newest restorable set holding it that had finished at the disaster.

        With a PITR source the disaster is the freeze's own instant (the primary's clock as it
        read its WAL position, `WalAtDisaster.at`), not a reading taken before it: the copy then
        holds no commit made after the disaster, and every commit before it that the copy lacks
        is counted lost. Otherwise it is the clock's reading here. The outcome states it, so the
        report's disaster is this instant (`PhaseOutcome.disaster_at`)."""
        picked: list[str] = []
        frozen: list[dt.datetime] = []
        for source in sources:
            if source.pitr:
                picked.append(self.freeze(source))
                frozen.append(self.frozen[source.name][1].at)
        # `drill_sources` gives at most one PITR source, so there is one freeze at most.
        disaster = max(frozen) if frozen else dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        sources = [source for source in sources if not source.pitr]
        if not sources:
            return PhaseOutcome(detail="; ".join(picked), disaster_at=disaster.timestamp())
        sets = [
            candidate
            for candidate in list_sets(
                self.sessions, stack=self.stack.name, environment=self.stack.environment
            )
            if candidate.restorable
            and candidate.finished_at is not None
            and candidate.finished_at <= disaster
        ]
        points: list[RestorePoint] = []
        for source in sources:
            found = next((s for s in sets if s.intact(source.name)), None)
            if found is None:
                raise DrError(
                    f"no restorable backup set of {self.stack.name} ({self.stack.environment}) holds"
                    f" {source.name}: nothing to recover it from; take one with `shipyard backup full`"
                )
            self.chosen[source.name] = found
            points.append(_restore_point(found, source.name))
            picked.append(f"{source.name} from {found.id} ({found.state})")
        return PhaseOutcome(detail="; ".join(picked), points=tuple(points), disaster_at=disaster.timestamp())

    def restore(self, source: DrillSource) -> PhaseOutcome:
        backup_set = self.chosen.get(source.name)
        artefact = backup_set.artefact(source.name) if backup_set is not None else None
        if backup_set is None or artefact is None:
            raise DrError(f"no backup set was selected for {source.name}")
        set_id = backup_set.id
        if artefact.type == "postgres":
            result = restore_database(
                self.sessions, self.stack, base_dir=self.base_dir, actor=self.actor, set_id=set_id,
                datastore=artefact.datastore, into="scratch",
            )  # fmt: skip
            where = result.location
            server = ScratchPostgres(
                base=Path(where["data_dir"]), port=int(where["port"]), user=str(where["user"])
            )
            self._cleanups.append(functools.partial(_stop_and_remove, server.stop, server.base))
            detail = f"pg_restore into scratch PostgreSQL on port {where['port']}"
        elif artefact.type == "redis":
            result = restore_redis(
                self.sessions, self.stack, base_dir=self.base_dir, actor=self.actor, set_id=set_id,
                datastore=artefact.datastore, into="scratch",
            )  # fmt: skip
            where = result.location
            redis = ScratchRedis(base=Path(where["dir"]), port=int(where["port"]), pid=int(where["pid"]))
            self._cleanups.append(functools.partial(_stop_and_remove, redis.stop, redis.base))
            detail = f"scratch Redis on port {where['port']} loaded from the snapshot"
        else:
            result = restore_files(
                self.sessions, self.stack, base_dir=self.base_dir, actor=self.actor, set_id=set_id,
                path=artefact.path, into="scratch",
            )  # fmt: skip
            where = result.location
            self._cleanups.append(functools.partial(_stop_and_remove, None, Path(where["path"])))
            detail = f"{where['files']} files into {where['path']}"
        self.restored[source.name] = result
        return PhaseOutcome(detail=f"from set {backup_set.id}: {detail}")

    def freeze(self, source: DrillSource) -> str:
        """Record what a loss of the primary would leave (see `freeze_wal`); the detail to show."""
        stanza = open_stanza(self.stack, base_dir=self.base_dir, datastore=source.name.split(":", 1)[1])
        directory = Path(tempfile.mkdtemp(prefix="shipyard-drill-wal-"))
        self._cleanups.append(functools.partial(_stop_and_remove, None, directory))
        wal = freeze_wal(stanza, directory)
        self.frozen[source.name] = (stanza, wal)
        archived = wal.archived_through or "nothing"
        streamed = ", and the WAL stream's spool" if wal.streamed else ""
        return (
            f"{source.name}: point-in-time recovery from stanza {stanza.pgbackrest.settings.stanza};"
            f" primary at {wal.primary_lsn} at {wal.at.astimezone(dt.UTC).isoformat()} (the disaster);"
            f" archive through {archived}{streamed}"
        )

    def recover(self, source: DrillSource) -> PhaseOutcome:
        """Restore the newest pgBackRest backup into scratch and replay the frozen WAL to its end."""
        if source.name not in self.frozen:
            raise DrError(f"no WAL was frozen at the disaster for {source.name}")
        stanza, wal = self.frozen[source.name]
        base = Path(tempfile.mkdtemp(prefix="shipyard-drill-pitr-"))
        self._cleanups.append(functools.partial(_stop_and_remove, None, base))
        stanza.pgbackrest.own(base)  # the restored server runs as the data directory's owner
        result = restore_pitr(
            self.sessions, stanza, actor=self.actor, time=None, lsn=None,
            target_dir=base / "copy", port=None, serve_wal=wal.restore_command,
        )  # fmt: skip
        self._cleanups.append(functools.partial(_run_quietly, result.stop_command))
        self.recovered[source.name] = result
        return PhaseOutcome(
            detail=f"pgBackRest restore and WAL replay into scratch PostgreSQL on port {result.port}"
        )

    def recovered_health(self, source: DrillSource) -> PhaseOutcome:
        """The copy answers and passes `backup.checks`; what it replayed gives the RPO."""
        result = self.recovered.get(source.name)
        if result is None:
            raise DrError(f"{source.name} was not recovered")
        stanza, wal = self.frozen[source.name]
        datastore = self.stack.datastores[source.name.split(":", 1)[1]]
        database = datastore.database if isinstance(datastore, Postgres) else "postgres"
        location = {"host": "127.0.0.1", "port": result.port, "user": result.os_user, "database": database}
        checks = self.stack.backup.checks if self.stack.backup else []
        health = _postgres_health(location, None, checks)
        if not health.ok:
            return health
        with _connect(location) as connection:
            row = connection.execute(
                "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()"
            ).fetchone()
        replayed_to, last_replayed = (str(row[0]), row[1]) if row is not None else ("0/0", None)
        if last_replayed is None:  # no commit since the base backup: the copy is as of its end
            newest = stanza.pgbackrest.status().backups[-1]
            last_replayed = newest.stopped_at
        point, loss = _pitr_point(source.name, wal, replayed_to, last_replayed)
        return PhaseOutcome(detail=f"{health.detail}; replayed to {replayed_to}: {loss}", points=(point,))

    def health(self, source: DrillSource) -> PhaseOutcome:
        result = self.restored.get(source.name)
        if result is None:
            raise DrError(f"{source.name} was not restored")
        artefact = self.chosen[source.name].artefact(source.name)
        if artefact is None:
            raise DrError(f"the set that {source.name} was restored from does not hold it")
        if artefact.type == "postgres":
            return _postgres_health(
                result.location, artefact.row_counts, self.stack.backup.checks if self.stack.backup else []
            )
        if artefact.type == "redis":
            # The restored Redis answers and holds as many keys as the snapshot did.
            location = result.location
            keys = redis_dbsize(
                RedisSource(name="drill", host=str(location["host"]), port=int(location["port"]))
            )
            return PhaseOutcome(
                ok=artefact.holds_keys(keys),
                detail=f"answers; {keys} keys ({artefact.expected_keys()} in the manifest)",
            )
        digest = tree_digest(Path(result.location["path"]))
        if digest.sha256 != artefact.sha256:
            return PhaseOutcome(ok=False, detail="the restored files do not match the manifest's checksum")
        return PhaseOutcome(detail=f"{digest.files} files match the manifest's checksum")

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        self._cleanups.clear()


def _pitr_point(
    source: str, wal: WalAtDisaster, replayed_to: str, last_replayed: dt.datetime
) -> tuple[RestorePoint, str]:
    """The restore point of a PITR copy and the loss in words. The loss is the committed writes
    from the last commit replayed to the last one lost; without the primary's commit records it
    is bounded by the disaster itself (`last_write` None)."""
    label = f"pitr:{replayed_to}"
    if wal.commits_error is not None:
        return (
            RestorePoint(source, label, last_replayed),
            f"the lost commits could not be read ({wal.commits_error}); RPO counted up to the disaster",
        )
    lost = wal.lost_commits(replayed_to)
    last_write = max([last_replayed, *(commit.at for commit in lost)])
    point = RestorePoint(source, label, last_replayed, last_write, len(lost))
    if not lost:
        return point, "no committed transaction lost"
    seconds = (last_write - last_replayed).total_seconds()
    return point, f"{len(lost)} committed transaction(s) lost, {seconds:.3f} s of writes"


def _run_quietly(argv: Sequence[str]) -> None:
    subprocess.run(list(argv), capture_output=True, check=False, timeout=120)


def _stop_and_remove(stop: Callable[[], None] | None, directory: Path) -> None:
    try:
        if stop is not None:
            stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _connect(location: Mapping[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=location["host"],
        port=location["port"],
        user=location["user"],
        dbname=location["database"],
        autocommit=True,
        connect_timeout=10,
    )


def _postgres_health(
    location: Mapping[str, Any], backed_up: Mapping[str, int] | None, checks: Sequence[str]
) -> PhaseOutcome:
    """The restored database answers, reads every table, holds the manifest's row counts (when
    restored from a set's artefact: `backed_up`) and passes `backup.checks`."""
    try:
        with _connect(location) as connection:
            counts = row_counts(connection)
            expected = counts if backed_up is None else backed_up
            differing = sorted(t for t in set(counts) | set(expected) if counts.get(t) != expected.get(t))
            if differing:
                shown = ", ".join(
                    f"{t}: {expected.get(t)} backed up, {counts.get(t)} restored" for t in differing[:3]
                )
                return PhaseOutcome(ok=False, detail=f"row counts differ: {shown}")
            for index, statement in enumerate(checks):
                try:
                    cursor = connection.execute(statement)
                    if cursor.description is not None:
                        cursor.fetchall()
                except psycopg.Error as exc:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    return PhaseOutcome(ok=False, detail=f"backup.checks[{index}] failed: {reason}")
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return PhaseOutcome(ok=False, detail=f"the restored PostgreSQL does not answer: {reason}")
    compared = "read" if backed_up is None else "row counts match"
    return PhaseOutcome(detail=f"answers; {len(expected)} tables' {compared}; {len(checks)} checks passed")


def _record(
    sessions: sessionmaker[Session], actor: str, target: str, after: dict[str, Any], outcome: str
) -> None:
    record_audit(
        sessions,
        actor=actor,
        action="dr.drill",
        target_kind="stack",
        target=target,
        after=after,
        outcome=outcome,
    )


def _previous_recoveries(sessions: sessionmaker[Session], stack: Stack, mode: DrillMode) -> list[float]:
    """The RTOs of the earlier drills of this mode, stack and environment that recovered.

    Only drills of the same mode count: a partial drill restores less than a full one, so mixing
    them would say nothing. Drills that did not recover have no RTO: MTTR is the mean time of
    recoveries that happened.
    """
    history = drill_history(sessions, limit=None, mode=mode, stack=stack.name, environment=stack.environment)
    return [drill.rto_seconds for drill in history if drill.rto_seconds is not None]


def _drill_row(stack: Stack, actor: str, result: DrillResult, report: Path) -> DrillRow:
    failed = result.failed_phase
    return DrillRow(
        stack=stack.name,
        environment=stack.environment,
        mode=result.mode,
        passed=result.passed,
        actor=actor[:128],
        started_at=dt.datetime.fromtimestamp(result.started_at, dt.UTC),
        finished_at=dt.datetime.fromtimestamp(result.finished_at, dt.UTC),
        rto_seconds=result.rto,
        rpo_seconds=result.rpo,
        mttr_seconds=result.mttr,
        failed_phase=None if failed is None else failed.name,
        reason=None if failed is None else failed.detail,
        report=str(report),
    )


def run_stack_drill(
    stack: Stack,
    plan: DrillPlan,
    *,
    sessions: sessionmaker[Session],
    base_dir: Path,
    actor: str,
    report_dir: Path,
    clock: Clock = time.time,
    notifier: Notifier | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> DrillRun:
    """Run `plan` against the stack's backups into scratch servers, write its report, record it
    (the drills table and the audit log) and send its result to the spec's channels.

    Nothing live is touched: the backup phase reads the sources as `shipyard backup full` does,
    and every restore goes into a scratch server or directory that is removed afterwards.
    """
    notifier = notifier or Notifier(stack.notifications, sessions)
    adapter: _BackupPhases | FailoverDrillPhases
    if plan.mode == "failover":  # a scratch Patroni cluster failed over, not backups restored
        from ._failover_drill import FailoverDrillPhases  # noqa: PLC0415 - it builds on this module

        adapter = FailoverDrillPhases(
            stack, sessions, base_dir=base_dir, actor=actor, clock=clock, notifier=notifier
        )
    else:
        adapter = _BackupPhases(
            stack, sessions, base_dir=base_dir, actor=actor, clock=clock, notifier=notifier
        )
    phases = adapter.phases(plan)
    if on_phase is not None:
        phases = {name: _announced(name, phase, on_phase) for name, phase in phases.items()}
    target = f"{stack.name}/{stack.environment}"
    _record(sessions, actor, target, {"mode": plan.mode, "phases": [p.name for p in plan.phases]}, "started")
    started_at = dt.datetime.fromtimestamp(clock(), dt.UTC)
    try:
        result = run_drill(
            plan,
            phases,
            targets=stack.dr,
            stack=stack.name,
            environment=stack.environment,
            clock=clock,
            previous_recoveries=_previous_recoveries(sessions, stack, plan.mode),
        )
    except BaseException as exc:
        # A drill an error stopped is a failed drill too: the history shows it, with no RTO.
        error = type(exc).__name__
        stopped = DrillRow(
            stack=stack.name,
            environment=stack.environment,
            mode=plan.mode,
            passed=False,
            actor=actor[:128],
            started_at=started_at,
            finished_at=dt.datetime.fromtimestamp(clock(), dt.UTC),
            reason=f"the drill stopped: {error}",
        )
        record_drill(sessions, stopped)
        _record(sessions, actor, target, {"mode": plan.mode, "error": error}, "failed")
        raise
    finally:
        adapter.close()
    markdown, machine = write_report(result, report_dir)
    drill_id = record_drill(sessions, _drill_row(stack, actor, result, machine))
    data = drill_data(result)
    summary = {key: data[key] for key in ("mode", "passed", "failed_phase", "achieved", "targets")}
    after = summary | {"report": str(machine), "drill": drill_id}
    _record(sessions, actor, target, after, "passed" if result.passed else "failed")
    if notifier.channels:
        notifier.send(drill_event(result))
        notifier.wait()
    return DrillRun(result, markdown, machine, drill_id)


def _announced(name: str, phase: Phase, on_phase: Callable[[str], None]) -> Phase:
    def announced() -> PhaseOutcome:
        on_phase(name)
        return phase()

    return announced
