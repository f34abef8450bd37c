"""Verifying a backup set by restoring it for real: into a scratch PostgreSQL, a scratch Redis and a
scratch directory, then checking what came back against the manifest; then `restic check`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.orm import Session, sessionmaker

from ..errors import BackupError, RepositoryError, UserError, VerificationError
from ..monitor import Event, Notifier
from ..spec import Stack
from ..state import record_audit, utcnow
from ._connect import RedisSource
from ._manifest import Artefact, Check, FilesArtefact, PostgresArtefact, RedisArtefact, Verification
from ._restic import ResticRepository
from ._run import _notify, default_jobs, open_repository
from ._scratch import scratch_postgres, scratch_redis
from ._sets import BackupSet, get_set, latest_set, record_verification
from ._sources import file_sha256, list_tables, redis_dbsize, restore_postgres, row_counts, tree_digest

StepHandler = Callable[[str], None]
"""Called with a description of each verification step as it starts."""


@dataclass
class _Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, artefact: str, check: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(artefact=artefact, check=check, ok=ok, detail=detail))
        if not ok:
            raise VerificationError(f"{artefact}: {check}: {detail}", artefact=artefact)


def verify_set(
    sessions: sessionmaker[Session],
    stack: Stack,
    set_id: str | None,
    *,
    base_dir: Path,
    read_data_subset: str | None = "10%",
    jobs: int | None = None,
    on_step: StepHandler | None = None,
    notifier: Notifier | None = None,
    actor: str = "shipyard",
) -> BackupSet:
    """Restore every artefact of a set into scratch servers and check it; record the outcome.

    Passing sets become `verified`. A set whose data does not match its manifest becomes
    `failed` and VerificationError (naming the artefact) is raised. A failure of the means of
    verifying (restic unreachable, a scratch server that will not start) is recorded in the
    report but leaves the set's state alone.
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
            + ": only complete or verified sets can be verified"
        )
    step = on_step or (lambda _text: None)
    repository = open_repository(stack, base_dir)
    checks = list(stack.backup.checks) if stack.backup else []
    report = _Report()
    started = time.monotonic()
    started_at = utcnow().isoformat()

    def outcome(ok: bool | None, **more: Any) -> Verification:
        return Verification(
            started_at=started_at, read_data_subset=read_data_subset, ok=ok, checks=report.checks, **more
        )

    def seconds() -> float:
        return round(time.monotonic() - started, 3)

    def audit(result: str, **facts: Any) -> None:
        record_audit(sessions, actor=actor, action="backup.verify", target_kind="backup_set",
                     target=backup_set.id, after={"read_data_subset": read_data_subset, **facts},
                     outcome=result)  # fmt: skip

    audit("started")
    try:
        for artefact in backup_set.artefacts:
            step(f"{artefact.name}: restoring snapshot {artefact.snapshot_id[:8]}")
            if isinstance(artefact, PostgresArtefact):
                _verify_postgres(repository, artefact, checks, report, jobs or default_jobs(), step)
            elif isinstance(artefact, RedisArtefact):
                _verify_redis(repository, artefact, report, step)
            else:
                _verify_files(repository, artefact, report)
        step(f"restic check --read-data-subset {read_data_subset}")
        result = repository.check(read_data_subset=read_data_subset)
        report.add(
            "repository",
            f"restic check {read_data_subset or ''}".strip(),
            result.ok,
            "; ".join(result.errors),
        )
    except VerificationError as exc:
        record_verification(
            sessions,
            backup_set.id,
            outcome(False, seconds=seconds()),
            error=f"verification failed: {exc.message}",
        )
        audit("failed", artefact=exc.artefact, error=exc.message)
        _notify(
            notifier or Notifier(stack.notifications, sessions),
            Event(
                "backup.verification_failed",
                f"{stack.name} ({stack.environment}): backup set {backup_set.id} failed verification:"
                f" {exc.message}",
                "page",
                {"set": backup_set.id, "artefact": exc.artefact},
            ),
        )
        raise
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
    passed = outcome(True, seconds=seconds())
    verified = record_verification(sessions, backup_set.id, passed)
    audit("ok", seconds=passed.seconds)
    return verified


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
