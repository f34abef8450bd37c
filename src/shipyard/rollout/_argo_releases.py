"""Releases on Kubernetes where Argo Rollouts runs them, recorded like the controller's.

On the local target shipyard's controller runs the strategy; on a cluster with Argo Rollouts,
Argo's controller does, and shipyard applies the release, steers it and records what happened:

- `deploy` writes the release down (a `RolloutRow` with target `kubernetes`), records the apply
  step as `started`, applies the objects, and records the step `done` (or `failed`).
- `refresh` reads the Rollout's status into the release; once the new version is the stable one
  (Healthy) or the release was aborted or failed (Degraded), it records a `Finish` step and ends it.
- `command` sends promote, abort, retry, pause or resume, each recorded before and after.

The release's `state` holds `{"kubernetes": {...}}`: the namespace, the objects applied and the
Rollout's last status as Argo reported it; shipyard's own strategy state is not used here.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import RolloutError, TargetError, UserError
from ..locks import Lease, LockHeldError
from ..spec import Stack
from ..state import RolloutRow, RolloutStepRow, utcnow
from ._controller import lock_name
from .targets.kubernetes import ArgoRolloutsDriver, RolloutStatus, image_version, image_with_tag

TARGET = "kubernetes"
KubeCommand = Literal["promote", "abort", "retry", "pause", "resume"]
KUBE_COMMANDS: tuple[KubeCommand, ...] = ("promote", "abort", "retry", "pause", "resume")
_VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}|sha256:[0-9a-f]{64}")


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


class ArgoReleases:
    """Releases of one stack's services on a cluster with Argo Rollouts, through one driver."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        stack: Stack,
        driver: ArgoRolloutsDriver,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sessions = sessions
        self.stack = stack
        self.driver = driver
        self.sleep = sleep
        self.namespace = stack.k8s_namespace

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
            raise RolloutError(f"another release of {service!r} is being started or run: {exc}") from None
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
        if command not in KUBE_COMMANDS:
            raise UserError(
                f"{command!r} is not supported on kubernetes; use one of {', '.join(KUBE_COMMANDS)}"
            )
        row = self.latest(service)
        namespace = kube_state(row).get("namespace") or self.namespace
        seq = self._record_start(
            row.id, {"type": command.capitalize(), "actor": actor, "namespace": namespace}
        )
        calls: dict[str, Callable[[str, str], RolloutStatus]] = {
            "promote": self.driver.promote,
            "abort": self.driver.abort,
            "retry": self.driver.retry,
            "pause": self.driver.pause,
            "resume": self.driver.resume,
        }
        try:
            status = calls[command](namespace, service)
        except TargetError as exc:
            self._record_end(seq, {"type": "Failed", "reason": exc.message}, failed=True)
            raise
        self._record_end(seq, {"type": "Status", **status_data(status)})
        changes: dict[str, Any] = {"phase": status.phase, "status": status_data(status)}
        if command == "abort":
            changes["aborted_by"] = actor
        if command == "retry":
            changes |= {"aborted_by": None, "retrying": True}
            self._reopen(row.id)
        self._set(row.id, **changes)
        return self._row(row.id), status

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
