"""The flag set as the server serves it: compiled once per version, never older than a write.

Every read (`flagset`, `evaluator`, `version`) first asks the store's `VersionProbe` for the
committed version and reloads when it moved. On SQLite that is a counter in shared memory that
every write bumps after its commit (`SharedVersion`: nanoseconds), and `PRAGMA data_version` only
when it moved, so a worker process reads a write another worker made as soon as that write has
committed, which is before its response left. On PostgreSQL it is the counter's
row by key on a connection of the probe's own: one round trip, and the same guarantee across
servers.

Streams are not driven by reads, so changes are also followed in the background
(`follow_changes`, run by the server): on PostgreSQL a LISTEN thread woken by the NOTIFY each
write sends at commit, with a slow poll as a safety net for a lost notification; on SQLite the
pragma itself every few milliseconds (it costs next to nothing), which also finds a commit whose
writer was killed before it bumped the shared counter. A write in this process swaps the
snapshot at once.

When the store stops answering, the last good snapshot goes on being served (a write that would
make it stale cannot commit either, on a single store) and `stale_since` says since when: the
server puts it in a header of every evaluation and refuses the reads that need the store. Reads
then skip the probe for a second at a time, so an outage does not cost each evaluation a failed
connection; the background follower goes on trying and ends the outage at its first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator

from ..spec.flags import FlagSet
from ._evaluator import Evaluator, compile_flagset
from ._store import FlagStore, PostgresProbe, SqliteProbe

log = logging.getLogger(__name__)

SQLITE_FOLLOW_SECONDS = 0.01
"""How often the background probe runs on SQLite (streams; reads check for themselves)."""

UNREACHABLE_RETRY_SECONDS = 1.0
"""While the store does not answer, how long reads serve the last snapshot without asking it."""


class LiveFlagSet:
    """The current flag set and its compiled evaluator, with change notification for streams."""

    def __init__(self, store: FlagStore, poll_interval: float = 0.25) -> None:
        self.store = store
        self.poll_interval = poll_interval
        """On PostgreSQL, the safety-net poll behind LISTEN/NOTIFY."""
        self._lock = threading.Lock()
        flagset = store.snapshot()
        self._current: tuple[FlagSet, Evaluator] = (flagset, compile_flagset(flagset))
        self._probe = store.probe()
        self._probe_failed_at = 0.0
        self._answered_at = time.time()
        """When the store last answered a version check (wall clock: it is shown)."""
        self._stale_since: dt.datetime | None = None
        self._retry_at = 0.0
        self._waiters: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        store.subscribe(self.refresh)

    def current(self, *, thorough: bool = False) -> tuple[FlagSet, Evaluator]:
        """The flag set and its evaluator, at least as new as the last committed write (`thorough`:
        see `VersionProbe.version`)."""
        current = self._current
        if self._stale_since is not None and not thorough and time.monotonic() < self._retry_at:
            return current  # unreachable a moment ago: not asked again per request
        try:
            version = self._probe.version(thorough=thorough)
            if version != current[0].version:
                self.refresh(version)
                current = self._current
        except Exception as exc:
            # The store is unreachable: serve the last snapshot rather than fail every evaluation.
            self._unreachable(exc)
            return current
        self._answered_at = time.time()
        self._stale_since = None
        return current

    def _unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        self._retry_at = now + UNREACHABLE_RETRY_SECONDS
        if self._stale_since is None:
            self._stale_since = dt.datetime.fromtimestamp(self._answered_at, dt.UTC)
        if now - self._probe_failed_at > 10:
            self._probe_failed_at = now
            log.warning(
                "flag version check failed (%s); serving version %d, read at %s",
                exc,
                self._current[0].version,
                self._stale_since.isoformat(timespec="seconds"),
            )

    @property
    def stale_since(self) -> dt.datetime | None:
        """When the store last answered, while it does not (the snapshot served is from then or
        before); None while it answers."""
        return self._stale_since

    @property
    def flagset(self) -> FlagSet:
        return self.current()[0]

    @property
    def evaluator(self) -> Evaluator:
        return self.current()[1]

    @property
    def version(self) -> int:
        return self.current()[0].version

    def refresh(self, known_version: int | None = None) -> bool:
        """Reload from the store unless it is at `known_version` already; True when it changed."""
        if known_version is not None and known_version == self._current[0].version:
            return False
        with self._lock:
            # Concurrent readers that saw the same new version reload it once, not each.
            if known_version is not None and known_version == self._current[0].version:
                return False
            flagset = self.store.snapshot()
            if flagset.version == self._current[0].version:
                return False
            self._current = (flagset, compile_flagset(flagset))
        self._wake()
        return True

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for event in list(self._waiters):
            loop.call_soon_threadsafe(event.set)

    async def follow_changes(self) -> None:
        """Follow writes made by other processes; run as a background task of the server."""
        self._loop = asyncio.get_running_loop()
        stop = threading.Event()
        listener: threading.Thread | None = None
        if isinstance(self._probe, PostgresProbe):
            listener = threading.Thread(
                target=self.store.listen,
                args=(self._notified, stop),
                name="shipyard-flag-listener",
                daemon=True,
            )
            listener.start()
        interval = SQLITE_FOLLOW_SECONDS if isinstance(self._probe, SqliteProbe) else self.poll_interval
        try:
            while True:
                await asyncio.sleep(interval)
                with contextlib.suppress(Exception):  # a database hiccup must not end the follower
                    await asyncio.to_thread(functools.partial(self.current, thorough=True))
        finally:
            stop.set()  # the listener ends within its notify timeout; it is a daemon thread

    poll_forever = follow_changes
    """The name the server's lifespan starts it by."""

    def _notified(self, version: int | None) -> None:
        try:
            self.refresh(version)
        except Exception as exc:  # the next notification or poll retries
            log.warning("flag set reload after a notification failed: %s", exc)

    def close(self) -> None:
        """End every open stream (the server is stopping); callable from any thread."""
        self._closed = True
        self._wake()

    async def changes(self, heartbeat: float = 5.0) -> AsyncIterator[FlagSet | None]:
        """Yield the current flag set, then each new one; None as a heartbeat when idle.

        Ends when `close()` is called, so that a stopping server is not held open by SDKs
        that keep a stream connected (they reconnect to the next server).
        """
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            flagset = self.current()[0]  # a stream opened after a write starts at that write
            sent = flagset.version
            yield flagset
            while not self._closed:
                try:
                    await asyncio.wait_for(event.wait(), timeout=heartbeat)
                except TimeoutError:
                    yield None
                    continue
                event.clear()
                if self._closed:
                    return
                flagset = self._current[0]
                if flagset.version != sent:
                    sent = flagset.version
                    yield flagset
        finally:
            self._waiters.discard(event)
