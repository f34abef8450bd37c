"""A Prometheus that went away is a component that is down (`UnavailableError`: exit 3, HTTP 503),
said in one line naming its URL and what to check, like every other unreachable component; an
analysis still makes its checks INCONCLUSIVE with that line, never PASS. A real Prometheus is
started, answers, and is stopped."""

from __future__ import annotations

import pytest

from shipyard.errors import RolloutError, UnavailableError
from shipyard.rollout._analysis import PROMETHEUS_URL_ENV
from shipyard.rollout._model import Verdict
from shipyard.rollout._prometheus import (
    PrometheusChecks,
    PrometheusClient,
    PrometheusUnreachable,
    ReleaseContext,
)
from shipyard.spec import PrometheusCheck
from support.prometheus import prometheus_server

CONTEXT = ReleaseContext("api", "production", "v2", "v1", window_s=10)


def test_a_prometheus_that_went_away_is_unavailable_in_one_line_naming_it() -> None:
    with prometheus_server([]) as prometheus, PrometheusClient(prometheus.url) as client:
        assert client.query("vector(1)")[0].value == 1.0  # it answered while it ran
    with PrometheusClient(prometheus.url) as client, pytest.raises(PrometheusUnreachable) as caught:
        client.query("vector(1)")

    error = caught.value
    assert isinstance(error, UnavailableError)
    assert isinstance(error, RolloutError)  # handled where a release's failures are
    assert (error.exit_code, error.http_status) == (3, 503)
    assert "\n" not in error.message
    assert error.message.startswith(f"Prometheus at {prometheus.url} is unreachable: ")
    assert f"check that Prometheus runs there, or set {PROMETHEUS_URL_ENV}" in error.message

    check = PrometheusCheck(name="errors", query="vector(1)", max=1)
    with PrometheusChecks([check], prometheus.url) as checks:
        (result,) = checks.evaluate(CONTEXT)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.detail == f"errors: {error.message}"
