"""The background process of `deploy --detach`: started in its own session, waited for until recorded.

Real processes (small Python programs standing in for the CLI) and a real SQLite state store.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shipyard.errors import RolloutError, UserError
from shipyard.rollout._detached import Detached, last_release_id, spawn, wait_recorded
from shipyard.state import RolloutRow, open_engine, session_factory


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


@pytest.fixture
def started() -> Iterator[list[Detached]]:
    """Processes a test starts; any still running at its end are killed (by their pid)."""
    processes: list[Detached] = []
    yield processes
    for detached in processes:
        if detached.process.poll() is None:
            detached.process.kill()
        detached.process.wait(30)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _record(sessions: sessionmaker[Session], service: str, version: str) -> int:
    with sessions() as session, session.begin():
        row = RolloutRow(
            service=service,
            environment="test",
            target="local",
            strategy="canary",
            stable=None,
            candidate=version,
            phase="starting",
            actor="test",
            stack={},
            state={},
        )
        session.add(row)
        session.flush()
        return row.id


def test_returns_the_release_once_recorded_and_names_the_log_after_it(
    sessions: sessionmaker[Session], tmp_path: Path, started: list[Detached]
) -> None:
    before = _record(sessions, "web", "v1")
    assert last_release_id(sessions) == before
    detached = spawn(
        _python("import sys, time; print('working', flush=True); time.sleep(30)"),
        tmp_path / "logs",
        os.environ,
    )
    started.append(detached)
    assert os.getsid(detached.process.pid) == detached.process.pid  # its own session
    recorded = _record(sessions, "web", "v2")
    assert wait_recorded(sessions, detached, "web", "v2", before, timeout_s=30) == recorded
    assert detached.log == tmp_path / "logs" / f"{recorded}.log"
    assert detached.process.poll() is None  # still running: returned once recorded, not when done
    assert list((tmp_path / "logs").iterdir()) == [detached.log]


def test_a_refusal_is_raised_again_with_its_message_and_exit_code(
    sessions: sessionmaker[Session], tmp_path: Path, started: list[Detached]
) -> None:
    program = "print('loading'); print(\"error: version 'v1' of 'web' is already live\"); raise SystemExit(2)"
    detached = spawn(_python(program), tmp_path, os.environ)
    started.append(detached)
    with pytest.raises(UserError) as raised:
        wait_recorded(sessions, detached, "web", "v1", 0, timeout_s=30)
    assert raised.value.message == "version 'v1' of 'web' is already live"
    assert raised.value.exit_code == 2


def test_a_spec_error_keeps_its_lines_and_a_failure_names_the_log(
    sessions: sessionmaker[Session], tmp_path: Path, started: list[Detached]
) -> None:
    program = "print('error: 2 problems in the spec:'); print('  a.yaml:3:1: bad'); raise SystemExit(2)"
    detached = spawn(_python(program), tmp_path, os.environ)
    started.append(detached)
    with pytest.raises(UserError) as raised:
        wait_recorded(sessions, detached, "web", "v1", 0, timeout_s=30)
    assert raised.value.message == "2 problems in the spec:\n  a.yaml:3:1: bad"
    crashed = spawn(_python("raise SystemExit(1)"), tmp_path, os.environ)
    started.append(crashed)
    with pytest.raises(RolloutError) as failed:
        wait_recorded(sessions, crashed, "web", "v1", 0, timeout_s=30)
    assert failed.value.exit_code == 1
    assert str(crashed.log) in failed.value.message


def test_a_process_that_neither_records_nor_ends_times_out(
    sessions: sessionmaker[Session], tmp_path: Path, started: list[Detached]
) -> None:
    detached = spawn(_python("import time; time.sleep(30)"), tmp_path, os.environ)
    started.append(detached)
    with pytest.raises(RolloutError) as raised:
        wait_recorded(sessions, detached, "web", "v1", 0, timeout_s=0.5)
    assert f"pid {detached.process.pid}" in raised.value.message
    assert "has not recorded itself" in raised.value.message
