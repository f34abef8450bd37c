"""Migration 0011: the `traffic_minutes` table as the model declares it, and its downgrade."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

from shipyard.state import TrafficMinuteRow, upgrade


def test_0011_creates_the_table_the_model_declares_and_its_downgrade_drops_it(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine, "0010")
    assert "traffic_minutes" not in inspect(engine).get_table_names()
    upgrade(engine)
    table = TrafficMinuteRow.__table__
    found = inspect(engine)
    assert [c["name"] for c in found.get_columns("traffic_minutes")] == [c.name for c in table.columns]
    assert {c["name"]: c["nullable"] for c in found.get_columns("traffic_minutes")} == {
        c.name: c.nullable for c in table.columns
    }
    assert found.get_pk_constraint("traffic_minutes")["constrained_columns"] == [
        "stack",
        "environment",
        "service",
        "minute",
    ]
    assert [(i["name"], i["column_names"]) for i in found.get_indexes("traffic_minutes")] == [
        ("ix_traffic_minutes_minute", ["minute"])
    ]
    config = Config()
    config.set_main_option("script_location", "shipyard.state:migrations")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0010")
    assert "traffic_minutes" not in inspect(engine).get_table_names()
    engine.dispose()
