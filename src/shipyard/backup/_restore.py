"""Restoring artefacts of a backup set: into scratch servers/directories to look at, or over the
live datastore or directory (only when asked with --yes, after a safety backup of what is there).

Every restore is written to the audit log before it starts and again when it ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import psycopg
from psycopg import sql
from sqlalchemy.orm import Session, sessionmaker

from ..errors import BackupError, NotFoundError, UserError
from ..spec import BackupWhat, Stack
from ..state import record_audit
from ._connect import FilesSource, PostgresSource, RedisSource, sources_of
from ._manifest import Artefact, FilesArtefact, PostgresArtefact, RedisArtefact
from ._resp import RespClient
from ._restic import ResticRepository
from ._run import ProgressHandler, default_jobs, open_repository, run_backup
from ._scratch import ScratchPostgres, start_scratch_postgres, start_scratch_redis
from ._sets import BackupSet, get_set, list_sets
from ._sources import TreeDigest, restore_postgres, tree_digest

Into = Literal["scratch", "live"]
RestoreWhat = Literal["database", "redis", "files", "volumes"]
"""What a restore brings back from a set: its PostgreSQL dump, its Redis snapshot, its one file
volume, or every file volume (`shipyard restore WHAT`, restore jobs)."""
RESTORE_WHATS: tuple[RestoreWhat, ...] = get_args(RestoreWhat)
SAFETY_BACKUP: dict[RestoreWhat, BackupWhat] = {
    "database": "database",
    "redis": "redis",
    "files": "files",
    "volumes": "files",
}
"""What a restore over live data backs up first."""


@dataclass(frozen=True)
class RestoreResult:
    set_id: str
    artefact: str
    into: Into
    location: dict[str, Any]
    """Where the data now is: port and data dir of a scratch server, a directory, the live target."""
    safety_set: str | None = None
    stop_command: list[str] = field(default_factory=list)
    """For a scratch server left running: the command that stops it."""

    def as_data(self) -> dict[str, Any]:
        return {
            "set": self.set_id,
            "artefact": self.artefact,
            "into": self.into,
            "location": self.location,
            "safety_set": self.safety_set,
            "stop_command": self.stop_command,
        }


_S = TypeVar("_S", PostgresSource, RedisSource)
_A = TypeVar("_A", PostgresArtefact, RedisArtefact, FilesArtefact)


def _type_word(artefact_type: type[Artefact]) -> str:
    word: str = artefact_type.model_fields["type"].default
    return word


def _live_source(stack: Stack, kind: BackupWhat, source_type: type[_S], datastore: str) -> _S:
    """The spec's live datastore a restore `--into live` overwrites."""
    for source in sources_of(stack, kind):
        if isinstance(source, source_type) and source.name == datastore:
            return source
    raise UserError(f"datastore {datastore!r} is not among backup.sources.datastores of this spec")


def _audit(
    sessions: sessionmaker[Session], actor: str, target: str, after: dict[str, Any], outcome: str
) -> None:
    record_audit(
        sessions, actor=actor, action="backup.restore", target_kind="backup_set", target=target,
        after=after, outcome=outcome,
    )  # fmt: skip


def _pick_set(
    sessions: sessionmaker[Session],
    stack: Stack,
    set_id: str | None,
    artefact_type: type[_A],
    name: str | None,
) -> tuple[BackupSet, _A]:
    chosen, candidates = _pick_artefacts(sessions, stack, set_id, artefact_type, name)
    if len(candidates) > 1:
        names = ", ".join(a.name for a in candidates)
        raise UserError(
            f"set {chosen.id} holds several {_type_word(artefact_type)} artefacts ({names}); name one"
        )
    return chosen, candidates[0]


def _pick_artefacts(
    sessions: sessionmaker[Session],
    stack: Stack,
    set_id: str | None,
    artefact_type: type[_A],
    name: str | None,
) -> tuple[BackupSet, list[_A]]:
    """The set (`set_id`, or the newest restorable one holding such an artefact) and its artefacts
    of that type (named `name` when given); UserError when there is none."""
    if set_id:
        chosen = get_set(sessions, set_id)
        if not chosen.restorable:
            raise UserError(
                f"set {chosen.id} is {chosen.state}"
                + (f" ({chosen.error})" if chosen.error else "")
                + "; it cannot be restored: `shipyard backup list` shows the restorable sets"
            )
    else:
        chosen = None
    candidates = [a for a in (chosen.artefacts if chosen else []) if isinstance(a, artefact_type)]
    if chosen is None:
        for candidate in _restorable_sets(sessions, stack):
            if any(
                isinstance(a, artefact_type) and (name is None or _matches(a, name))
                for a in candidate.artefacts
            ):
                chosen = candidate
                candidates = [a for a in candidate.artefacts if isinstance(a, artefact_type)]
                break
        if chosen is None:
            raise _nothing_to_restore(stack, _type_word(artefact_type))
    if name is not None:
        candidates = [a for a in candidates if _matches(a, name)]
    if not candidates:
        raise UserError(
            f"set {chosen.id} holds no {_type_word(artefact_type)} artefact"
            + (f" named {name!r}" if name else "")
        )
    return chosen, candidates


def _restorable_sets(sessions: sessionmaker[Session], stack: Stack) -> list[BackupSet]:
    return [s for s in list_sets(sessions, stack=stack.name, environment=stack.environment) if s.restorable]


def _nothing_to_restore(stack: Stack, artefact_type: str) -> NotFoundError:
    return NotFoundError(
        f"no restorable backup set of {stack.name} ({stack.environment}) holds a {artefact_type} artefact;"
        " take one with `shipyard backup full`"
    )


def plan_restore(
    sessions: sessionmaker[Session],
    stack: Stack,
    what: Literal["database", "redis", "files"],
    *,
    set_id: str | None = None,
    name: str | None = None,
    into: Into = "scratch",
) -> dict[str, Any]:
    """What a restore would do, without doing it (for --dry-run)."""
    picked: tuple[BackupSet, Artefact]
    if what == "database":
        picked = _pick_set(sessions, stack, set_id, PostgresArtefact, name)
    elif what == "redis":
        picked = _pick_set(sessions, stack, set_id, RedisArtefact, name)
    else:
        picked = _pick_set(sessions, stack, set_id, FilesArtefact, name)
    chosen, artefact = picked
    return {
        "set": chosen.id,
        "set_state": chosen.state,
        "artefact": artefact.name,
        "snapshot_id": artefact.snapshot_id,
        "into": into,
        "safety_backup": SAFETY_BACKUP[what] if into == "live" else None,
    }


def _matches(artefact: Artefact, name: str) -> bool:
    """`name` is the artefact's name, or its datastore's, or its volume's path."""
    return name in (
        artefact.name,
        artefact.path if isinstance(artefact, FilesArtefact) else artefact.datastore,
    )


def _safety_backup(
    sessions: sessionmaker[Session], stack: Stack, kind: BackupWhat, base_dir: Path, actor: str,
    on_progress: ProgressHandler | None,
) -> str:  # fmt: skip
    safety = run_backup(stack, kind, sessions, base_dir=base_dir, actor=actor, on_progress=on_progress)
    return safety.id


def restore_database(
    sessions: sessionmaker[Session],
    stack: Stack,
    *,
    base_dir: Path,
    actor: str,
    set_id: str | None = None,
    datastore: str | None = None,
    into: Into = "scratch",
    yes: bool = False,
    target_dir: Path | None = None,
    port: int | None = None,
    jobs: int | None = None,
    on_progress: ProgressHandler | None = None,
) -> RestoreResult:
    """Restore a PostgreSQL artefact: into a new scratch server (left running), or over the live
    database (`--yes`, after a safety backup)."""
    if into == "live" and not yes:
        raise UserError(
            "--into live overwrites the live database: add --yes to confirm (a safety backup is taken first)"
        )
    chosen, artefact = _pick_set(sessions, stack, set_id, PostgresArtefact, datastore)
    target = f"{chosen.id}/{artefact.name}"
    jobs = jobs or default_jobs()
    repository = open_repository(stack, base_dir)
    live = _live_source(stack, "database", PostgresSource, artefact.datastore) if into == "live" else None
    _audit(sessions, actor, target, {"into": into, "artefact": artefact.name}, "started")
    safety: str | None = None
    dump_dir = Path(tempfile.mkdtemp(prefix="shipyard-restore-pg-"))
    try:
        if live is not None:
            repository.restore(artefact.snapshot_id, dump_dir)
            _check_dump(dump_dir, artefact, chosen.id)  # before the live database is touched
            safety = _safety_backup(sessions, stack, SAFETY_BACKUP["database"], base_dir, actor, on_progress)
            restore_postgres(
                dump_dir, host=live.host, port=live.port, user=live.user, database=live.database, jobs=jobs,
                env=live.env, what=f"{artefact.name}: pg_restore into the live database", clean=True,
            )  # fmt: skip
            result = RestoreResult(chosen.id, artefact.name, into, {"database": live.where()}, safety)
        else:
            scratch = _restore_into_scratch(repository, artefact, chosen.id, dump_dir, target_dir, port, jobs)
            result = RestoreResult(
                chosen.id,
                artefact.name,
                into,
                {
                    "host": scratch.host,
                    "port": scratch.port,
                    "user": scratch.user,
                    "database": artefact.database,
                    "data_dir": str(scratch.base),
                    "url": f"postgresql://{scratch.user}@{scratch.host}:{scratch.port}/{artefact.database}",
                },
                stop_command=scratch.stop_command(),
            )
    except BaseException as exc:
        _audit(
            sessions,
            actor,
            target,
            {"into": into, "error": getattr(exc, "message", type(exc).__name__), "safety_set": safety},
            "failed",
        )
        raise
    finally:
        shutil.rmtree(dump_dir, ignore_errors=True)
    _audit(sessions, actor, target, result.as_data(), "ok")
    return result


def _checked_tree(root: Path, artefact: FilesArtefact) -> TreeDigest:
    digest = tree_digest(root)
    if digest.sha256 != artefact.sha256:
        raise BackupError(f"{artefact.name}: the restored files do not match the manifest's checksum")
    return digest


def _check_dump(dump_dir: Path, artefact: PostgresArtefact, set_id: str) -> None:
    _check_digest(tree_digest(dump_dir), artefact, set_id)


def _check_digest(digest: TreeDigest | Future[TreeDigest], artefact: PostgresArtefact, set_id: str) -> None:
    found = digest.result() if isinstance(digest, Future) else digest
    if found.sha256 != artefact.sha256:
        raise BackupError(
            f"{artefact.name}: the restored dump does not match its checksum;"
            f" run `shipyard backup verify {set_id}`"
        )


def _restore_into_scratch(
    repository: ResticRepository,
    artefact: PostgresArtefact,
    set_id: str,
    dump_dir: Path,
    target_dir: Path | None,
    port: int | None,
    jobs: int,
) -> ScratchPostgres:
    """A new scratch server tuned for bulk loading, with the dump restored into it.

    The three slow steps overlap where they are independent: the server starts while restic
    restores the dump, and the dump's checksum is computed while pg_restore reads it (both from
    the page cache). A checksum mismatch still fails the restore: the server is stopped."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scratch-pg") as pool:
        starting = pool.submit(_start_with_database, target_dir, port, artefact.database)
        try:
            repository.restore(artefact.snapshot_id, dump_dir)
        except BaseException:
            _stop_when_started(starting)
            raise
        scratch = starting.result()
        try:
            digest = pool.submit(tree_digest, dump_dir)
            try:
                restore_postgres(
                    dump_dir, host=scratch.host, port=scratch.port, user=scratch.user,
                    database=artefact.database, jobs=jobs, env={},
                    what=f"{artefact.name}: pg_restore into scratch",
                )  # fmt: skip
            except BackupError:
                _check_digest(digest, artefact, set_id)  # a damaged dump is the better explanation
                raise
            finally:
                wait([digest])  # never leave it reading a directory that is about to be removed
            _check_digest(digest, artefact, set_id)
        except BaseException:
            scratch.stop()
            raise
    return scratch


def _start_with_database(target_dir: Path | None, port: int | None, database: str) -> ScratchPostgres:
    scratch = start_scratch_postgres(target_dir, port, bulk_load=True)
    try:
        with psycopg.connect(
            host=scratch.host, port=scratch.port, user=scratch.user, dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except BaseException:
        scratch.stop()
        raise
    return scratch


def _stop_when_started(starting: Future[ScratchPostgres]) -> None:
    with contextlib.suppress(Exception):
        starting.result().stop()


def restore_redis(
    sessions: sessionmaker[Session],
    stack: Stack,
    *,
    base_dir: Path,
    actor: str,
    set_id: str | None = None,
    datastore: str | None = None,
    into: Into = "scratch",
    yes: bool = False,
    target_dir: Path | None = None,
    port: int | None = None,
    on_progress: ProgressHandler | None = None,
) -> RestoreResult:
    """Restore a Redis artefact: a scratch redis-server on the snapshot (left running), or the
    live server's keys replaced by the snapshot's (FLUSHALL, then MIGRATE COPY REPLACE from a
    scratch server, so the live server keeps running and needs no disk access)."""
    if into == "live" and not yes:
        raise UserError(
            "--into live replaces every key of the live Redis: add --yes to confirm"
            " (a safety backup is taken first)"
        )
    chosen, artefact = _pick_set(sessions, stack, set_id, RedisArtefact, datastore)
    target = f"{chosen.id}/{artefact.name}"
    repository = open_repository(stack, base_dir)
    live = _live_source(stack, "redis", RedisSource, artefact.datastore) if into == "live" else None
    _audit(sessions, actor, target, {"into": into, "artefact": artefact.name}, "started")
    safety: str | None = None
    base = target_dir or Path(tempfile.mkdtemp(prefix="shipyard-restore-redis-"))
    try:
        base.mkdir(parents=True, exist_ok=True)
        repository.restore(artefact.snapshot_id, base)
        scratch = start_scratch_redis(base, artefact.file, None if live else port)
        if live is None:
            result = RestoreResult(
                chosen.id, artefact.name, into,
                {"host": scratch.host, "port": scratch.port, "dir": str(base), "pid": scratch.pid},
                stop_command=scratch.stop_command(),
            )  # fmt: skip
        else:
            try:
                safety = _safety_backup(sessions, stack, SAFETY_BACKUP["redis"], base_dir, actor, on_progress)
                copied = _replace_keys(scratch.host, scratch.port, live)
            finally:
                scratch.stop()
                if target_dir is None:
                    shutil.rmtree(base, ignore_errors=True)
            result = RestoreResult(
                chosen.id, artefact.name, into, {"redis": live.where(), "keys": copied}, safety
            )
    except BaseException as exc:
        _audit(
            sessions,
            actor,
            target,
            {"into": into, "error": getattr(exc, "message", type(exc).__name__), "safety_set": safety},
            "failed",
        )
        raise
    _audit(sessions, actor, target, result.as_data(), "ok")
    return result


def _replace_keys(scratch_host: str, scratch_port: int, live: RedisSource, batch: int = 500) -> int:
    with (
        RespClient(scratch_host, scratch_port) as source,
        RespClient(live.host, live.port, password=live.password) as dest,
    ):
        keys = source.scan_keys()
        dest.call(b"FLUSHALL")
        auth: list[bytes | str | int] = [b"AUTH", live.password] if live.password else []
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            source.call(
                b"MIGRATE", live.host, live.port, b"", 0, 30000, b"COPY", b"REPLACE", *auth, b"KEYS", *chunk
            )
        return len(keys)


def restore_files(
    sessions: sessionmaker[Session],
    stack: Stack,
    *,
    base_dir: Path,
    actor: str,
    set_id: str | None = None,
    path: str | None = None,
    into: Into = "scratch",
    yes: bool = False,
    target_dir: Path | None = None,
    on_progress: ProgressHandler | None = None,
    safety_set: str | None = None,
) -> RestoreResult:
    """Restore a file tree: into a directory (scratch), or in place of the live one (`--yes`,
    after a safety backup; the old tree is swapped out, then removed).

    safety_set: a safety backup already taken of the live files (`restore_volumes` takes one
    for all of them); none is taken then.
    """
    if into == "live" and not yes:
        raise UserError(
            "--into live replaces the live directory: add --yes to confirm (a safety backup is taken first)"
        )
    chosen, artefact = _pick_set(sessions, stack, set_id, FilesArtefact, path)
    target = f"{chosen.id}/{artefact.name}"
    repository = open_repository(stack, base_dir)
    live_path = Path(artefact.path)
    if into == "live":
        _require_volume(stack, live_path)
    _audit(sessions, actor, target, {"into": into, "artefact": artefact.name}, "started")
    safety: str | None = safety_set
    try:
        if into == "scratch":
            destination = target_dir or Path(tempfile.mkdtemp(prefix="shipyard-restore-files-"))
            if destination.exists() and any(destination.iterdir()):
                raise UserError(f"--target-dir {destination} is not empty; give an empty or new directory")
            destination.mkdir(parents=True, exist_ok=True)
            repository.restore(artefact.snapshot_id, destination)
            digest = _checked_tree(destination, artefact)
        else:
            safety = safety or _safety_backup(
                sessions, stack, SAFETY_BACKUP["files"], base_dir, actor, on_progress
            )
            staging = live_path.with_name(f".{live_path.name}.shipyard-restore-{chosen.id}")
            old = live_path.with_name(f".{live_path.name}.shipyard-old-{chosen.id}")
            shutil.rmtree(staging, ignore_errors=True)
            repository.restore(artefact.snapshot_id, staging)
            try:
                digest = _checked_tree(staging, artefact)  # before the live tree is touched
            except BackupError:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if live_path.exists():
                os.replace(live_path, old)
            os.replace(staging, live_path)
            shutil.rmtree(old, ignore_errors=True)
            destination = live_path
        result = RestoreResult(
            chosen.id, artefact.name, into, {"path": str(destination), "files": digest.files}, safety
        )
    except BaseException as exc:
        _audit(
            sessions,
            actor,
            target,
            {"into": into, "error": getattr(exc, "message", type(exc).__name__), "safety_set": safety},
            "failed",
        )
        raise
    _audit(sessions, actor, target, result.as_data(), "ok")
    return result


def restore_volumes(
    sessions: sessionmaker[Session],
    stack: Stack,
    *,
    base_dir: Path,
    actor: str,
    set_id: str | None = None,
    into: Into = "scratch",
    yes: bool = False,
    target_dir: Path | None = None,
    on_progress: ProgressHandler | None = None,
) -> list[RestoreResult]:
    """Every file volume of a set: each under `target_dir` at its own path (scratch), or in place
    of the live directories (`--yes`, after one safety backup of them all)."""
    if into == "live" and not yes:
        raise UserError(
            "--into live replaces the live directories: add --yes to confirm (a safety backup is taken first)"
        )
    chosen, volumes = _pick_artefacts(sessions, stack, set_id, FilesArtefact, None)
    if into == "live":
        for volume in volumes:  # all of them before anything is touched
            _require_volume(stack, Path(volume.path))
    base: Path | None = None  # live: each volume goes back to its own path
    if into == "scratch":
        base = target_dir or Path(tempfile.mkdtemp(prefix="shipyard-restore-volumes-"))
        if base.exists() and any(base.iterdir()):
            raise UserError(f"--target-dir {base} is not empty; give an empty or new directory")
    safety = (
        _safety_backup(sessions, stack, SAFETY_BACKUP["volumes"], base_dir, actor, on_progress)
        if into == "live"
        else None
    )
    return [
        restore_files(
            sessions,
            stack,
            base_dir=base_dir,
            actor=actor,
            set_id=chosen.id,
            path=volume.path,
            into=into,
            yes=yes,
            target_dir=None if base is None else base / volume.path.lstrip("/"),
            on_progress=on_progress,
            safety_set=safety,
        )
        for volume in volumes
    ]


def plan_restore_volumes(
    sessions: sessionmaker[Session], stack: Stack, *, set_id: str | None = None, into: Into = "scratch"
) -> dict[str, Any]:
    """What `restore_volumes` would do, without doing it (for --dry-run)."""
    chosen, volumes = _pick_artefacts(sessions, stack, set_id, FilesArtefact, None)
    return {
        "set": chosen.id,
        "set_state": chosen.state,
        "volumes": [{"artefact": v.name, "path": v.path, "snapshot_id": v.snapshot_id} for v in volumes],
        "into": into,
        "safety_backup": SAFETY_BACKUP["volumes"] if into == "live" else None,
    }


def _require_volume(stack: Stack, path: Path) -> None:
    if not any(isinstance(s, FilesSource) and s.path == path for s in sources_of(stack, "files")):
        raise UserError(f"{path} is not among backup.sources.volumes of this spec")
