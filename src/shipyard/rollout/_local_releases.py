"""Releases on this host: shipyard's controller runs the strategy against HAProxy and processes.

The `ReleaseDriver` of the local target. A release is started and carried on by a `Controller`
over a `LocalTarget`; a command is queued in the store (`rollout_commands`) for the controller that
runs the release, which applies it between steps. With no controller running the release, the
caller starts one (`take_over` then `run`), which applies the queued command first.

Plans (dry runs) read the store and the process supervisor's records only: they never start
HAProxy or listen on its log socket, as `LocalTarget.status` would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ReleaseUnattended, RolloutError, ShipyardError, UserError
from ..locks import holder
from ..spec import Stack
from ..state import RolloutRow
from ._controller import (
    Controller,
    check_release,
    lock_name,
    release_in_progress,
    release_plan,
    steer_release,
    wait_for_command,
)
from ._driver import OnProgress, PlannedRelease, ReleaseDriver, Steered, TargetName, describe_plan, where
from ._hooks import LocalHooks
from ._model import Command, StrategyName
from ._strategy import RolloutState, describe, is_finished, next_action, on_command

if TYPE_CHECKING:
    from ..monitor import Notifier

ORPHAN_AFTER_S = 3.0
"""How long a followed release may go without a controller's lease before it counts as unattended."""


class LocalReleases(ReleaseDriver):
    """Releases of one stack's services on this host, each run by a `Controller`."""

    target: ClassVar[TargetName] = "local"

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        stack: Callable[[], Stack],
        state_dir: Callable[[], Path],
        workdir: Path,
        notifier: Callable[[], Notifier] | None = None,
        on_progress: OnProgress | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sessions = sessions
        self._stack = stack
        self._state_dir = state_dir
        self.workdir = workdir
        self._notifier = notifier
        self.on_progress = on_progress
        self.clock = clock
        self.sleep = sleep
        self._controller: Controller | None = None

    @property
    def controller(self) -> Controller:
        """The controller over this host's target (HAProxy and the processes), made on first use."""
        if self._controller is None:
            from .targets.local import LocalTarget  # noqa: PLC0415 - HAProxy's side only when a release runs

            stack = self._stack()
            target = LocalTarget(stack, self._state_dir(), workdir=self.workdir)
            self._controller = Controller(
                self.sessions,
                stack,
                target,
                notifier=self._notifier() if self._notifier else None,
                on_progress=self.on_progress,
                hooks=LocalHooks(target),
            )
        return self._controller

    # --- starting and running -----------------------------------------------------------------

    def plan_release(self, service: str, version: str, strategy: StrategyName | None) -> PlannedRelease:
        stack = self._stack()
        check_release(stack, service, version, self.target)
        busy = holder(self.sessions, lock_name(service))
        if busy is not None:
            raise release_in_progress(self.sessions, service, f"held by {busy[0]}")
        plan = release_plan(stack, service, version, self._running(stack, service), strategy)
        return PlannedRelease(
            verb="deploy",
            target=self.target,
            service=service,
            environment=stack.environment,
            rollout_id=None,
            stable=plan.stable,
            candidate=version,
            strategy=plan.strategy,
            actions=(
                f"record a new release of {service}: {plan.stable or '(none)'} → {version} ({plan.strategy}),"
                f" holding the {lock_name(service)} lease",
                *describe_plan(plan),
            ),
        )

    def _running(self, stack: Stack, service: str) -> dict[str, int]:
        """The versions of `service` running here and their weights, read without touching HAProxy:
        the supervisor's records say what runs; the last successful release says which one is live."""
        from .targets._processes import Supervisor  # noqa: PLC0415
        from .targets.haproxy import parse_server_name  # noqa: PLC0415

        processes = self._state_dir() / "processes"
        if not processes.is_dir():
            return {}  # nothing ever ran here: a first release
        versions = set()
        for instance in Supervisor(processes).list():
            name, _, server = instance.name.partition(".")
            parsed = parse_server_name(server)
            if name == service and instance.alive and parsed:
                versions.add(parsed[0])
        with self.sessions() as session:
            rows = list(
                session.scalars(
                    select(RolloutRow)
                    .where(
                        RolloutRow.service == service,
                        RolloutRow.target == self.target,
                        RolloutRow.environment == stack.environment,
                    )
                    .order_by(RolloutRow.id.desc())
                    .limit(50)
                )
            )
        if rows and rows[0].finished_at is None and rows[0].candidate in versions:
            raise RolloutError(
                f"release {rows[0].id} of {service!r} did not finish ({rows[0].phase}): run"
                f" `shipyard rollout resume {service}` or `shipyard rollout abort {service}`"
            )
        live = next((row.candidate for row in rows if row.outcome == "succeeded"), None)
        return {version: 100 if version == live else 0 for version in versions}

    def start(self, service: str, version: str, actor: str, strategy: StrategyName | None) -> int:
        return self.controller.begin(service, version, actor, strategy)

    def run(self, rollout_id: int) -> RolloutRow:
        self.controller.run(rollout_id)
        return self._row(rollout_id)

    def take_over(self, service: str) -> int:
        return self.controller.resume(service)

    # --- steering -----------------------------------------------------------------------------

    def steer(self, row: RolloutRow, command: Command, actor: str, *, wait_s: float = 0.0) -> Steered:
        rollout_id, running = steer_release(self.sessions, row.service, command, actor, row.environment)
        applied = wait_for_command(self.sessions, rollout_id, wait_s) if running and wait_s > 0 else None
        return Steered(
            rollout_id=rollout_id,
            command=command,
            target=self.target,
            controller_running=running,
            needs_controller=not running and (row.finished_at is None or command == "retry"),
            applied=applied,
        )

    def plan_steer(self, row: RolloutRow, command: Command) -> PlannedRelease:
        state = _state(row)
        running = holder(self.sessions, lock_name(row.service)) is not None
        actions = [f"queue {command} for release {row.id} ({where(state) if state else row.phase})"]
        if running:
            actions.append("the controller running the release applies it between its steps")
        elif row.finished_at is None or command == "retry":
            actions.append(
                "no controller runs the release: start one (`shipyard rollout resume`), which applies"
                " it first and carries the release on to its end"
            )
        else:
            actions.append("the release is over and no controller runs it: nothing applies it")
        refused = None
        if state is not None:
            now = self.clock()
            try:
                after = on_command(state, command, now)
            except ShipyardError as exc:
                refused = exc.message
            else:
                actions.append(f"then {where(after)}" + (f": {after.reason}" if after.reason else ""))
                if not is_finished(after):
                    actions.append(f"next: {describe(next_action(after, now), after.plan)}")
        return PlannedRelease.of_release(command, self.target, row, actions, refused=refused)

    # --- following ----------------------------------------------------------------------------

    def current(self, row: RolloutRow) -> RolloutRow:
        return row  # the controller writes every change to the store as it makes it

    def follow(
        self,
        rollout_id: int,
        on_progress: OnProgress,
        interval_s: float,
        orphan_after_s: float = ORPHAN_AFTER_S,
    ) -> RolloutRow:
        """Follow a release another process runs (e.g. `deploy --detach`, a job) through the store.

        ReleaseUnattended once no controller has held its lease for `orphan_after_s`.
        """
        row = self._row(rollout_id)
        unattended_since: float | None = None
        while row.finished_at is None:
            on_progress(RolloutState.from_data(row.state))
            if holder(self.sessions, lock_name(row.service)) is None:
                # Between its steps a controller always holds the lease: none for a while means
                # the process that ran the release was stopped.
                unattended_since = unattended_since or time.monotonic()
                if time.monotonic() - unattended_since > orphan_after_s:
                    raise ReleaseUnattended(
                        f"release {row.id} is in phase {row.phase} but no controller runs it:"
                        f" `shipyard rollout resume {row.service}` carries it on"
                    )
            else:
                unattended_since = None
            self.sleep(interval_s)
            row = self._row(rollout_id)
        on_progress(RolloutState.from_data(row.state))  # where it ended
        return row

    def _row(self, rollout_id: int) -> RolloutRow:
        with self.sessions() as session:
            row = session.get(RolloutRow, rollout_id)
        if row is None:
            raise UserError(f"no release {rollout_id}")
        return row


def _state(row: RolloutRow) -> RolloutState | None:
    """The strategy's state of a local release; None for one recorded by another version of shipyard."""
    try:
        return RolloutState.from_data(row.state)
    except (ShipyardError, KeyError, TypeError, ValueError):
        return None
