"""Restoring artefacts of a backup set: into scratch servers/directories to look at, or over the
live datastore or directory (only when asked with --yes, after a safety backup of what is there).

Every restore checks the artefact's checksum against the manifest before it touches anything live
(and before a safety backup is taken: a restore that cannot go on needs none), and a scratch copy
that fails its check is stopped and removed, never left to be used. When the data itself is wrong
(a checksum mismatch, or restic answering but not giving the artefact back whole) the set is
demoted on the spot (`record_damage`): the artefact is not offered again, the set's intact ones
stay restorable. When only the means failed (the repository unreachable, a wrong password:
`RepositoryError`) nothing is demoted.

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
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import BackupError, NotFoundError, RepositoryError, ShipyardError, UserError, VerificationError
from ..spec import BackupWhat, Stack
from ..state import record_audit
from ._connect import FilesSource, PostgresSource, RedisSource, sources_of
from ._manifest import Artefact, FilesArtefact, PostgresArtefact, RedisArtefact
from ._resp import RespClient
from ._restic import ResticRepository
from ._run import ProgressHandler, default_jobs, open_repository, run_backup
from ._scratch import ScratchPostgres, start_scratch_postgres, start_scratch_redis
from ._sets import BackupSet, get_set, list_sets, record_damage
from ._sources import TreeDigest, file_sha256, restore_postgres, tree_digest

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


class _Attempt:
    """One artefact's restore as the audit log and the set's health see it: `started`, then `ok` or
    `failed` (with the safety set taken so far, and the state the set was demoted to, if it was)."""

    def __init__(
        self, sessions: sessionmaker[Session], actor: str, chosen: BackupSet, artefact: Artefact, into: Into
    ) -> None:
        self.sessions = sessions
        self.actor = actor
        self.chosen = chosen
        self.artefact = artefact
        self.into = into
        self.target = f"{chosen.id}/{artefact.name}"
        self.safety: str | None = None
        self.demoted: str | None = None

    def start(self) -> None:
        _audit(
            self.sessions,
            self.actor,
            self.target,
            {"into": self.into, "artefact": self.artefact.name},
            "started",
        )

    def ok(self, result: RestoreResult) -> None:
        _audit(self.sessions, self.actor, self.target, result.as_data(), "ok")

    def failed(self, exc: BaseException) -> None:
        after: dict[str, Any] = {
            "into": self.into,
            "artefact": self.artefact.name,
            "error": getattr(exc, "message", type(exc).__name__),
            "safety_set": self.safety,
        }
        if self.demoted is not None:
            after["demoted"] = self.demoted
        _audit(self.sessions, self.actor, self.target, after, "failed")

    def fetch(self, repository: ResticRepository, target: Path) -> None:
        """restic restores the artefact's snapshot into `target`. The repository answering but
        not giving this artefact's data back whole is damage (see `_verify._restored`); the
        repository not answering at all (RepositoryError) is not: the means failed, not the data."""
        snapshot = self.artefact.snapshot_id
        try:
            repository.restore(snapshot, target)
        except RepositoryError:
            raise
        except BackupError as exc:
            raise self.damaged(
                f"restic could not restore its snapshot {snapshot[:8]}: {exc.message}"
            ) from None

    def damaged(self, detail: str) -> VerificationError:
        """The data itself is wrong: demote the set so that no one is offered this artefact again,
        and the error that says so and what to do."""
        set_id, name = self.chosen.id, self.artefact.name
        try:
            self.demoted = record_damage(self.sessions, set_id, name, detail).state
            demoted = (
                f"set {set_id} is now {self.demoted} and {name} is no longer offered for restore"
                if self.demoted != "failed"
                else f"set {set_id} is now failed (nothing in it is left to restore)"
            )
        except (ShipyardError, SQLAlchemyError) as exc:  # the damage must still be reported
            demoted = f"marking set {set_id} damaged failed too ({getattr(exc, 'message', exc)})"
        untouched = "; nothing live was touched" if self.into == "live" else ""
        return VerificationError(
            f"{name} of set {set_id}: {detail}{untouched}; {demoted}. Run `shipyard backup verify"
            f" {set_id}` to check the rest of the set, and restore {name} from another set"
            " (`shipyard backup list`; a restore without --set picks the newest intact one)",
            name,
        )


def _pick_set(
    sessions: sessionmaker[Session],
    stack: Stack,
    set_id: str | None,
    artefact_type: type[_A],
    name: str | None,
) -> tuple[BackupSet, _A]:
    chosen, candidates = _pick_artefacts(sessions, stack, set_id, artefact_type, name, one=True)
    return chosen, candidates[0]


def _pick_artefacts(
    sessions: sessionmaker[Session],
    stack: Stack,
    set_id: str | None,
    artefact_type: type[_A],
    name: str | None,
    *,
    one: bool = False,
) -> tuple[BackupSet, list[_A]]:
    """The set and its artefacts of that type (named `name` when given; exactly one with `one`).

    Without `set_id`: the newest restorable set in which every such artefact is intact, so that a
    damaged artefact is skipped for an older copy, and an intact one of a `partial` set is still
    chosen. With `set_id`: that set, refused (UserError) when it cannot be restored or the
    artefact was found damaged. UserError or NotFoundError when there is none."""
    word = _type_word(artefact_type)

    def wanted(backup_set: BackupSet) -> list[_A]:
        return [
            a for a in backup_set.artefacts
            if isinstance(a, artefact_type) and (name is None or _matches(a, name))
        ]  # fmt: skip

    if set_id:
        chosen = get_set(sessions, set_id)
        if not chosen.restorable:
            raise UserError(
                f"set {chosen.id} is {chosen.state}"
                + (f" ({chosen.error})" if chosen.error else "")
                + "; it cannot be restored: `shipyard backup list` shows the restorable sets"
            )
        candidates = wanted(chosen)
        if not candidates:
            raise UserError(
                f"set {chosen.id} holds no {word} artefact" + (f" named {name!r}" if name else "")
            )
    else:
        for backup_set in _restorable_sets(sessions, stack):
            found = wanted(backup_set)
            if found and all(backup_set.intact(a.name) for a in found):
                chosen, candidates = backup_set, found
                break
        else:
            raise _nothing_to_restore(stack, word)
    if one and len(candidates) > 1:
        names = ", ".join(a.name for a in candidates)
        raise UserError(f"set {chosen.id} holds several {word} artefacts ({names}); name one")
    damaged = [a.name for a in candidates if not chosen.intact(a.name)]
    if damaged:
        details = "; ".join(f"{n}: {h.detail}" for n in damaged if (h := chosen.health.get(n)) is not None)
        raise UserError(
            f"{', '.join(damaged)} of set {chosen.id} {'is' if len(damaged) == 1 else 'are'} damaged"
            + (f" ({details})" if details else "")
            + ": it cannot be restored from this set; `shipyard backup list` shows the restorable sets,"
            " and a restore without --set picks the newest intact copy"
        )
    return chosen, candidates


def _restorable_sets(sessions: sessionmaker[Session], stack: Stack) -> list[BackupSet]:
    return [s for s in list_sets(sessions, stack=stack.name, environment=stack.environment) if s.restorable]


def _nothing_to_restore(stack: Stack, artefact_type: str) -> NotFoundError:
    return NotFoundError(
        f"no restorable backup set of {stack.name} ({stack.environment}) holds an intact {artefact_type}"
        " artefact; take one with `shipyard backup full`"
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
    """What a restore would do, without doing it (for --dry-run): the same pick as the restore."""
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


def _mismatch(expected: str, found: str) -> str:
    return f"sha256 {expected[:12]}… in the manifest, {found[:12]}… restored"


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
    database (`--yes`, after its checksum matched, then a safety backup)."""
    if into == "live" and not yes:
        raise UserError(
            "--into live overwrites the live database: add --yes to confirm (a safety backup is taken first)"
        )
    chosen, artefact = _pick_set(sessions, stack, set_id, PostgresArtefact, datastore)
    jobs = jobs or default_jobs()
    repository = open_repository(stack, base_dir)
    live = _live_source(stack, "database", PostgresSource, artefact.datastore) if into == "live" else None
    attempt = _Attempt(sessions, actor, chosen, artefact, into)
    attempt.start()
    dump_dir = Path(tempfile.mkdtemp(prefix="shipyard-restore-pg-"))
    try:
        if live is not None:
            attempt.fetch(repository, dump_dir)
            _check_digest(attempt, tree_digest(dump_dir))  # before the live database is touched
            attempt.safety = _safety_backup(
                sessions, stack, SAFETY_BACKUP["database"], base_dir, actor, on_progress
            )
            restore_postgres(
                dump_dir, host=live.host, port=live.port, user=live.user, database=live.database, jobs=jobs,
                env=live.env, what=f"{artefact.name}: pg_restore into the live database", clean=True,
            )  # fmt: skip
            result = RestoreResult(chosen.id, artefact.name, into, {"database": live.where()}, attempt.safety)
        else:
            scratch = _restore_into_scratch(attempt, repository, artefact, dump_dir, target_dir, port, jobs)
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
        attempt.failed(exc)
        raise
    finally:
        shutil.rmtree(dump_dir, ignore_errors=True)
    attempt.ok(result)
    return result


def _check_digest(attempt: _Attempt, digest: TreeDigest | Future[TreeDigest]) -> None:
    """The restored dump against the manifest's checksum; a mismatch demotes the set."""
    found = digest.result() if isinstance(digest, Future) else digest
    expected = attempt.artefact.sha256
    if found.sha256 != expected:
        raise attempt.damaged(
            f"the restored dump does not match its checksum ({_mismatch(expected, found.sha256)})"
        )


def _restore_into_scratch(
    attempt: _Attempt,
    repository: ResticRepository,
    artefact: PostgresArtefact,
    dump_dir: Path,
    target_dir: Path | None,
    port: int | None,
    jobs: int,
) -> ScratchPostgres:
    """A new scratch server tuned for bulk loading, with the dump restored into it.

    The three slow steps overlap where they are independent: the server starts while restic
    restores the dump, and the dump's checksum is computed while pg_restore reads it (both from
    the page cache). That is safe only because the server is scratch, not live: a checksum
    mismatch still fails the restore, and the server is stopped, never handed out."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scratch-pg") as pool:
        starting = pool.submit(_start_with_database, target_dir, port, artefact.database)
        try:
            attempt.fetch(repository, dump_dir)
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
                _check_digest(attempt, digest)  # a damaged dump is the better explanation
                raise
            finally:
                wait([digest])  # never leave it reading a directory that is about to be removed
            _check_digest(attempt, digest)
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
    scratch server, so the live server keeps running and needs no disk access).

    The RDB's checksum is checked before any server loads it: before a safety backup, before
    FLUSHALL, and before a scratch server is started on it."""
    if into == "live" and not yes:
        raise UserError(
            "--into live replaces every key of the live Redis: add --yes to confirm"
            " (a safety backup is taken first)"
        )
    chosen, artefact = _pick_set(sessions, stack, set_id, RedisArtefact, datastore)
    repository = open_repository(stack, base_dir)
    live = _live_source(stack, "redis", RedisSource, artefact.datastore) if into == "live" else None
    attempt = _Attempt(sessions, actor, chosen, artefact, into)
    attempt.start()
    base = target_dir or Path(tempfile.mkdtemp(prefix="shipyard-restore-redis-"))
    try:
        try:
            base.mkdir(parents=True, exist_ok=True)
            attempt.fetch(repository, base)
            _check_rdb(attempt, base / artefact.file)
            scratch = start_scratch_redis(base, artefact.file, None if live else port)
        except BaseException:
            if target_dir is None:
                shutil.rmtree(base, ignore_errors=True)
            else:  # restored there by us: not left to be loaded by hand
                (base / artefact.file).unlink(missing_ok=True)
            raise
        if live is None:
            result = RestoreResult(
                chosen.id, artefact.name, into,
                {"host": scratch.host, "port": scratch.port, "dir": str(base), "pid": scratch.pid},
                stop_command=scratch.stop_command(),
            )  # fmt: skip
        else:
            try:
                attempt.safety = _safety_backup(
                    sessions, stack, SAFETY_BACKUP["redis"], base_dir, actor, on_progress
                )
                copied = _replace_keys(scratch.host, scratch.port, live)
            finally:
                scratch.stop()
                if target_dir is None:
                    shutil.rmtree(base, ignore_errors=True)
            result = RestoreResult(
                chosen.id, artefact.name, into, {"redis": live.where(), "keys": copied}, attempt.safety
            )
    except BaseException as exc:
        attempt.failed(exc)
        raise
    attempt.ok(result)
    return result


def _check_rdb(attempt: _Attempt, rdb: Path) -> None:
    """The restored RDB file against the manifest's checksum; a mismatch demotes the set."""
    snapshot = attempt.artefact.snapshot_id
    if not rdb.is_file():
        raise attempt.damaged(f"its snapshot {snapshot[:8]} holds no {rdb.name}")
    found, expected = file_sha256(rdb), attempt.artefact.sha256
    if found != expected:
        raise attempt.damaged(
            f"the restored snapshot {rdb.name} does not match its checksum ({_mismatch(expected, found)})"
        )


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


@dataclass
class _Staged:
    """A file tree restored next to its live directory and checked, ready to be swapped in."""

    attempt: _Attempt
    live_path: Path
    staging: Path
    digest: TreeDigest


def _stage_tree(attempt: _Attempt, repository: ResticRepository, artefact: FilesArtefact) -> _Staged:
    """Restore the tree beside the live one (same filesystem: the swap is a rename) and check it
    against the manifest; nothing live is touched, and a tree that fails is removed."""
    live_path = Path(artefact.path)
    staging = live_path.with_name(f".{live_path.name}.shipyard-restore-{attempt.chosen.id}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        attempt.fetch(repository, staging)
        digest = _checked_tree(attempt, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _Staged(attempt, live_path, staging, digest)


def _swap_in(staged: _Staged) -> None:
    old = staged.live_path.with_name(f".{staged.live_path.name}.shipyard-old-{staged.attempt.chosen.id}")
    if staged.live_path.exists():
        os.replace(staged.live_path, old)
    os.replace(staged.staging, staged.live_path)
    shutil.rmtree(old, ignore_errors=True)


def _checked_tree(attempt: _Attempt, root: Path) -> TreeDigest:
    artefact = attempt.artefact
    digest = tree_digest(root)
    if digest.sha256 != artefact.sha256:
        mismatch = _mismatch(artefact.sha256, digest.sha256)
        raise attempt.damaged(f"the restored files do not match the manifest's checksum ({mismatch})")
    return digest


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
    """Restore a file tree: into a directory (scratch), or in place of the live one (`--yes`: the
    tree is restored beside it and checked, then a safety backup is taken, then the old tree is
    swapped out and removed).

    safety_set: a safety backup already taken of the live files; none is taken then.
    """
    if into == "live" and not yes:
        raise UserError(
            "--into live replaces the live directory: add --yes to confirm (a safety backup is taken first)"
        )
    chosen, artefact = _pick_set(sessions, stack, set_id, FilesArtefact, path)
    repository = open_repository(stack, base_dir)
    if into == "live":
        _require_volume(stack, Path(artefact.path))
    attempt = _Attempt(sessions, actor, chosen, artefact, into)
    attempt.safety = safety_set
    attempt.start()
    try:
        if into == "scratch":
            destination = target_dir or Path(tempfile.mkdtemp(prefix="shipyard-restore-files-"))
            if destination.exists() and any(destination.iterdir()):
                raise UserError(f"--target-dir {destination} is not empty; give an empty or new directory")
            destination.mkdir(parents=True, exist_ok=True)
            try:
                attempt.fetch(repository, destination)
                digest = _checked_tree(attempt, destination)
            except BaseException:
                _empty(destination, remove=target_dir is None)  # it was empty: nothing to keep
                raise
        else:
            staged = _stage_tree(attempt, repository, artefact)  # before the live tree is touched
            try:
                attempt.safety = attempt.safety or _safety_backup(
                    sessions, stack, SAFETY_BACKUP["files"], base_dir, actor, on_progress
                )
                _swap_in(staged)
            except BaseException:
                shutil.rmtree(staged.staging, ignore_errors=True)
                raise
            destination, digest = staged.live_path, staged.digest
        result = RestoreResult(
            chosen.id, artefact.name, into, {"path": str(destination), "files": digest.files}, attempt.safety
        )
    except BaseException as exc:
        attempt.failed(exc)
        raise
    attempt.ok(result)
    return result


def _empty(directory: Path, *, remove: bool) -> None:
    """Remove what a failed restore put into `directory` (and the directory itself with `remove`)."""
    if remove:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for entry in directory.iterdir() if directory.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


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
    of the live directories (`--yes`: every volume is restored beside its live directory and
    checked, then one safety backup of them all is taken, then each is swapped in)."""
    if into == "live" and not yes:
        raise UserError(
            "--into live replaces the live directories: add --yes to confirm (a safety backup is taken first)"
        )
    chosen, volumes = _pick_artefacts(sessions, stack, set_id, FilesArtefact, None)
    if into == "live":
        for volume in volumes:  # all of them before anything is touched
            _require_volume(stack, Path(volume.path))
        return _restore_volumes_live(sessions, stack, chosen, volumes, base_dir, actor, on_progress)
    base = target_dir or Path(tempfile.mkdtemp(prefix="shipyard-restore-volumes-"))
    if base.exists() and any(base.iterdir()):
        raise UserError(f"--target-dir {base} is not empty; give an empty or new directory")
    return [
        restore_files(
            sessions,
            stack,
            base_dir=base_dir,
            actor=actor,
            set_id=chosen.id,
            path=volume.path,
            into=into,
            target_dir=base / volume.path.lstrip("/"),
            on_progress=on_progress,
        )
        for volume in volumes
    ]


def _restore_volumes_live(
    sessions: sessionmaker[Session],
    stack: Stack,
    chosen: BackupSet,
    volumes: list[FilesArtefact],
    base_dir: Path,
    actor: str,
    on_progress: ProgressHandler | None,
) -> list[RestoreResult]:
    """Every volume staged and checked first, so that one damaged volume leaves every live
    directory as it was; then one safety backup, then the swaps."""
    repository = open_repository(stack, base_dir)
    attempts = [_Attempt(sessions, actor, chosen, volume, "live") for volume in volumes]
    staged: list[_Staged] = []
    results: list[RestoreResult] = []
    failing: _Attempt | None = None  # the volume whose step failed; None: the safety backup
    try:
        for attempt, volume in zip(attempts, volumes, strict=True):
            failing = attempt
            attempt.start()
            staged.append(_stage_tree(attempt, repository, volume))
        failing = None
        safety = _safety_backup(sessions, stack, SAFETY_BACKUP["volumes"], base_dir, actor, on_progress)
        for attempt in attempts:
            attempt.safety = safety
        for ready in staged:
            failing = ready.attempt
            _swap_in(ready)
            results.append(
                RestoreResult(
                    chosen.id, ready.attempt.artefact.name, "live",
                    {"path": str(ready.live_path), "files": ready.digest.files}, safety,
                )
            )  # fmt: skip
    except BaseException as exc:
        for ready in staged[len(results) :]:
            shutil.rmtree(ready.staging, ignore_errors=True)
        for index, attempt in enumerate(attempts):
            if index < len(results):
                attempt.ok(results[index])
            elif attempt is failing or (failing is None and index < len(staged)):
                attempt.failed(exc)
            elif failing is not None and index < len(staged):
                attempt.failed(ShipyardError(f"not restored: {failing.artefact.name} of the same set failed"))
        raise
    for attempt, result in zip(attempts, results, strict=True):
        attempt.ok(result)
    return results


def plan_restore_volumes(
    sessions: sessionmaker[Session], stack: Stack, *, set_id: str | None = None, into: Into = "scratch"
) -> dict[str, Any]:
    """What `restore_volumes` would do, without doing it (for --dry-run): the same pick."""
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
