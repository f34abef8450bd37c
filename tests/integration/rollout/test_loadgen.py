"""The load generator against the real demo app: rate, counts, stalls and outages."""

from __future__ import annotations

import signal
import time

import pytest

from shipyard.rollout._loadgen import LoadGenerator
from support.demo_app import running_demo_app

pytestmark = pytest.mark.integration


def test_it_sustains_500_requests_a_second_and_its_counts_match_the_app() -> None:
    with running_demo_app("v2", error_rate=0.2) as app, LoadGenerator(app.url, 500) as load:
        time.sleep(2.0)
    report = load.report
    assert report is not None
    assert report.rate_achieved >= 450, report.summary()
    assert abs(report.total - 500 * report.duration_s) <= 3
    assert report.total == report.ok + report.failed
    assert set(report.by_version) == {"v2"}
    assert report.by_version["v2"].count == report.total
    assert 0.15 <= report.error_rate <= 0.25, report.summary()
    assert report.by_version["v2"].failed == report.failed
    assert {(f.version, f.status) for f in report.failures} == {("v2", 500)}


def test_a_stall_shows_as_latency_not_as_a_lower_rate() -> None:
    with running_demo_app("v1") as app, LoadGenerator(app.url, 200, timeout_s=10) as load:
        time.sleep(0.3)
        app.process.send_signal(signal.SIGSTOP)
        stalled_at = time.monotonic()
        time.sleep(1.0)
        app.process.send_signal(signal.SIGCONT)
        time.sleep(0.3)
    report = load.report
    assert report is not None
    assert report.failed == 0
    assert abs(report.total - 200 * report.duration_s) <= 3  # the stall did not lower what was asked
    stalled = report.window(stalled_at, stalled_at + 0.5)
    assert stalled.p50_ms is not None
    assert stalled.p50_ms >= 300, stalled.summary()  # they waited for the app to wake up
    assert report.p99_ms is not None
    assert report.p99_ms >= 700


def test_an_outage_is_timed_and_its_failures_have_no_version() -> None:
    with running_demo_app("v1") as app, LoadGenerator(app.url, 200, timeout_s=2) as load:
        time.sleep(0.7)
        killed_at = time.monotonic()
        app.process.kill()
        app.process.wait(5)
        time.sleep(0.5)
    report = load.report
    assert report is not None
    assert report.window(report.started, killed_at - 0.1).failed == 0
    assert report.first_failure_time is not None
    assert report.first_failure_time >= killed_at - 0.1
    after = report.window(killed_at + 0.05, report.stopped)
    assert after.total > 0
    assert after.failed == after.total
    assert set(after.by_version) == {None}
