"""Failed dashboard sign-ins per client address: after MAX_FAILURES in WINDOW_S, refuse with 429.

Kept in this server process's memory: each server behind a load balancer counts on its own (an
address gets MAX_FAILURES per process a minute), and a restart forgets the counts. Tokens are 256
random bits, so the limit is there to stop a flood, not to make guessing possible at all; what
it costs an attacker is what matters, and that keeps it cheap for the server too (no write per
failure beyond the audit entry, none for a refused one).

The address is the connection's (`request.client`): behind a reverse proxy, run uvicorn with
`--proxy-headers --forwarded-allow-ips` so that it is the client's and not the proxy's.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

MAX_FAILURES = 10
WINDOW_S = 60.0
MAX_ADDRESSES = 10_000
"""Addresses tracked at once; past it the oldest is forgotten (a flood from many addresses must not
grow the process)."""


class FailedLogins:
    """A sliding window of failed sign-ins per address."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may try again; None when it may now."""
        failures = self._recent(address)
        if failures is None or len(failures) < self.max_failures:
            return None
        return max(1, math.ceil(failures[0] + self.window_s - self.clock()))

    def failed(self, address: str) -> None:
        failures = self._recent(address)
        if failures is None:
            if len(self._failures) >= MAX_ADDRESSES:
                del self._failures[next(iter(self._failures))]
            failures = self._failures[address] = deque(maxlen=self.max_failures)
        failures.append(self.clock())

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = self.clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures
