"""The analysis: the binomial test, the checks, and how fast it catches a bad canary without flapping."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.rollout._analysis import (
    ALPHA,
    SKIPPED,
    analyse,
    binomial_sf,
    merge_checks,
    quantile_ms,
    slower_than,
    verdict_of,
)
from shipyard.rollout._model import LATENCY_BUCKETS_MS, Check, Sample, Verdict, bucket_index
from shipyard.spec import Analysis as Policy
from unit.rollout.rollout_kit import sample

DEFAULT = Policy()


def exact_sf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1))


def mixed(fast: int, slow: int, fast_ms: float = 10, slow_ms: float = 400, errors: int = 0) -> Sample:
    buckets = [0] * len(LATENCY_BUCKETS_MS)
    buckets[bucket_index(fast_ms)] += fast
    buckets[bucket_index(slow_ms)] += slow
    return Sample(fast + slow, errors, tuple(buckets))


def check(analysis_checks: tuple[Check, ...], name: str) -> Check:
    return next(c for c in analysis_checks if c.name == name)


# --- the statistics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.001, 0.02, 0.2, 0.5, 0.97, 1.0])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 20, 63, 200])
def test_binomial_tail_matches_the_exact_sum(n: int, p: float) -> None:
    for k in range(0, n + 2):
        expected = exact_sf(k, n, p) if k <= n else 0.0
        assert binomial_sf(k, n, p) == pytest.approx(expected, abs=1e-12)


def test_binomial_tail_is_continuous_and_monotone_in_k() -> None:
    values = [binomial_sf(k / 10, 50, 0.02) for k in range(0, 501)]
    assert all(a >= b - 1e-15 for a, b in itertools.pairwise(values))
    assert binomial_sf(2.5, 50, 0.02) < binomial_sf(2, 50, 0.02)
    assert binomial_sf(2.5, 50, 0.02) > binomial_sf(3, 50, 0.02)


def test_binomial_tail_for_large_windows() -> None:
    assert binomial_sf(100_000, 1_000_000, 0.1) == pytest.approx(0.5, abs=0.01)
    assert binomial_sf(102_000, 1_000_000, 0.1) < 1e-9


def test_quantile_interpolates_inside_the_bucket() -> None:
    assert quantile_ms(Sample(), 0.99) is None
    s = sample(100, latency_ms=80)  # all in (75, 100]
    assert quantile_ms(s, 0.99) == pytest.approx(75 + 25 * 0.99)
    assert quantile_ms(s, 0.5) == pytest.approx(87.5)
    assert quantile_ms(sample(10, latency_ms=9000), 0.99) == 5000  # the open bucket: its lower bound


def test_slower_than_counts_whole_buckets_and_part_of_the_one_holding_the_threshold() -> None:
    s = mixed(90, 10, fast_ms=10, slow_ms=400)  # (7.5, 10] and (300, 500]
    assert slower_than(s, 500) == 0
    assert slower_than(s, 300) == 10
    assert slower_than(s, 400) == pytest.approx(5)
    assert slower_than(s, 8.75) == pytest.approx(10 + 45)
    assert slower_than(sample(7, latency_ms=9000), 6000) == 0


# --- the error rate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(20, 400, 3))
def test_a_20_percent_error_canary_fails_from_20_requests(n: int) -> None:
    result = analyse(sample(n, math.ceil(0.2 * n)), sample(4000, 2), DEFAULT)
    assert result.verdict is Verdict.FAIL
    assert check(result.checks, "error_rate").verdict is Verdict.FAIL


def test_the_failure_names_the_check_and_its_values() -> None:
    result = analyse(sample(202, 40), sample(2000, 0), DEFAULT)
    error = check(result.checks, "error_rate")
    assert error.candidate == pytest.approx(0.198, abs=5e-4)
    assert (error.stable, error.threshold) == (0.0, 0.02)
    assert result.reason() == "error_rate 0.198 > 0.02 (stable 0.000): 40 of 202 requests failed"


@pytest.mark.parametrize("n", [2000, 5000, 20_000, 100_000])
def test_a_healthy_half_percent_canary_with_thousands_of_requests_passes(n: int) -> None:
    result = analyse(sample(n, n // 200), sample(4 * n, n // 100), DEFAULT)
    assert result.verdict is Verdict.PASS
    assert check(result.checks, "error_rate").detail.startswith("error_rate 0.005 <= 0.02 (stable 0.003)")


def test_one_or_two_errors_never_fail() -> None:
    for n in range(1, 3000):
        for errors in (0, 1, 2):
            if errors <= n:
                verdict = analyse(sample(n, errors), sample(4000), DEFAULT).verdict
                assert verdict is not Verdict.FAIL, (n, errors)


@pytest.mark.parametrize(("n", "errors"), [(0, 0), (1, 0), (5, 1), (12, 0), (19, 1), (10, 2)])
def test_few_requests_are_inconclusive(n: int, errors: int) -> None:
    result = analyse(sample(n, errors), sample(4000), DEFAULT)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert f"{n} requests < min_requests 20" in check(result.checks, "error_rate").detail


def test_a_rate_above_the_limit_that_is_not_proven_passes_and_says_so() -> None:
    result = analyse(sample(100, 5), sample(4000), DEFAULT)
    assert result.verdict is Verdict.PASS
    assert check(result.checks, "error_rate").detail == (
        "error_rate 0.050 > 0.02 (stable 0.000): 5 of 100 requests failed, not significant (p=0.051)"
    )


def test_a_zero_error_policy_fails_on_one_error() -> None:
    zero = Policy(max_error_rate=0)
    assert analyse(sample(1, 1), sample(4000), zero).verdict is Verdict.FAIL
    assert analyse(sample(500, 0), sample(4000), zero).verdict is Verdict.PASS


def test_a_first_deploy_has_no_stable_to_compare() -> None:
    result = analyse(sample(200, 0), None, DEFAULT)
    assert result.verdict is Verdict.PASS
    assert result.stable_requests == 0
    assert "no stable version" in check(result.checks, "error_rate").detail
    ratio = check(result.checks, "p99_ratio")
    assert ratio.verdict is Verdict.INCONCLUSIVE
    assert ratio.detail == f"{SKIPPED}no stable version to compare with"


# --- latency --------------------------------------------------------------------------------------------


def test_p99_ratio_fails_a_candidate_three_times_slower() -> None:
    result = analyse(sample(200, latency_ms=280), sample(4000, latency_ms=90), DEFAULT)
    ratio = check(result.checks, "p99_ratio")
    assert result.verdict is Verdict.FAIL
    assert ratio.verdict is Verdict.FAIL
    assert ratio.threshold == 2.0
    assert ratio.candidate == pytest.approx(299, abs=1)
    assert ratio.stable == pytest.approx(100, abs=1)
    assert ratio.detail == "p99_ratio 3.00: p99 299 ms > 2 x stable 100 ms + 25 ms"


def test_p99_ratio_passes_a_candidate_one_and_a_half_times_slower() -> None:
    result = analyse(sample(200, latency_ms=140), sample(4000, latency_ms=90), DEFAULT)
    assert check(result.checks, "p99_ratio").verdict is Verdict.PASS
    assert result.verdict is Verdict.PASS


def test_p99_ratio_tolerates_a_few_slow_requests() -> None:
    # 1 % of requests 4x slower: the p99 sits at the edge, and that is not proof of a worse p99
    result = analyse(mixed(396, 4, fast_ms=50, slow_ms=400), mixed(3960, 40, 50, 90), DEFAULT)
    assert check(result.checks, "p99_ratio").verdict is Verdict.PASS
    # 5 % of them is
    result = analyse(mixed(380, 20, fast_ms=50, slow_ms=400), mixed(3960, 40, 50, 90), DEFAULT)
    assert check(result.checks, "p99_ratio").verdict is Verdict.FAIL


def test_p99_ratio_is_skipped_when_the_stable_served_too_little() -> None:
    result = analyse(sample(200, latency_ms=900), sample(5, latency_ms=10), DEFAULT)
    ratio = check(result.checks, "p99_ratio")
    assert ratio.verdict is Verdict.INCONCLUSIVE
    assert ratio.detail == f"{SKIPPED}the stable version served 5 requests < min_requests 20"
    assert result.verdict is Verdict.PASS  # a skipped check never decides


def test_p99_ms_is_an_absolute_limit() -> None:
    policy = Policy(max_p99_ms=250, max_p99_ratio=None)
    slow = analyse(sample(100, latency_ms=400), None, policy)
    assert [c.name for c in slow.checks] == ["error_rate", "log_loss", "p99_ms"]
    assert slow.verdict is Verdict.FAIL
    assert slow.reason() == "p99_ms 498 > 250"
    fast = analyse(sample(100, latency_ms=180), None, policy)
    assert fast.verdict is Verdict.PASS
    assert check(fast.checks, "p99_ms").detail == "p99_ms 200 <= 250"
    few = analyse(sample(2, latency_ms=180), None, policy)
    assert check(few.checks, "p99_ms").verdict is Verdict.INCONCLUSIVE


def test_no_latency_checks_when_the_policy_sets_none() -> None:
    result = analyse(sample(100), sample(100), Policy(max_p99_ratio=None))
    assert [c.name for c in result.checks] == ["error_rate"]


# --- Prometheus checks and merging --------------------------------------------------------------------


def test_prometheus_checks_are_reported_skipped_never_passed() -> None:
    policy = Policy.model_validate({"prometheus": [{"name": "queue-depth", "query": "max(q)", "max": 100}]})
    result = analyse(sample(500), sample(5000), policy)
    prom = check(result.checks, "queue-depth")
    assert prom.verdict is Verdict.INCONCLUSIVE
    assert prom.threshold == 100
    assert prom.detail.startswith(SKIPPED)
    assert result.verdict is Verdict.PASS
    failed = merge_checks(
        result, [Check("queue-depth", Verdict.FAIL, 250, None, 100, "queue-depth 250 > 100")]
    )
    assert failed.verdict is Verdict.FAIL
    assert [c.name for c in failed.checks] == [c.name for c in result.checks]
    assert failed.reason() == "queue-depth 250 > 100"
    added = merge_checks(result, [Check("extra", Verdict.INCONCLUSIVE, None, None, 1, "no data")])
    assert added.verdict is Verdict.INCONCLUSIVE
    assert added.checks[-1].name == "extra"


def test_verdict_of_ignores_skipped_checks() -> None:
    skipped = Check("x", Verdict.INCONCLUSIVE, None, None, 1, f"{SKIPPED}why")
    assert verdict_of([]) is Verdict.PASS
    assert verdict_of([skipped]) is Verdict.PASS
    assert verdict_of([skipped, Check("e", Verdict.INCONCLUSIVE, None, None, 1)]) is Verdict.INCONCLUSIVE


# --- how it behaves over a release: seconds to catch a bad canary, no flapping on a good one ------------


def simulate(error_rate: float, seed: int, *, req_per_s: float = 200 * 0.05, seconds: int = 60) -> int | None:
    """Requests served before the first FAIL, analysing every 2 s like the controller; None if none."""
    rng = random.Random(seed)
    requests = errors = 0
    stable = sample(4000, 8)
    for second in range(1, seconds + 1):
        arriving = int(req_per_s)
        requests += arriving
        errors += sum(rng.random() < error_rate for _ in range(arriving))
        if second % 2 == 0 and analyse(sample(requests, errors), stable, DEFAULT).verdict is Verdict.FAIL:
            return requests
    return None


def test_a_20_percent_canary_at_5_percent_of_200_rps_fails_within_seconds() -> None:
    caught = [simulate(0.2, seed) for seed in range(200)]
    assert all(c is not None for c in caught)
    served = sorted(c for c in caught if c is not None)
    assert served[len(served) // 2] <= 20  # half are caught at the 2nd look (20 requests, 2 s)
    assert served[int(len(served) * 0.95)] <= 60  # nearly all within 6 s


def test_a_healthy_canary_does_not_flap() -> None:
    assert all(simulate(0.005, seed, seconds=120) is None for seed in range(300))


@settings(max_examples=300, deadline=None)
@given(
    requests=st.integers(-5, 5000),
    errors=st.integers(-5, 5000),
    buckets=st.lists(
        st.integers(-2, 500), min_size=len(LATENCY_BUCKETS_MS), max_size=len(LATENCY_BUCKETS_MS)
    ),
    stable=st.none() | st.tuples(st.integers(0, 5000), st.integers(0, 5000)),
    rate=st.floats(0, 1),
    ratio=st.none() | st.floats(1.01, 10),
    p99=st.none() | st.floats(1, 10_000),
)
def test_analyse_never_raises_and_its_verdict_follows_its_checks(
    requests: int,
    errors: int,
    buckets: list[int],
    stable: tuple[int, int] | None,
    rate: float,
    ratio: float | None,
    p99: float | None,
) -> None:
    policy = Policy(max_error_rate=rate, max_p99_ratio=ratio, max_p99_ms=p99)
    candidate = Sample(requests, errors, tuple(buckets))
    stable_sample = sample(*stable) if stable else None
    result = analyse(candidate, stable_sample, policy)
    assert result.verdict is verdict_of(result.checks)
    for c in result.checks:
        assert c.detail
        for value in (c.candidate, c.stable, c.threshold):
            assert value is None or math.isfinite(value)
    # more errors in the same window never make the error check better
    worse = analyse(Sample(requests, errors + 10, tuple(buckets)), stable_sample, policy)
    order = {Verdict.PASS: 0, Verdict.INCONCLUSIVE: 0, Verdict.FAIL: 1}
    assert (
        order[check(worse.checks, "error_rate").verdict] >= order[check(result.checks, "error_rate").verdict]
    )


def test_alpha_is_the_documented_significance() -> None:
    assert ALPHA == 0.001


# --- what the window measured: lost log lines, the baseline, the margin ------------------------------


def logged_only(window: Sample, served: int) -> Sample:
    """`window`'s logged latencies, for `served` requests HAProxy counted (the rest lost their line)."""
    return Sample(served, window.errors, window.latency_buckets)


def test_a_window_missing_more_than_max_log_loss_of_its_lines_is_inconclusive() -> None:
    fast = sample(900, latency_ms=10)
    result = analyse(logged_only(fast, 1000), sample(4000, latency_ms=10), DEFAULT)
    loss = check(result.checks, "log_loss")
    assert loss.verdict is Verdict.INCONCLUSIVE
    assert loss.candidate == pytest.approx(0.1)
    assert loss.detail.startswith(
        "log_loss > 0.05: candidate: log lines of 100 of 1000 requests missing (10.0%)"
    )
    assert check(result.checks, "p99_ratio").verdict is Verdict.INCONCLUSIVE
    assert "max_log_loss" in check(result.checks, "p99_ratio").detail
    assert result.verdict is Verdict.INCONCLUSIVE  # never a pass
    # within the bound, the same window passes
    assert analyse(logged_only(fast, 940), sample(4000, latency_ms=10), DEFAULT).verdict is Verdict.PASS


def test_a_lossy_stable_makes_the_comparison_inconclusive() -> None:
    result = analyse(sample(500, latency_ms=10), logged_only(sample(3000, latency_ms=10), 4000), DEFAULT)
    assert check(result.checks, "p99_ratio").verdict is Verdict.INCONCLUSIVE
    assert (
        "the stable's log lines of 1000 of 4000 requests missing" in check(result.checks, "p99_ratio").detail
    )
    assert result.verdict is Verdict.INCONCLUSIVE


def test_a_slow_canary_is_failed_even_when_most_lines_were_lost() -> None:
    # 70 % of the lines lost: the slow ones seen are a lower bound, tested against all served.
    seen = sample(300, latency_ms=320)
    result = analyse(logged_only(seen, 1000), sample(4000, latency_ms=10), DEFAULT)
    assert result.verdict is Verdict.FAIL
    assert check(result.checks, "p99_ratio").verdict is Verdict.FAIL


@given(
    slow=st.integers(0, 200),
    fast=st.integers(0, 2000),
    lost=st.integers(0, 2000),
)
@settings(max_examples=300, deadline=None)
def test_losing_lines_never_turns_a_fail_into_a_pass_or_a_pass_into_a_fail(
    slow: int, fast: int, lost: int
) -> None:
    """A FAIL with lines missing is a FAIL with them all (sound); missing lines never make a PASS."""
    window = mixed(fast, slow, fast_ms=10, slow_ms=400)
    stable = sample(4000, latency_ms=10)
    whole = analyse(window, stable, DEFAULT).verdict
    partial = analyse(logged_only(window, window.requests + lost), stable, DEFAULT).verdict
    if partial is Verdict.FAIL:
        assert whole is Verdict.FAIL
    if lost > DEFAULT.max_log_loss * (window.requests + lost):
        assert partial is not Verdict.PASS


def test_the_default_max_p99_ms_comes_from_the_stables_baseline() -> None:
    policy = Policy()  # no max_p99_ms: derived as max_p99_ratio x baseline + p99_margin_ms
    slow = analyse(sample(200, latency_ms=320), None, policy, baseline_p99_ms=20)
    p99 = check(slow.checks, "p99_ms")
    assert p99.threshold == 2 * 20 + 25
    assert p99.verdict is Verdict.FAIL
    assert p99.detail.endswith("> 65 (from the stable's p99 20 ms before the release)")
    assert analyse(sample(200, latency_ms=40), None, policy, baseline_p99_ms=20).verdict is Verdict.PASS
    # an explicit max_p99_ms wins; no baseline, no derived check
    assert (
        check(
            analyse(sample(200), None, Policy(max_p99_ms=500), baseline_p99_ms=20).checks, "p99_ms"
        ).threshold
        == 500
    )
    assert "p99_ms" not in [c.name for c in analyse(sample(200), None, policy).checks]


def test_the_margin_spares_a_candidate_a_few_ms_slower_than_a_very_fast_stable() -> None:
    stable = sample(4000, latency_ms=2)
    assert analyse(sample(500, latency_ms=6), stable, DEFAULT).verdict is Verdict.PASS
    assert analyse(sample(500, latency_ms=6), stable, Policy(p99_margin_ms=0)).verdict is Verdict.FAIL
