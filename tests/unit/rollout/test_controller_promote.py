"""`promote` and `promote-full` through the controller: one step, or every remaining step skipped.

As in `test_controller`: a real SQLite store, a fake clock that only `sleep` moves, and a target
that records every split it is told to set. The command is queued in the store as the CLI, the API
and the dashboard queue it, and applied by the controller that runs the release.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from shipyard.rollout._controller import POLL_S, Controller, queue_command
from shipyard.rollout._model import Command
from shipyard.spec import Stack
from shipyard.state import RolloutCommandRow, open_engine, session_factory
from unit.rollout.test_controller import INTERVAL_S, FakeTarget, FakeTime

STACK = Stack.model_validate(
    {
        "name": "shop",
        "services": {"web": {"role": "web", "run": "app", "port": 8080}},
        "rollout": {
            "strategy": "canary",
            "steps": [{"weight": 10}, {"analysis": "600s"}, {"weight": 50}, {"analysis": "600s"}],
            "rollback_window": "0s",
            "analysis": {"interval": f"{INTERVAL_S}s", "window": "600s"},
        },
    }
)


@pytest.fixture
def sessions(tmp_path: Path) -> object:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _run_with(sessions: object, command: Command) -> tuple[FakeTarget, list[float], list[str]]:
    """Run a release of v2, queueing `command` a little into the 10 % step's analysis; the splits the
    target was told to set, when the command was queued, and the history's events."""
    time = FakeTime()
    target = FakeTarget(time.clock)
    controller = Controller(sessions, STACK, target, clock=time.clock, sleep=time.sleep)  # type: ignore[arg-type]
    rollout_id = controller.begin("web", "v2", "test")
    queued_at: list[float] = []

    def command_once_analysing() -> None:
        if not queued_at and any(weights.get("v2") == 10 for _, weights in target.weights):
            queue_command(sessions, "web", command, "ops")  # type: ignore[arg-type]
            queued_at.append(time.now)

    time.on_sleep.append(command_once_analysing)
    state = controller.run(rollout_id)
    assert state.outcome == "succeeded", state.reason
    return target, queued_at, [event.what for event in state.history]


def _candidate_weights(target: FakeTarget) -> list[int]:
    return [weights["v2"] for _, weights in target.weights]


def test_promote_goes_on_to_the_next_step_only(sessions: object) -> None:
    target, queued_at, events = _run_with(sessions, "promote")
    # 10 % → (promote ends its analysis) 50 % → its analysis runs out → 100 %.
    assert _candidate_weights(target) == [10, 50, 100]
    at_50 = next(at for at, weights in target.weights if weights["v2"] == 50)
    assert at_50 - queued_at[0] <= POLL_S + 1e-9  # applied at once, not at the interval's end
    assert events.count("command: promote") == 1
    assert events.count("analysis passed") == 1  # the 50 % step's analysis, not skipped


def test_promote_full_skips_every_remaining_step_to_100_percent(sessions: object) -> None:
    target, queued_at, events = _run_with(sessions, "promote-full")
    assert _candidate_weights(target) == [10, 100]  # the 50 % step and both analyses skipped
    at_100 = next(at for at, weights in target.weights if weights["v2"] == 100)
    assert at_100 - queued_at[0] <= POLL_S + 1e-9
    assert "command: promote-full" in events
    assert "analysis passed" not in events
    with sessions() as session:  # type: ignore[operator]
        applied = session.scalars(select(RolloutCommandRow)).one()
    assert (applied.command, applied.result) == ("promote-full", "ok")
