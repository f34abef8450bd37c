"""`shipyard backup full|database|files|redis|list|show|verify|prune`, `shipyard restore ...`."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from ..backup import (
    BackupProgress,
    BackupSet,
    RestoreResult,
    get_set,
    list_sets,
    plan_backup,
    plan_restore,
    prune,
    restore_database,
    restore_files,
    restore_redis,
    retention_plan,
    run_backup,
    verify_set,
)
from ..errors import UserError
from ..spec import Stack
from ..state import open_engine, session_factory
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

backup_app = typer.Typer(help="Take, list, verify and prune backup sets.", no_args_is_help=True)
restore_app = typer.Typer(
    help="Restore a backup set into scratch servers or over the live data.", no_args_is_help=True
)

EnvOption = Annotated[
    str | None, typer.Option("--env", "-e", help="The environment (default: the only one, else production).")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would be done; change nothing.")]
JobsOption = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, help="Parallel pg_dump/pg_restore jobs.")
]
SetOption = Annotated[
    str | None, typer.Option("--set", help="The backup set (default: the newest restorable).")
]
IntoOption = Annotated[
    str, typer.Option("--into", help="scratch: new servers/directory; live: over the live data.")
]
YesOption = Annotated[bool, typer.Option("--yes", help="Confirm overwriting live data (--into live).")]
TargetDirOption = Annotated[
    Path | None,
    typer.Option("--target-dir", help="Where a scratch restore puts its data (default: a temp dir)."),
]
PortOption = Annotated[
    int | None, typer.Option("--port", help="Port of the scratch server (default: a free one).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.add_typer(restore_app, name="restore")


def _stack(file: Path, env: str | None) -> Stack:
    spec = read_spec(file)
    if env is None:
        env = spec.environments[0] if len(spec.environments) == 1 else "production"
    return spec.stack(env)


def _sessions(database_url: str | None) -> sessionmaker[Session]:
    return session_factory(open_engine(database_url))


@contextmanager
def _progress(show: bool) -> Iterator[tuple[Any, Any]]:
    """A Rich progress display fed by restic's progress, one bar per artefact."""
    if not show:
        yield None, None
        return
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=console
    )
    tasks: dict[str, TaskID] = {}

    def on_progress(name: str, update: BackupProgress) -> None:
        if name not in tasks:
            tasks[name] = progress.add_task(f"upload {name}", total=max(update.total_bytes, 1))
        progress.update(tasks[name], completed=update.bytes_done, total=max(update.total_bytes, 1))

    def on_phase(phase: str) -> None:
        name, _, step = phase.rpartition(":")
        if step == "done" and name in tasks:  # restic's last report may come before the end
            task = progress.tasks[tasks[name]]
            progress.update(tasks[name], completed=task.total)
        elif step != "done":
            progress.console.print(f"  {phase}")

    with progress:
        yield on_progress, on_phase


def _take(
    kind: str,
    file: Path,
    env: str | None,
    dry_run: bool,
    database_url: str | None,
    output: Output,
    jobs: int | None,
) -> None:
    stack = _stack(file, env)
    base_dir = file.resolve().parent
    if dry_run:
        plan = plan_backup(stack, kind, base_dir)
        if emit(plan, output):
            return
        console.print(f"would back up ({kind}) {stack.name} ({stack.environment}) into {plan['repository']}:")
        for artefact in plan["artefacts"]:
            console.print(f"  {artefact['name']}  from {artefact['from']}")
        for problem in plan["missing_tools"]:
            console.print(f"  [red]{problem}[/]")
        if plan["missing_tools"]:
            raise typer.Exit(1)
        return
    sessions = _sessions(database_url)
    # SIGTERM (a supervisor stopping us) ends the backup like Ctrl-C: the set is recorded failed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with _progress(output is Output.table) as (on_progress, on_phase):
        result = run_backup(
            stack,
            kind,
            sessions,
            base_dir=base_dir,
            actor=actor(),
            jobs=jobs,
            on_progress=on_progress,
            on_phase=on_phase,
        )
    if emit(result.as_data(), output):
        return
    console.print(f"backup set [bold]{result.id}[/]: {result.state} ({len(result.artefacts)} artefacts)")
    _artefact_table(result)


def _make_take(kind: str, help_text: str) -> None:
    def command(
        file: SpecOption = DEFAULT_SPEC,
        env: EnvOption = None,
        dry_run: DryRunOption = False,
        jobs: JobsOption = None,
        database_url: DatabaseOption = None,
        output: OutputOption = Output.table,
    ) -> None:
        _take(kind, file, env, dry_run, database_url, output, jobs)

    command.__doc__ = help_text
    backup_app.command(kind)(command)


for _kind, _help in (
    ("full", "Back up every source: PostgreSQL databases, Redis, and file volumes, as one set."),
    ("database", "Back up the PostgreSQL datastores (pg_dump, consistent snapshot)."),
    ("files", "Back up the file volumes (absolute paths on plain hosts)."),
    ("redis", "Back up the Redis datastores (an RDB snapshot over the network)."),
):
    _make_take(_kind, _help)


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _artefact_table(backup_set: BackupSet) -> None:
    table = Table(title=f"artefacts of {backup_set.id}", title_justify="left")
    for column in ("artefact", "snapshot", "size", "added", "facts"):
        table.add_column(column)
    for artefact in backup_set.artefacts:
        if artefact["type"] == "postgres":
            facts = f"LSN {artefact['lsn']}, {len(artefact['row_counts'])} tables"
        elif artefact["type"] == "redis":
            facts = (
                f"{artefact['dbsize'] if artefact['dbsize'] is not None else artefact['dbsize_range']} keys"
            )
        else:
            facts = f"{artefact['files']} files"
        table.add_row(
            artefact["name"],
            artefact["snapshot_id"][:8],
            _size(artefact.get("raw_bytes")),
            _size(artefact.get("data_added")),
            facts,
        )
    console.print(table)


@backup_app.command("list")
def list_command(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment's sets.")] = None,
    stack: Annotated[str | None, typer.Option("--stack", help="Only this stack's sets.")] = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Backup sets, newest first, and whether each can be restored (abandoned ones marked failed)."""
    sets = list_sets(_sessions(database_url), stack=stack, environment=env)
    data = [{k: v for k, v in s.as_data().items() if k not in ("manifest", "verification")} for s in sets]
    if emit(data, output):
        return
    if not sets:
        console.print("no backup sets yet: `shipyard backup full` takes one")
        return
    table = Table(title="backup sets", title_justify="left")
    for column in ("id", "stack", "env", "kind", "state", "restorable", "started", "artefacts", "error"):
        table.add_column(column)
    for s in sets:
        colour = {"verified": "green", "complete": "cyan", "failed": "red"}.get(s.state, "yellow")
        table.add_row(
            s.id, s.stack, s.environment, s.kind, f"[{colour}]{s.state}[/]", "yes" if s.restorable else "no",
            s.started_at.isoformat(timespec="seconds"), str(len(s.artefacts)), (s.error or "")[:80],
        )  # fmt: skip
    console.print(table)


@backup_app.command("show")
def show(
    set_id: Annotated[str, typer.Argument(metavar="ID", help="The backup set.")],
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """One set's manifest: artefacts, snapshots, sizes, checksums, LSN, tool versions, verification."""
    backup_set = get_set(_sessions(database_url), set_id)
    if emit(backup_set.as_data(), output):
        return
    console.print(
        f"set [bold]{backup_set.id}[/] of {backup_set.stack} ({backup_set.environment}): {backup_set.kind},"
        f" {backup_set.state}{' — ' + backup_set.error if backup_set.error else ''}"
    )
    console.print(f"  started {backup_set.started_at.isoformat(timespec='seconds')} by {backup_set.actor}")
    tools = backup_set.manifest.get("tools", {})
    console.print("  tools: " + "; ".join(f"{v}" for v in tools.values()))
    _artefact_table(backup_set)
    if backup_set.verification:
        for check in backup_set.verification.get("checks", []):
            mark = "[green]ok[/]" if check["ok"] else "[red]FAILED[/]"
            console.print(f"  {mark} {check['artefact']}: {check['check']} {check['detail']}".rstrip())


@backup_app.command("verify")
def verify(
    set_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="The set (default: the newest restorable).")
    ] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Verify the newest restorable set.")] = False,
    read_data: Annotated[
        str,
        typer.Option(
            "--read-data-subset", help="How much of the repository's data `restic check` reads back."
        ),
    ] = "10%",
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = None,
    jobs: JobsOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Restore a set into scratch PostgreSQL/Redis/directories and check it against its manifest."""
    if set_id and latest:
        raise UserError("give a set ID or --latest, not both")
    stack = _stack(file, env)
    show_steps = output is Output.table
    result = verify_set(
        _sessions(database_url),
        stack,
        set_id,
        base_dir=file.resolve().parent,
        read_data_subset=read_data,
        jobs=jobs,
        on_step=(lambda text: console.print(f"  {text}")) if show_steps else None,
    )
    if emit(result.as_data(), output):
        return
    checks = (result.verification or {}).get("checks", [])
    console.print(f"set [bold]{result.id}[/]: [green]{result.state}[/] ({len(checks)} checks passed)")


@backup_app.command("prune")
def prune_command(
    dry_run: DryRunOption = False,
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Delete the sets the spec's retention policy no longer keeps (never the newest verified)."""
    stack = _stack(file, env)
    sessions = _sessions(database_url)
    if dry_run:
        plan = retention_plan(sessions, stack)
        data: dict[str, Any] = {"keep": {k: list(v) for k, v in plan.keep.items()}, "drop": list(plan.drop),
                                "ignored": list(plan.ignored), "dry_run": True}  # fmt: skip
    else:
        data = prune(sessions, stack, base_dir=file.resolve().parent, actor=actor()).as_data()
    if emit(data, output):
        return
    verb = "would drop" if dry_run else "dropped"
    for set_id, reasons in data["keep"].items():
        console.print(f"  keep {set_id}: {', '.join(reasons)}")
    for set_id in data["drop"]:
        console.print(f"  [red]{verb}[/] {set_id}")
    for set_id in data["ignored"]:
        console.print(f"  ignored {set_id} (not restorable)")


def _into(value: str) -> str:
    if value not in ("scratch", "live"):
        raise UserError(f"--into {value!r}: use scratch or live")
    return value


def _dry_run_restore(
    database_url: str | None,
    stack: Stack,
    artefact_type: str,
    set_id: str | None,
    name: str | None,
    into: str,
    output: Output,
) -> None:
    plan = plan_restore(_sessions(database_url), stack, artefact_type, set_id=set_id, name=name, into=into)  # type: ignore[arg-type]
    if emit(plan, output):
        return
    console.print(f"would restore {plan['artefact']} of set {plan['set']} ({plan['set_state']}) into {into}")
    if plan["safety_backup"]:
        console.print(f"  after a safety backup ({plan['safety_backup']}) of the live data")


def _report_restore(result: RestoreResult, output: Output) -> None:
    if emit(result.as_data(), output):
        return
    where = ", ".join(f"{k} {v}" for k, v in result.location.items())
    console.print(f"restored {result.artefact} of set {result.set_id} into {result.into}: {where}")
    if result.safety_set:
        console.print(f"  safety backup of what was there before: set {result.safety_set}")
    if result.stop_command:
        console.print(f"  stop it with: {' '.join(result.stop_command)}")


@restore_app.command("database")
def restore_database_command(
    set_id: SetOption = None,
    datastore: Annotated[
        str | None, typer.Option("--datastore", help="Which PostgreSQL datastore of the set.")
    ] = None,
    into: IntoOption = "scratch",
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    target_dir: TargetDirOption = None,
    port: PortOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = None,
    jobs: JobsOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Restore a PostgreSQL dump: a scratch server (left running) or, with --yes, the live database."""
    stack = _stack(file, env)
    if dry_run:
        _dry_run_restore(database_url, stack, "postgres", set_id, datastore, _into(into), output)
        return
    result = restore_database(
        _sessions(database_url), stack, base_dir=file.resolve().parent, actor=actor(), set_id=set_id,
        datastore=datastore, into=_into(into), yes=yes, target_dir=target_dir, port=port, jobs=jobs,  # type: ignore[arg-type]
    )  # fmt: skip
    _report_restore(result, output)


@restore_app.command("redis")
def restore_redis_command(
    set_id: SetOption = None,
    datastore: Annotated[
        str | None, typer.Option("--datastore", help="Which Redis datastore of the set.")
    ] = None,
    into: IntoOption = "scratch",
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    target_dir: TargetDirOption = None,
    port: PortOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Restore a Redis snapshot: a scratch redis-server (left running) or, with --yes, the live keys."""
    stack = _stack(file, env)
    if dry_run:
        _dry_run_restore(database_url, stack, "redis", set_id, datastore, _into(into), output)
        return
    result = restore_redis(
        _sessions(database_url), stack, base_dir=file.resolve().parent, actor=actor(), set_id=set_id,
        datastore=datastore, into=_into(into), yes=yes, target_dir=target_dir, port=port,  # type: ignore[arg-type]
    )  # fmt: skip
    _report_restore(result, output)


@restore_app.command("files")
def restore_files_command(
    set_id: SetOption = None,
    path: Annotated[
        str | None, typer.Option("--path", help="Which volume of the set (its absolute path).")
    ] = None,
    into: IntoOption = "scratch",
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    target_dir: TargetDirOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Restore a file volume: into --target-dir (scratch) or, with --yes, in place of the live directory."""
    stack = _stack(file, env)
    if dry_run:
        _dry_run_restore(database_url, stack, "files", set_id, path, _into(into), output)
        return
    result = restore_files(
        _sessions(database_url), stack, base_dir=file.resolve().parent, actor=actor(), set_id=set_id,
        path=path, into=_into(into), yes=yes, target_dir=target_dir,  # type: ignore[arg-type]
    )  # fmt: skip
    _report_restore(result, output)
