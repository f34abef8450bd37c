"""The controller: drives a strategy against a target, and writes every step down first.

For each action the strategy asks for, the controller records the step as `started`, carries
it out on the target, records it `done` (or `failed`) with its outcome, and stores the
strategy's new state. Killed at any point, it is resumed by `shipyard rollout resume`: the
strategy's state says what comes next, and every target action is idempotent, so the action
that was cut short is simply carried out again. One release per service at a time: the
controller holds the `rollout:<service>` lease and renews it as it goes.

Every analysis interval it also runs the policy's Prometheus checks against the Prometheus named
by `prometheus_url` (default: $SHIPYARD_PROMETHEUS_URL) and merges them into the analysis, so a
Prometheus check over its max fails a window (and rolls back) like a built-in check; with no URL
they stay "skipped" and decide nothing.

While it waits (an analysis interval, a health check) it looks every POLL_S for a queued command
and for a crash of the candidate: a promote, pause or abort applies within a fraction of a
second, and a candidate whose app exits at any time after it started fails the release at once,
quoting the end of its log. Before the candidate takes traffic, it measures the stable version's
p99 (its traffic while the candidate starts): the default `max_p99_ms` is derived from it.

A release hook (`rollout.hooks`, `_hooks.py`) runs as a step of its own, polled like a health check:
a command or a crash cuts it short (the hook is killed), and a controller killed while it ran
leaves the step `started` with the hook's process recorded, which the resuming controller kills
before running the hook again.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import NotFoundError, ReleaseInProgress, RolloutError, ShipyardError, TargetError, UserError
from ..locks import Lease, LockHeldError, holder
from ..monitor import Event, Notifier
from ..spec import Stack
from ..state import RolloutCommandRow, RolloutRow, RolloutStepRow, as_utc, record_audit, utcnow
from ._analysis import (
    PROMETHEUS_URL_ENV,
    QUANTILE,
    analyse,
    baseline_limit_ms,
    logged,
    lossy,
    merge_checks,
    quantile_ms,
)
from ._hooks import HookProcess, HookRan, Hooks, HookStarted, RunHook, hook_command, stop_earlier_run
from ._model import (
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
    Sample,
    SetWeights,
    StrategyName,
    WaitHealthy,
    Weights,
    audited_command,
)
from ._prometheus import PrometheusChecks, ReleaseContext, check_url
from ._strategy import (
    Plan,
    RolloutState,
    StepAction,
    StepOutcome,
    is_finished,
    next_action,
    note,
    on_command,
    on_crash,
    on_outcome,
    record_baseline,
    start,
    watches_crashes,
)
from .targets._base import Target

HOLD_STEP_ENV = "SHIPYARD_TEST_HOLD_STEP"
"""Tests only: the action type (e.g. `Retire`) after whose start the controller waits a moment."""
HOLD_STEP_SECONDS = 3.0

COMMANDS: tuple[Command, ...] = ("promote", "promote-full", "abort", "pause", "resume", "retry", "rollback")

POLL_S = 0.2
"""How often the controller looks for a queued command and a crashed candidate while it waits (an
analysis interval, a health check): a promote, pause or abort applies within this, not at the end
of the interval, and a crash fails the release as soon."""
HEALTH_POLL_S = 0.25


def lock_name(service: str) -> str:
    return f"rollout:{service}"


def to_data(value: Any) -> dict[str, Any]:
    """An action or outcome as JSON-ready data, tagged with its type."""
    return {"type": type(value).__name__, **dataclasses.asdict(value)}


_ACTIONS: dict[str, type[StepAction]] = {
    kind.__name__: kind
    for kind in (Prepare, WaitHealthy, Migrate, SetWeights, Observe, Hold, Retire, Finish, RunHook)
}


def action_from_data(data: Mapping[str, Any]) -> StepAction | None:
    """The action `to_data` recorded; None for anything else (e.g. a Kubernetes release's command)."""
    kind = _ACTIONS.get(str(data.get("type")))
    if kind is None:
        return None
    fields = {name: value for name, value in data.items() if name != "type"}
    try:
        if kind is SetWeights:
            fields["weights"] = Weights(**fields["weights"])
        return kind(**fields)
    except (KeyError, TypeError):
        return None


class Controller:
    """Runs releases of one stack's services on one target."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        stack: Stack,
        target: Target,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        lease_ttl_s: float = 15.0,
        on_progress: Callable[[RolloutState], None] | None = None,
        prometheus_url: str | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        """`prometheus_url`: where the policy's Prometheus checks run; default $SHIPYARD_PROMETHEUS_URL,
        then the policy's `analysis.prometheus_url`. `hooks`: what runs the policy's release hooks
        on the target (a release with hooks fails at its first hook without it)."""
        self.sessions = sessions
        self.stack = stack
        self.target = target
        self.notifier = notifier or Notifier(stack.notifications, sessions)
        self.clock = clock
        self.sleep = sleep
        self.lease_ttl_s = lease_ttl_s
        self.on_progress = on_progress
        url = prometheus_url or os.environ.get(PROMETHEUS_URL_ENV, "").strip() or None
        self.prometheus_url = check_url(url) if url else None
        self.hooks = hooks

    # --- starting ---------------------------------------------------------------------------

    def begin(self, service: str, version: str, actor: str, strategy: StrategyName | None = None) -> int:
        """Check the request, take the service's lease and record a new release; returns its id.

        Nothing on the target changes here: a refused request leaves the world as it was.
        """
        check_release(self.stack, service, version, self.target.name)
        lease = Lease(self.sessions, lock_name(service), ttl_s=self.lease_ttl_s)
        try:
            lease.acquire()
        except LockHeldError as exc:
            raise release_in_progress(self.sessions, service, str(exc)) from None
        try:
            status = self.target.status(service)
            plan = release_plan(self.stack, service, version, status.versions, strategy)
            state = start(plan, self.clock())
            with self.sessions() as session, session.begin():
                row = RolloutRow(
                    service=service,
                    environment=self.stack.environment,
                    target=self.target.name,
                    strategy=plan.strategy,
                    stable=plan.stable,
                    candidate=version,
                    phase=str(state.phase),
                    actor=actor,
                    stack=self.stack.model_dump(mode="json", by_alias=True),
                    state=state.to_data(),
                )
                session.add(row)
                session.flush()
                rollout_id = row.id
        except BaseException:
            lease.release()
            raise
        self._lease = lease
        inputs = {"rollout": rollout_id, "version": version, "stable": plan.stable, "strategy": plan.strategy}
        record_audit(
            self.sessions, actor=actor, action="deploy", target_kind="service", target=service,
            after={**inputs, "environment": self.stack.environment, "target": self.target.name},
            outcome="started",
        )  # fmt: skip
        self._notify(state, "rollout.started", f"{service}: releasing {version} ({plan.strategy})", "info")
        return rollout_id

    def resume(self, service: str) -> int:
        """Take over the unfinished release of `service`; returns its id."""
        row = self.latest(service)
        if row is None or row.finished_at is not None:
            raise UserError(f"{service!r} has no unfinished release to resume")
        lease = Lease(self.sessions, lock_name(service), ttl_s=self.lease_ttl_s)
        try:
            lease.acquire()
        except LockHeldError as exc:
            raise RolloutError(
                f"release {row.id} of {service!r} is being run by another controller: {exc}"
            ) from None
        self._lease = lease
        return row.id

    # --- running ----------------------------------------------------------------------------

    def run(self, rollout_id: int) -> RolloutState:
        """Carry the release through to its end (or until this process is stopped)."""
        self._baseline_from: Sample | None = None
        try:
            state = self._load(rollout_id)
            while not is_finished(state):
                self._lease.renew()
                state, _ = self._interrupt(rollout_id, state, None)
                if is_finished(state):
                    break
                action = next_action(state, self.clock())
                if isinstance(action, Finish):
                    state = self._finish(rollout_id, state, action)
                    break
                state = self._step(rollout_id, state, action)
            return state
        finally:
            self._lease.release()
            self.notifier.wait()

    def _step(self, rollout_id: int, state: RolloutState, action: StepAction) -> RolloutState:
        seq, started = self._record_start(rollout_id, action)
        service = state.plan.service
        state = self._baseline(rollout_id, state, action)
        outcome: StepOutcome
        try:
            if isinstance(action, Observe | Hold):
                return self._watch(rollout_id, state, action, seq)
            if isinstance(action, WaitHealthy):
                return self._wait_healthy(rollout_id, state, action, seq, started)
            if isinstance(action, RunHook):
                return self._run_hook(rollout_id, state, action, seq)
            outcome = self._execute(state, action)
        except TargetError as exc:
            outcome = Failed(str(exc))
        self._record_end(seq, outcome)
        state = on_outcome(state, outcome, self.clock(), action=action)
        self._save(rollout_id, state)
        if isinstance(action, SetWeights) and isinstance(outcome, Done) and action.weights.candidate == 100:
            self._notify(
                state, "rollout.promoted", f"{service}: {state.plan.candidate} takes all traffic", "info"
            )
        return state

    def _execute(self, state: RolloutState, action: StepAction) -> Outcome:
        target, plan = self.target, state.plan
        service = plan.service
        if isinstance(action, Prepare):
            target.prepare(service, action.version, action.instances)
            return Done()
        if isinstance(action, Migrate):
            return Migrated(target.migrate(service, action.version))
        if isinstance(action, SetWeights):
            weights = {plan.candidate: action.weights.candidate}
            if plan.stable is not None:
                weights[plan.stable] = action.weights.stable
            target.set_weights(service, weights)
            return Done()
        if isinstance(action, Retire):
            target.retire(service, action.version)
            return Done()
        raise RolloutError(f"the controller cannot carry out {type(action).__name__}")  # pragma: no cover

    def _wait_healthy(
        self, rollout_id: int, state: RolloutState, action: WaitHealthy, seq: int, started: float
    ) -> RolloutState:
        """Poll the candidate's health until it is ready or the deadline passes, which counts from
        when the step first started (also across a resume); a command or a crash cuts it short."""
        deadline = started + action.timeout_s
        while True:
            try:
                health = self.target.health(state.plan.service, action.version)
            except TargetError as exc:
                outcome: Outcome = Failed(str(exc))
                break
            if health.ready or self.clock() >= deadline:
                outcome = HealthChecked(health, timed_out=not health.ready)
                break
            self._lease.renew()
            if self._wait(rollout_id, state, HEALTH_POLL_S):
                state, cut = self._interrupt(rollout_id, state, action)
                if cut is not None:
                    self._record_end(seq, cut)
                    return state
        self._record_end(seq, outcome)
        state = on_outcome(state, outcome, self.clock(), action=action)
        self._save(rollout_id, state)
        return state

    def _run_hook(self, rollout_id: int, state: RolloutState, action: RunHook, seq: int) -> RolloutState:
        """Run a release hook to its end (at most its timeout), watching for commands and crashes
        meanwhile: one that ends the step kills the hook. An earlier run of this step (its
        controller was killed) is killed first: the hook runs again from its start."""
        plan = state.plan
        command = hook_command(plan.policy.hooks, action.kind, action.name)
        if command is None:  # the policy recorded with the release has no such hook: cannot be
            outcome: StepOutcome = Failed(f"the release's policy has no {action.kind} hook {action.name!r}")
        elif self.hooks is None:
            outcome = Failed(f"this controller runs no hooks on the {self.target.name} target")
        else:
            earlier = self._hook_started(seq)
            if earlier is not None and stop_earlier_run(earlier):
                stopped = f"stopped the {action.kind} hook's earlier run (pid {earlier.pid})"
                state = self._log_event(rollout_id, state, stopped)
            process = self.hooks.start(
                action,
                command,
                service=plan.service,
                environment=self.stack.environment,
                candidate=plan.candidate,
                stable=plan.stable,
            )
            self._record_progress(seq, process.started)
            ran = self._follow_hook(rollout_id, state, action, process)
            if isinstance(ran, tuple):  # cut short by a command or a crash
                state, cut = ran
                self._record_end(seq, cut)
                return state
            outcome = ran
        self._record_end(seq, outcome)
        state = on_outcome(state, outcome, self.clock(), action=action)
        self._save(rollout_id, state)
        return state

    def _follow_hook(
        self, rollout_id: int, state: RolloutState, action: RunHook, process: HookProcess
    ) -> HookRan | tuple[RolloutState, Outcome]:
        """Poll the hook until it ends; (state, outcome for the step) when a command or a crash
        ended the step first (the hook is killed)."""
        while True:
            ran = process.poll()
            if ran is not None:
                return ran
            self._lease.renew()
            if self._wait(rollout_id, state, HEALTH_POLL_S):
                state, cut = self._interrupt(rollout_id, state, action)
                if cut is not None:
                    process.stop("was stopped: the release moved on")
                    return state, cut

    def _log_event(self, rollout_id: int, state: RolloutState, what: str) -> RolloutState:
        """Note `what` in the release's history (no change of state otherwise)."""
        state = note(state, what, self.clock())
        self._save(rollout_id, state)
        return state

    # --- waiting, and what interrupts it -----------------------------------------------------

    def _wait(self, rollout_id: int, state: RolloutState, seconds: float) -> bool:
        """Sleep `seconds`, waking early (True) when a command is queued or the candidate crashed."""
        deadline = self.clock() + seconds
        while True:
            left = deadline - self.clock()
            if left <= 0:
                return False
            self.sleep(min(POLL_S, left))
            if self._command_queued(rollout_id) or self._crash(state) is not None:
                return True

    def _interrupt(
        self, rollout_id: int, state: RolloutState, action: StepAction | None
    ) -> tuple[RolloutState, Outcome | None]:
        """Apply what may have come while `action` was under way: a crash of the candidate (the
        release fails) and the queued commands. Returns the state, and the outcome to record for
        `action` when it is no longer the one to carry on (None: carry on)."""
        crash = self._crash(state)
        if crash is not None:
            crashed = on_crash(state, crash, self.clock())
            if crashed is not state:
                self._save(rollout_id, crashed)
                return crashed, Failed(crash)
        after = self._apply_commands(rollout_id, state)
        if after is not state and next_action(after, self.clock()) != action:
            return after, Done()
        return after, None

    def _crash(self, state: RolloutState) -> str | None:
        """The candidate's crash while the release may act on it (see `on_crash`), else None."""
        plan = state.plan
        if not watches_crashes(state):
            return None
        try:
            return self.target.crashed(plan.service, plan.candidate)
        except TargetError:
            return None  # the target's state cannot be read now: the next look may

    def _command_queued(self, rollout_id: int) -> bool:
        with self.sessions() as session:
            return (
                session.scalar(
                    select(RolloutCommandRow.id)
                    .where(RolloutCommandRow.rollout_id == rollout_id, RolloutCommandRow.applied_at.is_(None))
                    .limit(1)
                )
                is not None
            )

    # --- the stable's baseline -----------------------------------------------------------------

    def _baseline(self, rollout_id: int, state: RolloutState, action: StepAction) -> RolloutState:
        """Measure the stable version's p99 between this run's first step and the candidate's first
        traffic, when the policy has no `max_p99_ms` (it is derived from this baseline)."""
        plan = state.plan
        policy = plan.policy.analysis
        if plan.stable is None or policy.max_p99_ms is not None or state.weights.candidate > 0:
            return state
        switching = isinstance(action, SetWeights) and action.weights.candidate > 0
        try:
            now_sample = self.target.sample(plan.service, plan.stable)
        except TargetError:
            return state
        if not switching:
            if self._baseline_from is None:
                self._baseline_from = now_sample
            return state
        if self._baseline_from is None:
            return state  # resumed at the switch: nothing was measured before it
        window = now_sample - self._baseline_from
        self._baseline_from = None
        seen = logged(window)
        p99 = quantile_ms(window, QUANTILE)
        measured = f"{plan.stable}'s p99 before {plan.candidate} took traffic"
        if p99 is None or seen < policy.min_requests:
            detail = (
                f"{measured}: {seen} requests < min_requests {policy.min_requests}, no max_p99_ms derived"
            )
            p99 = None
        elif lossy(window, policy):
            detail = f"{measured}: too many log lines missing, no max_p99_ms derived"
            p99 = None
        else:
            limit = baseline_limit_ms(policy, p99)
            detail = f"{measured}: {p99:.0f} ms over {seen} requests; max_p99_ms {limit:.0f}"
        state = record_baseline(state, p99, detail, self.clock())
        self._save(rollout_id, state)
        return state

    # --- analysing ------------------------------------------------------------------------------

    def _watch(self, rollout_id: int, state: RolloutState, action: Observe | Hold, seq: int) -> RolloutState:
        """Analyse every interval while observing or holding, until the strategy moves on."""
        plan = state.plan
        url = self.prometheus_url or plan.policy.analysis.prometheus_url
        prometheus = PrometheusChecks(plan.policy.analysis.prometheus, url)
        context = ReleaseContext(
            service=plan.service,
            environment=self.stack.environment,
            version=plan.candidate,
            stable_version=plan.stable,
            # While holding, there is no window of its own: the policy's.
            window_s=action.duration_s if isinstance(action, Observe) else float(plan.policy.analysis.window),
        )
        with prometheus:
            state, outcome = self._analyse_every_interval(rollout_id, state, action, prometheus, context)
        self._record_end(seq, outcome)
        return state

    def _analyse_every_interval(
        self,
        rollout_id: int,
        state: RolloutState,
        action: Observe | Hold,
        prometheus: PrometheusChecks,
        context: ReleaseContext,
    ) -> tuple[RolloutState, Outcome]:
        """The body of `_watch`: returns the state and the outcome to record for the step.

        It waits an interval at a time, but a queued command or a crash of the candidate cuts the
        wait short (`_wait`). A window that ends inconclusive and is to be observed again (the
        action stays the same) starts afresh from the samples at its end.
        """
        plan = state.plan
        service = plan.service
        started = self.clock()
        base_candidate = self.target.sample(service, plan.candidate)
        base_stable = self.target.sample(service, plan.stable) if plan.stable else None
        while True:
            self._wait(rollout_id, state, action.interval_s)
            self._lease.renew()
            state, cut = self._interrupt(rollout_id, state, action)
            if cut is not None:
                return state, cut
            now = self.clock()
            now_candidate = self.target.sample(service, plan.candidate)
            now_stable = self.target.sample(service, plan.stable) if plan.stable else None
            stable = now_stable - base_stable if now_stable is not None and base_stable is not None else None
            analysis = analyse(
                now_candidate - base_candidate,
                stable,
                plan.policy.analysis,
                baseline_p99_ms=state.baseline_p99_ms,
            )
            if prometheus.client is not None and prometheus.checks:
                analysis = merge_checks(analysis, prometheus.evaluate(context))
            complete = isinstance(action, Observe) and now - started >= action.duration_s
            outcome: Outcome = Observed(analysis, complete)
            state = on_outcome(state, outcome, now, action=action)
            if isinstance(action, Hold) and action.until is not None and now >= action.until:
                # Ignored by the strategy when the analysis above already moved it on (a rollback).
                state = on_outcome(state, Done(), now, action=action)
                outcome = Done()
            self._save(rollout_id, state)
            if is_finished(state) or next_action(state, self.clock()) != action:
                return state, outcome
            if complete:  # observed again: a fresh window
                started, base_candidate, base_stable = now, now_candidate, now_stable

    def _finish(self, rollout_id: int, state: RolloutState, action: Finish) -> RolloutState:
        seq, _ = self._record_start(rollout_id, action)
        self._record_end(seq, Done())
        with self.sessions() as session, session.begin():
            session.execute(
                update(RolloutRow)
                .where(RolloutRow.id == rollout_id)
                .values(
                    outcome=action.outcome, reason=action.reason, finished_at=utcnow(), updated_at=utcnow()
                )
            )
            started_by = session.scalar(select(RolloutRow.actor).where(RolloutRow.id == rollout_id)) or "?"
        record_audit(
            self.sessions, actor=started_by, action="deploy", target_kind="service",
            target=state.plan.service,
            after={"rollout": rollout_id, "version": state.plan.candidate, "reason": action.reason},
            outcome=action.outcome,
        )  # fmt: skip
        severity = "info" if action.outcome == "succeeded" else "page"
        ended = action.outcome.replace("_", " ")
        summary = f"{state.plan.service}: {state.plan.candidate} {ended}: {action.reason}"
        self._notify(state, f"rollout.{action.outcome}", summary, severity)
        return state

    # --- commands ---------------------------------------------------------------------------

    def _apply_commands(self, rollout_id: int, state: RolloutState) -> RolloutState:
        with self.sessions() as session, session.begin():
            pending = list(
                session.scalars(
                    select(RolloutCommandRow)
                    .where(RolloutCommandRow.rollout_id == rollout_id, RolloutCommandRow.applied_at.is_(None))
                    .order_by(RolloutCommandRow.id)
                )
            )
            for command in pending:
                try:
                    state = on_command(state, command.command, self.clock())  # type: ignore[arg-type]
                    command.result = "ok"
                except ShipyardError as exc:
                    command.result = f"refused: {exc.message}"
                command.applied_at = utcnow()
            if pending:
                self._save_in(session, rollout_id, state)
        return state

    # --- persistence ------------------------------------------------------------------------

    def _load(self, rollout_id: int) -> RolloutState:
        with self.sessions() as session:
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                raise UserError(f"no release {rollout_id}")
            return RolloutState.from_data(row.state)

    def _save(self, rollout_id: int, state: RolloutState) -> None:
        with self.sessions() as session, session.begin():
            self._save_in(session, rollout_id, state)
        if self.on_progress is not None:
            self.on_progress(state)

    @staticmethod
    def _save_in(session: Session, rollout_id: int, state: RolloutState) -> None:
        session.execute(
            update(RolloutRow)
            .where(RolloutRow.id == rollout_id)
            .values(state=state.to_data(), phase=str(state.phase), updated_at=utcnow())
        )

    def _record_start(self, rollout_id: int, action: StepAction) -> tuple[int, float]:
        """Write the step down before acting; a step cut short is found `started` and redone."""
        data = to_data(action)
        with self.sessions() as session, session.begin():
            last = session.scalar(
                select(RolloutStepRow)
                .where(RolloutStepRow.rollout_id == rollout_id)
                .order_by(RolloutStepRow.seq.desc())
                .limit(1)
            )
            if last is not None and last.status == "started" and last.action == data:
                return last.id, as_utc(last.started_at).timestamp()
            step = RolloutStepRow(
                rollout_id=rollout_id, seq=(last.seq + 1) if last else 1, action=data, status="started"
            )
            session.add(step)
            session.flush()
            step_id = step.id
        if os.environ.get(HOLD_STEP_ENV) == data.get("type"):
            # For the kill-at-every-step tests: a quick step (Retire) would otherwise be over before
            # the test's kill lands. Only a new step holds, so the resumed controller goes straight on.
            time.sleep(HOLD_STEP_SECONDS)
        return step_id, self.clock()

    def _record_progress(self, step_id: int, started: HookStarted) -> None:
        """Note in a step still under way which process carries it out (see `_hook_started`)."""
        with self.sessions() as session, session.begin():
            session.execute(
                update(RolloutStepRow).where(RolloutStepRow.id == step_id).values(outcome=to_data(started))
            )

    def _hook_started(self, step_id: int) -> HookStarted | None:
        """The hook process an earlier run of this (still started) step recorded, if any."""
        with self.sessions() as session:
            data = session.scalar(select(RolloutStepRow.outcome).where(RolloutStepRow.id == step_id)) or {}
        if data.get("type") != HookStarted.__name__:
            return None
        try:
            return HookStarted(pid=int(data["pid"]), started=int(data["started"]))
        except (KeyError, TypeError, ValueError):
            return None

    def _record_end(self, step_id: int, outcome: StepOutcome) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(RolloutStepRow)
                .where(RolloutStepRow.id == step_id)
                .values(
                    status="failed" if isinstance(outcome, Failed) else "done",
                    outcome=to_data(outcome),
                    finished_at=utcnow(),
                )
            )

    def latest_by_id(self, rollout_id: int) -> RolloutRow | None:
        with self.sessions() as session:
            return session.get(RolloutRow, rollout_id)

    def latest(self, service: str) -> RolloutRow | None:
        return latest_release(self.sessions, service)

    def _notify(self, state: RolloutState, kind: str, summary: str, severity: str) -> None:
        plan = state.plan
        details = {
            "service": plan.service,
            "environment": self.stack.environment,
            "stable": plan.stable,
            "candidate": plan.candidate,
            "strategy": plan.strategy,
            "phase": str(state.phase),
        }
        self.notifier.send(Event(kind, summary, severity, details))


def check_release(stack: Stack, service: str, version: str, target: str) -> None:
    """Refuse a release the stack cannot make (UserError saying why): an unknown service, one with
    no `run` command on the local target, a version that is not a plain name."""
    spec = stack.services.get(service)
    if spec is None:
        known = ", ".join(sorted(stack.services)) or "none"
        raise UserError(f"no service {service!r} in the spec; services: {known}")
    if target == "local" and not spec.run:
        raise UserError(f"service {service!r} has no `run` command, so it cannot run on plain hosts")
    if (
        not version
        or len(version) > 100
        or not version.replace(".", "").replace("-", "").replace("_", "").isalnum()
    ):
        raise UserError(f"version {version!r}: use letters, digits, '.', '-' and '_'")


def release_plan(
    stack: Stack,
    service: str,
    version: str,
    running: Mapping[str, int],
    strategy: StrategyName | None = None,
) -> Plan:
    """The plan of a release of `version`, given the versions running now and their weights.

    UserError if `version` already runs; RolloutError if several versions take traffic (an earlier
    release did not finish).
    """
    live = [v for v, weight in running.items() if weight > 0]
    if version in running:
        where = "live" if version in live else "running"
        raise UserError(f"version {version!r} of {service!r} is already {where}")
    if len(live) > 1:
        raise RolloutError(
            f"{service!r} serves several versions ({', '.join(live)}): an earlier release did not"
            f" finish; run `shipyard rollout resume {service}` or `shipyard rollout abort {service}`"
        )
    spec = stack.services[service]
    policy = stack.rollout
    if strategy is not None and strategy != policy.strategy:
        policy = policy.model_copy(update={"strategy": strategy})
    instances = spec.autoscaling.min if spec.autoscaling else max(spec.replicas, 1)
    return Plan(
        service=service,
        strategy=policy.strategy,
        stable=live[0] if live else None,
        candidate=version,
        instances=instances,
        policy=policy,
        has_migration=spec.migration is not None,
    )


def release_in_progress(sessions: sessionmaker[Session], service: str, held: str) -> ReleaseInProgress:
    """The error for a release of `service` asked for while another one runs (`held`: who holds the
    service's lease), naming that release and how to end it."""
    running = latest_release(sessions, service)
    which = f" (release {running.id}: {running.candidate}, {running.phase})" if running else ""
    return ReleaseInProgress(
        f"another release of {service!r} is in progress{which}, {held}: let it finish, or end it with"
        f" `shipyard rollout promote|abort {service}`",
        rollout_id=running.id if running else None,
    )


def latest_release(
    sessions: sessionmaker[Session], service: str, environment: str | None = None
) -> RolloutRow | None:
    """The newest release of `service` (in `environment`, when given: one store can hold staging's
    and production's releases of a service), finished or not."""
    query = select(RolloutRow).where(RolloutRow.service == service)
    if environment is not None:
        query = query.where(RolloutRow.environment == environment)
    with sessions() as session:
        return session.scalar(query.order_by(RolloutRow.id.desc()).limit(1))


def queue_command(
    sessions: sessionmaker[Session],
    service: str,
    command: Command,
    actor: str,
    environment: str | None = None,
) -> tuple[int, bool]:
    """Queue `command` for the release of `service`; returns (rollout id, whether a controller runs it)."""
    if command not in COMMANDS:
        raise UserError(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}")
    row = latest_release(sessions, service, environment)
    if row is None:  # the API's 404, as for a read of the service's release
        raise NotFoundError(f"{service!r} has never been released")
    with sessions() as session, session.begin():
        session.add(RolloutCommandRow(rollout_id=row.id, command=command, actor=actor))
    return row.id, holder(sessions, lock_name(service)) is not None


def steer_release(
    sessions: sessionmaker[Session],
    service: str,
    command: Command,
    actor: str,
    environment: str | None = None,
) -> tuple[int, bool]:
    """Queue promote/promote-full/abort/pause/resume/retry for a service's release and audit who asked
    (a promote-full as `rollout.promote` with `"full": true`).

    Returns (rollout id, whether a controller runs the release now and will apply it).
    """
    rollout_id, running = queue_command(sessions, service, command, actor, environment)
    record_audit(
        sessions,
        actor=actor,
        action=f"rollout.{audited_command(command)}",
        target_kind="service",
        target=service,
        after={"rollout": rollout_id, "command": command, "controller_running": running}
        | ({"full": command == "promote-full"} if command.startswith("promote") else {}),
        outcome="queued",
    )
    return rollout_id, running


def wait_for_command(sessions: sessionmaker[Session], rollout_id: int, timeout_s: float = 30.0) -> str | None:
    """The result of the newest command of a release once a controller applied it, else None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sessions() as session:
            row = session.scalar(
                select(RolloutCommandRow)
                .where(RolloutCommandRow.rollout_id == rollout_id)
                .order_by(RolloutCommandRow.id.desc())
                .limit(1)
            )
            if row is not None and row.applied_at is not None:
                return row.result
        time.sleep(0.2)
    return None
