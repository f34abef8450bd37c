"""Blue-green and canary releases as pure state machines.

A plan compiles to a list of steps (`plan_steps`); the state says which step the release is at and
what the target has confirmed. The controller loops:

    action = next_action(state, now)          # pure: the same state gives the same action
    outcome = <carry the action out>          # every action is idempotent on the target
    state = on_outcome(state, outcome, now)   # persisted after every call
    ... and on_command(state, command, now) between (or during Observe/Hold) actions.

Killed at any point, the controller loads the last state and asks `next_action` again, which
repeats the action that was under way.

Steps
    blue-green  [pre] [Migrate] Prepare WaitHealthy [smoke] [gate] SetWeights(0/100) Observe(window)
                [post] warm Retire(stable)
    canary      [pre] [Migrate] Prepare WaitHealthy [smoke] <the spec's steps, ending at weight 100,
                [gate] before that last weight step> [post] warm Retire(stable)
    first deploy (no stable version): [pre] [Migrate] Prepare WaitHealthy [smoke] [gate]
                SetWeights(0/100) Observe(window) [post]

"pre", "smoke" and "post" are the spec's release hooks (`rollout.hooks`, see `_hooks.py`), each a
RunHook; a canary's `{test: NAME}` step is one too.

"gate" is the Hold(None) that `auto_promote: false` adds before the full switch, "warm" the
Hold(until=now + rollback_window) that keeps the stable version running for an instant rollback
(left out when rollback_window is 0).

Going back (a failed analysis, a failed action, `abort`, `rollback`): SetWeights(100/0) if the
candidate may have traffic, then Retire(candidate), then Finish. On a first deploy there is nothing
to go back to: once the candidate serves, it is never retired (that would leave nothing serving).

Promoting (as `kubectl argo rollouts promote [--full]`): `promote` ends the step the release waits
at (an analysis, a pause, the gate, the warm hold, or an inconclusive pause) and goes on to the next
one; `promote-full` skips every remaining weight, analysis and pause: the candidate takes all
traffic at once, and only the warm hold (Argo's scaleDownDelaySeconds) and retiring the stable are
left.

Finishing: in a finished phase `next_action` is Finish; the controller records the release's end and
reports `Done`, which closes the state: `is_finished` is true only then, so a controller killed
between reaching the end and recording it records it when resumed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal, cast, get_args

from shipyard.errors import RolloutError
from shipyard.spec import Rollout

from ._hooks import HOOK_KINDS, HookKind, HookRan, RunHook, hook_command, hook_title
from ._model import (
    Action,
    Analysis,
    Check,
    Command,
    Done,
    Failed,
    Finish,
    HealthChecked,
    Hold,
    Migrate,
    Migrated,
    Observe,
    Observed,
    Outcome,
    Prepare,
    Retire,
    SetWeights,
    StrategyName,
    Verdict,
    WaitHealthy,
    Weights,
)

FORMAT = 1
"""Version of the `to_data` layout."""

FinishOutcome = Literal["succeeded", "rolled_back", "aborted", "failed"]
PausedBy = Literal["command", "inconclusive"]
StepKind = Literal[
    "pre", "migrate", "prepare", "health", "smoke", "weight", "observe", "test", "pause", "gate", "post",
    "warm", "retire_stable",
]  # fmt: skip

StepAction = Action | RunHook
"""What the controller is asked to do: a target action, or a release hook."""
StepOutcome = Outcome | HookRan

COMMANDS: tuple[Command, ...] = ("promote", "promote-full", "pause", "resume", "retry", "rollback", "abort")


class Phase(StrEnum):
    MIGRATING = "migrating"
    PREPARING = "preparing"
    HEALTH_CHECK = "health_check"
    PROGRESSING = "progressing"
    """Moving traffic to the candidate (a canary weight step)."""
    ANALYSING = "analysing"
    """Analysing the candidate's traffic, or running a `{test: NAME}` step."""
    HOOK = "hook"
    """Running a release hook: pre, the smoke test (before any traffic), post."""
    PAUSED = "paused"
    """A pause step, the auto_promote gate, a `pause` command, or an inconclusive analysis."""
    PROMOTING = "promoting"
    """Switching all traffic to the candidate, keeping the stable warm, then retiring it."""
    ROLLING_BACK = "rolling_back"
    """Going back to the stable version (after a failure, `abort` or `rollback`)."""
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    FAILED = "failed"


FINISHED_PHASES = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED})
_OUTCOME_PHASE: dict[FinishOutcome, Phase] = {
    "succeeded": Phase.SUCCEEDED,
    "rolled_back": Phase.ROLLED_BACK,
    "aborted": Phase.ABORTED,
    "failed": Phase.FAILED,
}
_TRAFFIC_KINDS = frozenset({"weight", "observe", "test", "pause", "gate", "warm"})
_WAITING_KINDS = frozenset({"observe", "test", "pause", "gate", "warm"})
"""Steps the release waits at, which `promote` ends (a weight step is over as soon as it is set)."""


# --- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one release does: everything the strategy needs, fixed when the release starts."""

    service: str
    strategy: StrategyName
    stable: str | None
    """The live version; None for a first deploy (nothing to compare with or go back to)."""
    candidate: str
    instances: int
    policy: Rollout
    has_migration: bool

    def to_data(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "strategy": self.strategy,
            "stable": self.stable,
            "candidate": self.candidate,
            "instances": self.instances,
            "policy": self.policy.model_dump(mode="json"),
            "has_migration": self.has_migration,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Plan:
        strategy = data["strategy"]
        if strategy not in get_args(StrategyName):
            raise ValueError(f"unknown strategy {strategy!r}")
        return cls(
            service=str(data["service"]),
            strategy=cast(StrategyName, strategy),
            stable=None if data["stable"] is None else str(data["stable"]),
            candidate=str(data["candidate"]),
            instances=int(data["instances"]),
            policy=Rollout.model_validate(data["policy"]),
            has_migration=bool(data["has_migration"]),
        )


@dataclass(frozen=True)
class Step:
    """One step of a compiled plan: `weight` for weight steps, `seconds` for observe/pause/warm,
    `test` for a test step (its name in `rollout.hooks.tests`)."""

    kind: StepKind
    weight: int = 0
    seconds: float | None = None
    """None on a pause step: until promoted."""
    test: str = ""


def plan_steps(plan: Plan) -> tuple[Step, ...]:
    """The steps a release of `plan` goes through when nothing goes wrong."""
    policy = plan.policy
    hooks = policy.hooks
    steps = [Step("pre")] if hooks.pre else []
    steps += [Step("migrate")] if plan.has_migration else []
    steps += [Step("prepare"), Step("health")]
    steps += [Step("smoke")] if hooks.smoke else []
    window = Step("observe", seconds=float(policy.analysis.window))
    traffic: list[Step] = []
    if plan.stable is None or plan.strategy == "blue-green":
        traffic = [Step("weight", weight=100), window]
    else:
        for spec_step in policy.steps:
            if spec_step.weight is not None:
                traffic.append(Step("weight", weight=spec_step.weight))
            elif spec_step.analysis is not None:
                traffic.append(Step("observe", seconds=float(spec_step.analysis)))
            elif spec_step.test is not None:
                traffic.append(Step("test", test=spec_step.test))
            elif spec_step.pause == "until-promoted":
                traffic.append(Step("pause"))
            elif spec_step.pause is not None:
                traffic.append(Step("pause", seconds=float(spec_step.pause)))
        if _last_weight(traffic) != 100:
            traffic.append(Step("weight", weight=100))
    if not policy.auto_promote:
        promotion = max(i for i, step in enumerate(traffic) if step.kind == "weight")
        traffic.insert(promotion, Step("gate"))
    steps += traffic
    steps += [Step("post")] if hooks.post else []
    if plan.stable is not None:
        if policy.rollback_window > 0:
            steps.append(Step("warm", seconds=float(policy.rollback_window)))
        steps.append(Step("retire_stable"))
    return tuple(steps)


def _last_weight(steps: list[Step]) -> int | None:
    weights = [step.weight for step in steps if step.kind == "weight"]
    return weights[-1] if weights else None


def _promotion_index(steps: tuple[Step, ...]) -> int:
    """The step that gives the candidate all traffic (the last weight step, always 100)."""
    return max(i for i, step in enumerate(steps) if step.kind == "weight")


def _skipped_by_full(steps: tuple[Step, ...], index: int) -> bool:
    """Whether a full promotion skips step `index`: every weight short of the promotion, every
    analysis and every pause, before the promotion or after it (never the warm hold or a retire)."""
    step = steps[index]
    if step.kind == "weight":
        return index != _promotion_index(steps)
    return step.kind in ("observe", "test", "pause", "gate")


# --- the state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One transition: when, the phase it led to, what happened and why (with the checks' values)."""

    time: float
    phase: Phase
    step: int
    what: str
    weights: Weights
    """The split after the transition."""
    reason: str = ""
    checks: tuple[Check, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "phase": self.phase.value,
            "step": self.step,
            "what": self.what,
            "reason": self.reason,
            "weights": _weights_data(self.weights),
            "checks": [_check_data(c) for c in self.checks],
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Event:
        return cls(
            time=float(data["time"]),
            phase=Phase(data["phase"]),
            step=int(data["step"]),
            what=str(data["what"]),
            reason=str(data["reason"]),
            weights=_weights_from(data["weights"]),
            checks=tuple(_check_from(c) for c in data["checks"]),
        )


@dataclass(frozen=True)
class RolloutState:
    plan: Plan
    phase: Phase
    step: int
    """Index into plan_steps(plan); kept while going back, to show where the release stopped."""
    weights: Weights
    """The split the target last confirmed."""
    started: float
    attempt: int = 1
    hold_until: float | None = None
    """When the current timed pause or warm hold ends."""
    paused_by: PausedBy | None = None
    failures: int = 0
    """Failed analyses so far (rolled back when more than failure_limit)."""
    inconclusive: int = 0
    """Inconclusive windows in a row at the current step (paused at analysis.max_inconclusive)."""
    baseline_p99_ms: float | None = None
    """The stable version's p99 before the candidate took traffic (the default `max_p99_ms` is
    derived from it); None until measured, or when too little was measured."""
    analysis: Analysis | None = None
    """The latest analysis."""
    outcome: FinishOutcome | None = None
    """How the release ends (set when going back starts, or at the end)."""
    reason: str = ""
    """Why the release is where it is: the pause, the failed check, the error."""
    reset_pending: bool = False
    """Going back: traffic still to be given back to the stable version."""
    retire_pending: bool = False
    """Going back: the candidate still to be retired."""
    stable_retired: bool = False
    full_promotion: bool = False
    """`promote-full` was given: every remaining weight, analysis and pause is skipped."""
    closed: bool = False
    """The controller has carried out Finish."""
    history: tuple[Event, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "plan": self.plan.to_data(),
            "phase": self.phase.value,
            "step": self.step,
            "weights": _weights_data(self.weights),
            "started": self.started,
            "attempt": self.attempt,
            "hold_until": self.hold_until,
            "paused_by": self.paused_by,
            "failures": self.failures,
            "inconclusive": self.inconclusive,
            "baseline_p99_ms": self.baseline_p99_ms,
            "analysis": None if self.analysis is None else _analysis_data(self.analysis),
            "outcome": self.outcome,
            "reason": self.reason,
            "reset_pending": self.reset_pending,
            "retire_pending": self.retire_pending,
            "stable_retired": self.stable_retired,
            "full_promotion": self.full_promotion,
            "closed": self.closed,
            "history": [event.to_data() for event in self.history],
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> RolloutState:
        """The state `to_data` gave; RolloutError when it is not one."""
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            paused_by = data["paused_by"]
            if paused_by not in (None, *get_args(PausedBy)):
                raise ValueError(f"paused_by {paused_by!r}")
            outcome = data["outcome"]
            if outcome not in (None, *get_args(FinishOutcome)):
                raise ValueError(f"outcome {outcome!r}")
            return cls(
                plan=Plan.from_data(data["plan"]),
                phase=Phase(data["phase"]),
                step=int(data["step"]),
                weights=_weights_from(data["weights"]),
                started=float(data["started"]),
                attempt=int(data["attempt"]),
                hold_until=None if data["hold_until"] is None else float(data["hold_until"]),
                paused_by=cast("PausedBy | None", paused_by),
                failures=int(data["failures"]),
                # Absent from states stored before these were kept: none yet.
                inconclusive=int(data.get("inconclusive", 0)),
                baseline_p99_ms=_optional_float(data.get("baseline_p99_ms")),
                analysis=None if data["analysis"] is None else _analysis_from(data["analysis"]),
                outcome=cast("FinishOutcome | None", outcome),
                reason=str(data["reason"]),
                reset_pending=bool(data["reset_pending"]),
                retire_pending=bool(data["retire_pending"]),
                stable_retired=bool(data["stable_retired"]),
                full_promotion=bool(data.get("full_promotion", False)),
                closed=bool(data["closed"]),
                history=tuple(Event.from_data(e) for e in data["history"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RolloutError(f"the stored state of a release is unreadable: {exc!r}") from None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _weights_data(weights: Weights) -> dict[str, int]:
    return {"stable": weights.stable, "candidate": weights.candidate}


def _weights_from(data: dict[str, Any]) -> Weights:
    return Weights(int(data["stable"]), int(data["candidate"]))


def _check_data(check: Check) -> dict[str, Any]:
    return {
        "name": check.name,
        "verdict": check.verdict.value,
        "candidate": check.candidate,
        "stable": check.stable,
        "threshold": check.threshold,
        "detail": check.detail,
    }


def _check_from(data: dict[str, Any]) -> Check:
    return Check(
        name=str(data["name"]),
        verdict=Verdict(data["verdict"]),
        candidate=None if data["candidate"] is None else float(data["candidate"]),
        stable=None if data["stable"] is None else float(data["stable"]),
        threshold=float(data["threshold"]),
        detail=str(data["detail"]),
    )


def _analysis_data(analysis: Analysis) -> dict[str, Any]:
    return {
        "verdict": analysis.verdict.value,
        "checks": [_check_data(c) for c in analysis.checks],
        "candidate_requests": analysis.candidate_requests,
        "stable_requests": analysis.stable_requests,
    }


def _analysis_from(data: dict[str, Any]) -> Analysis:
    return Analysis(
        verdict=Verdict(data["verdict"]),
        checks=tuple(_check_from(c) for c in data["checks"]),
        candidate_requests=int(data["candidate_requests"]),
        stable_requests=int(data["stable_requests"]),
    )


# --- the machine ---------------------------------------------------------------------------------


def start(plan: Plan, now: float) -> RolloutState:
    """The state of a release of `plan` that has not done anything yet."""
    if plan.strategy not in get_args(StrategyName):
        raise RolloutError(f"unknown strategy {plan.strategy!r}: use blue-green or canary")
    if not plan.candidate:
        raise RolloutError("a release needs a candidate version")
    if plan.stable == plan.candidate:
        raise RolloutError(f"{plan.candidate} is already the live version of {plan.service}")
    if plan.instances < 1:
        raise RolloutError(f"a release needs at least one instance, not {plan.instances}")
    state = _enter(RolloutState(plan, Phase.PREPARING, 0, Weights(100, 0), started=now), 0, now)
    replacing = f"replacing {plan.stable}" if plan.stable else "first deploy"
    return _record(state, now, "started", f"{plan.strategy} release of {plan.candidate} ({replacing})")


def is_finished(state: RolloutState) -> bool:
    """The release has ended and the controller has carried out its Finish."""
    return state.closed


def next_action(state: RolloutState, now: float) -> StepAction:
    """What the controller must do next: a pure function of the state (`now` changes nothing)."""
    plan = state.plan
    if state.phase in FINISHED_PHASES:
        return Finish(state.outcome or _FINISH_OF[state.phase], state.reason)
    if state.phase is Phase.ROLLING_BACK:
        if state.reset_pending:
            return SetWeights(Weights(100, 0))
        return Retire(plan.candidate)
    interval = float(plan.policy.analysis.interval)
    if state.paused_by is not None:
        return Hold(None, interval)
    step = plan_steps(plan)[state.step]
    match step.kind:
        case "migrate":
            return Migrate(plan.candidate)
        case "prepare":
            return Prepare(plan.candidate, plan.instances)
        case "health":
            return WaitHealthy(plan.candidate, float(plan.policy.health_timeout))
        case "weight":
            return SetWeights(Weights(100 - step.weight, step.weight))
        case "observe":
            return Observe(step.seconds or 0.0, interval)
        case "pause" | "warm":
            return Hold(state.hold_until, interval)
        case "gate":
            return Hold(None, interval)
        case "retire_stable":
            return Retire(plan.stable or plan.candidate)
        case "pre" | "smoke" | "test" | "post":
            command = hook_command(plan.policy.hooks, step.kind, step.test)
            return RunHook(step.kind, step.test, float(command.timeout) if command else 0.0)
    raise AssertionError(step.kind)  # pragma: no cover - the match is exhaustive


_FINISH_OF: dict[Phase, FinishOutcome] = {phase: outcome for outcome, phase in _OUTCOME_PHASE.items()}


def on_outcome(
    state: RolloutState, outcome: StepOutcome, now: float, *, action: StepAction | None = None
) -> RolloutState:
    """The state after the current action ended with `outcome`. Never raises.

    `action`, when given, is the action the outcome is of: an outcome of an action that is no longer
    the current one (a command changed the plan while it ran) is recorded and otherwise ignored.
    """
    expected = next_action(state, now)
    if action is not None and action != expected:
        return _ignore(state, now, outcome, f"it is of {describe(action, state.plan)}, no longer current")
    if isinstance(expected, Finish):
        if isinstance(outcome, Done) and not state.closed:
            return _record(replace(state, closed=True), now, "finished", state.reason)
        return state
    if isinstance(outcome, Failed):
        return _on_failed(state, expected, outcome, now)
    if state.phase is Phase.ROLLING_BACK:
        if not isinstance(outcome, Done):
            return _ignore(state, now, outcome, f"waiting for {describe(expected, state.plan)}")
        if isinstance(expected, SetWeights):
            state = replace(state, weights=Weights(100, 0), reset_pending=False)
            return _record(_settle(state), now, "weights reset", f"{state.plan.stable} takes all traffic")
        state = replace(state, retire_pending=False)
        return _record(_settle(state), now, "retired", f"{state.plan.candidate} retired")
    if isinstance(outcome, Observed):
        if isinstance(expected, Observe | Hold):
            return _observed(state, outcome, now, window=isinstance(expected, Observe))
        return _ignore(state, now, outcome, f"waiting for {describe(expected, state.plan)}")
    if state.paused_by is not None:
        return _ignore(state, now, outcome, f"paused ({state.reason})")
    return _step_outcome(state, expected, outcome, now)


def _step_outcome(
    state: RolloutState, expected: StepAction, outcome: StepOutcome, now: float
) -> RolloutState:
    plan = state.plan
    step = plan_steps(plan)[state.step]
    waiting = f"waiting for {describe(expected, plan)}"
    if step.kind in HOOK_KINDS:
        return _hook_outcome(state, step.kind, step.test, outcome, now, waiting)
    if step.kind == "migrate":
        if not isinstance(outcome, Migrated):
            return _ignore(state, now, outcome, waiting)
        result = outcome.result
        if result.ok:
            return _advance(state, now, "migrated", f"migration with {plan.candidate} succeeded")
        tail = [line for line in result.output_tail.splitlines() if line.strip()]
        last = f": {tail[-1].strip()[:200]}" if tail else ""
        reason = f"migration with {plan.candidate} failed with exit code {result.exit_code}{last}"
        return _unwind(state, now, "failed", reason, "migration failed")
    if step.kind == "health":
        if not isinstance(outcome, HealthChecked):
            return _ignore(state, now, outcome, waiting)
        health = outcome.health
        counted = f"{health.healthy}/{health.total} instances of {plan.candidate} healthy"
        detail = f" ({health.detail})" if health.detail else ""
        if health.ready:
            return _advance(state, now, "healthy", counted + detail)
        if outcome.timed_out:
            reason = f"health check never passed: {counted} after {plan.policy.health_timeout}s{detail}"
            return _unwind(state, now, "failed", reason, "health check timed out")
        return _ignore(state, now, outcome, "not healthy yet and not timed out")
    if (
        not isinstance(outcome, Done)
        or step.kind in ("observe", "gate")
        or (step.kind == "pause" and step.seconds is None)
    ):
        return _ignore(state, now, outcome, waiting)
    match step.kind:
        case "prepare":
            return _advance(state, now, "prepared", f"{plan.instances} instances of {plan.candidate}")
        case "weight":
            state = replace(state, weights=Weights(100 - step.weight, step.weight))
            return _advance(state, now, "weights set", _split(state.weights, plan))
        case "pause":
            return _advance(state, now, "pause over", f"paused {step.seconds:g}s")
        case "warm":
            return _advance(state, now, "rollback window over", f"{plan.stable} kept warm {step.seconds:g}s")
        case _:  # retire_stable
            state = replace(state, stable_retired=True)
            return _advance(state, now, "retired", f"{plan.stable} retired")


def _hook_outcome(
    state: RolloutState, kind: HookKind, test: str, outcome: StepOutcome, now: float, waiting: str
) -> RolloutState:
    """A hook's end: on to the next step when it passed; otherwise back to the stable version (a
    failed `pre` fails the release: nothing had moved yet)."""
    if not isinstance(outcome, HookRan) or (outcome.kind, outcome.name) != (kind, test):
        return _ignore(state, now, outcome, waiting)
    title = hook_title(kind, test)
    if outcome.ok:
        return _advance(state, now, f"{title} passed", outcome.summary())
    return _unwind(
        state, now, "failed" if kind == "pre" else "rolled_back", outcome.summary(), f"{title} failed"
    )


def _observed(state: RolloutState, observed: Observed, now: float, *, window: bool) -> RolloutState:
    """An analysis while observing (`window`) or holding: count failures, decide at the window's end."""
    analysis = observed.analysis
    limit = state.plan.policy.analysis.failure_limit
    state = replace(state, analysis=analysis)
    complete = window and observed.complete
    if analysis.verdict is Verdict.FAIL:
        failures = state.failures + 1
        state = replace(state, failures=failures)
        reason = analysis.reason()
        if failures > limit:
            if limit:
                reason += f" ({failures} failed analyses > failure_limit {limit})"
            return _unwind(state, now, "rolled_back", reason, "analysis failed", analysis.checks)
        reason += f" (failure {failures} of {limit} tolerated)"
        if complete:
            return _advance(state, now, "analysis failed, tolerated", reason, analysis.checks)
        return _record(state, now, "analysis failed, tolerated", reason, analysis.checks)
    if not complete:
        return state
    if analysis.verdict is Verdict.INCONCLUSIVE:
        reason = _inconclusive(analysis, state.plan)
        if state.plan.stable is None:
            # A first deploy has nothing to go back to, so waiting for a decision would only
            # hold the release open: with no traffic yet (a new service), it goes on.
            return _advance(state, now, "analysis inconclusive", reason + "; first deploy: going on")
        # Never a pass: the window is observed afresh (a burst of lost log lines, a lull in traffic
        # pass), and after max_inconclusive such windows in a row the release pauses for an
        # operator (promote, retry, abort). A FAIL meanwhile still rolls back.
        count, limit = state.inconclusive + 1, state.plan.policy.analysis.max_inconclusive
        state = replace(state, inconclusive=count)
        if count < limit:
            reason += f" (window {count} of {limit}: observing again)"
            return _record(state, now, "analysis inconclusive", reason, analysis.checks)
        reason += f" ({count} inconclusive windows in a row)"
        state = replace(state, phase=Phase.PAUSED, paused_by="inconclusive", reason=reason)
        return _record(state, now, "analysis inconclusive", reason, analysis.checks)
    summary = "; ".join(c.detail or f"{c.name} {c.verdict}" for c in analysis.checks)
    return _advance(state, now, "analysis passed", summary, analysis.checks)


def on_crash(state: RolloutState, crash: str, now: float) -> RolloutState:
    """The state after the candidate's instances crashed (`crash`: which, how, the log's end): the
    release fails and goes back to the stable version at once, whatever step it was at.

    Unchanged where a crash is not the release's to act on: before the candidate runs (Prepare
    reports an app that exits at once itself), while retiring the stable version (the candidate
    serves everything by then: there is nothing left to go back to), going back, or finished.
    """
    if not watches_crashes(state):
        return state
    reason = f"{state.plan.candidate} crashed: {crash}"
    return _unwind(state, now, "failed", reason, "candidate crashed")


def watches_crashes(state: RolloutState) -> bool:
    """Whether a crash of the candidate now fails the release (see `on_crash`)."""
    if state.phase in FINISHED_PHASES or state.phase is Phase.ROLLING_BACK:
        return False
    return plan_steps(state.plan)[state.step].kind not in ("pre", "migrate", "prepare", "retire_stable")


def record_baseline(state: RolloutState, p99_ms: float | None, detail: str, now: float) -> RolloutState:
    """The state with the stable's p99 measured before the candidate took traffic (None: not enough
    was measured, and no `max_p99_ms` is derived); `detail` says what was measured."""
    state = replace(state, baseline_p99_ms=p99_ms)
    return _record(state, now, "baseline measured", detail)


def note(state: RolloutState, what: str, now: float) -> RolloutState:
    """The state with `what` noted in its history; nothing else changes."""
    return _record(state, now, what)


def _inconclusive(analysis: Analysis, plan: Plan) -> str:
    minimum = plan.policy.analysis.min_requests
    if analysis.candidate_requests < minimum:
        return f"inconclusive: {analysis.candidate_requests} requests < min_requests {minimum}"
    undecided = [c.detail or c.name for c in analysis.checks if c.verdict is Verdict.INCONCLUSIVE]
    return "inconclusive: " + ("; ".join(undecided) or "no check decided")


def _on_failed(state: RolloutState, expected: StepAction, failed: Failed, now: float) -> RolloutState:
    plan = state.plan
    what = f"{describe(expected, plan)} failed"
    if state.phase is Phase.ROLLING_BACK:
        reason = f"{state.reason}; then {what}: {failed.error}"
        state = replace(
            state,
            phase=Phase.FAILED,
            outcome="failed",
            reason=reason,
            reset_pending=False,
            retire_pending=False,
        )
        return _record(state, now, what, reason)
    if state.paused_by is None and plan_steps(plan)[state.step].kind == "retire_stable":
        # The candidate serves everything already: the release succeeded, with the stable left over.
        state = _enter(state, state.step + 1, now)
        reason = f"{state.reason}; but {what}: {failed.error} ({plan.stable} may still run)"
        return _record(replace(state, reason=reason), now, what, reason)
    return _unwind(state, now, "failed", f"{what}: {failed.error}", what)


def _unwind(
    state: RolloutState,
    now: float,
    outcome: FinishOutcome,
    reason: str,
    what: str,
    checks: tuple[Check, ...] = (),
) -> RolloutState:
    """Start going back to the stable version (or straight to the end when there is nothing to do)."""
    plan = state.plan
    stable_up = plan.stable is not None and not state.stable_retired
    moved = state.weights.candidate > 0 or _switching(state)
    if not stable_up and moved:
        if outcome == "rolled_back":
            outcome = "failed"
        reason += f" (nothing to go back to: {plan.candidate} keeps serving)"
    state = replace(
        state,
        outcome=outcome,
        reason=reason,
        reset_pending=stable_up and moved,
        retire_pending=stable_up or not moved,
        paused_by=None,
        hold_until=None,
        closed=False,
    )
    return _record(_settle(state), now, what, reason, checks)


def _switching(state: RolloutState) -> bool:
    """Whether a SetWeights giving the candidate traffic may be under way."""
    if state.phase in FINISHED_PHASES or state.phase is Phase.ROLLING_BACK:
        return False
    step = plan_steps(state.plan)[state.step]
    return step.kind == "weight" and step.weight > 0


def _settle(state: RolloutState) -> RolloutState:
    """Rolling back while something is left to undo; the outcome's phase once nothing is."""
    if state.reset_pending or state.retire_pending:
        return replace(state, phase=Phase.ROLLING_BACK)
    return replace(state, phase=_OUTCOME_PHASE[state.outcome or "failed"])


def _advance(
    state: RolloutState, now: float, what: str, reason: str, checks: tuple[Check, ...] = ()
) -> RolloutState:
    return _record(_enter(state, state.step + 1, now), now, what, reason, checks)


def _enter(state: RolloutState, index: int, now: float) -> RolloutState:
    """The state at the start of step `index` (or succeeded, past the last step)."""
    plan = state.plan
    steps = plan_steps(plan)
    if state.full_promotion:
        while index < len(steps) and _skipped_by_full(steps, index):
            index += 1
    state = replace(state, step=index, paused_by=None, hold_until=None, inconclusive=0)
    if index >= len(steps):
        reason = f"{plan.candidate} serves all traffic"
        if plan.stable is None:
            reason += " (first deploy)"
        elif state.stable_retired:
            reason += f"; {plan.stable} retired"
        return replace(state, step=len(steps) - 1, phase=Phase.SUCCEEDED, outcome="succeeded", reason=reason)
    step = steps[index]
    hold_until = now + step.seconds if step.kind in ("pause", "warm") and step.seconds is not None else None
    return replace(state, phase=_phase_of(step), hold_until=hold_until, reason=_step_reason(step, plan))


def _phase_of(step: Step) -> Phase:
    match step.kind:
        case "migrate":
            return Phase.MIGRATING
        case "prepare":
            return Phase.PREPARING
        case "health":
            return Phase.HEALTH_CHECK
        case "weight":
            return Phase.PROMOTING if step.weight == 100 else Phase.PROGRESSING
        case "observe" | "test":
            return Phase.ANALYSING
        case "pre" | "smoke" | "post":
            return Phase.HOOK
        case "pause" | "gate":
            return Phase.PAUSED
        case _:  # warm, retire_stable
            return Phase.PROMOTING


def _step_reason(step: Step, plan: Plan) -> str:
    match step.kind:
        case "gate":
            return "waiting for promote (auto_promote is off)"
        case "pause":
            return "paused until promoted" if step.seconds is None else f"pause of {step.seconds:g}s"
        case "warm":
            return f"keeping {plan.stable} warm for {step.seconds:g}s for an instant rollback"
        case "smoke":
            return f"running the smoke test against {plan.candidate}'s own address (no traffic yet)"
        case "pre" | "test" | "post":
            return f"running the {hook_title(step.kind, step.test)}"
        case _:
            return ""


# --- commands --------------------------------------------------------------------------------------


def allowed_commands(state: RolloutState) -> tuple[Command, ...]:
    """The commands `on_command` accepts in this state, in a fixed order."""
    plan = state.plan
    if state.phase is Phase.ROLLING_BACK:
        return ()
    allowed: set[str] = set()
    if plan.stable is not None and not state.stable_retired and state.weights.candidate > 0:
        allowed.add("rollback")
    if state.phase in FINISHED_PHASES:
        if state.phase is not Phase.SUCCEEDED:
            allowed.add("retry")
    else:
        allowed.add("abort")
        steps = plan_steps(plan)
        step = steps[state.step]
        if step.kind in _WAITING_KINDS:
            allowed.add("promote")
        if step.kind in _TRAFFIC_KINDS and _skipped_by_full(steps, state.step):
            allowed.add("promote-full")
        if state.paused_by == "inconclusive":
            allowed.add("retry")
        elif state.paused_by == "command":
            allowed.add("resume")
        elif (
            step.kind in _TRAFFIC_KINDS
            and step.kind != "gate"
            and not (step.kind == "pause" and step.seconds is None)
        ):
            allowed.add("pause")
    return tuple(c for c in COMMANDS if c in allowed)


def on_command(state: RolloutState, command: Command, now: float) -> RolloutState:
    """The state after an operator's command; RolloutError (saying what is allowed) if not allowed now."""
    plan = state.plan
    if command not in COMMANDS:
        raise RolloutError(f"unknown command {command!r}: use one of {', '.join(COMMANDS)}")
    allowed = allowed_commands(state)
    if command not in allowed:
        where = f"{state.phase}" + (f" ({state.reason})" if state.reason else "")
        if allowed:
            now_ok = ", ".join(allowed)
        elif state.phase is Phase.ROLLING_BACK:
            now_ok = "nothing until it has gone back to the stable version"
        else:
            now_ok = "nothing, the release is over"
        raise RolloutError(
            f"cannot {command} the release of {plan.service} while {where}; allowed now: {now_ok}"
        )
    what = f"command: {command}"
    steps = plan_steps(plan)
    match command:
        case "abort":
            return _unwind(state, now, "aborted", "aborted by command", what)
        case "rollback":
            return _unwind(state, now, "rolled_back", "manual rollback", what)
        case "pause":
            state = replace(state, phase=Phase.PAUSED, paused_by="command", reason="paused by command")
            return _record(state, now, what, state.reason)
        case "resume":
            step = steps[state.step]
            state = replace(state, phase=_phase_of(step), paused_by=None, reason=_step_reason(step, plan))
            return _record(state, now, what, "continuing the current step")
        case "retry":
            if state.paused_by == "inconclusive":
                return _record(_enter(state, state.step, now), now, what, "analysing again")
            fresh = start(plan, now)
            attempt = state.attempt + 1
            fresh = replace(fresh, attempt=attempt, history=state.history)
            return _record(fresh, now, what, f"attempt {attempt}: starting over")
        case "promote-full":
            # Entering the current step again with the flag set skips it and every later weight,
            # analysis and pause (see `_enter`): the next action is the switch to 100 %.
            state = _enter(replace(state, full_promotion=True), state.step, now)
            why = f"skipping every remaining step: {plan.candidate} takes all traffic"
            return _record(state, now, what, why)
        case _:  # promote: the next step
            return _advance(state, now, what, _promote_reason(state, steps[state.step]))


def _promote_reason(state: RolloutState, step: Step) -> str:
    if state.paused_by == "inconclusive":
        return "going on despite the inconclusive analysis"
    match step.kind:
        case "observe":
            return "ending the analysis"
        case "test":
            return "ending the test"
        case "warm":
            return f"retiring {state.plan.stable} now"
        case _:  # pause, gate
            return "ending the pause"


# --- telling what happens ---------------------------------------------------------------------------


def describe(action: StepAction, plan: Plan) -> str:
    """An action in words, e.g. 'set weights v1 95% / v2 5%'."""
    match action:
        case Prepare(version, instances):
            return f"prepare {instances} instance{'s' if instances != 1 else ''} of {version}"
        case WaitHealthy(version, timeout_s):
            return f"wait for {version} to be healthy (at most {timeout_s:g}s)"
        case Migrate(version):
            return f"migrate with {version}"
        case SetWeights(weights):
            return f"set weights {_split(weights, plan)}"
        case Observe(duration_s, _):
            return f"analyse for {duration_s:g}s"
        case Hold(until, _):
            return "hold until promoted" if until is None else "hold until the pause ends"
        case Retire(version):
            return f"retire {version}"
        case Finish(outcome, _):
            return f"finish ({outcome})"
        case RunHook(kind, name, timeout_s):
            return f"run the {hook_title(kind, name)} (at most {timeout_s:g}s)"
    raise AssertionError(action)  # pragma: no cover - the match is exhaustive


def _split(weights: Weights, plan: Plan) -> str:
    return f"{plan.stable or '(none)'} {weights.stable}% / {plan.candidate} {weights.candidate}%"


def _record(
    state: RolloutState, now: float, what: str, reason: str = "", checks: tuple[Check, ...] = ()
) -> RolloutState:
    event = Event(now, state.phase, state.step, what, state.weights, reason, checks)
    return replace(state, history=(*state.history, event))


def _ignore(state: RolloutState, now: float, outcome: StepOutcome, why: str) -> RolloutState:
    return _record(state, now, "ignored", f"{type(outcome).__name__}: {why}")
