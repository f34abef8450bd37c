"""The release verbs and read model of `ops._releases` over a real SQLite store, with releases
recorded as the local controller and the Argo driver record them (no target is touched here)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from shipyard.errors import NotFoundError, UserError
from shipyard.jobs import parse_request
from shipyard.ops import Workspace
from shipyard.ops._releases import (
    Deploy,
    Resume,
    Rollback,
    Steer,
    latest_releases,
    release_history,
    release_steps,
    release_view,
    steer,
)
from shipyard.rollout import Plan, describe_plan, start
from shipyard.rollout._model import Done, Prepare
from shipyard.rollout._strategy import next_action, on_outcome
from shipyard.spec import Rollout
from shipyard.state import AuditRow, RolloutCommandRow, RolloutRow, RolloutStepRow

SPEC = """\
name: shop
services:
  web: {role: web, run: "exec true", port: 8080}
environments:
  test: {}
"""


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC)
    return Workspace(
        spec_path=spec,
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'state.db'}",
        actor="token:ops",
        state_dir=tmp_path / "state",
    )


def _plan(**policy: Any) -> Plan:
    return Plan(
        service="web",
        strategy="canary",
        stable="v1",
        candidate="v2",
        instances=2,
        policy=Rollout.model_validate({"strategy": "canary", **policy}),
        has_migration=False,
    )


def _record(ws: Workspace, *, finished: bool = False, target: str = "local", **row: Any) -> int:
    state = start(_plan(), time.time())
    action = next_action(state, time.time())
    assert isinstance(action, Prepare)
    state = on_outcome(state, Done(), time.time(), action=action)
    values: dict[str, Any] = {
        "service": "web",
        "environment": "test",
        "target": target,
        "strategy": "canary",
        "stable": "v1",
        "candidate": "v2",
        "phase": str(state.phase),
        "actor": "cli:ops",
        "stack": {},
        "state": state.to_data(),
    }
    values.update(row)
    if finished:
        values |= {"outcome": "succeeded", "phase": "succeeded", "finished_at": values.get("finished_at")}
    with ws.sessions() as session, session.begin():
        release = RolloutRow(**values)
        if finished:
            from shipyard.state import utcnow  # noqa: PLC0415

            release.finished_at = utcnow()
        session.add(release)
        session.flush()
        session.add(
            RolloutStepRow(
                rollout_id=release.id,
                seq=1,
                action={"type": "WaitHealthy", "version": "v2"},
                status="done",
                outcome={"type": "HealthChecked", "health": {"healthy": 2, "total": 2}, "timed_out": False},
            )
        )
        return release.id


def _rows(ws: Workspace, table: type[Any]) -> list[Any]:
    with ws.sessions() as session:
        return list(session.scalars(select(table)))


def test_the_view_of_a_local_release_has_its_plan_step_health_and_commands(ws: Workspace) -> None:
    rollout_id = _record(ws)
    view = release_view(ws, "web")
    assert (view.id, view.target, view.stable, view.candidate) == (rollout_id, "local", "v1", "v2")
    assert (view.weights.stable, view.weights.candidate) == (100, 0)
    assert view.step == 1
    assert view.plan_steps == len(describe_plan(_plan()))
    assert view.health == "2/2 healthy"
    assert "abort" in view.commands
    assert [step.action["type"] for step in view.steps] == ["WaitHealthy"]
    data = view.data()
    assert data["weights"] == {"stable": 100, "candidate": 0}
    assert data["started_at"].endswith("Z")
    assert data["finished_at"] is None
    assert [s.data()["action"]["type"] for s in release_steps(ws.sessions, rollout_id)] == ["WaitHealthy"]


def test_a_release_recorded_by_another_version_is_shown_without_its_state(ws: Workspace) -> None:
    _record(ws, state={"format": 99})
    view = release_view(ws.sessions, "web")
    assert (view.step, view.commands, view.weights.stable) == (None, (), None)


def test_the_view_of_a_kubernetes_release_is_the_rollouts_last_status(ws: Workspace) -> None:
    status = {"phase": "Paused", "step_index": 3, "step_count": 7, "paused": True, "aborted": False,
              "message": "", "weights": {"stable": 75, "candidate": 25}}  # fmt: skip
    _record(
        ws,
        target="kubernetes",
        phase="Paused",
        state={"kubernetes": {"namespace": "shop-test", "objects": ["Rollout/web"], "status": status}},
    )
    view = release_view(ws, "web")
    assert view.kubernetes is not None
    assert (view.kubernetes.namespace, view.kubernetes.phase, view.kubernetes.step) == (
        "shop-test",
        "Paused",
        3,
    )
    assert (view.weights.stable, view.weights.candidate) == (75, 25)
    assert view.commands == ("promote", "promote-full", "abort", "pause", "resume")
    assert view.data()["kubernetes"]["objects"] == ["Rollout/web"]


def test_lists_and_history(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match="never been released"):
        release_view(ws, "web")
    first = _record(ws, finished=True)
    second = _record(ws)
    assert [view.id for view in release_history(ws, "web")] == [second, first]
    assert [view.id for view in latest_releases(ws)] == [second]
    assert latest_releases(ws, target="kubernetes") == []


def test_steering_an_unattended_release_queues_the_command_and_asks_for_a_controller(ws: Workspace) -> None:
    rollout_id = _record(ws)
    outcome = steer(ws, Steer(service="web", command="abort"))
    assert (outcome.rollout_id, outcome.target, outcome.controller_running, outcome.needs_controller) == (
        rollout_id,
        "local",
        False,
        True,
    )
    (queued,) = _rows(ws, RolloutCommandRow)
    assert (queued.command, queued.actor, queued.applied_at) == ("abort", "token:ops", None)
    (audit,) = _rows(ws, AuditRow)
    assert (audit.action, audit.actor, audit.outcome) == ("rollout.abort", "token:ops", "queued")


def test_steering_a_finished_release_needs_no_controller_but_retry_does(ws: Workspace) -> None:
    _record(ws, finished=True)
    assert steer(ws, Steer(service="web", command="pause")).needs_controller is False
    assert steer(ws, Steer(service="web", command="retry")).needs_controller is True


def test_a_dry_run_steer_writes_nothing_and_says_what_would_happen(ws: Workspace) -> None:
    rollout_id = _record(ws)
    outcome = steer(ws, Steer(service="web", command="abort", dry_run=True))
    assert outcome.plan is not None
    assert outcome.plan.rollout_id == rollout_id
    assert outcome.plan.actions[0].startswith(f"queue abort for release {rollout_id}")
    assert any("no controller runs the release" in action for action in outcome.plan.actions)
    assert _rows(ws, RolloutCommandRow) == []
    assert _rows(ws, AuditRow) == []
    refused = steer(ws, Steer(service="web", command="resume", dry_run=True))
    assert refused.plan is not None
    assert refused.plan.refused is not None
    assert "cannot resume" in refused.plan.refused
    assert not refused.ok


def test_steering_expects_the_target_it_names(ws: Workspace) -> None:
    rollout_id = _record(ws)
    with pytest.raises(UserError, match=f"release {rollout_id} of 'web' runs on local: add `--target local`"):
        steer(ws, Steer(service="web", command="abort", target="kubernetes"))
    with pytest.raises(UserError, match="never been released"):
        steer(ws, Steer(service="api", command="abort"))


def test_requests_go_through_a_job_as_json() -> None:
    for request in (
        Deploy(service="web", version="v2", strategy="canary"),
        Rollback(service="web"),
        Resume(service="web"),
    ):
        assert parse_request(request.model_dump(mode="json")) == request


def test_a_plan_in_words() -> None:
    assert describe_plan(_plan(steps=[{"weight": 10}, {"analysis": "30s"}], rollback_window=0)) == (
        "start 2 instances of v2, taking no traffic yet",
        "wait until v2 is healthy (at most 60s)",
        "set weights v1 90% / v2 10%",
        "analyse for 30s (rolls back on a failed check)",
        "set weights v1 0% / v2 100%",
        "retire v1",
    )
