"""The flag API's wire format (issue 14, part 6): seed 003's camelCase bodies, and 412 on If-Match.

Seed 003 creates a flag with `{"key", "type", "defaultValue", "description"}`: the API takes that
body as it is and answers in the same spelling, and its OpenAPI document says so. snake_case is
still accepted for one release (older SDKs and CLIs send it). A failed `If-Match` is 412
Precondition Failed (RFC 9110 §13.1.1); 409 stays for a real conflict (creating a key that exists).
"""

from __future__ import annotations

from typing import Any

from support.api import Api

# Seed 003's example body, verbatim.
SEED_BODY: dict[str, Any] = {
    "key": "new-feature",
    "type": "boolean",
    "defaultValue": False,
    "description": "New feature flag",
}

STICKY: dict[str, Any] = {
    "key": "sticky",
    "type": "json",
    # A json flag's value is the user's data: its keys are never renamed either way.
    "defaultValue": {"max_items": 3, "someKey": "x"},
    "lifetimeDays": 10,
    "environments": {
        "production": {
            "enabled": True,
            "rules": [
                {
                    "rollout": {"percent": 50, "groupId": "g1", "stickiness": "sessionId"},
                    "value": {"max_items": 5},
                }
            ],
        }
    },
}


def _keys(document: Any) -> set[str]:
    """Every mapping key in a JSON document, however deep."""
    if isinstance(document, dict):
        return set(document) | {k for v in document.values() for k in _keys(v)}
    if isinstance(document, list):
        return {k for v in document for k in _keys(v)}
    return set()


def test_the_seeds_body_is_taken_and_answered_in_camel_case(api: Api) -> None:
    created = api.client.post("/feature-flags", headers=api.admin, json=SEED_BODY)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    # `type` is left out when it is the default (boolean), as every default is.
    assert {"type": "boolean", **created.json()["flag"]} == SEED_BODY

    one = api.client.get("/feature-flags/new-feature", headers=api.reader).json()
    assert one["flag"]["defaultValue"] is False
    assert "default_value" not in one["flag"]
    listing = api.client.get("/feature-flags", headers=api.reader).json()
    assert [{"type": "boolean", **f} for f in listing["flags"]] == [SEED_BODY]

    value = api.client.get("/feature-flags/new-feature/value?userId=123&role=USER", headers=api.reader)
    assert value.json()["flagSetVersion"] >= 1

    audit = api.client.get("/feature-flags/new-feature/audit", headers=api.admin).json()
    assert audit[0]["after"]["defaultValue"] is False


def test_nested_names_are_camel_case_and_values_untouched(api: Api) -> None:
    created = api.client.post("/feature-flags", headers=api.admin, json=STICKY)
    assert created.status_code == 201, created.text
    flag = created.json()["flag"]
    assert flag == STICKY
    rollout = flag["environments"]["production"]["rules"][0]["rollout"]
    assert rollout["groupId"] == "g1"
    assert not {"default_value", "group_id", "lifetime_days"} & _keys(flag)


def test_patch_and_put_take_camel_case(api: Api) -> None:
    assert api.client.post("/feature-flags", headers=api.admin, json=SEED_BODY).status_code == 201
    patched = api.client.patch(
        "/feature-flags/new-feature",
        headers=api.admin,
        json={"defaultValue": True, "lifetimeDays": 3, "environments": {"production": {"enabled": True}}},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["flag"]["defaultValue"] is True
    assert patched.json()["flag"]["lifetimeDays"] == 3
    # The merge patch renamed the stored field rather than adding a second spelling beside it.
    evaluated = api.client.get("/feature-flags/new-feature/value?userId=1", headers=api.reader).json()
    assert evaluated["value"] is True

    replaced = api.client.put(
        "/feature-flags/new-feature", headers=api.admin, json={**SEED_BODY, "defaultValue": True}
    )
    assert replaced.status_code == 200, replaced.text
    assert {"type": "boolean", **replaced.json()["flag"]} == {**SEED_BODY, "defaultValue": True}


def test_snake_case_is_still_accepted_for_one_release(api: Api) -> None:
    old = {"key": "old-client", "default_value": "a", "type": "string", "lifetime_days": 5}
    created = api.client.post("/feature-flags", headers=api.admin, json=old)
    assert created.status_code == 201, created.text
    assert created.json()["flag"] == {
        "key": "old-client",
        "defaultValue": "a",
        "type": "string",
        "lifetimeDays": 5,
    }
    patched = api.client.patch("/feature-flags/old-client", headers=api.admin, json={"default_value": "b"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["flag"]["defaultValue"] == "b"
    assert "default_value" not in patched.json()["flag"]


def test_a_failed_if_match_is_412_and_a_clash_stays_409(api: Api) -> None:
    assert api.client.post("/feature-flags", headers=api.admin, json=SEED_BODY).status_code == 201
    stale = {**api.admin, "If-Match": '"7"'}
    for method, body in (("PUT", SEED_BODY), ("PATCH", {"description": "x"}), ("DELETE", None)):
        answer = api.client.request(method, "/feature-flags/new-feature", headers=stale, json=body)
        assert answer.status_code == 412, (method, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == 412
        assert "version 1" in answer.json()["detail"]
    not_a_version = {**api.admin, "If-Match": '"abc"'}
    assert api.client.patch("/feature-flags/new-feature", headers=not_a_version, json={}).status_code == 412
    segment = {"conditions": [{"attribute": "role", "op": "eq", "value": "ADMIN"}]}
    missing = api.client.put("/feature-segments/admins", headers=stale, json=segment)
    assert missing.status_code == 412, missing.text
    # No If-Match, or a matching one: the write goes through.
    current = {**api.admin, "If-Match": '"1"'}
    assert api.client.patch("/feature-flags/new-feature", headers=current, json={}).status_code == 200
    # Creating a key that exists is a conflict with the resource's state, not a precondition.
    assert api.client.post("/feature-flags", headers=api.admin, json=SEED_BODY).status_code == 409


def test_the_openapi_document_says_camel_case(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    flag = schemas["Flag"]
    assert {"key", "type", "defaultValue", "description", "lifetimeDays", "createdAt"} <= set(
        flag["properties"]
    )
    assert "default_value" not in flag["properties"]
    assert "defaultValue" in flag["required"]
    rollout = schemas["Rollout"]
    assert "groupId" in rollout["properties"]

    create = document["paths"]["/feature-flags"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Flag"}
    assert "snake_case" in create["description"]
    response = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert response == {"$ref": "#/components/schemas/FlagOut"}
    assert schemas["FlagOut"]["properties"]["flag"] == {"$ref": "#/components/schemas/Flag"}
    listed = schemas["FlagSetOut"]["properties"]
    assert listed["flags"]["items"] == {"$ref": "#/components/schemas/Flag"}
    replace = document["paths"]["/feature-flags/{key}"]["put"]
    assert "412" in replace["responses"]
    assert "412" in document["paths"]["/feature-flags/{key}"]["patch"]["responses"]
    assert "409" in create["responses"]
