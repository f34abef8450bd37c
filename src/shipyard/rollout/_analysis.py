"""Is the candidate worse than the policy allows? One window of traffic in, a verdict with its evidence out.

The rule is one statistical test, used for errors and latency alike: a check FAILs only when the
window *proves* the candidate breaks its limit, with a one-sided exact binomial test at
significance `ALPHA` (0.1 %):

* error rate: H0 is "the candidate's true 5xx share is at most `max_error_rate`". With `k` errors
  in `n` requests, FAIL when P(X >= k | X ~ Binomial(n, max_error_rate)) < ALPHA.
* p99 (absolute `max_p99_ms`, or `max_p99_ratio` x the stable's p99): "p99 > T" is the same
  statement as "more than 1 % of requests are slower than T", so H0 is "the share slower than T is
  at most 1 %", tested the same way; the number slower than T is read from the histogram with
  linear interpolation inside the bucket holding T (as Prometheus' `histogram_quantile` does),
  so it may be fractional, which the test accepts (it is the regularized incomplete beta function).

A FAIL also needs at least `MIN_EVIDENCE` (3) bad requests: errors are not independent (a client
retrying one failing request makes two), and two coincident errors early in a window must not end
a release. A limit of 0 is the exception: there, one bad request is proof.

A check that is not proven bad PASSes once the candidate has served `min_requests` requests and is
INCONCLUSIVE before that. Consequences, with the default policy (2 %, min 20 requests):

* one or two errors never fail a release on their own;
* a canary failing 20 % of its requests fails after about 20 requests (4 errors in 20:
  p = 0.0006), i.e. within 2-3 s at 200 req/s x 5 % weight, before `min_requests` would even allow
  a PASS; 2 errors in 10 (p = 0.016) are not yet proof;
* a healthy 0.5 % candidate passes: seeing enough errors to reject "<= 2 %" is vanishingly
  unlikely (3 in a million at 20 requests, less with more), so it does not flap, although the
  controller looks at every interval;
* a candidate somewhat above the limit that the window cannot yet prove bad (5 errors in 100,
  p = 0.05) passes this window; at the next, larger weight the same rate is proven within seconds.

What the window measured: requests and errors are HAProxy's exact counters, latencies come from
its request log, which can lose lines. The `log_loss` check compares the two: with more than
`max_log_loss` (5 %) of a window's lines missing, on the candidate's side or the stable's, no
latency check passes and the window is INCONCLUSIVE (the strategy observes it afresh, then pauses
for an operator: never a pass). A latency FAIL stays sound with lines missing: the slow requests
seen are tested against every request counted, and the missing ones can only add slow ones.

Latency limits: `p99_ratio` compares the candidate with the stable in the same window (p99 at most
`max_p99_ratio` x the stable's + `p99_margin_ms`, so a 2 ms stable does not fail a 5 ms
candidate); `p99_ms` is the policy's `max_p99_ms` or, unset, `max_p99_ratio` x the stable's p99
measured before the release (`baseline_p99_ms`) + the margin: a bar the stable's own noise during
the release cannot raise, and the only latency check once a blue-green switch leaves the stable
no traffic to compare with.

Prometheus checks in the policy (`prometheus: [{name, query, max}]`) are queries, so they are not
judged here: `analyse` reports each as INCONCLUSIVE "skipped: no Prometheus URL (set
SHIPYARD_PROMETHEUS_URL)", which never sets the verdict (a skipped check neither blocks nor
passes a release). When a Prometheus URL is configured, the controller runs them every interval
(`_prometheus.PrometheusChecks`) and puts its checks in with `merge_checks`, in place of the
skipped ones: there a check FAILs when its value is > max and then counts toward
`failure_limit` and rollback like any other; one with no data, or that Prometheus could not
answer, is INCONCLUSIVE and, unlike a skipped one, keeps the window from passing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

from shipyard.spec import Analysis as AnalysisPolicy

from ._model import LATENCY_BUCKETS_MS, Analysis, Check, Sample, Verdict

ALPHA = 0.001
"""Significance of every check: the chance a candidate exactly at its limit fails one look."""

MIN_EVIDENCE = 3
"""Bad requests (errors, or slow ones) a FAIL needs at least, whatever the p-value, unless the limit is 0."""

QUANTILE = 0.99
SKIPPED = "skipped: "
"""How the detail of a check that was not evaluated starts; such checks do not set the verdict."""


class PrometheusCheck(Protocol):
    """A check of the policy (`spec.Analysis.prometheus` holds such): a name, a query, its max."""

    @property
    def name(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def max(self) -> float: ...


PROMETHEUS_URL_ENV = "SHIPYARD_PROMETHEUS_URL"
"""The environment variable naming the Prometheus the policy's Prometheus checks are run against."""


# --- statistics ------------------------------------------------------------------------------------


def binomial_sf(k: float, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p); `k` may be fractional (a continuous interpolation).

    Computed as the regularized incomplete beta function I_p(k, n - k + 1), exact for whole k.
    """
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    return _betainc(k, n - k + 1, p)


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 < x < 1."""
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1) / (a + b + 2):
        return min(1.0, front * _beta_fraction(a, b, x) / a)
    return max(0.0, 1.0 - front * _beta_fraction(b, a, 1 - x) / b)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def quantile_ms(sample: Sample, q: float) -> float | None:
    """The q-quantile of latency, linearly interpolated inside its bucket; None without requests.

    Like Prometheus' `histogram_quantile`: the first bucket starts at 0, and a quantile falling
    in the open last bucket is reported as that bucket's lower bound.
    """
    counts = _counts(sample)
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for upper, count in zip(LATENCY_BUCKETS_MS, counts, strict=True):
        if count and seen + count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * max(0.0, rank - seen) / count
        seen += count
        lower = upper
    return lower  # pragma: no cover - rank <= total always lands in a bucket


def slower_than(sample: Sample, threshold_ms: float) -> float:
    """How many requests took longer than `threshold_ms` (interpolated inside its bucket)."""
    slow = 0.0
    lower = 0.0
    for upper, count in zip(LATENCY_BUCKETS_MS, _counts(sample), strict=True):
        if count:
            if lower >= threshold_ms:
                slow += count
            elif upper > threshold_ms and not math.isinf(upper):
                slow += count * (upper - threshold_ms) / (upper - lower)
        lower = upper
    return slow


def _counts(sample: Sample) -> tuple[int, ...]:
    return tuple(max(0, c) for c in sample.latency_buckets)


# --- the checks --------------------------------------------------------------------------------------


def analyse(
    candidate: Sample,
    stable: Sample | None,
    policy: AnalysisPolicy,
    *,
    baseline_p99_ms: float | None = None,
) -> Analysis:
    """Judge one window of the candidate's traffic (and the stable's, to compare) against `policy`.

    `candidate` and `stable` are window samples (a later cumulative sample minus an earlier one);
    `stable` is None on a first deploy, which skips the comparisons with it. `baseline_p99_ms`: the
    stable's p99 before the release, from which an unset `max_p99_ms` is derived.
    """
    n = max(0, candidate.requests)
    stable_n = max(0, stable.requests) if stable is not None else 0
    latency: list[Check] = []
    limit_ms, derived = _p99_limit(policy, baseline_p99_ms)
    if limit_ms is not None:
        latency.append(_p99_ms(candidate, limit_ms, derived, policy))
    if policy.max_p99_ratio is not None:
        latency.append(_p99_ratio(candidate, stable, policy.max_p99_ratio, policy))
    # Errors are counted exactly by the proxy; only latency comes from the log, so what the log
    # missed matters only to a latency check.
    checks = [_error_rate(candidate, stable, policy)]
    if latency:
        checks += [_log_loss(candidate, stable, policy), *latency]
    checks += skipped_prometheus_checks(policy.prometheus)
    return Analysis(verdict_of(checks), tuple(checks), candidate_requests=n, stable_requests=stable_n)


def baseline_limit_ms(policy: AnalysisPolicy, baseline_p99_ms: float) -> float:
    """The `max_p99_ms` derived from the stable's p99 before the release."""
    return policy.p99_limit(baseline_p99_ms)


def _p99_limit(policy: AnalysisPolicy, baseline_p99_ms: float | None) -> tuple[float | None, str]:
    """The absolute p99 limit: the policy's, else derived from the baseline; and how it was derived."""
    if policy.max_p99_ms is not None:
        return policy.max_p99_ms, ""
    if baseline_p99_ms is None:
        return None, ""
    derived = f" (from the stable's p99 {_ms(baseline_p99_ms)} ms before the release)"
    return baseline_limit_ms(policy, baseline_p99_ms), derived


def log_loss(sample: Sample) -> float:
    """The share of a window's requests (HAProxy's exact count) whose log line was not received."""
    n = max(0, sample.requests)
    return max(0, n - logged(sample)) / n if n else 0.0


def logged(sample: Sample) -> int:
    """How many of a window's requests were seen in the request log (their latencies are known)."""
    return sum(_counts(sample))


def lossy(sample: Sample | None, policy: AnalysisPolicy) -> bool:
    """Whether too many of a window's log lines are missing to know its latency."""
    return sample is not None and log_loss(sample) > policy.max_log_loss


def skipped_prometheus_checks(checks: Iterable[PrometheusCheck]) -> list[Check]:
    """The policy's Prometheus checks, not run for want of a Prometheus: skipped, never passed."""
    why = f"{SKIPPED}no Prometheus URL (set {PROMETHEUS_URL_ENV})"
    return [Check(c.name, Verdict.INCONCLUSIVE, None, None, c.max, why) for c in checks]


def verdict_of(checks: Iterable[Check]) -> Verdict:
    """FAIL if any check failed; else INCONCLUSIVE if any evaluated check is; else PASS.

    Skipped checks (detail starting with SKIPPED) never decide the verdict.
    """
    evaluated = [c for c in checks if not c.detail.startswith(SKIPPED)]
    if any(c.verdict is Verdict.FAIL for c in evaluated):
        return Verdict.FAIL
    if any(c.verdict is Verdict.INCONCLUSIVE for c in evaluated):
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def merge_checks(analysis: Analysis, checks: Iterable[Check]) -> Analysis:
    """`analysis` with `checks` put in (replacing those of the same name) and its verdict recomputed.

    For the controller, to add the Prometheus checks it evaluated in place of the skipped ones.
    """
    new = {c.name: c for c in checks}
    merged = [new.pop(c.name, c) for c in analysis.checks] + list(new.values())
    return Analysis(verdict_of(merged), tuple(merged), analysis.candidate_requests, analysis.stable_requests)


def _error_rate(candidate: Sample, stable: Sample | None, policy: AnalysisPolicy) -> Check:
    n = max(0, candidate.requests)
    k = min(max(0, candidate.errors), n)
    limit = policy.max_error_rate
    rate = k / n if n else 0.0
    stable_rate = _rate(stable) if stable is not None else None
    against = f"stable {stable_rate:.3f}" if stable_rate is not None else "no stable version"
    p_value = binomial_sf(k, n, limit)
    counts = f"{k} of {n} requests failed"
    if _proven(k, p_value, limit):
        verdict = Verdict.FAIL
        detail = f"error_rate {rate:.3f} > {limit:g} ({against}): {counts}"
    elif n < policy.min_requests:
        verdict = Verdict.INCONCLUSIVE
        detail = f"error_rate {rate:.3f}: {n} requests < min_requests {policy.min_requests}"
    else:
        verdict = Verdict.PASS
        detail = f"error_rate {rate:.3f} {_relation(rate, limit)} {limit:g} ({against}): {counts}"
        if rate > limit:
            detail += f", not significant (p={p_value:.2g})"
    return Check("error_rate", verdict, rate if n else None, stable_rate, limit, detail)


def _rate(sample: Sample) -> float:
    n = max(0, sample.requests)
    return min(max(0, sample.errors), n) / n if n else 0.0


def _proven(bad: float, p_value: float, limit: float) -> bool:
    """Whether `bad` requests with this p-value prove a limit broken (see the module's docstring)."""
    if limit <= 0:
        return bad > 0
    return bad >= MIN_EVIDENCE and p_value < ALPHA


def _slow_verdict(candidate: Sample, threshold_ms: float, policy: AnalysisPolicy) -> Verdict:
    """FAIL when the window proves more than 1 % of the candidate's requests slower than the threshold.

    Sound whatever log lines were lost: the slow requests seen are a lower bound of the slow ones,
    and they are tested against every request HAProxy counted (at least the logged ones). A PASS
    needs the latencies of all but `max_log_loss` of the requests: with more missing, INCONCLUSIVE.
    """
    seen = logged(candidate)
    total = max(seen, candidate.requests)
    slow = min(slower_than(candidate, threshold_ms), float(seen))
    if _proven(slow, binomial_sf(slow, total, 1 - QUANTILE), 1 - QUANTILE):
        return Verdict.FAIL
    if seen < policy.min_requests or lossy(candidate, policy):
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def _undecided(candidate: Sample, policy: AnalysisPolicy, name: str) -> str:
    """Why a latency check of the candidate is INCONCLUSIVE."""
    seen = logged(candidate)
    if seen < policy.min_requests:
        return f"{name}: {seen} requests < min_requests {policy.min_requests}"
    return f"{name}: {_loss_words(candidate)} > max_log_loss {policy.max_log_loss:g}"


def _loss_words(sample: Sample) -> str:
    missing = max(0, sample.requests - logged(sample))
    return f"log lines of {missing} of {sample.requests} requests missing ({log_loss(sample):.1%})"


def _relation(value: float | None, limit: float) -> str:
    return "<=" if value is None or value <= limit else ">"


def _unproven(verdict: Verdict, value: float | None, limit: float) -> str:
    return ", not significant" if verdict is Verdict.PASS and value is not None and value > limit else ""


def _log_loss(candidate: Sample, stable: Sample | None, policy: AnalysisPolicy) -> Check:
    """What the window measured: INCONCLUSIVE when too many log lines (latencies) are missing."""
    loss = log_loss(candidate)
    stable_loss = log_loss(stable) if stable is not None else None
    bound = policy.max_log_loss
    parts = [f"candidate: {_loss_words(candidate)}"]
    if stable is not None:
        parts.append(f"stable: {_loss_words(stable)}")
    verdict = Verdict.INCONCLUSIVE if lossy(candidate, policy) or lossy(stable, policy) else Verdict.PASS
    detail = f"log_loss {'>' if verdict is Verdict.INCONCLUSIVE else '<='} {bound:g}: {'; '.join(parts)}"
    return Check("log_loss", verdict, loss, stable_loss, bound, detail)


def _p99_ms(candidate: Sample, limit_ms: float, derived: str, policy: AnalysisPolicy) -> Check:
    p99 = quantile_ms(candidate, QUANTILE)
    verdict = _slow_verdict(candidate, limit_ms, policy)
    if verdict is Verdict.INCONCLUSIVE:
        detail = _undecided(candidate, policy, "p99_ms")
    else:
        detail = (
            f"p99_ms {_ms(p99)} {_relation(p99, limit_ms)} {limit_ms:.4g}{derived}"
            f"{_unproven(verdict, p99, limit_ms)}"
        )
    return Check("p99_ms", verdict, p99, None, limit_ms, detail)


def _p99_ratio(candidate: Sample, stable: Sample | None, ratio: float, policy: AnalysisPolicy) -> Check:
    """The candidate's p99 against the stable's in the same window: at most ratio x it + the margin."""
    p99 = quantile_ms(candidate, QUANTILE)
    stable_seen = logged(stable) if stable is not None else 0
    stable_p99 = quantile_ms(stable, QUANTILE) if stable is not None else None
    if stable is None:
        why = "no stable version to compare with"
    elif stable_p99 is None or stable_seen < policy.min_requests:
        why = f"the stable version served {stable_seen} requests < min_requests {policy.min_requests}"
    else:
        margin = policy.p99_margin_ms
        limit_ms = policy.p99_limit(stable_p99)  # ratio x stable_p99 + margin
        verdict = _slow_verdict(candidate, limit_ms, policy)
        plus = f" + {margin:g} ms" if margin else ""
        if verdict is Verdict.PASS and lossy(stable, policy):
            verdict = Verdict.INCONCLUSIVE
            detail = f"p99_ratio: the stable's {_loss_words(stable)} > max_log_loss {policy.max_log_loss:g}"
        elif verdict is Verdict.INCONCLUSIVE:
            detail = _undecided(candidate, policy, "p99_ratio")
        else:
            measured = f"{p99 / stable_p99:.2f}" if p99 is not None and stable_p99 > 0 else "-"
            detail = (
                f"p99_ratio {measured}: p99 {_ms(p99)} ms {_relation(p99, limit_ms)} {ratio:g} x stable"
                f" {_ms(stable_p99)} ms{plus}{_unproven(verdict, p99, limit_ms)}"
            )
        return Check("p99_ratio", verdict, p99, stable_p99, ratio, detail)
    return Check("p99_ratio", Verdict.INCONCLUSIVE, p99, stable_p99, ratio, f"{SKIPPED}{why}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
