"""The drills table on a PostgreSQL state store: migration 0007 copies the audit-only history, and
a drill recorded afterwards is read back with it (tests/unit/state/test_drill_migration.py does
the same on SQLite, in more detail)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert

from shipyard.dr import drill_history, last_drills, record_drill
from shipyard.state import AuditRow, DrillRow, open_engine, session_factory, upgrade
from support.servers import postgres_server

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.UTC)


def test_the_audit_history_moves_into_the_drills_table_on_postgresql() -> None:
    with postgres_server() as server:
        url = server.url()
        engine = open_engine(url, migrate=False)
        upgrade(engine, "0006")
        achieved = {"rto_seconds": 12.5, "rpo_seconds": 0.0, "mttr_seconds": 12.5}
        passed = {"mode": "full", "passed": True, "failed_phase": None, "report": "/r/full.json"}
        failed_phase = {"name": "restore postgres:db", "reason": "pg_restore exited 1"}
        failed = {"mode": "partial", "passed": False, "failed_phase": failed_phase}
        failed["achieved"] = {"rto_seconds": None, "rpo_seconds": 3.0}
        passed["achieved"] = achieved
        with engine.begin() as connection:
            for minutes, outcome, after in [
                (0, "started", {"mode": "full", "phases": []}),
                (5, "passed", passed),
                (9, "failed", failed),
                (12, "failed", {"mode": "restore", "error": "KeyboardInterrupt"}),
            ]:
                connection.execute(
                    insert(AuditRow).values(
                        at=T0 + dt.timedelta(minutes=minutes), actor="cli:ops", action="dr.drill",
                        target_kind="stack", target="shop/production", after=after, outcome=outcome,
                    )
                )  # fmt: skip
        engine.dispose()

        store = open_engine(url)
        sessions = session_factory(store)
        history = drill_history(sessions)
        assert [(d.mode, d.passed) for d in history] == [
            ("restore", False),
            ("partial", False),
            ("full", True),
        ]
        restore, partial, full = history
        assert full.finished_at == T0 + dt.timedelta(minutes=5)
        assert (full.rto_seconds, full.rpo_seconds, full.report) == (12.5, 0.0, "/r/full.json")
        assert (partial.failed_phase, partial.reason, partial.rpo_seconds) == (
            "restore postgres:db",
            "pg_restore exited 1",
            3.0,
        )
        assert restore.reason == "the drill stopped: KeyboardInterrupt"

        # A drill recorded now follows the copied history.
        later = T0 + dt.timedelta(hours=1)
        newer = record_drill(
            sessions,
            DrillRow(stack="shop", environment="production", mode="full", passed=True, actor="token:ops",
                     started_at=later, finished_at=later + dt.timedelta(seconds=30),
                     rto_seconds=20.0, rpo_seconds=1.0, mttr_seconds=16.25),
        )  # fmt: skip
        last = last_drills(sessions, stack="shop", environment="production")
        assert {mode: drill.id for mode, drill in last.items()} == {
            "full": newer,
            "partial": partial.id,
            "restore": restore.id,
        }
        assert last["full"].started_at == later
        assert [d.rto_seconds for d in drill_history(sessions, mode="full")] == [20.0, 12.5]
        store.dispose()
