"""The notifications outbox: rows written before any attempt, delivered in id order per channel.

A channel's queue is its pending rows (same name, same declared configuration) in `id` order;
only its head is ever tried, so a later message never overtakes an earlier one. A deliverer
claims the head with a compare-and-set on (`claimed_by`, `attempts`), so two processes never
send the same row; a claim outlives the attempt's timeout by far, and one left by a process that
died expires. Delivery is at least once: a process that dies between the send and its record
leaves the row to be sent again when its claim expires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from ..spec import Channel
from ..state import NotificationRow, as_utc, rfc3339, utcnow
from ._backoff import PROCESS_BREAKERS, Backoff, Breakers
from ._channels import DeliveryFailed, NotResolvable, check_resolvable, deliver
from ._event import Event
from ._secrets import redact

log = logging.getLogger("shipyard.notify")

_ENQUEUE_LOCK = 0x5A1F_0005  # PostgreSQL advisory lock: ids are committed in the order they are taken


def owner_id(tag: str) -> str:
    """host:pid:tag — one per deliverer (a process may run several), computed on each call (a forked
    child is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{tag}"


def channel_config(channel: Channel) -> dict[str, Any]:
    """The channel as declared: references such as `${env:HOOK}`, never their values."""
    return channel.model_dump(mode="json", by_alias=True, exclude_none=True)


def queue_key(name: str, config: Mapping[str, Any]) -> str:
    """A queue: one channel name with one configuration (two stacks may both call a channel `ops`)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return f"{name}#{digest}"


def enqueue(
    sessions: sessionmaker[Session], channels: Iterable[tuple[str, Channel]], event: Event
) -> list[int]:
    """One pending row per channel, committed before anything is sent; their ids."""
    body = event.as_data()
    rows = [
        NotificationRow(
            channel=name,
            channel_config=channel_config(channel),
            event=event.kind,
            severity=event.severity,
            body=body,
            state="pending",
            attempts=0,
            next_attempt_at=utcnow(),
        )
        for name, channel in channels
    ]
    if not rows:
        return []
    with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # Sequence values are taken in one order and may commit in another; serialising the
            # inserts keeps "a visible row with a higher id" meaning "queued later".
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ENQUEUE_LOCK})
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


@dataclass(frozen=True)
class Attempt:
    id: int
    channel: str
    outcome: str  # delivered | retry | dead
    error: str | None = None


@dataclass
class DeliveryPass:
    """What one pass over the queues' heads did and found."""

    attempts: list[Attempt] = field(default_factory=list)
    waiting: dict[str, dt.datetime] = field(default_factory=dict)
    """Queues whose head is not due yet: when it is."""
    open_until: dict[str, float] = field(default_factory=dict)
    """Queues this process's breaker holds shut: until when (monotonic seconds)."""
    busy: set[str] = field(default_factory=set)
    """Queues whose head another process is sending."""
    unavailable: dict[str, str] = field(default_factory=dict)
    """Queues this process cannot send to (a secret reference unset here): why."""
    heads: dict[str, int] = field(default_factory=dict)
    """Every pending queue's head id."""


@dataclass(frozen=True)
class _Head:
    id: int
    channel: str
    config: dict[str, Any]
    attempts: int
    next_attempt_at: dt.datetime
    claimed_by: str | None
    claimed_until: dt.datetime | None


class Outbox:
    """Delivers due heads of the outbox's queues; shared by the notifier, the server and the CLI."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        timeout_s: float = 5.0,
        backoff: Backoff | None = None,
        breakers: Breakers | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.sessions = sessions
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff()
        self.breakers = breakers or PROCESS_BREAKERS
        self.clock = clock
        self.monotonic = monotonic
        self.rand = rand
        self.environ = environ
        self.tag = secrets.token_hex(4)
        self.claim_s = 60.0 + 4 * timeout_s  # far beyond one attempt (SMTP makes several round trips)

    def heads(self) -> dict[str, _Head]:
        """The head (lowest pending id) of every queue."""
        with self.sessions() as session:
            rows = session.execute(
                select(
                    NotificationRow.id,
                    NotificationRow.channel,
                    NotificationRow.channel_config,
                    NotificationRow.attempts,
                    NotificationRow.next_attempt_at,
                    NotificationRow.claimed_by,
                    NotificationRow.claimed_until,
                )
                .where(NotificationRow.state == "pending")
                .order_by(NotificationRow.id)
            ).all()
        heads: dict[str, _Head] = {}
        for row in rows:
            key = queue_key(row.channel, row.channel_config)
            if key not in heads:
                until = as_utc(row.claimed_until) if row.claimed_until else None
                heads[key] = _Head(
                    row.id, row.channel, row.channel_config, row.attempts, as_utc(row.next_attempt_at),
                    row.claimed_by, until,
                )  # fmt: skip
        return heads

    def deliver_due(
        self,
        queues: set[str] | None = None,
        *,
        ignore_schedule: bool = False,
        exclude: set[str] | None = None,
    ) -> DeliveryPass:
        """Try the head of each queue (of `queues`, default all) that is due; one attempt per queue."""
        result = DeliveryPass()
        me = owner_id(self.tag)
        for key, head in sorted(self.heads().items(), key=lambda item: item[1].id):
            result.heads[key] = head.id
            if (queues is not None and key not in queues) or (exclude and key in exclude):
                continue
            now = self.clock()
            if not ignore_schedule and head.next_attempt_at > now:
                result.waiting[key] = head.next_attempt_at
                continue
            if (
                head.claimed_by not in (None, me)
                and head.claimed_until is not None
                and head.claimed_until > now
            ):
                result.busy.add(key)
                continue
            try:
                channel = Channel.model_validate(head.config)
            except ValidationError:
                if self._claim(head, me, now):
                    self._finish(head, me, "dead", "the stored channel configuration is not valid")
                    result.attempts.append(
                        Attempt(head.id, head.channel, "dead", "invalid channel configuration")
                    )
                continue
            try:
                check_resolvable(channel, self.environ)
            except NotResolvable as exc:
                result.unavailable[key] = exc.message
                continue
            with self.breakers.lock:
                breaker = self.breakers.get(key)
                allowed = breaker.allow(self.monotonic())
                reopens = breaker.reopens_at()
            if not allowed:
                result.open_until[key] = reopens if reopens is not None else self.monotonic() + 1.0
                continue
            if not self._claim(head, me, now):
                with self.breakers.lock:
                    breaker.abandon()
                result.busy.add(key)
                continue
            result.attempts.append(self._attempt(key, head, channel, me))
        return result

    def drain(
        self, queues: set[str] | None = None, *, ignore_schedule: bool = False, deadline: float | None = None
    ) -> tuple[list[Attempt], DeliveryPass]:
        """Pass after pass until nothing more is due (or `deadline`, monotonic, passes); a queue whose
        head failed is left alone for the rest of the drain."""
        attempts: list[Attempt] = []
        failed: set[str] = set()
        while True:
            result = self.deliver_due(queues, ignore_schedule=ignore_schedule, exclude=failed)
            attempts += result.attempts
            failed |= {key for key, head_id in result.heads.items() for a in result.attempts
                       if a.id == head_id and a.outcome == "retry"}  # fmt: skip
            progressed = any(a.outcome != "retry" for a in result.attempts)
            if not progressed or (deadline is not None and self.monotonic() >= deadline):
                return attempts, result

    def _claim(self, head: _Head, me: str, now: dt.datetime) -> bool:
        with self.sessions() as session, session.begin():
            claimed = session.execute(
                update(NotificationRow)
                .where(
                    NotificationRow.id == head.id,
                    NotificationRow.state == "pending",
                    NotificationRow.attempts == head.attempts,
                    NotificationRow.claimed_by.is_(None)
                    if head.claimed_by is None
                    else NotificationRow.claimed_by == head.claimed_by,
                )
                .values(claimed_by=me, claimed_until=now + dt.timedelta(seconds=self.claim_s))
                .execution_options(synchronize_session=False)
            )
            return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]

    def _attempt(self, key: str, head: _Head, channel: Channel, me: str) -> Attempt:
        with self.sessions() as session:
            body = session.scalar(select(NotificationRow.body).where(NotificationRow.id == head.id))
        event = Event.from_data(body or {"kind": "unknown", "summary": ""})
        breaker = self.breakers.get(key)
        try:
            deliver(channel, event, timeout_s=self.timeout_s, environ=self.environ)
        except DeliveryFailed as exc:
            error = redact(exc.message)
            with self.breakers.lock:
                if exc.retryable:
                    breaker.failure(self.monotonic())
                else:
                    breaker.success()  # the channel answered: it is up, it refused this message
            if not exc.retryable:
                log.warning("notification %d to %s dead: %s", head.id, head.channel, error)
                self._finish(head, me, "dead", error)
                return Attempt(head.id, head.channel, "dead", error)
            delay = self.backoff.delay(head.attempts + 1, self.rand())
            if exc.retry_after_s is not None:
                delay = max(exc.retry_after_s, 0.5)  # the channel's word, but never a busy loop
            log.info("notification %d to %s: %s; next try in %.1f s", head.id, head.channel, error, delay)
            self._finish(head, me, "pending", error, retry_in_s=delay)
            return Attempt(head.id, head.channel, "retry", error)
        except NotResolvable as exc:  # the environment changed between the check and the send
            with self.breakers.lock:
                breaker.abandon()
            self._finish(head, me, "pending", exc.message, retry_in_s=0.0, counted=False)
            return Attempt(head.id, head.channel, "retry", exc.message)
        except Exception as exc:  # a bug must not leave the row claimed or kill the deliverer
            error = f"unexpected {type(exc).__name__}"
            log.warning("notification %d to %s: %s", head.id, head.channel, error)
            with self.breakers.lock:
                breaker.failure(self.monotonic())
            self._finish(
                head, me, "pending", error, retry_in_s=self.backoff.delay(head.attempts + 1, self.rand())
            )
            return Attempt(head.id, head.channel, "retry", error)
        with self.breakers.lock:
            breaker.success()
        self._finish(head, me, "delivered", None)
        return Attempt(head.id, head.channel, "delivered")

    def _finish(
        self,
        head: _Head,
        me: str,
        state: str,
        error: str | None,
        *,
        retry_in_s: float = 0.0,
        counted: bool = True,
    ) -> None:
        now = self.clock()
        values: dict[str, Any] = {
            "state": state,
            "attempts": head.attempts + (1 if counted else 0),
            "claimed_by": None,
            "claimed_until": None,
            "last_error": error,
        }
        if state == "delivered":
            values["delivered_at"] = now
        if state == "pending":
            values["next_attempt_at"] = now + dt.timedelta(seconds=retry_in_s)
        with self.sessions() as session, session.begin():
            done = session.execute(
                update(NotificationRow)
                .where(NotificationRow.id == head.id, NotificationRow.claimed_by == me)
                .where(NotificationRow.state == "pending")
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                log.warning(
                    "notification %d: its claim was taken over before the outcome was recorded", head.id
                )


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    channel: str
    kind: str
    event: str
    severity: str
    summary: str
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    created_at: dt.datetime

    def as_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.channel,
            "kind": self.kind,
            "event": self.event,
            "severity": self.severity,
            "summary": self.summary,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": rfc3339(self.next_attempt_at),
            "last_error": self.last_error,
            "created_at": rfc3339(self.created_at),
        }


def list_queue(
    sessions: sessionmaker[Session], states: tuple[str, ...] = ("pending", "dead")
) -> list[QueuedMessage]:
    """Messages in `states`, by channel, oldest first."""
    with sessions() as session:
        rows = session.scalars(
            select(NotificationRow)
            .where(NotificationRow.state.in_(states))
            .order_by(NotificationRow.channel, NotificationRow.id)
        ).all()
        return [
            QueuedMessage(
                id=row.id,
                channel=row.channel,
                kind=str(row.channel_config.get("kind", "?")),
                event=row.event,
                severity=row.severity,
                summary=str((row.body or {}).get("summary", "")),
                state=row.state,
                attempts=row.attempts,
                next_attempt_at=as_utc(row.next_attempt_at),
                last_error=row.last_error,
                created_at=as_utc(row.created_at),
            )
            for row in rows
        ]


def purge_delivered(sessions: sessionmaker[Session], older_than: dt.datetime) -> int:
    """Delete delivered rows delivered before `older_than`; how many."""
    with sessions() as session, session.begin():
        result = session.execute(
            delete(NotificationRow)
            .where(NotificationRow.state == "delivered", NotificationRow.delivered_at < older_than)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
