"""Backoff timing and the circuit breaker: pure, driven by an explicit clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shipyard.monitor import Backoff, Breakers, BreakerState, CircuitBreaker

rand = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(
    attempts=st.integers(min_value=1, max_value=10_000),
    r=rand,
    base=st.floats(0.01, 10),
    cap=st.floats(1, 600),
)
def test_a_delay_lies_between_half_and_all_of_its_capped_ceiling(
    attempts: int, r: float, base: float, cap: float
) -> None:
    backoff = Backoff(base_s=base, cap_s=cap)
    ceiling = min(cap, base * 2 ** min(attempts - 1, 62))
    delay = backoff.delay(attempts, r)
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= cap


@given(attempts=st.integers(min_value=1, max_value=60))
def test_the_ceiling_doubles_until_the_cap(attempts: int) -> None:
    backoff = Backoff(base_s=1.0, cap_s=300.0)
    assert backoff.delay(attempts + 1, 0.999999) >= backoff.delay(attempts, 0.999999)
    assert backoff.delay(attempts, 0.0) == min(300.0, 2.0 ** (attempts - 1)) / 2


def test_default_backoff_reaches_five_minutes_and_stays() -> None:
    backoff = Backoff()
    assert [backoff.delay(n, 0.0) * 2 for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_breaker_opens_after_consecutive_failures_then_lets_one_probe_through() -> None:
    breaker = CircuitBreaker(threshold=3, cool_down_s=30.0)
    for now in (0.0, 1.0):
        assert breaker.allow(now)
        breaker.failure(now)
    assert breaker.state is BreakerState.closed
    assert breaker.allow(2.0)
    breaker.failure(2.0)
    assert breaker.state is BreakerState.open
    assert breaker.reopens_at() == 32.0
    assert not breaker.allow(31.9)
    assert breaker.allow(32.0)  # half-open: the probe
    assert breaker.state is BreakerState.half_open
    assert not breaker.allow(32.1)  # only one probe at a time
    breaker.failure(33.0)  # the probe failed: open again, a full cool-down from now
    assert breaker.state is BreakerState.open
    assert not breaker.allow(62.9)
    assert breaker.allow(63.0)
    breaker.success()
    assert breaker.state is BreakerState.closed
    assert breaker.allow(63.1)
    assert breaker.allow(63.2)


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(threshold=2, cool_down_s=5.0)
    breaker.failure(0.0)
    breaker.success()
    breaker.failure(1.0)
    assert breaker.state is BreakerState.closed
    breaker.failure(2.0)
    assert breaker.state is BreakerState.open


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    breaker = CircuitBreaker(threshold=1, cool_down_s=1.0)
    breaker.failure(0.0)
    assert breaker.allow(1.0)
    breaker.abandon()
    assert breaker.allow(1.0)


@given(outcomes=st.lists(st.booleans(), max_size=50))
def test_the_breaker_is_open_exactly_when_the_last_threshold_outcomes_failed(outcomes: list[bool]) -> None:
    # With no cool-down elapsing (time stands still), every failure counts.
    breaker = CircuitBreaker(threshold=3, cool_down_s=1e9)
    streak = 0
    for ok in outcomes:
        if breaker.state is BreakerState.open:
            assert not breaker.allow(0.0)
            break
        assert breaker.allow(0.0)
        if ok:
            breaker.success()
            streak = 0
        else:
            breaker.failure(0.0)
            streak += 1
        assert (breaker.state is BreakerState.open) == (streak >= 3)


def test_breakers_are_one_per_queue() -> None:
    breakers = Breakers(threshold=1, cool_down_s=10.0)
    breakers.get("ops#a").failure(0.0)
    assert not breakers.get("ops#a").allow(1.0)
    assert breakers.get("ops#b").allow(1.0)
