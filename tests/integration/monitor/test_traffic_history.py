"""The traffic history against a real HAProxy and a real demo app on loopback, into a real store.

Each test drives `TrafficHistory.tick` with minute starts of its own choosing (an hour ago, so the
times are plainly not the clock's): the readings are real, only which minute they stand for is
chosen. Requests are sent between two ticks and must come back as that minute's row: requests and
5xx as the client saw them, every request's latency in the histogram.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shipyard.monitor import TrafficHistory, TrafficMinute, traffic_minutes
from shipyard.monitor._traffic_history import PROXY_DIR, minute_floor
from shipyard.rollout import LATENCY_BUCKETS_MS
from shipyard.rollout.targets.haproxy import ProxyPaths
from shipyard.rollout.targets.local import LocalTarget
from shipyard.state import open_engine, session_factory
from support.haproxy import HAPROXY, demo_environ, demo_stack, get_versions, local_target, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(HAPROXY is None, reason="HAProxy is not installed (Debian's haproxy)"),
]

DEADLINE_S = 30.0
T = minute_floor(time.time()) - 3600
"""The first minute the tests read at."""
ADDED_LATENCY_MS = 40
NO_LATENCY = (0,) * len(LATENCY_BUCKETS_MS)


def at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


@pytest.fixture
def web() -> Iterator[tuple[LocalTarget, int, Path]]:
    """v1 of the demo stack's web service taking all traffic: 25 % of its answers are 500 (seeded,
    so the count is whatever the client sees) and each takes at least ADDED_LATENCY_MS."""
    environ = demo_environ(DEMO_ERROR_RATE="0.25", DEMO_LATENCY_MS=str(ADDED_LATENCY_MS))
    with local_target(environ) as (target, port, state):
        target.prepare("web", "v1", 1)
        assert wait_until(lambda: target.health("web", "v1").ready, DEADLINE_S), target.health("web", "v1")
        target.set_weights("web", {"v1": 100})
        yield target, port, state


def _stored(sessions: sessionmaker[Session], target: LocalTarget) -> list[TrafficMinute]:
    stack = target.stack
    return traffic_minutes(sessions, stack.name, stack.environment, "web", start=at(0), end=at(2**31))


def test_the_sampler_reads_the_local_targets_haproxy(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    """The HAProxy `serve` samples is the one the local target runs under the same state directory."""
    target = LocalTarget(demo_stack(8080), tmp_path / "local")
    history = TrafficHistory(sessions, target.stack, tmp_path / "local")
    assert history.paths == target.paths == ProxyPaths(tmp_path / "local" / PROXY_DIR)
    assert history.services == ("web",)


def test_a_minute_holds_the_requests_and_500s_sent_in_it_and_an_outage_is_a_gap(
    web: tuple[LocalTarget, int, Path], sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    target, port, state = web
    history = TrafficHistory(sessions, target.stack, state)
    try:
        assert history.tick(T) == []  # the first reading: the start of minute T
        answers = [status for status, _ in get_versions(port, 40)]
        failed = answers.count(500)
        assert 0 < failed < 40
        assert answers.count(200) == 40 - failed

        (minute,) = history.tick(T + 60)
        assert (minute.service, minute.minute, minute.requests, minute.errors) == ("web", at(T), 40, failed)
        assert sum(minute.latency_buckets) == 40  # every request's line was read
        # Each answer took at least 40 ms: its bucket's upper bound is 50 ms or more.
        slowest_before = LATENCY_BUCKETS_MS.index(50)
        assert sum(minute.latency_buckets[:slowest_before]) == 0
        assert minute.p50_ms is not None
        assert minute.p50_ms >= 50
        assert minute.p99_ms is not None
        assert minute.p99_ms >= minute.p50_ms

        # A minute without a request is recorded as such: 0 requests, not a gap.
        assert history.tick(T + 120) == [TrafficMinute("web", at(T + 60), 0, 0, NO_LATENCY)]

        # HAProxy down: nothing is read or recorded, and it is said once, naming HAProxy and its
        # socket, without a traceback.
        target.stop_proxy()
        with caplog.at_level(logging.INFO, logger="shipyard.monitor"):
            assert history.tick(T + 180) == []
            assert history.tick(T + 240) == []
        said = [r for r in caplog.records if r.name.startswith("shipyard.monitor")]
        assert len(said) == 1, [r.getMessage() for r in said]
        assert "HAProxy" in said[0].getMessage()
        assert str(target.paths.admin_socket) in said[0].getMessage()
        assert said[0].exc_info is None
        assert said[0].levelno == logging.WARNING

        # Back (a new HAProxy: its counters start again): the reading at T+300 starts a minute.
        target.ensure_proxy()
        assert wait_until(lambda: target.health("web", "v1").ready, DEADLINE_S)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="shipyard.monitor"):
            assert history.tick(T + 300) == []
        assert any("again" in r.getMessage() for r in caplog.records if r.name.startswith("shipyard.monitor"))
        again = [status for status, _ in get_versions(port, 10)]
        (after,) = history.tick(T + 360)
        assert (after.minute, after.requests, after.errors) == (at(T + 300), 10, again.count(500))

        # The store holds exactly these minutes: the outage (T+120 to T+240) is a gap, not zeros.
        stored = _stored(sessions, target)
        assert [(m.minute, m.requests, m.errors) for m in stored] == [
            (at(T), 40, failed),
            (at(T + 60), 0, 0),
            (at(T + 300), 10, again.count(500)),
        ]
        assert stored[0].latency_buckets == minute.latency_buckets
    finally:
        history.stop()


def test_with_no_instance_up_every_request_is_an_error_haproxy_answered(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    """HAProxy's own 503s (no server to send a request to) count: that is what users got."""
    with local_target(demo_environ()) as (target, port, state):
        target.ensure_proxy()  # HAProxy with the web backend, and no instance in it
        history = TrafficHistory(sessions, target.stack, state)
        try:
            history.tick(T)
            answers = [status for status, _ in get_versions(port, 7)]
            assert answers == [503] * 7
            (minute,) = history.tick(T + 60)
            assert (minute.requests, minute.errors, sum(minute.latency_buckets)) == (7, 7, 7)
        finally:
            history.stop()


def test_a_reading_late_in_its_minute_records_neither_minute_beside_it(
    web: tuple[LocalTarget, int, Path], sessions: sessionmaker[Session]
) -> None:
    """A reading 30 s into its minute stands for no minute's start (`serve` was suspended): the
    minutes before and after it are not recorded rather than recorded with the wrong traffic."""
    target, port, state = web
    history = TrafficHistory(sessions, target.stack, state)
    try:
        history.tick(T)
        get_versions(port, 3)
        assert history.tick(T + 60 + 30) == []
        get_versions(port, 3)
        assert history.tick(T + 120) == []
        get_versions(port, 3)
        (minute,) = history.tick(T + 180)
        assert (minute.minute, minute.requests) == (at(T + 120), 3)
        assert [m.minute for m in _stored(sessions, target)] == [at(T + 120)]
    finally:
        history.stop()


def test_one_sampler_records_a_stack_at_a_time_and_another_takes_over_when_it_stops(
    web: tuple[LocalTarget, int, Path], sessions: sessionmaker[Session]
) -> None:
    target, port, state = web
    first = TrafficHistory(sessions, target.stack, state)
    second = TrafficHistory(sessions, target.stack, state)
    try:
        first.tick(T)
        assert second.tick(T) == []
        get_versions(port, 5)
        assert len(first.tick(T + 60)) == 1
        assert second.tick(T + 60) == []  # the lease is the first's
        first.stop()
        assert second.tick(T + 120) == []  # its first reading
        get_versions(port, 2)
        (minute,) = second.tick(T + 180)
        assert (minute.minute, minute.requests) == (at(T + 120), 2)
        assert [(m.minute, m.requests) for m in _stored(sessions, target)] == [(at(T), 5), (at(T + 120), 2)]
    finally:
        first.stop()
        second.stop()


def test_minutes_older_than_the_retention_are_pruned(
    web: tuple[LocalTarget, int, Path], sessions: sessionmaker[Session]
) -> None:
    target, _, state = web
    history = TrafficHistory(sessions, target.stack, state, retention_s=120)
    try:
        for minute in range(5):
            history.tick(T + 60 * minute)
        # Read at T+240: minutes before T+120 are older than 120 s.
        assert [m.minute for m in _stored(sessions, target)] == [at(T + 120), at(T + 180)]
    finally:
        history.stop()


def test_a_minute_across_an_haproxy_restart_is_not_recorded(
    web: tuple[LocalTarget, int, Path], sessions: sessionmaker[Session]
) -> None:
    """The new HAProxy's counters start from 0: the 5 requests before its restart are gone from
    them, so the minute is a gap rather than a row saying 3."""
    target, port, state = web
    history = TrafficHistory(sessions, target.stack, state)
    try:
        history.tick(T)
        get_versions(port, 5)
        target.stop_proxy()
        target.ensure_proxy()
        assert wait_until(lambda: target.health("web", "v1").ready, DEADLINE_S)
        get_versions(port, 3)
        assert history.tick(T + 60) == []
        get_versions(port, 4)
        (minute,) = history.tick(T + 120)
        assert (minute.minute, minute.requests) == (at(T + 60), 4)
    finally:
        history.stop()
