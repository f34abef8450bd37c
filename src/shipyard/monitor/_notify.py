"""Sending events to the spec's notification channels, without ever holding up the work or losing one.

`Notifier.send()` writes one outbox row per matching channel (in the caller's thread, before any
attempt) and returns; a background thread then delivers the channels' queues in order. When a
channel is down (its breaker open, or its next try far off) or a secret is not set in this
process, the thread hands the message over to the server's `OutboxDelivery` and stops: the row
stays queued, nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StateStoreUnavailable
from ..spec import Channel
from ..state import NotificationRow, utcnow
from ._backoff import Backoff, Breakers
from ._event import SEVERITY_RANK, Event
from ._outbox import Outbox, channel_config, enqueue, queue_key

log = logging.getLogger("shipyard.notify")


def matches(channel: Channel, event: Event) -> bool:
    """Does `channel` want `event`: severity at least its minimum, kind one of its event prefixes."""
    if SEVERITY_RANK.get(event.severity, 0) < SEVERITY_RANK[channel.min_severity]:
        return False
    return "*" in channel.events or any(event.kind.startswith(prefix) for prefix in channel.events)


class Notifier:
    """Queues events for channels in the state store and delivers them in the background.

    `wait()` gives a CLI's messages a short chance before it exits; what is left stays queued.
    """

    def __init__(
        self,
        channels: dict[str, Channel],
        sessions: sessionmaker[Session],
        *,
        timeout_s: float = 5.0,
        backoff: Backoff | None = None,
        breakers: Breakers | None = None,
        handoff_s: float = 60.0,
    ) -> None:
        """`handoff_s`: a message whose next try is further off than this is left to the server."""
        self.channels = channels
        self.sessions = sessions
        self.outbox = Outbox(sessions, timeout_s=timeout_s, backoff=backoff, breakers=breakers)
        self.handoff_s = handoff_s
        self._lock = threading.Lock()
        self._mine: dict[int, str] = {}  # row id → queue key, until delivered, dead or handed over
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def send(self, event: Event) -> list[int]:
        """Queue `event` for every channel that wants it; the new rows' ids. Never raises."""
        targets = [(name, channel) for name, channel in self.channels.items() if matches(channel, event)]
        if not targets:
            return []
        try:
            ids = enqueue(self.sessions, targets, event)
        except (SQLAlchemyError, StateStoreUnavailable) as exc:  # the store down: said, not raised
            names = ", ".join(name for name, _ in targets)
            log.error(
                "could not queue %s for %s: the state store failed (%s)",
                event.kind,
                names,
                type(exc).__name__,
            )
            return []
        with self._lock:
            self._mine.update(zip(ids, (queue_key(n, channel_config(c)) for n, c in targets), strict=True))
            self._idle.clear()
            if self._thread is None or not self._thread.is_alive():  # not alive: a forked child
                self._thread = threading.Thread(target=self._pump, name="shipyard-notify", daemon=True)
                self._thread.start()
        self._wake.set()
        return ids

    def wait(self, timeout_s: float = 10.0) -> bool:
        """Wait until every message sent here is delivered, dead or handed over; False on timeout."""
        return self._idle.wait(timeout_s)

    def _pump(self) -> None:
        while True:
            with self._lock:
                if not self._mine:
                    self._thread = None
                    self._idle.set()
                    return
                queues = set(self._mine.values())
            self._wake.clear()
            try:
                pause = self._round(queues)
            except Exception as exc:  # the state store failed, most likely: keep the thread, try again
                log.warning("notifications: a delivery round failed (%s); retrying", type(exc).__name__)
                pause = 1.0
            self._wake.wait(pause)

    def _round(self, queues: set[str]) -> float:
        """Deliver what is due; drop what is settled or handed over; how long to sleep."""
        _, result = self.outbox.drain(queues)
        with self._lock:
            ids = list(self._mine)
        with self.sessions() as session:
            pending = set(
                session.scalars(
                    select(NotificationRow.id).where(
                        NotificationRow.id.in_(ids), NotificationRow.state == "pending"
                    )
                )
            )
        now, mono = utcnow(), time.monotonic()
        handed: set[str] = set(result.unavailable) | set(result.open_until)
        handed |= {k for k, at in result.waiting.items() if (at - now).total_seconds() > self.handoff_s}
        for key in set(result.unavailable) & queues:
            log.info("notifications for %s stay queued: %s", key.split("#")[0], result.unavailable[key])
        with self._lock:
            for row_id in ids:
                if row_id not in pending or self._mine[row_id] in handed:
                    del self._mine[row_id]
        if result.attempts:
            return 0.05  # a retry was just scheduled: the next round's pass reads when it is due
        pause = 1.0
        for at in result.waiting.values():
            pause = min(pause, (at - now).total_seconds())
        for until in result.open_until.values():
            pause = min(pause, until - mono)
        return max(pause, 0.05)
