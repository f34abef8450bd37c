"""Taking a backup set: every source read, stored in restic, and recorded, or the set marked failed."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import BackupError, ShipyardError
from ..locks import Lease, LockHeldError
from ..monitor import Event, Notifier
from ..spec import BackupWhat, Stack
from ..state import record_audit, utcnow
from ._catalog import store_manifest
from ._connect import (
    FilesSource,
    PostgresSource,
    RedisSource,
    Source,
    repository_env,
    repository_location,
    repository_password,
    sources_of,
)
from ._manifest import Artefact, FilesArtefact, Manifest, PostgresArtefact, RedisArtefact
from ._restic import BackupProgress, BackupSummary, ResticRepository, redact_url
from ._sets import BackupSet, SetRecorder, get_set, reap_abandoned, temp_prefix
from ._sources import dump_postgres, file_sha256, postgres_snapshot, snapshot_redis, tree_digest
from ._tools import find_tool, tool_version

PAUSE_ENV = "SHIPYARD_TEST_PAUSE_AT"
"""Tests only: the phase at which a backup waits (until killed), to kill it at a known point.
An `...:upload` phase waits at restic's first progress report (restic running, its lock taken),
or right after restic if it finished before reporting (the snapshot written, the set not)."""

ProgressHandler = Callable[[str, BackupProgress], None]
"""Called with (artefact name, restic's progress) while an artefact uploads. Uploads run on
threads of their own; the calls (progress and phase) are serialised, never two at once."""
PhaseHandler = Callable[[str], None]
"""Called with each phase as the backup enters it, e.g. `postgres:db:dump`, and `<artefact>:done`."""


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def open_repository(
    stack: Stack, base_dir: Path, environ: Mapping[str, str] | None = None
) -> ResticRepository:
    """The stack's restic repository; the password from the spec's reference, S3 keys from the env."""
    environ = os.environ if environ is None else environ
    find_tool("restic")
    return ResticRepository(
        repository_location(stack, base_dir),
        repository_password(stack, environ),
        env=repository_env(stack, environ),
    )


def prepare_repository(sessions: sessionmaker[Session], repository: ResticRepository) -> None:
    """Create the repository if it is missing, else clear the stale locks a killed restic left.

    Under a lease: two `restic init` at once on one repository (0.14) both succeed and leave it
    with two master keys and one config, unreadable ("config or key ... is damaged")."""
    lease = Lease(sessions, f"backup-repository:{repository.url}"[:256], ttl_s=120)
    deadline = time.monotonic() + 120
    while True:
        try:
            lease.acquire()
            break
        except (LockHeldError, IntegrityError) as exc:
            # IntegrityError: Lease.acquire loses a race when the holder releases between its
            # insert and its read and a third process inserts first; that is only "held", too.
            if time.monotonic() > deadline:
                raise BackupError(
                    f"the backup repository is being prepared by another process: {exc}"
                ) from None
            time.sleep(0.2)
    try:
        if repository.exists():
            repository.unlock()
        else:
            repository.init()
    finally:
        lease.release()


def restic_host(stack: Stack) -> str:
    return f"{stack.name}-{stack.environment}" if stack.environment else stack.name


def tools_for(sources: list[Source]) -> list[str]:
    tools = ["restic"]
    if any(isinstance(s, PostgresSource) for s in sources):
        tools += ["pg_dump", "pg_restore"]
    if any(isinstance(s, RedisSource) for s in sources):
        tools += ["redis-cli"]
    return tools


def plan_backup(stack: Stack, kind: BackupWhat, base_dir: Path) -> dict[str, Any]:
    """What a backup of `kind` would do, without touching anything (for --dry-run)."""
    sources = sources_of(stack, kind)
    missing: list[str] = []
    for tool in tools_for(sources):
        try:
            find_tool(tool)
        except ShipyardError as exc:
            missing.append(exc.message)
    return {
        "stack": stack.name,
        "environment": stack.environment,
        "kind": kind,
        "repository": redact_url(repository_location(stack, base_dir)),
        "artefacts": [_describe(s) for s in sources],
        "missing_tools": missing,
    }


def _describe(source: Source) -> dict[str, Any]:
    if isinstance(source, PostgresSource):
        return {"name": source.artefact, "type": "postgres", "from": source.where()}
    if isinstance(source, RedisSource):
        return {"name": source.artefact, "type": "redis", "from": source.where()}
    return {"name": source.artefact, "type": "files", "from": str(source.path)}


def _pause_if_asked(phase: str) -> None:
    if os.environ.get(PAUSE_ENV) == phase:
        while True:  # until the test kills this process
            time.sleep(0.1)


_PHASE_WIDTH = 128
"""The width of the state store's backup_sets.phase column (PostgreSQL enforces it)."""


class _Cancelled(Exception):
    """A source stopped because another one failed (or the backup was interrupted)."""


@dataclass
class _Run:
    """One backup set being taken. The sources are read one after another on the calling thread
    (a dump or snapshot there dies with it on Ctrl-C), and each artefact's upload (restic) runs on
    its own thread, so the file trees upload while the database is dumped. Recording, manifest
    changes and the caller's callbacks are serialised under one lock."""

    stack: Stack
    repository: ResticRepository
    recorder: SetRecorder
    manifest: Manifest
    workdir: Path
    jobs: int
    on_progress: ProgressHandler | None
    on_phase: PhaseHandler | None
    order: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _active: dict[str, str] = field(default_factory=dict)
    _uploads: list[threading.Thread] = field(default_factory=list)

    def enter(self, phase: str) -> None:
        if self.cancel.is_set():
            raise _Cancelled(phase)
        artefact = phase.rpartition(":")[0]
        with self._lock:
            self._active[artefact] = phase
            self.recorder.phase(self._current_phase(), self.manifest)
            if self.on_phase is not None:
                self.on_phase(phase)
        if not phase.endswith(":upload"):
            _pause_if_asked(phase)

    def _current_phase(self) -> str:
        """Every artefact's phase in progress, in source order: what an abandoned set stopped in."""
        rank = {name: index for index, name in enumerate(self.order)}
        phases = ", ".join(self._active[a] for a in sorted(self._active, key=lambda a: rank.get(a, 0)))
        return phases if len(phases) <= _PHASE_WIDTH else phases[: _PHASE_WIDTH - 1] + "…"

    def upload(self, name: str, path: Path) -> BackupSummary:
        phase = f"{name}:upload"
        self.enter(phase)
        seen_progress = False

        def progress(update: BackupProgress) -> None:
            nonlocal seen_progress
            if not seen_progress:
                seen_progress = True
                _pause_if_asked(phase)  # restic is running, its lock taken
            if self.on_progress is not None:
                with self._lock:
                    self.on_progress(name, update)

        summary = self.repository.backup_path(
            path,
            tags=["shipyard", f"set:{self.recorder.id}", f"artefact:{name}"],
            host=restic_host(self.stack),
            on_progress=progress,
            cancel=self.cancel,
        )
        if not seen_progress:  # restic finished before its first report: stop after it instead
            _pause_if_asked(phase)
        return summary

    def in_background(self, name: str, work: Callable[[], None]) -> None:
        """Run `work` (an artefact's upload and record) on its own thread; the first failure
        cancels the rest."""

        def body() -> None:
            try:
                work()
            except BaseException as exc:  # handed to the caller's thread by wait()
                self.fail(exc)

        thread = threading.Thread(target=body, name=f"backup {name}", daemon=True)
        self._uploads.append(thread)
        thread.start()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            # Only the first failure is the cause: the others are its cancellation.
            if not self.cancel.is_set() and not isinstance(exc, _Cancelled):
                self.errors.append(exc)
            self.cancel.set()

    def wait(self) -> None:
        """Wait for every upload; raise the first failure (after the others have stopped)."""
        for thread in self._uploads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def stop(self, exc: BaseException) -> BaseException:
        """Cancel what still runs, wait for it to stop (no restic left behind), and return the
        failure that caused it all."""
        self.fail(exc)
        for thread in self._uploads:
            thread.join()
        return self.errors[0] if self.errors else exc

    def record(self, artefact: Artefact) -> None:
        if self.cancel.is_set():  # another source failed: this set will not be complete
            raise _Cancelled(artefact.name)
        name = artefact.name
        with self._lock:
            rank = {a: index for index, a in enumerate(self.order)}
            artefacts = sorted([*self.manifest.artefacts, artefact], key=lambda a: rank.get(a.name, 0))
            self.manifest = self.manifest.model_copy(update={"artefacts": artefacts})
            self._active[name] = f"{name}:done"
            self.recorder.phase(self._current_phase(), self.manifest)
            del self._active[name]
            if self.on_phase is not None:
                self.on_phase(f"{name}:done")

    def finished(self) -> Manifest:
        """The manifest, stamped with its end (the run is over: no lock needed)."""
        self.manifest = self.manifest.model_copy(update={"finished_at": utcnow().isoformat()})
        return self.manifest

    def postgres(self, source: PostgresSource) -> None:
        started = time.monotonic()
        dump_dir = self.workdir / f"postgres-{source.name}"
        with postgres_snapshot(source) as snapshot:
            self.enter(f"{source.artefact}:dump")
            dump_postgres(source, snapshot, dump_dir, self.jobs)

        def store() -> None:
            with ThreadPoolExecutor(1, thread_name_prefix="digest") as digesting:
                # Read alongside restic's own read of the same pages, not in a pass of its own.
                digested = digesting.submit(tree_digest, dump_dir)
                summary = self.upload(source.artefact, dump_dir)
                digest = digested.result()
            shutil.rmtree(dump_dir, ignore_errors=True)
            self.record(
                PostgresArtefact(
                    name=source.artefact,
                    datastore=source.name,
                    database=source.database,
                    snapshot_id=summary.snapshot_id,
                    sha256=digest.sha256,
                    files=digest.files,
                    raw_bytes=digest.bytes,
                    data_added=summary.data_added,
                    lsn=snapshot.lsn,
                    snapshot_time=snapshot.snapshot_time.isoformat(),
                    server_version=snapshot.server_version,
                    row_counts=snapshot.row_counts,
                    seconds=round(time.monotonic() - started, 3),
                )
            )

        self.in_background(source.artefact, store)

    def redis(self, source: RedisSource) -> None:
        started = time.monotonic()
        self.enter(f"{source.artefact}:snapshot")
        directory = self.workdir / f"redis-{source.name}"
        directory.mkdir()
        rdb = directory / "dump.rdb"
        snapshot = snapshot_redis(source, rdb)

        def store() -> None:
            checksum = file_sha256(rdb)
            summary = self.upload(source.artefact, rdb)
            size = rdb.stat().st_size
            shutil.rmtree(directory, ignore_errors=True)
            steady = snapshot.dbsize_before == snapshot.dbsize_after
            low, high = sorted([snapshot.dbsize_before, snapshot.dbsize_after])
            self.record(
                RedisArtefact(
                    name=source.artefact,
                    datastore=source.name,
                    file=rdb.name,
                    snapshot_id=summary.snapshot_id,
                    sha256=checksum,
                    raw_bytes=size,
                    data_added=summary.data_added,
                    # Keys written while the snapshot was taken make the exact count unknown:
                    # the range is what a restore must fall in.
                    dbsize=snapshot.dbsize_before if steady else None,
                    dbsize_range=(low, high),
                    master_repl_offset=snapshot.master_repl_offset,
                    redis_version=snapshot.redis_version,
                    seconds=round(time.monotonic() - started, 3),
                )
            )

        self.in_background(source.artefact, store)

    def files(self, source: FilesSource) -> None:
        started = time.monotonic()
        self.enter(f"{source.artefact}:digest")
        if not (source.path.is_dir() or source.path.is_file()):  # said before any upload starts
            raise BackupError(f"{source.path} is not a directory; check backup.sources.volumes")

        def store() -> None:
            with ThreadPoolExecutor(1, thread_name_prefix="digest") as digesting:
                digested = digesting.submit(tree_digest, source.path)
                summary = self.upload(source.artefact, source.path)
                digest = digested.result()
            self.record(
                FilesArtefact(
                    name=source.artefact,
                    path=str(source.path),
                    snapshot_id=summary.snapshot_id,
                    sha256=digest.sha256,
                    files=digest.files,
                    raw_bytes=digest.bytes,
                    data_added=summary.data_added,
                    seconds=round(time.monotonic() - started, 3),
                )
            )

        self.in_background(source.artefact, store)


def _reading_order(sources: list[Source]) -> list[Source]:
    """File trees first (their reading and upload all happen in the background), then Redis, then
    PostgreSQL: the dumps then run while the trees upload."""
    kinds = (FilesSource, RedisSource, PostgresSource)
    return sorted(sources, key=lambda s: next(i for i, k in enumerate(kinds) if isinstance(s, k)))


def run_backup(
    stack: Stack,
    kind: BackupWhat,
    sessions: sessionmaker[Session],
    *,
    base_dir: Path,
    actor: str,
    jobs: int | None = None,
    on_progress: ProgressHandler | None = None,
    on_phase: PhaseHandler | None = None,
    notifier: Notifier | None = None,
) -> BackupSet:
    """Back up every source of `kind` into one set and return it (complete), or raise after
    recording it failed and notifying the stack's channels.

    Before the set is recorded, the tools, the secrets and the repository are checked, so a
    missing tool or a wrong repository password changes nothing.
    """
    reap_abandoned(sessions)
    sources = sources_of(stack, kind)
    try:
        for tool in tools_for(sources):
            find_tool(tool)
        repository = open_repository(stack, base_dir)
        prepare_repository(sessions, repository)
    except ShipyardError as exc:
        # Nothing was recorded, but a scheduled backup that cannot start must not fail silently.
        _notify(
            notifier or Notifier(stack.notifications, sessions),
            Event(
                "backup.failed",
                f"{stack.name} ({stack.environment}): {kind} backup could not start: {exc.message}",
                "page",
                {"set": None, "kind": kind, "stack": stack.name, "environment": stack.environment},
            ),
        )
        raise
    tools = {tool: tool_version(tool) for tool in tools_for(sources) if tool != "pg_restore"}
    if any(isinstance(s, RedisSource) for s in sources):
        tools["redis-server"] = tool_version("redis-server")

    recorder = SetRecorder(sessions, stack=stack.name, environment=stack.environment, kind=kind, actor=actor)
    manifest = Manifest(
        id=recorder.id,
        spec=stack.name,
        environment=stack.environment,
        kind=kind,
        repository=redact_url(repository.url),
        restic_host=restic_host(stack),
        sources=[s.artefact for s in sources],
        tools=tools,
        started_at=utcnow().isoformat(),
    )
    recorder.start(manifest)
    inputs = {"kind": kind, "environment": stack.environment, "sources": manifest.sources}
    record_audit(sessions, actor=actor, action="backup", target_kind="backup_set", target=recorder.id,
                 after=inputs, outcome="started")  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix=temp_prefix(recorder.id)))
    run = _Run(stack, repository, recorder, manifest, workdir, jobs or default_jobs(), on_progress, on_phase)
    run.order = [s.artefact for s in sources]
    try:
        try:
            for source in _reading_order(sources):
                if isinstance(source, PostgresSource):
                    run.postgres(source)
                elif isinstance(source, RedisSource):
                    run.redis(source)
                else:
                    run.files(source)
        except BaseException as exc:
            run.fail(exc)  # stops the uploads in flight; wait() then raises the first failure
        run.wait()
        # The repository's own copy, before the set is called complete: a set the state store
        # calls complete can always be found, listed and checked from the repository alone.
        recorder.phase("manifest", run.manifest)
        _pause_if_asked("manifest")
        store_manifest(repository, run.finished())
    except BaseException as exc:
        error = _describe_error(run.stop(exc))
        recorder.finish("failed", run.finished(), error)
        record_audit(sessions, actor=actor, action="backup", target_kind="backup_set", target=recorder.id,
                     after={**inputs, "error": error}, outcome="failed")  # fmt: skip
        _notify(
            notifier or Notifier(stack.notifications, sessions),
            Event(
                "backup.failed",
                f"{stack.name} ({stack.environment}): {kind} backup {recorder.id} failed: {error}",
                "page",
                {"set": recorder.id, "kind": kind, "stack": stack.name, "environment": stack.environment},
            ),
        )
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    recorder.finish("complete", run.manifest)
    record_audit(sessions, actor=actor, action="backup", target_kind="backup_set", target=recorder.id,
                 after=inputs)  # fmt: skip
    return get_set(sessions, recorder.id)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, ShipyardError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"internal error: {type(exc).__name__}: {exc}"


def _notify(notifier: Notifier, event: Event) -> None:
    if not notifier.channels:
        return
    notifier.send(event)
    notifier.wait()
