"""The server's deliverer: a thread that sends what the outbox holds, about every second."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from ..state import utcnow
from ._backoff import Backoff, Breakers
from ._outbox import Attempt, Outbox, purge_delivered

log = logging.getLogger("shipyard.notify")


class OutboxDelivery:
    """Polls the outbox and delivers due messages in order; `start()` and `stop()` with the server.

    Several servers on one state store may run one each: a message is claimed before it is sent.
    Delivered rows are deleted after `keep_delivered_s`.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        interval_s: float = 1.0,
        timeout_s: float = 5.0,
        backoff: Backoff | None = None,
        breakers: Breakers | None = None,
        keep_delivered_s: float = 7 * 86400,
    ) -> None:
        self.outbox = Outbox(sessions, timeout_s=timeout_s, backoff=backoff, breakers=breakers)
        self.sessions = sessions
        self.interval_s = interval_s
        self.keep_delivered_s = keep_delivered_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._purged_at = 0.0

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shipyard-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling; an attempt in flight finishes (its row stays claimed until then)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_once(self) -> list[Attempt]:
        """Deliver everything that is due now, in order."""
        attempts, _ = self.outbox.drain()
        if time.monotonic() - self._purged_at > 3600:
            self._purged_at = time.monotonic()
            purge_delivered(self.sessions, utcnow() - dt.timedelta(seconds=self.keep_delivered_s))
        return attempts

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the deliverer must outlive a state store hiccup
                log.warning("notification delivery pass failed: %s", type(exc).__name__)
            self._stop.wait(self.interval_s)
