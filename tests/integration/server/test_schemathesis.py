"""Schemathesis over every operation of the API, against a real `shipyard serve`.

`st run --checks all` with the coverage, fuzzing and stateful phases (the stateful phase follows the
document's links), once with an admin token and once with a client token: no failure of any
check. Bounded for `make test`: a fixed seed and MAX_EXAMPLES per operation (the coverage phase
sends every case the schema defines regardless); bench/schemathesis_full.py is the long run. The
few answers the API keeps on purpose are in support/schemathesis_run.CONFIG with their reasons.

Then one test per conformance defect the runs found, each failing on the code before its fix,
against the app in-process; and, as before, the refusals without a token and the dashboard's login.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from shipyard.server import ServerConfig, create_app
from shipyard.server._dashboard import build_router as build_dashboard_router
from support.schemathesis_run import Tokens, failures, run, seed_store, seeded_server

OPEN = {"/healthz", "/readyz", "/metrics"}
MAX_EXAMPLES = 10
SET_ID = "20261201-030000-abcd"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Tokens, Path]]:
    base = Path(tmp_path_factory.mktemp("schemathesis"))
    with seeded_server(base) as (url, tokens):
        yield url, tokens, base


@pytest.mark.parametrize("scope", ["admin", "client"])
def test_schemathesis_finds_no_conformance_failure(served: tuple[str, Tokens, Path], scope: str) -> None:
    url, tokens, base = served
    result = run(url, getattr(tokens, scope), base / scope, max_examples=MAX_EXAMPLES)
    assert failures(result) == [], result.output[-20000:]
    operations = result.report["operations"]
    assert operations["selected"] >= 43, operations
    assert operations["tested"] == operations["selected"], operations
    phases = result.report["phases"]
    assert {name: phases[name]["status"] for name in ("coverage", "fuzzing", "stateful")} == {
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }, phases


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Tokens]]:
    base = Path(tmp_path_factory.mktemp("ops-api"))
    url = f"sqlite:///{base / 'state.db'}"
    tokens = seed_store(url)
    application = create_app(ServerConfig(database_url=url, job_log_dir=base / "jobs"))
    yield application, tokens
    application.state.engine.dispose()


@pytest.fixture(scope="module")
def client(app: tuple[Any, Tokens]) -> Iterator[TestClient]:
    with TestClient(app[0]) as test_client:
        yield test_client


def _admin(app: tuple[Any, Tokens]) -> dict[str, str]:
    return {"Authorization": f"Bearer {app[1].admin}"}


def test_a_405_allows_every_method_of_its_path(app: tuple[Any, Tokens], client: TestClient) -> None:
    # Starlette named the first matching route's methods only: `Allow: GET` for /backups.
    for path, allowed in [("/backups", "GET, POST"), ("/feature-flags/banner", "DELETE, GET, PATCH, PUT"),
                          ("/feature-segments/beta", "DELETE, PUT")]:  # fmt: skip
        response = client.options(path, headers=_admin(app))
        assert (response.status_code, response.headers["allow"]) == (405, allowed), path


def test_a_method_a_release_path_does_not_serve_is_405(app: tuple[Any, Tokens], client: TestClient) -> None:
    # `POST /rollouts/web/history` was the command route's, a 422 for a command named history.
    response = client.post("/rollouts/web/history", headers=_admin(app))
    assert (response.status_code, response.headers["allow"]) == (405, "GET")
    assert client.post("/rollouts/web/promotion", headers=_admin(app)).status_code == 404
    assert client.post("/rollouts/web/retry", headers=_admin(app)).status_code != 404  # still served


def test_full_is_a_boolean_of_promote_alone(app: tuple[Any, Tokens], client: TestClient) -> None:
    # `{"full": 0}` was read as false, and `{"full": true}` to retry was schema-valid yet refused:
    # promote's body says `full`, the other commands' say it may only be false.
    response = client.post("/rollouts/web/promote", json={"full": 0}, headers=_admin(app))
    assert (response.status_code, response.json()["errors"][0]["field"]) == (422, "body.full")
    paths = client.get("/openapi.json").json()["paths"]
    assert "/rollouts/{service}/promote" in paths
    command = paths["/rollouts/{service}/{command}"]["post"]
    named = next(p for p in command["parameters"] if p["name"] == "command")
    assert named["schema"]["enum"] == ["abort", "pause", "resume", "retry"]
    body = command["requestBody"]["content"]["application/json"]["schema"]
    assert "PlainCommandIn" in json.dumps(body)


def test_steering_a_service_never_released_is_404(app: tuple[Any, Tokens], client: TestClient) -> None:
    # It was 422, as if the request were malformed; reading that service's release is 404 too.
    for path in ("/rollouts/checkout/promote", "/rollouts/checkout/abort", "/rollouts/checkout"):
        method = "GET" if path.count("/") == 2 else "POST"
        assert client.request(method, path, headers=_admin(app)).status_code == 404, path


def test_the_document_declares_every_answer_the_runs_saw(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    # Unleash's register and metrics routes refuse a missing token (401); its routes and OFREP's
    # answer the app's 503 when the store cannot check a token.
    for path in ("/api/client/register", "/api/client/metrics", "/api/frontend/client/register",
                 "/api/frontend/client/metrics"):  # fmt: skip
        assert {"401", "503"} <= set(paths[path]["post"]["responses"]), path
    assert "503" in paths["/ofrep/v1/evaluate/flags"]["post"]["responses"]
    # FastAPI answers 400 to a body it cannot read (not UTF-8) on every route that takes one.
    for path in ("/backups", "/dr/drills", "/feature-flags/evaluate", "/rollouts/{service}/{command}"):
        assert "400" in paths[path]["post"]["responses"], path
    # OFREP's context may be null: the server reads it as no context, as it always did.
    schema = paths["/ofrep/v1/evaluate/flags"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "null" in schema["properties"]["context"]["type"]


def test_a_body_that_is_not_utf8_is_the_documented_400(app: tuple[Any, Tokens], client: TestClient) -> None:
    headers = {**_admin(app), "Content-Type": "application/json"}
    response = client.post("/backups", content=b"\xa9\x0b\xf1", headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_ofrep_takes_a_null_context_as_none(app: tuple[Any, Tokens], client: TestClient) -> None:
    response = client.post("/ofrep/v1/evaluate/flags", json={"context": None}, headers=_admin(app))
    assert response.status_code == 200


def test_audit_since_is_what_the_document_says(app: tuple[Any, Tokens], client: TestClient) -> None:
    def status(since: str) -> int:
        return int(client.get("/audit", params={"since": since}, headers=_admin(app)).status_code)

    # An age or a moment past the calendar's ends was an OverflowError: 500. It is that end now.
    for since in ("999999999999999d", "1000000w", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        assert status(since) == 200, since
    for since in ("7d", "2026-12-01T06:00:00Z", "2026-12-01t06:00:00.123456789z", "2026-12-01"):
        assert status(since) == 200, since
    # What the document does not allow is refused, naming the parameter.
    for since in ("0" * 64, "7d\n", "2026-02-30", "2026-12-01 06:00", "2026-12-01T06:00:00", "yesterday"):
        response = client.get("/audit", params={"since": since}, headers=_admin(app))
        assert response.status_code == 422, since
        assert response.json()["errors"][0]["field"] == "query.since", since
    parameters = client.get("/openapi.json").json()["paths"]["/audit"]["get"]["parameters"]
    parameter = next(p for p in parameters if p["name"] == "since")
    formats = {choice.get("format") for choice in parameter["schema"]["anyOf"][0]["anyOf"]}
    assert {"date-time", "date"} <= formats, parameter


def test_a_job_on_a_server_without_a_stack_is_409(app: tuple[Any, Tokens], client: TestClient) -> None:
    # A valid request the server's state refuses (it was 422, as if the request were malformed).
    for method, path, body in [("POST", "/backups", {}), ("POST", "/dr/drills", {"mode": "full"}),
                               ("POST", "/rollouts/web/deploy", {"version": "v3"}),
                               ("POST", "/rollouts/web/rollback", None),
                               ("POST", f"/backups/{SET_ID}/verify", None)]:  # fmt: skip
        response = client.request(method, path, json=body, headers=_admin(app))
        assert response.status_code == 409, (path, response.text)
        assert "serve -f SPEC" in response.json()["detail"]


def test_links_lead_from_what_an_answer_names_to_its_object(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    created = paths["/feature-flags"]["post"]["responses"]["201"]["links"]
    assert created["DeleteFlag"] == {
        "operationRef": "#/paths/~1feature-flags~1{key}/delete",
        "parameters": {"key": "$response.body#/flag/key", "header.If-Match": "$response.header.ETag"},
    }
    job = paths["/backups"]["post"]["responses"]["202"]["links"]["GetJob"]
    assert job["parameters"] == {"job_id": "$response.body#/id"}
    for links in (created, paths["/backups"]["get"]["responses"]["200"]["links"]):
        for link in links.values():  # each names an operation the document has
            _, path, method = link["operationRef"].rsplit("/", 2)
            assert method in paths[path.replace("~1", "/").replace("~0", "~")], link


def _operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [cast(Any, result).ok() for result in schema.get_all_operations()]


def test_without_a_token_everything_but_health_and_metrics_is_401(tmp_path: Path) -> None:
    # An app of its own: schemathesis's ASGI client runs the app's start-up (its scheduler) itself.
    url = f"sqlite:///{tmp_path / 'state.db'}"
    seed_store(url)
    application = create_app(ServerConfig(database_url=url, job_log_dir=tmp_path / "jobs"))
    checked = []
    for operation in _operations(application):
        if operation.path in OPEN or operation.path == "/feature-flags/stream":
            continue  # the stream is refused alike (test_api_schema), but would hold the connection

        @given(case=operation.as_strategy())
        @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: Any) -> None:
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            response = case.call()
            assert response.status_code == 401, (case.method, case.formatted_path, response.status_code)

        call()
        checked.append(operation.label)
    assert len(checked) >= 25, checked
    # No `with`: schemathesis's client has already run the app's start-up in this module.
    client = TestClient(application)
    for path in OPEN:
        assert client.get(path).status_code != 401, path
    assert client.get("/feature-flags/stream").status_code == 401
    application.state.engine.dispose()


def test_the_dashboard_sends_strangers_to_its_login(app: tuple[Any, Tokens]) -> None:
    paths = [str(getattr(route, "path", "")) for route in build_dashboard_router().routes]
    pages = sorted(
        {
            path.replace("{service}", "web").replace("{key}", "banner")
            .replace("{set_id}", SET_ID).replace("{job_id}", "1")
            .replace("{command}", "promote").replace("{rest:path}", "anything")
            for path in paths
            if path.startswith("/ui") and "login" not in path and not path.startswith("/ui/static")
        }
    )  # fmt: skip
    assert "/ui/services" in pages
    client = TestClient(app[0], follow_redirects=False)
    for path in pages:
        for method in ("GET", "POST"):
            response = client.request(method, path)
            if response.status_code in (404, 405):
                continue  # that method is not served there
            assert response.status_code in (302, 303, 307, 401, 403), (method, path, response.status_code)
            if response.status_code in (302, 303, 307):
                assert response.headers["location"].startswith("/ui/login"), (path, response.headers)
