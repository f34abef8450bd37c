"""Opening the state store: migrations up to Alembic's head, and a fast path once there."""

from __future__ import annotations

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
