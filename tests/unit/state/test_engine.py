"""Opening the state store: migrations up to Alembic's head, and a fast path once there."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from shipyard.state import open_engine, upgrade
from shipyard.state._engine import HEAD_REVISION


def test_head_revision_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", "shipyard.state:migrations")
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_new_store_is_migrated_and_reopened_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert {"audit_log", "rollouts", "backup_sets", "notifications", "jobs", "drills"} <= tables
    engine.dispose()
    again = open_engine(url)
    with again.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION


def test_a_store_behind_head_is_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_engine(url, migrate=False)
    upgrade(engine, "0004")
    assert "jobs" not in inspect(engine).get_table_names()
    engine.dispose()
    reopened = open_engine(url)
    assert "jobs" in inspect(reopened).get_table_names()


_OPEN_AT = """
import sys, time
from shipyard.state import open_engine
while time.time() < float(sys.argv[2]):  # every process starts migrating at the same moment
    time.sleep(0.001)
open_engine(sys.argv[1]).dispose()
"""


def test_processes_that_open_a_new_store_at_once_all_get_it_at_head(tmp_path: Path) -> None:
    # Two shipyard commands in a new directory (a deploy and a status, a test's CLI and its
    # server) both find no schema; without a lock both create it and the second fails with
    # "table ... already exists".
    for attempt in range(5):
        url = f"sqlite:///{tmp_path / f'state{attempt}.db'}"
        start_at = str(time.time() + 2)
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT, url, start_at], stderr=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        errors = [process.communicate(timeout=120)[1] for process in processes]
        failures = [error for process, error in zip(processes, errors, strict=True) if process.returncode]
        assert failures == [], failures
        with open_engine(url).connect() as connection:
            assert (
                connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
            )
