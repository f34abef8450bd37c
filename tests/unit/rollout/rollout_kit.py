"""Builders and a driver for the strategy tests: plans, analyses, samples, and a fake controller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipyard.rollout._analysis import analyse
from shipyard.rollout._model import (
    LATENCY_BUCKETS_MS,
    Action,
    Analysis,
    Check,
    Done,
    Finish,
    Health,
    HealthChecked,
    Hold,
    Migrate,
    Migrated,
    MigrationResult,
    Observe,
    Observed,
    Outcome,
    Sample,
    Verdict,
    WaitHealthy,
    bucket_index,
)
from shipyard.rollout._strategy import Plan, RolloutState, is_finished, next_action, on_outcome
from shipyard.spec import Analysis as AnalysisPolicy
from shipyard.spec import Rollout


def make_plan(
    strategy: str = "canary",
    *,
    stable: str | None = "v1",
    candidate: str = "v2",
    instances: int = 2,
    migration: bool = False,
    **policy: Any,
) -> Plan:
    return Plan(
        service="api",
        strategy=strategy,  # type: ignore[arg-type]
        stable=stable,
        candidate=candidate,
        instances=instances,
        policy=Rollout.model_validate({"strategy": strategy, **policy}),
        has_migration=migration,
    )


def passing(requests: int = 1000) -> Analysis:
    check = Check("error_rate", Verdict.PASS, 0.001, 0.001, 0.02, "error_rate 0.001 <= 0.02 (stable 0.001)")
    return Analysis(Verdict.PASS, (check,), requests, requests * 10)


def failing(detail: str = "error_rate 0.198 > 0.02 (stable 0.000)", rate: float = 0.198) -> Analysis:
    check = Check("error_rate", Verdict.FAIL, rate, 0.0, 0.02, detail)
    return Analysis(Verdict.FAIL, (check,), 200, 2000)


def inconclusive(requests: int = 12) -> Analysis:
    check = Check(
        "error_rate", Verdict.INCONCLUSIVE, 0.0, 0.0, 0.02, f"{requests} requests < min_requests 20"
    )
    return Analysis(Verdict.INCONCLUSIVE, (check,), requests, 500)


def sample(requests: int, errors: int = 0, latency_ms: float = 10.0) -> Sample:
    """A window of `requests` requests all taking `latency_ms`."""
    buckets = [0] * len(LATENCY_BUCKETS_MS)
    buckets[bucket_index(latency_ms)] = requests
    return Sample(requests, errors, tuple(buckets))


def real_analysis(
    requests: int, errors: int, *, stable_requests: int = 4000, stable_errors: int = 0
) -> Analysis:
    return analyse(sample(requests, errors), sample(stable_requests, stable_errors), AnalysisPolicy())


def happy(action: Action) -> Outcome:
    """What a target that does everything right reports."""
    if isinstance(action, Migrate):
        return Migrated(MigrationResult(ok=True, exit_code=0))
    if isinstance(action, WaitHealthy):
        return HealthChecked(Health(2, 2), timed_out=False)
    if isinstance(action, Observe):
        return Observed(passing(), complete=True)
    return Done()


Responder = Callable[[Action, RolloutState], Outcome]


def drive(
    state: RolloutState,
    respond: Responder | None = None,
    *,
    now: float = 0.0,
    limit: int = 100,
) -> tuple[RolloutState, list[Action], float]:
    """Run a fake controller until the release is finished or holds until promoted.

    Returns the state, every action asked for (Finish included) and the clock. A timed Hold
    moves the clock to its end and reports Done.
    """
    actions: list[Action] = []
    for _ in range(limit):
        if is_finished(state):
            break
        action = next_action(state, now)
        actions.append(action)
        if isinstance(action, Hold):
            if action.until is None:
                break
            now = max(now, action.until)
        outcome = respond(action, state) if respond else happy(action)
        if isinstance(action, Finish):
            outcome = Done()
        now += 1.0
        state = on_outcome(state, outcome, now)
    return state, actions, now


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]
