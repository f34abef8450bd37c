"""The blue-green and canary state machines, path by path."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from shipyard.errors import RolloutError
from shipyard.rollout._model import (
    Action,
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
    Prepare,
    Retire,
    SetWeights,
    WaitHealthy,
    Weights,
)
from shipyard.rollout._strategy import (
    Phase,
    RolloutState,
    Step,
    describe,
    is_finished,
    next_action,
    on_command,
    on_crash,
    on_outcome,
    plan_steps,
    record_baseline,
    start,
)
from unit.rollout.rollout_kit import (
    drive,
    failing,
    happy,
    inconclusive,
    kinds,
    make_plan,
    passing,
    real_analysis,
)


def W(stable: int, candidate: int) -> Weights:
    return Weights(stable, candidate)


def at(state: RolloutState, wanted: type[Action], now: float = 0.0) -> tuple[RolloutState, float]:
    """Drive a happy release until its next action is of type `wanted` (the first such one)."""

    for _ in range(50):
        action = next_action(state, now)
        if isinstance(action, wanted):
            return state, now
        if isinstance(action, Hold) and action.until is not None:
            now = max(now, action.until)
        now += 1
        state = on_outcome(state, happy(action), now)
    raise AssertionError(f"never reached {wanted.__name__}")


def advance(state: RolloutState, outcome: Outcome, now: float = 1.0) -> tuple[RolloutState, Action]:
    state = on_outcome(state, outcome, now)
    return state, next_action(state, now)


# --- blue-green ---------------------------------------------------------------------------------


def test_blue_green_goes_through_the_seven_steps() -> None:
    plan = make_plan("blue-green", migration=True)
    state, actions, _ = drive(start(plan, 0.0))
    assert actions[:5] == [
        Migrate("v2"),
        Prepare("v2", 2),
        WaitHealthy("v2", 60.0),
        SetWeights(W(0, 100)),
        Observe(10.0, 2.0),
    ]
    hold = actions[5]
    assert isinstance(hold, Hold)
    assert hold.until == 5.0 + 600  # the switch's analysis ended at t=5: blue kept warm 600 s from then
    assert actions[6:] == [Retire("v1"), Finish("succeeded", "v2 serves all traffic; v1 retired")]
    assert state.phase is Phase.SUCCEEDED
    assert is_finished(state)
    assert state.stable_retired
    assert state.weights == W(0, 100)


def test_blue_green_without_migration_starts_with_prepare() -> None:
    _, actions, _ = drive(start(make_plan("blue-green"), 0.0))
    assert kinds(actions) == ["Prepare", "WaitHealthy", "SetWeights", "Observe", "Hold", "Retire", "Finish"]


def test_blue_green_ignores_canary_steps() -> None:
    plan = make_plan("blue-green", steps=[{"weight": 10}, {"pause": 30}])
    assert [s.kind for s in plan_steps(plan)] == [
        "prepare",
        "health",
        "weight",
        "observe",
        "warm",
        "retire_stable",
    ]


def test_first_deploy_skips_the_comparison_and_the_warm_hold() -> None:
    for strategy in ("blue-green", "canary"):
        plan = make_plan(strategy, stable=None, migration=True)
        state, actions, _ = drive(start(plan, 0.0))
        assert actions == [
            Migrate("v2"),
            Prepare("v2", 2),
            WaitHealthy("v2", 60.0),
            SetWeights(W(0, 100)),
            Observe(10.0, 2.0),
            Finish("succeeded", "v2 serves all traffic (first deploy)"),
        ]
        assert state.phase is Phase.SUCCEEDED


def test_blue_green_rollback_during_the_warm_hold_switches_back_at_once() -> None:
    state, now = at(start(make_plan("blue-green"), 0.0), Hold)
    assert state.phase is Phase.PROMOTING
    state = on_command(state, "rollback", now)
    assert state.phase is Phase.ROLLING_BACK
    state, actions, _ = drive(state, now=now)
    assert actions == [SetWeights(W(100, 0)), Retire("v2"), Finish("rolled_back", "manual rollback")]
    assert state.phase is Phase.ROLLED_BACK
    assert state.weights == W(100, 0)


def test_blue_green_promote_during_the_warm_hold_retires_blue_now() -> None:
    state, now = at(start(make_plan("blue-green"), 0.0), Hold)
    state = on_command(state, "promote", now)
    assert next_action(state, now) == Retire("v1")
    state, actions, _ = drive(state, now=now)
    assert kinds(actions) == ["Retire", "Finish"]
    assert state.outcome == "succeeded"


def test_blue_green_failed_analysis_after_the_switch_rolls_back() -> None:
    state, now = at(start(make_plan("blue-green"), 0.0), Observe)
    assert state.weights == W(0, 100)
    state, action = advance(state, Observed(failing(), complete=False), now)
    assert action == SetWeights(W(100, 0))
    state, actions, _ = drive(state, now=now)
    assert actions == [
        SetWeights(W(100, 0)),
        Retire("v2"),
        Finish("rolled_back", "error_rate 0.198 > 0.02 (stable 0.000)"),
    ]


def test_a_bad_analysis_during_the_warm_hold_still_rolls_back() -> None:
    state, now = at(start(make_plan("blue-green"), 0.0), Hold)
    state, action = advance(state, Observed(failing(), complete=False), now + 30)
    assert action == SetWeights(W(100, 0))


def test_blue_green_without_auto_promote_waits_before_the_switch() -> None:
    state, now = at(start(make_plan("blue-green", auto_promote=False), 0.0), Hold)
    assert next_action(state, now) == Hold(None, 2.0)
    assert state.phase is Phase.PAUSED
    assert state.weights == W(100, 0)
    assert on_outcome(state, Done(), now).step == state.step  # only promote ends the gate
    state = on_command(state, "promote", now)
    assert next_action(state, now) == SetWeights(W(0, 100))


def test_no_warm_hold_when_the_rollback_window_is_zero() -> None:
    _, actions, _ = drive(start(make_plan("blue-green", rollback_window=0), 0.0))
    assert kinds(actions) == ["Prepare", "WaitHealthy", "SetWeights", "Observe", "Retire", "Finish"]


# --- canary ---------------------------------------------------------------------------------------


def test_canary_default_steps_5_25_50_100() -> None:
    state, actions, _ = drive(start(make_plan(migration=True), 0.0))
    assert actions[:11] == [
        Migrate("v2"),
        Prepare("v2", 2),
        WaitHealthy("v2", 60.0),
        SetWeights(W(95, 5)),
        Observe(10.0, 2.0),
        SetWeights(W(75, 25)),
        Observe(10.0, 2.0),
        SetWeights(W(50, 50)),
        Observe(10.0, 2.0),
        SetWeights(W(0, 100)),
        Hold(10.0 + 600, 2.0),
    ]
    assert actions[11:] == [Retire("v1"), Finish("succeeded", "v2 serves all traffic; v1 retired")]
    assert state.phase is Phase.SUCCEEDED


def test_canary_phases_follow_the_steps() -> None:
    state = start(make_plan(), 0.0)
    phases = []
    for _ in range(20):
        phases.append(state.phase)
        action = next_action(state, 0.0)
        if isinstance(action, Finish):
            break
        state = on_outcome(state, happy(action), 0.0)
    assert phases == [
        Phase.PREPARING,
        Phase.HEALTH_CHECK,
        Phase.PROGRESSING,
        Phase.ANALYSING,
        Phase.PROGRESSING,
        Phase.ANALYSING,
        Phase.PROGRESSING,
        Phase.ANALYSING,
        Phase.PROMOTING,
        Phase.PROMOTING,
        Phase.PROMOTING,
        Phase.SUCCEEDED,
    ]


def test_canary_pauses_and_an_implicit_final_step() -> None:
    steps = [
        {"weight": 10},
        {"pause": "30s"},
        {"analysis": "1m"},
        {"pause": "until-promoted"},
        {"weight": 40},
    ]
    plan = make_plan(steps=steps, rollback_window=60)
    state, actions, now = drive(start(plan, 0.0))
    assert actions == [
        Prepare("v2", 2),
        WaitHealthy("v2", 60.0),
        SetWeights(W(90, 10)),
        Hold(3.0 + 30, 2.0),
        Observe(60.0, 2.0),
        Hold(None, 2.0),
    ]
    assert state.phase is Phase.PAUSED
    assert state.reason == "paused until promoted"
    assert state.weights == W(90, 10)
    # promote: the next step (40 %); promote-full from there: skip to 100 %.
    promoted = on_command(state, "promote", now)
    assert next_action(promoted, now) == SetWeights(W(60, 40))
    state = on_command(state, "promote-full", now)
    state, actions, _ = drive(state, now=now)
    assert actions[0] == SetWeights(W(0, 100))
    assert kinds(actions) == ["SetWeights", "Hold", "Retire", "Finish"]
    assert plan_steps(plan)[-4:] == (
        Step("weight", weight=40),
        Step("weight", weight=100),
        Step("warm", seconds=60.0),
        Step("retire_stable"),
    )


def test_steps_that_already_end_at_100_get_no_extra_step() -> None:
    plan = make_plan(steps=[{"weight": 50}, {"weight": 100}, {"analysis": 30}])
    assert [s.kind for s in plan_steps(plan)] == [
        "prepare",
        "health",
        "weight",
        "weight",
        "observe",
        "warm",
        "retire_stable",
    ]


def test_auto_promote_off_holds_before_the_last_step() -> None:
    state, actions, now = drive(start(make_plan(auto_promote=False), 0.0))
    assert actions[-3:] == [SetWeights(W(50, 50)), Observe(10.0, 2.0), Hold(None, 2.0)]
    assert state.reason == "waiting for promote (auto_promote is off)"
    state = on_command(state, "promote", now)
    assert next_action(state, now) == SetWeights(W(0, 100))


def test_a_timed_pause_ends_with_done() -> None:
    plan = make_plan(steps=[{"weight": 20}, {"pause": 45}])
    state, now = at(start(plan, 0.0), Hold)
    assert next_action(state, now) == Hold(state.hold_until, 2.0)
    assert state.hold_until == now + 45 - 0  # entered when the weight was set
    state, action = advance(state, Observed(passing(), complete=False), now + 10)
    assert isinstance(action, Hold)  # a passing analysis does not end a pause
    state, action = advance(state, Done(), now + 45)
    assert action == SetWeights(W(0, 100))


def test_a_failed_analysis_resets_the_weights_before_anything_else() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    assert state.weights == W(95, 5)
    analysis = real_analysis(202, 40)
    state, action = advance(state, Observed(analysis, complete=False), now)
    assert action == SetWeights(W(100, 0))
    assert state.phase is Phase.ROLLING_BACK
    assert state.outcome == "rolled_back"
    reason = "error_rate 0.198 > 0.02 (stable 0.000): 40 of 202 requests failed"
    assert state.reason == reason
    event = state.history[-1]
    assert event.what == "analysis failed"
    assert next((c.name, c.candidate, c.threshold) for c in event.checks) == ("error_rate", 40 / 202, 0.02)
    state, actions, _ = drive(state, now=now)
    assert actions == [SetWeights(W(100, 0)), Retire("v2"), Finish("rolled_back", reason)]
    assert [e.what for e in state.history[-3:]] == ["weights reset", "retired", "finished"]


def test_failure_limit_tolerates_that_many_failed_analyses() -> None:
    plan = make_plan(analysis={"failure_limit": 1})
    state, now = at(start(plan, 0.0), Observe)
    state, action = advance(state, Observed(failing(), complete=False), now)
    assert action == Observe(10.0, 2.0)
    assert state.failures == 1
    assert "failure 1 of 1 tolerated" in state.history[-1].reason
    state, action = advance(state, Observed(failing("p99_ms 900 > 500", 0.5), complete=False), now + 2)
    assert action == SetWeights(W(100, 0))
    assert state.reason == "p99_ms 900 > 500 (2 failed analyses > failure_limit 1)"


def test_a_tolerated_failure_at_the_end_of_the_window_goes_on() -> None:
    state, now = at(start(make_plan(analysis={"failure_limit": 2}), 0.0), Observe)
    state, action = advance(state, Observed(failing(), complete=True), now)
    assert action == SetWeights(W(75, 25))


def test_interim_analyses_change_nothing_but_the_latest_analysis() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    after = on_outcome(state, Observed(passing(40), complete=False), now)
    assert next_action(after, now) == next_action(state, now)
    assert after.history == state.history
    assert after.analysis == passing(40)


def test_inconclusive_windows_are_observed_again_then_pause_until_promote_or_retry() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    # the first max_inconclusive - 1 (default 3) inconclusive windows are observed afresh
    for window in (1, 2):
        state, action = advance(state, Observed(inconclusive(12), complete=True), now)
        assert action == Observe(10.0, 2.0)
        assert state.phase is Phase.ANALYSING
        assert state.inconclusive == window
        assert state.history[-1].reason == (
            f"inconclusive: 12 requests < min_requests 20 (window {window} of 3: observing again)"
        )
    state, action = advance(state, Observed(inconclusive(12), complete=True), now)
    assert state.phase is Phase.PAUSED
    assert state.reason == "inconclusive: 12 requests < min_requests 20 (3 inconclusive windows in a row)"
    assert action == Hold(None, 2.0)
    # still watched: a failure while paused rolls back
    _, action = advance(state, Observed(failing(), complete=False), now + 2)
    assert action == SetWeights(W(100, 0))
    # retry analyses the same step again
    retried = on_command(state, "retry", now)
    assert next_action(retried, now) == Observe(10.0, 2.0)
    assert retried.weights == W(95, 5)
    # promote goes on to the next step (not straight to 100 %)
    promoted = on_command(state, "promote", now)
    assert next_action(promoted, now) == SetWeights(W(75, 25))
    # promote-full skips the rest: straight to 100 %
    assert next_action(on_command(state, "promote-full", now), now) == SetWeights(W(0, 100))
    with pytest.raises(RolloutError, match="allowed now: promote, promote-full, retry, rollback, abort"):
        on_command(state, "resume", now)


def test_a_passed_window_after_an_inconclusive_one_moves_on_and_resets_the_count() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    state, _ = advance(state, Observed(inconclusive(12), complete=True), now)
    state, action = advance(state, Observed(passing(), complete=True), now + 10)
    assert action == SetWeights(W(75, 25))
    assert state.inconclusive == 0
    assert RolloutState.from_data(state.to_data()) == state


def test_a_state_stored_before_inconclusive_and_baseline_were_kept_still_loads() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    state = record_baseline(state, 12.5, "v1 p99 12.5 ms over 400 requests", now)
    data = state.to_data()
    assert RolloutState.from_data(data).baseline_p99_ms == 12.5
    old = {k: v for k, v in data.items() if k not in ("inconclusive", "baseline_p99_ms")}
    loaded = RolloutState.from_data(old)
    assert (loaded.inconclusive, loaded.baseline_p99_ms) == (0, None)


def test_an_inconclusive_interim_analysis_does_not_pause() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    state, action = advance(state, Observed(inconclusive(3), complete=False), now)
    assert action == Observe(10.0, 2.0)


def test_promote_full_skips_a_canary_to_100_percent() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    state = on_command(state, "promote-full", now)
    assert next_action(state, now) == SetWeights(W(0, 100))
    assert state.history[-1].what == "command: promote-full"
    assert RolloutState.from_data(state.to_data()) == state


def test_promote_ends_the_current_analysis_and_goes_to_the_next_step() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    state = on_command(state, "promote", now)
    assert next_action(state, now) == SetWeights(W(75, 25))
    assert (state.history[-1].what, state.history[-1].reason) == ("command: promote", "ending the analysis")


def test_pause_holds_at_the_current_weights_and_resume_repeats_the_step() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    state = on_command(state, "pause", now)
    assert state.phase is Phase.PAUSED
    assert next_action(state, now) == Hold(None, 2.0)
    assert state.weights == W(95, 5)
    assert on_outcome(state, Done(), now).step == state.step
    state = on_command(state, "resume", now + 100)
    assert state.phase is Phase.ANALYSING
    assert next_action(state, now) == Observe(10.0, 2.0)


def test_pause_keeps_the_deadline_of_a_timed_pause() -> None:
    plan = make_plan(steps=[{"weight": 20}, {"pause": 45}])
    state, now = at(start(plan, 0.0), Hold)
    deadline = state.hold_until
    state = on_command(on_command(state, "pause", now), "resume", now + 500)
    assert next_action(state, now + 500) == Hold(deadline, 2.0)


def test_pausing_the_warm_hold_keeps_the_stable_warm_until_resumed() -> None:
    state, now = at(start(make_plan(), 0.0), Hold)
    state = on_command(state, "pause", now)
    assert next_action(state, now) == Hold(None, 2.0)
    with pytest.raises(RolloutError, match="allowed now: promote, resume, rollback, abort"):
        on_command(state, "pause", now)
    state = on_command(state, "promote", now)
    assert next_action(state, now) == Retire("v1")


# --- failures before and after traffic moves ------------------------------------------------------------


def test_a_failed_migration_retires_the_candidate_without_moving_traffic() -> None:
    state = start(make_plan(migration=True), 0.0)
    result = MigrationResult(ok=False, exit_code=3, output_tail="applying 0042\nERROR: column exists\n\n")
    state, actions, _ = drive(state, lambda a, s: Migrated(result) if isinstance(a, Migrate) else happy(a))
    reason = "migration with v2 failed with exit code 3: ERROR: column exists"
    assert actions == [Migrate("v2"), Retire("v2"), Finish("failed", reason)]
    assert state.phase is Phase.FAILED


def test_a_health_timeout_retires_the_candidate_without_moving_traffic() -> None:
    def respond(action: Action, state: RolloutState) -> Outcome:
        if isinstance(action, WaitHealthy):
            return HealthChecked(Health(1, 2, "v2-1: connection refused"), timed_out=True)
        return happy(action)

    _, actions, _ = drive(start(make_plan("blue-green"), 0.0), respond)
    reason = "health check never passed: 1/2 instances of v2 healthy after 60s (v2-1: connection refused)"
    assert actions == [Prepare("v2", 2), WaitHealthy("v2", 60.0), Retire("v2"), Finish("failed", reason)]
    assert not any(isinstance(a, SetWeights) for a in actions)


def test_not_healthy_yet_but_not_timed_out_waits_on() -> None:
    state, now = at(start(make_plan(), 0.0), WaitHealthy)
    state, action = advance(state, HealthChecked(Health(1, 2), timed_out=False), now)
    assert action == WaitHealthy("v2", 60.0)


@pytest.mark.parametrize(
    ("failing_action", "expected"),
    [
        (Prepare, [Retire("v2")]),
        (WaitHealthy, [Retire("v2")]),
        (SetWeights, [SetWeights(W(100, 0)), Retire("v2")]),  # the switch may have happened
        (Observe, [SetWeights(W(100, 0)), Retire("v2")]),
    ],
)
def test_a_failed_action_goes_back_to_the_stable(
    failing_action: type[Action], expected: list[Action]
) -> None:
    state, now = at(start(make_plan(), 0.0), failing_action)
    first = next_action(state, now)
    state, actions, _ = drive(
        state, lambda a, s: Failed("target unreachable") if a == first else happy(a), now=now
    )
    reason = f"{describe(first, state.plan)} failed: target unreachable"
    assert actions[1:] == [*expected, Finish("failed", reason)]


def test_a_failure_while_going_back_ends_failed_and_rollback_can_try_again() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    state = on_outcome(state, Observed(failing(), complete=False), now)
    state = on_outcome(state, Failed("haproxy socket gone"), now + 1)
    assert state.phase is Phase.FAILED
    assert state.reason == (
        "error_rate 0.198 > 0.02 (stable 0.000); then set weights v1 100% / v2 0% failed: haproxy socket gone"
    )
    assert state.weights == W(95, 5)
    state = on_command(state, "rollback", now + 2)
    assert next_action(state, now + 2) == SetWeights(W(100, 0))


def test_a_failed_retirement_of_the_stable_still_succeeds_and_allows_rollback() -> None:
    state, now = at(start(make_plan(), 0.0), Retire)
    state = on_outcome(state, Failed("v1 would not stop"), now)
    assert state.phase is Phase.SUCCEEDED
    assert state.reason.endswith("; but retire v1 failed: v1 would not stop (v1 may still run)")
    state = on_command(state, "rollback", now)
    state, actions, _ = drive(state, now=now)
    assert actions == [SetWeights(W(100, 0)), Retire("v2"), Finish("rolled_back", "manual rollback")]


def test_a_failed_first_deploy_keeps_serving_what_it_has() -> None:
    plan = make_plan(stable=None)
    state, now = at(start(plan, 0.0), Observe)
    state, action = advance(state, Observed(failing(), complete=False), now)
    assert action == Finish(
        "failed", "error_rate 0.198 > 0.02 (stable 0.000) (nothing to go back to: v2 keeps serving)"
    )
    with pytest.raises(RolloutError, match="allowed now: retry"):
        on_command(state, "rollback", now)


def test_a_first_deploy_that_never_served_is_retired() -> None:
    state, now = at(start(make_plan(stable=None), 0.0), WaitHealthy)
    state, action = advance(state, HealthChecked(Health(0, 2), timed_out=True), now)
    assert action == Retire("v2")


# --- commands -----------------------------------------------------------------------------------------


def test_abort_goes_back_and_retires_the_candidate() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    state = on_command(state, "abort", now)
    state, actions, _ = drive(state, now=now)
    assert actions == [SetWeights(W(100, 0)), Retire("v2"), Finish("aborted", "aborted by command")]
    assert state.phase is Phase.ABORTED


def test_abort_before_traffic_moved_only_retires() -> None:
    state = on_command(start(make_plan(migration=True), 0.0), "abort", 1.0)
    assert next_action(state, 1.0) == Retire("v2")


def test_retry_starts_the_same_plan_over() -> None:
    state, now = at(start(make_plan(), 0.0), Observe)
    state, *_ = drive(on_command(state, "abort", now), now=now)
    history = state.history
    retried = on_command(state, "retry", 500.0)
    assert retried.attempt == 2
    assert retried.phase is Phase.PREPARING
    assert retried.weights == W(100, 0)
    assert retried.failures == 0
    assert retried.outcome is None
    assert not retried.closed
    assert retried.history[: len(history)] == history
    assert retried.history[-1].what == "command: retry"
    assert next_action(retried, 500.0) == Prepare("v2", 2)


@pytest.mark.parametrize(
    ("setup", "command", "allowed"),
    [
        ("start", "resume", "abort"),
        ("start", "promote", "abort"),
        ("start", "pause", "abort"),
        ("start", "rollback", "abort"),
        ("start", "retry", "abort"),
        ("observe", "resume", "promote, promote-full, pause, rollback, abort"),
        ("observe", "retry", "promote, promote-full, pause, rollback, abort"),
        ("warm", "promote-full", "promote, pause, rollback, abort"),
        ("rolling_back", "abort", "nothing until it has gone back to the stable version"),
        ("succeeded", "retry", "nothing, the release is over"),
        ("succeeded", "rollback", "nothing, the release is over"),
        ("paused", "pause", "promote, promote-full, resume, rollback, abort"),
        ("gate", "pause", "promote, promote-full, rollback, abort"),
    ],
)
def test_commands_not_allowed_now_say_what_is(setup: str, command: str, allowed: str) -> None:
    plan = make_plan(auto_promote=setup != "gate")
    state = start(plan, 0.0)
    if setup in ("observe", "rolling_back", "paused"):
        state, _ = at(state, Observe)
    if setup == "rolling_back":
        state = on_command(state, "abort", 0.0)
    if setup == "paused":
        state = on_command(state, "pause", 0.0)
    if setup == "gate":
        state, *_ = drive(state)
        assert state.phase is Phase.PAUSED
    if setup == "succeeded":
        state, *_ = drive(state)
    if setup == "warm":
        state, _ = at(state, Hold)
        assert state.phase is Phase.PROMOTING
    with pytest.raises(
        RolloutError, match=rf"cannot {command} the release of api while .*allowed now: {allowed}$"
    ):
        on_command(state, command, 0.0)  # type: ignore[arg-type]


def test_an_unknown_command_is_refused() -> None:
    with pytest.raises(RolloutError, match="unknown command 'deploy'"):
        on_command(start(make_plan(), 0.0), "deploy", 0.0)  # type: ignore[arg-type]


def test_promote_is_refused_while_the_switch_itself_runs() -> None:
    state, now = at(start(make_plan("blue-green"), 0.0), SetWeights)
    with pytest.raises(RolloutError, match=r"allowed now: pause, abort$"):
        on_command(state, "promote", now)


def test_promote_ends_the_analysis_of_a_first_deploy() -> None:
    state, now = at(start(make_plan(stable=None), 0.0), Observe)
    state = on_command(state, "promote", now)
    assert next_action(state, now) == Finish("succeeded", "v2 serves all traffic (first deploy)")


def test_promote_after_full_promotion_goes_to_the_warm_hold() -> None:
    plan = make_plan(steps=[{"weight": 100}, {"analysis": 60}])
    state, now = at(start(plan, 0.0), Observe)
    state = on_command(state, "promote", now)
    assert next_action(state, now) == Hold(now + 600, 2.0)


# --- the controller's side of the protocol ----------------------------------------------------------


def test_is_finished_only_once_finish_was_carried_out() -> None:
    state, now = at(start(make_plan(), 0.0), Finish)
    assert state.phase is Phase.SUCCEEDED
    assert not is_finished(state)
    assert next_action(state, now) == next_action(state, now + 10)
    closed = on_outcome(state, Done(), now)
    assert is_finished(closed)
    assert on_outcome(closed, Done(), now) is closed
    assert next_action(closed, now) == next_action(state, now)


def test_an_outcome_of_an_action_no_longer_current_is_ignored() -> None:
    state, now = at(start(make_plan("blue-green"), 0.0), Hold)
    hold = next_action(state, now)
    state = on_outcome(state, Observed(failing(), complete=False), now)
    assert next_action(state, now) == SetWeights(W(100, 0))
    # the controller's Hold reaching its time must not count as the reset
    after = on_outcome(state, Done(), now, action=hold)
    assert next_action(after, now) == SetWeights(W(100, 0))
    assert after.history[-1].what == "ignored"


@pytest.mark.parametrize("outcome", [Done(), Observed(passing(), complete=True), Failed("x")])
def test_outcomes_after_the_finish_are_ignored(outcome: Outcome) -> None:
    state, now = at(start(make_plan(), 0.0), Finish)
    assert on_outcome(state, outcome, now).phase is Phase.SUCCEEDED


def test_an_outcome_that_does_not_fit_the_action_is_recorded_and_ignored() -> None:
    state, now = at(start(make_plan(), 0.0), WaitHealthy)
    after = on_outcome(state, Done(), now)
    assert next_action(after, now) == WaitHealthy("v2", 60.0)
    assert after.history[-1].what == "ignored"
    assert after.history[-1].reason == "Done: waiting for wait for v2 to be healthy (at most 60s)"


def test_the_history_says_what_happened_and_why() -> None:
    state, *_ = drive(start(make_plan(migration=True), 100.0), now=100.0)
    whats = [e.what for e in state.history]
    assert whats[:4] == ["started", "migrated", "prepared", "healthy"]
    assert whats.count("weights set") == 4
    assert whats.count("analysis passed") == 3
    assert whats[-3:] == ["rollback window over", "retired", "finished"]
    times = [e.time for e in state.history]
    assert times == sorted(times)
    assert state.history[4].reason == "v1 95% / v2 5%"


def test_the_state_round_trips_through_json() -> None:
    state, now = at(
        start(make_plan(analysis={"prometheus": [{"name": "q", "query": "up", "max": 1}]}), 0.0), Hold
    )
    state = on_outcome(state, Observed(real_analysis(300, 90), complete=False), now)
    data = json.loads(json.dumps(state.to_data(), allow_nan=False))
    assert RolloutState.from_data(data) == state


@pytest.mark.parametrize(
    "data", [{}, {"format": 99}, {"format": 1, "plan": {}}, {"format": 1, "plan": None, "phase": "x"}]
)
def test_unreadable_stored_state_is_a_rollout_error(data: dict[str, object]) -> None:
    with pytest.raises(RolloutError, match="unreadable"):
        RolloutState.from_data(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stable": "v2"}, "already the live version"),
        ({"instances": 0}, "at least one instance"),
        ({"candidate": ""}, "needs a candidate"),
    ],
)
def test_start_refuses_a_plan_that_cannot_run(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        start(replace(make_plan(), **changes), 0.0)  # type: ignore[arg-type]


def test_describe_says_each_action_in_words() -> None:
    plan = make_plan()
    assert [
        describe(a, plan) for a in (Prepare("v2", 1), Hold(None, 2), Hold(5.0, 2), Finish("failed", ""))
    ] == [
        "prepare 1 instance of v2",
        "hold until promoted",
        "hold until the pause ends",
        "finish (failed)",
    ]


def test_a_first_deploy_with_no_traffic_goes_on_instead_of_pausing() -> None:
    def no_traffic_yet(action: Action, _state: RolloutState) -> Outcome:
        if isinstance(action, Observe):
            return Observed(inconclusive(0), complete=True)
        return happy(action)

    for strategy in ("canary", "blue-green"):
        state, _, _ = drive(start(make_plan(strategy, stable=None), 0.0), no_traffic_yet)
        assert state.outcome == "succeeded", (strategy, state.reason)


def test_promote_after_full_weight_without_a_warm_hold_still_retires_the_stable() -> None:
    # Found by the property test: with rollback_window 0, promoting during a pause after the
    # 100 % step skipped the retire step and left the stable running.
    plan = make_plan(
        "canary", rollback_window=0, steps=[{"weight": 50}, {"weight": 100}, {"pause": "until-promoted"}]
    )
    state, actions, now = drive(start(plan, 0.0))
    assert isinstance(actions[-1], Hold)
    assert actions[-1].until is None
    state = on_command(state, "promote", now)
    state, actions, _ = drive(state, now=now)
    assert kinds(actions) == ["Retire", "Finish"]
    assert state.outcome == "succeeded"
    assert state.stable_retired


def test_a_crash_of_the_candidate_fails_the_release_wherever_it_runs() -> None:
    crash = "instance api.v2_1 exited with code 3; last lines of its log:\nboom"
    fresh = start(make_plan(), 0.0)
    assert on_crash(fresh, crash, 0.0) is fresh  # Prepare reports an app that exits at once itself
    for kind in (WaitHealthy, Observe):
        state, now = at(fresh, kind)
        crashed = on_crash(state, crash, now)
        assert crashed.outcome == "failed"
        assert crashed.reason == f"v2 crashed: {crash}"
        assert crashed.history[-1].what == "candidate crashed"
        assert next_action(crashed, now) == (SetWeights(W(100, 0)) if kind is Observe else Retire("v2"))
    # going back already, or retiring the stable (the candidate serves all): nothing more to do
    state, now = at(fresh, Observe)
    back = on_crash(state, crash, now)
    assert on_crash(back, crash, now) is back
    retiring, now = at(fresh, Retire)
    assert next_action(retiring, now) == Retire("v1")
    assert on_crash(retiring, crash, now) is retiring
