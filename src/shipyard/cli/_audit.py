"""`shipyard audit`: who did what, when, and with what outcome; `audit prune` applies retention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..ops import AuditQuery, PruneAudit, Workspace, audit_log, prune_audit
from ..state import AuditEntry, rfc3339
from ._app import DEFAULT_SPEC, DatabaseOption, Output, OutputOption, SpecOption, actor, console, emit
from ._tables import fitted, shown_time, whole, words, wrapped

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
        "at": rfc3339(entry.at),
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
    by_actor: Annotated[str | None, typer.Option("--actor", help="Only this actor (e.g. token:ops).")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only actions starting with this (e.g. deploy, flag.).")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="At most this many entries.")
    ] = 100,
    file: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """The audit log, newest first: time, actor, action, target, outcome."""
    if ctx.invoked_subcommand is not None:
        return
    ws = Workspace(database_url=database_url, actor=actor(), reads_only=True)
    query = AuditQuery(since=since, actor=by_actor, action=action, limit=limit)
    entries = audit_log(ws, query).entries
    if emit([_data(entry) for entry in entries], output):
        return
    columns = (
        whole("time"),
        wrapped("actor"),
        wrapped("action"),
        words("target"),
        wrapped("outcome", drop=1),
    )
    rows = [
        (
            shown_time(entry.at),
            escape(entry.actor),
            escape(entry.action),
            escape(f"{entry.target_kind} {entry.target}"),
            escape(entry.outcome),
        )
        for entry in entries
    ]
    console.print(fitted(columns, rows, title=f"audit log ({len(entries)} entries, newest first)"))


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
    ws = Workspace.open(Path(file), env, database_url=database_url, actor=actor())
    if env is None:
        # `audit prune`'s own default, kept from before: production when the spec has it, else its
        # first environment (a workspace's default would refuse a spec of several without production).
        environments = ws.spec.environments
        ws.environment = "production" if "production" in environments else environments[0]
    result = prune_audit(ws, PruneAudit(dry_run=dry_run))
    data = {
        "removed": result.removed,
        "dry_run": result.dry_run,
        "before": rfc3339(result.before),
        "compliance_before": rfc3339(result.compliance_before),
        "compliance_actions": result.compliance_actions,
    }
    if emit(data, output):
        return
    console.print(result.summary())
