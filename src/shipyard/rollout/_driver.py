"""One interface for every place a release runs: the local controller and Argo Rollouts.

Like Argo Rollouts' traffic-routing interface, which lets one controller drive Istio, NGINX or
the ALB alike, `ReleaseDriver` lets one application layer start, carry on, steer, plan and follow
a release without knowing who runs its strategy:

- `LocalReleases` (`rollout._local_releases`): shipyard's own controller runs the strategy against
  HAProxy and supervised processes on this host (`Controller` + `LocalTarget`).
- `ArgoReleases` (`rollout._argo_releases`): Argo Rollouts' controller runs it on a cluster;
  shipyard applies the release, sends the steering patches and records what Argo reports.

A release is started on the target the caller asks for; it is steered, planned and followed by the
driver of the target it was recorded with (`RolloutRow.target`), so a command from any edge (CLI,
API, dashboard) reaches whoever runs it.

    driver = release_driver(row.target, sessions, stack=lambda: stack, ...)
    driver.steer(row, "promote", actor="token:ops")
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from ..spec import Stack
from ..state import RolloutRow
from ._model import Command, StrategyName
from ._strategy import Plan, RolloutState, Step, plan_steps

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from ..monitor import Notifier

TargetName = Literal["local", "kubernetes"]
TARGETS: tuple[TargetName, ...] = ("local", "kubernetes")

OnProgress = Callable[[Any], None]
"""Called with each `RolloutState` (local) or `RolloutStatus` (kubernetes) as the release goes on."""


@dataclass(frozen=True)
class KubeConnection:
    """Which cluster to talk to: a kubeconfig file and one of its contexts.

    None for both: `$KUBECONFIG`, else `~/.kube/config`, else (inside a pod) the pod's service
    account, as `kubectl` does. Nothing is read until a client is asked for.
    """

    kubeconfig: str | None = None
    context: str | None = None

    def api_client(self) -> ApiClient:
        from .targets.kubernetes import load_api_client  # noqa: PLC0415 - the client is slow to import

        return load_api_client(self.kubeconfig, self.context)


@dataclass(frozen=True)
class PlannedRelease:
    """What a verb would do, as its dry run says it: nothing in it has happened."""

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
    """What would happen, in order, in words (steps and weights, the command, the patches)."""
    requests: tuple[dict[str, Any], ...] = ()
    """kubernetes: the API requests it would send (method, path, body)."""
    refused: str | None = None
    """Why the verb would be refused when it ran now (the controller's or the strategy's answer)."""

    @classmethod
    def of_release(
        cls,
        verb: str,
        target: TargetName,
        row: RolloutRow,
        actions: list[str],
        *,
        requests: tuple[dict[str, Any], ...] = (),
        refused: str | None = None,
    ) -> PlannedRelease:
        """The plan of a verb on the recorded release `row` (its service, versions and strategy)."""
        return cls(
            verb=verb,
            target=target,
            service=row.service,
            environment=row.environment,
            rollout_id=row.id,
            stable=row.stable,
            candidate=row.candidate,
            strategy=row.strategy,
            actions=tuple(actions),
            requests=requests,
            refused=refused,
        )


@dataclass(frozen=True)
class Steered:
    """What a steering command did."""

    rollout_id: int
    command: Command
    target: TargetName
    controller_running: bool
    """Whether a controller runs the release (Argo's always does), so the command takes effect."""
    needs_controller: bool
    """local: no controller runs the release and it still needs one to apply the command (it is
    unfinished, or the command is retry): the caller starts one (`resume`)."""
    applied: str | None = None
    """How it was applied: the local controller's answer ("ok", "refused: …") when waited for;
    on kubernetes, the Rollout's status afterwards in one line."""
    progress: Any = field(default=None, compare=False)
    """The Rollout's status after the command (kubernetes), for a caller that shows it."""


class ReleaseDriver(abc.ABC):
    """Releases of one stack's services on one target, recorded in the state store.

    Every method that changes the world records what it does first (the release, its steps, the
    command, an audit entry). `plan_*` change nothing, anywhere.
    """

    target: ClassVar[TargetName]
    sessions: sessionmaker[Session]

    def connect(self) -> None:  # noqa: B027 - most targets need no connection: doing nothing is right
        """Make sure the target can be talked to (kubernetes: the kubeconfig loads); TargetError if not."""

    @abc.abstractmethod
    def plan_release(self, service: str, version: str, strategy: StrategyName | None) -> PlannedRelease:
        """What `start` (then `run`) would do; refuses what `start` would refuse, with its error."""

    @abc.abstractmethod
    def start(self, service: str, version: str, actor: str, strategy: StrategyName | None) -> int:
        """Check the request, record a new release (kubernetes: and apply it); its id."""

    @abc.abstractmethod
    def run(self, rollout_id: int) -> RolloutRow:
        """Carry the release on as far as this driver runs it: local, to its end (or until this
        process is stopped); kubernetes, nothing (Argo's controller runs it). The release after."""

    @abc.abstractmethod
    def take_over(self, service: str) -> int:
        """Become the one that runs the service's unfinished release (after its runner stopped)."""

    @abc.abstractmethod
    def steer(self, row: RolloutRow, command: Command, actor: str, *, wait_s: float = 0.0) -> Steered:
        """Send `command` to the release `row` (recorded and audited); `wait_s`: how long to wait
        for a running controller to apply it."""

    @abc.abstractmethod
    def plan_steer(self, row: RolloutRow, command: Command) -> PlannedRelease:
        """What `steer(row, command)` would do."""

    @abc.abstractmethod
    def current(self, row: RolloutRow) -> RolloutRow:
        """The release as it is now (kubernetes: the Rollout's status read into it while unfinished)."""

    @abc.abstractmethod
    def follow(self, rollout_id: int, on_progress: OnProgress, interval_s: float) -> RolloutRow:
        """Report the release's progress every `interval_s` until it ends; the ended release."""


def release_driver(
    target: str,
    sessions: sessionmaker[Session],
    *,
    stack: Callable[[], Stack],
    local_state: Callable[[], Path],
    workdir: Path,
    kube: KubeConnection | None = None,
    notifier: Callable[[], Notifier] | None = None,
    on_progress: OnProgress | None = None,
) -> ReleaseDriver:
    """The driver of `target`. `stack` and `local_state` are read only when a verb needs them (a
    command for a recorded release needs neither)."""
    if target == "local":
        from ._local_releases import LocalReleases  # noqa: PLC0415 - HAProxy's side only for local releases

        return LocalReleases(
            sessions,
            stack=stack,
            state_dir=local_state,
            workdir=workdir,
            notifier=notifier,
            on_progress=on_progress,
        )
    if target == "kubernetes":
        from ._argo_releases import ArgoReleases  # noqa: PLC0415 - the Kubernetes client is slow to import
        from .targets.kubernetes import ArgoRolloutsDriver  # noqa: PLC0415

        connection = kube or KubeConnection()
        return ArgoReleases(sessions, stack, lambda: ArgoRolloutsDriver(connection.api_client()))
    raise UserError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")


# --- plans in words ----------------------------------------------------------------------------------


def describe_step(step: Step, plan: Plan) -> str:
    """One step of a local release's plan in words, e.g. 'set weights v1 90% / v2 10%'."""
    stable = plan.stable or "(none)"
    match step.kind:
        case "migrate":
            return f"run the migration with {plan.candidate}"
        case "prepare":
            count = f"{plan.instances} instance{'s' if plan.instances != 1 else ''}"
            return f"start {count} of {plan.candidate}, taking no traffic yet"
        case "health":
            return f"wait until {plan.candidate} is healthy (at most {plan.policy.health_timeout:g}s)"
        case "weight":
            return f"set weights {stable} {100 - step.weight}% / {plan.candidate} {step.weight}%"
        case "observe":
            return f"analyse for {step.seconds or 0:g}s (rolls back on a failed check)"
        case "pause":
            return "hold until promoted" if step.seconds is None else f"hold for {step.seconds:g}s"
        case "gate":
            return "hold until promoted (auto_promote: false)"
        case "warm":
            return f"keep {stable} running for {step.seconds or 0:g}s for an instant rollback"
        case "retire_stable":
            return f"retire {stable}"
        case "pre":
            return "run the pre hook (fails the release if it fails)"
        case "smoke":
            return f"run the smoke test against {plan.candidate}'s own address, before any traffic"
        case "test":
            return f"run the test {step.test!r} (rolls back if it fails)"
        case "post":
            return f"run the post hook while {stable} is still warm (rolls back if it fails)"
    raise AssertionError(step)  # pragma: no cover - the match is exhaustive


def describe_plan(plan: Plan) -> tuple[str, ...]:
    """Every step a release of `plan` goes through when nothing goes wrong, in words."""
    return tuple(describe_step(step, plan) for step in plan_steps(plan))


def where(state: RolloutState) -> str:
    """Where a local release is: its phase, step and weights, e.g. 'observing at step 4/9, weights 90/10'."""
    steps = plan_steps(state.plan)
    at = f" at step {min(state.step + 1, len(steps))}/{len(steps)}" if steps else ""
    return f"{state.phase}{at}, weights {state.weights.stable}/{state.weights.candidate} (stable/new)"
