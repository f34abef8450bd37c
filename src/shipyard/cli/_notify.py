"""`shipyard notify test|queue|flush`: try a channel, see what waits in the outbox, deliver it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ShipyardError, UserError
from ..monitor import QueuedMessage
from ..ops import (
    SEVERITIES,
    FlushQueue,
    ListQueue,
    TestChannel,
    Workspace,
    flush_queue,
    notification_queue,
    test_channel,
)
from ..state import utcnow
from ._app import (
    DEFAULT_SPEC,
    DatabaseOption,
    OneEnvOption,
    Output,
    OutputOption,
    SpecOption,
    actor,
    console,
    emit,
)
from ._tables import fitted, shown_time, whole, wrapped

notify_app = typer.Typer(
    help="Notification channels: send a test, see the outbox, deliver what is due.", no_args_is_help=True
)

DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds for each delivery attempt.")
]


def register(app: typer.Typer) -> None:
    """Add the `notify` command group to the app."""
    app.add_typer(notify_app, name="notify")


@notify_app.command("test")
def send_test(
    channel: Annotated[str, typer.Argument(help="The channel, as named under `notifications:`.")],
    file: SpecOption = DEFAULT_SPEC,
    env: OneEnvOption = None,
    severity: Annotated[str, typer.Option("--severity", help="page, ticket or info.")] = "info",
    dry_run: DryRunOption = False,
    timeout: TimeoutOption = 10.0,
    output: OutputOption = Output.table,
) -> None:
    """Send a test event to CHANNEL now (not through the queue) and say whether it arrived."""
    ws = Workspace.open(file, env, actor=actor())
    if severity not in SEVERITIES:
        # The option is checked after the environment and the channel, as it always was: with both
        # wrong, the unknown channel is what is reported (by the verb, which lists the known ones).
        if channel in ws.stack.notifications:
            raise UserError(f"--severity {severity!r}: use page, ticket or info")
        severity = "info"
    request = TestChannel.model_validate({"channel": channel, "severity": severity, "dry_run": dry_run})
    result = test_channel(ws, request, timeout_s=timeout)
    report: dict[str, Any] = {"channel": channel, "kind": result.channel_kind, "target": result.target}
    if result.dry_run:
        if not emit({**report, "sent": False}, output):
            console.print(f"would send a {severity} test event to {channel} ({escape(result.target)})")
        return
    if not result.delivered:
        emit(
            {
                **report,
                "sent": True,
                "delivered": False,
                "error": result.error,
                "retryable": result.retryable,
            },
            output,
        )
        raise ShipyardError(result.summary())
    if not emit({**report, "sent": True, "delivered": True, "seconds": result.seconds}, output):
        console.print(f"[green]delivered[/] to {channel} ({escape(result.target)}) in {result.seconds:.2f} s")


@notify_app.command("queue")
def queue_command(
    file: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Messages waiting (pending) or given up (dead), by channel, oldest first."""
    ws = _workspace(database_url)
    ws.reads_only = True  # listing the outbox makes no store
    messages = notification_queue(ws, ListQueue()).messages
    if emit([m.as_data() for m in messages], output):
        return
    if not messages:
        console.print("nothing is queued: no message waits or was given up")
        return
    console.print(_table(messages))


@notify_app.command("flush")
def flush_command(
    file: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Also try messages whose next try is later (after a fix).")
    ] = False,
    dry_run: DryRunOption = False,
    timeout: TimeoutOption = 10.0,
    output: OutputOption = Output.table,
) -> None:
    """Deliver what is due now, each channel in order; exit 1 if messages remain queued."""
    request = FlushQueue(ignore_schedule=everything, dry_run=dry_run)
    result = flush_queue(_workspace(database_url), request, timeout_s=timeout)
    if result.dry_run:
        due = result.would_try
        if not emit({"would_try": [m.as_data() for m in due]}, output):
            if due:
                console.print(f"would try {len(due)} message(s), each channel in order:")
                console.print(_table(due))
            else:
                console.print("nothing is due")
        return
    attempts, remaining = result.attempts, result.remaining
    data = {
        "attempts": [
            {"id": a.id, "channel": a.channel, "outcome": a.outcome, "error": a.error} for a in attempts
        ],
        "remaining": [m.as_data() for m in remaining],
    }
    if not emit(data, output):
        console.print(result.summary())
        for attempt in attempts:
            if attempt.error:
                console.print(
                    f"  #{attempt.id} {attempt.channel}: {attempt.outcome}: {escape(attempt.error)}"
                )
        if remaining:
            console.print(_table(remaining))
    if remaining:
        raise typer.Exit(1)


def _workspace(database_url: str | None) -> Workspace:
    """The queue commands' workspace: the state store and who acts; they take no spec."""
    return Workspace(database_url=database_url, actor=actor())


def _table(messages: list[QueuedMessage]) -> Table:
    now = utcnow()
    columns = (
        whole("channel"),
        whole("id", justify="right"),
        whole("event"),
        wrapped("severity", drop=2),
        wrapped("state"),
        wrapped("tries", justify="right", drop=1),
        wrapped("next try"),
        wrapped("last error"),
        whole("queued", drop=3),
    )
    rows = []
    for m in messages:
        wait = (m.next_attempt_at - now).total_seconds()
        next_try = "-" if m.state != "pending" else ("now" if wait <= 0 else f"in {wait:.0f} s")
        rows.append(
            (
                escape(m.channel),
                str(m.id),
                escape(m.event),
                m.severity,
                "[red]dead[/]" if m.state == "dead" else m.state,
                str(m.attempts),
                next_try,
                escape(m.last_error or ""),
                shown_time(m.created_at),
            )
        )
    return fitted(columns, rows)
