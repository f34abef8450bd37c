"""`shipyard deploy|down` and `shipyard rollout status|promote|abort|pause|resume|retry|rollback|history`.

Each command parses its options, calls the release verbs of `shipyard.ops` (`ops._releases`) and
shows what they return: a live panel, progress lines, tables, or `-o json|yaml`. `--target local`
(the default) runs shipyard's controller here (`--detach`: in a background process);
`--target kubernetes` applies the release for Argo Rollouts to run and steers it. `--dry-run`
shows what a verb would do and changes nothing.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..errors import ReleaseStopped, ReleaseUnattended, RolloutError, UserError
from ..ops import (
    Deploy,
    Down,
    KubeConnection,
    Promotion,
    ReleaseOutcome,
    ReleasePlan,
    Resume,
    Rollback,
    Steer,
    SteerOutcome,
    Workspace,
    latest_releases,
    promotions,
    refresh_releases,
    refuse_concurrent_release,
    release_history,
    release_steps,
    release_view,
    watch_release,
)
from ..ops import deploy as deploy_release
from ..ops import down as down_stack
from ..ops import resume as resume_release
from ..ops import rollback as rollback_release
from ..ops import steer as steer_release
from ..rollout import RolloutState, last_release_id, recorded_release
from ._app import (
    DEFAULT_SPEC,
    ContextOption,
    DatabaseOption,
    KubeconfigOption,
    NamedEnvOption,
    Output,
    OutputOption,
    SpecOption,
    actor,
    console,
    emit,
    read_sessions,
)
from ._tables import fitted, shown_time, whole, words, wrapped

if TYPE_CHECKING:
    from ..rollout.targets.kubernetes import RolloutStatus

rollout_app = typer.Typer(help="Follow and steer releases.", no_args_is_help=True)

WatchOption = Annotated[
    bool, typer.Option("--watch", "-w", help="Show live progress: step, weights, errors, p99.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be done (release, target, steps); change nothing.")
]
PlanOutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="With --dry-run: the plan as a table, or json or yaml.")
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

KUBE_POLL_S = 2.0
"""Seconds between reads of a Rollout's status while watching a Kubernetes release."""
LOCAL_POLL_S = 0.5
"""Seconds between reads of the state store while watching a local release run elsewhere."""
COMMAND_WAIT_S = 30.0
"""How long a steering command waits for the controller running the release to apply it."""


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.command("down")(down)
    app.add_typer(rollout_app, name="rollout")


SteerEnvOption = Annotated[
    str | None,
    typer.Option(
        "--env", "-e", help="The environment whose release to act on (default: the newest release of any)."
    ),
]


def _workspace(file: Path, env: str | None, database_url: str | None) -> Workspace:
    """The workspace of the spec and environment; the spec is read when a verb needs it (steering a
    release that a controller runs needs none). No environment: production's stack, and steering
    acts on the service's newest release in any environment."""
    return Workspace(
        spec_path=file,
        environment=env or "production",
        database_url=database_url,
        actor=actor(),
        any_environment=env is None,
    )


def _kube(target: TargetName | None, context: str | None, kubeconfig: Path | None) -> KubeConnection | None:
    if target is TargetName.kubernetes:
        return KubeConnection(str(kubeconfig) if kubeconfig else None, context)
    if context is not None or kubeconfig is not None:
        raise UserError("--context and --kubeconfig are for --target kubernetes")
    return None


# --- running a local release here ----------------------------------------------------------------


def _run_here(run: Callable[[Callable[[Any], None]], ReleaseOutcome], watch: bool) -> ReleaseOutcome:
    """Run a local release in this process (`run(on_progress)`), showing its progress; stopped, say
    how to carry it on and exit 130."""
    view = _Progress(watch)
    # SIGTERM (e.g. from a supervisor) stops the controller like Ctrl-C: the release stays
    # recorded as it was and `shipyard rollout resume` carries it on.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with view:
            return run(view.update)
    except ReleaseStopped as stopped:
        console.print(escape(stopped.message))
        raise typer.Exit(130) from None


def _ended(rollout_id: int | None, outcome: str | None, reason: str | None) -> None:
    ended = outcome or "finished"
    console.print(f"release {rollout_id}: {ended}" + (f" ({escape(reason)})" if reason else ""))
    if ended != "succeeded":
        raise typer.Exit(1)


def _show_plan(plan: ReleasePlan | None, output: Output) -> None:
    """A dry run's plan: what would be done, in order; exit 2 when it would be refused."""
    assert plan is not None
    if not emit(plan.model_dump(mode="json"), output):
        which = f"release {plan.rollout_id}" if plan.rollout_id is not None else "a new release"
        console.print(
            f"dry run: {plan.verb} {plan.service} ({which}, {plan.target}, {plan.environment});"
            " nothing is changed"
        )
        if plan.candidate is not None:
            console.print(f"  {plan.stable or '(none)'} → {plan.candidate} ({plan.strategy})")
        for number, action in enumerate(plan.actions, 1):
            console.print(f"  {number}. {escape(action)}")
        if plan.refused:
            console.print(f"  would be refused: {escape(plan.refused)}")
    if plan.refused:
        raise typer.Exit(2)


# --- deploy and down -------------------------------------------------------------------------------


def _deploy_as_job(ws: Workspace, request: Deploy, timeout_s: float = 60.0) -> None:
    """`deploy --detach`: the release runs as a job (listed in /jobs and the dashboard like the
    API's), in a session of its own; return once it has recorded the release."""
    from ..jobs import JobRunner  # noqa: PLC0415 - only --detach starts a job from the CLI

    runner = JobRunner(
        ws.sessions,
        spec=ws.spec_path,
        environment=ws.environment,
        database_url=ws.database_url,
        log_dir=ws.job_logs(),
    )
    after = last_release_id(ws.sessions)
    job_id = runner.start(request, ws.actor)
    pid, log = runner.process(job_id)
    deadline = time.monotonic() + timeout_s
    while (rollout_id := recorded_release(ws.sessions, request.service, request.version, after)) is None:
        view = runner.get(job_id)
        if view.state != "running":  # it ended without recording one: a refused release
            error = UserError if view.exit_code == 2 else RolloutError
            raise error(view.summary or f"job {job_id} ended with {view.exit_code}; see {log}")
        if time.monotonic() > deadline:
            raise RolloutError(
                f"job {job_id} (pid {pid}) has not recorded the release after {timeout_s:.0f} s; see {log}"
            )
        time.sleep(0.1)
    console.print(
        f"release {rollout_id}: {request.service} {request.version}, running in the background"
        f" as job {job_id} (pid {pid})"
    )
    console.print(f"  follow it: shipyard rollout status {request.service} --watch")
    console.print(f"  its output: {escape(str(log))}")


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
    dry_run: DryRunOption = False,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
    output: PlanOutputOption = Output.table,
) -> None:
    """Release a new version of a service with the spec's strategy; roll back by itself if it is bad."""
    if strategy not in (None, "blue-green", "canary"):
        raise UserError(f"--strategy {strategy!r}: use blue-green or canary")
    kube = _kube(target, context, kubeconfig)
    if detach and target is TargetName.kubernetes:
        raise UserError(
            "--detach is for the local target: on kubernetes, Argo Rollouts runs the release and"
            " `shipyard deploy` returns once it is applied (add --watch to follow it)"
        )
    if detach and watch:
        raise UserError(
            f"--detach and --watch exclude each other; follow a detached release with"
            f" `shipyard rollout status {service} --watch`"
        )
    ws = Workspace.open(file, env, database_url=database_url, actor=actor())
    request = Deploy(
        service=service,
        version=version,
        strategy=strategy,
        target=target.value,
        dry_run=dry_run,
    )
    if dry_run:
        _show_plan(deploy_release(ws, request, kube=kube).plan, output)
        return
    if detach:
        refuse_concurrent_release(ws, service)  # at once, not after the job has started
        _deploy_as_job(ws, request)
        return
    if target is TargetName.kubernetes:
        applied = deploy_release(ws, request, kube=kube)
        kubernetes = release_view(ws, service, steps=False).kubernetes
        namespace = kubernetes.namespace if kubernetes else "?"
        objects = ", ".join(kubernetes.objects if kubernetes else ())
        console.print(f"release {applied.rollout_id}: {service} {version} applied to {namespace} ({objects})")
        if not watch:
            console.print(
                f"  Argo Rollouts runs it; follow it:"
                f" shipyard rollout status {service} --target kubernetes --watch"
            )
            return
        _watch_kubernetes(ws, service, kube)
        return

    def started(rollout_id: int) -> None:
        console.print(f"release {rollout_id}: {service} {version}")

    from ..jobs import run_recorded_here  # noqa: PLC0415 - the jobs layer only for runs it records

    ended = _run_here(
        lambda progress: run_recorded_here(
            ws, request, lambda: deploy_release(ws, request, on_started=started, on_progress=progress)
        ),
        watch,
    )
    _ended(ended.rollout_id, ended.outcome, ended.reason)


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
    ws = Workspace.open(file, env, database_url=database_url, actor=actor())
    console.print(down_stack(ws, Down(force=force, dry_run=dry_run)).summary())


# --- steering --------------------------------------------------------------------------------------


def _steer(
    command: str,
    service: str,
    watch: bool,
    target: TargetName,
    kube: KubeConnection | None,
    ws: Workspace,
    dry_run: bool,
    output: Output,
    *,
    full: bool = False,
) -> None:
    local = target is TargetName.local
    request = Steer(service=service, command=command, full=full, target=target.value, dry_run=dry_run)
    outcome = steer_release(ws, request, kube=kube, wait_s=COMMAND_WAIT_S if local else 0.0)
    if dry_run:
        _show_plan(outcome.plan, output)
        return
    if not local:
        _show_kube_command(outcome)
        if watch:
            _watch_kubernetes(ws, service, kube)
        return
    if outcome.controller_running:
        said = outcome.applied or "queued; the controller has not picked it up yet"
        console.print(f"{command}{' --full' if full else ''}: {escape(said)}")
        if not outcome.ok:
            raise typer.Exit(2)
        return
    # No controller runs this release: carry it on here, starting with the command.
    carry_on = Resume(service=service, target="local")
    ended = _run_here(
        lambda progress: resume_release(ws, carry_on, unpause=False, on_progress=progress), watch
    )
    _ended(ended.rollout_id, ended.outcome, ended.reason)


def _show_kube_command(outcome: SteerOutcome) -> None:
    said = escape(outcome.applied or "")
    console.print(f"{outcome.command}: release {outcome.rollout_id} of {outcome.service}: {said}")
    if outcome.command == "resume" and outcome.pause_reasons:
        console.print(
            f"  still paused by {', '.join(outcome.pause_reasons)}: `shipyard rollout promote"
            f" {outcome.service} --target kubernetes` goes on"
        )


def _rollback(
    service: str,
    watch: bool,
    target: TargetName,
    kube: KubeConnection | None,
    ws: Workspace,
    dry_run: bool,
    output: Output,
) -> None:
    request = Rollback(service=service, target=target.value, dry_run=dry_run)
    if dry_run:
        _show_plan(rollback_release(ws, request, kube=kube).plan, output)
        return
    if target is TargetName.kubernetes:
        rollback_release(ws, request, kube=kube)  # refused: not supported on kubernetes yet
        return
    from ..jobs import run_recorded_here  # noqa: PLC0415 - the jobs layer only for runs it records

    ended = _run_here(
        lambda progress: run_recorded_here(
            ws, request, lambda: rollback_release(ws, request, on_progress=progress)
        ),
        watch,
    )
    if ended.outcome is None:  # the controller running the release applied it
        console.print(f"rollback: {escape(ended.reason or 'ok')}")
        return
    _ended(ended.rollout_id, ended.outcome, ended.reason)


def _make_command(name: str, help_text: str) -> None:
    def command(
        service: Annotated[str, typer.Argument(help="The service whose release to steer.")],
        watch: WatchOption = False,
        target: TargetOption = TargetName.local,
        context: ContextOption = None,
        kubeconfig: KubeconfigOption = None,
        dry_run: DryRunOption = False,
        file: SpecOption = DEFAULT_SPEC,
        env: SteerEnvOption = None,
        database_url: DatabaseOption = None,
        output: PlanOutputOption = Output.table,
    ) -> None:
        kube = _kube(target, context, kubeconfig)
        ws = _workspace(file, env, database_url)
        if name == "rollback":
            _rollback(service, watch, target, kube, ws, dry_run, output)
        else:
            _steer(name, service, watch, target, kube, ws, dry_run, output)

    command.__doc__ = help_text
    rollout_app.command(name)(command)


for _name, _help in (
    ("abort", "Stop the release: all traffic back to the stable version, the new one stopped."),
    ("pause", "Hold the release at its current weights (analysis goes on)."),
    ("retry", "Start a failed, aborted or rolled-back release again."),
    ("rollback", "Switch back to the previous version at once while it is still warm (local target only)."),
):
    _make_command(_name, _help)


@rollout_app.command("promote")
def promote(
    service: Annotated[str, typer.Argument(help="The service whose release to promote.")],
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Skip every remaining step (weights, analyses, pauses): the new version takes all"
            " traffic at once; only the warm hold and retiring the old version are left.",
        ),
    ] = False,
    watch: WatchOption = False,
    target: TargetOption = TargetName.local,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    dry_run: DryRunOption = False,
    file: SpecOption = DEFAULT_SPEC,
    env: SteerEnvOption = None,
    database_url: DatabaseOption = None,
    output: PlanOutputOption = Output.table,
) -> None:
    """Go on to the next step: end the analysis, pause or warm hold the release waits at.

    With --full, skip every remaining step instead: the new version takes all traffic at once (as
    `kubectl argo rollouts promote --full`).
    """
    kube = _kube(target, context, kubeconfig)
    ws = _workspace(file, env, database_url)
    _steer("promote", service, watch, target, kube, ws, dry_run, output, full=full)


@rollout_app.command("resume")
def resume(
    service: Annotated[str, typer.Argument(help="The service whose release to carry on.")],
    watch: WatchOption = False,
    target: TargetOption = TargetName.local,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    dry_run: DryRunOption = False,
    file: SpecOption = DEFAULT_SPEC,
    env: SteerEnvOption = None,
    database_url: DatabaseOption = None,
    output: PlanOutputOption = Output.table,
) -> None:
    """Carry on a paused release, or one whose controller was stopped or killed."""
    kube = _kube(target, context, kubeconfig)
    ws = _workspace(file, env, database_url)
    if target is TargetName.kubernetes:
        _steer("resume", service, watch, target, kube, ws, dry_run, output)
        return
    request = Resume(service=service, target="local", dry_run=dry_run)
    if dry_run:
        _show_plan(resume_release(ws, request).plan, output)
        return
    current = release_view(ws, service, steps=False)
    if current.target == "local" and not current.finished and current.paused_by == "inconclusive":
        console.print(
            f"release {current.id} is paused: {escape(current.detail)}. It keeps analysing; decide with"
            f" `shipyard rollout promote {service}` or `shipyard rollout abort {service}`."
        )
    from ..jobs import run_recorded_here  # noqa: PLC0415 - the jobs layer only for runs it records

    ended = _run_here(
        lambda progress: run_recorded_here(
            ws, request, lambda: resume_release(ws, request, on_progress=progress)
        ),
        watch,
    )
    _ended(ended.rollout_id, ended.outcome, ended.reason)


# --- following -------------------------------------------------------------------------------------


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
    env: SteerEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """The latest release of each service: phase, weights, and its last analysis."""
    if watch and service is None:
        raise UserError("--watch follows one release: name its SERVICE")
    kube = _kube(target, context, kubeconfig)
    if target is TargetName.kubernetes:
        ws = Workspace.open(file, env, database_url=database_url, actor=actor())
        if service is not None and watch:
            _watch_kubernetes(ws, service, kube)
            return
        views = refresh_releases(ws, service=service, kube=kube)
    else:
        if service is not None and watch:
            ws = _workspace(file, env, database_url)
            ws.reads_only = True  # following a release records nothing: no store is made for it
            _watch_local(ws, service)
            return
        views = latest_releases(
            read_sessions(database_url), service=service, target=target.value if target else None
        )
    data = [view.data() for view in views]
    if emit(data, output):
        return
    if not data:
        console.print("no releases yet")
        return
    columns = (
        whole("service"),
        whole("id", justify="right"),
        wrapped("target", drop=2),
        words("stable → candidate"),
        wrapped("strategy", drop=1),
        wrapped("phase"),
        whole("weights"),
        wrapped("outcome / reason", drop=3),
    )
    rows = [
        (
            escape(item["service"]),
            str(item["id"]),
            item["target"],
            escape(f"{item['stable'] or '-'} → {item['candidate']}"),
            item["strategy"],
            item["phase"],
            f"{item['weights'].get('stable', '-')}/{item['weights'].get('candidate', '-')}"
            if item["weights"]
            else "-",
            escape(" ".join(filter(None, [item["outcome"], item["reason"]])) or "-"),
        )
        for item in data
    ]
    console.print(fitted(columns, rows, title="releases"))


def _watch_local(ws: Workspace, service: str) -> None:
    """Follow a local release another process runs (e.g. `deploy --detach`) through the store."""
    current = release_view(ws, service, steps=False)
    view = _Progress(live=False)
    try:
        ended = watch_release(
            ws, service, on_progress=view.update, interval_s=LOCAL_POLL_S, target=TargetName.local.value
        )
    except ReleaseUnattended as unattended:
        console.print(escape(unattended.message))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print(f"stopped watching; release {current.id} goes on")
        raise typer.Exit(130) from None
    _ended(ended.id, ended.outcome, ended.reason)


def _watch_kubernetes(ws: Workspace, service: str, kube: KubeConnection | None) -> None:
    """Print each change of the Rollout's status until the release ends; exit 1 unless it succeeded."""
    from ..rollout.argo import status_line  # noqa: PLC0415 - the Kubernetes client is slow to import

    last: list[str] = []

    def show(status: RolloutStatus) -> None:
        line = status_line(status)
        if line not in last:
            last[:] = [line]
            console.print(f"  {escape(line)}")

    current = release_view(ws, service, steps=False)
    try:
        ended = watch_release(
            ws,
            service,
            on_progress=show,
            interval_s=KUBE_POLL_S,
            target=TargetName.kubernetes.value,
            kube=kube,
        )
    except KeyboardInterrupt:
        console.print(
            f"stopped watching; release {current.id} goes on in the cluster:"
            f" `shipyard rollout status {service} --target kubernetes --watch` follows it again"
        )
        raise typer.Exit(130) from None
    _ended(ended.id, ended.outcome, ended.reason)


@rollout_app.command("history")
def history(
    service: Annotated[str, typer.Argument(help="The service.")],
    steps: Annotated[int | None, typer.Option("--steps", help="Show every step of this release.")] = None,
    file: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Past releases of a service and how each ended (with the check that rolled it back)."""
    sessions = read_sessions(database_url)
    if steps is not None:
        data = [step.data() for step in release_steps(sessions, steps)]
    else:
        chain = promotions(sessions, service)  # the releases `shipyard promote` made, and from where
        data = [
            {**view.data(), "promoted_from": _promoted_from(chain, view.id)}
            for view in release_history(sessions, service, limit=1_000_000)
        ]
    if emit(data, output):
        return
    if steps is not None:
        step_columns = (whole("#", justify="right"), wrapped("action"), wrapped("status"), wrapped("outcome"))
        step_rows = [
            (
                str(item["seq"]),
                escape(_step_action(item["action"])),
                item["status"],
                escape(str((item["outcome"] or {}).get("type", ""))),
            )
            for item in data
        ]
        console.print(fitted(step_columns, step_rows, title=f"steps of release {steps}"))
        return
    columns = (
        whole("id", justify="right"),
        wrapped("environment"),
        words("stable → candidate"),
        wrapped("promoted from", drop=1),
        wrapped("strategy", drop=1),
        wrapped("outcome"),
        wrapped("reason", drop=2),
        whole("started", drop=3),
    )
    rows = [
        (
            str(item["id"]),
            escape(item["environment"]),
            escape(f"{item['stable'] or '-'} → {item['candidate']}"),
            escape(_promoted_text(item["promoted_from"])),
            item["strategy"],
            item["outcome"] or item["phase"],
            escape(item["reason"] or ""),
            shown_time(item["started_at"]),
        )
        for item in data
    ]
    console.print(fitted(columns, rows, title=f"releases of {escape(service)}"))


def _promoted_from(chain: dict[int, Promotion], rollout_id: int) -> dict[str, Any] | None:
    promotion = chain.get(rollout_id)
    return promotion.model_dump(mode="json") if promotion is not None else None


def _promoted_text(promoted_from: dict[str, Any] | None) -> str:
    """`staging #12`: the release of another environment this one promoted; empty for a deploy."""
    return f"{promoted_from['environment']} #{promoted_from['release']}" if promoted_from else ""


def _step_action(action: dict[str, Any]) -> str:
    """A recorded step's action: its type, then its other fields."""
    return f"{action.get('type', '?')} { {k: v for k, v in action.items() if k != 'type'} }"


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
    longest = max(len("version"), len(plan.candidate), len(plan.stable or ""))
    table.add_column("version", no_wrap=True, min_width=longest)  # a version is never cut
    for column in ("weight", "error rate", "p99 ms", "requests (last window)"):
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
