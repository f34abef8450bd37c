"""Jobs run in the CLI's own process (`run_recorded_here`) and cancelling jobs (`JobRunner.cancel`),
over a real SQLite store and real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.errors import BackupError, ConflictError
from shipyard.host import pid_alive
from shipyard.jobs import CANCELLED, JobRunner, run_recorded_here
from shipyard.jobs._runner import CLI_STOPPED
from shipyard.ops import Result, TakeBackup, Workspace
from shipyard.state import AuditRow, JobRow, open_engine, session_factory


class Taken(Result):
    files: int

    def summary(self) -> str:
        return f"{self.files} files"


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = open_engine(f"sqlite:///{tmp_path / 'state.db'}")
    yield session_factory(engine)
    engine.dispose()


def _runner(sessions: sessionmaker[Session], tmp_path: Path) -> JobRunner:
    return JobRunner(sessions, spec=None, environment="test", database_url=None, log_dir=tmp_path / "jobs")


def _rows(sessions: sessionmaker[Session]) -> list[JobRow]:
    with sessions() as session:
        return list(session.scalars(select(JobRow).order_by(JobRow.id)))


def test_a_cli_run_is_a_job_with_its_typed_request_and_result(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    ws = Workspace(actor="cli:ana", opened_sessions=sessions)
    request = TakeBackup(what="files")
    result = run_recorded_here(ws, request, lambda: Taken(files=3))
    assert result == Taken(files=3)
    (row,) = _rows(sessions)
    assert (row.kind, row.request, row.actor, row.state, row.exit_code) == (
        "backup",
        {"kind": "backup", "what": "files"},
        "cli:ana",
        "succeeded",
        0,
    )
    assert (row.result, row.summary, row.pid) == ({"files": 3}, "3 files", os.getpid())
    view = _runner(sessions, tmp_path).get(row.id)
    assert view.origin == "cli"
    with sessions() as session:
        audit = [(a.action, a.outcome) for a in session.scalars(select(AuditRow).order_by(AuditRow.id))]
    assert audit == [("job.backup", "started"), ("job.backup", "succeeded")]


def test_a_failed_cli_run_is_recorded_and_its_error_raised(sessions: sessionmaker[Session]) -> None:
    ws = Workspace(actor="cli:ana", opened_sessions=sessions)

    def fails() -> Taken:
        raise BackupError("restic is not installed")

    with pytest.raises(BackupError):
        run_recorded_here(ws, TakeBackup(what="files"), fails)
    (row,) = _rows(sessions)
    assert (row.state, row.exit_code, row.summary) == ("failed", 1, "restic is not installed")


def _cli_row(sessions: sessionmaker[Session], pid: int) -> int:
    """A job run from a CLI whose process is `pid` (as `run_recorded_here` writes it)."""
    with sessions() as session, session.begin():
        row = JobRow(
            kind="backup",
            request={"kind": "backup", "what": "files"},
            actor="cli:ana",
            state="running",
            owner=f"{socket.gethostname()}:{pid}",
            pid=pid,
        )
        session.add(row)
        session.flush()
        return row.id


def test_cancelling_a_cli_run_stops_that_process_alone_and_records_who(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # A stand-in CLI in this test's process group: its group must not be signalled.
    cli = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "shipyard", "backup"])
    try:
        job_id = _cli_row(sessions, cli.pid)
        runner = _runner(sessions, tmp_path)
        view = runner.cancel(job_id, "token:ops")
        assert (view.state, view.exit_code, view.summary) == (CANCELLED, 130, "cancelled by token:ops")
        assert cli.wait(15) == -15  # SIGTERM, as Ctrl-C would stop the CLI
        with pytest.raises(ConflictError, match="not running"):
            runner.cancel(job_id, "token:ops")
        with sessions() as session:
            actions = [
                (a.actor, a.action, a.outcome)
                for a in session.scalars(select(AuditRow).order_by(AuditRow.id))
            ]
        assert actions == [("cli:ana", "job.backup", CANCELLED), ("token:ops", "job.cancel", "ok")]
    finally:
        cli.kill()
        cli.wait()


def test_a_cli_run_whose_process_died_is_closed_by_a_server_on_its_host(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    deadline = time.monotonic() + 5
    while pid_alive(gone.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    job_id = _cli_row(sessions, gone.pid)
    assert _runner(sessions, tmp_path).reconcile() == 1
    (row,) = _rows(sessions)
    assert (row.id, row.state, row.summary) == (job_id, "failed", CLI_STOPPED)
