"""The flag pages' pure parts: the rule builder to and from rule documents, the model's errors mapped
to the builder's fields, the history's field-level diff, the environments' order and the list's
filters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import InvalidObjectError
from shipyard.flags import FlagDocuments, Rule
from shipyard.server._dashboard_flag_forms import (
    ListFilter,
    RuleForm,
    builder_drops,
    describe_rule,
    diff,
    flag_field_errors,
    flatten,
    ordered_environments,
    rule_field_errors,
)
from support.flag_rules import builder_rules, words

ENV = "production"


def _document(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule as the store keeps it (validated, defaults left out)."""
    return Rule.model_validate(rule).model_dump(mode="json", exclude_defaults=True)


def _crlf(text: str) -> str:
    """A textarea's text as a browser posts it: every line end as CRLF."""
    return text.replace("\n", "\r\n")


@given(builder_rules())
def test_a_stored_rule_comes_back_from_its_form_unchanged(rule: dict[str, Any]) -> None:
    stored = _document(rule)
    assert builder_drops(stored) == []
    # The page shows the rule with a spare empty row of each (for browsers without JavaScript);
    # the browser posts every field as text, repeated fields in order, and a checkbox only when
    # it is checked (with its row's key as its value).
    form = RuleForm.of_rule(ENV, 0, stored, "boolean").with_blank_rows()
    keys = [str(k) for k in range(len(form.conditions))]
    posted = {
        "environment": [form.environment],
        "index": ["0"],
        "name": [form.name],
        "condition_row": keys,
        "attribute": [c.attribute for c in form.conditions],
        "op": [c.op for c in form.conditions],
        "values": [c.values for c in form.conditions],
        "inverted": [k for k, c in zip(keys, form.conditions, strict=True) if c.inverted],
        "case_insensitive": [k for k, c in zip(keys, form.conditions, strict=True) if c.case_insensitive],
        "percent": [form.percent],
        "stickiness": [form.stickiness],
        "serve": [form.serve],
        "value": [form.value],
        "variant_name": [v.name for v in form.variants],
        "variant_value": [v.value for v in form.variants],
        "variant_weight": [v.weight for v in form.variants],
        "variant_payload_type": [v.payload_type for v in form.variants],
        "variant_payload": [_crlf(v.payload) for v in form.variants],
    }
    built, problems = RuleForm.of_form(posted).to_rule("boolean")
    assert problems == {}
    assert _document(built) == stored


def test_negation_case_and_payloads_are_described() -> None:
    rule = {
        "conditions": [
            {"attribute": "country", "op": "in", "value": ["nl"], "case_insensitive": True},
            {"attribute": "plan", "op": "eq", "value": "free", "inverted": True},
        ],
        "split": {
            "variants": [
                {"name": "blue", "value": True, "weight": 1, "payload": {"type": "json", "value": '{"c": 1}'}}
            ]
        },
    }
    assert describe_rule(rule) == [
        "country is one of nl (any case)",
        "NOT plan equals free",
        'serves blue = true (100 %, json payload {"c": 1})',
    ]


def _refused(rule: dict[str, Any], flag_type: str = "boolean") -> dict[str, str]:
    flag: dict[str, Any] = {
        "key": "f",
        "type": flag_type,
        "default_value": False if flag_type == "boolean" else "x",
    }
    flag["environments"] = {ENV: {"rules": [{"value": flag["default_value"]}, rule]}}
    with pytest.raises(InvalidObjectError) as caught:
        FlagDocuments({}, {}).plan_create(flag)
    return rule_field_errors(caught.value.problems, ENV, 1)


def test_the_models_errors_are_put_beside_the_builders_fields() -> None:
    bad_number = {
        "conditions": [
            {"attribute": "a", "op": "in", "value": ["x"]},
            {"attribute": "age", "op": "lt", "value": "old"},
        ],
        "value": True,
    }
    assert set(_refused(bad_number)) == {"conditions.1.values"}
    assert "takes a number" in _refused(bad_number)["conditions.1.values"]
    bad_attribute = {"conditions": [{"attribute": "no spaces", "op": "eq", "value": "x"}], "value": True}
    assert set(_refused(bad_attribute)) == {"conditions.0.attribute"}
    assert set(_refused({"rollout": {"percent": 150}, "value": True})) == {"percent"}
    assert set(_refused({"split": {"variants": [{"name": "a", "value": True, "weight": -1}]}})) == {
        "variants.0.weight"
    }
    assert set(_refused({"split": {"variants": []}})) == {"variants"}
    assert set(_refused({})) == {"serve"}  # neither a value nor a split
    folded = {
        "conditions": [{"attribute": "age", "op": "lt", "value": 3, "case_insensitive": True}],
        "value": True,
    }
    assert _refused(folded) == {
        "conditions.0.case_insensitive": "'case_insensitive' applies to string operators, not to 'lt'"
    }
    variant = {"name": "a", "value": True, "weight": 1}
    bad_json = {**variant, "payload": {"type": "json", "value": "{colour: blue}"}}
    bad_number = {**variant, "name": "b", "payload": {"type": "number", "value": "twelve"}}
    bad_type = {**variant, "name": "c", "payload": {"type": "xml", "value": "<a/>"}}
    payloads = _refused({"split": {"variants": [bad_json, bad_number, bad_type]}})
    assert set(payloads) == {"variants.0.payload", "variants.1.payload", "variants.2.payload_type"}
    assert payloads["variants.0.payload"].startswith("a json payload is JSON: Expecting property name")
    assert (
        payloads["variants.1.payload"] == "a number payload is a number such as 42, -1.5 or 1e3, not 'twelve'"
    )
    wrong_type = _refused({"value": 3}, flag_type="string")
    assert set(wrong_type) == {"value"}
    assert "not a string value" in wrong_type["value"]


def test_an_unknown_environment_is_the_environment_fields_error() -> None:
    errors = rule_field_errors(
        [("environment", "no environment 'prodution'; did you mean 'production'?")], ENV, 0
    )
    assert errors == {"environment": "no environment 'prodution'; did you mean 'production'?"}
    bad_name = rule_field_errors([("environments.Prod.[key]", "String should match pattern")], "Prod", 0)
    assert set(bad_name) == {"environment"}


def test_a_problem_elsewhere_in_the_flag_is_the_forms() -> None:
    errors = rule_field_errors([("environments.staging.rules.0.value", "bad")], ENV, 0)
    assert errors == {"": "environments.staging.rules.0.value: bad"}


def test_the_builder_finds_problems_in_the_text_before_the_model() -> None:
    posted = {"percent": ["half"], "serve": ["split"], "variant_name": ["a"], "variant_value": ["x"]}
    form = RuleForm.of_form({**posted, "environment": [ENV], "variant_weight": ["1.5"]})
    _, problems = form.to_rule("number")
    assert set(problems) == {"percent", "variants.0.value", "variants.0.weight"}
    _, problems = RuleForm(environment=ENV, value="maybe").to_rule("boolean")
    assert problems == {"value": "a boolean flag's value is true or false"}
    # A payload typed without its type: which type it is cannot be guessed.
    untyped = {
        "variant_name": ["a"],
        "variant_value": ["true"],
        "variant_weight": ["1"],
        "variant_payload": ["7"],
    }
    _, problems = RuleForm.of_form({**untyped, "environment": [ENV], "serve": ["split"]}).to_rule("boolean")
    assert set(problems) == {"variants.0.payload_type"}


def test_settings_errors_go_to_their_fields() -> None:
    problems = [("description", "too long"), ("", "flag 'f': default_value: 'x' is not a number value")]
    errors = flag_field_errors(problems, ("description", "default_value"))
    assert errors == {"description": "too long", "default_value": "'x' is not a number value"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(words, json_values, max_size=4), st.dictionaries(words, json_values, max_size=4))
def test_the_diff_lists_exactly_the_fields_that_differ(before: dict[str, Any], after: dict[str, Any]) -> None:
    changes = diff(before, after)
    old, new = flatten(before), flatten(after)
    assert {c.path for c in changes} == {p for p in old.keys() | new.keys() if old.get(p) != new.get(p)}
    for change in changes:
        assert (change.before, change.after) == (old.get(change.path), new.get(change.path))
    assert diff(before, before) == []


def test_the_diff_of_a_rule_change_names_the_field() -> None:
    before = {"key": "f", "environments": {"production": {"enabled": False, "rules": [{"value": True}]}}}
    rule = {"value": True, "rollout": {"percent": 25}}
    after = {"key": "f", "environments": {"production": {"enabled": True, "rules": [rule]}}}
    changes = [(c.path, c.before, c.after, c.kind) for c in diff(before, after)]
    assert changes == [
        ("environments.production.enabled", "false", "true", "changed"),
        ("environments.production.rules[0].rollout.percent", None, "25", "added"),
    ]
    assert [c.kind for c in diff(before, None)] == ["removed", "removed", "removed"]
    paths = [c.path for c in diff(None, {"r": list(range(12))})]
    assert paths[2:4] == ["r[2]", "r[3]"]
    assert paths[-1] == "r[11]"


@given(
    st.lists(
        st.lists(st.sampled_from(["production", "staging", "test", "dev", "qa"]), max_size=4), max_size=3
    )
)
def test_environments_come_once_each_production_first(sources: list[list[str]]) -> None:
    ordered = ordered_environments(*sources)
    named = [name for source in sources for name in source]
    assert sorted(ordered) == sorted(set(named))
    if "production" in named:
        assert ordered[0] == "production"
    rest = [name for name in ordered if name != "production"]
    first_seen = list(dict.fromkeys(name for name in named if name != "production"))
    assert rest == first_seen


def test_the_list_filters() -> None:
    flag = {
        "key": "new-checkout",
        "description": "The NEW checkout",
        "type": "boolean",
        "environments": {"production": {"enabled": True}},
    }
    assert ListFilter(q="checkout").matches(flag)
    assert ListFilter(q="the new").matches(flag)
    assert not ListFilter(q="search").matches(flag)
    assert ListFilter(type="boolean").matches(flag)
    assert not ListFilter(type="string").matches(flag)
    assert ListFilter(state="on:production").matches(flag)
    assert not ListFilter(state="off:production").matches(flag)
    assert ListFilter(state="off:staging").matches(flag)
    assert not ListFilter(state="on:staging").matches(flag)
