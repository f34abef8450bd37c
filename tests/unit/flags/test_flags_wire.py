"""`shipyard.flags._wire`: field names renamed between the API's camelCase and the files' snake_case,
and only field names: a json flag's value, a rule's value and an environment's name are the user's."""

from __future__ import annotations

from typing import Any

from shipyard.flags import FlagSet, flag_to_snake, flag_to_wire, flagset_to_wire

SNAKE: dict[str, Any] = {
    "key": "limits",
    "type": "json",
    "default_value": {"max_items": 3, "group_id": "not a field"},
    "lifetime_days": 7,
    "created_at": "2026-01-01T00:00:00Z",
    "environments": {
        "pre_prod": {"enabled": True, "value": {"default_value": 1}},
        "production": {
            "rules": [
                {
                    "conditions": [{"attribute": "user_id", "op": "not_in", "value": ["a_b"]}],
                    "rollout": {"percent": 10, "group_id": "g", "stickiness": "session_id"},
                    "value": {"lifetime_days": 2},
                },
                {
                    "split": {
                        "group_id": "s",
                        "variants": [{"name": "on_v", "value": {"x_y": 1}, "weight": 1}],
                    }
                },
            ]
        },
    },
}
WIRE: dict[str, Any] = {
    "key": "limits",
    "type": "json",
    "defaultValue": {"max_items": 3, "group_id": "not a field"},
    "lifetimeDays": 7,
    "createdAt": "2026-01-01T00:00:00Z",
    "environments": {
        "pre_prod": {"enabled": True, "value": {"default_value": 1}},
        "production": {
            "rules": [
                {
                    "conditions": [{"attribute": "user_id", "op": "not_in", "value": ["a_b"]}],
                    "rollout": {"percent": 10, "groupId": "g", "stickiness": "session_id"},
                    "value": {"lifetime_days": 2},
                },
                {"split": {"groupId": "s", "variants": [{"name": "on_v", "value": {"x_y": 1}, "weight": 1}]}},
            ]
        },
    },
}


def test_only_field_names_are_renamed_both_ways() -> None:
    assert flag_to_wire(SNAKE) == WIRE
    assert flag_to_snake(WIRE) == SNAKE
    assert flag_to_snake(SNAKE) == SNAKE  # snake_case in: left as it is
    assert flag_to_wire(WIRE) == WIRE


def test_partial_documents_and_unknown_keys() -> None:
    patch = {"defaultValue": None, "environments": {"production": {"enabled": False}}, "bogus_key": 1}
    assert flag_to_snake(patch) == {
        "default_value": None,
        "environments": {"production": {"enabled": False}},
        "bogus_key": 1,  # left for the model's validation to name
    }


def test_a_flag_set_in_wire_form_reads_back_the_same() -> None:
    valid = {**SNAKE, "environments": {"production": SNAKE["environments"]["production"]}}
    flagset = FlagSet.from_data({"version": 3, "flags": [valid]})
    wire = flagset_to_wire(flagset.to_data())
    assert wire["flags"][0]["defaultValue"] == SNAKE["default_value"]
    assert FlagSet.from_data(wire) == flagset
