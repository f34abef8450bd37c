"""`shipyard apply` and `shipyard status`: a whole environment on the kubernetes target.

`apply` server-side applies every object the environment renders, in dependency order, waits for
the datastores before the workloads, and shows a progress bar while it does (`--dry-run`: the
API server checks every object and stores nothing). `status` reads back the rollouts, pods
ready, autoscalers, Ingress addresses and CronJobs' last runs. Both call `shipyard.ops`
(`apply_stack`, `stack_status`); `-o json|yaml` prints what they return.

`status` is a top-level verb: `rollout status` is about one service's releases as recorded in
the state store, this is about what runs in the cluster now.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..ops import (
    ApplyStack,
    KubeConnection,
    StackApplied,
    StackStatusView,
    Workspace,
    apply_stack,
    stack_status,
)
from ..rollout.targets.kubernetes_apply import ApplyEvent
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
)

ArgoOption = Annotated[
    bool,
    typer.Option(
        "--argo/--no-argo",
        help="Services as Argo Rollouts Rollouts (as `deploy --target kubernetes`), or Deployments.",
    ),
]


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("status")(status)


def apply(
    env: NamedEnvOption,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="The API server checks every object (dryRun=All); nothing changes."),
    ] = False,
    argo: ArgoOption = True,
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to wait for the datastores to be ready.", min=1)
    ] = 600.0,
    file: SpecOption = DEFAULT_SPEC,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Server-side apply a whole environment to its cluster: datastores ready before workloads."""
    ws = Workspace(spec_path=file, environment=env, database_url=database_url, actor=actor())
    kube = KubeConnection(str(kubeconfig) if kubeconfig else None, context)
    request = ApplyStack(dry_run=dry_run, argo=argo, wait_s=wait)
    if output is not Output.table:
        result = apply_stack(ws, request, kube=kube)
        emit(result.model_dump(mode="json"), output)
        return
    with _progress(console) as on_progress:
        result = apply_stack(ws, request, kube=kube, on_progress=on_progress)
    console.print(applied_table(result))
    console.print(escape(result.summary()))


def status(
    env: NamedEnvOption,
    argo: ArgoOption = True,
    file: SpecOption = DEFAULT_SPEC,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    output: OutputOption = Output.table,
) -> None:
    """What runs in an environment's cluster: rollouts, pods ready, autoscalers, ingress, CronJobs."""
    ws = Workspace(spec_path=file, environment=env, actor=actor())
    kube = KubeConnection(str(kubeconfig) if kubeconfig else None, context)
    view = stack_status(ws, argo=argo, kube=kube)
    if emit(view.model_dump(mode="json"), output):
        return
    console.print(status_tables(view))
    console.print(escape(view.summary()))


@contextmanager
def _progress(out: Console) -> Iterator[Callable[[ApplyEvent], None]]:
    """A progress bar over the objects applied; the line under it says what is being waited for."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    )
    task = progress.add_task("applying", total=None)

    def update(event: ApplyEvent) -> None:
        if event.stage == "applied":
            progress.update(
                task,
                completed=event.index,
                total=event.total,
                description=escape(f"applied {event.kind} {event.name}"),
            )
        else:
            progress.update(
                task,
                description=escape(
                    f"waiting for {event.kind} {event.name}: {event.ready}/{event.desired} ready"
                ),
            )

    with progress:
        yield update


def applied_table(result: StackApplied) -> Table:
    """The objects applied (or accepted by a dry run), in the order they were sent."""
    title = f"{result.environment} → {result.api_server}" + (" (dry run)" if result.dry_run else "")
    table = Table(title=escape(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("kind")
    table.add_column("name", overflow="fold")
    table.add_column("namespace")
    for index, applied in enumerate(result.applied, 1):
        table.add_row(str(index), applied.kind, escape(applied.name), escape(applied.namespace or "-"))
    return table


def status_tables(view: StackStatusView) -> Group:
    """The status for people: one table per section, sections with nothing in them left out."""
    tables: list[Table] = []
    workloads = _table("workloads", "kind", "name", "ready", "updated", "phase", "message")
    for w in view.workloads:
        workloads.add_row(
            w.kind,
            escape(w.name),
            f"{w.ready}/{w.desired}" if w.found else "-",
            "-" if w.updated is None or not w.found else str(w.updated),
            _phase(w.phase),
            escape(w.message) if w.message else "",
        )
    tables.append(workloads)
    if view.autoscalers:
        hpa = _table("autoscalers", "name", "current", "desired", "min", "max")
        for a in view.autoscalers:
            hpa.add_row(
                escape(a.name),
                *(_count(n) if a.found else "missing" for n in (a.current, a.desired, a.minimum, a.maximum)),
            )
        tables.append(hpa)
    if view.ingresses:
        ingress = _table("ingress", "name", "hosts", "addresses")
        for i in view.ingresses:
            addresses = ", ".join(i.addresses) if i.addresses else ("none yet" if i.found else "missing")
            ingress.add_row(escape(i.name), escape(", ".join(i.hosts) or "*"), escape(addresses))
        tables.append(ingress)
    if view.cron_jobs:
        cron = _table("cron jobs", "name", "schedule", "last scheduled", "last succeeded", "active")
        for c in view.cron_jobs:
            if not c.found:
                cron.add_row(escape(c.name), "missing", "-", "-", "-")
                continue
            schedule = escape(c.schedule) + (" (suspended)" if c.suspended else "")
            cron.add_row(
                escape(c.name),
                schedule,
                _when(c.last_schedule_at),
                _when(c.last_successful_at),
                str(c.active),
            )
        tables.append(cron)
    return Group(*tables)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _phase(phase: str) -> str:
    colour = {"Healthy": "green", "Degraded": "red", "Missing": "red", "Paused": "yellow"}.get(phase)
    return f"[{colour}]{phase}[/]" if colour else phase


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _when(value: dt.datetime | None) -> str:
    """RFC 3339 UTC with `Z`, as every time shipyard shows; "never" when there was none."""
    if value is None:
        return "never"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["applied_table", "register", "status_tables"]
