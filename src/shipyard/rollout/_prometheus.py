"""The rollout policy's Prometheus checks: each query run against a real Prometheus, judged by its max.

    with PrometheusChecks(policy.prometheus, "http://127.0.0.1:9090") as checks:
        for check in checks.evaluate(ReleaseContext("api", "production", "v2", "v1", window_s=10)):
            ...                                   # PASS, FAIL or INCONCLUSIVE, with the evidence

A query may name the release with placeholders, replaced before it is sent: `{{service}}`,
`{{environment}}`, `{{version}}` (the candidate), `{{stable_version}}` and `{{window}}` (the
analysis window as a PromQL duration, e.g. `10s`). Each query is an instant query
(`GET /api/v1/query`); its value is the scalar, or the single sample, or the highest of several
series (the detail says so). The value is judged like Argo Rollouts' rendered checks: PASS when
<= max, FAIL when > max; no sample (or NaN) is INCONCLUSIVE "no data".

Prometheus unreachable, slow (over `TIMEOUT_S`) or refusing the query makes the check
INCONCLUSIVE with the reason, never PASS: a release is not promoted on checks nobody ran. A
server that cannot be reached is not asked again in the same round, so one analysis waits at most
one timeout whatever the number of checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..errors import RolloutError, UnavailableError, UserError
from ._analysis import PROMETHEUS_URL_ENV, SKIPPED, PrometheusCheck, skipped_prometheus_checks
from ._model import Check, Verdict

TIMEOUT_S = 2.0
"""Per query: short, so a slow Prometheus does not stretch the analysis interval."""

PLACEHOLDERS = ("service", "environment", "version", "stable_version", "window")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_DETAIL_LABELS_MAX = 200
"""Characters of a series' labels quoted in a detail, at most."""


@dataclass(frozen=True)
class ReleaseContext:
    """What the placeholders of a query stand for in one analysis of one release."""

    service: str
    environment: str
    version: str
    """The candidate version."""
    stable_version: str | None
    """None on a first deploy: a query naming `{{stable_version}}` is then skipped."""
    window_s: float
    """The analysis window, in seconds."""


def promql_duration(seconds: float) -> str:
    """`seconds` as a PromQL duration in whole seconds, rounded up, at least `1s`."""
    return f"{max(1, math.ceil(seconds))}s"


class UnusableQuery(ValueError):
    """A query whose placeholders cannot be filled; `skipped` when that is normal (a first deploy)."""

    def __init__(self, message: str, *, skipped: bool = False) -> None:
        super().__init__(message)
        self.skipped = skipped


def substitute(query: str, context: ReleaseContext) -> str:
    """`query` with its placeholders replaced; UnusableQuery names an unknown one."""
    values = {
        "service": context.service,
        "environment": context.environment,
        "version": context.version,
        "stable_version": context.stable_version,
        "window": promql_duration(context.window_s),
    }

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            known = ", ".join("{{" + p + "}}" for p in PLACEHOLDERS)
            raise UnusableQuery(f"unknown placeholder {match.group(0)} in the query; use {known}")
        value = values[name]
        if value is None:
            raise UnusableQuery(
                "the query names {{stable_version}} and there is none (first deploy)", skipped=True
            )
        return value

    return _PLACEHOLDER.sub(fill, query)


def redacted(url: str) -> str:
    """`url` without its password (a URL may carry basic-auth credentials; they are never shown)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(url: str) -> str:
    """`url` if it is a usable Prometheus base URL (http or https, with a host), else UserError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(
            f"{PROMETHEUS_URL_ENV}={redacted(url)!r} is not a Prometheus URL:"
            " give its base address, e.g. http://127.0.0.1:9090"
        )
    return url


# --- the HTTP API ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One sample of an instant query's result: the series' labels and its value."""

    labels: dict[str, str]
    value: float


class PrometheusUnreachable(RolloutError, UnavailableError):
    """Prometheus did not answer (refused, timed out, or not a Prometheus API at that address): a
    component that is down, exit 3, in one line naming its URL and what to check. A RolloutError
    still, for code that handles a release's failures; an analysis makes its checks INCONCLUSIVE."""

    exit_code = 3
    http_status = 503


class QueryRefused(RolloutError):
    """Prometheus answered with an error for this query (a bad query, an execution error)."""

    http_status = 502


class PrometheusClient:
    """Instant queries against Prometheus' HTTP API (`GET /api/v1/query`)."""

    def __init__(
        self, url: str, *, timeout_s: float = TIMEOUT_S, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = check_url(url).rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.Client(timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, promql: str) -> list[Series]:
        """The samples an instant query returns now (a scalar is one sample without labels)."""
        where = redacted(self.url)
        try:
            response = self._http.get(
                f"{self.url}/api/v1/query",
                # Prometheus gives up too, rather than going on computing an answer nobody waits for.
                params={"query": promql, "timeout": promql_duration(self.timeout_s)},
            )
        except httpx.TimeoutException:
            raise PrometheusUnreachable(
                f"Prometheus at {where} did not answer within {self.timeout_s:g} s; {_CHECK}"
            ) from None
        except httpx.HTTPError as exc:
            raise PrometheusUnreachable(
                f"Prometheus at {where} is unreachable: {_reason(exc)}; {_CHECK}"
            ) from None
        body = _json(response)
        if body is None or body.get("status") not in ("success", "error"):
            raise PrometheusUnreachable(
                f"{where} answered HTTP {response.status_code} without a Prometheus API response;"
                f" is it Prometheus' base URL? (set {PROMETHEUS_URL_ENV})"
            )
        if body["status"] == "error":
            kind = body.get("errorType") or f"HTTP {response.status_code}"
            raise QueryRefused(
                f"Prometheus refused the query ({kind}): {body.get('error') or 'no reason given'}"
            )
        return _samples(body.get("data"))


_CHECK = f"check that Prometheus runs there, or set {PROMETHEUS_URL_ENV} to its base URL"


def _reason(exc: httpx.HTTPError) -> str:
    """Why, in one line (the first of the exception's)."""
    return next(iter(str(exc).strip().splitlines()), "") or type(exc).__name__


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _samples(data: Any) -> list[Series]:
    """The samples of a `data` object; QueryRefused when it is not a single value per series."""
    if not isinstance(data, dict):
        raise QueryRefused("Prometheus answered without a result")
    kind, result = data.get("resultType"), data.get("result", [])
    try:
        if kind == "scalar":
            return [Series({}, _value(result[1]))]
        if kind == "vector":
            return [Series(dict(item.get("metric", {})), _value(item["value"][1])) for item in result]
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise QueryRefused(f"Prometheus answered a malformed {kind} result: {exc!r}") from None
    if kind == "matrix":
        raise QueryRefused(
            "the query returns a range vector, not one value per series; wrap it in a function"
            " such as max_over_time(...) or rate(...)"
        )
    raise QueryRefused(f"the query returns a {kind}, not a number")


def _value(text: Any) -> float:
    # Prometheus sends sample values as strings: "1.5", "NaN", "+Inf", "-Inf".
    return float(str(text))


# --- the checks --------------------------------------------------------------------------------------


class PrometheusChecks:
    """The policy's Prometheus checks, run against the Prometheus at `url` (None: skipped, as before).

    Use as a context manager (or `close()` it): it keeps one HTTP connection for every round.
    """

    def __init__(
        self,
        checks: Sequence[PrometheusCheck],
        url: str | None,
        *,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.checks = tuple(checks)
        self.client = PrometheusClient(url, timeout_s=timeout_s, transport=transport) if url else None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def __enter__(self) -> PrometheusChecks:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def evaluate(self, context: ReleaseContext) -> list[Check]:
        """One round: every check's verdict now, in the policy's order."""
        if self.client is None:
            return skipped_prometheus_checks(self.checks)
        results: list[Check] = []
        down: str | None = None
        for check in self.checks:
            try:
                query = substitute(check.query, context)
            except UnusableQuery as exc:
                detail = f"{SKIPPED}{check.name}: {exc}" if exc.skipped else f"{check.name}: {exc}"
                results.append(Check(check.name, Verdict.INCONCLUSIVE, None, None, check.max, detail))
                continue
            if down is not None:
                results.append(_inconclusive(check, down))
                continue
            try:
                samples = self.client.query(query)
            except PrometheusUnreachable as exc:
                down = exc.message
                results.append(_inconclusive(check, down))
                continue
            except QueryRefused as exc:
                results.append(_inconclusive(check, exc.message))
                continue
            results.append(judge(check, samples))
        return results


def _inconclusive(check: PrometheusCheck, why: str) -> Check:
    return Check(check.name, Verdict.INCONCLUSIVE, None, None, check.max, f"{check.name}: {why}")


def judge(check: PrometheusCheck, samples: Iterable[Series]) -> Check:
    """The verdict on one query's samples: the highest value against `check.max`."""
    valued = [s for s in samples if not math.isnan(s.value)]
    if not valued:
        return _inconclusive(check, "no data (the query returned no sample)")
    worst = max(valued, key=lambda s: s.value)
    value = worst.value
    failed = value > check.max
    detail = f"{check.name} {_number(value)} {'>' if failed else '<='} max {check.max:g}"
    if len(valued) > 1:
        detail += f" (highest of {len(valued)} series: {_labels(worst.labels)})"
    # Infinite values are kept out of the recorded number (stored as JSON, which has none).
    recorded = value if math.isfinite(value) else None
    return Check(check.name, Verdict.FAIL if failed else Verdict.PASS, recorded, None, check.max, detail)


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


def _labels(labels: dict[str, str]) -> str:
    # The metric's name adds nothing to the check's name; the other labels say which series.
    text = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__") + "}"
    return text if len(text) <= _DETAIL_LABELS_MAX else text[: _DETAIL_LABELS_MAX - 1] + "…"
