"""The releases REST API: what runs where, and the verbs the CLI has.

    GET  /rollouts                          the newest release of each service
    GET  /rollouts/{service}                its newest release: weights, phase, plan step, recorded steps
    GET  /rollouts/{service}/history        every release of the service, newest first
    POST /rollouts/{service}/deploy         a `Deploy` job                                  → 202 + job
                                            (409 while another release of the service runs)
    POST /rollouts/{service}/rollback       a `Rollback` job                                → 202 + job
    POST /rollouts/{service}/promote        the next step, to whoever runs the release ({"full": true}:
                                            every remaining step skipped, as `kubectl argo rollouts
                                            promote --full`)
    POST /rollouts/{service}/{command}      abort|pause|resume|retry, to whoever runs the release

Everything needs an admin token (who released what is operations data). A deploy or a rollback
runs as a job because a release outlives a request. A command goes through `ops.steer`, which
dispatches on the release's recorded target: a local release's controller gets it through the
store (and with no controller running, a `Resume` job is started to apply it); a Kubernetes
release's Rollout is patched at once, on the cluster `kube` names.

No `from __future__ import annotations` here: FastAPI must see the dependency aliases built
inside `build_router` as real objects, not strings.
"""

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.orm import Session, sessionmaker
from starlette.convertors import Convertor, register_url_convertor

from ...jobs import JobRunner
from ...ops import (
    CheckView,
    Deploy,
    KubeConnection,
    ReleaseView,
    Resume,
    Rollback,
    Steer,
    StepView,
    Workspace,
    latest_releases,
    refuse_concurrent_release,
    release_history,
    release_view,
    steer,
)
from .jobs import JobOut

ServiceName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", max_length=63)]
Command = Literal["abort", "pause", "resume", "retry"]
"""The commands but promote, which has a route of its own (its body may say `full`)."""


class _CommandConvertor(Convertor[str]):
    """`/rollouts/{service}/{command}` matches the commands alone: `POST …/history` is then the 405
    of the GET route there (with its Allow header), not a 422 for a command named history."""

    regex = "|".join(get_args(Command))

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rollout_command", _CommandConvertor())


class WeightsOut(BaseModel):
    stable: int | None
    candidate: int | None


class CheckOut(BaseModel):
    name: str
    verdict: str
    candidate: float | None
    stable: float | None
    threshold: float
    detail: str

    @classmethod
    def of(cls, check: CheckView) -> "CheckOut":
        return cls(**check.model_dump())


class StepOut(BaseModel):
    seq: int
    action: str
    status: str
    outcome: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, step: StepView) -> "StepOut":
        return cls(
            seq=step.seq,
            action=str(step.action.get("type", "?")),
            status=step.status,
            outcome=str(step.outcome.get("type")) if step.outcome else None,
            started_at=step.started_at,
            finished_at=step.finished_at,
        )


class RolloutOut(BaseModel):
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
    weights: WeightsOut
    started_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, view: ReleaseView) -> "RolloutOut":
        return cls(**_fields(view))


class RolloutDetailOut(RolloutOut):
    step: int | None = None
    """Where the release is in its plan (0-based), and how many steps the plan has."""
    plan_steps: int | None = None
    paused_by: str | None = None
    checks: list[CheckOut] = []
    """The latest analysis' checks (error rate, p99, …) with the values they compared."""
    steps: list[StepOut] = []
    """The actions recorded so far, oldest first."""
    commands: list[str] = []
    """The steering commands the release accepts now (promote-full: `POST …/promote` with
    `{"full": true}`)."""

    @classmethod
    def of(cls, view: ReleaseView) -> "RolloutDetailOut":
        return cls(
            **_fields(view),
            step=view.step,
            plan_steps=view.plan_steps,
            paused_by=view.paused_by,
            checks=[CheckOut.of(check) for check in view.checks],
            steps=[StepOut.of(step) for step in view.steps],
            commands=list(view.commands),
        )


def _fields(view: ReleaseView) -> dict[str, object]:
    return {
        "id": view.id,
        "service": view.service,
        "environment": view.environment,
        "target": view.target,
        "strategy": view.strategy,
        "stable": view.stable,
        "candidate": view.candidate,
        "phase": view.phase,
        "outcome": view.outcome,
        "reason": view.reason,
        "actor": view.actor,
        "weights": WeightsOut(stable=view.weights.stable, candidate=view.weights.candidate),
        "started_at": view.started_at,
        "finished_at": view.finished_at,
    }


class DeployIn(BaseModel):
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$", max_length=128)
    strategy: Literal["blue-green", "canary"] | None = None


class CommandIn(BaseModel):
    """The body of a steering command (optional: `{}` or none at all is a plain command)."""

    full: bool = Field(
        default=False,
        strict=True,  # `{"full": 0}` is not a boolean (the document says so)
        description=(
            "promote only. false: end the step the release waits at (an analysis, a pause, the"
            " auto_promote gate, the warm hold, an inconclusive pause) and go on to the next step."
            " true: skip every remaining weight, analysis and pause; the new version takes all"
            " traffic at once (as `kubectl argo rollouts promote --full`; only the warm hold, while"
            " the old version is kept for an instant rollback, and its retirement are left)."
        ),
    )


class PlainCommandIn(BaseModel):
    """The body of a command other than promote (optional): `full` may only be false."""

    full: bool = Field(
        default=False,
        strict=True,
        json_schema_extra={"const": False},
        description="promote only: false or absent",
    )

    @field_validator("full")
    @classmethod
    def _promote_only(cls, full: bool) -> bool:
        if full:
            raise ValueError("only promote has a full form: drop it")
        return full


class CommandOut(BaseModel):
    rollout_id: int
    command: str
    """The command the release's runner got: promote-full for a promote with `full`."""
    controller_running: bool
    """Whether a controller ran the release when the command came (a local one applies it within a
    second; on kubernetes, Argo Rollouts' controller, whose Rollout was patched at once)."""
    job_id: int | None = None
    """With no controller: the job (`Resume`) started to carry the release on and apply the command.
    None when the release is over and the command needs none (all but retry), or on kubernetes."""
    target: str = "local"
    """Where the release runs: local (shipyard's controller) or kubernetes (Argo Rollouts)."""
    applied: str | None = None
    """kubernetes: the Rollout's status after the command, in one line."""


def served_workspace(jobs: JobRunner, sessions: sessionmaker[Session], actor: str) -> Workspace:
    """The served stack's workspace, acting as `actor`, over the server's own sessions.

    Built per request (the actor is the request's token); the spec is read only by a verb that
    needs it, so steering a recorded release works on a server started without one.
    """
    return Workspace(spec_path=jobs.spec, environment=jobs.environment, actor=actor, opened_sessions=sessions)


def steer_or_carry_on(
    ws: Workspace, jobs: JobRunner, request: Steer, *, kube: KubeConnection | None = None
) -> CommandOut:
    """Steer the service's release (`ops.steer`). A local release that no controller runs (one was
    stopped or killed) and that still needs one gets a `Resume` job, which applies the command
    first: an operator's abort must not wait for someone at a terminal."""
    outcome = steer(ws, request, kube=kube)
    job_id = jobs.start(Resume(service=request.service), ws.actor) if outcome.needs_controller else None
    return CommandOut(
        rollout_id=outcome.rollout_id,
        command=outcome.command,
        controller_running=outcome.controller_running,
        job_id=job_id,
        target=outcome.target,
        applied=outcome.applied,
    )


def build_router(
    sessions: sessionmaker[Session],
    jobs: JobRunner,
    *,
    admin: Callable[..., Awaitable[str]],
    workspace: Callable[[str], Workspace] | None = None,
    kube: KubeConnection | None = None,
) -> APIRouter:
    """The `/rollouts` router.

    `workspace(actor)`: the served stack's workspace for one request (default: `served_workspace`
    over `jobs`' spec and environment and these sessions). `kube`: the cluster Kubernetes releases
    are steered on (default: the server's `$KUBECONFIG`, `~/.kube/config` or service account).
    """
    router = APIRouter(prefix="/rollouts", tags=["rollouts"])
    Admin = Annotated[str, Depends(admin)]

    def workspace_of(actor: str) -> Workspace:
        return workspace(actor) if workspace is not None else served_workspace(jobs, sessions, actor)

    @router.get("", response_model=list[RolloutOut])
    def list_rollouts(_: Admin) -> list[RolloutOut]:
        """The newest release of every service that has been released."""
        return [RolloutOut.of(view) for view in latest_releases(sessions)]

    @router.get("/{service}", response_model=RolloutDetailOut)
    def get_rollout(service: ServiceName, _: Admin) -> RolloutDetailOut:
        """The service's newest release: versions, weights, phase, plan step, analysis, steps."""
        return RolloutDetailOut.of(release_view(sessions, service))

    @router.get("/{service}/history", response_model=list[RolloutOut])
    def history(service: ServiceName, _: Admin) -> list[RolloutOut]:
        """Past releases of the service, newest first, and how each ended."""
        return [RolloutOut.of(view) for view in release_history(sessions, service)]

    @router.post(
        "/{service}/deploy",
        status_code=202,
        response_model=JobOut,
        responses={409: {"description": "Another release of the service runs; `rollout_id` names it"}},
    )
    def deploy(service: ServiceName, body: DeployIn, actor: Admin) -> JobOut:
        """Release a version with the spec's strategy (or the one given), as a job; refused (409, naming
        the running release's id) while another release of the service runs."""
        refuse_concurrent_release(sessions, service)
        job_id = jobs.start(Deploy(service=service, version=body.version, strategy=body.strategy), actor)
        return JobOut.of(jobs.get(job_id))

    @router.post("/{service}/rollback", status_code=202, response_model=JobOut)
    def rollback(service: ServiceName, actor: Admin) -> JobOut:
        """Switch back to the previous version while it is still warm, as a job."""
        job_id = jobs.start(Rollback(service=service), actor)
        return JobOut.of(jobs.get(job_id))

    @router.post("/{service}/promote", status_code=202, response_model=CommandOut)
    def promote(service: ServiceName, actor: Admin, body: CommandIn | None = None) -> CommandOut:
        """Promote the service's release: the next step, or with `{"full": true}` every remaining step
        skipped, the new version taking all traffic at once. Queued for its local controller (with
        none running, one is started as a job), or sent to the cluster for Argo Rollouts."""
        full = body is not None and body.full
        steering = Steer(service=service, command="promote", full=full)
        return steer_or_carry_on(workspace_of(actor), jobs, steering, kube=kube)

    @router.post("/{service}/{command:rollout_command}", status_code=202, response_model=CommandOut)
    def command(
        service: ServiceName, command: Command, actor: Admin, body: PlainCommandIn | None = None
    ) -> CommandOut:
        """Abort, pause, resume or retry the service's release: queued for its local controller (with
        none running, one is started as a job), or sent to the cluster for Argo Rollouts.

        `full` belongs to promote: `{"full": true}` here is refused (422 naming `body.full`)."""
        steering = Steer(service=service, command=command, full=False)
        return steer_or_carry_on(workspace_of(actor), jobs, steering, kube=kube)

    return router
