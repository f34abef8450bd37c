"""The flag model's JSON Schema (what the OpenAPI document gives for flag bodies) states the model's
cross-field rules where JSON Schema can, and lists the others in its descriptions.

- For documents whose validity turns only on rules JSON Schema states, the schema (jsonschema,
  Draft 2020-12) and the pydantic model agree: both accept or both refuse (hypothesis).
- For documents that may also break the unstated rules, whatever the model accepts the schema
  accepts, and every refusal the schema misses is one of the rules its descriptions list.
- Each rule, stated or not, by an explicit case.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from shipyard.spec.flags import NOT_IN_SCHEMA, OPERATORS, STRING_OPERATORS, Flag, FlagSet

FLAG_SCHEMA = Flag.model_json_schema()
FLAGSET_SCHEMA = FlagSet.model_json_schema()
Draft202012Validator.check_schema(FLAG_SCHEMA)
Draft202012Validator.check_schema(FLAGSET_SCHEMA)
FLAG_VALIDATOR = Draft202012Validator(FLAG_SCHEMA)
FLAGSET_VALIDATOR = Draft202012Validator(FLAGSET_SCHEMA)

UNSTATED = {
    # The model's message for each rule the schema leaves to it, and the object whose description
    # lists the rule (by a phrase of it).
    "unsafe or invalid pattern": ("Condition", "`matches` pattern"),
    "takes a number": ("Condition", "string value reads as a finite number"),
    "is not an IP address or CIDR block": ("Condition", "`in_cidr`"),
    "takes an ISO-8601 date-time": ("Condition", "`before`/`after`"),
    "needs a date-time with a time zone": ("Condition", "`before`/`after`"),
    "variant names must be unique": ("Split", "names are unique"),
    "a json payload is JSON": ("VariantPayload", "parses as JSON"),
}


def _model_accepts(document: dict[str, Any]) -> bool:
    try:
        Flag.model_validate(document)
    except ValidationError:
        return False
    return True


def _model_errors(document: dict[str, Any]) -> list[str]:
    try:
        Flag.model_validate(document)
    except ValidationError as exc:
        return [str(e["msg"]) for e in exc.errors()]
    return []


# --- documents --------------------------------------------------------------------------------

words = st.sampled_from(["a", "beta", "Role", "x1"])
ANY_VALUE = [True, False, "s", "", 3, -2.5, None, [1, "a"], {"a": 1}]
"""Values of every JSON type (and null), for what a flag serves."""
VALUES_OF_TYPE = {
    "boolean": [True, False],
    "string": ["s", ""],
    "number": [3, -2.5],
    "json": [[1, "a"], {"a": 1}, "s", 3, True],
}


def _mostly(good: list[Any], pool: list[Any]) -> st.SearchStrategy[Any]:
    """One of `good` three times in four, else anything of `pool`: documents that break one rule
    (or none) rather than many at once."""
    return st.one_of(
        st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), st.sampled_from(pool)
    )


def values(flag_type: str) -> st.SearchStrategy[Any]:
    return _mostly(VALUES_OF_TYPE.get(flag_type, ANY_VALUE), ANY_VALUE)


# Operands the model judges by their JSON type and shape only (or, for strings, by a rule the
# schema states): a document's validity then turns on stated rules alone. Each shape's good
# operands first, then ones of other shapes.
_SHAPES = [None, True, 7, -1.5, {"a": 1}, [], [{"a": 1}], [None], ["a", 1, True]]
_GOOD_OPERANDS: dict[str, list[Any]] = {
    "scalar": ["a", "", 7, True, -1.5, ["a", 1, True], [1.5], []],
    "strings": [["a"], ["a", "b"], "a"],
    "matches": ["^a", "b+c"],
    "number": ["12", " 1e3 ", "-0.5", 7, -1.5],
    "semver": ["1.2.3", "1.2.3-rc.1+b7"],
    "datetime": ["2025-01-31T12:00:00+01:00", "2026-12-06T00:00:00Z"],
    "cidr": [["10.0.0.0/8"], ["192.168.1.7", "2001:db8::/32"], []],
    "segment": ["beta"],
}
_BAD_OPERANDS: dict[str, list[Any]] = {
    "semver": ["1.2", "v1.2.3", "1.2.3" + "0" * 260],
    "matches": ["a" * 501],
    "cidr": ["10.0.0.0/8", [10]],
    "segment": [""],
}
# Operands that break a rule the schema does not state.
_UNSTATED_OPERANDS: dict[str, list[Any]] = {
    "matches": ["(a+)+", "[", "(?P<x>a)"],
    "number": ["twelve", "1_000", "nan", "0x10"],
    "datetime": ["tomorrow", "2025-01-31T12:00:00", "2025-13-01T00:00:00Z"],
    "cidr": [["10.0.0.0/33"], ["localhost"]],
}


def _shape(op: str) -> str:
    if op.startswith("semver_"):
        return "semver"
    return {
        "in": "scalar", "not_in": "scalar", "eq": "scalar", "neq": "scalar",
        "contains": "strings", "starts_with": "strings", "ends_with": "strings",
        "lt": "number", "lte": "number", "gt": "number", "gte": "number", "num_eq": "number",
        "before": "datetime", "after": "datetime", "in_cidr": "cidr",
    }.get(op, op)  # fmt: skip


def _optional(draw: st.DrawFn, document: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        document[key] = draw(strategy)


@st.composite
def conditions(draw: st.DrawFn, unstated: bool) -> dict[str, Any]:
    op = draw(st.sampled_from(OPERATORS))
    shape = _shape(op)
    pool = [*_GOOD_OPERANDS[shape], *_BAD_OPERANDS.get(shape, []), *_SHAPES]
    if unstated:
        pool += _UNSTATED_OPERANDS.get(shape, [])
    good, bad = _GOOD_OPERANDS[shape], _BAD_OPERANDS.get(shape, _SHAPES)
    operand = st.one_of(
        st.sampled_from(good), st.sampled_from(good), st.sampled_from(bad), st.sampled_from(pool)
    )
    condition: dict[str, Any] = {"op": op, "value": draw(operand)}
    attributes = ["absent", "null", "name", "bad name"]
    attribute = draw(_mostly(["absent", "null"] if op == "segment" else ["name"], attributes))
    if attribute != "absent":
        condition["attribute"] = {"null": None, "name": "userId", "bad name": "user id"}[attribute]
    _optional(draw, condition, "caseInsensitive", st.booleans())
    _optional(draw, condition, "inverted", st.booleans())
    return condition


payload_values = {
    "string": ["", "any text"],
    "csv": ["a,b"],
    "number": ["1", "-2.5", "1.5e3", "01", "x", "", "1\n", " 1"],
    "json": ['{"a": 1}', "[1, 2]", '"s"', " null "],
}
unstated_payload_values = {"json": ["{a: 1}", "", "NaN", "[1,"]}


@st.composite
def splits(draw: st.DrawFn, flag_type: str, unstated: bool) -> dict[str, Any]:
    names = draw(st.lists(words, min_size=draw(_mostly([1], [0])), max_size=3, unique=not unstated))
    variants = []
    for name in names:
        weight = draw(st.integers(0, 2))
        variant: dict[str, Any] = {"name": name, "value": draw(values(flag_type)), "weight": weight}
        if draw(st.booleans()):
            kind = draw(st.sampled_from([*payload_values, "xml"]))
            pool = payload_values.get(kind, ["<a/>"])
            if unstated:
                pool = pool + unstated_payload_values.get(kind, [])
            variant["payload"] = {"type": kind, "value": draw(st.sampled_from(pool))}
        variants.append(variant)
    split: dict[str, Any] = {"variants": variants}
    _optional(draw, split, "stickiness", st.just("sessionId"))
    return split


@st.composite
def rules(draw: st.DrawFn, flag_type: str, unstated: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    _optional(draw, rule, "conditions", st.lists(conditions(unstated), max_size=2))
    serves = draw(_mostly(["value", "split"], ["value", "split", "both", "neither", "null value"]))
    if serves in ("value", "both"):
        rule["value"] = draw(values(flag_type))
    if serves in ("split", "both"):
        rule["split"] = draw(splits(flag_type, unstated))
    if serves == "null value":
        rule["value"] = None
    if draw(st.integers(0, 3)) == 0:
        rule["variant"] = draw(st.none() | words)
    _optional(draw, rule, "rollout", st.builds(lambda p: {"percent": p}, st.integers(0, 100)))
    return rule


@st.composite
def prerequisites(draw: st.DrawFn) -> dict[str, Any]:
    prerequisite: dict[str, Any] = {"flag": "other"}
    _optional(draw, prerequisite, "variants", st.lists(words, max_size=2))
    if draw(st.integers(0, 2)) == 0:
        prerequisite["variant"] = draw(st.none() | words | st.just(""))
    _optional(draw, prerequisite, "enabled", st.booleans())
    return prerequisite


@st.composite
def flags(draw: st.DrawFn, unstated: bool = False) -> dict[str, Any]:
    flag_type = draw(st.sampled_from(["absent", "boolean", "string", "number", "json", "xml"]))
    served = "boolean" if flag_type == "absent" else flag_type
    flag: dict[str, Any] = {"key": "f", "defaultValue": draw(values(served))}
    if flag_type != "absent":
        flag["type"] = flag_type
    environment: dict[str, Any] = {"enabled": draw(st.booleans())}
    _optional(draw, environment, "value", st.none() | values(served))
    _optional(draw, environment, "rules", st.lists(rules(served, unstated), max_size=2))
    flag["environments"] = {"production": environment}
    _optional(draw, flag, "tags", st.lists(st.sampled_from(["a", "b"]), max_size=3))
    _optional(draw, flag, "prerequisites", st.lists(prerequisites(), max_size=2))
    return flag


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=1500)
@given(flags())
def test_schema_and_model_agree_where_the_schema_states_the_rules(document: dict[str, Any]) -> None:
    schema_says = FLAG_VALIDATOR.is_valid(document)
    model_says = _model_accepts(document)
    assert schema_says == model_says, (
        [e.message for e in FLAG_VALIDATOR.iter_errors(document)],
        _model_errors(document),
    )


@settings(max_examples=1000)
@given(flags(unstated=True))
def test_what_the_schema_misses_is_what_its_descriptions_list(document: dict[str, Any]) -> None:
    if _model_accepts(document):
        assert FLAG_VALIDATOR.is_valid(document), [e.message for e in FLAG_VALIDATOR.iter_errors(document)]
    elif FLAG_VALIDATOR.is_valid(document):
        for message in _model_errors(document):
            assert any(known in message for known in UNSTATED), message


# --- explicit cases ---------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "key": "f",
    "type": "string",
    "defaultValue": "grey",
    "tags": ["a"],
    "prerequisites": [{"flag": "other", "variants": ["on"]}],
    "environments": {
        "production": {
            "enabled": True,
            "value": "white",
            "rules": [
                {"conditions": [{"attribute": "country", "op": "in", "value": ["NL"]}], "value": "orange"},
                {
                    "conditions": [{"op": "segment", "value": "beta"}],
                    "split": {
                        "variants": [
                            {"name": "blue", "value": "#00f", "weight": 1},
                            {
                                "name": "red",
                                "value": "#f00",
                                "weight": 0,
                                "payload": {"type": "number", "value": "7"},
                            },
                        ]
                    },
                },
            ],
        }
    },
}
RULES = ("environments", "production", "rules")


def _changed(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    change(document)
    return document


def _at(document: dict[str, Any], *path: str | int) -> Any:
    for part in path:
        document = document[part]
    return document


def _rule(document: dict[str, Any], rule: int) -> dict[str, Any]:
    found: dict[str, Any] = _at(document, *RULES, rule)
    return found


def _json_flag(document: dict[str, Any]) -> None:
    document.update(type="json", defaultValue={})


def _condition(document: dict[str, Any], rule: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = _at(document, *RULES, rule, "conditions", 0)
    return found


def _variant(document: dict[str, Any], index: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = _at(document, *RULES, 1, "split", "variants", index)
    return found


STATED: dict[str, Callable[[dict[str, Any]], None]] = {
    "the default value is of the flag's type": lambda d: d.update(defaultValue=3),
    "the default value is not null": lambda d: d.update(type="json", defaultValue=None),
    "a flag without type is boolean": lambda d: d.pop("type"),
    "an environment's value is of the flag's type": lambda d: d["environments"]["production"].update(value=1),
    "a rule's value is of the flag's type": lambda d: _rule(d, 0).update(value=["orange"]),
    "a variant's value is of the flag's type": lambda d: _variant(d).update(value=1),
    "a variant's value is not null": lambda d: (_json_flag(d), _variant(d).update(value=None)),
    "tags are unique": lambda d: d.update(tags=["a", "a"]),
    "createdAt is a date-time, not a Unix time": lambda d: d.update(createdAt=0),
    "a rule serves a value or a split, not both": lambda d: _rule(d, 0).update(split=_rule(d, 1)["split"]),
    "a rule serves a value or a split, not neither": lambda d: _rule(d, 0).update(value=None),
    "a split rule names no variant": lambda d: _rule(d, 1).update(variant="on"),
    "a split's weights add up to more than 0": lambda d: _variant(d).update(weight=0),
    "a non-segment condition has an attribute": lambda d: _condition(d).pop("attribute"),
    "a segment condition has no attribute": lambda d: _condition(d, 1).update(attribute="userId"),
    "a segment condition names a segment": lambda d: _condition(d, 1).update(value=""),
    "case-insensitive for strings": lambda d: _condition(d).update(op="gt", value=3, caseInsensitive=True),
    "in takes a list of scalars": lambda d: _condition(d).update(value="NL"),
    "eq takes a scalar": lambda d: _condition(d).update(op="eq"),
    "contains takes a string or a non-empty list": lambda d: _condition(d).update(op="contains", value=[]),
    "lt takes a number": lambda d: _condition(d).update(op="lt", value=True),
    "semver takes a version": lambda d: _condition(d).update(op="semver_gte", value="1.2"),
    "before takes a string": lambda d: _condition(d).update(op="before", value=20250101),
    "in_cidr takes strings": lambda d: _condition(d).update(op="in_cidr", value=[10]),
    "matches takes a short pattern": lambda d: _condition(d).update(op="matches", value="a" * 501),
    "a number payload is a number": lambda d: _variant(d, 1)["payload"].update(value="seven"),
    "prerequisite: variants or variant": lambda d: d["prerequisites"][0].update(variant="on"),
}  # fmt: skip


def test_the_base_document_is_valid_to_both() -> None:
    assert _model_accepts(BASE)
    assert FLAG_VALIDATOR.is_valid(BASE)
    older = _changed(
        lambda d: d["prerequisites"][0].pop("variants") and d["prerequisites"][0].update(variant="on")
    )
    assert _model_accepts(older)
    assert FLAG_VALIDATOR.is_valid(older)
    # Case-insensitive on a segment condition is allowed (and meaningless), as the model has it.
    folded = _changed(lambda d: _condition(d, 1).update(caseInsensitive=True))
    assert _model_accepts(folded)
    assert FLAG_VALIDATOR.is_valid(folded)


@pytest.mark.parametrize("rule", list(STATED))
def test_each_stated_rule_refused_by_both(rule: str) -> None:
    document = _changed(STATED[rule])
    if rule == "a flag without type is boolean":
        assert not _model_accepts(document)  # "grey" is not a boolean
    assert not _model_accepts(document), rule
    assert not FLAG_VALIDATOR.is_valid(document), rule


UNSTATED_CASES: dict[str, Callable[[dict[str, Any]], None]] = {
    "unsafe or invalid pattern": lambda d: _condition(d).update(op="matches", value="(a+)+$"),
    "takes a number": lambda d: _condition(d).update(op="lt", value="twelve"),
    "is not an IP address or CIDR block": lambda d: _condition(d).update(op="in_cidr", value=["10.0.0.0/33"]),
    "takes an ISO-8601 date-time": lambda d: _condition(d).update(op="after", value="tomorrow"),
    "needs a date-time with a time zone": lambda d: _condition(d).update(op="before", value="2025-01-31"),
    "variant names must be unique": lambda d: _variant(d, 1).update(name="blue"),
    "a json payload is JSON": lambda d: _variant(d, 1).update(payload={"type": "json", "value": "{a: 1}"}),
}  # fmt: skip


@pytest.mark.parametrize("message", list(UNSTATED_CASES))
def test_each_unstated_rule_is_the_models_and_listed_in_the_schema(message: str) -> None:
    document = _changed(UNSTATED_CASES[message])
    assert FLAG_VALIDATOR.is_valid(document)
    assert any(message in error for error in _model_errors(document)), _model_errors(document)
    where, phrase = UNSTATED[message]
    description = FLAG_SCHEMA["$defs"][where]["description"]
    unstated = description.split(NOT_IN_SCHEMA, 1)[1]
    assert phrase in unstated


def test_references_across_the_set_are_listed_not_stated() -> None:
    flagset = {"flags": [BASE]}  # segment `beta` and flag `other` are unknown
    assert FLAGSET_VALIDATOR.is_valid(flagset)
    with pytest.raises(ValidationError, match=r"unknown segment 'beta'.*requires unknown flag 'other'"):
        FlagSet.model_validate(flagset)
    unstated = FLAGSET_SCHEMA["description"].split(NOT_IN_SCHEMA, 1)[1]
    for phrase in ("keys are unique", "names a segment of the set", "a prerequisite names a flag of the set"):
        assert phrase in unstated


def test_the_schema_uses_the_names_it_is_made_with() -> None:
    snake = Flag.model_json_schema(by_alias=False)
    condition_rules = re.findall(r"'(case_?[iI]nsensitive)'", str(snake["$defs"]["Condition"]["allOf"]))
    assert set(condition_rules) == {"case_insensitive"}
    assert "default_value" in str(snake["allOf"])
    assert "defaultValue" in str(FLAG_SCHEMA["allOf"])
    assert set(STRING_OPERATORS) < set(
        FLAG_SCHEMA["$defs"]["Condition"]["allOf"][1]["then"]["properties"]["op"]["enum"]
    )
