"""The OpenAPI document and `/docs` of a real `shipyard serve`: a bearer security scheme instead of
an `authorization` parameter, problem+json answers declared, Swagger UI served by the server itself
(nothing from a CDN), and a chunked body over the limit refused with 413."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.flag_server import FlagServer, prepare_state, running_flag_server

MIB = 1 << 20
OWN_ERROR_BODIES = ("/ofrep/", "/api/")  # OFREP and Unleash answer in their protocols' formats


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlagServer]:
    directory = Path(tmp_path_factory.mktemp("openapi"))
    with running_flag_server(prepare_state(directory / "template"), directory / "serve") as running:
        yield running


@pytest.fixture(scope="module")
def document(server: FlagServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_tokens_are_a_bearer_security_scheme_not_a_header_parameter(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http"
    assert schemes["bearer"]["scheme"] == "bearer"
    secured = 0
    for path, method, operation in _operations(document):
        names = [p["name"].lower() for p in operation.get("parameters", []) if p.get("in") == "header"]
        assert "authorization" not in names, f"{method.upper()} {path}"
        assert "x-api-key" not in names, f"{method.upper()} {path}"
        if path in ("/healthz", "/readyz", "/metrics"):
            assert "security" not in operation, path
            continue
        assert operation.get("security"), f"{method.upper()} {path} declares no security"
        secured += 1
        for requirement in operation["security"]:
            assert set(requirement) <= set(schemes)
    assert secured >= 30
    assert document["paths"]["/jobs"]["get"]["security"] == [{"bearer": []}]
    ofrep = document["paths"]["/ofrep/v1/evaluate/flags/{key}"]["post"]["security"]
    assert {"bearer": []} in ofrep
    assert {"apiKey": []} in ofrep


def test_errors_are_declared_as_problem_json(document: dict[str, Any]) -> None:
    assert "Problem" in document["components"]["schemas"]
    assert "HTTPValidationError" not in str(document)  # never sent: a bad request is a problem too
    for path, method, operation in _operations(document):
        label = f"{method.upper()} {path}"
        responses = operation["responses"]
        if path.startswith(OWN_ERROR_BODIES):
            continue
        for status, response in responses.items():
            if status.isdigit() and int(status) >= 400:
                assert "application/problem+json" in response.get("content", {}), (label, status)
        if operation.get("security"):
            assert {"401", "403", "503"} <= set(responses), label
        if "{" in path:
            assert "404" in responses, label
        if method in ("put", "patch", "delete") or (method == "post" and path != "/feature-flags/evaluate"):
            assert "409" in responses, label
        if "requestBody" in operation:
            assert "413" in responses, label
    get_flag = document["paths"]["/feature-flags/{key}"]["get"]["responses"]
    assert get_flag["404"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    assert "409" in document["paths"]["/rollouts/{service}/deploy"]["post"]["responses"]


def test_docs_load_nothing_from_another_site_and_the_server_serves_each_asset(server: FlagServer) -> None:
    page = httpx.get(f"{server.url}/docs", timeout=30)
    assert page.status_code == 200
    html = page.text
    assert "SwaggerUIBundle" in html
    assert not re.search(r"https?://", html), re.findall(r"https?://\S+", html)
    assert "cdn" not in html.lower()
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for asset in assets:
        assert asset.startswith("/"), asset
        answer = httpx.get(f"{server.url}{asset}", timeout=30)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 500, asset
        expected = next(kind for suffix, kind in kinds.items() if asset.endswith(suffix))
        assert expected in answer.headers["content-type"], asset
    assert '"validatorUrl": null' in html  # no validity badge fetched from validator.swagger.io
    assert httpx.get(f"{server.url}/openapi.json", timeout=30).status_code == 200


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"context": {"padding": "'
    sent = 0
    while sent < total:
        yield b"x" * 65536
        sent += 65536
    yield b'"}}'


@pytest.mark.parametrize("path", ["/feature-flags/evaluate", "/feature-flags", "/ofrep/v1/evaluate/flags"])
def test_a_chunked_body_over_the_limit_is_413(server: FlagServer, path: str) -> None:
    # No Content-Length: the limit can only be found while reading. /feature-flags/evaluate reads its
    # body through FastAPI, which used to turn the refusal into 400 "error parsing the body".
    headers = {"Authorization": f"Bearer {server.admin_token}", "Content-Type": "application/json"}
    with httpx.Client(timeout=60) as client:
        response = client.post(f"{server.url}{path}", content=_chunks(2 * MIB), headers=headers)
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 413
        # The server is fine afterwards, and a small chunked body still goes through.
        small = client.post(
            f"{server.url}/feature-flags/evaluate",
            content=iter([b'{"context": {}}']),
            headers=headers,
        )
        assert small.status_code == 200, small.text
