"""The traffic history's pure parts: minutes, latency quantiles, intervals, the window, and what a
minute between two readings is. (The sampler against a real HAProxy is in
tests/integration/monitor/test_traffic_history.py.)"""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.monitor import TrafficMinute
from shipyard.monitor._traffic_history import (
    MINUTE_S,
    intervals,
    latency_quantile,
    minute_between,
    minute_floor,
    window,
)
from shipyard.rollout import LATENCY_BUCKETS_MS, Sample

BUCKETS = len(LATENCY_BUCKETS_MS)
histograms = st.lists(st.integers(0, 10_000), min_size=BUCKETS, max_size=BUCKETS).map(tuple)
moments = st.floats(0, 4e9, allow_nan=False)
steps = st.integers(1, 60).map(lambda minutes: minutes * MINUTE_S)


def at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


@given(moments)
def test_a_moment_is_in_the_minute_it_floors_to(moment: float) -> None:
    start = minute_floor(moment)
    assert start % MINUTE_S == 0
    assert start <= moment < start + MINUTE_S


def reference_quantile(histogram: tuple[int, ...], q: float) -> float | None:
    """Each request as its bucket's bound, sorted: the one at rank ceil(q * n) (1-based)."""
    values = sorted(
        bound for bound, count in zip(LATENCY_BUCKETS_MS, histogram, strict=True) for _ in range(count)
    )
    if not values:
        return None
    value = values[max(1, math.ceil(q * len(values))) - 1]
    return value if math.isfinite(value) else LATENCY_BUCKETS_MS[-2]


@settings(max_examples=300)
@given(
    st.lists(st.integers(0, 40), min_size=BUCKETS, max_size=BUCKETS).map(tuple),
    st.sampled_from([0.5, 0.9, 0.99]),
)
def test_a_quantile_is_the_bound_of_the_bucket_holding_that_rank(
    histogram: tuple[int, ...], q: float
) -> None:
    assert latency_quantile(histogram, q) == reference_quantile(histogram, q)


def test_past_the_last_bound_a_quantile_reads_as_that_bound() -> None:
    only_slow = (0,) * (BUCKETS - 1) + (3,)
    assert latency_quantile(only_slow, 0.99) == 5000.0
    assert latency_quantile((0,) * BUCKETS, 0.5) is None


@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    histograms,
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    histograms,
)
def test_a_minute_is_the_difference_of_two_readings_unless_a_count_went_down(
    r1: int, e1: int, h1: tuple[int, ...], r2: int, e2: int, h2: tuple[int, ...]
) -> None:
    before, after = Sample(r1, e1, h1), Sample(r2, e2, h2)
    delta = minute_between(before, after)
    went_down = r2 < r1 or e2 < e1 or any(b < a for a, b in zip(h1, h2, strict=True))
    if went_down:
        assert delta is None
    else:
        assert delta == Sample(r2 - r1, e2 - e1, tuple(b - a for a, b in zip(h1, h2, strict=True)))


minutes_lists = st.lists(
    st.builds(
        lambda offset, requests, errors, histogram: TrafficMinute(
            "web", at(1_800_000_000 + offset * MINUTE_S), requests, min(errors, requests), histogram
        ),
        st.integers(-30, 200),
        st.integers(0, 1000),
        st.integers(0, 1000),
        histograms,
    ),
    max_size=40,
    unique_by=lambda minute: minute.minute,
)


@settings(max_examples=200)
@given(minutes_lists, steps, st.integers(1, 150))
def test_intervals_sum_exactly_the_minutes_that_start_in_them(
    minutes: list[TrafficMinute], step: int, span_minutes: int
) -> None:
    start = (1_800_000_000 // step) * step
    end = start + span_minutes * MINUTE_S
    points = intervals(minutes, start=start, end=end, step_s=step)
    assert len(points) == math.ceil((end - start) / step)
    assert [p.start for p in points] == [at(start + i * step) for i in range(len(points))]
    stop = start + len(points) * step
    for point in points:
        inside = [m for m in minutes if point.start <= m.minute < point.start + dt.timedelta(seconds=step)]
        assert point.minutes == len(inside)
        assert point.requests == sum(m.requests for m in inside)
        assert point.errors == sum(m.errors for m in inside)
        assert point.latency_buckets == tuple(
            map(sum, zip(*[m.latency_buckets for m in inside], (0,) * BUCKETS, strict=True))
        )
        # A gap has no value at all; a rate and a quantile only come with requests and timings.
        if not point.recorded:
            assert (point.requests, point.error_rate, point.p99_ms) == (0, None, None)
        assert point.error_rate == (point.errors / point.requests if point.requests else None)
        assert point.p99_ms == latency_quantile(point.latency_buckets, 0.99)
    counted = sum(p.minutes for p in points)
    assert counted == sum(1 for m in minutes if at(start) <= m.minute < at(stop))


@settings(max_examples=100)
@given(minutes_lists, st.integers(1, 12))
def test_coarser_intervals_are_sums_of_finer_ones_and_their_p99_that_of_the_sum(
    minutes: list[TrafficMinute], factor: int
) -> None:
    """A 5-minute p99 is the p99 of the 5 minutes' requests together, never a mean of p99s."""
    step = factor * MINUTE_S
    start = (1_800_000_000 // step) * step
    end = start + 24 * step
    fine = intervals(minutes, start=start, end=end, step_s=MINUTE_S)
    coarse = intervals(minutes, start=start, end=end, step_s=step)
    for index, point in enumerate(coarse):
        parts = fine[index * factor : (index + 1) * factor]
        assert point.requests == sum(p.requests for p in parts)
        summed = tuple(map(sum, zip(*[p.latency_buckets for p in parts], strict=True)))
        assert point.latency_buckets == summed
        assert point.p99_ms == latency_quantile(summed, 0.99)


def test_an_interval_is_whole_minutes() -> None:
    with pytest.raises(ValueError, match="whole number of minutes"):
        intervals([], start=0, end=600, step_s=90)


@given(moments, st.integers(1, 48), steps)
def test_the_window_ends_with_the_interval_of_the_last_recordable_minute(
    now: float, hours: int, step: int
) -> None:
    start, end = window(now, hours=hours, step_s=step)
    last = minute_floor(now) - MINUTE_S  # the minute before the one in progress
    assert start % step == 0
    assert end % step == 0
    assert end - step <= last < end
    assert end - start >= hours * 3600 > end - start - step
