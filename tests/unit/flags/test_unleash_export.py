"""shipyard flags as Unleash's client API serves them (`_unleash_export`): what is left out, and why.

That the exported features answer exactly as shipyard's evaluator does is proven with Unleash's own
Node SDK (tests/integration/flags/test_unleash_node.py); here: every construct without an exact
Unleash equivalent is left out with its reason rather than served differently, what requires a flag
left out is left out too, and the client API's body reads back (`from_unleash`) as the flag set it
came from, for every state of Unleash's client specification.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shipyard.flags import FlagSet, build_client_features
from shipyard.flags._unleash_import import from_unleash

SPEC = Path(__file__).resolve().parents[4] / "shared" / "unleash-client-specification"
ENV = "production"


def flag(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "key": "f",
        "default_value": False,
        "environments": {ENV: {"enabled": True, "rules": list(rules)}},
        **extra,
    }


def cond(attribute: str, op: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"attribute": attribute, "op": op, "value": value, **extra}


def on(*conditions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"conditions": list(conditions), "value": True, **extra}


def off(*conditions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"conditions": list(conditions), "value": False, **extra}


NOT_EXPORTABLE = {
    "a number in `eq`": (flag(on(cond("age", "eq", 18))), "an Unleash context holds strings"),
    "a boolean in `in`": (flag(on(cond("beta", "in", [True]))), "an Unleash context holds strings"),
    "an empty string": (flag(on(cond("plan", "in", [""]))), "drop empty values and trim"),
    "a string with blanks": (flag(on(cond("plan", "starts_with", " pro"))), "drop empty values and trim"),
    "a case-insensitive `in`": (
        flag(on(cond("plan", "in", ["Pro"], case_insensitive=True))),
        "Unleash's IN has no such option",
    ),
    "`before` on another attribute": (
        flag(on(cond("signup", "before", "2024-01-01T00:00:00Z"))),
        "compare only the context's currentTime",
    ),
    "a partial rollout serving false before true": (
        flag({"rollout": {"percent": 30}, "value": False}, on(cond("plan", "in", ["pro"]))),
        "a partial rollout serving false",
    ),
    "a boolean split serving both values": (
        flag(
            {
                "split": {
                    "variants": [
                        {"name": "a", "value": True, "weight": 1},
                        {"name": "b", "value": False, "weight": 1},
                    ]
                }
            }
        ),
        "a split serving both true and false",
    ),
    "default stickiness without fallback random": (
        flag(on(rollout={"percent": 50, "stickiness": "default"})),
        "default stickiness without fallback random",
    ),
    "a split and a partial rollout on different groups": (
        flag(
            {
                "rollout": {"percent": 50, "group_id": "a"},
                "split": {"group_id": "b", "variants": [{"name": "x", "value": True, "weight": 1}]},
            }
        ),
        "hashed on different groups",
    ),
    "too many negations": (
        flag(
            *[
                off(cond(f"a{i}", "in", ["x"]), cond(f"b{i}", "in", ["y"]), cond(f"c{i}", "in", ["z"]))
                for i in range(4)
            ],
            on(),
        ),
        "more than 64 strategies",
    ),
}


@pytest.mark.parametrize(("data", "reason"), NOT_EXPORTABLE.values(), ids=NOT_EXPORTABLE.keys())
def test_a_construct_without_an_exact_equivalent_leaves_the_flag_out(
    data: dict[str, Any], reason: str
) -> None:
    flagset = FlagSet.from_data({"flags": [data, {"key": "g", "default_value": False}]})
    exported = build_client_features(flagset, ENV)
    assert [f["name"] for f in exported.body["features"]] == ["g"]
    assert [o.flag for o in exported.omitted] == ["f"]
    assert reason in exported.omitted[0].reason


def test_a_flag_requiring_a_left_out_flag_is_left_out_and_a_disabled_one_is_served_off() -> None:
    left_out = flag(on(cond("age", "eq", 18)))
    child = {
        "key": "child",
        "default_value": False,
        "prerequisites": [{"flag": "f"}],
        "environments": {ENV: {"enabled": True}},
    }
    disabled = {**flag(on(cond("age", "eq", 18))), "key": "disabled"}
    disabled["environments"][ENV]["enabled"] = False
    exported = build_client_features(FlagSet.from_data({"flags": [left_out, child, disabled]}), ENV)
    assert {o.flag: o.reason for o in exported.omitted}["child"] == "it requires flag 'f', which is left out"
    assert exported.body["features"] == [
        {
            "name": "disabled",
            "description": None,
            "type": "release",
            "project": "default",
            "enabled": False,
            "stale": False,
            "impressionData": False,
            "strategies": [],
            "variants": [],
        }
    ]


def test_a_false_rule_is_negated_into_the_later_strategies() -> None:
    flagset = FlagSet.from_data(
        {
            "segments": [{"name": "eu", "conditions": [cond("country", "in", ["FR", "DE"])]}],
            "flags": [
                flag(
                    off({"op": "segment", "value": "eu"}, cond("plan", "in", ["free"])),
                    on(cond("beta", "in", ["yes"])),
                )
            ],
        }
    )
    (feature,) = build_client_features(flagset, ENV).body["features"]
    negated = [[(c["contextName"], c["inverted"]) for c in s["constraints"]] for s in feature["strategies"]]
    # beta and not (plan free and country in EU) = (beta and plan not free) or (beta and country not in EU)
    assert negated == [[("beta", False), ("plan", True)], [("beta", False), ("country", True)]]


def spec_states() -> list[Any]:
    index = SPEC / "index.json"
    if not index.is_file():
        return [pytest.param(None, id="specification-missing")]
    return [pytest.param(name, id=name) for name in json.loads(index.read_text())]


@pytest.mark.parametrize("name", spec_states())
def test_the_client_api_body_reads_back_as_the_flag_set(name: str | None) -> None:
    if name is None:
        pytest.fail(f"Unleash's client specification is missing: {SPEC}")
    state = json.loads((SPEC / name).read_text())["state"]
    flagset = from_unleash(state, environment=ENV).flagset
    exported = build_client_features(flagset, ENV)
    assert exported.omitted == []
    again = from_unleash(json.loads(json.dumps(exported.body)), environment=ENV).flagset
    assert again.model_copy(update={"version": 0}) == flagset.model_copy(update={"version": 0})
