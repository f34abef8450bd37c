"""The policy's Prometheus checks against a real Prometheus scraping a real exporter on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.rollout._analysis import verdict_of
from shipyard.rollout._model import Check, Verdict
from shipyard.rollout._prometheus import PrometheusChecks, ReleaseContext
from shipyard.spec import Analysis as Policy
from support.prometheus import MetricsExporter, Prometheus, metrics_exporter, prometheus_server
from support.releases import release_stack

pytestmark = pytest.mark.integration

METRIC = "shipyard_test_queue_depth"
CONTEXT = ReleaseContext("web", "test", "v2", "v1", window_s=10)


@pytest.fixture(scope="module")
def exporter() -> Iterator[MetricsExporter]:
    with metrics_exporter() as running:
        running.set(METRIC, {"service": "web", "version": "v1"}, 5)
        running.set(METRIC, {"service": "web", "version": "v2"}, 250)
        yield running


@pytest.fixture(scope="module")
def prometheus(exporter: MetricsExporter) -> Iterator[Prometheus]:
    with prometheus_server([exporter.address]) as running:
        running.wait_for(f'{METRIC}{{version="v2"}} == 250')
        yield running


def evaluate(url: str, *checks: tuple[str, str, float]) -> list[Check]:
    policy = Policy.model_validate({"prometheus": [{"name": n, "query": q, "max": m} for n, q, m in checks]})
    with PrometheusChecks(policy.prometheus, url) as prometheus:
        return prometheus.evaluate(CONTEXT)


def test_a_query_over_its_max_fails_with_the_value(prometheus: Prometheus) -> None:
    query = f'max_over_time({METRIC}{{service="{{{{service}}}}",version="{{{{version}}}}"}}[{{{{window}}}}])'
    (result,) = evaluate(prometheus.url, ("queue-depth", query, 100))
    assert result.verdict is Verdict.FAIL
    assert result.candidate == 250
    assert result.detail == "queue-depth 250 > max 100"


def test_a_query_under_its_max_passes(prometheus: Prometheus) -> None:
    query = f'{METRIC}{{version="{{{{stable_version}}}}"}}'
    (result,) = evaluate(prometheus.url, ("stable-depth", query, 100))
    assert result.verdict is Verdict.PASS
    assert result.candidate == 5


def test_several_series_are_judged_by_the_highest(prometheus: Prometheus) -> None:
    (result,) = evaluate(prometheus.url, ("any-depth", METRIC, 100))
    assert result.verdict is Verdict.FAIL
    assert 'highest of 2 series: {instance="' in result.detail
    assert 'version="v2"}' in result.detail


def test_a_malformed_query_is_inconclusive_with_prometheus_error(prometheus: Prometheus) -> None:
    (result,) = evaluate(prometheus.url, ("broken", f"max({METRIC}{{version=", 100))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.detail.startswith("broken: Prometheus refused the query (bad_data):")
    assert "parse error" in result.detail


def test_no_series_is_no_data(prometheus: Prometheus) -> None:
    (result,) = evaluate(prometheus.url, ("absent", f'{METRIC}{{version="nope"}}', 100))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "no data" in result.detail


def test_prometheus_down_is_inconclusive_never_passed() -> None:
    with prometheus_server([]) as stopped:
        pass  # started, ready, then stopped: nothing answers at its address any more
    results = evaluate(stopped.url, ("a", "vector(1)", 100), ("b", "vector(1)", 100))
    assert [r.verdict for r in results] == [Verdict.INCONCLUSIVE] * 2
    assert all(f"Prometheus at {stopped.url} is unreachable" in r.detail for r in results)
    assert verdict_of(results) is Verdict.INCONCLUSIVE


def test_a_release_is_rolled_back_when_a_prometheus_check_fails(
    tmp_path: Path, prometheus: Prometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's controller, with $SHIPYARD_PROMETHEUS_URL: v2's queue depth is over the max."""
    monkeypatch.setenv("SHIPYARD_PROMETHEUS_URL", prometheus.url)
    with release_stack(tmp_path, "canary") as stack:
        check = (
            "prometheus: [{name: queue-depth, max: 100,"
            f' query: \'max({METRIC}{{service="{{{{service}}}}",version="{{{{version}}}}"}})\'}}]'
        )
        spec = stack.spec.read_text()
        assert "min_requests: 20}" in spec
        stack.spec.write_text(spec.replace("min_requests: 20}", f"min_requests: 20, {check}}}"))
        result = stack.cli("deploy", "web", "--version", "v2")
        assert result.returncode == 1, result.stdout + result.stderr
        release = stack.latest()
        assert release.outcome == "rolled_back"
        assert release.reason is not None
        assert "queue-depth 250 > max 100" in release.reason
        weights = [
            r.action["weights"]["candidate"]
            for r in stack.steps(release.id)
            if r.action["type"] == "SetWeights"
        ]
        assert weights == [10, 0]  # failed at the first analysis of the 10 % step
