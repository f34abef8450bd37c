"""`shipyard notify test|queue|flush`: try a channel, see what waits in the outbox, deliver it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ShipyardError, UserError
from ..monitor import (
    TELEGRAM_API,
    Breakers,
    DeliveryFailed,
    Event,
    NotResolvable,
    Outbox,
    QueuedMessage,
    check_resolvable,
    deliver,
    list_queue,
    redact_url,
    resolve,
)
from ..spec import Channel
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
    one_stack,
    open_sessions,
)

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
    stack = one_stack(file, env)
    spec = stack.notifications.get(channel)
    if spec is None:
        known = ", ".join(sorted(stack.notifications)) or "none"
        raise UserError(f"no channel {channel!r} under notifications: in the spec; channels: {known}")
    if severity not in ("page", "ticket", "info"):
        raise UserError(f"--severity {severity!r}: use page, ticket or info")
    event = Event(
        "shipyard.test",
        f"{stack.name} ({stack.environment}): a test notification from shipyard",
        severity,
        {"channel": channel, "actor": actor()},
    )
    report: dict[str, Any] = {"channel": channel, "kind": spec.kind, "target": describe(spec)}
    if dry_run:
        if not emit({**report, "sent": False}, output):
            console.print(f"would send a {severity} test event to {channel} ({escape(report['target'])})")
        return
    try:
        check_resolvable(spec)
    except NotResolvable as exc:
        raise UserError(f"channel {channel}: {exc.message}") from None
    started = time.monotonic()
    try:
        deliver(spec, event, timeout_s=timeout)
    except DeliveryFailed as exc:
        kind = "temporary: a later try may pass" if exc.retryable else "permanent: fix the channel"
        emit(
            {**report, "sent": True, "delivered": False, "error": exc.message, "retryable": exc.retryable},
            output,
        )
        raise ShipyardError(f"channel {channel}: not delivered: {exc.message} ({kind})") from None
    seconds = round(time.monotonic() - started, 3)
    if not emit({**report, "sent": True, "delivered": True, "seconds": seconds}, output):
        console.print(f"[green]delivered[/] to {channel} ({escape(report['target'])}) in {seconds:.2f} s")


@notify_app.command("queue")
def queue_command(
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Messages waiting (pending) or given up (dead), by channel, oldest first."""
    messages = list_queue(open_sessions(database_url))
    if emit([m.as_data() for m in messages], output):
        return
    if not messages:
        console.print("nothing is queued: no message waits or was given up")
        return
    console.print(_table(messages))


@notify_app.command("flush")
def flush_command(
    database_url: DatabaseOption = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Also try messages whose next try is later (after a fix).")
    ] = False,
    dry_run: DryRunOption = False,
    timeout: TimeoutOption = 10.0,
    output: OutputOption = Output.table,
) -> None:
    """Deliver what is due now, each channel in order; exit 1 if messages remain queued."""
    sessions = open_sessions(database_url)
    if dry_run:
        now = utcnow()
        due = [
            m for m in list_queue(sessions, ("pending",)) if everything or m.next_attempt_at <= now
        ]  # fmt: skip
        if not emit({"would_try": [m.as_data() for m in due]}, output):
            if due:
                console.print(f"would try {len(due)} message(s), each channel in order:")
                console.print(_table(due))
            else:
                console.print("nothing is due")
        return
    # A flush is an operator's deliberate try: its own breakers, whatever this process saw before.
    attempts, _ = Outbox(sessions, timeout_s=timeout, breakers=Breakers()).drain(ignore_schedule=everything)
    remaining = list_queue(sessions, ("pending",))
    data = {
        "attempts": [
            {"id": a.id, "channel": a.channel, "outcome": a.outcome, "error": a.error} for a in attempts
        ],
        "remaining": [m.as_data() for m in remaining],
    }
    if not emit(data, output):
        outcomes = {o: sum(1 for a in attempts if a.outcome == o) for o in ("delivered", "retry", "dead")}
        console.print(
            f"delivered {outcomes['delivered']}, failed {outcomes['retry']} (kept), dead {outcomes['dead']};"
            f" {len(remaining)} still queued"
        )
        for attempt in attempts:
            if attempt.error:
                console.print(
                    f"  #{attempt.id} {attempt.channel}: {attempt.outcome}: {escape(attempt.error)}"
                )
        if remaining:
            console.print(_table(remaining))
    if remaining:
        raise typer.Exit(1)


def describe(channel: Channel) -> str:
    """Where a channel sends, without its secret: the host of a URL, never its path or a token."""
    if channel.kind == "email":
        tls = "STARTTLS" if channel.starttls else "no TLS"
        return f"email to {', '.join(channel.to)} via {channel.smtp_host}:{channel.smtp_port} ({tls})"
    if channel.kind == "telegram":
        return f"telegram chat {channel.chat_id} via {redact_url(channel.api_url or TELEGRAM_API)}"
    url = resolve(channel.url)
    return f"{channel.kind} {redact_url(url) if url else '(URL not set in this environment)'}"


def _table(messages: list[QueuedMessage]) -> Table:
    now = utcnow()
    table = Table("channel", "id", "event", "severity", "state", "tries", "next try", "last error", "queued")
    for m in messages:
        wait = (m.next_attempt_at - now).total_seconds()
        next_try = "-" if m.state != "pending" else ("now" if wait <= 0 else f"in {wait:.0f} s")
        table.add_row(
            m.channel,
            str(m.id),
            m.event,
            m.severity,
            "[red]dead[/]" if m.state == "dead" else m.state,
            str(m.attempts),
            next_try,
            escape(m.last_error or ""),
            m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table
