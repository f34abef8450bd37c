"""`shipyard backup full|database|files|redis|incremental|diff|list|show|verify|prune`,
`shipyard backup pitr init|full|incremental|diff|list`, `shipyard restore ...`.

`backup full|database|files|redis` are logical backups (pg_dump, RDB, files) into restic;
`backup incremental|diff` and `backup pitr ...` are pgBackRest's physical backups and WAL archive,
which `restore database --time/--lsn` restores from.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ..backup import (
    BackupKind,
    BackupProgress,
    Into,
    PostgresArtefact,
    RedisArtefact,
    RestoreResult,
    kind_word,
)
from ..errors import UserError
from ..ops import (
    BackupSetView,
    CheckFreshness,
    ImportSets,
    InitPitr,
    PitrWindow,
    Prune,
    Restore,
    RestorePitr,
    StartWalStream,
    StopWalStream,
    TakeBackup,
    TakePitrBackup,
    Verify,
    WalStreamStatus,
    Workspace,
    backup_set,
    backup_sets,
    byte_size,
    check_freshness,
    import_sets,
    init_pitr,
    pitr_window,
    plan_init_pitr,
    plan_restore,
    plan_restore_pitr,
    plan_take_backup,
    plan_take_pitr_backup,
    prune,
    repository_sets,
    restore,
    restore_pitr,
    start_wal_stream,
    stop_wal_stream,
    take_backup,
    take_pitr_backup,
    verify,
    wal_stream_status,
)
from ..spec import BACKUP_WHATS, BackupWhat
from ._app import (
    DEFAULT_SPEC,
    DatabaseOption,
    OneEnvOption,
    Output,
    OutputOption,
    SpecOption,
    actor,
    console,
    console_err,
    emit,
    read_sessions,
)
from ._tables import fitted, shown_time, whole, wrapped

backup_app = typer.Typer(help="Take, list, verify and prune backup sets.", no_args_is_help=True)
restore_app = typer.Typer(
    help="Restore a backup set into scratch servers or over the live data.", no_args_is_help=True
)

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
    int | None,
    typer.Option("--port", min=1, max=65535, help="Port of the scratch server (default: a free one)."),
]


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.add_typer(restore_app, name="restore")


def _workspace(file: Path, env: str | None, database_url: str | None) -> Workspace:
    return Workspace.open(file, env, database_url=database_url, actor=actor())


_SHOWN = {"artefacts"}
"""A set shown alone, as `-o json` has always shown it: its manifest holds the artefacts."""
_LISTED = {"artefacts", *BackupSetView.DETAIL}


def _shown(view: BackupSetView) -> dict[str, Any]:
    return view.model_dump(mode="json", exclude=_SHOWN)


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
    kind: BackupWhat,
    file: Path,
    env: str | None,
    dry_run: bool,
    database_url: str | None,
    output: Output,
    jobs: int | None,
) -> None:
    ws = _workspace(file, env, database_url)
    stack = ws.stack
    request = TakeBackup(what=kind)
    if dry_run:
        plan = plan_take_backup(ws, request)
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
    # SIGTERM (a supervisor stopping us) ends the backup like Ctrl-C: the set is recorded failed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from ..jobs import run_recorded_here  # noqa: PLC0415 - the jobs layer only for runs it records

    with _progress(output is Output.table) as (on_progress, on_phase):
        taken = run_recorded_here(
            ws,
            request,
            lambda: take_backup(ws, request, parallel=jobs, on_progress=on_progress, on_phase=on_phase),
        ).backup_set
    if emit(_shown(taken), output):
        return
    console.print(f"backup set [bold]{taken.id}[/]: {taken.state} ({len(taken.artefacts)} artefacts)")
    _artefact_table(taken)


_TAKE_HELP: dict[BackupWhat, str] = {
    "full": "Back up every source: PostgreSQL databases, Redis, and file volumes, as one set.",
    "database": "Back up the PostgreSQL datastores (pg_dump, consistent snapshot).",
    "files": "Back up the file volumes (absolute paths on plain hosts).",
    "redis": "Back up the Redis datastores (an RDB snapshot over the network).",
}


def _make_take(kind: BackupWhat, help_text: str) -> None:
    def command(
        file: SpecOption = DEFAULT_SPEC,
        env: OneEnvOption = None,
        dry_run: DryRunOption = False,
        jobs: JobsOption = None,
        database_url: DatabaseOption = None,
        output: OutputOption = Output.table,
    ) -> None:
        _take(kind, file, env, dry_run, database_url, output, jobs)

    command.__doc__ = help_text
    backup_app.command(kind)(command)


for _kind in BACKUP_WHATS:
    _make_take(_kind, _TAKE_HELP[_kind])


def _artefact_table(shown: BackupSetView) -> None:
    columns = (
        whole("artefact"),
        whole("snapshot"),
        whole("size", justify="right", drop=3),
        whole("added", justify="right", drop=2),
        wrapped("facts", drop=1),
    )
    rows: list[tuple[str, ...]] = []
    for artefact in shown.manifest.artefacts if shown.manifest else []:
        if isinstance(artefact, PostgresArtefact):
            facts = f"LSN {artefact.lsn}, {len(artefact.row_counts)} tables"
        elif isinstance(artefact, RedisArtefact):
            facts = f"{artefact.expected_keys()} keys"
        else:
            facts = f"{artefact.files} files"
        rows.append(
            (
                escape(artefact.name),
                artefact.snapshot_id[:8],  # restic takes this prefix as the snapshot's id
                byte_size(artefact.raw_bytes),
                byte_size(artefact.data_added),
                facts,
            )
        )
    console.print(fitted(columns, rows, title=f"artefacts of {shown.id}"))


@backup_app.command("list")
def list_command(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment's sets.")] = None,
    stack: Annotated[str | None, typer.Option("--stack", help="Only this stack's sets.")] = None,
    from_repository: Annotated[
        bool,
        typer.Option(
            "--from-repository",
            help="List the sets the restic repository (of -f's spec) holds, from the repository alone.",
        ),
    ] = False,
    file: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Backup sets, newest first, and whether each can be restored (abandoned ones marked failed)."""
    if from_repository:
        ws = _workspace(file, env, database_url)
        ws.reads_only = True  # this listing is for a lost store: it makes none
        _list_repository(ws, output)
        return
    sets = backup_sets(read_sessions(database_url), stack=stack, environment=env)
    if emit([s.model_dump(mode="json", exclude=_LISTED) for s in sets], output):
        return
    if not sets:
        console.print("no backup sets yet: `shipyard backup full` takes one")
        return
    columns = (
        whole("id"),
        wrapped("stack", drop=3),
        wrapped("env", drop=2),
        wrapped("kind"),
        whole("state"),
        wrapped("restorable"),
        whole("started", drop=5),
        wrapped("artefacts", drop=1),
        wrapped("error", drop=4),
    )
    rows = []
    for s in sets:
        colour = {"verified": "green", "complete": "cyan", "failed": "red"}.get(s.state, "yellow")
        rows.append((
            s.id, escape(s.stack), escape(s.environment), s.kind, f"[{colour}]{s.state}[/]",
            escape(_restorable(s)), shown_time(s.started_at), str(len(s.artefacts)), escape(s.error or ""),
        ))  # fmt: skip
    console.print(fitted(columns, rows, title="backup sets"))


def _restorable(view: BackupSetView) -> str:
    """`yes`, `no`, or for a partial set which artefacts: `postgres:db (1 of 2)`."""
    if not view.restorable:
        return "no"
    intact = [a.name for a in view.artefacts if a.intact]
    if len(intact) == len(view.artefacts):
        return "yes"
    return f"{', '.join(intact) or 'none'} ({len(intact)} of {len(view.artefacts)})"


def _list_repository(ws: Workspace, output: Output) -> None:
    listed = repository_sets(ws)
    if emit([s.model_dump(mode="json") for s in listed], output):
        return
    if not listed:
        console.print("the repository holds no set's manifest")
        return
    columns = (
        whole("id"),
        wrapped("kind"),
        whole("finished", drop=3),
        wrapped("artefacts", drop=2),
        wrapped("manifest", drop=1),
        wrapped("state store"),
        wrapped("problem", drop=4),
    )
    rows = [
        (
            s.id,
            s.kind or "-",
            s.finished_at or "-",
            escape(", ".join(s.artefacts)),
            escape(s.manifest_file),
            s.state or "[yellow]not recorded[/]: `shipyard backup import`",
            escape(s.problem or ""),
        )
        for s in listed
    ]
    console.print(fitted(columns, rows, title="sets in the repository"))


@backup_app.command("import")
def import_command(
    set_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ID]...", help="The sets (default: all the store lacks)."),
    ] = None,
    dry_run: DryRunOption = False,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Record in the state store the sets the repository holds and the store lacks (after the state
    store was lost), as `complete`; `shipyard backup verify` them before trusting them again."""
    imported = import_sets(
        _workspace(file, env, database_url), ImportSets(set_ids=tuple(set_ids or ()), dry_run=dry_run)
    )
    if emit(imported.model_dump(mode="json"), output):
        return
    for s in imported.sets:
        console.print(f"  {s.id}: {s.outcome}" + (f" ({s.detail})" if s.detail else ""))
    console.print(imported.summary())
    if any(s.outcome == "damaged" for s in imported.sets):
        raise typer.Exit(1)


@backup_app.command("show")
def show(
    set_id: Annotated[str, typer.Argument(metavar="ID", help="The backup set.")],
    file: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """One set's manifest: artefacts, snapshots, sizes, checksums, LSN, tool versions, verification."""
    shown = backup_set(read_sessions(database_url), set_id)
    if emit(_shown(shown), output):
        return
    console.print(
        f"set [bold]{shown.id}[/] of {shown.stack} ({shown.environment}): {shown.kind},"
        f" {shown.state}{' — ' + shown.error if shown.error else ''}"
    )
    console.print(f"  started {shown_time(shown.started_at)} by {escape(shown.actor)}")
    tools = shown.manifest.tools if shown.manifest else {}
    console.print("  tools: " + "; ".join(f"{v}" for v in tools.values()))
    _artefact_table(shown)
    for check in shown.verification.checks if shown.verification else []:
        mark = "[green]ok[/]" if check.ok else "[red]FAILED[/]"
        console.print(f"  {mark} {check.artefact}: {check.check} {check.detail}".rstrip())


@backup_app.command("verify")
def verify_command(
    set_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="The set (default: the newest restorable).")
    ] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Verify the newest restorable set.")] = False,
    read_data: Annotated[
        str | None,
        typer.Option(
            "--read-data-subset",
            help="How much of the repository's data `restic check` reads back (`10%`, `2/5`, `500M`);"
            " default: the next 1/N of the rotation (backup.read_data_subsets).",
        ),
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Read back every pack of the repository.")] = False,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    jobs: JobsOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Restore a set into scratch PostgreSQL/Redis/directories and check it against its manifest."""
    if set_id and latest:
        raise UserError("give a set ID or --latest, not both")
    if full and read_data:
        raise UserError("give --full or --read-data-subset, not both")
    show_steps = output is Output.table
    from ..jobs import run_recorded_here  # noqa: PLC0415 - the jobs layer only for runs it records

    ws, request = (
        _workspace(file, env, database_url),
        Verify(set_id=set_id or None, read_data="full" if full else read_data),
    )
    outcome = run_recorded_here(
        ws,
        request,
        lambda: verify(
            ws,
            request,
            parallel=jobs,
            on_step=(lambda text: console.print(f"  {text}")) if show_steps else None,
        ),
    )
    verified = outcome.backup_set
    if emit(_shown(verified), output):
        return
    report = verified.verification
    checks = report.checks if report else []
    console.print(f"set [bold]{verified.id}[/]: [green]{verified.state}[/] ({len(checks)} checks passed)")
    if report is not None and report.read_data_subset and "/" in report.read_data_subset:
        console.print(
            f"  read back packs subset {report.read_data_subset}: the rotation reads every pack within"
            f" {outcome.every_pack_read_within} (`--full` reads them all now)"
        )


@backup_app.command("freshness")
def freshness(
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Is each source's newest restorable backup younger than the RPO (`dr.rpo`)? Exit 1 and page if not."""
    ws = _workspace(file, env, database_url)
    # It pages through the store's outbox, but asks about the backups a store holds: with no store
    # here it would page "stale" for backups recorded somewhere else, so it creates none.
    ws.reads_only = True
    checked = check_freshness(ws, CheckFreshness())
    if not emit([s.model_dump(mode="json") for s in checked.sources], output):
        rows = [
            (
                escape(s.source),
                s.newest_set or "-",
                "none" if s.age_s is None else f"{s.age_s:.0f} s",
                f"{s.limit_s:.0f} s",
                "[red]stale[/]" if s.stale else "[green]ok[/]",
            )
            for s in checked.sources
        ]
        columns = (
            whole("source"),
            whole("newest set"),
            whole("age", justify="right"),
            whole("RPO", justify="right"),
            whole(""),
        )
        console.print(fitted(columns, rows))
    if not checked.ok:
        raise typer.Exit(1)


@backup_app.command("prune")
def prune_command(
    dry_run: DryRunOption = False,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Delete the sets the spec's retention policy no longer keeps (never the newest verified)."""
    pruned = prune(_workspace(file, env, database_url), Prune(dry_run=dry_run))
    # A dry run forgets nothing: its output has never had the count.
    data = pruned.model_dump(mode="json", exclude={"forgotten_snapshots"} if dry_run else None)
    if emit(data, output):
        return
    verb = "would drop" if dry_run else "dropped"
    for set_id, reasons in data["keep"].items():
        console.print(f"  keep {set_id}: {', '.join(reasons)}")
    for set_id in data["drop"]:
        console.print(f"  [red]{verb}[/] {set_id}")
    for set_id in data["ignored"]:
        console.print(f"  ignored {set_id} (not restorable)")
    forget = "would forget" if dry_run else "forgot"
    for snapshot in data["snapshots"]:
        console.print(
            f"  [red]{forget}[/] snapshot {snapshot['id'][:8]} of {snapshot['set']}"
            f" ({snapshot['holds']}; {snapshot['reason']})"
        )
    pitr = data["pitr"]
    if pitr is not None and "skipped" in pitr:
        console.print(f"  pitr: {pitr['skipped']}")
    elif pitr is not None:
        verb = "would expire" if dry_run else "expired"
        console.print(f"  pitr stanza {pitr['stanza']} (keeps {pitr['retention_full']} full backups):")
        for label in pitr["keep"]:
            console.print(f"    keep {label}")
        for label in pitr["expire"]:
            console.print(f"    [red]{verb}[/] {label}")


# --- point-in-time recovery (pgBackRest) -------------------------------------------------------

pitr_app = typer.Typer(
    help="PostgreSQL point-in-time recovery: pgBackRest base backups plus the WAL archive.",
    no_args_is_help=True,
)
backup_app.add_typer(pitr_app, name="pitr")

PitrDatastoreOption = Annotated[
    str | None,
    typer.Option("--datastore", help="The PostgreSQL datastore (default: the stack's only one)."),
]


@pitr_app.command("init")
def pitr_init(
    datastore: PitrDatastoreOption = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Restart PostgreSQL (pg_ctl) when archive_mode needs it.")
    ] = False,
    dry_run: DryRunOption = False,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Set up PITR: write pgbackrest.conf, turn on WAL archiving, create the stanza, check it."""
    ws = _workspace(file, env, database_url)
    request = InitPitr(datastore=datastore, restart=restart)
    if dry_run:
        plan = plan_init_pitr(ws, request)
        if emit(plan, output):
            return
        console.print(f"would write {plan['config_path']}:")
        console.print(plan["config"], markup=False)
        console.print(f"would set on PostgreSQL ({plan['data_dir']}) with ALTER SYSTEM:")
        for name, value in plan["postgresql_settings"].items():
            console.print(f"  {name} = {value}", markup=False)
        console.print(
            f"would create stanza {plan['stanza']} in {plan['repository']} and run pgbackrest check"
        )
        return
    initialised = init_pitr(ws, request)
    result = initialised.model_dump(mode="json")
    if not emit(result, output):
        console.print(f"wrote {result['config_path']}")
        console.print(f"stanza [bold]{result['stanza']}[/] in {result['repository']}")
        changed = ", ".join(result["changed"]) or "nothing (already set)"
        console.print(f"PostgreSQL settings changed: {changed}")
        if result["server_log"]:
            console.print(f"PostgreSQL was restarted; its output now goes to {result['server_log']}")
        if result["checked"]:
            console.print("[green]pgbackrest check passed[/]: WAL is archived; take a base backup with "
                          "`shipyard backup pitr full`")  # fmt: skip
    if not initialised.ok:
        console_err.print(
            f"[yellow]not ready:[/] {result['message']}; or rerun `shipyard backup pitr init --restart` "
            "to let shipyard restart it with pg_ctl"
        )
        raise typer.Exit(1)


def _pitr_backup(kind: BackupKind, file: Path, env: str | None, datastore: str | None, dry_run: bool,
                 database_url: str | None, output: Output) -> None:  # fmt: skip
    ws = _workspace(file, env, database_url)
    request = TakePitrBackup(what=kind, datastore=datastore)
    if dry_run:
        plan = plan_take_pitr_backup(ws, request)
        if emit(plan, output):
            return
        would_take = plan["would_take"]
        console.print(f"would take a {kind_word(would_take)} pgBackRest backup of stanza {plan['stanza']}")
        if would_take != kind:
            console.print(
                f"  (no full backup exists yet: pgBackRest would take a full instead of {kind_word(kind)})"
            )
        return
    taken = take_pitr_backup(ws, request)
    if emit(taken.model_dump(mode="json"), output):
        return
    if taken.promoted_to_full:
        console.print(
            "[yellow]no full backup existed[/]: pgBackRest took a full backup "
            f"instead of the requested {kind_word(kind)} one"
        )
    console.print(
        f"{kind_word(taken.kind)} backup [bold]{taken.label}[/] of stanza {taken.stanza}: "
        f"{byte_size(taken.backup_size)} copied, {byte_size(taken.repository_delta)} added to the"
        " repository, "
        f"LSN {taken.start_lsn} → {taken.stop_lsn}, "
        f"restorable from {taken.stopped_at.isoformat(timespec='seconds')}"
    )


def _make_pitr_backup(app: typer.Typer, name: str, kind: BackupKind, help_text: str) -> None:
    def command(
        datastore: PitrDatastoreOption = None,
        dry_run: DryRunOption = False,
        file: SpecOption = DEFAULT_SPEC,
        env: OneEnvOption = None,
        database_url: DatabaseOption = None,
        output: OutputOption = Output.table,
    ) -> None:
        _pitr_backup(kind, file, env, datastore, dry_run, database_url, output)

    command.__doc__ = help_text
    app.command(name)(command)


_INCR_HELP = ("pgBackRest incremental backup (changes since the last backup of any kind); "
              "a full when none exists yet.")  # fmt: skip
_DIFF_HELP = "pgBackRest differential backup (changes since the last full); a full when none exists yet."
_make_pitr_backup(backup_app, "incremental", "incr", _INCR_HELP)
_make_pitr_backup(backup_app, "diff", "diff", _DIFF_HELP)
_make_pitr_backup(pitr_app, "full", "full", "pgBackRest full base backup of the PostgreSQL primary.")
_make_pitr_backup(pitr_app, "incremental", "incr", _INCR_HELP)
_make_pitr_backup(pitr_app, "diff", "diff", _DIFF_HELP)


@pitr_app.command("list")
def pitr_list(
    datastore: PitrDatastoreOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    output: OutputOption = Output.table,
) -> None:
    """pgBackRest backups (times, LSNs, sizes) and the restorable window."""
    listed = pitr_window(_workspace(file, env, None), PitrWindow(datastore=datastore))
    data = listed.model_dump(mode="json")
    if emit(data, output):
        return
    window = data["window"]
    if not data["backups"]:
        console.print(f"stanza {data['stanza']}: no backups yet: `shipyard backup pitr full` takes one")
        return
    console.print(
        f"stanza [bold]{data['stanza']}[/] ({data['status']['message']}): restorable from "
        f"[bold]{window['from']}[/] to [bold]{window['to'] or 'the newest archived WAL'}[/] "
        f"(WAL {window['archive_min']} → {window['archive_max']})"
    )
    columns = (
        whole("label"),
        wrapped("type"),
        whole("started", drop=2),
        whole("restorable from"),
        whole("stop LSN"),
        whole("copied", justify="right", drop=1),
    )
    rows = [
        (
            b["label"],
            b["kind"],
            shown_time(b["started_at"]),
            shown_time(b["stopped_at"]),
            b["stop_lsn"],
            byte_size(b["backup_size"]),
        )
        for b in data["backups"]
    ]
    console.print(fitted(columns, rows, title="pgBackRest backups"))


stream_app = typer.Typer(
    help="pg_receivewal streaming WAL into a spool next to the repository (backup.pitr.stream).",
    no_args_is_help=True,
)
pitr_app.add_typer(stream_app, name="stream")


def _print_stream(data: dict[str, Any]) -> None:
    state = f"[green]running[/] (pid {data['pid']})" if data["running"] else "[yellow]not running[/]"
    slot = "active" if data["slot_active"] else ("idle" if data["slot_exists"] else "missing")
    console.print(f"pg_receivewal: {state}; slot {data['slot']}: {slot} (restart LSN {data['restart_lsn']})")
    if data["wal_status"] in ("unreserved", "lost"):
        console.print(
            f"[red]the slot's WAL is {data['wal_status']}[/]: past max_slot_wal_keep_size the primary"
            " gives it up; `shipyard backup pitr stream start` begins a new one (the archive covers the gap)"
        )
    elif data["safe_wal_size"] is not None:
        behind = byte_size(data["safe_wal_size"])
        console.print(f"the slot may fall {behind} further behind before it is dropped")
    console.print(f"spool {data['spool']}: newest {data['newest_segment'] or '(empty)'}", markup=False)


@stream_app.command("start")
def pitr_stream_start(
    datastore: PitrDatastoreOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Create the replication slot and start pg_receivewal (detached; it reconnects by itself)."""

    started = start_wal_stream(_workspace(file, env, database_url), StartWalStream(datastore=datastore))
    data = started.model_dump(mode="json")
    if not emit(data, output):
        _print_stream(data)


@stream_app.command("stop")
def pitr_stream_stop(
    datastore: PitrDatastoreOption = None,
    drop_slot: Annotated[
        bool, typer.Option("--drop-slot", help="Also drop the slot: the primary stops keeping WAL for it.")
    ] = False,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Stop pg_receivewal (the slot keeps WAL for it on the primary unless --drop-slot)."""

    request = StopWalStream(datastore=datastore, drop_slot=drop_slot)
    stopped = stop_wal_stream(_workspace(file, env, database_url), request)
    if not emit(stopped.model_dump(mode="json"), output):
        console.print("stopped pg_receivewal" if stopped.stopped else "pg_receivewal was not running")


@stream_app.command("status")
def pitr_stream_status(
    datastore: PitrDatastoreOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Whether pg_receivewal runs, its slot, and the newest WAL in the spool."""

    checked = wal_stream_status(_workspace(file, env, None), WalStreamStatus(datastore=datastore))
    data = checked.model_dump(mode="json")
    if not emit(data, output):
        _print_stream(data)
    if not checked.ok:
        raise typer.Exit(1)


def _into(value: str) -> Into:
    for into in get_args(Into):
        if value == into:
            return into  # type: ignore[no-any-return]
    raise UserError(f"--into {value!r}: use scratch or live")


def _restore(
    request: Restore,
    file: Path,
    env: str | None,
    database_url: str | None,
    output: Output,
    *,
    dry_run: bool,
    jobs: int | None = None,
) -> None:
    """`restore WHAT`: the plan (--dry-run), or the restore and where the data now is."""
    ws = _workspace(file, env, database_url)
    what = request.what
    if dry_run:
        plan = plan_restore(ws, request)
        if emit(plan, output):
            return
        restoring = (
            ", ".join(volume["path"] for volume in plan["volumes"]) if what == "volumes" else plan["artefact"]
        )
        console.print(
            f"would restore {restoring} of set {plan['set']} ({plan['set_state']}) into {request.into}"
        )
        if plan["safety_backup"]:
            console.print(f"  after a safety backup ({plan['safety_backup']}) of the live data")
        return
    from ..jobs import run_recorded_here  # noqa: PLC0415 - the jobs layer only for runs it records

    restored = run_recorded_here(ws, request, lambda: restore(ws, request, parallel=jobs)).restored
    if what == "volumes":
        if emit({"restored": [result.as_data() for result in restored]}, output):
            return
        for result in restored:
            _report_restore(result, output)
        return
    _report_restore(restored[0], output)


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
    time: Annotated[
        str | None,
        typer.Option(
            "--time", help="PITR: restore to this moment (ISO 8601 with a zone, e.g. 2026-12-01T02:00:00Z)."
        ),
    ] = None,
    lsn: Annotated[
        str | None, typer.Option("--lsn", help="PITR: restore to this WAL position (e.g. 0/3000060).")
    ] = None,
    latest: Annotated[
        bool,
        typer.Option(
            "--latest", help="PITR: the newest state pgBackRest holds (newest backup + all archived WAL)."
        ),
    ] = False,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    jobs: JobsOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Restore a PostgreSQL dump: a scratch server (left running) or, with --yes, the live database.

    With --time, --lsn or --latest: a physical restore from pgBackRest (backup.pitr) into scratch
    (a file copy and WAL replay: much faster than a dump for a large database)."""
    if time is not None or lsn is not None or latest:
        pitr = RestorePitr(
            datastore=datastore, time=time, lsn=lsn, latest=latest, target_dir=_text(target_dir), port=port
        )
        _restore_pitr(pitr, file, env, set_id, into, database_url, output, dry_run=dry_run)
        return
    request = Restore(
        what="database", set_id=set_id, datastore=datastore, into=_into(into), yes=yes,
        target_dir=_text(target_dir), port=port,
    )  # fmt: skip
    _restore(request, file, env, database_url, output, dry_run=dry_run, jobs=jobs)


def _restore_pitr(
    request: RestorePitr,
    file: Path,
    env: str | None,
    set_id: str | None,
    into: str,
    database_url: str | None,
    output: Output,
    *,
    dry_run: bool,
) -> None:
    """`restore database --time/--lsn/--latest`: the plan (--dry-run), or the restored copy and how
    to reach and stop it."""
    ws = _workspace(file, env, database_url)
    if set_id is not None:
        raise UserError(
            "--set picks a logical (restic) set; a --time/--lsn/--latest restore picks its pgBackRest backup"
        )
    if _into(into) == "live":
        raise UserError(
            "a point-in-time restore goes into scratch only (--into scratch): restoring over the live "
            "primary means stopping it, which shipyard does not do; restore into scratch and copy "
            "what you need from there"
        )
    if dry_run:
        plan = plan_restore_pitr(ws, request)
        if emit(plan, output):
            return
        console.print(f"would restore stanza {plan['stanza']} into {plan['data_dir']} with:")
        console.print("  pgbackrest restore " + " ".join(plan["pgbackrest_arguments"]), markup=False)
        window = plan["window"]
        console.print(f"  restorable window: {window['from']} → {window['to']}")
        return
    result = restore_pitr(ws, request)
    # `stanza` is the summary's: `restore database --time -o json` has never had it.
    if emit(result.model_dump(mode="json", exclude={"stanza"}), output):
        return
    console.print(f"restored stanza {result.stanza} to {result.point} into {result.data_dir}")
    console.print(f"  running on 127.0.0.1:{result.port} (log {result.log_file})")
    console.print(f"  connect with: psql -h 127.0.0.1 -p {result.port} -U {result.user}", markup=False)
    console.print(f"  stop it with: {' '.join(result.stop_command)}", markup=False)


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
    env: OneEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Restore a Redis snapshot: a scratch redis-server (left running) or, with --yes, the live keys."""
    request = Restore(
        what="redis", set_id=set_id, datastore=datastore, into=_into(into), yes=yes,
        target_dir=_text(target_dir), port=port,
    )  # fmt: skip
    _restore(request, file, env, database_url, output, dry_run=dry_run)


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
    env: OneEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Restore a file volume: into --target-dir (scratch) or, with --yes, in place of the live directory."""
    request = Restore(
        what="files", set_id=set_id, path=path, into=_into(into), yes=yes, target_dir=_text(target_dir)
    )
    _restore(request, file, env, database_url, output, dry_run=dry_run)


@restore_app.command("volumes")
def restore_volumes_command(
    set_id: SetOption = None,
    into: IntoOption = "scratch",
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    target_dir: TargetDirOption = None,
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Restore every file volume of a set: each under --target-dir at its own path (scratch) or, with
    --yes, in place of the live directories after one safety backup of them all."""
    request = Restore(what="volumes", set_id=set_id, into=_into(into), yes=yes, target_dir=_text(target_dir))
    _restore(request, file, env, database_url, output, dry_run=dry_run)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
