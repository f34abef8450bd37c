"""The set record's life: running under a live lease; failed once its writer is gone; restorable
only when complete or verified."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from shipyard.backup import (
    ArtefactHealth,
    Check,
    FilesArtefact,
    Manifest,
    PostgresArtefact,
    Verification,
    get_set,
    latest_set,
    list_sets,
    reap_abandoned,
)
from shipyard.backup._sets import SetRecorder, lease_name, record_damage, record_verification, settled_state
from shipyard.errors import BackupError, NotFoundError
from shipyard.state import BackupSetRow, LockRow, open_engine, session_factory


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _recorder(sessions: sessionmaker[Session], kind: str = "full") -> SetRecorder:
    return SetRecorder(sessions, stack="shop", environment="production", kind=kind, actor="cli:test")


def _manifest(recorder: SetRecorder, *artefacts: PostgresArtefact | FilesArtefact) -> Manifest:
    return Manifest(
        id=recorder.id,
        spec="shop",
        environment="production",
        kind="full",
        repository="/var/backups/shop",
        restic_host="shop-production",
        sources=[a.name for a in artefacts],
        tools={"restic": "restic 0.14.0"},
        started_at="2026-12-01T03:15:00+00:00",
        artefacts=list(artefacts),
    )


POSTGRES = PostgresArtefact(
    name="postgres:db", datastore="db", database="app", snapshot_id="a" * 64, sha256="b" * 64, files=4,
    raw_bytes=100, data_added=80, lsn="0/1A09BF8", snapshot_time="2026-12-01T03:15:01+00:00",
    server_version="15.18", row_counts={"public.items": 2}, seconds=0.5,
)  # fmt: skip
FILES = FilesArtefact(
    name="files:/srv", path="/srv", snapshot_id="c" * 64, sha256="d" * 64, files=2, raw_bytes=10,
    data_added=10, seconds=0.1,
)  # fmt: skip


def _report(ok: bool | None) -> Verification:
    check = Check(artefact="postgres:db", check="row counts of 1 tables", ok=bool(ok))
    return Verification(
        started_at="2026-12-01T04:00:00+00:00", read_data_subset="10%", ok=ok, checks=[check], seconds=1.0
    )


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_running_set_with_a_live_writer_is_left_alone(sessions: sessionmaker[Session]) -> None:
    recorder = _recorder(sessions)
    recorder.start(_manifest(recorder))
    recorder.phase("postgres:db:dump")
    assert reap_abandoned(sessions) == []
    assert get_set(sessions, recorder.id).state == "running"
    recorder.finish("complete", _manifest(recorder, POSTGRES))
    done = get_set(sessions, recorder.id)
    assert (done.state, done.restorable, done.finished_at is not None) == ("complete", True, True)
    assert done.artefact("postgres:db") == POSTGRES
    with sessions() as session:
        assert session.get(LockRow, lease_name(recorder.id)) is None  # lease released


def test_a_set_whose_writer_died_is_marked_failed_by_the_next_look(sessions: sessionmaker[Session]) -> None:
    recorder = _recorder(sessions)
    recorder.start(_manifest(recorder))
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
    good.start(_manifest(good))
    good.finish("complete", _manifest(good, FILES))
    bad = _recorder(sessions)
    bad.start(_manifest(bad))
    bad.finish("failed", _manifest(bad), "pg_dump exited with 1")
    assert latest_set(sessions, stack="shop").id == good.id
    assert latest_set(sessions, stack="shop", containing="files:/srv").id == good.id
    with pytest.raises(NotFoundError):
        latest_set(sessions, stack="shop", containing="postgres:db")
    verified = record_verification(sessions, good.id, _report(True))
    assert (verified.state, verified.verified_at is not None) == ("verified", True)
    assert verified.verification == _report(True)
    failed = record_verification(sessions, good.id, _report(False), error="row counts differ")
    assert (failed.state, failed.error, failed.restorable) == ("failed", "row counts differ", False)
    with pytest.raises(NotFoundError, match="no backup set 'zzz'"):
        get_set(sessions, "zzz")


def test_a_verification_whose_means_failed_is_kept_and_leaves_the_set_as_it_was(
    sessions: sessionmaker[Session],
) -> None:
    recorder = _recorder(sessions)
    recorder.start(_manifest(recorder))
    recorder.finish("complete", _manifest(recorder, POSTGRES))
    report = Verification(
        started_at="2026-12-01T04:00:00+00:00", read_data_subset="10%", ok=None, error="restic: no route"
    )
    kept = record_verification(sessions, recorder.id, report)
    assert (kept.state, kept.error, kept.verification) == ("complete", None, report)


def test_a_record_shipyard_did_not_write_is_an_error_naming_the_set(sessions: sessionmaker[Session]) -> None:
    recorder = _recorder(sessions)
    recorder.start(_manifest(recorder))
    with sessions() as session, session.begin():
        row = session.get(BackupSetRow, recorder.id)
        assert row is not None
        row.manifest = {"artefacts": [{"name": "postgres:db"}]}
    with pytest.raises(BackupError, match=f"backup set {recorder.id}: its record .* not one shipyard wrote"):
        get_set(sessions, recorder.id)


# --- artefact health (issue 12) -----------------------------------------------------------------

HEALTH_STATES = st.sampled_from([None, "verified", "failed"])


@given(st.lists(HEALTH_STATES, min_size=1, max_size=5))
def test_a_set_state_follows_its_artefacts_checks(checked: list[str | None]) -> None:
    sources = [f"files:/v{i}" for i in range(len(checked))]
    health = {
        name: ArtefactHealth(state=state, at="2026-12-01T04:00:00+00:00")  # type: ignore[arg-type]
        for name, state in zip(sources, checked, strict=True)
        if state is not None
    }
    state = settled_state(sources, health)
    failed = checked.count("failed")
    if failed == len(checked):
        assert state == "failed"
    elif failed:
        assert state == "partial"
    elif checked.count("verified") == len(checked):
        assert state == "verified"
    else:
        assert state == "complete"


def test_a_damaged_artefact_found_by_a_restore_makes_the_set_partial_and_skipped_for_it(
    sessions: sessionmaker[Session],
) -> None:
    recorder = _recorder(sessions)
    recorder.start(_manifest(recorder))
    recorder.finish("complete", _manifest(recorder, POSTGRES, FILES))
    demoted = record_damage(sessions, recorder.id, "files:/srv", "checksum mismatch")
    assert (demoted.state, demoted.restorable) == ("partial", True)
    assert [a.name for a in demoted.intact_artefacts] == ["postgres:db"]
    assert demoted.error == "files:/srv is damaged: checksum mismatch"
    assert latest_set(sessions, stack="shop", containing="postgres:db").id == recorder.id
    with pytest.raises(NotFoundError):
        latest_set(sessions, stack="shop", containing="files:/srv")
    # A verification that finds the other one damaged too leaves nothing restorable.
    check = Check(artefact="postgres:db", check="dump checksum", ok=False)
    report = Verification(
        started_at="2026-12-01T05:00:00+00:00", read_data_subset="1/10", ok=False, checks=[check]
    )
    damaged = ArtefactHealth(state="failed", detail="dump checksum", at="2026-12-01T05:00:00+00:00")
    failed = record_verification(sessions, recorder.id, report, health={"postgres:db": damaged}, error="x")
    assert (failed.state, failed.restorable, failed.intact_artefacts) == ("failed", False, [])


def test_a_passed_verification_proves_every_artefact_and_clears_no_damage_it_did_not_check(
    sessions: sessionmaker[Session],
) -> None:
    recorder = _recorder(sessions)
    recorder.start(_manifest(recorder))
    recorder.finish("complete", _manifest(recorder, POSTGRES, FILES))
    verified = record_verification(sessions, recorder.id, _report(True))
    assert verified.state == "verified"
    assert {name: h.state for name, h in verified.health.items()} == {
        "postgres:db": "verified",
        "files:/srv": "verified",
    }
