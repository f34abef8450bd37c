"""The flag set as the server serves it: compiled once per version, refreshed in the background.

Requests never wait for the database: they read the last compiled snapshot. A write in this
process swaps the snapshot at once; a write by another process (a second server, the CLI on
the same database) is picked up by the poller within `poll_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from ..spec.flags import FlagSet
from ._evaluator import Evaluator, compile_flagset
from ._store import FlagStore


class LiveFlagSet:
    """The current flag set and its compiled evaluator, with change notification for streams."""

    def __init__(self, store: FlagStore, poll_interval: float = 0.25) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._flagset = store.snapshot()
        self._evaluator = compile_flagset(self._flagset)
        self._waiters: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        store.subscribe(self.refresh)

    @property
    def flagset(self) -> FlagSet:
        return self._flagset

    @property
    def evaluator(self) -> Evaluator:
        return self._evaluator

    @property
    def version(self) -> int:
        return self._flagset.version

    def refresh(self, known_version: int | None = None) -> bool:
        """Reload from the store if it moved on; True when the snapshot changed."""
        if known_version is not None and known_version <= self._flagset.version:
            return False
        with self._lock:
            flagset = self.store.snapshot()
            if flagset.version == self._flagset.version:
                return False
            self._flagset, self._evaluator = flagset, compile_flagset(flagset)
        self._wake()
        return True

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for event in list(self._waiters):
            loop.call_soon_threadsafe(event.set)

    async def poll_forever(self) -> None:
        """Follow writes made by other processes; run as a background task of the server."""
        self._loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_interval)
            with contextlib.suppress(Exception):  # a database hiccup must not kill the poller
                version = await asyncio.to_thread(self.store.version)
                if version != self._flagset.version:
                    await asyncio.to_thread(self.refresh)

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
            sent = self._flagset.version
            yield self._flagset
            while not self._closed:
                try:
                    await asyncio.wait_for(event.wait(), timeout=heartbeat)
                except TimeoutError:
                    yield None
                    continue
                event.clear()
                if self._closed:
                    return
                if self._flagset.version != sent:
                    sent = self._flagset.version
                    yield self._flagset
        finally:
            self._waiters.discard(event)
