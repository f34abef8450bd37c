"""OFREP (the OpenFeature Remote Evaluation Protocol) on a real `shipyard serve`.

The protocol itself over HTTP (shapes, status codes, error codes, ETag and 304, authentication,
CORS), then PyPI's official `openfeature-provider-ofrep` under the OpenFeature SDK evaluating
every seed-003 flag type and rule kind, compared with shipyard's own evaluator, and seeing a
change made through the API without a new client.

The flags and contexts are in tests/node/ofrep-flags.json, shared with the Node and browser tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails

from shipyard.flags import Evaluation, Evaluator, FlagSet, compile_flagset
from support.flag_server import FlagServer, StateTemplate, running_flag_server

pytestmark = pytest.mark.integration

CASES: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "node" / "ofrep-flags.json").read_text()
)
ENV: str = CASES["environment"]
FLAGS: list[dict[str, Any]] = CASES["flagset"]["flags"]
TYPES: dict[str, str] = {f["key"]: f["type"] for f in FLAGS}
UNNAMED_VARIANT = {"STATIC": "default", "DEFAULT": "default", "DISABLED": "disabled"}


def shipyard_context(context: dict[str, Any]) -> dict[str, Any]:
    """The context shipyard's evaluator sees for an OFREP one: `targetingKey` is the `userId`."""
    if "targetingKey" in context:
        return {**context, "userId": context["targetingKey"]}
    return dict(context)


def expected_variant(evaluation: Evaluation) -> str:
    return evaluation.variant or UNNAMED_VARIANT.get(str(evaluation.reason), "rule")


def load_flags(server: FlagServer, flagset: dict[str, Any] | None = None) -> Evaluator:
    """Import the shared flag set into `server`; shipyard's own evaluator over the same flags."""
    response = server.request("POST", "/feature-flags/import", json=flagset or CASES["flagset"])
    assert response.status_code == 200, response.text
    return compile_flagset(FlagSet.from_data(server.request("GET", "/feature-flags").json()))


def ofrep(server: FlagServer, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    """POST to an OFREP route with the client token (as a NestJS or Next.js app would hold)."""
    headers = {"Authorization": f"Bearer {server.client_token}", **kwargs.pop("headers", {})}
    return httpx.post(
        f"{server.url}/ofrep/v1/{path}",
        headers=headers,
        timeout=10.0,
        **({"json": body} if body is not None else {}),
        **kwargs,
    )


@pytest.fixture(scope="module")
def server(flag_state: StateTemplate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlagServer]:
    """One server for the file (starting one costs seconds); each test re-imports the flags."""
    with running_flag_server(flag_state, tmp_path_factory.mktemp("ofrep-server")) as running:
        yield running


@pytest.fixture
def flag_server(server: FlagServer) -> FlagServer:
    return server


@pytest.fixture
def evaluator(flag_server: FlagServer) -> Evaluator:
    """The shared flags as a test starts (the import undoes an earlier test's change)."""
    return load_flags(flag_server)


@pytest.fixture
def client(flag_server: FlagServer, evaluator: Evaluator) -> Iterator[OpenFeatureClient]:
    """An OpenFeature client over the official OFREP provider, bound to its own domain."""
    token = flag_server.client_token
    provider = OFREPProvider(flag_server.url, headers_factory=lambda: {"Authorization": f"Bearer {token}"})
    api.set_provider(provider, "shipyard-ofrep")
    yield api.get_client("shipyard-ofrep")
    api.clear_providers()


def details(
    client: OpenFeatureClient, key: str, context: dict[str, Any], default: Any
) -> FlagEvaluationDetails[Any]:
    attributes = {k: v for k, v in context.items() if k != "targetingKey"}
    of_context = EvaluationContext(targeting_key=context.get("targetingKey"), attributes=attributes)
    if isinstance(default, bool):
        return client.get_boolean_details(key, default, of_context)
    if isinstance(default, str):
        return client.get_string_details(key, default, of_context)
    if isinstance(default, int):
        return client.get_integer_details(key, default, of_context)
    if isinstance(default, float):
        return client.get_float_details(key, default, of_context)
    return client.get_object_details(key, default, of_context)


def default_for(key: str, expected: Any) -> Any:
    """The caller's default for `key`: of the type OpenFeature asks with (integer or float)."""
    default = CASES["defaults"][TYPES[key]]
    if TYPES[key] == "number" and isinstance(expected, float):
        return float(default)
    return default


# --- the protocol over HTTP ---------------------------------------------------------------------


def test_single_evaluation_answers_the_protocol_shape(flag_server: FlagServer, evaluator: Evaluator) -> None:
    response = ofrep(flag_server, "evaluate/flags/new-feature", {"context": {"targetingKey": "123"}})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "key": "new-feature",
        "value": True,
        "reason": "TARGETING_MATCH",
        "variant": "beta",
        "metadata": {
            "type": "boolean",
            "kind": "release",
            "owner": "web-team",
            "description": "New feature flag (seed 003's example)",
            "environment": ENV,
            "flagSetVersion": evaluator.version,
        },
    }
    # No body at all is an empty context (the flag's fallthrough for nobody in particular).
    bare = httpx.post(
        f"{flag_server.url}/ofrep/v1/evaluate/flags/listing-page-size",
        headers={"Authorization": f"Bearer {flag_server.client_token}"},
        timeout=10.0,
    )
    assert bare.status_code == 200, bare.text
    assert (bare.json()["value"], bare.json()["reason"], bare.json()["variant"]) == (40, "DEFAULT", "default")


def test_errors_carry_the_protocols_codes(flag_server: FlagServer, evaluator: Evaluator) -> None:
    missing = ofrep(flag_server, "evaluate/flags/no-such-flag", {"context": {}})
    assert missing.status_code == 404
    assert missing.json()["key"] == "no-such-flag"
    assert missing.json()["errorCode"] == "FLAG_NOT_FOUND"
    assert "no-such-flag" in missing.json()["errorDetails"]

    not_json = ofrep(
        flag_server,
        "evaluate/flags/new-feature",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status_code == 400
    assert not_json.json()["errorCode"] == "PARSE_ERROR"
    assert not_json.json()["key"] == "new-feature"

    bad_context = ofrep(flag_server, "evaluate/flags/new-feature", {"context": ["targetingKey", "123"]})
    assert bad_context.status_code == 400
    assert bad_context.json()["errorCode"] == "INVALID_CONTEXT"
    assert "context must be an object" in bad_context.json()["errorDetails"]

    bulk_bad = ofrep(flag_server, "evaluate/flags", {"context": "123"})
    assert bulk_bad.status_code == 400
    assert bulk_bad.json()["errorCode"] == "INVALID_CONTEXT"


def test_a_client_token_is_required(flag_server: FlagServer, evaluator: Evaluator) -> None:
    url = f"{flag_server.url}/ofrep/v1/evaluate/flags/new-feature"
    assert httpx.post(url, json={}, timeout=10.0).status_code == 401
    wrong = httpx.post(url, json={}, headers={"Authorization": "Bearer shy_client_nope"}, timeout=10.0)
    assert wrong.status_code == 401
    assert wrong.headers["access-control-allow-origin"] == "*"  # a browser can read why
    # The protocol's other scheme: the token as an API key.
    by_key = httpx.post(url, json={}, headers={"X-API-Key": flag_server.client_token}, timeout=10.0)
    assert by_key.status_code == 200, by_key.text


def test_bulk_evaluation_has_an_etag_that_follows_the_flags_and_the_context(
    flag_server: FlagServer, evaluator: Evaluator
) -> None:
    context = {"targetingKey": "admin-1", "role": "ADMIN", "country": "DE", "plan": "pro"}
    first = ofrep(flag_server, "evaluate/flags", {"context": context})
    assert first.status_code == 200, first.text
    etag = first.headers["etag"]
    body = first.json()
    assert sorted(f["key"] for f in body["flags"]) == sorted(TYPES)  # every flag, in key order
    assert body["metadata"] == {"environment": ENV, "flagSetVersion": evaluator.version}
    for answer in body["flags"]:
        expected = evaluator.evaluate(answer["key"], shipyard_context(context), ENV)
        assert answer["value"] == expected.value, answer
        assert answer["reason"] == str(expected.reason), answer
        assert answer["variant"] == expected_variant(expected), answer
        assert answer["metadata"]["type"] == TYPES[answer["key"]]

    again = ofrep(flag_server, "evaluate/flags", {"context": context}, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["etag"] == etag
    assert again.content == b""

    other = ofrep(
        flag_server, "evaluate/flags", {"context": {"targetingKey": "u-1"}}, headers={"If-None-Match": etag}
    )
    assert other.status_code == 200  # another context's answer is never "not modified"
    assert other.headers["etag"] != etag

    flag_server.patch_flag("listing-page-size", {"environments": {ENV: {"value": 60}}})
    changed = ofrep(flag_server, "evaluate/flags", {"context": context}, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["metadata"]["flagSetVersion"] > evaluator.version


def test_the_environment_comes_from_the_context_or_a_header(
    flag_server: FlagServer, evaluator: Evaluator
) -> None:
    # The flags are configured for production only: elsewhere each is off (its default, DISABLED).
    by_context = ofrep(
        flag_server, "evaluate/flags/listing-page-size", {"context": {"environment": "staging"}}
    )
    assert (by_context.json()["value"], by_context.json()["reason"]) == (20, "DISABLED")
    assert by_context.json()["metadata"]["environment"] == "staging"
    by_header = ofrep(
        flag_server, "evaluate/flags", {"context": {}}, headers={"X-Shipyard-Environment": "staging"}
    )
    assert {f["reason"] for f in by_header.json()["flags"]} == {"DISABLED"}
    assert by_header.json()["metadata"]["environment"] == "staging"


def test_a_browser_on_another_origin_may_call(flag_server: FlagServer, evaluator: Evaluator) -> None:
    preflight = httpx.options(
        f"{flag_server.url}/ofrep/v1/evaluate/flags",
        headers={
            "Origin": "http://127.0.0.1:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, if-none-match",
        },
        timeout=10.0,
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "if-none-match"} <= {h.strip() for h in allowed.split(",")}
    answer = ofrep(
        flag_server, "evaluate/flags", {"context": {}}, headers={"Origin": "http://127.0.0.1:3000"}
    )
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "etag" in answer.headers["access-control-expose-headers"].lower()


# --- PyPI's OFREP provider under the OpenFeature SDK --------------------------------------------


def test_the_python_provider_gives_shipyards_answers_for_every_type_and_rule(
    client: OpenFeatureClient, evaluator: Evaluator
) -> None:
    seen: dict[str, set[Any]] = {key: set() for key in TYPES}
    for context in CASES["contexts"]:
        for key, flag_type in TYPES.items():
            expected = evaluator.evaluate(key, shipyard_context(context), ENV)
            got = details(client, key, context, default_for(key, expected.value))
            where = f"{key} for {context}"
            assert got.error_code is None, f"{where}: {got.error_code} {got.error_message}"
            assert got.value == expected.value, where
            assert got.reason == str(expected.reason), where
            assert got.variant == expected_variant(expected), where
            assert got.flag_metadata["type"] == flag_type, where
            seen[key].add(json.dumps(got.value, sort_keys=True))
    # Each rule kind decided something: both sides of the rollout and the split, the segment, the
    # attribute rules (a flag that always answered the same would prove nothing).
    assert all(len(values) == 2 for key, values in seen.items() if key != "payments-kill-switch"), seen


def test_the_python_provider_reports_errors_as_openfeature_codes(
    client: OpenFeatureClient, evaluator: Evaluator
) -> None:
    missing = client.get_boolean_details("no-such-flag", True, EvaluationContext("123"))
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    mismatch = client.get_integer_details("checkout-copy", 7, EvaluationContext("123"))
    assert (mismatch.value, mismatch.error_code) == (7, ErrorCode.TYPE_MISMATCH)


def test_the_python_provider_sees_a_change_without_a_new_client(
    flag_server: FlagServer, evaluator: Evaluator, client: OpenFeatureClient
) -> None:
    change = CASES["change"]
    before = client.get_boolean_details(change["flag"], True, EvaluationContext("123"))
    assert (before.value, before.reason) == (False, "DISABLED")
    flag_server.patch_flag(change["flag"], change["patch"])
    after = client.get_boolean_details(change["flag"], False, EvaluationContext("123"))
    assert (after.value, after.reason) == (True, "STATIC")
