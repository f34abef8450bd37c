"""Properties of the strategies over random plans, random outcomes and random commands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shipyard.errors import RolloutError
from shipyard.rollout._model import (
    Action,
    Command,
    Done,
    Failed,
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
    Retire,
    SetWeights,
    Verdict,
    WaitHealthy,
    Weights,
)
from shipyard.rollout._strategy import (
    COMMANDS,
    FINISHED_PHASES,
    Phase,
    Plan,
    RolloutState,
    allowed_commands,
    is_finished,
    next_action,
    on_command,
    on_outcome,
    plan_steps,
    start,
)
from unit.rollout.rollout_kit import failing, happy, inconclusive, make_plan, passing

# --- generators --------------------------------------------------------------------------------------

spec_steps = st.lists(
    st.one_of(
        st.integers(0, 100).map(lambda w: {"weight": w}),
        st.integers(0, 120).map(lambda s: {"pause": s}),
        st.just({"pause": "until-promoted"}),
        st.integers(1, 120).map(lambda s: {"analysis": s}),
    ),
    max_size=8,
)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    policy: dict[str, Any] = {
        "steps": draw(spec_steps),
        "auto_promote": draw(st.booleans()),
        "rollback_window": draw(st.sampled_from([0, 30, 600])),
        "analysis": {"failure_limit": draw(st.integers(0, 2))},
    }
    return make_plan(
        draw(st.sampled_from(["canary", "blue-green"])),
        stable=draw(st.sampled_from(["v1", "v1", "v1", None])),
        migration=draw(st.booleans()),
        **policy,
    )


ANALYSES = (*[passing()] * 4, failing(), failing("p99_ms 900 > 500"), *[inconclusive()] * 2, passing(5))


@dataclass(frozen=True)
class Move:
    """One thing that happens to a release: the outcome of its action, any outcome, or a command."""

    kind: str  # "fitting", "outcome" or "command"
    value: Any
    dt: float
    """Seconds since the last move."""
    dice: tuple[int, int, int, int]
    """Uniform 0-99 draws choosing a fitting outcome (0 is the common case, which hypothesis favours)."""


def fitting(action: Action, dice: tuple[int, int, int, int]) -> Outcome:
    """A plausible outcome of `action`: mostly what a working target reports, sometimes a failure."""
    fail, variant, pick, complete = dice
    if fail >= 96:
        return Failed("unreachable")
    if isinstance(action, Migrate):
        ok = variant < 90
        return Migrated(MigrationResult(ok, 0 if ok else 1 + pick, "tail"))
    if isinstance(action, WaitHealthy):
        if variant < 85:
            return HealthChecked(Health(2, 2), timed_out=False)
        return HealthChecked(Health(pick % 2, 2), timed_out=complete % 2 == 0)
    if isinstance(action, Observe) or (isinstance(action, Hold) and variant < 70):
        return Observed(ANALYSES[pick % len(ANALYSES)], complete=complete % 2 == 1)
    return Done()


any_outcome = st.one_of(
    st.just(Done()),
    st.builds(Failed, st.text(max_size=5)),
    st.builds(Observed, st.sampled_from(ANALYSES), st.booleans()),
    st.builds(HealthChecked, st.builds(Health, st.integers(0, 3), st.integers(0, 3)), st.booleans()),
    st.builds(Migrated, st.builds(MigrationResult, st.booleans(), st.integers(0, 3))),
)
percent = st.integers(0, 99)


@st.composite
def a_move(draw: st.DrawFn) -> Move:
    """Mostly the outcome of the action asked for; sometimes any outcome, sometimes a command."""
    roll = draw(percent)
    dt = draw(st.sampled_from([0.0, 0.5, 2.0, 60.0, 700.0]))
    dice = draw(st.tuples(percent, percent, percent, percent))
    if roll < 82:
        return Move("fitting", None, dt, dice)
    if roll < 88:
        return Move("outcome", draw(any_outcome), dt, dice)
    return Move("command", draw(st.sampled_from(COMMANDS)), dt, dice)


moves = st.lists(a_move(), min_size=15, max_size=80)


# --- the invariants checked after every transition -----------------------------------------------------


@dataclass
class Watch:
    """What the properties need to remember across transitions."""

    cap: int | None = None  # the candidate's weight when a FAIL sent the release back
    attempt: int = 1


def check_state(state: RolloutState, now: float, watch: Watch) -> Action:
    plan = state.plan
    action = next_action(state, now)
    # pure: the same state gives the same action, whatever the clock says
    assert next_action(state, now) == action
    assert next_action(state, now + 12345.0) == action
    # plain values: a JSON round trip gives the same state
    data = json.loads(json.dumps(state.to_data(), allow_nan=False))
    assert RolloutState.from_data(data) == state
    assert state.weights.stable + state.weights.candidate == 100
    assert 0 <= state.step < len(plan_steps(plan))
    if state.attempt != watch.attempt:  # a retry starts over
        watch.attempt, watch.cap = state.attempt, None
    if watch.cap is not None:
        assert state.weights.candidate <= watch.cap
        assert not (isinstance(action, SetWeights) and action.weights.candidate > 0)
    # what each phase may ask for
    if isinstance(action, Finish):
        assert state.phase in FINISHED_PHASES
        assert action.outcome == state.outcome
    else:
        assert state.phase not in FINISHED_PHASES
        assert not is_finished(state)
    if state.phase is Phase.ROLLING_BACK:
        assert action in (SetWeights(Weights(100, 0)), Retire(plan.candidate))
    if state.phase is Phase.PAUSED:
        assert isinstance(action, Hold)
    # a version is never retired while it has traffic
    if isinstance(action, Retire):
        has = state.weights.candidate if action.version == plan.candidate else state.weights.stable
        assert has == 0, (action, state.weights)
    # the stable is retired only once the candidate has everything
    if isinstance(action, Retire) and action.version == plan.stable:
        assert state.weights == Weights(0, 100)
    # traffic moves only after the candidate proved healthy
    if isinstance(action, SetWeights) and action.weights.candidate > 0:
        assert any(e.what == "healthy" for e in state.history)
    return action


def run_moves(plan: Plan, chosen: list[Move]) -> None:
    now = 1000.0
    state = start(plan, now)
    watch = Watch()
    action = check_state(state, now, watch)
    for move in chosen:
        now += move.dt
        kind, value = move.kind, move.value
        if kind == "fitting" and state.phase in FINISHED_PHASES and "retry" in allowed_commands(state):
            kind, value = "command", "retry"  # go round again rather than idle at the end
        if kind == "command":
            command: Command = value
            allowed = allowed_commands(state)
            if command not in allowed:
                with pytest.raises(RolloutError, match="allowed now:"):
                    on_command(state, command, now)
                continue
            after = on_command(state, command, now)
        else:
            outcome = fitting(action, move.dice) if kind == "fitting" else value
            if isinstance(action, Finish) and move.dice[1] < 50:
                outcome = Done()
            after = on_outcome(state, outcome, now)
            failed = isinstance(outcome, Observed) and outcome.analysis.verdict is Verdict.FAIL
            sent_back = after.phase is Phase.ROLLING_BACK or (
                after.phase in FINISHED_PHASES and after.outcome != "succeeded"
            )
            if (
                failed
                and sent_back
                and state.phase is not Phase.ROLLING_BACK
                and state.failures < after.failures
            ):
                # a FAIL over the limit: nothing more for the candidate, the very next action goes back
                watch.cap = state.weights.candidate
                event("a FAIL sent the release back" + (" with traffic" if state.weights.candidate else ""))
                first = next_action(after, now)
                if plan.stable is not None and state.weights.candidate > 0:
                    assert first == SetWeights(Weights(100, 0))
                else:
                    assert isinstance(first, SetWeights | Retire | Finish)
                    assert not (isinstance(first, SetWeights) and first.weights.candidate > 0)
        assert len(after.history) >= len(state.history)
        assert after.history[: len(state.history)] == state.history
        state = after
        action = check_state(state, now, watch)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans(), chosen=moves)
def test_random_outcomes_and_commands_keep_every_invariant(plan: Plan, chosen: list[Move]) -> None:
    run_moves(plan, chosen)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans(), chosen=moves)
def test_a_cooperative_controller_always_reaches_the_end(plan: Plan, chosen: list[Move]) -> None:
    """From any reachable state, doing what is asked (and promoting what waits) finishes the release."""
    now = 0.0
    state = start(plan, now)
    for move in chosen:  # wander somewhere first
        now += move.dt
        if move.kind == "command":
            if move.value in allowed_commands(state):
                state = on_command(state, move.value, now)
        else:
            outcome = move.value if move.kind == "outcome" else fitting(next_action(state, now), move.dice)
            state = on_outcome(state, outcome, now)
    for _ in range(100):
        if is_finished(state):
            break
        action = next_action(state, now)
        now += 1
        if isinstance(action, Hold) and action.until is None:
            allowed = allowed_commands(state)
            command = next(c for c in ("promote", "resume", "abort") if c in allowed)
            state = on_command(state, command, now)
            continue
        if isinstance(action, Hold) and action.until is not None:
            now = max(now, action.until)
        state = on_outcome(state, happy(action), now)
    assert is_finished(state)
    assert state.phase in FINISHED_PHASES


@settings(max_examples=100, deadline=None)
@given(plan=plans())
def test_a_good_release_ends_with_the_candidate_serving_everything(plan: Plan) -> None:
    now = 0.0
    state = start(plan, now)
    weights_asked: list[int] = []
    for _ in range(100):
        if is_finished(state):
            break
        action = next_action(state, now)
        if isinstance(action, SetWeights):
            weights_asked.append(action.weights.candidate)
        if isinstance(action, Hold) and action.until is None:
            state = on_command(state, "promote", now)
            continue
        if isinstance(action, Hold) and action.until is not None:
            now = max(now, action.until)
        now += 1
        state = on_outcome(state, happy(action), now)
    assert state.outcome == "succeeded"
    assert state.weights == Weights(0, 100)
    assert weights_asked[-1] == 100
    assert state.stable_retired is (plan.stable is not None)
    if plan.strategy == "blue-green" or plan.stable is None:
        assert weights_asked == [100]
