"""The `shipyard dr` commands: `failover` and `failback` of a PostgreSQL datastore."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..dr import (
    Admin,
    DrReport,
    ProxyRoute,
    Step,
    StepResult,
    Topology,
    failback,
    failover,
    plan_failback,
    plan_failover,
    resolve_topology,
)
from ..errors import DrError, UserError
from ..spec import Postgres, Stack
from ..state import open_engine, session_factory
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
    read_spec,
)
from ._drills import register_drills

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


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`, and the drills' (`dr test`) to the same group."""
    register_drills(dr_app)
    app.add_typer(dr_app, name="dr")


def _proxy(
    topology: Topology, socket: Path | None, address: str | None, backend: str | None, servers: str
) -> ProxyRoute | None:
    if socket is None:
        if address is not None:
            raise UserError("--proxy-address needs --proxy-socket (HAProxy's admin socket)")
        return None
    if address is None:
        raise UserError("--proxy-socket needs --proxy-address HOST:PORT (the proxy's database frontend)")
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UserError(f"--proxy-address {address!r}: give HOST:PORT, e.g. 127.0.0.1:6432")
    names = [name.strip() for name in servers.split(",")]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise UserError(f"--proxy-servers {servers!r}: give two different names, PRIMARY,STANDBY")
    return ProxyRoute(
        socket=str(socket),
        backend=backend or topology.datastore,
        servers={"primary": names[0], "standby": names[1]},
        host=host,
        port=int(port_text),
    )


def _print_plan(
    topology: Topology, steps: list[Step], problems: list[str], action: str, output: Output
) -> None:
    data = {
        "action": action,
        "datastore": topology.datastore,
        "dry_run": True,
        "steps": [step.as_dict() for step in steps],
        "problems": problems,
    }
    if not emit(data, output):
        table = Table(title=f"{action} plan for {topology.datastore} (dry run)", title_justify="left")
        for column in ("#", "step", "node", "what"):
            table.add_column(column)
        for number, step in enumerate(steps, 1):
            table.add_row(str(number), step.kind, step.node, step.detail)
        console.print(table)
        for problem in problems:
            console.print(f"[red]blocked:[/] {problem}")
    if problems:
        raise DrError(f"{action} of {topology.datastore} would be refused: " + "; ".join(problems))


def _show_step(output: Output) -> Callable[[StepResult], None]:
    def show(result: StepResult) -> None:
        if output is Output.table:
            colour = "green" if result.outcome == "ok" else "red"
            console.print(
                f"[{colour}]{result.outcome:>6}[/] {result.step.kind:<15} {result.step.node:<8}"
                f" {result.seconds:6.2f}s  {result.note}"
            )

    return show


def _print_report(report: DrReport, output: Output) -> None:
    if emit(report.as_dict(), output):
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
    action: str,
    datastore: str | None,
    file: Path,
    env: str,
    database_url: str | None,
    proxy_socket: Path | None,
    proxy_address: str | None,
    proxy_backend: str | None,
    proxy_servers: str,
    admin_user: str,
    dry_run: bool,
    output: Output,
) -> None:
    stack = read_spec(file).stack(env)
    topology = resolve_topology(stack, datastore)
    proxy = _proxy(topology, proxy_socket, proxy_address, proxy_backend, proxy_servers)
    admin = Admin(user=admin_user, version=_version(stack, topology))
    if dry_run:
        planner = plan_failover if action == "failover" else plan_failback
        steps, problems = planner(topology, proxy, admin)
        _print_plan(topology, steps, problems, action, output)
        return
    sessions = session_factory(open_engine(database_url))
    run = failover if action == "failover" else failback
    report = run(sessions, topology, proxy=proxy, admin=admin, actor=actor(), on_step=_show_step(output))
    _print_report(report, output)


def _version(stack: Stack, topology: Topology) -> str:
    datastore = stack.datastores[topology.datastore]
    return datastore.version if isinstance(datastore, Postgres) else "15"


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
    _run(
        "failover",
        datastore,
        file,
        env,
        database_url,
        proxy_socket,
        proxy_address,
        proxy_backend,
        proxy_servers,
        admin_user,
        dry_run,
        output,
    )


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
    _run(
        "failback",
        datastore,
        file,
        env,
        database_url,
        proxy_socket,
        proxy_address,
        proxy_backend,
        proxy_servers,
        admin_user,
        dry_run,
        output,
    )
