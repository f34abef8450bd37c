"""The DR verbs of `shipyard.ops` without servers: requests as JSON, dry runs that touch nothing,
one-line summaries, outcomes stored and read back as a job stores them, and the drill history
(the one reader, and MTTR over it)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from shipyard.dr import DrReport, Step, StepResult, drill_history, last_drills, record_drill
from shipyard.dr._drills import _previous_recoveries
from shipyard.dr._report import DrillResult, PhaseRecord, TargetCheck
from shipyard.errors import UserError
from shipyard.ops import Workspace
from shipyard.ops._drills import (
    DrillOutcome,
    Failback,
    Failover,
    FailoverOutcome,
    RunDrill,
    failback,
    failover,
    run_drill,
)
from shipyard.spec import load_spec_text
from shipyard.state import DrillRow, open_engine, session_factory

SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {size: 1Gi}
    local: {port: 1, data_dir: /nonexistent/a}
    standby: {port: 2, data_dir: /nonexistent/b}
  cache: {kind: redis}
backup:
  repository: ./repo
  password: ${env:RESTIC_PASSWORD}
  sources: {datastores: [db, cache], volumes: [/srv/uploads]}
dr: {rto: 15m, rpo: 5m}
"""
T0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)


def workspace(tmp_path: Path) -> Workspace:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    return Workspace.open(
        spec, "production", database_url=f"sqlite:///{tmp_path / 'state.db'}", actor="cli:t"
    )


def result(**changes: object) -> DrillResult:
    measured = DrillResult(
        mode="partial",
        stack="shop",
        environment="production",
        started_at=T0.timestamp(),
        finished_at=T0.timestamp() + 2.7,
        disaster_at=T0.timestamp(),
        phases=(PhaseRecord("health postgres:db", "health", "postgres:db", "passed", 2.7, "answers"),),
        points=(),
        rto=2.7,
        rpo=0.0,
        mttr=2.7,
        mttr_drills=1,
        checks=(TargetCheck("rto", 900, 2.7), TargetCheck("rpo", 300, 0.0), TargetCheck("mttr", None, 2.7)),
    )
    return dataclasses.replace(measured, **changes)  # type: ignore[arg-type]


def test_a_drill_request_is_json_with_one_of_the_modes() -> None:
    assert RunDrill(mode="restore").model_dump(mode="json") == {
        "kind": "drill",
        "mode": "restore",
        "dry_run": False,
        "report_dir": None,
    }
    with pytest.raises(ValidationError):
        RunDrill.model_validate({"mode": "everything"})
    with pytest.raises(ValidationError):
        RunDrill.model_validate({"mode": "full", "into": "live"})
    assert Failover().kind == "failover"
    assert Failback.model_validate({"kind": "failback", "datastore": "db"}).datastore == "db"


def test_a_dry_run_plans_the_phases_and_touches_nothing(tmp_path: Path) -> None:
    outcome = run_drill(workspace(tmp_path), RunDrill(mode="partial", dry_run=True))
    assert outcome.ok
    assert outcome.dry_run
    assert [(p.phase, p.after_disaster) for p in outcome.plan] == [
        ("select newest restorable set", True),
        ("restore postgres:db", True),
        ("health postgres:db", True),
    ]
    assert outcome.summary() == "drill partial dry run: 3 phases, nothing run"
    assert outcome.data()["phases"][0] == {
        "phase": "select newest restorable set",
        "kind": "select",
        "after_disaster": True,
        "pitr": False,
    }
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shipyard.yaml"]  # no store, no report


def test_summaries_say_what_the_drill_measured() -> None:
    outcome = DrillOutcome(mode="partial", stack="shop", environment="production", plan=(), result=result())
    assert outcome.ok
    assert outcome.summary() == "drill partial passed: RTO 2.70 s, RPO 0.00 s"
    slow = result(rto=1200.0, checks=(TargetCheck("rto", 900, 1200.0), TargetCheck("rpo", 300, 0.0)))
    missed = outcome.model_copy(update={"result": slow})
    assert not missed.ok
    assert missed.summary() == "drill partial failed: RTO 20m 0s > 15m 0s"
    broken = result(
        phases=(
            PhaseRecord(
                "restore postgres:db", "restore", "postgres:db", "failed", 1.0, "pg_restore\nexited 1"
            ),
        ),
        rto=None,
        checks=(TargetCheck("rto", 900, None), TargetCheck("rpo", 300, 0.0)),
    )
    failed = outcome.model_copy(update={"result": broken})
    assert failed.summary() == "drill partial failed: phase 'restore postgres:db' failed: pg_restore exited 1"


def test_outcomes_are_stored_and_read_back_as_a_job_stores_them() -> None:
    drill = DrillOutcome(
        mode="partial", stack="shop", environment="production", plan=(), result=result(), drill_id=7,
        report_markdown="/r/x.md", report_json="/r/x.json",
    )  # fmt: skip
    assert DrillOutcome.model_validate_json(drill.model_dump_json()) == drill
    assert drill.data()["report"] == {"markdown": "/r/x.md", "json": "/r/x.json"}
    report = DrReport(
        action="failover", datastore="db", primary="standby", primary_address="127.0.0.1:2", rto_s=1.25,
        rto_target_s=60, steps=[StepResult(Step("promote", "standby", "pg_promote"), "ok", 0.5, "promoted")],
    )  # fmt: skip
    switched = FailoverOutcome(action="failover", datastore="db", report=report)
    assert FailoverOutcome.model_validate_json(switched.model_dump_json()) == switched
    assert switched.ok
    assert (
        switched.summary() == "failover of db: standby 127.0.0.1:2 is the primary, RTO 1.25 s (target 1m 0s)"
    )
    assert switched.data()["rto_met"] is True


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Failover(proxy_socket="/tmp/x.sock"), "--proxy-socket needs --proxy-address HOST:PORT"),
        (Failback(proxy_address="127.0.0.1:6432"), "--proxy-address needs --proxy-socket"),
        (Failover(proxy_socket="/x", proxy_address="h:1", proxy_servers="a,a"), "two different names"),
        (Failover(datastore="cache"), "datastores.cache: no such PostgreSQL datastore"),
    ],
)
def test_switchover_requests_are_checked_before_anything_is_touched(
    tmp_path: Path, request_: Failover | Failback, message: str
) -> None:
    ws = workspace(tmp_path)
    verb = failover if isinstance(request_, Failover) else failback
    with pytest.raises(UserError, match=message):
        verb(ws, request_)  # type: ignore[arg-type]
    assert not (tmp_path / "state.db").exists()


def test_a_dry_run_failover_says_what_blocks_it(tmp_path: Path) -> None:
    outcome = failover(workspace(tmp_path), Failover(dry_run=True))
    assert [step.kind for step in outcome.steps][:2] == ["check", "fence-proxy"]  # the primary is down
    assert not outcome.ok
    assert "the standby 127.0.0.1:2 is not reachable" in outcome.summary()
    assert outcome.summary().startswith("failover of db would be refused: ")
    assert outcome.data()["dry_run"] is True
    assert not (tmp_path / "state.db").exists()


def _drill(stack: str, environment: str, mode: str, rto: float | None, minutes: int) -> DrillRow:
    started = T0 + dt.timedelta(minutes=minutes)
    return DrillRow(
        stack=stack, environment=environment, mode=mode, passed=rto is not None, actor="cli:t",
        started_at=started, finished_at=started + dt.timedelta(seconds=30),
        rto_seconds=rto, rpo_seconds=0.0 if rto is not None else None,
    )  # fmt: skip


def test_the_history_is_newest_first_and_mttr_counts_recoveries_of_the_same_mode_stack_and_environment(
    tmp_path: Path,
) -> None:
    sessions = session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    ids = [
        record_drill(sessions, row)
        for row in (
            _drill("shop", "production", "restore", 40.0, 0),
            _drill("shop", "production", "restore", None, 10),  # did not recover: no RTO
            _drill("shop", "staging", "restore", 99.0, 20),
            _drill("shop", "production", "full", 70.0, 30),
            _drill("blog", "production", "restore", 5.0, 40),
            _drill("shop", "production", "restore", 50.0, 50),
        )
    ]
    assert [d.id for d in drill_history(sessions)] == ids[::-1]
    assert [d.id for d in drill_history(sessions, limit=2)] == ids[:-3:-1]
    assert [
        d.rto_seconds for d in drill_history(sessions, mode="restore", stack="shop", environment="production")
    ] == [
        50.0,
        None,
        40.0,
    ]
    assert {
        mode: d.id for mode, d in last_drills(sessions, stack="shop", environment="production").items()
    } == {
        "restore": ids[5],
        "full": ids[3],
    }
    assert last_drills(sessions)["restore"].id == ids[5]  # every stack's, unless told
    stack = load_spec_text(SPEC, "shipyard.yaml").stack("production")
    assert sorted(_previous_recoveries(sessions, stack, "restore")) == [40.0, 50.0]
    assert _previous_recoveries(sessions, stack, "backup") == []
