"""The flag API end to end over real databases: seed 003's endpoints, concurrency, audit, errors."""

from __future__ import annotations

import threading
from typing import Any

from support.api import Api

CHECKOUT: dict[str, Any] = {
    "key": "new-checkout",
    "type": "boolean",
    "default_value": False,
    "kind": "release",
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
        }
    },
}


def test_create_read_evaluate(api: Api) -> None:
    created = api.client.post("/feature-flags", headers=api.admin, json=CHECKOUT)
    assert created.status_code == 201
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == "/feature-flags/new-checkout"

    listing = api.client.get("/feature-flags", headers=api.reader)
    assert listing.status_code == 200
    assert [f["key"] for f in listing.json()["flags"]] == ["new-checkout"]
    assert (
        api.client.get(
            "/feature-flags", headers={**api.reader, "If-None-Match": listing.headers["ETag"]}
        ).status_code
        == 304
    )

    # Unleash's vector: ("123", "new-checkout") hashes into some bucket; evaluate both sides of 30 %.
    values = {
        uid: api.client.get(
            f"/feature-flags/new-checkout/value?userId={uid}&role=USER", headers=api.reader
        ).json()
        for uid in map(str, range(200))
    }
    share = sum(v["value"] is True for v in values.values()) / len(values)
    assert 0.2 < share < 0.4
    guest = api.client.get("/feature-flags/new-checkout/value?userId=1&role=GUEST", headers=api.reader).json()
    assert guest["value"] is False
    assert guest["reason"] == "DEFAULT"
    other_env = api.client.get(
        "/feature-flags/new-checkout/value?userId=1&role=USER&environment=staging", headers=api.reader
    ).json()
    assert other_env["reason"] == "DISABLED"

    bulk = api.client.post(
        "/feature-flags/evaluate", headers=api.reader, json={"context": {"userId": "7", "role": "ADMIN"}}
    )
    assert bulk.status_code == 200
    assert set(bulk.json()["results"]) == {"new-checkout"}


def test_custom_query_parameters_become_attributes(api: Api) -> None:
    flag = {
        "key": "beta-ui",
        "type": "string",
        "default_value": "classic",
        "environments": {
            "production": {
                "enabled": True,
                "rules": [
                    {"conditions": [{"attribute": "plan", "op": "eq", "value": "pro"}], "value": "beta"}
                ],
            }
        },
    }
    assert api.client.post("/feature-flags", headers=api.admin, json=flag).status_code == 201
    pro = api.client.get("/feature-flags/beta-ui/value?userId=1&plan=pro", headers=api.reader).json()
    free = api.client.get("/feature-flags/beta-ui/value?userId=1&plan=free", headers=api.reader).json()
    assert (pro["value"], pro["reason"]) == ("beta", "TARGETING_MATCH")
    assert free["value"] == "classic"


def test_optimistic_concurrency_never_loses_an_update(api: Api) -> None:
    api.client.post("/feature-flags", headers=api.admin, json=CHECKOUT)
    stale = {**api.admin, "If-Match": '"1"'}
    first = api.client.patch("/feature-flags/new-checkout", headers=stale, json={"description": "one"})
    second = api.client.patch("/feature-flags/new-checkout", headers=stale, json={"description": "two"})
    assert first.status_code == 200
    assert second.status_code == 412  # RFC 9110 §13.1.1: a false If-Match (409 before issue 14)
    assert second.headers["content-type"] == "application/problem+json"
    assert (
        api.client.get("/feature-flags/new-checkout", headers=api.reader).json()["flag"]["description"]
        == "one"
    )


def test_concurrent_writers_each_bump_the_version(api: Api) -> None:
    api.client.post("/feature-flags", headers=api.admin, json=CHECKOUT)
    results: list[int] = []

    def write(i: int) -> None:
        response = api.client.patch(
            "/feature-flags/new-checkout", headers=api.admin, json={"description": f"w{i}"}
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    flag = api.client.get("/feature-flags/new-checkout", headers=api.reader).json()
    assert flag["version"] == 9
    audit = api.client.get("/feature-flags/new-checkout/audit", headers=api.admin).json()
    assert len(audit) == 9


def test_audit_records_who_before_and_after(api: Api) -> None:
    api.client.post("/feature-flags", headers=api.admin, json=CHECKOUT)
    api.client.patch(
        "/feature-flags/new-checkout",
        headers=api.admin,
        json={"environments": {"production": {"enabled": False}}},
    )
    audit = api.client.get("/feature-flags/new-checkout/audit", headers=api.admin).json()
    assert [(e["action"], e["actor"]) for e in audit] == [("update", "token:ops"), ("create", "token:ops")]
    assert audit[0]["before"]["environments"]["production"]["enabled"] is True
    assert "enabled" not in audit[0]["after"]["environments"]["production"]  # false is the default


def test_errors_are_problems(api: Api) -> None:
    client = api.client
    assert client.get("/feature-flags").status_code == 401
    assert client.get("/feature-flags", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/feature-flags", headers=api.reader, json=CHECKOUT).status_code == 403
    missing = client.get("/feature-flags/absent", headers=api.reader)
    assert missing.status_code == 404
    assert missing.json()["status"] == 404
    assert client.get("/feature-flags/absent/value?userId=1", headers=api.reader).status_code == 404
    wrong_type = client.post("/feature-flags", headers=api.admin, json={**CHECKOUT, "default_value": "yes"})
    assert wrong_type.status_code == 422
    assert "default_value" in wrong_type.json()["detail"]
    unknown_segment = {
        **CHECKOUT,
        "environments": {
            "production": {
                "enabled": True,
                "rules": [{"conditions": [{"op": "segment", "value": "vips"}], "value": True}],
            }
        },
    }
    bad = client.post("/feature-flags", headers=api.admin, json=unknown_segment)
    assert bad.status_code == 422
    assert "vips" in bad.json()["detail"]
    assert client.post("/feature-flags", headers=api.admin, json=CHECKOUT).status_code == 201
    assert client.post("/feature-flags", headers=api.admin, json=CHECKOUT).status_code == 409
    huge = client.post(
        "/feature-flags", headers={**api.admin, "Content-Type": "application/json"}, content=b" " * (2 << 20)
    )
    assert huge.status_code == 413


def test_a_prerequisite_cycle_is_accepted_and_never_holds(api: Api) -> None:
    # As in Unleash, a prerequisite on a flag that has prerequisites itself never holds, so a cycle
    # evaluates (both flags off) instead of being refused.
    on = {"production": {"enabled": True, "value": True}}
    a = {"key": "a", "defaultValue": False, "environments": on}
    b = {"key": "b", "defaultValue": False, "environments": on, "prerequisites": [{"flag": "a"}]}
    assert api.client.post("/feature-flags", headers=api.admin, json=a).status_code == 201
    assert api.client.post("/feature-flags", headers=api.admin, json=b).status_code == 201
    assert api.client.get("/feature-flags/b/value", headers=api.reader).json()["value"] is True
    cycle = api.client.patch("/feature-flags/a", headers=api.admin, json={"prerequisites": [{"flag": "b"}]})
    assert cycle.status_code == 200
    for key in ("a", "b"):
        answer = api.client.get(f"/feature-flags/{key}/value", headers=api.reader).json()
        assert (answer["value"], answer["reason"]) == (False, "DEFAULT"), key
    assert api.client.delete("/feature-flags/a", headers=api.admin).status_code == 422  # b requires a


def test_import_is_all_or_nothing(api: Api) -> None:
    good = {"flags": [CHECKOUT, {"key": "dark-mode", "default_value": True}]}
    bad = {"flags": [{"key": "x", "default_value": False, "prerequisites": [{"flag": "ghost"}]}]}
    assert api.client.post("/feature-flags/import", headers=api.admin, json=good).status_code == 200
    assert (
        api.client.post("/feature-flags/import?replace=true", headers=api.admin, json=bad).status_code == 422
    )
    keys = [f["key"] for f in api.client.get("/feature-flags", headers=api.reader).json()["flags"]]
    assert keys == ["dark-mode", "new-checkout"]


def test_health_and_metrics_need_no_token(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").status_code == 200
    api.client.post("/feature-flags", headers=api.admin, json=CHECKOUT)
    api.client.get("/feature-flags/new-checkout/value?userId=1", headers=api.reader)
    metrics = api.client.get("/metrics").text
    assert "shipyard_flag_evaluations_total 1.0" in metrics
    assert (
        'shipyard_http_request_duration_seconds_count{code="201",method="POST",route="/feature-flags"}'
        in metrics
    )
