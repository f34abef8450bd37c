"""`shipyard audit`: who did what, when, and with what outcome; `audit prune` applies retention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..state import (
    AuditEntry,
    audit_cutoffs,
    open_engine,
    parse_since,
    prune_audit,
    query_audit,
    session_factory,
    utcnow,
)
from ._app import DEFAULT_SPEC, DatabaseOption, Output, OutputOption, SpecOption, console, emit, read_spec

audit_app = typer.Typer(
    help="The audit trail: every deploy, rollback, flag change, backup, restore, failover and drill.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def register(app: typer.Typer) -> None:
    """Add the `audit` command group to the app."""
    app.add_typer(audit_app, name="audit")


def _data(entry: AuditEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "target_kind": entry.target_kind,
        "target": entry.target,
        "outcome": entry.outcome,
        "before": entry.before,
        "after": entry.after,
    }


@audit_app.callback()
def audit_list(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", help="Only entries this recent: 7d, 12h, 30m, or an ISO moment.")
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor (e.g. token:ops).")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only actions starting with this (e.g. deploy, flag.).")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="At most this many entries.")
    ] = 100,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """The audit log, newest first: time, actor, action, target, outcome."""
    if ctx.invoked_subcommand is not None:
        return
    sessions = session_factory(open_engine(database_url))
    entries = query_audit(
        sessions,
        since=parse_since(since, utcnow()) if since else None,
        actor=actor,
        action=action,
        limit=limit,
    )
    if emit([_data(entry) for entry in entries], output):
        return
    table = Table(title=f"audit log ({len(entries)} entries, newest first)", title_justify="left")
    for column in ("time", "actor", "action", "target", "outcome"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            entry.at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(entry.actor),
            escape(entry.action),
            escape(f"{entry.target_kind} {entry.target}"),
            escape(entry.outcome),
        )
    console.print(table)


@audit_app.command("prune")
def audit_prune(
    file: SpecOption = DEFAULT_SPEC,
    env: Annotated[
        str | None,
        typer.Option("--env", "-e", help="The environment whose `audit:` applies (default: production)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; remove nothing.")] = False,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Remove entries past the spec's `audit.retention` (compliance actions: `compliance_retention`)."""
    spec = read_spec(Path(file))
    environment = env or ("production" if "production" in spec.environments else spec.environments[0])
    policy = spec.stack(environment).audit
    cutoffs = audit_cutoffs(
        utcnow(), policy.retention, policy.compliance_retention, policy.compliance_actions
    )
    result = prune_audit(session_factory(open_engine(database_url)), cutoffs, dry_run=dry_run)
    data = {
        "removed": result.removed,
        "dry_run": dry_run,
        "before": cutoffs.regular.isoformat(),
        "compliance_before": cutoffs.compliance.isoformat(),
        "compliance_actions": list(cutoffs.compliance_actions),
    }
    if emit(data, output):
        return
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{verb} {result.removed} audit entries: older than {cutoffs.regular:%Y-%m-%d}, or than"
        f" {cutoffs.compliance:%Y-%m-%d} for {', '.join(cutoffs.compliance_actions) or 'no'} actions"
    )
