"""`shipyard deploy` and `shipyard rollout status|promote|abort|pause|resume|retry|rollback|history`.

`--target local` (the default) runs shipyard's controller here (`--detach`: in a background
process); `--target kubernetes` applies the release for Argo Rollouts to run and steers it
(`rollout._argo_releases`). Both record every release and step in the state store.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from ..host import state_dir
from ..locks import holder
from ..rollout import (
    Controller,
    RolloutState,
    latest_release,
    lock_name,
    queue_command,
    steer_release,
    wait_for_command,
)
from ..rollout._detached import last_release_id, spawn, wait_recorded
from ..spec import Stack
from ..state import RolloutRow, RolloutStepRow, record_audit
from ._app import (
    DEFAULT_SPEC,
    DatabaseOption,
    NamedEnvOption,
    Output,
    OutputOption,
    SpecOption,
    actor,
    console,
    emit,
    open_sessions,
    read_spec,
)

if TYPE_CHECKING:
    from ..rollout._argo_releases import ArgoReleases
    from ..rollout.targets.kubernetes import RolloutStatus

rollout_app = typer.Typer(help="Follow and steer releases.", no_args_is_help=True)

WatchOption = Annotated[
    bool, typer.Option("--watch", "-w", help="Show live progress: step, weights, errors, p99.")
]


class TargetName(StrEnum):
    local = "local"
    kubernetes = "kubernetes"


TargetOption = Annotated[
    TargetName,
    typer.Option(
        "--target",
        "-t",
        help="local: processes behind HAProxy on this host; kubernetes: a cluster with Argo Rollouts.",
    ),
]
ContextOption = Annotated[
    str | None,
    typer.Option("--context", help="kubernetes: the kubeconfig context (default: its current one)."),
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="kubernetes: the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
        dir_okay=False,
    ),
]

KUBE_POLL_S = 2.0
"""Seconds between reads of a Rollout's status while watching a Kubernetes release."""
LOCAL_POLL_S = 0.5
"""Seconds between reads of the state store while watching a local release run elsewhere."""


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.command("down")(down)
    app.add_typer(rollout_app, name="rollout")


def _state_base() -> Path:
    return state_dir()


def _state_dir(stack: Stack) -> Path:
    return _state_base() / "local" / f"{stack.name}-{stack.environment}"


def _kubernetes(
    file: Path, env: str, database_url: str | None, kubeconfig: Path | None, context: str | None
) -> ArgoReleases:
    """Releases on the cluster the kubeconfig names, recorded in the state store."""
    from ..rollout._argo_releases import ArgoReleases  # noqa: PLC0415 - the client is slow to import
    from ..rollout.targets.kubernetes import ArgoRolloutsDriver, load_api_client  # noqa: PLC0415

    stack = read_spec(file).stack(env)
    client = load_api_client(str(kubeconfig) if kubeconfig else None, context)
    return ArgoReleases(open_sessions(database_url), stack, ArgoRolloutsDriver(client))


def _controller(file: Path, env: str, database_url: str | None, watch: bool) -> tuple[Controller, Any]:
    from ..rollout.targets.local import LocalTarget  # noqa: PLC0415 - only releases need HAProxy's side

    stack = read_spec(file).stack(env)
    sessions = open_sessions(database_url)
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
    console.print(f"release {rollout_id}: {outcome}" + (f" ({escape(state.reason)})" if state.reason else ""))
    if outcome != "succeeded":
        raise typer.Exit(1)


def deploy(
    service: Annotated[str, typer.Argument(help="The service to release.")],
    version: Annotated[str, typer.Option("--version", "-v", help="The version to release.")],
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="blue-green or canary (default: the spec's).")
    ] = None,
    watch: WatchOption = False,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach", "-d", help="local: run the release in the background; return once it is recorded."
        ),
    ] = False,
    target: TargetOption = TargetName.local,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
) -> None:
    """Release a new version of a service with the spec's strategy; roll back by itself if it is bad."""
    if strategy not in (None, "blue-green", "canary"):
        raise UserError(f"--strategy {strategy!r}: use blue-green or canary")
    if target is TargetName.kubernetes:
        if detach:
            raise UserError(
                "--detach is for the local target: on kubernetes, Argo Rollouts runs the release and"
                " `shipyard deploy` returns once it is applied (add --watch to follow it)"
            )
        _deploy_kubernetes(service, version, strategy, watch, file, env, database_url, kubeconfig, context)
        return
    _kube_options_need_kubernetes(context, kubeconfig)
    if detach:
        if watch:
            raise UserError(
                f"--detach and --watch exclude each other; follow a detached release with"
                f" `shipyard rollout status {service} --watch`"
            )
        _deploy_detached(service, version, strategy, file, env, database_url)
        return
    controller, view = _controller(file, env, database_url, watch)
    rollout_id = controller.begin(service, version, actor(), strategy)  # type: ignore[arg-type]
    console.print(f"release {rollout_id}: {service} {version}")
    _run(controller, view, rollout_id)


def down(
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be stopped; stop nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Stop even while a release's lease is held (its controller died).")
    ] = False,
    database_url: DatabaseOption = None,
) -> None:
    """local: stop every app process of the stack and its HAProxy (the releases stay recorded).

    Refused while a controller still runs a release of the stack (abort it or let it finish), unless
    --force: for a controller that was killed and whose lease has not expired yet.
    """
    from ..rollout.targets.local import LocalTarget  # noqa: PLC0415 - only the local target needs it

    stack = read_spec(file).stack(env)
    sessions = open_sessions(database_url)
    busy = [name for name in stack.services if holder(sessions, lock_name(name)) is not None]
    if busy and not force:
        raise UserError(
            f"a release of {', '.join(busy)} is running: `shipyard rollout abort {busy[0]}` or let it"
            " finish before `shipyard down`"
        )
    state_dir = _state_dir(stack)
    if not state_dir.is_dir():
        console.print(f"nothing runs for {stack.name} ({stack.environment}) here")
        return
    target = LocalTarget(stack, state_dir, workdir=file.resolve().parent)
    running = [i.name for i in target.supervisor.list() if i.alive]
    if dry_run:
        console.print(f"would stop HAProxy and {len(running)} process(es): {', '.join(running) or 'none'}")
        return
    record_audit(
        sessions, actor=actor(), action="down", target_kind="stack", target=stack.name,
        after={"environment": stack.environment, "processes": running}, outcome="started",
    )  # fmt: skip
    target.destroy()
    record_audit(
        sessions, actor=actor(), action="down", target_kind="stack", target=stack.name,
        after={"environment": stack.environment, "processes": running},
    )  # fmt: skip
    console.print(f"stopped HAProxy and {len(running)} process(es) of {stack.name} ({stack.environment})")


def _kube_options_need_kubernetes(context: str | None, kubeconfig: Path | None) -> None:
    if context is not None or kubeconfig is not None:
        raise UserError("--context and --kubeconfig are for --target kubernetes")


def _deploy_detached(
    service: str, version: str, strategy: str | None, file: Path, env: str, database_url: str | None
) -> None:
    """Start `deploy` in a process of its own and return once it has recorded the release."""
    read_spec(file).stack(env)  # a bad spec or environment is reported here, not in a log
    sessions = open_sessions(database_url)
    after = last_release_id(sessions)
    argv = [
        sys.executable,
        "-c",
        "import sys; from shipyard.cli import main; main(sys.argv[1:])",
        "deploy",
        service,
        "--version",
        version,
        *(["--strategy", strategy] if strategy else []),
        "--file",
        str(file.resolve()),
        "--env",
        env,
    ]
    child_env = dict(os.environ)
    if database_url:  # through the environment: a URL may hold a password, argv is world-readable
        child_env["SHIPYARD_DATABASE_URL"] = database_url
    detached = spawn(argv, _state_base() / "rollouts", child_env)
    rollout_id = wait_recorded(sessions, detached, service, version, after)
    console.print(
        f"release {rollout_id}: {service} {version}, running in the background (pid {detached.process.pid})"
    )
    console.print(f"  follow it: shipyard rollout status {service} --watch")
    console.print(f"  its output: {escape(str(detached.log))}")


def _deploy_kubernetes(
    service: str,
    version: str,
    strategy: str | None,
    watch: bool,
    file: Path,
    env: str,
    database_url: str | None,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    releases = _kubernetes(file, env, database_url, kubeconfig, context)
    rollout_id = releases.deploy(service, version, actor(), strategy)
    row = releases.latest(service)
    objects = ", ".join((row.state.get("kubernetes") or {}).get("objects") or [])
    console.print(f"release {rollout_id}: {service} {version} applied to {releases.namespace} ({objects})")
    if not watch:
        console.print(
            f"  Argo Rollouts runs it; follow it:"
            f" shipyard rollout status {service} --target kubernetes --watch"
        )
        return
    _watch_kubernetes(releases, service, rollout_id)


def _watch_kubernetes(releases: ArgoReleases, service: str, rollout_id: int) -> None:
    """Print each change of the Rollout's status until the release ends; exit 1 unless it succeeded."""
    last: list[str] = []

    def show(row: RolloutRow, status: RolloutStatus) -> None:
        line = _kube_line(status)
        if line not in last:
            last[:] = [line]
            console.print(f"  {escape(line)}")

    try:
        row = releases.watch(rollout_id, show, KUBE_POLL_S)
    except KeyboardInterrupt:
        console.print(
            f"stopped watching; release {rollout_id} goes on in the cluster:"
            f" `shipyard rollout status {service} --target kubernetes --watch` follows it again"
        )
        raise typer.Exit(130) from None
    _ended(row)


def _kube_line(status: RolloutStatus) -> str:
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


def _ended(row: RolloutRow) -> None:
    outcome = row.outcome or "finished"
    console.print(f"release {row.id}: {outcome}" + (f" ({escape(row.reason)})" if row.reason else ""))
    if outcome != "succeeded":
        raise typer.Exit(1)


def _refuse_other_target(sessions: sessionmaker[Session], service: str, target: TargetName) -> None:
    """A local verb must not queue commands for a release that runs on Kubernetes, nor resume it."""
    row = latest_release(sessions, service)
    if row is not None and row.target != target.value:
        raise UserError(f"release {row.id} of {service!r} runs on {row.target}: add `--target {row.target}`")


def _command(command: str, service: str, file: Path, env: str, database_url: str | None, watch: bool) -> None:
    sessions = open_sessions(database_url)
    _refuse_other_target(sessions, service, TargetName.local)
    rollout_id, running = steer_release(sessions, service, command, actor())  # type: ignore[arg-type]
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


def _kube_command(
    command: str,
    service: str,
    watch: bool,
    file: Path,
    env: str,
    database_url: str | None,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    if command == "rollback":
        raise UserError(
            f"rollback is not supported on kubernetes yet: during a release, `shipyard rollout abort"
            f" {service} --target kubernetes` sends all traffic back to the stable version; after one,"
            f" release the previous version again with `shipyard deploy {service} --version PREVIOUS"
            f" --target kubernetes`"
        )
    releases = _kubernetes(file, env, database_url, kubeconfig, context)
    row, status = releases.command(service, command, actor())  # type: ignore[arg-type]
    console.print(f"{command}: release {row.id} of {service}: {escape(_kube_line(status))}")
    if command == "resume" and status.pause_reasons:
        console.print(
            f"  still paused by {', '.join(status.pause_reasons)}: `shipyard rollout promote {service}"
            f" --target kubernetes` goes on"
        )
    if watch:
        _watch_kubernetes(releases, service, row.id)


def _make_command(name: str, help_text: str) -> None:
    def command(
        service: Annotated[str, typer.Argument(help="The service whose release to steer.")],
        watch: WatchOption = False,
        target: TargetOption = TargetName.local,
        context: ContextOption = None,
        kubeconfig: KubeconfigOption = None,
        file: SpecOption = DEFAULT_SPEC,
        env: NamedEnvOption = "production",
        database_url: DatabaseOption = None,
    ) -> None:
        if target is TargetName.kubernetes:
            _kube_command(name, service, watch, file, env, database_url, kubeconfig, context)
        else:
            _kube_options_need_kubernetes(context, kubeconfig)
            _command(name, service, file, env, database_url, watch)

    command.__doc__ = help_text
    rollout_app.command(name)(command)


for _name, _help in (
    ("promote", "Skip the remaining steps: the new version takes all traffic."),
    ("abort", "Stop the release: all traffic back to the stable version, the new one stopped."),
    ("pause", "Hold the release at its current weights (analysis goes on)."),
    ("retry", "Start a failed, aborted or rolled-back release again."),
    ("rollback", "Switch back to the previous version at once while it is still warm (local target only)."),
):
    _make_command(_name, _help)


@rollout_app.command("resume")
def resume(
    service: Annotated[str, typer.Argument(help="The service whose release to carry on.")],
    watch: WatchOption = False,
    target: TargetOption = TargetName.local,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
) -> None:
    """Carry on a paused release, or one whose controller was stopped or killed."""
    if target is TargetName.kubernetes:
        _kube_command("resume", service, watch, file, env, database_url, kubeconfig, context)
        return
    _kube_options_need_kubernetes(context, kubeconfig)
    sessions = open_sessions(database_url)
    _refuse_other_target(sessions, service, TargetName.local)
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
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", "-w", help="Follow the release of SERVICE until it ends (exit 1 unless it succeeds)."
        ),
    ] = False,
    target: Annotated[
        TargetName | None,
        typer.Option(
            "--target",
            "-t",
            help="Only this target's releases; kubernetes: read each one's Rollout from the cluster.",
        ),
    ] = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """The latest release of each service: phase, weights, and its last analysis."""
    if watch and service is None:
        raise UserError("--watch follows one release: name its SERVICE")
    if target is TargetName.kubernetes:
        releases = _kubernetes(file, env, database_url, kubeconfig, context)
        if service is not None and watch:
            _watch_kubernetes(releases, service, releases.latest(service).id)
            return
        rows = [
            releases.refresh(row.id)[0] if row.finished_at is None else row
            for row in _latest_rows(releases.sessions, service, "kubernetes")
        ]
    else:
        _kube_options_need_kubernetes(context, kubeconfig)
        sessions = open_sessions(database_url)
        if service is not None and watch:
            _watch_local(sessions, service)
            return
        rows = _latest_rows(sessions, service, target.value if target else None)
    data = [_row_data(row) for row in rows]
    if emit(data, output):
        return
    if not data:
        console.print("no releases yet")
        return
    table = Table(title="releases", title_justify="left")
    for column in (
        "service",
        "id",
        "target",
        "stable → candidate",
        "strategy",
        "phase",
        "weights",
        "outcome / reason",
    ):
        table.add_column(column)
    for item in data:
        weights = item["weights"]
        table.add_row(
            item["service"],
            str(item["id"]),
            item["target"],
            f"{item['stable'] or '-'} → {item['candidate']}",
            item["strategy"],
            item["phase"],
            f"{weights.get('stable', '-')}/{weights.get('candidate', '-')}" if weights else "-",
            " ".join(filter(None, [item["outcome"], item["reason"]])) or "-",
        )
    console.print(table)


def _latest_rows(
    sessions: sessionmaker[Session], service: str | None, target: str | None
) -> list[RolloutRow]:
    """The newest release of each service (or of `service`), of one target or any."""
    with sessions() as session:
        query = select(RolloutRow).order_by(RolloutRow.id.desc())
        if service:
            query = query.where(RolloutRow.service == service)
        if target:
            query = query.where(RolloutRow.target == target)
        latest: dict[str, RolloutRow] = {}
        for row in session.scalars(query):
            latest.setdefault(row.service, row)
    return list(latest.values())


def _watch_local(sessions: sessionmaker[Session], service: str, orphan_after_s: float = 3.0) -> None:
    """Follow a local release another process runs (e.g. `deploy --detach`) through the store."""
    row = latest_release(sessions, service)
    if row is None:
        raise UserError(f"{service!r} has never been released")
    if row.target != TargetName.local.value:
        raise UserError(f"release {row.id} of {service!r} runs on {row.target}: add `--target {row.target}`")
    view = _Progress(live=False)
    unattended_since: float | None = None
    try:
        while row.finished_at is None:
            view.update(RolloutState.from_data(row.state))
            if holder(sessions, lock_name(service)) is None:
                # Between its steps a controller always holds the lease: none for a while means
                # the process that ran the release was stopped.
                unattended_since = unattended_since or time.monotonic()
                if time.monotonic() - unattended_since > orphan_after_s:
                    console.print(
                        f"release {row.id} is in phase {row.phase} but no controller runs it:"
                        f" `shipyard rollout resume {service}` carries it on"
                    )
                    raise typer.Exit(1)
            else:
                unattended_since = None
            time.sleep(LOCAL_POLL_S)
            with sessions() as session:
                found = session.get(RolloutRow, row.id)
            assert found is not None
            row = found
    except KeyboardInterrupt:
        console.print(f"stopped watching; release {row.id} goes on")
        raise typer.Exit(130) from None
    view.update(RolloutState.from_data(row.state))  # where it ended
    _ended(row)


def _row_data(row: RolloutRow) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if row.target == TargetName.kubernetes.value:
        # Argo's controller runs these: the state is the Rollout's last status, not a strategy's.
        kube = dict((row.state or {}).get("kubernetes") or {})
        last = kube.get("status") or {}
        weights = last.get("weights") or {}
        extra["kubernetes"] = {
            "namespace": kube.get("namespace"),
            "objects": kube.get("objects") or [],
            "phase": last.get("phase"),
            "step": last.get("step_index"),
            "steps": last.get("step_count"),
            "paused": last.get("paused"),
            "aborted": last.get("aborted"),
            "message": last.get("message"),
        }
    else:
        state = RolloutState.from_data(row.state)
        weights = {"stable": state.weights.stable, "candidate": state.weights.candidate}
    return {
        "id": row.id,
        "service": row.service,
        "environment": row.environment,
        "target": row.target,
        "strategy": row.strategy,
        "stable": row.stable,
        "candidate": row.candidate,
        "phase": row.phase,
        "weights": weights,
        "outcome": row.outcome,
        "reason": row.reason,
        "actor": row.actor,
        "started": row.created_at.isoformat(),
        "finished": row.finished_at.isoformat() if row.finished_at else None,
        **extra,
    }


@rollout_app.command("history")
def history(
    service: Annotated[str, typer.Argument(help="The service.")],
    steps: Annotated[int | None, typer.Option("--steps", help="Show every step of this release.")] = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Past releases of a service and how each ended (with the check that rolled it back)."""
    sessions = open_sessions(database_url)
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
