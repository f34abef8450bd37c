"""The load generator against the real demo app: open-loop scheduling, counts, stalls and outages.

Nothing here asserts a rate achieved or how long something took: a loaded host changes both.
Whether it sustains a given rate on a given machine is bench/rollout_bench.py's to measure.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from shipyard.rollout._loadgen import LoadGenerator, LoadReport
from support.demo_app import running_demo_app

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE_S:g} s"
        time.sleep(0.1)


def _answered(load: LoadGenerator) -> int:
    return sum(1 for r in load.snapshot().records if r.status is not None)


def _on_schedule(report: LoadReport, rate: float) -> bool:
    """Open loop: request i was due at start + i / rate, one for every tick, none skipped or
    repeated, whatever the answers took (so a stall shows as latency, never as a lower rate)."""
    due = sorted(r.scheduled for r in report.records)
    return due == [report.started + i * (1.0 / rate) for i in range(len(due))]


def test_its_requests_follow_the_clock_and_its_counts_match_the_app() -> None:
    with running_demo_app("v2", error_rate=0.2) as app, LoadGenerator(app.url, 200) as load:
        _wait_until(lambda: _answered(load) >= 1000, "1000 answers")
    report = load.report
    assert report is not None
    assert _on_schedule(report, 200), report.summary()
    assert report.total == report.ok + report.failed
    assert set(report.by_version) == {"v2"}
    assert report.by_version["v2"].count == report.total
    assert 0.15 <= report.error_rate <= 0.25, report.summary()
    assert report.by_version["v2"].failed == report.failed
    assert {(f.version, f.status) for f in report.failures} == {("v2", 500)}


def test_a_stall_shows_as_latency_not_as_a_lower_rate() -> None:
    with running_demo_app("v1") as app, LoadGenerator(app.url, 200, timeout_s=30) as load:
        _wait_until(lambda: _answered(load) >= 50, "answers before the stall")
        app.process.send_signal(signal.SIGSTOP)
        stalled_at = time.monotonic()
        time.sleep(1.0)  # the stall itself
        app.process.send_signal(signal.SIGCONT)
        woke_at = time.monotonic()
        _wait_until(lambda: _answered(load) > 0 and max(_due_answered(load)) > woke_at, "answers after it")
    report = load.report
    assert report is not None
    assert report.failed == 0
    assert _on_schedule(report, 200), report.summary()  # the stall did not lower what was asked
    # Requests due in the stall's first half second waited for the app to wake up (a lower bound:
    # a busy host only makes them wait longer).
    stalled = report.window(stalled_at, stalled_at + 0.5)
    assert stalled.p50_ms is not None
    assert stalled.p50_ms >= 300, stalled.summary()
    assert report.p99_ms is not None
    assert report.p99_ms >= 700


def _due_answered(load: LoadGenerator) -> list[float]:
    return [r.scheduled for r in load.snapshot().records if r.status is not None]


def test_an_outage_is_timed_and_its_failures_have_no_version() -> None:
    with running_demo_app("v1") as app, LoadGenerator(app.url, 200, timeout_s=2) as load:
        _wait_until(lambda: _answered(load) >= 100, "answers before the outage")
        killed_at = time.monotonic()
        app.process.kill()
        app.process.wait(DEADLINE_S)
        dead_at = time.monotonic()
        _wait_until(
            lambda: sum(1 for r in load.snapshot().records if r.scheduled > dead_at) >= 20,
            "requests to the dead app",
        )
    report = load.report
    assert report is not None
    # Everything answered before the kill succeeded; every failure came after it.
    assert all(not r.failed for r in report.records if r.end < killed_at)
    assert report.first_failure_time is not None
    assert min(r.end for r in report.records if r.failed) >= killed_at
    after = report.window(dead_at, report.stopped)
    assert after.total > 0
    assert after.failed == after.total
    assert set(after.by_version) == {None}
