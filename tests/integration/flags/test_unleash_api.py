"""Unleash's client and frontend APIs on a real `shipyard serve`, over HTTP.

Shapes, ETag and 304, tokens as Unleash's SDKs send them (`Authorization: <token>`), metrics and
register accepted, CORS, the environment header, and a flag Unleash's SDKs could not evaluate
exactly named in the `X-Shipyard-Unleash-Omitted` header instead of being served. The SDKs
themselves are in test_unleash_node.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.flag_server import FlagServer, StateTemplate, running_flag_server

from .test_ofrep import CASES

pytestmark = pytest.mark.integration

# Beside seed 003's flags: one Unleash's SDKs cannot evaluate as shipyard does (a case-insensitive
# `in`: Unleash's IN has no such option), one that requires it, and one in another environment.
EXTRA_FLAGS: list[dict[str, Any]] = [
    {
        "key": "pro-plan",
        "default_value": False,
        "environments": {
            "production": {
                "enabled": True,
                "rules": [
                    {
                        "conditions": [
                            {"attribute": "plan", "op": "in", "value": ["Pro"], "case_insensitive": True}
                        ],
                        "value": True,
                    }
                ],
            }
        },
    },
    {
        "key": "needs-pro-plan",
        "default_value": False,
        "prerequisites": [{"flag": "pro-plan"}],
        "environments": {"production": {"enabled": True, "value": True}},
    },
    {
        "key": "staging-only",
        "default_value": False,
        "environments": {"staging": {"enabled": True, "value": True}},
    },
]


@pytest.fixture(scope="module")
def server(flag_state: StateTemplate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlagServer]:
    with running_flag_server(flag_state, tmp_path_factory.mktemp("unleash-api-server")) as running:
        flagset = {**CASES["flagset"], "flags": [*CASES["flagset"]["flags"], *EXTRA_FLAGS]}
        response = running.request("POST", "/feature-flags/import?replace=true", json=flagset)
        assert response.status_code == 200, response.text
        yield running


def call(
    server: FlagServer, method: str, path: str, token: str | None = None, **kwargs: Any
) -> httpx.Response:
    """A request as Unleash's SDKs make it: the token is the whole Authorization header."""
    headers = {
        "Authorization": token if token is not None else server.client_token,
        **kwargs.pop("headers", {}),
    }
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=10.0, **kwargs)


def toggles(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {t["name"]: t for t in response.json()["toggles"]}


# --- the client API ---------------------------------------------------------------------------------


def test_client_features_serve_every_exact_flag_and_name_the_others(server: FlagServer) -> None:
    response = call(server, "GET", "/api/client/features")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 2
    names = {f["name"] for f in body["features"]}
    assert names == {f["key"] for f in CASES["flagset"]["flags"]} | {"staging-only"}
    assert set(response.headers["X-Shipyard-Unleash-Omitted"].split(",")) == {"pro-plan", "needs-pro-plan"}
    assert body["segments"] == [
        {
            "id": 1,
            "name": "staff",
            "constraints": [
                {"contextName": "role", "operator": "IN", "values": ["ADMIN", "MODERATOR"], "inverted": False}
            ],
        }
    ]
    kill_switch = next(f for f in body["features"] if f["name"] == "payments-kill-switch")
    assert kill_switch["enabled"] is False
    staging_only = next(f for f in body["features"] if f["name"] == "staging-only")
    assert staging_only["enabled"] is False
    # The leaving out is logged too, naming the flag and the construct.
    assert "flag 'pro-plan' is left out: a case-insensitive 'in' on plan" in server.log()


def test_client_features_etag_304_and_a_change(server: FlagServer) -> None:
    first = call(server, "GET", "/api/client/features")
    etag = first.headers["ETag"]
    again = call(server, "GET", "/api/client/features", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    server.patch_flag("listing-page-size", {"description": "changed"})
    changed = call(server, "GET", "/api/client/features", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag


def test_client_features_environment_header_and_name_prefix(server: FlagServer) -> None:
    staging = call(server, "GET", "/api/client/features", headers={"X-Shipyard-Environment": "staging"})
    by_name = {f["name"]: f for f in staging.json()["features"]}
    assert by_name["staging-only"]["enabled"] is True
    assert by_name["new-feature"]["enabled"] is False
    prefixed = call(server, "GET", "/api/client/features", params={"namePrefix": "checkout-"}).json()
    assert {f["name"] for f in prefixed["features"]} == {"checkout-copy", "checkout-config"}
    assert prefixed["query"]["namePrefix"] == "checkout-"


@pytest.mark.parametrize("path", ["/api/client/register", "/api/client/metrics"])
def test_register_and_metrics_are_accepted(server: FlagServer, path: str) -> None:
    body = {
        "appName": "checkout",
        "instanceId": "i-1",
        "bucket": {"toggles": {"new-feature": {"yes": 3, "no": 1}}},
    }
    before = server.requests_served(path, 202, method="POST")
    assert call(server, "POST", path, json=body).status_code == 202
    assert (
        call(server, "POST", path, content=b"[1]", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert server.requests_served(path, 202, method="POST") == before + 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/client/features"), ("POST", "/api/client/metrics"), ("GET", "/api/frontend")],
)
def test_a_wrong_or_missing_token_is_401(server: FlagServer, method: str, path: str) -> None:
    assert call(server, method, path, token="not-a-token").status_code == 401
    response = httpx.request(method, f"{server.url}{path}", timeout=10.0)
    assert response.status_code == 401
    # shipyard's own spelling is accepted too.
    assert call(server, method, path, token=f"Bearer {server.client_token}").status_code in (200, 202)


# --- the frontend API -------------------------------------------------------------------------------


def test_frontend_lists_the_enabled_toggles_for_the_context(server: FlagServer) -> None:
    query = {"userId": "456", "properties[role]": "ADMIN", "country": "FR", "appName": "web"}
    got = toggles(call(server, "GET", "/api/frontend", params=query))
    assert got["new-feature"]["variant"] == {
        "name": "beta",
        "enabled": True,
        "feature_enabled": True,
        "featureEnabled": True,
    }
    assert got["listing-page-size"]["variant"]["payload"] == {"type": "number", "value": "100"}  # staff
    assert got["checkout-config"]["variant"]["payload"]["type"] == "json"  # country FR: a property
    assert "payments-kill-switch" not in got  # off: not listed, as Unleash does
    posted = toggles(
        call(
            server,
            "POST",
            "/api/frontend",
            json={"context": {"userId": "456", "properties": {"role": "ADMIN", "country": "FR"}}},
        )
    )
    assert posted == got


def test_frontend_serves_flags_the_client_api_leaves_out(server: FlagServer) -> None:
    # The frontend API evaluates with shipyard's own evaluator: every flag, exactly.
    got = toggles(call(server, "POST", "/api/frontend", json={"context": {"properties": {"plan": "PRO"}}}))
    assert got["pro-plan"]["enabled"] is True
    assert got["needs-pro-plan"]["enabled"] is True
    assert "pro-plan" not in toggles(call(server, "GET", "/api/frontend", params={"plan": "team"}))


def test_frontend_etag_304_cors_and_bad_bodies(server: FlagServer) -> None:
    first = call(server, "GET", "/api/frontend", params={"userId": "123"})
    etag = first.headers["ETag"]
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    again = call(server, "GET", "/api/frontend", params={"userId": "123"}, headers={"If-None-Match": etag})
    assert again.status_code == 304
    other = call(server, "GET", "/api/frontend", params={"userId": "u-9"}, headers={"If-None-Match": etag})
    assert other.status_code == 200
    preflight = httpx.options(
        f"{server.url}/api/frontend",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "GET"},
        timeout=10.0,
    )
    assert preflight.status_code == 204
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    bad = call(
        server, "POST", "/api/frontend", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400
    assert bad.headers["Access-Control-Allow-Origin"] == "*"
    for path in ("/api/frontend/client/metrics", "/api/frontend/client/register"):
        assert call(server, "POST", path, json={"appName": "web"}).status_code == 202
