"""Release verbs: deploy, rollback, resume, steer, down; and the one read model of a release.

    deploy(ws, Deploy(service="web", version="v2"))     → ReleaseOutcome "release 12 (web v2): succeeded"
    steer(ws, Steer(service="web", command="promote"))   → SteerOutcome   "promote: release 12 of web: ok"
    steer(ws, Steer(service="web", command="promote", full=True))  → every remaining step skipped
    rollback(ws, Rollback(service="web"))                 → ReleaseOutcome
    resume(ws, Resume(service="web"))                     → ReleaseOutcome
    down(ws, Down())                                      → DownOutcome
    release_view(ws.sessions, "web")                     → ReleaseView (the newest release)
    release_history(ws.sessions, "web")                  → [ReleaseView], newest first

A release is started on the target its request names (`Deploy.target`) and steered through the
driver of the target it was recorded with (`RolloutRow.target`): the local controller, or Argo
Rollouts (`shipyard.rollout.ReleaseDriver`). With `dry_run=True` a verb changes nothing, anywhere
(no row, no command, no audit entry, no process, no HAProxy change, no request to a cluster) and
returns what it would do as `plan`.

`deploy`, `resume` and `rollback` carry a local release on to its end in this process, as a job's
child does; stopped (Ctrl-C, or SIGTERM turned into one by the process' edge) they raise
`ReleaseStopped`, and the release stays recorded for `resume`. Progress goes to the optional
`on_started` and `on_progress` callbacks (the CLI's live panel).

The Kubernetes cluster is the `kube` argument's (`KubeConnection`: kubeconfig and context; None:
`$KUBECONFIG`, `~/.kube/config` or the pod's service account).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import NotFoundError, ReleaseInProgress, ReleaseStopped, RolloutError, ShipyardError, UserError
from ..locks import holder
from ..rollout import (
    KubeConnection,
    OnProgress,
    Plan,
    PlannedRelease,
    ReleaseDriver,
    RolloutState,
    Steered,
    TargetName,
    action_from_data,
    allowed_commands,
    describe,
    describe_plan,
    latest_release,
    lock_name,
    next_action,
    plan_steps,
    release_driver,
    release_in_progress,
    where,
)
from ..state import JobRow, RolloutRow, RolloutStepRow, as_utc, record_audit, rfc3339, utcnow
from ._base import Request, Result
from ._workspace import Workspace

__all__ = [
    "CheckView",
    "Deploy",
    "Down",
    "DownOutcome",
    "KubeConnection",
    "KubeView",
    "ReleaseOutcome",
    "ReleasePlan",
    "ReleaseView",
    "Resume",
    "Rollback",
    "Steer",
    "SteerOutcome",
    "StepView",
    "WeightsView",
    "deploy",
    "down",
    "latest_releases",
    "refresh_releases",
    "refuse_concurrent_release",
    "release_history",
    "release_steps",
    "release_view",
    "release_view_of",
    "resume",
    "rollback",
    "steer",
    "watch_release",
]

Target = Literal["local", "kubernetes"]
Strategy = Literal["blue-green", "canary"]
SteerCommand = Literal["promote", "abort", "pause", "resume", "retry"]
HISTORY_LIMIT = 100
COMMAND_WAIT_S = 30.0
"""How long `rollback` waits for a running controller to apply it."""
KUBE_STEERING: tuple[str, ...] = ("promote", "promote-full", "abort", "pause", "resume")
"""What an unfinished Kubernetes release accepts (Argo's controller decides whether it acts)."""
RELEASE_JOB_KINDS = ("deploy", "rollback", "resume")
"""Jobs that run a release (and take the service's lease once their child has started)."""
JOB_STARTING_S = 30.0
"""How long a just-started release job counts as running a release without holding the service's
lease yet: its child process takes the lease within a few seconds; a job older than this that
holds nothing has ended its release, or died (and must not block deploys until it is reaped)."""


# --- requests ------------------------------------------------------------------------------------


class Deploy(Request):
    """Release `version` of `service` with the spec's strategy (or `strategy`)."""

    kind: Literal["deploy"] = "deploy"
    service: str
    version: str
    strategy: Strategy | None = None
    target: Target = "local"
    """local: processes behind HAProxy on this host; kubernetes: a cluster with Argo Rollouts."""
    dry_run: bool = False


class Rollback(Request):
    """Switch back to the previous version at once, while it is still warm (local releases)."""

    kind: Literal["rollback"] = "rollback"
    service: str
    target: Target | None = None
    """The target the caller expects the release on (refused if it runs elsewhere); None: any."""
    dry_run: bool = False


class Resume(Request):
    """Carry on a paused release, or one whose controller was stopped or killed."""

    kind: Literal["resume"] = "resume"
    service: str
    target: Target | None = None
    """The target the caller expects the release on (refused if it runs elsewhere); None: any."""
    dry_run: bool = False


class Steer(Request):
    """Send promote, abort, pause, resume or retry to the service's newest release.

    `promote` ends the step the release waits at and goes on to the next one; with `full`, it skips
    every remaining step (weights, analyses, pauses) and the new version takes all traffic at once,
    as `kubectl argo rollouts promote [--full]`.
    """

    kind: Literal["steer"] = "steer"
    service: str
    command: SteerCommand
    full: bool = False
    """promote only: skip every remaining step to 100 % (`promote --full`)."""
    target: Target | None = None
    """The target the caller expects the release on (refused if it runs elsewhere); None: any."""
    dry_run: bool = False

    @model_validator(mode="after")
    def _full_is_for_promote(self) -> Steer:
        if self.full and self.command != "promote":
            raise ValueError(f"full: only promote has a full form, not {self.command}; drop full")
        return self

    @property
    def driver_command(self) -> SteerCommand | Literal["promote-full"]:
        """The command as the release's driver takes it (`promote-full` for a full promote)."""
        return "promote-full" if self.full else self.command


class Down(Request):
    """Stop every app process of the local stack and its HAProxy (the releases stay recorded)."""

    kind: Literal["down"] = "down"
    force: bool = False
    """Stop even while a release's lease is held (its controller died and the lease has not run out)."""
    dry_run: bool = False


# --- results -------------------------------------------------------------------------------------


class ReleasePlan(Result):
    """What a verb would do (its dry run): nothing in it has happened."""

    verb: str
    target: TargetName
    service: str
    environment: str
    rollout_id: int | None
    """The release it acts on; None for a deploy (a new release would be recorded)."""
    stable: str | None
    candidate: str | None
    strategy: str | None
    actions: tuple[str, ...]
    requests: tuple[dict[str, Any], ...] = ()
    """kubernetes: the API requests it would send (method, path, content type, body)."""
    refused: str | None = None
    """Why it would be refused now (e.g. a command the release does not accept in its phase)."""

    @classmethod
    def of(cls, planned: PlannedRelease) -> ReleasePlan:
        """The driver's plan as a result (the same fields)."""
        return cls(**dataclasses.asdict(planned))

    def summary(self) -> str:
        which = f"release {self.rollout_id}" if self.rollout_id is not None else "a new release"
        head = f"dry run: {self.verb} {self.service} ({which}, {self.target})"
        if self.refused:
            return f"{head}: would be refused: {self.refused}"
        return f"{head}: {len(self.actions)} action{'s' if len(self.actions) != 1 else ''}, nothing done"


class ReleaseOutcome(Result):
    """How a release ended, or where it is when it goes on elsewhere; with a dry run, the plan."""

    rollout_id: int | None
    service: str
    version: str | None
    target: TargetName
    phase: str | None = None
    outcome: str | None = None
    """succeeded | rolled_back | aborted | failed | superseded; None while it goes on."""
    reason: str | None = None
    plan: ReleasePlan | None = None

    @property
    def ok(self) -> bool:
        """Not a failure: succeeded, goes on (Argo runs it; a controller applies the command), or a plan."""
        return self.outcome in (None, "succeeded")

    def summary(self) -> str:
        if self.plan is not None:
            return self.plan.summary()
        head = f"release {self.rollout_id} ({self.service} {self.version})"
        if self.outcome is not None:
            ended = self.outcome.replace("_", " ")
            return f"{head}: {ended}" + (
                f": {self.reason}" if self.reason and self.outcome != "succeeded" else ""
            )
        return f"{head}: {self.phase or 'recorded'}" + (f" ({self.reason})" if self.reason else "")


class SteerOutcome(Result):
    """What a steering command did, or (dry run) would do."""

    rollout_id: int
    service: str
    command: str
    target: TargetName
    controller_running: bool
    """Whether a controller runs the release and applies the command (Argo's always does)."""
    needs_controller: bool
    """local: nothing runs the release, and it needs a controller to apply the command (it is
    unfinished, or the command is retry): start one with `resume` (the API starts a job)."""
    applied: str | None = None
    """The controller's answer when waited for ("ok", "refused: …"); kubernetes: the Rollout's
    status afterwards, in one line."""
    pause_reasons: tuple[str, ...] = ()
    """kubernetes: what still holds the Rollout paused after the command."""
    plan: ReleasePlan | None = None

    @property
    def ok(self) -> bool:
        return not (self.applied or "").startswith("refused") and not (self.plan and self.plan.refused)

    def summary(self) -> str:
        if self.plan is not None:
            return self.plan.summary()
        if self.applied is not None:
            said = self.applied
        elif self.controller_running:
            said = "queued; the controller has not picked it up yet"
        elif self.needs_controller:
            said = "queued; no controller runs the release: `shipyard rollout resume` carries it on"
        else:
            said = "queued; the release is over, nothing runs it"
        return f"{self.command}: release {self.rollout_id} of {self.service}: {said}"


class DownOutcome(Result):
    """What `down` stopped, or (dry run) would stop."""

    stack: str
    environment: str
    processes: tuple[str, ...]
    """The app processes running when it started (each `<service>.<version>_<n>`)."""
    ran_here: bool
    """False when nothing of the stack ever ran on this host (no local state)."""
    dry_run: bool = False

    def summary(self) -> str:
        if not self.ran_here:
            return f"nothing runs for {self.stack} ({self.environment}) here"
        names = ", ".join(self.processes) or "none"
        if self.dry_run:
            return f"would stop HAProxy and {len(self.processes)} process(es): {names}"
        return f"stopped HAProxy and {len(self.processes)} process(es) of {self.stack} ({self.environment})"


# --- the read model ------------------------------------------------------------------------------


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class WeightsView(_View):
    stable: int | None
    candidate: int | None


class CheckView(_View):
    name: str
    verdict: str
    candidate: float | None
    stable: float | None
    threshold: float
    detail: str


class StepView(_View):
    seq: int
    action: dict[str, Any]
    status: str
    outcome: dict[str, Any] | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    what: str = ""
    """The action in words (e.g. "set weights v1 80% / v2 20%"); its type for a Kubernetes command."""

    @property
    def duration_s(self) -> float | None:
        """How long the step took; None while it runs."""
        return None if self.finished_at is None else (self.finished_at - self.started_at).total_seconds()

    def data(self) -> dict[str, Any]:
        """The CLI's machine form (`rollout history --steps -o json`): the API's keys (StepOut)."""
        return {
            "seq": self.seq,
            "action": self.action,
            "status": self.status,
            "outcome": self.outcome,
            "started_at": _rfc3339(self.started_at),
            "finished_at": _rfc3339(self.finished_at),
        }


class KubeView(_View):
    """A Kubernetes release: where it was applied and the Rollout's status as last read."""

    namespace: str | None
    objects: tuple[str, ...]
    phase: str | None
    step: int | None
    steps: int | None
    paused: bool | None
    aborted: bool | None
    message: str | None


class ReleaseView(_View):
    """One release as every edge shows it (CLI status and history, the API, the dashboard)."""

    id: int
    service: str
    environment: str
    target: str
    strategy: str
    stable: str | None
    candidate: str
    phase: str
    outcome: str | None
    reason: str | None
    actor: str
    weights: WeightsView
    started_at: dt.datetime
    finished_at: dt.datetime | None
    updated_at: dt.datetime
    step: int | None = None
    """local: where the release is in its plan (0-based), and how many steps the plan has."""
    plan_steps: int | None = None
    step_what: str | None = None
    """local: the plan's step the release is at, in words (e.g. "hold until promoted")."""
    paused_by: str | None = None
    detail: str = ""
    """local: why the release is where it is now (the strategy's reason)."""
    verdict: str | None = None
    """local: the latest analysis' verdict."""
    checks: tuple[CheckView, ...] = ()
    """local: the latest analysis' checks (error rate, p99, …) with the values they compared."""
    health: str | None = None
    """local: `healthy/total` from the newest health check the controller recorded."""
    commands: tuple[str, ...] = ()
    """The steering commands the release accepts now."""
    steps: tuple[StepView, ...] = ()
    """The actions recorded so far, oldest first (when asked for)."""
    kubernetes: KubeView | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def data(self) -> dict[str, Any]:
        """The CLI's machine form (`rollout status|history -o json`): the API's keys (RolloutOut)."""
        data: dict[str, Any] = {
            "id": self.id,
            "service": self.service,
            "environment": self.environment,
            "target": self.target,
            "strategy": self.strategy,
            "stable": self.stable,
            "candidate": self.candidate,
            "phase": self.phase,
            "weights": {k: v for k, v in self.weights.model_dump().items() if v is not None},
            "outcome": self.outcome,
            "reason": self.reason,
            "actor": self.actor,
            "started_at": _rfc3339(self.started_at),
            "finished_at": _rfc3339(self.finished_at),
        }
        if self.kubernetes is not None:
            data["kubernetes"] = self.kubernetes.model_dump(mode="json")
        return data


Source = Workspace | sessionmaker[Session]


def _sessions(source: Source) -> sessionmaker[Session]:
    return source.sessions if isinstance(source, Workspace) else source


def _rfc3339(moment: dt.datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _local_state(row: RolloutRow) -> RolloutState | None:
    """The strategy's state of a local release; None for another target's, or one recorded by
    another version of shipyard (shown without its state rather than not at all)."""
    if row.target != "local":
        return None
    try:
        return RolloutState.from_data(row.state)
    except (ShipyardError, KeyError, TypeError, ValueError):
        return None


def _health(session: Session, rollout_id: int) -> str | None:
    """`healthy/total` from the release's newest health check (what the controller last saw)."""
    steps = session.scalars(
        select(RolloutStepRow)
        .where(RolloutStepRow.rollout_id == rollout_id)
        .order_by(RolloutStepRow.seq.desc())
        .limit(50)
    )
    for step in steps:
        outcome = step.outcome or {}
        if outcome.get("type") == "HealthChecked":
            health = outcome.get("health") or {}
            text = f"{health.get('healthy', 0)}/{health.get('total', 0)} healthy"
            return text + (" (timed out)" if outcome.get("timed_out") else "")
    return None


def _what(action: dict[str, Any], plan: Plan | None) -> str:
    recorded = action_from_data(action)
    if recorded is None or plan is None:
        return str(action.get("type", "?"))
    return describe(recorded, plan)


def _step_views(
    session: Session, rollout_id: int, limit: int = 500, plan: Plan | None = None
) -> tuple[StepView, ...]:
    """The release's recorded steps, oldest first; `plan` (a local release's) puts them in words."""
    return tuple(
        StepView(
            seq=step.seq,
            action=dict(step.action or {}),
            status=step.status,
            outcome=dict(step.outcome) if step.outcome else None,
            started_at=as_utc(step.started_at),
            finished_at=as_utc(step.finished_at) if step.finished_at else None,
            what=_what(step.action or {}, plan),
        )
        for step in session.scalars(
            select(RolloutStepRow)
            .where(RolloutStepRow.rollout_id == rollout_id)
            .order_by(RolloutStepRow.seq)
            .limit(limit)
        )
    )


def _kube_commands(row: RolloutRow) -> tuple[str, ...]:
    if row.finished_at is None:
        return KUBE_STEERING
    return ("retry",) if row.outcome in ("aborted", "rolled_back") else ()


def _view(session: Session, row: RolloutRow, *, steps: bool) -> ReleaseView:
    state = _local_state(row)
    fields: dict[str, Any] = {}
    if state is not None:
        fields["weights"] = WeightsView(stable=state.weights.stable, candidate=state.weights.candidate)
        fields["step"] = state.step
        fields["plan_steps"] = len(plan_steps(state.plan))
        fields["step_what"] = describe_plan(state.plan)[state.step]
        fields["paused_by"] = str(state.paused_by) if state.paused_by else None
        fields["detail"] = state.reason
        fields["commands"] = tuple(allowed_commands(state))
        if state.analysis is not None:
            fields["verdict"] = state.analysis.verdict.value
            fields["checks"] = tuple(
                CheckView(
                    name=check.name,
                    verdict=str(check.verdict.value),
                    candidate=check.candidate,
                    stable=check.stable,
                    threshold=check.threshold,
                    detail=check.detail,
                )
                for check in state.analysis.checks
            )
        fields["health"] = _health(session, row.id)
    elif row.target == "kubernetes":
        # Argo's controller runs these: the state is the Rollout's last status, not a strategy's.
        kube = dict((row.state or {}).get("kubernetes") or {})
        last = dict(kube.get("status") or {})
        weights = dict(last.get("weights") or {})
        stable, candidate = weights.get("stable"), weights.get("candidate")
        fields["weights"] = WeightsView(
            stable=stable if isinstance(stable, int) else None,
            candidate=candidate if isinstance(candidate, int) else None,
        )
        fields["kubernetes"] = KubeView(
            namespace=kube.get("namespace"),
            objects=tuple(kube.get("objects") or ()),
            phase=last.get("phase"),
            step=last.get("step_index"),
            steps=last.get("step_count"),
            paused=last.get("paused"),
            aborted=last.get("aborted"),
            message=last.get("message"),
        )
        fields["commands"] = _kube_commands(row)
    if steps:
        fields["steps"] = _step_views(session, row.id, plan=state.plan if state is not None else None)
    return ReleaseView(
        id=row.id,
        service=row.service,
        environment=row.environment,
        target=row.target,
        strategy=row.strategy,
        stable=row.stable,
        candidate=row.candidate,
        phase=row.phase,
        outcome=row.outcome,
        reason=row.reason,
        actor=row.actor,
        weights=fields.pop("weights", WeightsView(stable=None, candidate=None)),
        started_at=as_utc(row.created_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
        updated_at=as_utc(row.updated_at),
        **fields,
    )


def release_view_of(source: Source, row: RolloutRow, *, steps: bool = True) -> ReleaseView:
    """The read model of one recorded release (`steps`: with its recorded steps)."""
    with _sessions(source)() as session:
        return _view(session, row, steps=steps)


def release_view(source: Source, service: str, *, steps: bool = True) -> ReleaseView:
    """The newest release of `service`; NotFoundError when it was never released."""
    row = latest_release(_sessions(source), service)
    if row is None:
        raise NotFoundError(f"{service!r} has never been released")
    return release_view_of(source, row, steps=steps)


def latest_releases(
    source: Source, *, service: str | None = None, target: str | None = None
) -> list[ReleaseView]:
    """The newest release of each service (or of `service`), of one target or any, by service."""
    with _sessions(source)() as session:
        query = select(RolloutRow).order_by(RolloutRow.id.desc())
        if service is not None:
            query = query.where(RolloutRow.service == service)
        if target is not None:
            query = query.where(RolloutRow.target == target)
        newest: dict[str, RolloutRow] = {}
        for row in session.scalars(query):
            newest.setdefault(row.service, row)
        return [_view(session, newest[name], steps=False) for name in sorted(newest)]


def release_history(source: Source, service: str, *, limit: int = HISTORY_LIMIT) -> list[ReleaseView]:
    """Every release of `service`, newest first (at most `limit`)."""
    with _sessions(source)() as session:
        rows = session.scalars(
            select(RolloutRow)
            .where(RolloutRow.service == service)
            .order_by(RolloutRow.id.desc())
            .limit(limit)
        )
        return [_view(session, row, steps=False) for row in rows]


def release_steps(source: Source, rollout_id: int) -> list[StepView]:
    """The steps recorded for release `rollout_id`, oldest first."""
    with _sessions(source)() as session:
        return list(_step_views(session, rollout_id, limit=100_000))


def refresh_releases(
    ws: Workspace, *, service: str | None = None, kube: KubeConnection | None = None
) -> list[ReleaseView]:
    """The newest Kubernetes release of each service, the unfinished ones read from the cluster
    first (their Rollout's status recorded, and their end once Argo has decided)."""
    driver = _driver(ws, "kubernetes", kube)
    driver.connect()  # the cluster was asked for: a kubeconfig that does not load is an error now
    views = []
    for view in latest_releases(ws, service=service, target="kubernetes"):
        if view.finished:
            views.append(view)
            continue
        row = _row(ws, view.id)
        views.append(release_view_of(ws, driver.current(row), steps=False))
    return views


def watch_release(
    ws: Workspace,
    service: str,
    *,
    on_progress: OnProgress,
    interval_s: float,
    target: Target | None = None,
    kube: KubeConnection | None = None,
) -> ReleaseView:
    """Follow the newest release of `service` until it ends, reporting its progress; the ended release.

    local: through the store (ReleaseUnattended when no controller runs it); kubernetes: the
    Rollout's status read every `interval_s`.
    """
    row = _latest(ws, service, target)
    ended = _driver(ws, row.target, kube).follow(row.id, on_progress, interval_s)
    return release_view_of(ws, ended, steps=False)


# --- the verbs -----------------------------------------------------------------------------------


def refuse_concurrent_release(source: Source, service: str) -> None:
    """ReleaseInProgress (409) when a release of `service` runs now: a controller holds its lease, or
    a release job has just been started and has not taken the lease yet.

    The API and the dashboard ask this before starting a deploy job, so that a second deploy is
    refused at once, naming the running release, instead of being accepted and failing on the lease.
    """
    sessions = _sessions(source)
    held = holder(sessions, lock_name(service))
    if held is not None:
        raise release_in_progress(sessions, service, f"held by {held[0]}")
    since = utcnow().timestamp() - JOB_STARTING_S
    with sessions() as session:
        running = session.scalars(
            select(JobRow)
            .where(JobRow.state == "running", JobRow.kind.in_(RELEASE_JOB_KINDS))
            .order_by(JobRow.id.desc())
        )
        job = next(
            (
                (row.id, row.kind)
                for row in running
                if (row.request or {}).get("service") == service
                and as_utc(row.started_at).timestamp() >= since
            ),
            None,
        )
    if job is not None:
        raise ReleaseInProgress(
            f"a {job[1]} of {service!r} has just been started as job {job[0]} and is about to run:"
            f" let it finish (GET /jobs/{job[0]}), or steer it once it runs",
            job_id=job[0],
        )


def deploy(
    ws: Workspace,
    request: Deploy,
    *,
    kube: KubeConnection | None = None,
    on_started: Callable[[int], None] | None = None,
    on_progress: OnProgress | None = None,
) -> ReleaseOutcome:
    """Release a version: local, run to its end here (rolled back by itself if it is bad);
    kubernetes, applied for Argo Rollouts to run. `on_started` gets the release's id once recorded."""
    if request.target == "kubernetes":
        _refuse_under_gitops(ws, request.service)
    driver = _driver(ws, request.target, kube, on_progress)
    if request.dry_run:
        planned = driver.plan_release(request.service, request.version, request.strategy)
        return ReleaseOutcome(
            rollout_id=None,
            service=request.service,
            version=request.version,
            target=request.target,
            plan=ReleasePlan.of(planned),
        )
    rollout_id = driver.start(request.service, request.version, ws.actor, request.strategy)
    if on_started is not None:
        on_started(rollout_id)
    return _run(driver, rollout_id)


def _refuse_under_gitops(ws: Workspace, service: str) -> None:
    """Argo CD owns an environment with `gitops:`: a release applied here would change the Rollout's
    pod template behind Git's back, and self-heal would put it back. A release is a commit there."""
    gitops = ws.stack.gitops
    if gitops is None:
        return
    raise UserError(
        f"environment {ws.environment!r} is synced by Argo CD from {gitops.repo} (path {gitops.path}):"
        f" `deploy --target kubernetes` would fight it over {service!r}'s Rollout. Release through Git:"
        f" set services.{service}.image to the new version in {ws.spec_path}, run `shipyard render"
        f" argocd -o <checkout>/{gitops.path}`, commit and push; Argo CD syncs it and Argo Rollouts"
        f" runs the release (`shipyard rollout promote|abort|pause|resume {service} --target"
        " kubernetes` still steer it)"
    )


def steer(
    ws: Workspace,
    request: Steer,
    *,
    kube: KubeConnection | None = None,
    wait_s: float = 0.0,
) -> SteerOutcome:
    """Send a command to the service's newest release, through the driver of its target.

    local: queued for the controller that runs it (`wait_s`: wait that long for its answer); with
    none running, `needs_controller` says the caller must start one (`resume`). kubernetes: the
    Rollout is patched at once, as `kubectl argo rollouts` does.
    """
    row = _latest(ws, request.service, request.target)
    driver = _driver(ws, row.target, kube)
    command = request.driver_command
    if request.dry_run:
        planned = driver.plan_steer(row, command)
        return SteerOutcome(
            rollout_id=row.id,
            service=row.service,
            command=command,
            target=driver.target,
            controller_running=holder(ws.sessions, lock_name(row.service)) is not None
            or driver.target == "kubernetes",
            needs_controller=False,
            plan=ReleasePlan.of(planned),
        )
    steered = driver.steer(row, command, ws.actor, wait_s=wait_s)
    return _steer_outcome(row, steered)


def rollback(
    ws: Workspace,
    request: Rollback,
    *,
    kube: KubeConnection | None = None,
    on_started: Callable[[int], None] | None = None,
    on_progress: OnProgress | None = None,
    wait_s: float = COMMAND_WAIT_S,
) -> ReleaseOutcome:
    """Send the service's release back to its previous version (local releases, while the previous
    version is still warm). With a controller running it, that controller applies it (waited for up
    to `wait_s`); with none, it is carried on here, starting with the rollback, to its end."""
    row = _latest(ws, request.service, request.target)
    driver = _driver(ws, row.target, kube, on_progress)
    if request.dry_run:
        return _planned(row, driver.plan_steer(row, "rollback"))
    steered = driver.steer(row, "rollback", ws.actor, wait_s=wait_s)
    return _carry_on(ws, driver, row, steered, on_started)


def resume(
    ws: Workspace,
    request: Resume,
    *,
    kube: KubeConnection | None = None,
    on_started: Callable[[int], None] | None = None,
    on_progress: OnProgress | None = None,
    unpause: bool = True,
) -> ReleaseOutcome:
    """Carry on the service's unfinished release: local, take it over and run it to its end here
    (unpausing it first when a command paused it, unless `unpause` is False: a caller that has just
    queued a command of its own lets that decide); kubernetes, tell Argo Rollouts to resume it."""
    row = _latest(ws, request.service, request.target)
    driver = _driver(ws, row.target, kube, on_progress)
    if row.target == "kubernetes":
        if request.dry_run:
            return _planned(row, driver.plan_steer(row, "resume"))
        steered = driver.steer(row, "resume", ws.actor)
        return _outcome(_row(ws, row.id), reason=steered.applied)
    if row.finished_at is not None:
        raise UserError(f"{row.service!r} has no unfinished release to resume")
    state = _local_state(row)
    unpause = unpause and row.phase == "paused" and state is not None and state.paused_by != "inconclusive"
    if request.dry_run:
        return _planned(row, _plan_resume(ws, row, state, unpause))
    if unpause:
        driver.steer(row, "resume", ws.actor)
    rollout_id = driver.take_over(row.service)
    if on_started is not None:
        on_started(rollout_id)
    return _run(driver, rollout_id)


def down(ws: Workspace, request: Down) -> DownOutcome:
    """Stop every app process of the local stack and its HAProxy; the releases stay recorded.

    Refused while a controller still runs a release of the stack (abort it or let it finish), unless
    `force`: for a controller that was killed and whose lease has not run out yet.
    """
    stack = ws.stack
    busy = [name for name in stack.services if holder(ws.sessions, lock_name(name)) is not None]
    if busy and not request.force:
        raise UserError(
            f"a release of {', '.join(busy)} is running: `shipyard rollout abort {busy[0]}` or let it"
            " finish before `shipyard down`"
        )
    state_dir = ws.local_state()
    if not state_dir.is_dir():
        return DownOutcome(
            stack=stack.name,
            environment=stack.environment,
            processes=(),
            ran_here=False,
            dry_run=request.dry_run,
        )
    from ..rollout.targets.local import LocalTarget  # noqa: PLC0415 - only the local target needs it

    target = LocalTarget(stack, state_dir, workdir=ws.workdir)
    running = tuple(instance.name for instance in target.supervisor.list() if instance.alive)
    outcome = DownOutcome(
        stack=stack.name,
        environment=stack.environment,
        processes=running,
        ran_here=True,
        dry_run=request.dry_run,
    )
    if request.dry_run:
        return outcome
    after = {"environment": stack.environment, "processes": list(running)}
    record_audit(
        ws.sessions, actor=ws.actor, action="down", target_kind="stack", target=stack.name,
        after=after, outcome="started",
    )  # fmt: skip
    target.destroy()
    record_audit(
        ws.sessions, actor=ws.actor, action="down", target_kind="stack", target=stack.name, after=after
    )  # fmt: skip
    return outcome


# --- helpers -------------------------------------------------------------------------------------


def _driver(
    ws: Workspace, target: str, kube: KubeConnection | None, on_progress: OnProgress | None = None
) -> ReleaseDriver:
    return release_driver(
        target,
        ws.sessions,
        stack=lambda: ws.stack,
        local_state=ws.local_state,
        workdir=ws.workdir,
        kube=kube,
        notifier=lambda: ws.notifier,
        on_progress=on_progress,
    )


def _latest(ws: Workspace, service: str, target: str | None = None) -> RolloutRow:
    """The newest release of `service` in the workspace's environment; refused when it runs on
    another target than expected."""
    environment = None if ws.any_environment else ws.environment
    row = latest_release(ws.sessions, service, environment)
    if row is None:  # the API's 404, as for a read of the service's release
        where = "" if environment is None else f" in {environment} (name another with -e)"
        raise NotFoundError(f"{service!r} has never been released{where}")
    if target is not None and row.target != target:
        raise UserError(f"release {row.id} of {service!r} runs on {row.target}: add `--target {row.target}`")
    return row


def _row(ws: Workspace, rollout_id: int) -> RolloutRow:
    with ws.sessions() as session:
        row = session.get(RolloutRow, rollout_id)
    if row is None:
        raise NotFoundError(f"no release {rollout_id}")
    return row


def _run(driver: ReleaseDriver, rollout_id: int) -> ReleaseOutcome:
    """Run the release as far as the driver runs it; Ctrl-C (or SIGTERM made one) is ReleaseStopped."""
    try:
        row = driver.run(rollout_id)
    except KeyboardInterrupt:
        with driver.sessions() as session:
            stopped = session.get(RolloutRow, rollout_id)
        phase = stopped.phase if stopped else "?"
        service = stopped.service if stopped else ""
        raise ReleaseStopped(
            f"stopped; release {rollout_id} is kept in phase {phase}: `shipyard rollout resume {service}`"
            f" carries it on, `shipyard rollout abort` takes it back"
        ) from None
    return _outcome(row)


def _outcome(row: RolloutRow, *, reason: str | None = None) -> ReleaseOutcome:
    return ReleaseOutcome(
        rollout_id=row.id,
        service=row.service,
        version=row.candidate,
        target="kubernetes" if row.target == "kubernetes" else "local",
        phase=row.phase,
        outcome=row.outcome,
        reason=reason or row.reason,
    )


def _planned(row: RolloutRow, planned: PlannedRelease) -> ReleaseOutcome:
    return _outcome(row).model_copy(update={"plan": ReleasePlan.of(planned)})


def _steer_outcome(row: RolloutRow, steered: Steered) -> SteerOutcome:
    status = steered.progress
    return SteerOutcome(
        rollout_id=steered.rollout_id,
        service=row.service,
        command=steered.command,
        target=steered.target,
        controller_running=steered.controller_running,
        needs_controller=steered.needs_controller,
        applied=steered.applied,
        pause_reasons=tuple(getattr(status, "pause_reasons", ()) or ()),
    )


def _carry_on(
    ws: Workspace,
    driver: ReleaseDriver,
    row: RolloutRow,
    steered: Steered,
    on_started: Callable[[int], None] | None,
) -> ReleaseOutcome:
    """After a command: where the release is when a controller applied it; else carry it on here."""
    command = steered.command
    if steered.controller_running:
        if steered.applied is not None and steered.applied.startswith("refused"):
            raise UserError(f"{command} {steered.applied}")
        said = (
            "applied by the controller running the release"
            if steered.applied
            else ("queued; the controller running the release has not picked it up yet")
        )
        return _outcome(_row(ws, row.id), reason=f"{command} {said}")
    if not steered.needs_controller:
        raise UserError(
            f"release {row.id} of {row.service!r} is over ({row.outcome}): nothing applies {command}"
        )
    rollout_id = driver.take_over(row.service)
    if on_started is not None:
        on_started(rollout_id)
    return _run(driver, rollout_id)


def _plan_resume(ws: Workspace, row: RolloutRow, state: RolloutState | None, unpause: bool) -> PlannedRelease:
    """What `resume` of a local release would do: the same refusals, nothing taken or queued."""
    held = holder(ws.sessions, lock_name(row.service))
    if held is not None:
        raise RolloutError(
            f"release {row.id} of {row.service!r} is being run by another controller: held by {held[0]}"
        )
    actions = []
    if unpause:
        actions.append(f"queue resume for release {row.id} (paused by a command)")
    actions.append(
        f"take over release {row.id} ({where(state) if state else row.phase}),"
        f" holding {lock_name(row.service)}"
    )
    if state is not None:
        actions.append(
            f"carry it on to its end; next: {describe(next_action(state, time.time()), state.plan)}"
        )
    return PlannedRelease.of_release("resume", "local", row, actions)
