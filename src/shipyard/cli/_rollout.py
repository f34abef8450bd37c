"""`shipyard deploy` and `shipyard rollout status|promote|abort|pause|resume|retry|rollback|history`."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table
from sqlalchemy import select

from ..errors import UserError
from ..rollout import Controller, RolloutState, latest_release, queue_command, wait_for_command
from ..spec import Stack
from ..state import RolloutRow, RolloutStepRow, open_engine, session_factory
from ._app import (
    DEFAULT_SPEC,
    DatabaseOption,
    Output,
    OutputOption,
    SpecOption,
    actor,
    console,
    emit,
    read_spec,
)

rollout_app = typer.Typer(help="Follow and steer releases.", no_args_is_help=True)

EnvOption = Annotated[str, typer.Option("--env", "-e", help="The environment.")]
WatchOption = Annotated[
    bool, typer.Option("--watch", "-w", help="Show live progress: step, weights, errors, p99.")
]


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.add_typer(rollout_app, name="rollout")


def _state_dir(stack: Stack) -> Path:
    base = Path(os.environ.get("SHIPYARD_STATE_DIR", ".shipyard"))
    return base / "local" / f"{stack.name}-{stack.environment}"


def _controller(file: Path, env: str, database_url: str | None, watch: bool) -> tuple[Controller, Any]:
    from ..rollout.targets.local import LocalTarget  # noqa: PLC0415 - only releases need HAProxy's side

    stack = read_spec(file).stack(env)
    sessions = session_factory(open_engine(database_url))
    target = LocalTarget(stack, _state_dir(stack), workdir=file.resolve().parent)
    view = _Progress(watch)
    return Controller(sessions, stack, target, on_progress=view.update), view


def _run(controller: Controller, view: _Progress, rollout_id: int) -> None:
    # SIGTERM (e.g. from a supervisor) stops the controller like Ctrl-C: the release stays
    # recorded as it was and `shipyard rollout resume` carries it on.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with view:
            state = controller.run(rollout_id)
    except KeyboardInterrupt:
        row = controller.latest_by_id(rollout_id)
        console.print(
            f"stopped; release {rollout_id} is kept in phase {row.phase if row else '?'}:"
            f" `shipyard rollout resume {row.service if row else ''}` carries it on,"
            f" `shipyard rollout abort` takes it back"
        )
        raise typer.Exit(130) from None
    outcome = state.outcome or "finished"
    console.print(f"release {rollout_id}: {outcome}" + (f" ({state.reason})" if state.reason else ""))
    if outcome != "succeeded":
        raise typer.Exit(1)


def deploy(
    service: Annotated[str, typer.Argument(help="The service to release.")],
    version: Annotated[str, typer.Option("--version", "-v", help="The version to release.")],
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="blue-green or canary (default: the spec's).")
    ] = None,
    watch: WatchOption = False,
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = "production",
    database_url: DatabaseOption = None,
) -> None:
    """Release a new version of a service with the spec's strategy; roll back by itself if it is bad."""
    if strategy not in (None, "blue-green", "canary"):
        raise UserError(f"--strategy {strategy!r}: use blue-green or canary")
    controller, view = _controller(file, env, database_url, watch)
    rollout_id = controller.begin(service, version, actor(), strategy)  # type: ignore[arg-type]
    console.print(f"release {rollout_id}: {service} {version}")
    _run(controller, view, rollout_id)


def _command(command: str, service: str, file: Path, env: str, database_url: str | None, watch: bool) -> None:
    sessions = session_factory(open_engine(database_url))
    rollout_id, running = queue_command(sessions, service, command, actor())  # type: ignore[arg-type]
    if running:
        result = wait_for_command(sessions, rollout_id)
        console.print(f"{command}: {result or 'queued; the controller has not picked it up yet'}")
        if result and result.startswith("refused"):
            raise typer.Exit(2)
        return
    # No controller runs this release: carry it on here, starting with the command.
    controller, view = _controller(file, env, database_url, watch)
    rollout_id = controller.resume(service)
    _run(controller, view, rollout_id)


def _make_command(name: str, help_text: str) -> None:
    def command(
        service: Annotated[str, typer.Argument(help="The service whose release to steer.")],
        watch: WatchOption = False,
        file: SpecOption = DEFAULT_SPEC,
        env: EnvOption = "production",
        database_url: DatabaseOption = None,
    ) -> None:
        _command(name, service, file, env, database_url, watch)

    command.__doc__ = help_text
    rollout_app.command(name)(command)


for _name, _help in (
    ("promote", "Skip the remaining steps: the new version takes all traffic."),
    ("abort", "Stop the release: all traffic back to the stable version, the new one stopped."),
    ("pause", "Hold the release at its current weights (analysis goes on)."),
    ("retry", "Start a failed, aborted or rolled-back release again."),
    ("rollback", "Switch back to the previous version at once while it is still warm."),
):
    _make_command(_name, _help)


@rollout_app.command("resume")
def resume(
    service: Annotated[str, typer.Argument(help="The service whose release to carry on.")],
    watch: WatchOption = False,
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = "production",
    database_url: DatabaseOption = None,
) -> None:
    """Carry on a paused release, or one whose controller was stopped or killed."""
    sessions = session_factory(open_engine(database_url))
    row = latest_release(sessions, service)
    if row is not None and row.finished_at is None and row.phase == "paused":
        state = RolloutState.from_data(row.state)
        if state.paused_by == "inconclusive":
            console.print(
                f"release {row.id} is paused: {state.reason}. It keeps analysing; decide with"
                f" `shipyard rollout promote {service}` or `shipyard rollout abort {service}`."
            )
        else:
            queue_command(sessions, service, "resume", actor())
    controller, view = _controller(file, env, database_url, watch)
    rollout_id = controller.resume(service)
    _run(controller, view, rollout_id)


@rollout_app.command("status")
def status(
    service: Annotated[str | None, typer.Argument(help="One service (default: every one).")] = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """The latest release of each service: phase, weights, and its last analysis."""
    sessions = session_factory(open_engine(database_url))
    with sessions() as session:
        query = select(RolloutRow).order_by(RolloutRow.id.desc())
        if service:
            query = query.where(RolloutRow.service == service)
        latest: dict[str, RolloutRow] = {}
        for row in session.scalars(query):
            latest.setdefault(row.service, row)
    rows = [_row_data(row) for row in latest.values()]
    if emit(rows, output):
        return
    if not rows:
        console.print("no releases yet")
        return
    table = Table(title="releases", title_justify="left")
    for column in ("service", "id", "stable → candidate", "strategy", "phase", "weights", "outcome / reason"):
        table.add_column(column)
    for data in rows:
        weights = data["weights"]
        table.add_row(
            data["service"],
            str(data["id"]),
            f"{data['stable'] or '-'} → {data['candidate']}",
            data["strategy"],
            data["phase"],
            f"{weights.get('stable', '-')}/{weights.get('candidate', '-')}" if weights else "-",
            " ".join(filter(None, [data["outcome"], data["reason"]])) or "-",
        )
    console.print(table)


def _row_data(row: RolloutRow) -> dict[str, Any]:
    state = RolloutState.from_data(row.state)
    return {
        "id": row.id,
        "service": row.service,
        "environment": row.environment,
        "strategy": row.strategy,
        "stable": row.stable,
        "candidate": row.candidate,
        "phase": row.phase,
        "weights": {"stable": state.weights.stable, "candidate": state.weights.candidate},
        "outcome": row.outcome,
        "reason": row.reason,
        "actor": row.actor,
        "started": row.created_at.isoformat(),
        "finished": row.finished_at.isoformat() if row.finished_at else None,
    }


@rollout_app.command("history")
def history(
    service: Annotated[str, typer.Argument(help="The service.")],
    steps: Annotated[int | None, typer.Option("--steps", help="Show every step of this release.")] = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Past releases of a service and how each ended (with the check that rolled it back)."""
    sessions = session_factory(open_engine(database_url))
    with sessions() as session:
        if steps is not None:
            step_rows = list(
                session.scalars(
                    select(RolloutStepRow)
                    .where(RolloutStepRow.rollout_id == steps)
                    .order_by(RolloutStepRow.seq)
                )
            )
            data: list[dict[str, Any]] = [
                {
                    "seq": s.seq,
                    "action": s.action,
                    "status": s.status,
                    "outcome": s.outcome,
                    "started": s.started_at.isoformat(),
                    "finished": s.finished_at.isoformat() if s.finished_at else None,
                }
                for s in step_rows
            ]
        else:
            data = [
                _row_data(row)
                for row in session.scalars(
                    select(RolloutRow).where(RolloutRow.service == service).order_by(RolloutRow.id.desc())
                )
            ]
    if emit(data, output):
        return
    table = Table(
        title=f"{'steps of release ' + str(steps) if steps is not None else 'releases of ' + service}"
    )
    if steps is not None:
        for column in ("#", "action", "status", "outcome"):
            table.add_column(column)
        for item in data:
            action = {k: v for k, v in item["action"].items() if k != "type"}
            outcome = item["outcome"] or {}
            table.add_row(
                str(item["seq"]),
                f"{item['action']['type']} {action}",
                item["status"],
                str(outcome.get("type", "")),
            )
    else:
        for column in ("id", "stable → candidate", "strategy", "outcome", "reason", "started"):
            table.add_column(column)
        for item in data:
            table.add_row(
                str(item["id"]),
                f"{item['stable'] or '-'} → {item['candidate']}",
                item["strategy"],
                item["outcome"] or item["phase"],
                item["reason"] or "",
                item["started"],
            )
    console.print(table)


class _Progress:
    """Prints each change of phase, or (with --watch) a live panel of the release."""

    def __init__(self, live: bool) -> None:
        self.live = Live(console=console, refresh_per_second=4) if live else None
        self.last: tuple[str, int, int] | None = None

    def __enter__(self) -> _Progress:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)

    def update(self, state: RolloutState) -> None:
        if self.live:
            self.live.update(_panel(state))
            return
        key = (str(state.phase), state.weights.stable, state.weights.candidate)
        if key != self.last:
            self.last = key
            console.print(
                f"  {state.phase}: weights {state.weights.stable}/{state.weights.candidate} (stable/new)"
            )


def _panel(state: RolloutState) -> Table:
    """Phase and step, then per version: weight, and the last analysis's error rate and p99."""
    plan = state.plan
    last = state.history[-1] if state.history else None
    table = Table(
        title=f"{plan.service}: {plan.stable or '-'} → {plan.candidate} ({plan.strategy}) — {state.phase},"
        f" step {state.step}: {getattr(last, 'what', '')}",
        title_justify="left",
        caption=(getattr(last, "reason", "") or "")[:200],
    )
    for column in ("version", "weight", "error rate", "p99 ms", "requests (last window)"):
        table.add_column(column)
    checks = {c.name: c for c in (state.analysis.checks if state.analysis else ())}
    error, p99 = checks.get("error_rate"), checks.get("p99_ratio") or checks.get("p99_ms")
    analysis = state.analysis
    rows = [
        (
            plan.candidate,
            state.weights.candidate,
            "candidate",
            analysis.candidate_requests if analysis else None,
        )
    ]
    if plan.stable:
        rows.insert(
            0, (plan.stable, state.weights.stable, "stable", analysis.stable_requests if analysis else None)
        )
    for version, weight, side, requests in rows:
        table.add_row(
            version,
            f"{weight}%",
            _figure(getattr(error, side, None), "{:.2%}"),
            _figure(getattr(p99, side, None), "{:.0f}"),
            "-" if requests is None else str(requests),
        )
    return table


def _figure(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)
