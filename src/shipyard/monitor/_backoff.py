"""Retry timing and the per-channel circuit breaker (seed 002): pure, the clock is an argument."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of base·2^(n-1), capped."""

    base_s: float = 1.0
    cap_s: float = 300.0

    def delay(self, attempts: int, rand: float) -> float:
        """Seconds before the next try after `attempts` failed ones; `rand` in [0, 1) spreads retries."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(max(attempts, 1) - 1, 62))
        return ceiling / 2 + ceiling / 2 * min(max(rand, 0.0), 1.0)


class BreakerState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half-open"


@dataclass
class CircuitBreaker:
    """closed → open after `threshold` consecutive failures → half-open after `cool_down_s`, when one
    probe goes through: its success closes the breaker, its failure opens it again."""

    threshold: int = 5
    cool_down_s: float = 30.0
    state: BreakerState = BreakerState.closed
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def allow(self, now: float) -> bool:
        """May an attempt go now? In half-open, only the one probe may (until its outcome is recorded)."""
        if self.state is BreakerState.open and now >= self.opened_at + self.cool_down_s:
            self.state = BreakerState.half_open
        if self.state is BreakerState.closed:
            return True
        if self.state is BreakerState.half_open and not self.probing:
            self.probing = True
            return True
        return False

    def abandon(self) -> None:
        """An allowed attempt did not happen after all (another process held the message)."""
        self.probing = False

    def success(self) -> None:
        self.state, self.failures, self.probing = BreakerState.closed, 0, False

    def failure(self, now: float) -> None:
        self.failures += 1
        self.probing = False
        if self.state is BreakerState.half_open or self.failures >= self.threshold:
            self.state, self.opened_at = BreakerState.open, now

    def reopens_at(self) -> float | None:
        """When an open breaker lets a probe through; None when it is not open."""
        return self.opened_at + self.cool_down_s if self.state is BreakerState.open else None


@dataclass
class Breakers:
    """One breaker per channel queue, shared by every deliverer in a process."""

    threshold: int = 5
    cool_down_s: float = 30.0
    _breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(self.threshold, self.cool_down_s)
        return breaker


PROCESS_BREAKERS = Breakers()
"""The process's breakers: a notifier and the server's deliverer see the same channel health."""
