"""Notifications as verbs: send a test event to a channel now, see the outbox's queue, and flush it.

`shipyard notify test|queue|flush` calls these and only these. A test goes straight to the
channel (not through the outbox), so that it says at once whether the channel works; a flush
delivers what the outbox holds, each channel in order.

How long one delivery attempt may take tunes how a verb runs, not what it does: it is a keyword
argument (`timeout_s`), not a request field.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import Field

from ..errors import UserError
from ..monitor import (
    TELEGRAM_API,
    Attempt,
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
from ._base import Request, Result
from ._workspace import Workspace

__all__ = [
    "SEVERITIES",
    "ChannelTested",
    "FlushQueue",
    "ListQueue",
    "QueueFlushed",
    "QueueListed",
    "Severity",
    "TestChannel",
    "describe_channel",
    "flush_queue",
    "notification_queue",
    "test_channel",
]

Severity = Literal["page", "ticket", "info"]
SEVERITIES: tuple[Severity, ...] = ("page", "ticket", "info")

DEFAULT_TIMEOUT_S = 10.0


def describe_channel(channel: Channel) -> str:
    """Where a channel sends, without its secret: the host of a URL, never its path or a token."""
    if channel.kind == "email":
        tls = "STARTTLS" if channel.starttls else "no TLS"
        return f"email to {', '.join(channel.to)} via {channel.smtp_host}:{channel.smtp_port} ({tls})"
    if channel.kind == "telegram":
        return f"telegram chat {channel.chat_id} via {redact_url(channel.api_url or TELEGRAM_API)}"
    url = resolve(channel.url)
    return f"{channel.kind} {redact_url(url) if url else '(URL not set in this environment)'}"


# --- a test event ---------------------------------------------------------------------------------


class TestChannel(Request):
    """Send a test event to one channel of the stack's `notifications:` now, not through the queue."""

    __test__: ClassVar[bool] = False  # a request, not a test case: pytest must not collect it

    kind: Literal["notify-test"] = "notify-test"
    channel: str
    severity: Severity = "info"
    dry_run: bool = False


class ChannelTested(Result):
    """What a test send did: in a dry run nothing is sent; otherwise delivered, or why not."""

    channel: str
    channel_kind: str
    """webhook, slack, telegram or email."""
    target: str
    """Where the channel sends, without its secret (`describe_channel`)."""
    severity: Severity
    dry_run: bool = False
    delivered: bool = False
    seconds: float | None = None
    """How long the delivery took (when delivered)."""
    error: str | None = None
    """Why it was not delivered (no secret in it)."""
    retryable: bool | None = None
    """Whether a later try may pass (when not delivered)."""

    @property
    def ok(self) -> bool:
        """False when the event was sent and not delivered (a job then fails)."""
        return self.dry_run or self.delivered

    def summary(self) -> str:
        if self.dry_run:
            return f"dry run: would send a {self.severity} test event to {self.channel} ({self.target})"
        if self.delivered:
            return f"delivered a test event to {self.channel} ({self.target}) in {self.seconds or 0:.2f} s"
        return f"channel {self.channel}: not delivered: {self.error} ({self.failure_kind()})"

    def failure_kind(self) -> str:
        """What an operator does about a failed delivery."""
        return "temporary: a later try may pass" if self.retryable else "permanent: fix the channel"


# A verb named for what it does, not a test: ruff's test rules are told so here, pytest below.
def test_channel(
    ws: Workspace,
    request: TestChannel,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,  # noqa: PT028
) -> ChannelTested:
    """Send a test event to `request.channel` now and say whether it arrived.

    An unknown channel, or one whose secret reference is not set in this process, is a UserError;
    a failed delivery is a result (`ok` False) that says why, so that the edge can show it."""
    stack = ws.stack
    channel = stack.notifications.get(request.channel)
    if channel is None:
        known = ", ".join(sorted(stack.notifications)) or "none"
        raise UserError(f"no channel {request.channel!r} under notifications: in the spec; channels: {known}")
    tested = ChannelTested(
        channel=request.channel,
        channel_kind=channel.kind,
        target=describe_channel(channel),
        severity=request.severity,
        dry_run=request.dry_run,
    )
    if request.dry_run:
        return tested
    try:
        check_resolvable(channel)
    except NotResolvable as exc:
        raise UserError(f"channel {request.channel}: {exc.message}") from None
    event = Event(
        "shipyard.test",
        f"{stack.name} ({stack.environment}): a test notification from shipyard",
        request.severity,
        {"channel": request.channel, "actor": ws.actor},
    )
    started = time.monotonic()
    try:
        deliver(channel, event, timeout_s=timeout_s)
    except DeliveryFailed as exc:
        return tested.model_copy(update={"error": exc.message, "retryable": exc.retryable})
    seconds = round(time.monotonic() - started, 3)
    return tested.model_copy(update={"delivered": True, "seconds": seconds})


test_channel.__test__ = False  # type: ignore[attr-defined]  # a verb: pytest must not collect it where imported


# --- the queue ------------------------------------------------------------------------------------


class ListQueue(Request):
    """The outbox's messages that wait (pending) or were given up (dead)."""

    kind: Literal["notify-queue"] = "notify-queue"


class QueueListed(Result):
    messages: list[QueuedMessage]
    """By channel, oldest first."""

    def summary(self) -> str:
        dead = sum(1 for m in self.messages if m.state == "dead")
        return f"{len(self.messages) - dead} message(s) waiting, {dead} given up"


def notification_queue(ws: Workspace, request: ListQueue) -> QueueListed:
    """Messages waiting (pending) or given up (dead), by channel, oldest first."""
    return QueueListed(messages=list_queue(ws.sessions))


class FlushQueue(Request):
    """Deliver what is due now, each channel in order."""

    kind: Literal["notify-flush"] = "notify-flush"
    ignore_schedule: bool = False
    """Also try messages whose next try is later (after fixing a channel)."""
    dry_run: bool = False


class QueueFlushed(Result):
    """What a flush tried and what is still queued; in a dry run, what it would try."""

    dry_run: bool = False
    would_try: list[QueuedMessage] = Field(default_factory=list)
    """In a dry run: the pending messages a flush would try, by channel, oldest first."""
    attempts: list[Attempt] = Field(default_factory=list)
    remaining: list[QueuedMessage] = Field(default_factory=list)
    """Pending messages left after the flush (empty in a dry run)."""

    @property
    def ok(self) -> bool:
        """False when messages remain queued after a flush (a job then fails)."""
        return not self.remaining

    def outcomes(self) -> dict[str, int]:
        """How many attempts were delivered, failed and kept (retry), or given up (dead)."""
        return {o: sum(1 for a in self.attempts if a.outcome == o) for o in ("delivered", "retry", "dead")}

    def summary(self) -> str:
        if self.dry_run:
            return (
                f"dry run: would try {len(self.would_try)} message(s)" if self.would_try else "nothing is due"
            )
        outcomes = self.outcomes()
        return (
            f"delivered {outcomes['delivered']}, failed {outcomes['retry']} (kept), dead {outcomes['dead']};"
            f" {len(self.remaining)} still queued"
        )


def flush_queue(ws: Workspace, request: FlushQueue, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> QueueFlushed:
    """Deliver what is due now (everything pending with `ignore_schedule`), each channel in order."""
    if request.dry_run:
        now = utcnow()
        pending = list_queue(ws.sessions, ("pending",))
        due = [m for m in pending if request.ignore_schedule or m.next_attempt_at <= now]
        return QueueFlushed(dry_run=True, would_try=due)
    # A flush is an operator's deliberate try: its own breakers, whatever this process saw before.
    outbox = Outbox(ws.sessions, timeout_s=timeout_s, breakers=Breakers())
    attempts, _ = outbox.drain(ignore_schedule=request.ignore_schedule)
    return QueueFlushed(attempts=attempts, remaining=list_queue(ws.sessions, ("pending",)))
