"""The load generator's report arithmetic and arguments (its HTTP client against canned loopback
answers is in tests/integration/rollout/test_loadgen_client.py)."""

from __future__ import annotations

import pytest

from shipyard.rollout._loadgen import LoadGenerator, LoadReport, RequestRecord


def rec(
    scheduled: float, latency_ms: float, status: int | None = 200, version: str | None = "v1"
) -> RequestRecord:
    error = None if status is not None else "ConnectionRefusedError"
    return RequestRecord(scheduled, scheduled, scheduled + latency_ms / 1000, status, error, version)


def test_report_counts_by_version_and_percentiles() -> None:
    records = [rec(i * 0.01, latency_ms=1 + i % 10) for i in range(100)]  # v1: 1..10 ms, 10 each
    records += [
        rec(1.0 + i * 0.01, latency_ms=50, status=500 if i % 4 == 0 else 200, version="v2") for i in range(20)
    ]
    records += [
        rec(1.5, latency_ms=2, status=None, version=None),
        rec(1.6, latency_ms=3, status=503, version=None),
    ]
    report = LoadReport.of(reversed(records), started=0.0, stopped=2.0, rate_target=61)
    assert report.total == 122
    assert report.failed == 5 + 2
    assert report.ok == 115
    assert list(report.by_version) == [None, "v1", "v2"]
    v1, v2, none = report.by_version["v1"], report.by_version["v2"], report.by_version[None]
    assert (v1.count, v1.failed, v2.count, v2.failed, none.count, none.failed) == (100, 0, 20, 5, 2, 2)
    assert v1.p50_ms == pytest.approx(5)
    assert v1.p99_ms == pytest.approx(10)
    assert v2.p50_ms == pytest.approx(50)
    assert v2.error_rate == 0.25
    assert report.p99_ms == pytest.approx(50)
    assert report.rate_achieved == pytest.approx(122 / 2.0)
    assert report.lag_p99_ms == 0
    assert [r.scheduled for r in report.records] == sorted(r.scheduled for r in records)
    assert [(f.version, f.status) for f in report.failures][:2] == [("v2", 500), ("v2", 500)]
    assert (report.failures[-2].version, report.failures[-2].error) == (None, "ConnectionRefusedError")
    assert report.first_failure_time == pytest.approx(1.0)


def test_window_keeps_the_requests_due_in_it() -> None:
    records = [rec(t / 10, latency_ms=1, status=500 if t == 15 else 200) for t in range(30)]
    report = LoadReport.of(records, 0.0, 3.0, 10)
    before = report.window(0.0, 1.5)
    assert (before.total, before.failed, before.first_failure_time) == (15, 0, None)
    after = report.window(1.5, 10.0)
    assert (after.total, after.failed, after.first_failure_time) == (15, 1, 1.5)
    assert after.started == 1.5
    assert after.stopped == 3.0  # clipped to the run
    assert after.rate_achieved == pytest.approx(10)


def test_an_empty_report_is_all_zeros_and_nones() -> None:
    report = LoadReport.of([], 5.0, 5.0, 100)
    assert (report.total, report.failed, report.p50_ms, report.p99_ms, report.error_rate) == (
        0,
        0,
        None,
        None,
        0.0,
    )
    assert report.first_failure_time is None
    assert report.summary()["by_version"] == {}


def test_an_unsent_request_counts_as_failed_and_not_as_sent() -> None:
    unsent = RequestRecord(1.0, None, 6.0, None, "timeout: waited 5s for a free connection", None)
    report = LoadReport.of([unsent, rec(1.1, 1)], 1.0, 2.0, 2)
    assert report.failed == 1
    assert unsent.latency_s == 5.0
    assert report.rate_achieved == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "match"),
    [(("http://x/", 0), "rate_per_s"), (("ftp://x/", 10), "http"), (("http://x/", 10, 0), "connections")],
)
def test_bad_arguments(args: tuple[str, float, int] | tuple[str, float], match: str) -> None:
    url, rate, *rest = args
    with pytest.raises(ValueError, match=match):
        LoadGenerator(url, rate, connections=rest[0] if rest else 8)


def test_stop_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        LoadGenerator("http://127.0.0.1:1/", 10).stop()
