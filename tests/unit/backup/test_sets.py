"""The set record's life: running under a live lease; failed once its writer is gone; restorable
only when complete or verified."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shipyard.backup import get_set, latest_set, list_sets, reap_abandoned
from shipyard.backup._sets import SetRecorder, lease_name, record_verification
from shipyard.errors import NotFoundError
from shipyard.state import LockRow, open_engine, session_factory


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _recorder(sessions: sessionmaker[Session], kind: str = "full") -> SetRecorder:
    return SetRecorder(sessions, stack="shop", environment="production", kind=kind, actor="cli:test")


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_running_set_with_a_live_writer_is_left_alone(sessions: sessionmaker[Session]) -> None:
    recorder = _recorder(sessions)
    recorder.start({"artefacts": []})
    recorder.phase("postgres:db:dump")
    assert reap_abandoned(sessions) == []
    assert get_set(sessions, recorder.id).state == "running"
    recorder.finish("complete", {"artefacts": [{"name": "postgres:db"}]})
    done = get_set(sessions, recorder.id)
    assert (done.state, done.restorable, done.finished_at is not None) == ("complete", True, True)
    with sessions() as session:
        assert session.get(LockRow, lease_name(recorder.id)) is None  # lease released


def test_a_set_whose_writer_died_is_marked_failed_by_the_next_look(sessions: sessionmaker[Session]) -> None:
    recorder = _recorder(sessions)
    recorder.start({"artefacts": []})
    recorder.phase("redis:cache:snapshot")
    recorder._stop.set()  # the writer stops renewing, as a killed process would
    with sessions() as session, session.begin():  # and its process is gone
        lock = session.get(LockRow, lease_name(recorder.id))
        assert lock is not None
        host, _, _ = lock.owner.partition(":")
        lock.owner = f"{host}:{_dead_pid()}:dead"
    listed = list_sets(sessions)
    assert [(s.id, s.state, s.restorable) for s in listed] == [(recorder.id, "failed", False)]
    assert listed[0].error is not None
    assert "abandoned" in listed[0].error
    assert "redis:cache:snapshot" in listed[0].error
    with pytest.raises(NotFoundError, match="no restorable"):
        latest_set(sessions, stack="shop")


def test_latest_restorable_set_skips_failed_ones_and_failed_verification_untrusts_a_set(
    sessions: sessionmaker[Session],
) -> None:
    good = _recorder(sessions)
    good.start({"artefacts": []})
    good.finish("complete", {"artefacts": [{"name": "files:/srv", "type": "files"}]})
    bad = _recorder(sessions)
    bad.start({"artefacts": []})
    bad.finish("failed", {"artefacts": []}, "pg_dump exited with 1")
    assert latest_set(sessions, stack="shop").id == good.id
    assert latest_set(sessions, stack="shop", containing="files:/srv").id == good.id
    with pytest.raises(NotFoundError):
        latest_set(sessions, stack="shop", containing="postgres:db")
    verified = record_verification(sessions, good.id, ok=True, report={"ok": True}, error=None)
    assert (verified.state, verified.verified_at is not None) == ("verified", True)
    failed = record_verification(sessions, good.id, ok=False, report={"ok": False}, error="row counts differ")
    assert (failed.state, failed.error, failed.restorable) == ("failed", "row counts differ", False)
    with pytest.raises(NotFoundError, match="no backup set 'zzz'"):
        get_set(sessions, "zzz")
