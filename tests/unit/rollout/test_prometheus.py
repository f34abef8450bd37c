"""The Prometheus checks without a Prometheus and without HTTP: placeholders, how samples become a
verdict, and how the checks join the analysis.

How an answer of Prometheus' HTTP API becomes a verdict is tested against a loopback server in
tests/integration/rollout/test_prometheus_api.py, and against a real Prometheus next to it.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import UserError
from shipyard.rollout._analysis import (
    PROMETHEUS_URL_ENV,
    SKIPPED,
    analyse,
    merge_checks,
    skipped_prometheus_checks,
)
from shipyard.rollout._model import Verdict
from shipyard.rollout._prometheus import (
    PrometheusChecks,
    ReleaseContext,
    Series,
    UnusableQuery,
    judge,
    promql_duration,
    substitute,
)
from shipyard.spec import Analysis as Policy
from unit.rollout.rollout_kit import sample

CONTEXT = ReleaseContext("api", "production", "v2", "v1", window_s=10)


def checks(*specs: tuple[str, str, float]) -> list[Any]:
    """The policy's Prometheus checks, validated by the spec model as a user's would be."""
    policy = Policy.model_validate({"prometheus": [{"name": n, "query": q, "max": m} for n, q, m in specs]})
    return list(policy.prometheus)


def one(name: str = "depth", query: str = "q", max_: float = 100) -> Any:
    return checks((name, query, max_))[0]


# --- placeholders ------------------------------------------------------------------------------------


def test_every_placeholder_is_replaced() -> None:
    query = (
        'sum(rate(errors{service="{{service}}",env="{{ environment }}",version="{{version}}"}[{{window}}]))'
        ' / on() max(x{version="{{stable_version}}"})'
    )
    assert substitute(query, CONTEXT) == (
        'sum(rate(errors{service="api",env="production",version="v2"}[10s])) / on() max(x{version="v1"})'
    )


def test_promql_braces_and_plain_queries_are_left_alone() -> None:
    assert substitute('up{job="a"}', CONTEXT) == 'up{job="a"}'
    assert substitute("vector(1)", CONTEXT) == "vector(1)"


@pytest.mark.parametrize(
    ("seconds", "duration"), [(10, "10s"), (2.2, "3s"), (0, "1s"), (0.4, "1s"), (600, "600s")]
)
def test_the_window_is_a_promql_duration_in_whole_seconds(seconds: float, duration: str) -> None:
    assert promql_duration(seconds) == duration


def test_an_unknown_placeholder_names_the_known_ones() -> None:
    with pytest.raises(
        UnusableQuery, match=r"unknown placeholder \{\{args.service\}\}.*\{\{stable_version\}\}"
    ) as exc:
        substitute('x{s="{{args.service}}"}', CONTEXT)
    assert not exc.value.skipped


def test_the_stable_version_on_a_first_deploy_skips_the_check() -> None:
    first = ReleaseContext("api", "production", "v1", None, window_s=10)
    assert substitute('x{v="{{version}}"}', first) == 'x{v="v1"}'
    with pytest.raises(UnusableQuery, match="first deploy") as exc:
        substitute('x{v="{{stable_version}}"}', first)
    assert exc.value.skipped


names = st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True)


@given(service=names, environment=names, version=names, stable=names, window=st.floats(0, 86_400))
def test_substitution_leaves_no_placeholder_and_every_value(
    service: str, environment: str, version: str, stable: str, window: float
) -> None:
    context = ReleaseContext(service, environment, version, stable, window)
    query = "{{service}}|{{environment}}|{{version}}|{{stable_version}}|{{window}}"
    assert (
        substitute(query, context) == f"{service}|{environment}|{version}|{stable}|{promql_duration(window)}"
    )


# --- judging samples ---------------------------------------------------------------------------------


def test_at_most_max_passes_above_fails_with_the_value() -> None:
    at_max = judge(one(max_=100), [Series({}, 100.0)])
    assert (at_max.verdict, at_max.candidate, at_max.threshold) == (Verdict.PASS, 100.0, 100)
    assert at_max.detail == "depth 100 <= max 100"
    over = judge(one(max_=100), [Series({}, 100.5)])
    assert (over.verdict, over.candidate) == (Verdict.FAIL, 100.5)
    assert over.detail == "depth 100.5 > max 100"


def test_several_series_are_judged_by_the_highest_and_say_so() -> None:
    series = [
        Series({"__name__": "q", "version": "v2", "pod": "a"}, 3.0),
        Series({"__name__": "q", "version": "v2", "pod": "b"}, 250.0),
        Series({"__name__": "q", "version": "v2", "pod": "c"}, math.nan),
    ]
    result = judge(one(max_=100), series)
    assert (result.verdict, result.candidate) == (Verdict.FAIL, 250.0)
    assert result.detail == 'depth 250 > max 100 (highest of 2 series: {pod="b", version="v2"})'


@pytest.mark.parametrize("samples", [[], [Series({}, math.nan)], [Series({"a": "1"}, math.nan)] * 3])
def test_no_sample_or_only_nan_is_no_data(samples: list[Series]) -> None:
    result = judge(one(), samples)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.candidate is None
    assert "no data" in result.detail
    assert not result.detail.startswith(SKIPPED)  # evaluated: it keeps a window from passing


def test_infinity_fails_without_recording_a_number_json_cannot_hold() -> None:
    result = judge(one(max_=1), [Series({}, math.inf)])
    assert result.verdict is Verdict.FAIL
    assert result.candidate is None
    assert result.detail == "depth +Inf > max 1"
    below = judge(one(max_=1), [Series({}, -math.inf)])
    assert below.verdict is Verdict.PASS


@given(
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1),
    limit=st.floats(-1e6, 1e6),
)
def test_the_verdict_is_the_highest_value_against_max(values: list[float], limit: float) -> None:
    result = judge(one(max_=limit), [Series({"i": str(i)}, v) for i, v in enumerate(values)])
    assert result.candidate == max(values)
    assert result.verdict is (Verdict.FAIL if max(values) > limit else Verdict.PASS)


@pytest.mark.parametrize("url", ["127.0.0.1:9090", "ftp://example.com", "http://", "prometheus"])
def test_a_url_that_is_not_http_is_a_user_error_naming_the_variable(url: str) -> None:
    with pytest.raises(UserError, match=f"{PROMETHEUS_URL_ENV}=.*e.g. http://127.0.0.1:9090"):
        PrometheusChecks([one()], url)


# --- with the analysis: what a verdict is made of -------------------------------------------------------


def test_without_a_url_the_checks_are_skipped_and_change_no_verdict() -> None:
    policy = Policy.model_validate({"prometheus": [{"name": "depth", "query": "q", "max": 1}]})
    with PrometheusChecks(policy.prometheus, None) as prometheus:
        skipped = prometheus.evaluate(CONTEXT)
    assert skipped == skipped_prometheus_checks(policy.prometheus)
    (check,) = skipped
    assert check.verdict is Verdict.INCONCLUSIVE
    assert check.detail == f"{SKIPPED}no Prometheus URL (set {PROMETHEUS_URL_ENV})"
    passing = analyse(sample(500), sample(5000), policy)
    assert passing.verdict is Verdict.PASS
    assert merge_checks(passing, skipped).verdict is Verdict.PASS
    failing = analyse(sample(500, 200), sample(5000), policy)
    assert merge_checks(failing, skipped).verdict is Verdict.FAIL
