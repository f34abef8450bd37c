"""The `shipyard dr` commands: `failover` and `failback` of a PostgreSQL datastore, and `ha
up|down|status`, which run an `ha: patroni` datastore's etcd, Patroni, HAProxy and failover watcher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..dr import StepResult
from ..errors import DrError
from ..ops import (
    Failback,
    Failover,
    FailoverOutcome,
    HaDown,
    HaOutcome,
    HaUp,
    ShowHa,
    Workspace,
    failback,
    failover,
    ha_down,
    ha_status,
    ha_up,
)
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
)
from ._drills import register_drills
from ._tables import fitted, whole, wrapped

dr_app = typer.Typer(help="Disaster recovery: failover, failback, drills.", no_args_is_help=True)

DatastoreArgument = Annotated[
    str | None,
    typer.Argument(help="The PostgreSQL datastore (default: the one with a standby)."),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
ProxySocketOption = Annotated[
    Path | None,
    typer.Option(
        "--proxy-socket",
        help="HAProxy's admin socket: the TCP proxy the app reaches the database through.",
        dir_okay=False,
    ),
]
ProxyAddressOption = Annotated[
    str | None,
    typer.Option(
        "--proxy-address", help="HOST:PORT of the proxy's database frontend (the health check writes there)."
    ),
]
ProxyBackendOption = Annotated[
    str | None, typer.Option("--proxy-backend", help="The HAProxy backend (default: the datastore's name).")
]
ProxyServersOption = Annotated[
    str,
    typer.Option("--proxy-servers", help="The HAProxy server names of the spec's primary and standby."),
]
AdminUserOption = Annotated[
    str,
    typer.Option(
        "--admin-user",
        envvar="SHIPYARD_PG_ADMIN_USER",
        help="A PostgreSQL superuser (its password from PGPASSWORD or ~/.pgpass).",
    ),
]


ha_app = typer.Typer(
    help="Automatic failover (ha: patroni): run this host's etcd, Patroni nodes, HAProxy and watcher.",
    no_args_is_help=True,
)
HaDatastoreArgument = Annotated[
    str | None,
    typer.Argument(help="The ha: patroni datastore (default: every one of the spec)."),
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`, and the drills' (`dr test`) to the same group."""
    register_drills(dr_app)
    dr_app.add_typer(ha_app, name="ha")
    app.add_typer(dr_app, name="dr")


def _print_plan(outcome: FailoverOutcome, output: Output) -> None:
    if not emit(outcome.data(), output):
        columns = (whole("#", justify="right"), whole("step"), whole("node"), wrapped("what"))
        rows = [
            (str(number), step.kind, escape(step.node), escape(step.detail))
            for number, step in enumerate(outcome.steps, 1)
        ]
        console.print(fitted(columns, rows, title=f"{outcome.action} plan for {outcome.datastore} (dry run)"))
        for problem in outcome.problems:
            console.print(f"[red]blocked:[/] {problem}")
    if outcome.problems:
        raise DrError(
            f"{outcome.action} of {outcome.datastore} would be refused: " + "; ".join(outcome.problems)
        )


def _show_step(output: Output) -> Callable[[StepResult], None]:
    def show(result: StepResult) -> None:
        if output is Output.table:
            colour = "green" if result.outcome == "ok" else "red"
            console.print(
                f"[{colour}]{result.outcome:>6}[/] {result.step.kind:<15} {result.step.node:<8}"
                f" {result.seconds:6.2f}s  {result.note}"
            )

    return show


def _print_report(outcome: FailoverOutcome, output: Output) -> None:
    report = outcome.report
    if report is None or emit(outcome.data(), output):
        return
    console.print(
        f"{report.action} of {report.datastore}: the primary is now {report.primary}"
        f" ({report.primary_address})"
    )
    if report.rto_s is not None:
        target = f" (target {report.rto_target_s} s)" if report.rto_target_s is not None else ""
        console.print(f"RTO: {report.rto_s:.2f} s{target}")
    if report.database_url:
        console.print(f"no proxy given: point the app at {report.database_url}")
    for path in report.kept:
        console.print(f"the replaced data directory is kept in {path}; remove it when no longer needed")


def _run(
    request: Failover | Failback, file: Path, env: str, database_url: str | None, output: Output
) -> None:
    ws = Workspace.open(file, env, database_url=database_url, actor=actor())
    if isinstance(request, Failover):
        outcome = failover(ws, request, on_step=_show_step(output))
    else:
        outcome = failback(ws, request, on_step=_show_step(output))
    if outcome.dry_run:
        _print_plan(outcome, output)
    else:
        _print_report(outcome, output)


def _switch(
    kind: type[Failover] | type[Failback],
    datastore: str | None,
    proxy: tuple[Path | None, str | None, str | None, str],
    admin_user: str,
    dry_run: bool,
) -> Failover | Failback:
    """A failover or failback request from the options both commands take."""
    socket, address, backend, servers = proxy
    return kind(
        datastore=datastore,
        dry_run=dry_run,
        proxy_socket=str(socket) if socket else None,
        proxy_address=address,
        proxy_backend=backend,
        proxy_servers=servers,
        admin_user=admin_user,
    )


@dr_app.command("failover")
def failover_command(
    datastore: DatastoreArgument = None,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
    proxy_socket: ProxySocketOption = None,
    proxy_address: ProxyAddressOption = None,
    proxy_backend: ProxyBackendOption = None,
    proxy_servers: ProxyServersOption = "primary,standby",
    admin_user: AdminUserOption = "postgres",
    dry_run: DryRunOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Promote the standby: fence the primary, promote, repoint the app, prove a write; report the RTO."""
    proxy = (proxy_socket, proxy_address, proxy_backend, proxy_servers)
    _run(_switch(Failover, datastore, proxy, admin_user, dry_run), file, env, database_url, output)


@dr_app.command("failback")
def failback_command(
    datastore: DatastoreArgument = None,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
    proxy_socket: ProxySocketOption = None,
    proxy_address: ProxyAddressOption = None,
    proxy_backend: ProxyBackendOption = None,
    proxy_servers: ProxyServersOption = "primary,standby",
    admin_user: AdminUserOption = "postgres",
    dry_run: DryRunOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Make the spec's primary the primary again: rebuild it as a replica, switch back, rebuild the other."""
    proxy = (proxy_socket, proxy_address, proxy_backend, proxy_servers)
    _run(_switch(Failback, datastore, proxy, admin_user, dry_run), file, env, database_url, output)


# --- dr ha up|down|status ------------------------------------------------------------------------


def _print_ha(outcome: HaOutcome, output: Output) -> None:
    if emit(outcome.data(), output):
        return
    if outcome.dry_run:
        for datastore, files in outcome.rendered.items():
            for name, text in files.items():
                console.rule(f"{datastore}: {name}")
                console.print(text, markup=False, highlight=False)
        console.print(outcome.summary())
        return
    for cluster in outcome.clusters:
        columns = (
            whole("process"),
            wrapped("kind", drop=1),
            whole("address"),
            wrapped("state"),
            whole("pid"),
            wrapped("restarts", justify="right", drop=2),
        )
        rows = [
            (
                escape(process.name),
                process.kind,
                escape(process.address),
                "elsewhere" if not process.here else ("running" if process.alive else "stopped"),
                str(process.pid) if process.pid else "-",
                str(process.restarts),
            )
            for process in cluster.processes
        ]
        console.print(fitted(columns, rows, title=f"{cluster.datastore}: processes on this host"))
        if cluster.members:
            member_columns = (
                whole("member"),
                wrapped("role"),
                wrapped("state"),
                whole("address"),
                wrapped("timeline", justify="right", drop=2),
                whole("lag", justify="right", drop=1),
            )
            member_rows = [
                (
                    escape(m.name),
                    m.role,
                    m.state,
                    f"{m.host}:{m.port}",
                    str(m.timeline or "-"),
                    "-" if m.lag is None else f"{m.lag} B",
                )
                for m in cluster.members
            ]
            console.print(fitted(member_columns, member_rows, title=f"{cluster.datastore}: Patroni's view"))
        for route, servers in cluster.routes.items():
            shown = ", ".join(f"{server} {state}" for server, state in servers.items())
            console.print(f"HAProxy {route}: {shown}")
    console.print(outcome.summary())


def _show_action(output: Output) -> Callable[[str], None] | None:
    if output is not Output.table:
        return None
    return lambda message: console.print(f"[dim]…[/] {message}", highlight=False)


@ha_app.command("up")
def ha_up_command(
    datastore: HaDatastoreArgument = None,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", help="Run the failover watcher (notifies dr.failover).")
    ] = True,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print each patroni.yml, etcd's command, haproxy.cfg; start nothing."),
    ] = False,
    output: OutputOption = Output.table,
) -> None:
    """Start this host's etcd (authentication on), Patroni nodes, HAProxy and failover watcher.

    Passwords come from the environment (each patroni *_password reference); none is written.
    Processes already running are kept. Exits 1 unless every node runs and there is a leader."""
    ws = Workspace.open(file, env, database_url=database_url, actor=actor())
    request = HaUp(datastore=datastore, dry_run=dry_run, watch=watch)
    outcome = ha_up(ws, request, on_action=_show_action(output))
    _print_ha(outcome, output)
    if not outcome.ok:
        raise typer.Exit(1)


@ha_app.command("down")
def ha_down_command(
    datastore: HaDatastoreArgument = None,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what runs here; stop nothing.")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Stop this host's watcher, HAProxy, replicas, leader and etcd; data directories stay."""
    ws = Workspace.open(file, env, database_url=database_url, actor=actor())
    outcome = ha_down(ws, HaDown(datastore=datastore, dry_run=dry_run), on_action=_show_action(output))
    _print_ha(outcome, output)


@ha_app.command("status")
def ha_status_command(
    datastore: HaDatastoreArgument = None,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Each process here, Patroni's view of each node, HAProxy's of each route. Exits 1 when unhealthy."""
    ws = Workspace.open(file, env, database_url=database_url, actor=actor())
    outcome = ha_status(ws, ShowHa(datastore=datastore))
    _print_ha(outcome, output)
    if not outcome.ok:
        raise typer.Exit(1)
