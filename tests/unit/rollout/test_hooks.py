"""Release hooks (`rollout.hooks`): the spec's checks, where each hook sits in a release, what a
failing one does, and how a hook command runs (real processes, timeouts, masked output)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import SpecError
from shipyard.host import pid_alive
from shipyard.rollout._controller import action_from_data, to_data
from shipyard.rollout._hooks import (
    HookRan,
    HookStarted,
    RunHook,
    _ShellHook,
    masked_tail,
    stop_earlier_run,
)
from shipyard.rollout._model import Action, Finish, Outcome, Retire, SetWeights, Weights
from shipyard.rollout._strategy import (
    Phase,
    RolloutState,
    allowed_commands,
    describe,
    next_action,
    on_command,
    plan_steps,
    start,
)
from shipyard.spec import Rollout, load_spec_text
from unit.rollout.rollout_kit import drive, happy, make_plan

HOOKS = {
    "pre": "./pre.sh",
    "smoke": {"command": "./smoke.sh", "timeout": "20s"},
    "tests": {"checkout": {"command": "./checkout.sh", "timeout": "1m"}},
    "post": "./post.sh",
}
CANARY_STEPS = [{"weight": 10}, {"test": "checkout"}, {"weight": 50}, {"analysis": "10s"}, {"weight": 100}]


def _spec(rollout: str) -> str:
    return f"name: s\nservices:\n  web: {{role: web, run: app, port: 8080}}\nrollout:\n{rollout}\n"


def _problem(rollout: str) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec_text(_spec(rollout), "s.yaml")
    return str(caught.value)


# --- the spec -------------------------------------------------------------------------------------


def test_a_hook_given_as_a_string_is_its_command_with_the_default_timeout() -> None:
    rollout = Rollout.model_validate(
        {"hooks": {"smoke": "./smoke.sh", "pre": {"command": "./pre.sh", "timeout": "2m"}}}
    )
    assert rollout.hooks.smoke is not None
    assert (rollout.hooks.smoke.command, rollout.hooks.smoke.timeout) == ("./smoke.sh", 60)
    assert rollout.hooks.pre is not None
    assert rollout.hooks.pre.timeout == 120


@pytest.mark.parametrize(
    ("rollout", "field", "says"),
    [
        ("  hooks: {smoke: {command: ''}}", "rollout.hooks.smoke.command", "at least 1 character"),
        ("  hooks: {smoke: {command: ./s.sh, timeout: 0s}}", "rollout.hooks.smoke.timeout", ">= 1"),
        ("  hooks: {smok: ./s.sh}", "rollout.hooks.smok", "did you mean 'smoke'"),
        ("  hooks: {tests: {Bad_Name: ./t.sh}}", "rollout.hooks.tests", "Bad_Name"),
        (
            "  steps: [{weight: 10}, {test: e2e}, {weight: 100}]\n  hooks: {tests: {checkout: ./t.sh}}",
            "steps[1].test",
            "no test 'e2e' in rollout.hooks.tests (defined: checkout)",
        ),
        (
            "  steps: [{test: e2e, weight: 5}]\n  hooks: {tests: {e2e: ./t.sh}}",
            "rollout.steps",
            "{test: NAME}",
        ),
    ],
)
def test_a_bad_hook_is_refused_naming_its_field(rollout: str, field: str, says: str) -> None:
    problem = _problem(rollout)
    assert field in problem, problem
    assert says in problem.replace("greater than or equal to", ">="), problem
    assert "s.yaml:" in problem  # at its line, as every spec problem


# --- where the hooks sit ----------------------------------------------------------------------------


def _kinds(**policy: Any) -> list[str]:
    return [step.kind for step in plan_steps(make_plan(**policy))]


def test_a_canary_runs_pre_first_smoke_before_any_traffic_tests_as_steps_and_post_while_stable_is_warm() -> (
    None
):
    kinds = _kinds(hooks=HOOKS, steps=CANARY_STEPS, rollback_window="30s", migration=True)
    assert kinds == [
        "pre", "migrate", "prepare", "health", "smoke",
        "weight", "test", "weight", "observe", "weight",
        "post", "warm", "retire_stable",
    ]  # fmt: skip


def test_blue_green_and_a_first_deploy_run_smoke_before_the_switch() -> None:
    assert _kinds(strategy="blue-green", hooks=HOOKS, auto_promote=False) == [
        "pre", "prepare", "health", "smoke", "gate", "weight", "observe", "post", "warm", "retire_stable",
    ]  # fmt: skip
    assert _kinds(stable=None, hooks=HOOKS, steps=CANARY_STEPS) == [
        "pre", "prepare", "health", "smoke", "weight", "observe", "post",
    ]  # fmt: skip


def test_without_hooks_the_plan_is_unchanged() -> None:
    assert "smoke" not in _kinds()
    assert _kinds(steps=[{"weight": 50}, {"weight": 100}], rollback_window="0s") == [
        "prepare", "health", "weight", "weight", "retire_stable",
    ]  # fmt: skip


def test_a_hook_step_asks_for_its_command_with_its_timeout_and_is_recorded_as_such() -> None:
    state = start(make_plan(hooks=HOOKS, steps=CANARY_STEPS), 0.0)
    action = next_action(state, 0.0)
    assert action == RunHook("pre", "", 60.0)
    assert describe(action, state.plan) == "run the pre hook (at most 60s)"
    assert state.phase is Phase.HOOK
    data = to_data(action)
    assert data == {"type": "RunHook", "kind": "pre", "name": "", "timeout_s": 60.0}
    assert action_from_data(data) == action  # a resumed controller reads its step back


# --- what a hook's end does ----------------------------------------------------------------------------


def _respond(failing: str | None, exit_code: int = 1, tail: str = "GET /smoke -> 503") -> Any:
    def respond(action: Action | RunHook, state: RolloutState) -> Outcome | HookRan:
        if isinstance(action, RunHook):
            which = action.name or action.kind
            ok = which != failing
            return HookRan(
                action.kind, action.name, ok, 0 if ok else exit_code, output_tail="" if ok else tail
            )
        return happy(action)  # type: ignore[arg-type]

    return respond


def test_a_failing_smoke_test_rolls_back_before_the_candidate_ever_had_traffic() -> None:
    state, actions, _ = drive(start(make_plan(hooks=HOOKS, steps=CANARY_STEPS), 0.0), _respond("smoke", 3))
    assert state.outcome == "rolled_back"
    assert state.reason == "smoke test failed with exit code 3: GET /smoke -> 503"
    # Nothing ever gave the candidate a share: straight to retiring it.
    assert not any(isinstance(a, SetWeights) and a.weights.candidate > 0 for a in actions)
    assert all(event.weights.candidate == 0 for event in state.history)
    after = actions[actions.index(RunHook("smoke", "", 20.0)) + 1 :]
    assert after == [Retire("v2"), Finish("rolled_back", state.reason)]
    assert "smoke test failed" in [event.what for event in state.history]


def test_a_failing_pre_hook_fails_the_release_before_anything_moved() -> None:
    state, actions, _ = drive(
        start(make_plan(hooks=HOOKS, steps=CANARY_STEPS, migration=True), 0.0), _respond("pre")
    )
    assert state.outcome == "failed"
    assert [type(a).__name__ for a in actions] == ["RunHook", "Retire", "Finish"]


def test_a_failing_test_step_gives_the_traffic_back_then_retires_the_candidate() -> None:
    state, actions, _ = drive(start(make_plan(hooks=HOOKS, steps=CANARY_STEPS), 0.0), _respond("checkout", 2))
    assert state.outcome == "rolled_back"
    assert state.reason.startswith("test 'checkout' failed with exit code 2")
    failed_at = actions.index(RunHook("test", "checkout", 60.0))
    assert actions[failed_at + 1 :] == [
        SetWeights(Weights(100, 0)),
        Retire("v2"),
        Finish("rolled_back", state.reason),
    ]


def test_a_failing_post_hook_rolls_back_to_the_still_warm_stable() -> None:
    plan = make_plan(hooks=HOOKS, steps=CANARY_STEPS, rollback_window="30s")
    state, actions, _ = drive(start(plan, 0.0), _respond("post"))
    assert state.outcome == "rolled_back"
    assert Retire("v1") not in actions  # the stable was never retired
    assert actions[-3:] == [SetWeights(Weights(100, 0)), Retire("v2"), Finish("rolled_back", state.reason)]


def test_passing_hooks_release_normally() -> None:
    state, actions, _ = drive(start(make_plan(hooks=HOOKS, steps=CANARY_STEPS), 0.0), _respond(None))
    assert state.outcome == "succeeded"
    ran = [a.name or a.kind for a in actions if isinstance(a, RunHook)]
    assert ran == ["pre", "smoke", "checkout", "post"]
    assert "smoke test passed" in [event.what for event in state.history]


def test_a_timed_out_hook_says_so_with_the_commands_own_last_line() -> None:
    ran = HookRan(
        "smoke", "", ok=False, exit_code=-9, timed_out=True, output_tail="waiting for /ready\n[shipyard] x"
    )
    assert ran.summary() == "smoke test timed out and was killed: waiting for /ready"


def test_a_test_step_may_be_promoted_past_or_aborted_and_the_smoke_test_only_aborted() -> None:
    plan = make_plan(hooks=HOOKS, steps=CANARY_STEPS)
    state = start(plan, 0.0)
    steps = plan_steps(plan)
    at_smoke = RolloutState(
        **{**state.__dict__, "step": [s.kind for s in steps].index("smoke"), "phase": Phase.HOOK}
    )
    assert allowed_commands(at_smoke) == ("abort",)
    at_test = RolloutState(
        **{
            **state.__dict__,
            "step": [s.kind for s in steps].index("test"),
            "phase": Phase.ANALYSING,
            "weights": Weights(90, 10),
        }
    )
    assert set(allowed_commands(at_test)) == {"promote", "promote-full", "pause", "abort", "rollback"}
    promoted = on_command(at_test, "promote", 1.0)
    assert next_action(promoted, 1.0) == SetWeights(Weights(50, 50))


def test_an_old_release_without_hooks_in_its_policy_reads_back() -> None:
    state = start(make_plan(), 0.0)
    data = state.to_data()
    del data["plan"]["policy"]["hooks"]  # stored before hooks existed
    assert RolloutState.from_data(data).plan.policy.hooks.smoke is None


# --- running a command -----------------------------------------------------------------------------------


def _run(command: str, timeout_s: float = 20.0, secrets: list[str] | None = None) -> HookRan:
    hook = _ShellHook(RunHook("smoke", "", timeout_s), command, {"GREETING": "hi"}, Path.cwd(), secrets or [])
    while (ran := hook.poll()) is None:
        time.sleep(0.02)
    return ran


def test_a_hook_passes_by_exit_code_and_keeps_its_output_tail() -> None:
    ran = _run('echo "$GREETING"; for i in $(seq 1 40); do echo line $i; done')
    assert ran.ok
    assert ran.exit_code == 0
    assert ran.output_tail.splitlines()[-1] == "line 40"
    assert len(ran.output_tail.splitlines()) == 20  # the tail, not the whole output
    failed = _run("echo nope >&2; exit 7")
    assert (failed.ok, failed.exit_code, failed.output_tail) == (False, 7, "nope")


def test_a_hook_past_its_timeout_is_killed_with_everything_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    ran = _run(f"sleep 60 & echo $! > {pidfile}; echo started; wait", timeout_s=1.0)
    assert not ran.ok
    assert ran.timed_out
    assert "started" in ran.output_tail
    assert ran.output_tail.endswith("timed out after 1s and was killed")
    assert not pid_alive(int(pidfile.read_text()))  # its background child went with it


def test_secrets_never_reach_the_tail() -> None:
    token = "s3cr3t-token-value-123456"
    ran = _run(f"echo using {token}; echo password=hunter2hunter2; exit 1", secrets=[token])
    assert token not in ran.output_tail
    assert "hunter2hunter2" not in ran.output_tail
    assert "using" in ran.output_tail
    assert masked_tail(f"a {token} b", [token]).startswith("a ")
    assert token not in masked_tail(f"a {token}", [token])


def test_an_earlier_run_left_by_a_killed_controller_is_stopped_and_a_recycled_pid_is_not() -> None:
    hook = _ShellHook(RunHook("pre", "", 60.0), "sleep 60", {}, Path.cwd(), [])
    started = hook.started
    assert stop_earlier_run(HookStarted(started.pid, started.started + 1)) is False  # not that process
    assert pid_alive(started.pid)
    assert stop_earlier_run(started) is True
    assert hook.poll() is not None
    assert not pid_alive(started.pid, started.started)
    assert stop_earlier_run(started) is False  # gone: nothing to do
