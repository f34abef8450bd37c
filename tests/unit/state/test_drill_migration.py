"""Migration 0007: drills recorded only in the audit log before it are read back from the drills table
after it, through the one reader (`drill_history`, `last_drills`), in the order they ended."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import insert, inspect

from shipyard.dr import drill_history, last_drills
from shipyard.state import AuditRow, open_engine, session_factory, upgrade

T0 = dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.UTC)


def _summary(mode: str, passed: bool, rto: float | None, rpo: float | None, **extra: Any) -> dict[str, Any]:
    """What `dr test` wrote into the audit entry of a finished drill before the drills table."""
    return {
        "mode": mode,
        "passed": passed,
        "failed_phase": None,
        "achieved": {"rto_seconds": rto, "rpo_seconds": rpo, "mttr_seconds": rto, "mttr_drills": 1},
        "targets": [{"name": "rto", "target_seconds": 900, "achieved_seconds": rto, "verdict": "pass"}],
        "report": f"/srv/.shipyard/drills/{mode}.json",
    } | extra


# (minutes after T0, actor, action, target, outcome, after)
HISTORY: list[tuple[int, str, str, str, str, dict[str, Any] | None]] = [
    (0, "cli:ops", "dr.drill", "shop/production", "started", {"mode": "full", "phases": ["take backup set"]}),
    (5, "cli:ops", "dr.drill", "shop/production", "passed", _summary("full", True, 12.5, 0.0)),
    (10, "token:ops", "dr.drill", "shop/production", "started", {"mode": "partial", "phases": []}),
    (
        11,
        "token:ops",
        "dr.drill",
        "shop/production",
        "failed",
        _summary(
            "partial",
            False,
            None,
            3.25,
            failed_phase={"name": "restore postgres:db", "reason": "pg_restore exited 1"},
        ),
    ),
    (
        20,
        "schedule:dr-drill-restore",
        "dr.drill",
        "shop/staging",
        "failed",
        {"mode": "restore", "error": "KeyError"},
    ),
    (30, "cli:ops", "backup.run", "shop/production", "ok", {"mode": "full"}),  # not a drill
    (40, "cli:ops", "dr.drill", "shop/production", "passed", _summary("full", True, 20.0, 1.5)),
    (50, "cli:ops", "dr.drill", "shop/production", "failed", {"mode": "everything"}),  # never a mode
]


def test_the_audit_only_drill_history_is_read_back_after_the_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_engine(url, migrate=False)
    upgrade(engine, "0006")
    assert "drills" not in inspect(engine).get_table_names()
    with engine.begin() as connection:
        for minutes, actor, action, target, outcome, after in HISTORY:
            connection.execute(
                insert(AuditRow).values(
                    at=T0 + dt.timedelta(minutes=minutes), actor=actor, action=action, target_kind="stack",
                    target=target, after=after, outcome=outcome,
                )
            )  # fmt: skip
    engine.dispose()

    sessions = session_factory(open_engine(url))  # brought to head on open, as any command does

    history = drill_history(sessions)
    assert [(d.mode, d.passed, d.environment) for d in history] == [
        ("full", True, "production"),
        ("restore", False, "staging"),
        ("partial", False, "production"),
        ("full", True, "production"),
    ]
    newest_full, stopped, partial, first_full = history
    assert newest_full.finished_at == T0 + dt.timedelta(minutes=40)
    assert (newest_full.stack, newest_full.actor) == ("shop", "cli:ops")
    assert (newest_full.rto_seconds, newest_full.rpo_seconds, newest_full.mttr_seconds) == (20.0, 1.5, 20.0)
    assert newest_full.report == "/srv/.shipyard/drills/full.json"
    assert newest_full.started_at is None  # the audit entry kept only the end
    assert (partial.failed_phase, partial.reason) == ("restore postgres:db", "pg_restore exited 1")
    assert (partial.rto_seconds, partial.rpo_seconds) == (None, 3.25)
    assert stopped.reason == "the drill stopped: KeyError"
    assert stopped.actor == "schedule:dr-drill-restore"
    assert (stopped.rto_seconds, stopped.failed_phase, stopped.report) == (None, None, None)
    assert first_full.rto_seconds == 12.5

    last = last_drills(sessions)
    assert {mode: drill.id for mode, drill in last.items()} == {
        "full": newest_full.id,
        "partial": partial.id,
        "restore": stopped.id,
    }
    assert last_drills(sessions, environment="production").keys() == {"full", "partial"}
    assert [d.rto_seconds for d in drill_history(sessions, mode="full", stack="shop")] == [20.0, 12.5]

    # The audit log keeps every entry it had.
    with sessions() as session:
        assert session.query(AuditRow).count() == len(HISTORY)


def test_a_store_with_no_drills_upgrades_to_an_empty_history(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_engine(url, migrate=False)
    upgrade(engine, "0006")
    engine.dispose()
    sessions = session_factory(open_engine(url))
    assert drill_history(sessions) == []
    assert last_drills(sessions) == {}
