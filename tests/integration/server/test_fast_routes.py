"""The evaluation routes' fast path (`server._fast`) answers exactly as the FastAPI routes do.

Two apps over one SQLite store: one with the fast routes, one without (`fast_routes=False`, every
request through FastAPI). Every request goes to both, and the status, the body's bytes and the
headers must be the same: successes, unknown flags, refused and unknown tokens, bodies that are not
JSON, contexts of every shape. The fast answers must also be measured and logged like any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.server import ServerConfig, _auth, create_app
from shipyard.tokens import create_token, revoke_token
from support.api import metric_value

pytestmark = pytest.mark.integration

FLAGS: list[dict[str, Any]] = [
    {
        "key": "new-checkout",
        "type": "boolean",
        "defaultValue": False,
        "environments": {
            "production": {
                "enabled": True,
                "rules": [
                    {
                        "conditions": [{"attribute": "role", "op": "in", "value": ["USER", "ADMIN"]}],
                        "rollout": {"percent": 30},
                        "value": True,
                    }
                ],
            },
            "staging": {"enabled": False},
        },
    },
    {
        "key": "greeting",
        "type": "string",
        "defaultValue": "grüß dich",
        "description": "non-ASCII values and metadata",
        "environments": {
            "production": {
                "enabled": True,
                "rules": [
                    {"conditions": [{"attribute": "country", "op": "in", "value": ["FR"]}], "value": "salut"}
                ],
            }
        },
    },
]
ROUTE = "/feature-flags/{key}/value"


@dataclass
class Pair:
    fast: TestClient
    full: TestClient
    client: dict[str, str]
    admin: dict[str, str]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    fast_app = create_app(ServerConfig(database_url=url))
    full_app = create_app(ServerConfig(database_url=url, fast_routes=False))
    with fast_app.state.sessions() as session:
        admin = {"Authorization": f"Bearer {create_token(session, 'ops', 'admin')}"}
        client = {"Authorization": f"Bearer {create_token(session, 'web', 'client')}"}
    with TestClient(fast_app) as fast, TestClient(full_app) as full:
        for flag in FLAGS:
            assert fast.post("/feature-flags", headers=admin, json=flag).status_code == 201
        yield Pair(fast, full, client, admin)
    fast_app.state.engine.dispose()
    full_app.state.engine.dispose()


_COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "www-authenticate",
)


def _same(pair: Pair, method: str, path: str, **kwargs: Any) -> Any:
    """Send the request to both apps twice (the first may verify the token the slow way); the
    answers must be identical. Returns the fast app's last response."""
    for _ in range(2):
        fast = pair.fast.request(method, path, **kwargs)
        full = pair.full.request(method, path, **kwargs)
        assert (fast.status_code, fast.content) == (full.status_code, full.content), (method, path, kwargs)
        for name in _COMPARED_HEADERS:
            assert fast.headers.get(name) == full.headers.get(name), (name, method, path)
    return fast


def test_value_answers_match_fastapis(pair: Pair) -> None:
    for query in (
        "role=USER&userId=1",
        "role=USER&userId=42&environment=staging",
        "role=ADMIN&userId=7&role=GUEST",  # a repeated name: the last value, as Starlette reads it
        "userId=",
        "",
        "country=FR",
        "plan=pro&userId=%C3%A9l%C3%A8ve&environment=",
    ):
        for key in ("new-checkout", "greeting", "missing", "gr%C3%BC%C3%9F"):
            _same(pair, "GET", f"/feature-flags/{key}/value?{query}", headers=pair.client)
    assert (
        _same(pair, "GET", "/feature-flags/greeting/value", headers=pair.client).json()["value"]
        == "grüß dich"
    )
    assert _same(pair, "GET", "/feature-flags/missing/value", headers=pair.client).status_code == 404


def test_refusals_match_fastapis(pair: Pair) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer shy_client_not-a-token"},
        {"Authorization": pair.client["Authorization"].removeprefix("Bearer ")},
        {"Authorization": ""},
    ):
        assert _same(pair, "GET", "/feature-flags/new-checkout/value", headers=headers).status_code == 401
        path = "/ofrep/v1/evaluate/flags/new-checkout"
        assert _same(pair, "POST", path, headers=headers, json={"context": {}}).status_code == 401


def test_ofrep_answers_match_fastapis(pair: Pair) -> None:
    token = pair.client["Authorization"].removeprefix("Bearer ")
    for headers in (pair.client, {"X-API-Key": token}, {**pair.client, "X-Shipyard-Environment": "staging"}):
        for body in (
            b'{"context":{"targetingKey":"u1","role":"USER"}}',
            b'{"context":{"targetingKey":"u1","role":"USER","environment":"staging"}}',
            b'{"context":{"country":"FR"}}',
            b"{}",
            b"",
            b"not json",
            b'{"context":[1]}',
            b"[1]",
            b'{"context":{"n":NaN}}',  # the standard library's JSON, which orjson refuses
            '{"context":{"targetingKey":"é"}}'.encode("utf-16"),
        ):
            for key in ("new-checkout", "greeting", "missing"):
                _same(pair, "POST", f"/ofrep/v1/evaluate/flags/{key}", headers=headers, content=body)


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.lists(
        st.tuples(st.sampled_from(["userId", "role", "environment", "country", "plan"]) | _TEXT, _TEXT),
        max_size=5,
    ),
    key=st.sampled_from(["new-checkout", "greeting"]),
)
def test_any_query_gets_the_same_value(pair: Pair, params: list[tuple[str, str]], key: str) -> None:
    _same(pair, "GET", f"/feature-flags/{key}/value?{urlencode(params)}", headers=pair.client)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    context=st.dictionaries(
        st.sampled_from(["targetingKey", "role", "environment", "country"]) | _TEXT,
        _TEXT | st.integers() | st.booleans() | st.none() | st.lists(_TEXT, max_size=2),
        max_size=4,
    ),
    key=st.sampled_from(["new-checkout", "greeting"]),
)
def test_any_context_gets_the_same_ofrep_answer(pair: Pair, context: dict[str, Any], key: str) -> None:
    _same(pair, "POST", f"/ofrep/v1/evaluate/flags/{key}", headers=pair.client, json={"context": context})


def _evaluate_and_read_access_lines(pair: Pair, caplog: pytest.LogCaptureFixture) -> list[tuple[Any, ...]]:
    """Five /value and one OFREP evaluation that succeed, and one of an unknown flag (404)."""
    pair.fast.get("/feature-flags/new-checkout/value", headers=pair.client)  # verifies the token
    caplog.set_level(logging.INFO, logger="shipyard.access")
    for user in range(5):
        response = pair.fast.get(
            f"/feature-flags/new-checkout/value?userId={user}&role=USER", headers=pair.client
        )
        assert response.status_code == 200
    response = pair.fast.post(
        "/ofrep/v1/evaluate/flags/new-checkout", headers=pair.client, json={"context": {"targetingKey": "u"}}
    )
    assert response.status_code == 200
    assert pair.fast.get("/feature-flags/no-such-flag/value", headers=pair.client).status_code == 404
    return [
        tuple(getattr(r, name, None) for name in ("route", "status", "actor", "query"))
        for r in caplog.records
        if r.name == "shipyard.access"
    ]


def test_fast_answers_are_measured_and_only_failed_evaluations_logged(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    lines = _evaluate_and_read_access_lines(pair, caplog)
    assert lines == [(ROUTE, 404, "token:web", None)]
    metrics = pair.fast.get("/metrics").text
    count = metric_value(
        metrics, "shipyard_http_request_duration_seconds_count", method="GET", route=ROUTE, code="200"
    )
    assert count == 6
    assert metric_value(metrics, "shipyard_flag_evaluations_total") == 6
    ofrep = metric_value(
        metrics,
        "shipyard_http_request_duration_seconds_count",
        method="POST",
        route="/ofrep/v1/evaluate/flags/{key}",
        code="200",
    )
    assert ofrep == 1


def test_log_evaluations_logs_every_fast_answer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    app = create_app(ServerConfig(database_url=url, log_evaluations=True))
    with app.state.sessions() as session:
        admin = {"Authorization": f"Bearer {create_token(session, 'ops', 'admin')}"}
        client = {"Authorization": f"Bearer {create_token(session, 'web', 'client')}"}
    with TestClient(app) as fast:
        assert fast.post("/feature-flags", headers=admin, json=FLAGS[0]).status_code == 201
        lines = _evaluate_and_read_access_lines(Pair(fast, fast, client, admin), caplog)
    app.state.engine.dispose()
    assert lines == [(ROUTE, 200, "token:web", "userId=***&role=***")] * 5 + [
        ("/ofrep/v1/evaluate/flags/{key}", 200, "token:web", None),
        (ROUTE, 404, "token:web", None),
    ]


def _value(pair: Pair) -> int:
    return pair.fast.get("/feature-flags/new-checkout/value?userId=1", headers=pair.client).status_code


def test_an_expired_token_is_rechecked_in_the_background_and_a_revocation_then_refuses(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _value(pair) == 200  # verified: cached for CACHE_SECONDS
    with pair.fast.app.state.sessions() as session:  # type: ignore[attr-defined]
        revoke_token(session, "web")
    assert _value(pair) == 200  # still trusted: within CACHE_SECONDS
    later = time.monotonic() + _auth.CACHE_SECONDS + 1
    monkeypatch.setattr(_auth.time, "monotonic", lambda: later)
    # Just expired: answered from the cache while one re-check runs; once it is back, refused.
    statuses = [_value(pair)]
    deadline = time.time() + 30  # a bound for a broken re-check, not a speed requirement
    while statuses[-1] == 200 and time.time() < deadline:
        time.sleep(0.01)
        statuses.append(_value(pair))
    assert statuses[0] == 200  # no herd of full checks at the expiry
    assert statuses[-1] == 401
    assert set(statuses[:-1]) == {200}


def test_a_token_long_past_its_check_takes_the_full_way(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _value(pair) == 200
    with pair.fast.app.state.sessions() as session:  # type: ignore[attr-defined]
        revoke_token(session, "web")
    later = time.monotonic() + _auth.CACHE_SECONDS + _auth.REFRESH_GRACE_SECONDS + 1
    monkeypatch.setattr(_auth.time, "monotonic", lambda: later)
    assert _value(pair) == 401  # no stale answer: checked before answering
