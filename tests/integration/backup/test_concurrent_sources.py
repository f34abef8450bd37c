"""The sources of one set upload at the same time: the set still records every artefact in source
order, the caller's callbacks are never called twice at once, and the first failure fails the set
and stops the other uploads (no restic left running, no lock, nothing stored)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shipyard.backup import list_sets, run_backup
from shipyard.backup._restic import BackupProgress, ResticRepository
from shipyard.errors import BackupError
from shipyard.spec import load_spec
from shipyard.state import open_engine, session_factory
from support.backup_stack import RESTIC_PASSWORD_ENV, BackupStack, backup_stack
from support.restic import PASSWORD, random_bytes, restic_children, write_tree
from support.servers import free_port

BIG = 48 << 20  # long enough an upload (about a second) for the other sources to happen during it


@pytest.fixture(scope="module")
def stack() -> Iterator[BackupStack]:
    with backup_stack() as created:
        write_tree(created.files, {"big/blob.bin": random_bytes(BIG, seed=7)})
        yield created


@pytest.fixture
def environ(stack: BackupStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RESTIC_PASSWORD_ENV, stack.password)
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(stack.base / ".shipyard"))


def _sessions(stack: BackupStack) -> sessionmaker[Session]:
    return session_factory(open_engine(stack.state_url))


def test_a_full_backup_uploads_while_it_dumps_and_records_every_artefact_in_source_order(
    stack: BackupStack, environ: None
) -> None:
    events: list[tuple[float, str]] = []
    busy = threading.Lock()
    overlapped: list[str] = []

    def guarded(what: str) -> None:
        if not busy.acquire(blocking=False):
            overlapped.append(what)
            return
        try:
            events.append((time.monotonic(), what))
            time.sleep(0.002)  # widen the window a second caller would have to step into
        finally:
            busy.release()

    def on_progress(name: str, update: BackupProgress) -> None:
        guarded(f"progress {name}")

    done = run_backup(
        load_spec(stack.spec).stack("test"),
        "full",
        _sessions(stack),
        base_dir=stack.base,
        actor="tester",
        on_progress=on_progress,
        on_phase=guarded,
    )

    assert done.state == "complete"
    names = [a.name for a in done.manifest.artefacts]
    assert names == done.manifest.sources == ["postgres:db", "redis:cache", f"files:{stack.files}"]
    assert all(len(a.snapshot_id) == 64 for a in done.manifest.artefacts)
    assert overlapped == []
    # The database was dumped and its upload begun while the big file tree was still uploading
    # (one after the other, one of the two would be done before the other's upload began).
    at = {what: when for when, what in events}
    assert at[f"files:{stack.files}:upload"] < at["postgres:db:upload"] < at[f"files:{stack.files}:done"]
    assert restic_children() == []
    assert not any((stack.base / "repo" / "locks").iterdir())


def test_the_first_failure_fails_the_set_and_stops_the_upload_in_flight(
    stack: BackupStack, environ: None
) -> None:
    dead = stack.write_spec(pg_port=free_port(), name="dead-db.yaml")
    sessions = _sessions(stack)
    repository = ResticRepository(
        str(stack.base / "repo"), stack.password, cache_dir=stack.base / ".shipyard" / "restic-cache"
    )
    before = {s.id for s in repository.snapshots()}

    with pytest.raises(BackupError, match="cannot connect to PostgreSQL"):
        run_backup(load_spec(dead).stack("test"), "full", sessions, base_dir=stack.base, actor="tester")

    assert restic_children() == []
    assert not any((stack.base / "repo" / "locks").iterdir())
    assert {s.id for s in repository.snapshots()} == before  # the file tree's upload was stopped
    latest = list_sets(sessions)[0]
    assert latest.state == "failed"
    assert latest.error is not None
    assert "cannot connect to PostgreSQL" in latest.error
    assert latest.manifest.artefacts == []


def test_cancelling_an_upload_kills_restic_removes_its_lock_and_stores_nothing(tmp_path: Path) -> None:
    repository = ResticRepository(
        str(tmp_path / "repo"), PASSWORD, cache_dir=tmp_path / "cache", progress_fps=20
    )
    repository.init()
    tree = write_tree(tmp_path / "tree", {"blob.bin": random_bytes(BIG, seed=3)})
    cancel = threading.Event()

    def on_progress(update: BackupProgress) -> None:
        if update.bytes_done > 0:
            cancel.set()

    # "cancelled" is raised only if restic was killed while it ran (not once it had finished).
    with pytest.raises(BackupError, match="cancelled; nothing was stored"):
        repository.backup_path(tree, on_progress=on_progress, cancel=cancel)

    assert restic_children() == []
    assert not any((tmp_path / "repo" / "locks").iterdir())
    assert repository.snapshots() == []
