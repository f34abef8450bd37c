"""The controller between analyses: a command or a crash is acted on at once, not at the interval's end.

The controller runs on a real state store (SQLite) with a fake clock that only `sleep` moves, over
a target that does what it is told and records when: "at once" is then a statement about the fake
clock (the promote applied less than an analysis interval after it was queued), not about wall time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shipyard.rollout._controller import POLL_S, Controller, queue_command
from shipyard.rollout._model import (
    LATENCY_BUCKETS_MS,
    Health,
    MigrationResult,
    Sample,
    TargetStatus,
    bucket_index,
)
from shipyard.spec import Stack
from shipyard.state import open_engine, session_factory

INTERVAL_S = 60
"""Long, so that waiting for the end of one interval cannot pass for acting at once."""


@dataclass
class FakeTarget:
    """A target that does everything right, 100 req/s of 10 ms per version, on the fake clock."""

    clock: Callable[[], float]
    name: str = "fake"
    weights: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    crash: str | None = None

    def status(self, service: str) -> TargetStatus:
        return TargetStatus(service, {"v1": 100}, {"v1": Health(2, 2)})

    def prepare(self, service: str, version: str, instances: int) -> None:
        pass

    def health(self, service: str, version: str) -> Health:
        return Health(2, 2)

    def migrate(self, service: str, version: str) -> MigrationResult:
        return MigrationResult(ok=True, exit_code=0)

    def set_weights(self, service: str, weights: Mapping[str, int]) -> None:
        self.weights.append((self.clock(), dict(weights)))

    def crashed(self, service: str, version: str) -> str | None:
        return self.crash if version == "v2" else None

    def sample(self, service: str, version: str) -> Sample:
        requests = int(self.clock() * 100)
        buckets = [0] * len(LATENCY_BUCKETS_MS)
        buckets[bucket_index(10)] = requests
        return Sample(requests, 0, tuple(buckets))

    def retire(self, service: str, version: str) -> None:
        pass


@dataclass
class FakeTime:
    now: float = 1000.0
    on_sleep: list[Callable[[], None]] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for hook in self.on_sleep:
            hook()


STACK = Stack.model_validate(
    {
        "name": "shop",
        "services": {"web": {"role": "web", "run": "app", "port": 8080}},
        "rollout": {
            "strategy": "canary",
            "steps": [{"weight": 25}, {"analysis": "600s"}, {"weight": 100}],
            "rollback_window": "0s",
            "analysis": {"interval": f"{INTERVAL_S}s", "window": "600s"},
        },
    }
)


@pytest.fixture
def sessions(tmp_path: Path) -> object:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _controller(sessions: object, time: FakeTime, target: FakeTarget) -> Controller:
    return Controller(sessions, STACK, target, clock=time.clock, sleep=time.sleep)  # type: ignore[arg-type]


def _canary_has_traffic(target: FakeTarget) -> bool:
    return any(weights.get("v2", 0) > 0 for _, weights in target.weights)


def test_a_promote_queued_mid_interval_applies_before_the_interval_ends(sessions: object) -> None:
    time = FakeTime()
    target = FakeTarget(time.clock)
    controller = _controller(sessions, time, target)
    rollout_id = controller.begin("web", "v2", "test")
    queued_at: list[float] = []

    def promote_once_analysing() -> None:
        # A little into the first analysis interval (the canary took traffic), an operator promotes.
        if not queued_at and _canary_has_traffic(target):
            queue_command(sessions, "web", "promote", "ops")  # type: ignore[arg-type]
            queued_at.append(time.now)

    time.on_sleep.append(promote_once_analysing)
    state = controller.run(rollout_id)
    assert state.outcome == "succeeded"
    promoted_at = next(at for at, weights in target.weights if weights.get("v2") == 100)
    assert queued_at
    # Applied within one look for commands, long before the 60 s interval would have ended.
    assert promoted_at - queued_at[0] <= POLL_S + 1e-9
    assert promoted_at - queued_at[0] < INTERVAL_S
    events = [event.what for event in state.history]
    assert events.index("command: promote") < len(events) - 1
    assert "analysis passed" not in events  # the window did not have to end first


def test_a_candidate_crash_fails_the_release_at_once(sessions: object) -> None:
    time = FakeTime()
    target = FakeTarget(time.clock)
    controller = _controller(sessions, time, target)
    rollout_id = controller.begin("web", "v2", "test")
    crashed_at: list[float] = []

    def crash_once_serving() -> None:
        if not crashed_at and _canary_has_traffic(target):
            target.crash = "instance web.v2_1 exited with code 3; last lines of its log:\nboom"
            crashed_at.append(time.now)

    time.on_sleep.append(crash_once_serving)
    state = controller.run(rollout_id)
    assert state.outcome == "failed"
    assert state.reason == f"v2 crashed: {target.crash}"
    serving = next(i for i, (_, weights) in enumerate(target.weights) if weights.get("v2", 0) > 0)
    back_at = next(at for at, weights in target.weights[serving:] if weights.get("v1") == 100)
    assert back_at - crashed_at[0] <= POLL_S + 1e-9
    assert "analysis passed" not in [event.what for event in state.history]
