"""Whole-environment verbs on the kubernetes target: apply everything, and read back its status.

    apply_stack(ws, ApplyStack())              → StackApplied "applied 31 objects to production (…)"
    apply_stack(ws, ApplyStack(dry_run=True))  → StackApplied "dry run: … accepted 31 objects …"
    stack_status(ws)                           → StackStatusView

The objects are `render.build_manifests(stack, argo=…)` of the workspace's environment, applied by
server-side apply in `KIND_ORDER` with the datastores waited on before the workloads
(`rollout.targets.kubernetes_apply`). `argo` (the default) applies each service as an Argo
Rollouts `Rollout`, the same objects `deploy --target kubernetes` applies, so that a release
afterwards does not leave a Deployment of the same service running beside its Rollout.

The cluster is the `kube` argument's (`KubeConnection`; None: `$KUBECONFIG`, `~/.kube/config` or
the pod's service account). A real apply is recorded in the audit trail (started, then ok or
failed); a dry run changes nothing anywhere, the state store included.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ShipyardError
from ..rollout import KubeConnection
from ..state import record_audit
from ._base import Request, Result
from ._workspace import Workspace

# The Kubernetes client and the renderers cost every command ~1 s to import: loaded when used.
if TYPE_CHECKING:
    from ..rollout.targets.kubernetes_apply import ApplyEvent, StackState

__all__ = [
    "AppliedView",
    "ApplyStack",
    "AutoscalerView",
    "CronJobView",
    "IngressView",
    "ReadinessView",
    "StackApplied",
    "StackStatusView",
    "WorkloadView",
    "apply_stack",
    "stack_status",
]

DEFAULT_WAIT_S = 600.0
"""How long an apply waits for the datastores to be ready before it gives up on the workloads."""


class ApplyStack(Request):
    """Server-side apply every object of the environment, datastores ready before workloads."""

    kind: Literal["apply"] = "apply"
    dry_run: bool = False
    """Send every request with `dryRun=All`: the API server checks each object, stores nothing."""
    argo: bool = True
    """Services as Argo Rollouts `Rollout`s (as `deploy --target kubernetes`); else Deployments."""
    wait_s: float = Field(default=DEFAULT_WAIT_S, gt=0)
    poll_s: float = Field(default=2.0, gt=0)


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class AppliedView(_View):
    kind: str
    name: str
    namespace: str | None
    path: str


class ReadinessView(_View):
    kind: str
    name: str
    ready: int
    desired: int


class StackApplied(Result):
    environment: str
    namespace: str
    api_server: str
    dry_run: bool
    applied: tuple[AppliedView, ...]
    waited: tuple[ReadinessView, ...] = ()
    would_wait: tuple[str, ...] = ()
    """A dry run: the datastores a real apply would wait on (`Kind namespace/name`)."""
    skipped: tuple[str, ...] = ()
    """Services with no Kubernetes form (no image), and why."""

    def summary(self) -> str:
        count = f"{len(self.applied)} object{'s' if len(self.applied) != 1 else ''}"
        if self.dry_run:
            return (
                f"dry run: the Kubernetes API at {self.api_server} accepted {count} for"
                f" {self.environment} (namespace {self.namespace}); nothing changed"
            )
        waited = f", after waiting for {len(self.waited)} datastore(s)" if self.waited else ""
        return (
            f"applied {count} to {self.environment} (namespace {self.namespace}) at {self.api_server}{waited}"
        )


class WorkloadView(_View):
    kind: str
    name: str
    found: bool
    ready: int
    desired: int
    updated: int | None
    phase: str
    message: str


class AutoscalerView(_View):
    name: str
    found: bool
    current: int | None
    desired: int | None
    minimum: int | None
    maximum: int | None


class IngressView(_View):
    name: str
    found: bool
    hosts: tuple[str, ...]
    addresses: tuple[str, ...]


class CronJobView(_View):
    name: str
    found: bool
    schedule: str
    suspended: bool
    active: int
    last_schedule_at: dt.datetime | None
    last_successful_at: dt.datetime | None


class StackStatusView(Result):
    environment: str
    namespace: str
    api_server: str
    healthy: bool
    """Every workload exists with all its pods ready."""
    workloads: tuple[WorkloadView, ...]
    autoscalers: tuple[AutoscalerView, ...]
    ingresses: tuple[IngressView, ...]
    cron_jobs: tuple[CronJobView, ...]

    @classmethod
    def of(cls, environment: str, state: StackState) -> StackStatusView:
        return cls(
            environment=environment,
            namespace=state.namespace,
            api_server=state.api_server,
            healthy=state.healthy,
            workloads=tuple(WorkloadView(**dataclasses.asdict(w)) for w in state.workloads),
            autoscalers=tuple(AutoscalerView(**dataclasses.asdict(a)) for a in state.autoscalers),
            ingresses=tuple(IngressView(**dataclasses.asdict(i)) for i in state.ingresses),
            cron_jobs=tuple(CronJobView(**dataclasses.asdict(c)) for c in state.cron_jobs),
        )

    def summary(self) -> str:
        ready = sum(1 for w in self.workloads if w.found and w.phase == "Healthy")
        missing = sum(1 for w in self.workloads if not w.found)
        tail = f", {missing} missing" if missing else ""
        return (
            f"{self.environment} (namespace {self.namespace}) at {self.api_server}: {ready} of"
            f" {len(self.workloads)} workloads healthy{tail}"
        )


def apply_stack(
    ws: Workspace,
    request: ApplyStack | None = None,
    *,
    kube: KubeConnection | None = None,
    on_progress: Callable[[ApplyEvent], None] | None = None,
) -> StackApplied:
    """Apply the workspace's environment to the cluster (or, with `dry_run`, have it checked)."""
    request = request or ApplyStack()
    stack = ws.stack
    from ..render import build_manifests  # noqa: PLC0415 (see TYPE_CHECKING)

    manifests = build_manifests(stack, argo=request.argo)
    client = (kube or KubeConnection()).api_client()
    from ..rollout.targets.kubernetes_apply import StackApplier  # noqa: PLC0415 (see TYPE_CHECKING)

    applier = StackApplier(client, wait_s=request.wait_s, poll_s=request.poll_s)
    audit = {"environment": stack.environment, "namespace": manifests.namespace, "argo": request.argo}
    if not request.dry_run:
        record_audit(
            ws.sessions, actor=ws.actor, action="apply", target_kind="environment",
            target=f"{stack.name}/{stack.environment}", after=audit, outcome="started",
        )  # fmt: skip
    try:
        result = applier.apply(
            manifests.objects, services=stack.services, dry_run=request.dry_run, on_progress=on_progress
        )
    except ShipyardError as error:
        if not request.dry_run:
            record_audit(
                ws.sessions, actor=ws.actor, action="apply", target_kind="environment",
                target=f"{stack.name}/{stack.environment}", after={**audit, "error": error.message},
                outcome="failed",
            )  # fmt: skip
        raise
    if not request.dry_run:
        record_audit(
            ws.sessions, actor=ws.actor, action="apply", target_kind="environment",
            target=f"{stack.name}/{stack.environment}", after={**audit, "objects": len(result.applied)},
        )  # fmt: skip
    return StackApplied(
        environment=stack.environment,
        namespace=manifests.namespace,
        api_server=result.api_server,
        dry_run=result.dry_run,
        applied=tuple(AppliedView(**dataclasses.asdict(a)) for a in result.applied),
        waited=tuple(
            ReadinessView(kind=r.kind, name=r.name, ready=r.ready, desired=r.desired) for r in result.waited
        ),
        would_wait=result.would_wait,
        skipped=tuple(f"{s.name}: {s.reason}" for s in manifests.skipped),
    )


def stack_status(ws: Workspace, *, argo: bool = True, kube: KubeConnection | None = None) -> StackStatusView:
    """Read back the environment's workloads, autoscalers, Ingresses and CronJobs from the cluster."""
    stack = ws.stack
    from ..render import build_manifests  # noqa: PLC0415 (see TYPE_CHECKING)

    manifests = build_manifests(stack, argo=argo)
    client = (kube or KubeConnection()).api_client()
    from ..rollout.targets.kubernetes_apply import read_status  # noqa: PLC0415 (see TYPE_CHECKING)

    state = read_status(client, manifests.objects, namespace=manifests.namespace)
    return StackStatusView.of(stack.environment, state)
