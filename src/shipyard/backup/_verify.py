"""Verifying a backup set: its record against the repository's copy and the spec, then each
artefact restored for real (into a scratch PostgreSQL, a scratch Redis, a scratch directory) and
checked against the manifest; then `restic check`, reading back a share of the repository's data.

Each artefact is judged on its own: one damaged artefact makes the set `partial` and leaves the
others restorable. A failed `restic check` fails the whole set, as the damage cannot be pinned
on one artefact.

How much data `restic check` reads: all of it with `read_data="full"`; else a rotating subset,
`k/N` with N = `backup.read_data_subsets` and k one past the stack's last verification's, so that
N verifications in a row read every pack of the repository once.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from croniter import croniter
from psycopg import sql
from sqlalchemy.orm import Session, sessionmaker

from ..errors import BackupError, RepositoryError, UserError, VerificationError
from ..monitor import Event, Notifier
from ..spec import Stack
from ..state import record_audit, utcnow
from ._catalog import manifest_bytes, set_of, store_manifest, stored_manifests
from ._connect import RedisSource, artefact_names
from ._manifest import (
    Artefact,
    ArtefactHealth,
    Check,
    FilesArtefact,
    Manifest,
    PostgresArtefact,
    RedisArtefact,
    Verification,
)
from ._restic import ResticRepository
from ._run import _notify, default_jobs, open_repository
from ._scratch import scratch_postgres, scratch_redis
from ._sets import BackupSet, get_set, latest_set, list_sets, record_verification
from ._sources import file_sha256, list_tables, redis_dbsize, restore_postgres, row_counts, tree_digest

StepHandler = Callable[[str], None]
"""Called with a description of each verification step as it starts."""

FULL = "full"
"""`read_data` that reads every pack back."""
_SUBSET = re.compile(r"^(\d+)/(\d+)$")


@dataclass
class _Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, artefact: str, check: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(artefact=artefact, check=check, ok=ok, detail=detail))
        if not ok:
            raise VerificationError(f"{artefact}: {check}: {detail}", artefact=artefact)

    def note(self, artefact: str, check: str, ok: bool, detail: str = "") -> None:
        """A check whose failure is recorded without stopping the checks of that artefact."""
        self.checks.append(Check(artefact=artefact, check=check, ok=ok, detail=detail))


def read_data_subset(sessions: sessionmaker[Session], stack: Stack, read_data: str | None) -> str:
    """What `restic check --read-data-subset` reads: everything for `full`, `read_data` itself
    when given (`10%`, `2/5`, `500M`), else the next subset of the stack's rotation."""
    if read_data == FULL:
        return "100%"
    if read_data is not None:
        return read_data
    count = stack.backup.read_data_subsets if stack.backup else 1
    last = 0
    newest = ""
    for backup_set in list_sets(sessions, stack=stack.name, environment=stack.environment):
        report = backup_set.verification
        match = _SUBSET.match(report.read_data_subset or "") if report is not None else None
        if report is not None and match and int(match[2]) == count and report.started_at > newest:
            newest, last = report.started_at, int(match[1])
    return f"{last % count + 1}/{count}"


def rotation_period(stack: Stack, *, now: dt.datetime) -> str:
    """How long until the rotation has read every pack, in words: `10 verifications`, and with a
    `verify` schedule the time those take (`10 verifications: by 2026-12-16 05:00 UTC, 10 days`)."""
    count = stack.backup.read_data_subsets if stack.backup else 1
    words = f"{count} verification{'s' if count != 1 else ''}"
    schedule = stack.backup.schedules.get("verify") if stack.backup else None
    if schedule is None or not croniter.is_valid(schedule):
        return words
    fires = croniter(schedule, now)
    last = now
    for _ in range(count):
        last = fires.get_next(dt.datetime)
    days = (last - now).total_seconds() / 86400
    return f"{words} of `{schedule}`: by {last:%Y-%m-%d %H:%M} UTC, {days:.1f} days"


def verify_set(
    sessions: sessionmaker[Session],
    stack: Stack,
    set_id: str | None,
    *,
    base_dir: Path,
    read_data: str | None = None,
    jobs: int | None = None,
    on_step: StepHandler | None = None,
    notifier: Notifier | None = None,
    actor: str = "shipyard",
) -> BackupSet:
    """Check a set's record, restore every artefact into scratch servers and check it; record the
    outcome of each artefact and of the set.

    A set all of whose checks pass becomes `verified`. Damaged or missing artefacts are recorded
    (the set becomes `partial`, or `failed` when nothing intact is left, or when the repository
    fails its check) and VerificationError, naming them, is raised after every artefact was
    checked. A failure of the means of verifying (restic unreachable, a scratch server that will
    not start) is recorded in the report but leaves the set's state alone.
    """
    backup_set = (
        get_set(sessions, set_id)
        if set_id
        else latest_set(sessions, stack=stack.name, environment=stack.environment)
    )
    if backup_set.stack != stack.name or backup_set.environment != stack.environment:
        raise UserError(
            f"set {backup_set.id} belongs to {backup_set.stack} ({backup_set.environment}), not to"
            f" {stack.name} ({stack.environment}); pass the matching -f/-e"
        )
    if not backup_set.restorable:
        raise UserError(
            f"set {backup_set.id} is {backup_set.state}"
            + (f" ({backup_set.error})" if backup_set.error else "")
            + ": only complete, verified or partial sets can be verified"
        )
    step = on_step or (lambda _text: None)
    subset = read_data_subset(sessions, stack, read_data)
    checks = list(stack.backup.checks) if stack.backup else []
    report = _Report()
    started = time.monotonic()
    started_at = utcnow().isoformat()
    damage: dict[str, str] = {}
    """Artefact name → what is wrong with it."""
    health: dict[str, ArtefactHealth] = {}

    def outcome(ok: bool | None, **more: Any) -> Verification:
        return Verification(
            started_at=started_at, read_data_subset=subset, ok=ok, checks=report.checks, **more
        )

    def seconds() -> float:
        return round(time.monotonic() - started, 3)

    def audit(result: str, **facts: Any) -> None:
        record_audit(sessions, actor=actor, action="backup.verify", target_kind="backup_set",
                     target=backup_set.id, after={"read_data_subset": subset, **facts},
                     outcome=result)  # fmt: skip

    def judged(name: str, detail: str | None) -> None:
        at = utcnow().isoformat()
        if detail is None:
            health[name] = ArtefactHealth(state="verified", detail="restored and matched", at=at)
        else:
            damage[name] = detail
            health[name] = ArtefactHealth(state="failed", detail=detail, at=at)

    audit("started")
    try:
        repository = open_repository(stack, base_dir)
        step("the set's record against the repository's copy and the spec")
        stored_copy, missing = _check_record(repository, backup_set, stack, report, damage)
        held = {a.name for a in backup_set.artefacts}
        for name, detail in list(damage.items()):
            # Artefacts the set holds are judged once restored; `manifest` (the set's own fields)
            # fails the whole set (ok False).
            if name != "manifest" and (name not in held or name in missing):
                judged(name, detail)
        for artefact in backup_set.artefacts:
            if artefact.name in missing:
                continue  # no snapshot of it to restore
            step(f"{artefact.name}: restoring snapshot {artefact.snapshot_id[:8]}")
            try:
                if isinstance(artefact, PostgresArtefact):
                    _verify_postgres(repository, artefact, checks, report, jobs or default_jobs(), step)
                elif isinstance(artefact, RedisArtefact):
                    _verify_redis(repository, artefact, report, step)
                else:
                    _verify_files(repository, artefact, report)
            except VerificationError as exc:
                found = exc.message.removeprefix(f"{artefact.name}: ")
                judged(artefact.name, "; ".join(filter(None, [damage.get(artefact.name), found])))
            else:
                judged(artefact.name, damage.get(artefact.name))
        step(f"restic check --read-data-subset {subset}")
        result = repository.check(read_data_subset=subset)
        report.note(
            "repository", f"restic check --read-data-subset {subset}", result.ok, "; ".join(result.errors)
        )
        if not result.ok:
            damage["repository"] = "; ".join(result.errors)[:500]
        if stored_copy is None and not damage:
            # Taken before sets were recorded in their repository: store the record now that the
            # set proved to hold what it says.
            store_manifest(repository, backup_set.manifest)
            report.note("manifest", "copy in the repository", True, "absent (an older set): stored now")
    except BackupError as exc:
        # The means of verifying failed, not (as far as we know) the data: keep the set's state.
        record_verification(sessions, backup_set.id, outcome(None, error=exc.message))
        audit("error", error=exc.message)
        _notify(
            notifier or Notifier(stack.notifications, sessions),
            Event(
                "backup.verification_error",
                f"{stack.name} ({stack.environment}): backup set {backup_set.id} could not be verified:"
                f" {exc.message}",
                "ticket",
                {"set": backup_set.id},
            ),
        )
        raise
    if damage:
        message = "; ".join(f"{name}: {detail}" for name, detail in damage.items())
        recorded = record_verification(
            sessions,
            backup_set.id,
            outcome(False, seconds=seconds()),
            health=health,
            error=f"verification failed: {message}",
        )
        first = next(iter(damage))
        audit("failed", artefact=first, error=message, state=recorded.state)
        intact = ", ".join(a.name for a in recorded.intact_artefacts)
        _notify(
            notifier or Notifier(stack.notifications, sessions),
            Event(
                "backup.verification_failed",
                f"{stack.name} ({stack.environment}): backup set {backup_set.id} failed verification:"
                f" {message}" + (f" (still restorable: {intact})" if intact else ""),
                "page",
                {"set": backup_set.id, "artefact": first},
            ),
        )
        raise VerificationError(
            f"set {backup_set.id} is now {recorded.state}: {message}"
            + (f"; its intact artefacts stay restorable: {intact}" if intact else ""),
            artefact=first,
        )
    passed = outcome(True, seconds=seconds())
    verified = record_verification(sessions, backup_set.id, passed, health=health)
    audit("ok", seconds=passed.seconds)
    return verified


def _check_record(
    repository: ResticRepository,
    backup_set: BackupSet,
    stack: Stack,
    report: _Report,
    damage: dict[str, str],
) -> tuple[Manifest | None, set[str]]:
    """The set's record against the repository's copy of its manifest, the snapshots the
    repository holds for it, its own sources and the spec's; what is missing or differs goes into
    `damage`, by artefact. Returns the repository's copy (None when it has none) and the artefacts
    whose snapshots the repository lacks."""
    manifest = backup_set.manifest
    copies = stored_manifests(repository, backup_set.id)
    stored = next((c.manifest for c in copies if c.manifest is not None), None)
    if copies and stored is None:
        report.note("manifest", "copy in the repository", False, copies[0].problem or "")
        damage["manifest"] = f"the repository's copy {copies[0].problem}"
    elif stored is not None:
        differing = _differing(manifest, stored)
        report.note("manifest", "matches the repository's copy", not differing, ", ".join(differing))
        for name in differing:
            damage[name] = "the state store's record differs from the repository's copy of the manifest"
    else:
        report.note("manifest", "copy in the repository", True, "absent (taken before copies were kept)")
    held = {a.name for a in manifest.artefacts}
    for name in manifest.sources:
        if name not in held:
            damage.setdefault(name, "a source of the set, but the set holds no artefact of it")
    try:
        expected = artefact_names(stack, backup_set.kind)
    except UserError as exc:  # the spec no longer backs this kind up: it expects nothing of the set
        report.note("manifest", f"the spec's sources of a {backup_set.kind} set", True, exc.message)
        expected = []
    for name in expected:
        if name not in held:
            damage.setdefault(
                name, f"the spec backs it up in a {backup_set.kind} set, but this set holds no artefact of it"
            )
    snapshots = [s for s in repository.snapshots(tags=[f"set:{backup_set.id}"]) if set_of(s) == backup_set.id]
    tagged = {
        t.removeprefix("artefact:"): s.id for s in snapshots for t in s.tags if t.startswith("artefact:")
    }
    for name in sorted(set(tagged) - held):
        damage.setdefault(
            name, f"the repository holds its snapshot {tagged[name][:8]} but the record omits it"
        )
    missing = {a.name for a in manifest.artefacts if tagged.get(a.name) != a.snapshot_id}
    for artefact in manifest.artefacts:
        if artefact.name in missing:
            damage.setdefault(
                artefact.name,
                f"its snapshot {artefact.snapshot_id[:8]} is not in the repository as this set's",
            )
    report.note(
        "manifest",
        f"{len(held)} artefacts against sources, spec and repository",
        not damage or set(damage) == {"manifest"},
        ", ".join(sorted(set(damage) - {"manifest"})),
    )
    return stored, missing


def _differing(ours: Manifest, theirs: Manifest) -> list[str]:
    """The artefacts (or `manifest`, for the set's own fields) in which two records differ."""
    if manifest_bytes(ours) == manifest_bytes(theirs):
        return []
    mine = {a.name: a for a in ours.artefacts}
    other = {a.name: a for a in theirs.artefacts}
    names = [n for n in dict.fromkeys([*other, *mine]) if mine.get(n) != other.get(n)]
    if ours.model_dump(exclude={"artefacts"}) != theirs.model_dump(exclude={"artefacts"}):
        names.append("manifest")
    return names


def _restored(repository: ResticRepository, artefact: Artefact, prefix: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        repository.restore(artefact.snapshot_id, target)
    except RepositoryError:
        shutil.rmtree(target, ignore_errors=True)
        raise  # the repository could not be used at all: the means failed, not this artefact
    except BackupError as exc:
        shutil.rmtree(target, ignore_errors=True)
        # The repository answered but this artefact's data did not come back whole (a damaged
        # pack fails restic's authentication): the set is not restorable.
        raise VerificationError(
            f"{artefact.name}: cannot be restored: {exc.message}", artefact.name
        ) from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _verify_postgres(
    repository: ResticRepository,
    artefact: PostgresArtefact,
    checks: list[str],
    report: _Report,
    jobs: int,
    step: StepHandler,
) -> None:
    name = artefact.name
    dump_dir = _restored(repository, artefact, "shipyard-verify-pg-")
    try:
        digest = tree_digest(dump_dir)
        report.add(
            name, "dump checksum", digest.sha256 == artefact.sha256, _mismatch(artefact.sha256, digest.sha256)
        )
        step(f"{name}: pg_restore into a scratch PostgreSQL")
        with scratch_postgres(bulk_load=True) as scratch:  # a throwaway server: load fast
            database = artefact.database
            with psycopg.connect(
                host=scratch.host, port=scratch.port, user=scratch.user, dbname="postgres", autocommit=True
            ) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            try:
                restore_postgres(
                    dump_dir, host=scratch.host, port=scratch.port, user=scratch.user, database=database,
                    jobs=jobs, env={}, what=f"{name}: pg_restore into scratch",
                )  # fmt: skip
            except BackupError as exc:
                report.add(name, "pg_restore", False, exc.message)
            report.add(name, "pg_restore", True)
            with psycopg.connect(
                host=scratch.host, port=scratch.port, user=scratch.user, dbname=database, autocommit=True
            ) as connection:
                counts = row_counts(connection)
                expected = artefact.row_counts
                differing = sorted(t for t in set(counts) | set(expected) if counts.get(t) != expected.get(t))
                detail = ", ".join(
                    f"{t}: {expected.get(t)} in the manifest, {counts.get(t)} restored" for t in differing[:5]
                )
                report.add(name, f"row counts of {len(expected)} tables", not differing, detail)
                for schema, table in list_tables(connection):
                    query = sql.SQL("SELECT * FROM {}.{} LIMIT 1").format(
                        sql.Identifier(schema), sql.Identifier(table)
                    )
                    try:
                        connection.execute(query).fetchall()
                    except psycopg.Error as exc:
                        report.add(name, f"read {schema}.{table}", False, str(exc).strip().splitlines()[0])
                report.add(name, "every table readable", True)
                for index, statement in enumerate(checks):
                    try:
                        cursor = connection.execute(statement)
                        if cursor.description is not None:
                            cursor.fetchall()
                    except psycopg.Error as exc:
                        report.add(name, f"backup.checks[{index}]", False, str(exc).strip().splitlines()[0])
                    report.add(name, f"backup.checks[{index}]", True, statement[:80])
    finally:
        shutil.rmtree(dump_dir, ignore_errors=True)


def _verify_redis(
    repository: ResticRepository, artefact: RedisArtefact, report: _Report, step: StepHandler
) -> None:
    name = artefact.name
    restored = _restored(repository, artefact, "shipyard-verify-redis-")
    try:
        rdb = restored / artefact.file
        if not rdb.exists():
            report.add(
                name, "snapshot present", False, f"{rdb.name} is not in snapshot {artefact.snapshot_id[:8]}"
            )
        checksum = file_sha256(rdb)
        report.add(name, "rdb checksum", checksum == artefact.sha256, _mismatch(artefact.sha256, checksum))
        step(f"{name}: loading into a scratch Redis")
        with scratch_redis(rdb) as scratch:
            keys = redis_dbsize(RedisSource(name="scratch", host=scratch.host, port=scratch.port))
        report.add(
            name,
            "key count",
            artefact.holds_keys(keys),
            f"{keys} keys restored, {artefact.expected_keys()} in the manifest",
        )
    finally:
        shutil.rmtree(restored, ignore_errors=True)


def _verify_files(repository: ResticRepository, artefact: FilesArtefact, report: _Report) -> None:
    name = artefact.name
    restored = _restored(repository, artefact, "shipyard-verify-files-")
    try:
        digest = tree_digest(restored)
        report.add(
            name,
            f"checksum of {artefact.files} files",
            digest.sha256 == artefact.sha256 and digest.files == artefact.files,
            _mismatch(artefact.sha256, digest.sha256),
        )
    finally:
        shutil.rmtree(restored, ignore_errors=True)


def _mismatch(expected: str, actual: str) -> str:
    return "" if expected == actual else f"expected sha256 {expected[:12]}…, restored {actual[:12]}…"
