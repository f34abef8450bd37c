"""Releases on Kubernetes where Argo Rollouts runs them, recorded like the controller's.

On the local target shipyard's controller runs the strategy; on a cluster with Argo Rollouts,
Argo's controller does, and shipyard applies the release, steers it and records what happened:

- `deploy` writes the release down (a `RolloutRow` with target `kubernetes`), records the apply
  step as `started`, applies the objects, and records the step `done` (or `failed`).
- `refresh` reads the Rollout's status into the release; once the new version is the stable one
  (Healthy) or the release was aborted or failed (Degraded), it records a `Finish` step and ends it.
- `command` sends promote, promote-full, abort, retry, pause or resume, each recorded before and after
  (`promote-full` is `kubectl argo rollouts promote --full`: `status.promoteFull`).

The release's `state` holds `{"kubernetes": {...}}`: the namespace, the objects applied and the
Rollout's last status as Argo reported it; shipyard's own strategy state is not used here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import TargetError, UserError
from ..locks import Lease, LockHeldError
from ..spec import Stack
from ..state import RolloutRow, RolloutStepRow, record_audit, utcnow
from ._controller import lock_name, release_in_progress
from ._driver import OnProgress, PlannedRelease, ReleaseDriver, Steered, TargetName
from ._model import Command, StrategyName, audited_command
from .targets.kubernetes import (
    APPLY_PATCH,
    MERGE_PATCH,
    ArgoRolloutsDriver,
    RolloutStatus,
    api_path,
    image_version,
    image_with_tag,
    promote_patches,
    release_manifests,
)

TARGET = "kubernetes"
KubeCommand = Literal["promote", "promote-full", "abort", "retry", "pause", "resume"]
KUBE_COMMANDS: tuple[KubeCommand, ...] = ("promote", "promote-full", "abort", "retry", "pause", "resume")
_VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}|sha256:[0-9a-f]{64}")


def _step_type(command: str) -> str:
    """The type of the step a command is recorded as: Promote, PromoteFull, Abort, …"""
    return "".join(word.capitalize() for word in command.split("-"))


def kube_state(row: RolloutRow) -> dict[str, Any]:
    """The Kubernetes part of a release's state: namespace, objects, the last status read."""
    data: dict[str, Any] = (row.state or {}).get(TARGET) or {}
    return data


def status_data(status: RolloutStatus) -> dict[str, Any]:
    """A RolloutStatus as JSON-ready data, with the weights as shipyard shows them."""
    data = dataclasses.asdict(status)
    data["pause_reasons"] = list(status.pause_reasons)
    data["weights"] = {"stable": 100 - status.canary_weight, "candidate": status.canary_weight}
    return data


class ArgoReleases(ReleaseDriver):
    """Releases of one stack's services on a cluster with Argo Rollouts, through one driver.

    The stack and the driver may be given as functions, called on first use: steering a recorded
    release needs neither the spec nor (for a dry run) a client.
    """

    target: ClassVar[TargetName] = "kubernetes"

    def __init__(
        self,
        sessions: sessionmaker[Session],
        stack: Stack | Callable[[], Stack],
        driver: ArgoRolloutsDriver | Callable[[], ArgoRolloutsDriver],
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sessions = sessions
        self._stack = stack
        self._driver = driver
        self.sleep = sleep

    @functools.cached_property
    def stack(self) -> Stack:
        return self._stack if isinstance(self._stack, Stack) else self._stack()

    @functools.cached_property
    def driver(self) -> ArgoRolloutsDriver:
        return self._driver if isinstance(self._driver, ArgoRolloutsDriver) else self._driver()

    @property
    def namespace(self) -> str:
        return self.stack.k8s_namespace

    # --- deploy -----------------------------------------------------------------------------

    def deploy(self, service: str, version: str, actor: str, strategy: str | None = None) -> int:
        """Record a release of `version`, apply its objects, and return its id.

        A bad request (unknown service, no image, bad version, already live) raises before
        anything is recorded or applied.
        """
        stack = self._stack_for(service, version, strategy)
        manifests = self.driver.manifests(stack, service, version)  # renders and validates first
        objects = [f"{o['kind']}/{o['metadata']['name']}" for o in manifests]
        # Long enough for every apply to time out once: the lease is not renewed while applying.
        lease = Lease(self.sessions, lock_name(service), ttl_s=len(manifests) * self.driver.timeout + 30)
        try:
            lease.acquire()
        except LockHeldError as exc:
            raise release_in_progress(self.sessions, service, str(exc)) from None
        try:
            live = self.driver.find(self.namespace, service)
            stable = self._stable(service, live)
            wanted = image_with_tag(stack.services[service].image or "", version)
            if live is not None and live.image == wanted:
                if live.aborted:
                    raise UserError(
                        f"version {version!r} of {service!r} was aborted in {self.namespace}: start it"
                        f" again with `shipyard rollout retry {service} --target kubernetes`"
                    )
                where = "live" if live.promoted else "being rolled out"
                raise UserError(f"version {version!r} of {service!r} is already {where} in {self.namespace}")
            rollout_id = self._record_release(service, version, actor, stack, stable, objects)
            seq = self._record_start(
                rollout_id,
                {"type": "Apply", "version": version, "namespace": self.namespace, "objects": objects},
            )
            try:
                applied = self.driver.deploy(stack, service, version)
            except TargetError as exc:
                self._record_end(seq, {"type": "Failed", "reason": exc.message}, failed=True)
                self._finish(rollout_id, "failed", exc.message)
                raise
            done = [f"{a.kind}/{a.name}" for a in applied]
            self._record_end(seq, {"type": "Applied", "objects": done})
            self._set(rollout_id, phase="applied")
            return rollout_id
        finally:
            lease.release()

    def _stack_for(self, service: str, version: str, strategy: str | None) -> Stack:
        spec = self.stack.services.get(service)
        if spec is None:
            known = ", ".join(sorted(self.stack.services)) or "none"
            raise UserError(f"no service {service!r} in the spec; services: {known}")
        if spec.image is None:
            raise UserError(f"service {service!r} has no `image`, so it cannot run on Kubernetes")
        if not _VERSION.fullmatch(version):
            raise UserError(
                f"version {version!r}: an image tag (letters, digits, '_', '.', '-') or a sha256: digest"
            )
        if strategy is None or strategy == self.stack.rollout.strategy:
            return self.stack
        policy = self.stack.rollout.model_copy(update={"strategy": strategy})
        return self.stack.model_copy(update={"rollout": policy})

    def _stable(self, service: str, live: RolloutStatus | None) -> str | None:
        """The version serving now: the Rollout's, when it is fully rolled out; else the last success."""
        if live is not None and live.promoted and not live.aborted:
            return image_version(live.image)
        with self.sessions() as session:
            return session.scalar(
                select(RolloutRow.candidate)
                .where(
                    RolloutRow.service == service,
                    RolloutRow.target == TARGET,
                    RolloutRow.environment == self.stack.environment,
                    RolloutRow.outcome == "succeeded",
                )
                .order_by(RolloutRow.id.desc())
                .limit(1)
            )

    def _record_release(
        self, service: str, version: str, actor: str, stack: Stack, stable: str | None, objects: list[str]
    ) -> int:
        with self.sessions() as session, session.begin():
            row = RolloutRow(
                service=service,
                environment=self.stack.environment,
                target=TARGET,
                strategy=stack.rollout.strategy,
                stable=stable,
                candidate=version,
                phase="applying",
                actor=actor,
                stack=stack.model_dump(mode="json", by_alias=True),
                state={TARGET: {"namespace": self.namespace, "objects": objects}},
            )
            session.add(row)
            session.flush()
            rollout_id = row.id
            # Argo rolls out the newest spec only: an unfinished earlier release is replaced.
            session.execute(
                update(RolloutRow)
                .where(
                    RolloutRow.service == service,
                    RolloutRow.target == TARGET,
                    RolloutRow.environment == self.stack.environment,
                    RolloutRow.id != rollout_id,
                    RolloutRow.finished_at.is_(None),
                )
                .values(
                    outcome="superseded",
                    reason=f"release {rollout_id} ({version}) replaced it",
                    finished_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
        return rollout_id

    # --- following --------------------------------------------------------------------------

    def latest(self, service: str) -> RolloutRow:
        """The newest Kubernetes release of `service` in this environment."""
        with self.sessions() as session:
            row = session.scalar(
                select(RolloutRow)
                .where(
                    RolloutRow.service == service,
                    RolloutRow.target == TARGET,
                    RolloutRow.environment == self.stack.environment,
                )
                .order_by(RolloutRow.id.desc())
                .limit(1)
            )
        if row is None:
            raise UserError(
                f"{service!r} has no Kubernetes release in {self.stack.environment!r} recorded here;"
                f" start one with `shipyard deploy {service} --version V --target kubernetes`"
            )
        return row

    def refresh(self, rollout_id: int) -> tuple[RolloutRow, RolloutStatus]:
        """Read the Rollout's status into the release; end the release once Argo has decided."""
        row = self._row(rollout_id)
        state = kube_state(row)
        namespace = state.get("namespace") or self.namespace
        status = self.driver.status(namespace, row.service)
        if row.finished_at is None:
            # Right after a retry the status still says Degraded until Argo's controller acts on it.
            retrying = bool(state.get("retrying")) and status.phase == "Degraded"
            self._set(rollout_id, phase=status.phase, status=status_data(status), retrying=retrying)
            ended = (
                None
                if retrying
                else _ending(status, row.candidate, aborted_by_user=bool(state.get("aborted_by")))
            )
            if ended is not None:
                outcome, reason = ended
                seq = self._record_start(rollout_id, {"type": "Finish", "outcome": outcome, "reason": reason})
                self._record_end(seq, {"type": "Done"})
                self._finish(rollout_id, outcome, reason)
        return self._row(rollout_id), status

    def watch(
        self,
        rollout_id: int,
        on_status: Callable[[RolloutRow, RolloutStatus], None],
        interval_s: float = 2.0,
    ) -> RolloutRow:
        """Read the status every `interval_s` until the release ends; returns the ended release."""
        while True:
            row, status = self.refresh(rollout_id)
            on_status(row, status)
            if row.finished_at is not None:
                return row
            self.sleep(interval_s)

    # --- commands ---------------------------------------------------------------------------

    def command(self, service: str, command: KubeCommand, actor: str) -> tuple[RolloutRow, RolloutStatus]:
        """Send `command` to the Rollout of the latest release, recorded before and after."""
        return self._send(self.latest(service), command, actor)

    def _send(self, row: RolloutRow, command: str, actor: str) -> tuple[RolloutRow, RolloutStatus]:
        """Send `command` to the Rollout of release `row`, recorded before and after, and audited."""
        if command == "rollback":
            raise UserError(_NO_ROLLBACK.format(service=row.service))
        if command not in KUBE_COMMANDS:
            raise UserError(
                f"{command!r} is not supported on kubernetes; use one of {', '.join(KUBE_COMMANDS)}"
            )
        service = row.service
        namespace = self._namespace_of(row)
        seq = self._record_start(
            row.id, {"type": _step_type(command), "actor": actor, "namespace": namespace}
        )
        calls: dict[str, Callable[[str, str], RolloutStatus]] = {
            "promote": self.driver.promote,
            "promote-full": lambda namespace, service: self.driver.promote(namespace, service, full=True),
            "abort": self.driver.abort,
            "retry": self.driver.retry,
            "pause": self.driver.pause,
            "resume": self.driver.resume,
        }
        audit = {"rollout": row.id, "command": command, "namespace": namespace, "target": TARGET}
        action = f"rollout.{audited_command(command)}"
        try:
            status = calls[command](namespace, service)
        except TargetError as exc:
            self._record_end(seq, {"type": "Failed", "reason": exc.message}, failed=True)
            record_audit(
                self.sessions, actor=actor, action=action, target_kind="service",
                target=service, after={**audit, "error": exc.message}, outcome="failed",
            )  # fmt: skip
            raise
        self._record_end(seq, {"type": "Status", **status_data(status)})
        record_audit(
            self.sessions, actor=actor, action=action, target_kind="service",
            target=service, after={**audit, "phase": status.phase}, outcome="ok",
        )  # fmt: skip
        changes: dict[str, Any] = {"phase": status.phase, "status": status_data(status)}
        if command == "abort":
            changes["aborted_by"] = actor
        if command == "retry":
            changes |= {"aborted_by": None, "retrying": True}
            self._reopen(row.id)
        self._set(row.id, **changes)
        return self._row(row.id), status

    # --- the release driver -----------------------------------------------------------------

    def connect(self) -> None:
        self.driver  # noqa: B018 - builds the client: a kubeconfig that does not load is reported now

    def start(self, service: str, version: str, actor: str, strategy: StrategyName | None) -> int:
        return self.deploy(service, version, actor, strategy)

    def run(self, rollout_id: int) -> RolloutRow:
        return self._row(rollout_id)  # Argo's controller runs the release, not this process

    def take_over(self, service: str) -> int:
        raise UserError(
            f"Argo Rollouts runs the releases of {service!r} on kubernetes, there is nothing to take over:"
            f" `shipyard rollout resume {service} --target kubernetes` resumes a paused one"
        )

    def steer(self, row: RolloutRow, command: Command, actor: str, *, wait_s: float = 0.0) -> Steered:
        _, status = self._send(row, command, actor)
        return Steered(
            rollout_id=row.id,
            command=command,
            target=self.target,
            controller_running=True,  # Argo's controller acts on the patch at once
            needs_controller=False,
            applied=status_line(status),
            progress=status,
        )

    def current(self, row: RolloutRow) -> RolloutRow:
        return row if row.finished_at is not None else self.refresh(row.id)[0]

    def follow(self, rollout_id: int, on_progress: OnProgress, interval_s: float) -> RolloutRow:
        return self.watch(rollout_id, lambda _row, status: on_progress(status), interval_s)

    def plan_release(self, service: str, version: str, strategy: StrategyName | None) -> PlannedRelease:
        """The objects `start` would apply and the steps Argo would then run, from the spec alone:
        no request reaches the cluster (the real deploy first reads the live Rollout)."""
        stack = self._stack_for(service, version, strategy)
        if isinstance(self._driver, ArgoRolloutsDriver):
            manifests = self._driver.manifests(stack, service, version)
        else:
            manifests = release_manifests(stack, service, version)
        stable = self._stable(service, None)
        namespace = self.namespace
        actions = [
            f"record a new release of {service}: {stable or '(none recorded)'} → {version}"
            f" ({stack.rollout.strategy}) in namespace {namespace}",
            *(f"server-side apply {o['kind']}/{o['metadata']['name']}" for o in manifests),
        ]
        rollout = next((o for o in manifests if o["kind"] == "Rollout"), None)
        if rollout is not None:
            actions += [f"then Argo Rollouts: {step}" for step in rollout_steps(rollout)]
        requests = tuple(
            {
                "method": "PATCH",
                "path": api_path(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]),
                "content_type": APPLY_PATCH,
                "body": o,
            }
            for o in manifests
        )
        return PlannedRelease(
            verb="deploy",
            target=self.target,
            service=service,
            environment=self.stack.environment,
            rollout_id=None,
            stable=stable,
            candidate=version,
            strategy=stack.rollout.strategy,
            actions=tuple(actions),
            requests=requests,
        )

    def plan_steer(self, row: RolloutRow, command: Command) -> PlannedRelease:
        """The patch `steer` would send, from the release's record: no request reaches the cluster.

        A promote's patch depends on where the Rollout is; it is worked out from the status last read
        (the real promote reads the Rollout first)."""
        if command == "rollback":
            raise UserError(_NO_ROLLBACK.format(service=row.service))
        if command not in KUBE_COMMANDS:
            raise UserError(
                f"{command!r} is not supported on kubernetes; use one of {', '.join(KUBE_COMMANDS)}"
            )
        namespace = self._namespace_of(row)
        path = api_path("Rollout", namespace, row.service)
        last: dict[str, Any] = kube_state(row).get("status") or {}
        patches: list[tuple[str, dict[str, Any]]] = {
            "abort": [(f"{path}/status", {"status": {"abort": True}})],
            "retry": [(f"{path}/status", {"status": {"abort": False}})],
            "pause": [(path, {"spec": {"paused": True}})],
            "resume": [(path, {"spec": {"paused": False}})],
        }.get(command, [])
        actions = [f"record a {_step_type(command)} step on release {row.id} ({row.phase})"]
        promoting = command in ("promote", "promote-full")
        if promoting:
            actions.append(f"read Rollout {namespace}/{row.service}")
            if last:
                full = command == "promote-full"
                status_patch, spec_patch = promote_patches(_as_last_read(last), full=full)
                if status_patch is not None:
                    patches.append((f"{path}/status", status_patch))
                if spec_patch is not None:
                    patches.append((path, spec_patch))
            elif command == "promote-full":
                actions.append(
                    "set its status.promoteFull unless it is fully promoted already (its status was never"
                    " read, so which is unknown)"
                )
            else:
                actions.append(
                    "patch it as it then requires: clear its pause conditions, or move past the analysis"
                    " step it is in, and unpause its spec (its status was never read, so which is unknown)"
                )
        requests = tuple(
            {"method": "PATCH", "path": where, "content_type": MERGE_PATCH, "body": body}
            for where, body in patches
        )
        actions += [f"PATCH {r['path']} {json.dumps(r['body'])}" for r in requests]
        if promoting and last:
            actions.append(
                f"(worked out from the status last read, {last.get('phase')}; the promote itself reads"
                " the Rollout first)"
            )
        return PlannedRelease.of_release(command, self.target, row, actions, requests=requests)

    def _namespace_of(self, row: RolloutRow) -> str:
        return str(kube_state(row).get("namespace") or self.namespace)

    # --- persistence ------------------------------------------------------------------------

    def _row(self, rollout_id: int) -> RolloutRow:
        with self.sessions() as session:
            row = session.get(RolloutRow, rollout_id)
        if row is None or row.target != TARGET:
            raise UserError(f"no Kubernetes release {rollout_id}")
        return row

    def _set(self, rollout_id: int, *, phase: str, **state: Any) -> None:
        with self.sessions() as session, session.begin():
            row = session.get(RolloutRow, rollout_id)
            assert row is not None
            data = dict(row.state or {})
            data[TARGET] = {**(data.get(TARGET) or {}), **state}
            row.state = data
            row.phase = phase
            row.updated_at = utcnow()

    def _finish(self, rollout_id: int, outcome: str, reason: str) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(RolloutRow)
                .where(RolloutRow.id == rollout_id)
                .values(outcome=outcome, reason=reason, finished_at=utcnow(), updated_at=utcnow())
            )

    def _reopen(self, rollout_id: int) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(RolloutRow)
                .where(RolloutRow.id == rollout_id, RolloutRow.outcome != "superseded")
                .values(outcome=None, reason=None, finished_at=None, updated_at=utcnow())
            )

    def _record_start(self, rollout_id: int, action: dict[str, Any]) -> int:
        with self.sessions() as session, session.begin():
            last = session.scalar(
                select(RolloutStepRow.seq)
                .where(RolloutStepRow.rollout_id == rollout_id)
                .order_by(RolloutStepRow.seq.desc())
                .limit(1)
            )
            step = RolloutStepRow(rollout_id=rollout_id, seq=(last or 0) + 1, action=action, status="started")
            session.add(step)
            session.flush()
            return step.id

    def _record_end(self, step_id: int, outcome: dict[str, Any], *, failed: bool = False) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(RolloutStepRow)
                .where(RolloutStepRow.id == step_id)
                .values(status="failed" if failed else "done", outcome=outcome, finished_at=utcnow())
            )


_NO_ROLLBACK = (
    "rollback is not supported on kubernetes yet: during a release, `shipyard rollout abort"
    " {service} --target kubernetes` sends all traffic back to the stable version; after one,"
    " release the previous version again with `shipyard deploy {service} --version PREVIOUS"
    " --target kubernetes`"
)


def status_line(status: RolloutStatus) -> str:
    """One line of a Rollout's status: phase, step, weights, readiness, pause/abort, message."""
    if status.step_index is not None and status.step_count:
        step = f"step {min(status.step_index + 1, status.step_count)}/{status.step_count}, "
    else:
        step = ""
    flags = [word for word, on in (("paused", status.paused), ("aborted", status.aborted)) if on]
    line = (
        f"{status.phase}: {step}weights {100 - status.canary_weight}/{status.canary_weight} (stable/new),"
        f" ready {status.ready_replicas}/{status.replicas}"
    )
    if flags:
        line += f" [{', '.join(flags)}]"
    if not status.observed:
        line += " (Argo Rollouts has not seen the latest spec yet)"
    if status.message:
        line += f" — {status.message}"
    return line


def rollout_steps(rollout: dict[str, Any]) -> list[str]:
    """What Argo Rollouts does with a rendered Rollout, step by step, in words."""
    strategy = (rollout.get("spec") or {}).get("strategy") or {}
    if "blueGreen" in strategy:
        blue_green = strategy["blueGreen"]
        steps = [f"start the new version behind {blue_green.get('previewService', 'the preview service')}"]
        if blue_green.get("prePromotionAnalysis"):
            steps.append("analyse the preview")
        if blue_green.get("autoPromotionEnabled", True):
            steps.append(f"switch {blue_green.get('activeService', 'the active service')} to the new version")
        else:
            steps.append("wait for promote, then switch to the new version")
        return steps
    described = []
    for step in (strategy.get("canary") or {}).get("steps") or []:
        if "setWeight" in step:
            described.append(f"set weight {step['setWeight']}%")
        elif "pause" in step:
            duration = (step["pause"] or {}).get("duration")
            described.append(f"pause {duration}" if duration else "pause until promoted")
        elif "analysis" in step:
            names = [t.get("templateName", "?") for t in step["analysis"].get("templates") or []]
            described.append(f"analyse ({', '.join(names)})")
        else:
            described.append(json.dumps(step))
    return [*described, "the new version becomes stable"]


def _as_last_read(status: dict[str, Any]) -> dict[str, Any]:
    """A Rollout object as `promote_patches` reads it, from the status a release recorded."""
    reasons = list(status.get("pause_reasons") or [])
    canary = status.get("strategy", "canary") == "canary"
    return {
        "spec": {
            # The recorded status does not say which kind of pause: a pause without reasons is manual.
            "paused": bool(status.get("paused")) and not reasons,
            "strategy": {"canary": {"steps": [{}] * int(status.get("step_count") or 0)}} if canary else {},
        },
        "status": {
            "pauseConditions": [{"reason": reason} for reason in reasons],
            "currentStepIndex": status.get("step_index"),
        },
    }


def _ending(status: RolloutStatus, candidate: str, *, aborted_by_user: bool) -> tuple[str, str] | None:
    """(outcome, reason) once Argo has finished with the release of `candidate`, else None."""
    if not status.observed or image_version(status.image) != candidate:
        return None  # Argo has not seen this release yet, or another one replaced it
    if status.aborted:
        if status.phase not in ("Degraded", "Healthy"):
            return None  # still scaling the canary down
        if aborted_by_user:
            return "aborted", status.message or "aborted"
        return "rolled_back", status.message or "Argo Rollouts aborted the release"
    if status.phase == "Degraded":
        return "failed", status.message or "the Rollout is degraded"
    if status.phase == "Healthy" and status.promoted:
        return "succeeded", f"{candidate} is the stable version"
    return None
