"""`shipyard dr test full|partial|backup|restore|failover`: a DR drill into scratch copies, reported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..dr import DrillResult, format_seconds
from ..ops import DrillOutcome, RunDrill, Workspace, run_drill
from ..spec import DrillMode
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

ModeArgument = Annotated[
    DrillMode,
    typer.Argument(
        help="full: back up, then restore every source; restore: restore every source from the newest set;"
        " partial: restore the PostgreSQL datastores only; backup: back up, then verify the set;"
        " failover: kill the primary of a scratch copy of the ha: patroni datastore under writes.",
        show_default=False,
    ),
]
ReportDirOption = Annotated[
    Path | None,
    typer.Option(
        "--report-dir",
        file_okay=False,
        help="Where the Markdown and JSON reports go (default: .shipyard/drills).",
    ),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show the drill's phases; run nothing.")]


def register_drills(dr_app: typer.Typer) -> None:
    """Add `test` to the `shipyard dr` group."""
    dr_app.command("test")(drill_test)


def drill_test(
    mode: ModeArgument,
    file: SpecOption = DEFAULT_SPEC,
    env: NamedEnvOption = "production",
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
    report_dir: ReportDirOption = None,
    dry_run: DryRunOption = False,
) -> None:
    """Recover from a simulated disaster into scratch servers; measure RTO and RPO against the spec.

    Never touches the live stack. Exits 0 when every phase passed and every target was met, else 1.
    """
    ws = Workspace.open(file, env, database_url=database_url, actor=actor())
    request = RunDrill(mode=mode, dry_run=dry_run, report_dir=str(report_dir) if report_dir else None)

    def progress(name: str) -> None:
        if output is Output.table:
            console.print(f"[dim]… {escape(name)}[/]")

    from ..jobs import run_recorded_here  # noqa: PLC0415 - the jobs layer only for runs it records

    if dry_run:
        outcome = run_drill(ws, request, on_phase=progress)
    else:
        outcome = run_recorded_here(ws, request, lambda: run_drill(ws, request, on_phase=progress))
    if not emit(outcome.data(), output):
        _print_outcome(outcome)
    if not outcome.ok:
        raise typer.Exit(1)


def _print_outcome(outcome: DrillOutcome) -> None:
    if outcome.result is None:
        for index, phase in enumerate(outcome.plan, start=1):
            if phase.after_disaster and (index == 1 or not outcome.plan[index - 2].after_disaster):
                console.print("   [bold]— simulated disaster —[/]")
            how = " (point-in-time recovery)" if phase.pitr else ""
            console.print(f"{index:>2}. {escape(phase.phase)}{how}")
        console.print("dry run: nothing was run")
        return
    _print_result(outcome.result)
    console.print(f"report: {escape(str(outcome.report_markdown))} and {escape(str(outcome.report_json))}")


def _print_result(result: DrillResult) -> None:
    verdict = "[bold green]PASS[/]" if result.passed else "[bold red]FAIL[/]"
    phases = Table(
        title=f"DR drill {result.mode} of {escape(result.stack)}/{escape(result.environment)}: {verdict}",
        title_justify="left",
    )
    for column in ("#", "phase", "duration", "outcome", "detail"):
        phases.add_column(column, justify="right" if column in ("#", "duration") else "left")
    colours = {"passed": "green", "failed": "red", "skipped": "dim"}
    for number, phase in enumerate(result.phases, start=1):
        phases.add_row(
            str(number),
            escape(phase.name),
            "—" if phase.seconds is None else format_seconds(phase.seconds),
            f"[{colours[phase.status]}]{phase.status}[/]",
            escape(phase.detail),
        )
    console.print(phases)
    targets = Table(title="targets", title_justify="left")
    for column in ("target", "objective", "achieved", "verdict"):
        targets.add_column(column, justify="right" if column in ("objective", "achieved") else "left")
    for check in result.checks:
        verdict_text = {"pass": "[green]PASS[/]", "fail": "[red]FAIL[/]", "not set": "[dim]not set[/]"}
        targets.add_row(
            check.name.upper(),
            "—" if check.target is None else format_seconds(check.target),
            "not achieved" if check.achieved is None else format_seconds(check.achieved),
            verdict_text[check.verdict],
        )
    console.print(targets)
    failed = result.failed_phase
    if failed is not None:
        console.print(f"[red]stopped at {escape(failed.name)}:[/] {escape(failed.detail)}")
