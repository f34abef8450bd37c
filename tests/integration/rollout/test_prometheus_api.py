"""The Prometheus checks against answers of Prometheus' HTTP API from a stdlib server on loopback
(test_prometheus_checks.py runs them against a real Prometheus; what needs no HTTP is unit-tested
in tests/unit/rollout/test_prometheus.py)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shipyard.errors import UserError
from shipyard.rollout._analysis import (
    PROMETHEUS_URL_ENV,
    SKIPPED,
    analyse,
    merge_checks,
    verdict_of,
)
from shipyard.rollout._model import Check, Sample, Verdict
from shipyard.rollout._prometheus import (
    PrometheusChecks,
    ReleaseContext,
    check_url,
    redacted,
)
from shipyard.spec import Analysis as Policy
from support.servers import free_port

CONTEXT = ReleaseContext("api", "production", "v2", "v1", window_s=10)


def checks(*specs: tuple[str, str, float]) -> list[Any]:
    """The policy's Prometheus checks, validated by the spec model as a user's would be."""
    policy = Policy.model_validate({"prometheus": [{"name": n, "query": q, "max": m} for n, q, m in specs]})
    return list(policy.prometheus)


def one(name: str = "depth", query: str = "q", max_: float = 100) -> Any:
    return checks((name, query, max_))[0]


# --- the HTTP API, answered by a loopback server -----------------------------------------------------------


@dataclass
class FakeApi:
    """Answers every request with `status` and `body`, after `delay_s`; records what was asked."""

    status: int = 200
    body: Any = field(default_factory=dict)
    delay_s: float = 0.0
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)


@contextlib.contextmanager
def api_server(api: FakeApi) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            api.requests.append((url.path, parse_qs(url.query)))
            time.sleep(api.delay_s)
            body = api.body.encode() if isinstance(api.body, str) else json.dumps(api.body).encode()
            with contextlib.suppress(OSError):  # the client may have given up (the timeout test)
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def success(kind: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": kind, "result": result}}


def vector(*values: str) -> dict[str, Any]:
    return success("vector", [{"metric": {"pod": str(i)}, "value": [1.7e9, v]} for i, v in enumerate(values)])


def run(api: FakeApi, query: str = 'max(q{version="{{version}}"})', max_: float = 100, **kw: Any) -> Check:
    with api_server(api) as url, PrometheusChecks([one(query=query, max_=max_)], url, **kw) as prometheus:
        (result,) = prometheus.evaluate(CONTEXT)
    return result


def test_the_query_is_sent_substituted_as_an_instant_query_with_a_timeout() -> None:
    api = FakeApi(body=vector("7"))
    result = run(api, 'max(q{version="{{version}}"}[{{window}}])')
    assert result.verdict is Verdict.PASS
    ((path, params),) = api.requests
    assert path == "/api/v1/query"
    assert params == {"query": ['max(q{version="v2"}[10s])'], "timeout": ["2s"]}


def test_a_base_url_with_a_path_prefix_is_kept() -> None:
    api = FakeApi(body=vector("7"))
    with api_server(api) as url, PrometheusChecks([one()], url + "/prometheus/") as prometheus:
        prometheus.evaluate(CONTEXT)
    assert api.requests[0][0] == "/prometheus/api/v1/query"


@pytest.mark.parametrize(
    ("body", "verdict", "value"),
    [
        (success("scalar", [1.7e9, "250"]), Verdict.FAIL, 250.0),
        (success("scalar", [1.7e9, "12.5"]), Verdict.PASS, 12.5),
        (vector("3", "150", "NaN"), Verdict.FAIL, 150.0),
        (vector("+Inf"), Verdict.FAIL, None),
        (vector(), Verdict.INCONCLUSIVE, None),
        (success("scalar", [1.7e9, "NaN"]), Verdict.INCONCLUSIVE, None),
    ],
)
def test_answers_become_verdicts(body: dict[str, Any], verdict: Verdict, value: float | None) -> None:
    result = run(FakeApi(body=body))
    assert (result.verdict, result.candidate) == (verdict, value)


@pytest.mark.parametrize(
    ("status", "error_type", "error"),
    [
        (400, "bad_data", 'invalid parameter "query": 1:5: parse error: unexpected end of input'),
        (422, "execution", "many-to-many matching not allowed"),
        (503, "timeout", "query timed out in expression evaluation"),
    ],
)
def test_a_refused_query_is_inconclusive_with_prometheus_error(
    status: int, error_type: str, error: str
) -> None:
    result = run(FakeApi(status, {"status": "error", "errorType": error_type, "error": error}))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.detail == f"depth: Prometheus refused the query ({error_type}): {error}"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (success("matrix", [{"metric": {}, "values": [[1.7e9, "1"]]}]), "range vector"),
        (success("string", [1.7e9, "hello"]), "returns a string"),
        (success("vector", [{"metric": {}, "value": [1.7e9, "not a number"]}]), "malformed vector"),
        ({"status": "success"}, "without a result"),
    ],
)
def test_an_answer_that_is_not_one_number_is_inconclusive(body: dict[str, Any], says: str) -> None:
    result = run(FakeApi(body=body))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert says in result.detail


@pytest.mark.parametrize(
    ("status", "body"), [(404, "404 page not found"), (200, "<html>Grafana</html>"), (502, "")]
)
def test_something_else_than_prometheus_at_the_url_is_inconclusive(status: int, body: str) -> None:
    result = run(FakeApi(status, body))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert f"answered HTTP {status} without a Prometheus API response" in result.detail
    assert PROMETHEUS_URL_ENV in result.detail


def test_a_slow_prometheus_is_inconclusive_within_the_timeout() -> None:
    api = FakeApi(body=vector("1"), delay_s=1.0)
    with (
        api_server(api) as url,
        PrometheusChecks(checks(("a", "q", 1), ("b", "q", 1)), url, timeout_s=0.2) as p,
    ):
        results = p.evaluate(CONTEXT)
    # Given up at the client's timeout (never the slow answer read), for every check at once.
    assert [r.verdict for r in results] == [Verdict.INCONCLUSIVE] * 2
    assert all("did not answer within 0.2 s" in r.detail for r in results)
    assert len(api.requests) == 1  # a server that did not answer is not asked again this round


def test_an_unreachable_prometheus_is_inconclusive_never_passed() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PrometheusChecks(checks(("a", "q", 1), ("b", "q", 1)), url) as prometheus:
        results = prometheus.evaluate(CONTEXT)
    assert [r.verdict for r in results] == [Verdict.INCONCLUSIVE] * 2
    assert all(f"Prometheus at {url} is unreachable" in r.detail for r in results)
    assert verdict_of(results) is Verdict.INCONCLUSIVE


def test_a_password_in_the_url_is_never_shown() -> None:
    url = f"http://reader:s3cret@127.0.0.1:{free_port()}"
    assert redacted(url) == url.replace("s3cret", "***")
    with PrometheusChecks([one()], url) as prometheus:
        (result,) = prometheus.evaluate(CONTEXT)
    assert "unreachable" in result.detail
    assert "s3cret" not in result.detail
    with pytest.raises(UserError) as exc:
        check_url("ftp://reader:s3cret@example.com")
    assert "s3cret" not in exc.value.message


def test_query_problems_are_judged_per_check_in_the_policy_order() -> None:
    api = FakeApi(body=vector("500"))
    policy = checks(
        ("unknown", "x{{nope}}", 1), ("first", 'x{v="{{stable_version}}"}', 1), ("depth", "q", 100)
    )
    first_deploy = ReleaseContext("api", "production", "v1", None, window_s=10)
    with api_server(api) as url, PrometheusChecks(policy, url) as prometheus:
        unknown, first, depth = prometheus.evaluate(first_deploy)
    assert len(api.requests) == 1  # only the usable query was sent
    assert unknown.verdict is Verdict.INCONCLUSIVE
    assert not unknown.detail.startswith(SKIPPED)
    assert first.verdict is Verdict.INCONCLUSIVE
    assert first.detail.startswith(SKIPPED)
    assert depth.verdict is Verdict.FAIL


# --- with the analysis: what a verdict is made of -------------------------------------------------------


def test_a_failed_prometheus_check_fails_the_analysis_and_names_itself_in_the_reason() -> None:
    api = FakeApi(body=vector("250"))
    policy = Policy.model_validate({"prometheus": [{"name": "depth", "query": "q", "max": 100}]})
    passing = analyse(Sample(500, 0), Sample(5000, 0), policy)
    with api_server(api) as url, PrometheusChecks(policy.prometheus, url) as prometheus:
        merged = merge_checks(passing, prometheus.evaluate(CONTEXT))
    assert merged.verdict is Verdict.FAIL
    assert merged.reason() == "depth 250 > max 100"
    assert [c.name for c in merged.checks] == [c.name for c in passing.checks]
