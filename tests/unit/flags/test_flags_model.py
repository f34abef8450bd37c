"""The flag model: validation, references between flags and segments, the dict/YAML form, staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shipyard.flags import (
    Condition,
    Flag,
    FlagSet,
    check_references,
    compile_flagset,
    regex_problem,
    stale_flags,
)
from unit.flags.flagkit import one_flag


def flag(key: str = "f", **fields: Any) -> dict[str, Any]:
    return {"key": key, "default_value": False, **fields}


def rule(*conditions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"conditions": list(conditions), "value": True, **fields}


def env(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"production": {"enabled": True, "rules": list(rules)}}


def errors_of(data: Any) -> str:
    with pytest.raises(ValidationError) as info:
        FlagSet.from_data(data)
    return str(info.value)


# --- single flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "new-checkout", "a", "payments.v2", "x_1", "0day",
        # Unleash's names (imported flags keep them; flags created new are held to a slug by the
        # API and the CLI): capitals, edges, spaces, UTF-8
        "New", "-a", "a-", "a b", "é", "Feature.A", "Feature.UTF-8.😊_φriend_你好_🌍", "x" * 100,
    ],
)  # fmt: skip
def test_valid_keys(key: str) -> None:
    assert Flag.model_validate(flag(key)).key == key


@pytest.mark.parametrize("key", ["", "a/b", "x" * 101, "a\x00b", "tab\there", "new\nline", "\x7f", "\x85"])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ValidationError):
        Flag.model_validate(flag(key))


@pytest.mark.parametrize(
    ("flag_type", "good", "bad"),
    [
        ("boolean", True, "true"),
        ("boolean", False, 0),
        ("string", "blue", 1),
        ("number", 1.5, True),
        ("number", 3, "3"),
        ("json", {"a": [1, None]}, None),
    ],
)
def test_default_value_is_checked_against_the_type(flag_type: str, good: Any, bad: Any) -> None:
    assert Flag.model_validate(flag(type=flag_type, default_value=good)).default_value == good
    with pytest.raises(ValidationError, match="default_value"):
        Flag.model_validate(flag(type=flag_type, default_value=bad))


def test_rule_values_and_variants_are_checked_against_the_type() -> None:
    with pytest.raises(ValidationError, match=r"rules\[0\]"):
        Flag.model_validate(flag(environments=env(rule(value="yes"))))
    split = {"variants": [{"name": "a", "value": "x", "weight": 1}]}
    with pytest.raises(ValidationError, match=r"rules\[0\]"):
        Flag.model_validate(flag(environments=env({"split": split})))
    with pytest.raises(ValidationError, match=r"environments\.production\.value"):
        Flag.model_validate(flag(environments={"production": {"enabled": True, "value": 1}}))


def test_unknown_keys_are_rejected_everywhere() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Flag.model_validate(flag(colour="red"))
    with pytest.raises(ValidationError, match="extra"):
        Flag.model_validate(flag(environments={"production": {"enabled": True, "rulez": []}}))
    with pytest.raises(ValidationError, match="extra"):
        Flag.model_validate(flag(environments=env(rule(priority=1))))


def test_camel_case_keys_are_accepted() -> None:
    f = Flag.model_validate({"key": "f", "defaultValue": True, "lifetimeDays": 3})
    assert (f.default_value, f.lifetime_days) == (True, 3)
    r = one_flag([{"value": True, "rollout": {"percent": 5, "groupId": "g"}}]).flags[0]
    assert r.environments["production"].rules[0].rollout.group_id == "g"  # type: ignore[union-attr]


def test_a_rule_serves_a_value_or_a_split_not_both_nor_neither() -> None:
    split = {"variants": [{"name": "a", "value": True, "weight": 1}]}
    with pytest.raises(ValidationError, match="exactly one"):
        Flag.model_validate(flag(environments=env({"conditions": []})))
    with pytest.raises(ValidationError, match="exactly one"):
        Flag.model_validate(flag(environments=env({"value": True, "split": split})))


@pytest.mark.parametrize(
    "split",
    [
        {"variants": []},
        {"variants": [{"name": "a", "value": True, "weight": 0}]},
        {"variants": [{"name": "a", "value": True, "weight": 1}, {"name": "a", "value": False, "weight": 1}]},
        {"variants": [{"name": "a", "value": True, "weight": -1}]},
    ],
)
def test_invalid_splits(split: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Flag.model_validate(flag(environments=env({"split": split})))


@pytest.mark.parametrize("percent", [-1, 101, 30.5, "30"])
def test_rollout_percent_is_an_integer_from_0_to_100(percent: Any) -> None:
    with pytest.raises(ValidationError):
        Flag.model_validate(flag(environments=env(rule(rollout={"percent": percent}))))


# --- conditions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cond",
    [
        {"attribute": "role", "op": "in", "value": ["USER", 1, True]},
        {"attribute": "role", "op": "not_in", "value": []},
        {"attribute": "plan", "op": "eq", "value": "pro"},
        {"attribute": "age", "op": "neq", "value": 3},
        {"attribute": "email", "op": "ends_with", "value": ["@a.io", "@b.io"]},
        {"attribute": "email", "op": "matches", "value": r"^[a-z0-9.]+@example\.(com|org)$"},
        {"attribute": "age", "op": "gte", "value": 18},
        {"attribute": "appVersion", "op": "semver_gt", "value": "2.0.0-rc.1+build.5"},
        {"attribute": "currentTime", "op": "after", "value": "2025-01-31T12:00:00+01:00"},
        {"attribute": "currentTime", "op": "before", "value": "2025-01-31T12:00:00Z"},
        {"op": "segment", "value": "beta"},
        {"attribute": "remoteAddress", "op": "in_cidr", "value": ["10.0.0.0/8", "2001:db8::1"]},
        {"attribute": "age", "op": "num_eq", "value": 12.5},
        {"attribute": "v", "op": "semver_gte", "value": "1.2.2"},
        {"attribute": "email", "op": "ends_with", "value": "@A.io", "case_insensitive": True},
        {"attribute": "role", "op": "in", "value": ["x"], "inverted": True},
        {"op": "segment", "value": "beta", "inverted": True},
        {"attribute": "id", "op": "matches", "value": "^(?i)abc$", "caseInsensitive": True},
    ],
)
def test_valid_conditions(cond: dict[str, Any]) -> None:
    assert Condition.model_validate(cond).op == cond["op"]


@pytest.mark.parametrize(
    ("cond", "message"),
    [
        ({"attribute": "role", "op": "in", "value": "USER"}, "list"),
        ({"attribute": "role", "op": "in", "value": [["USER"]]}, "list"),
        ({"attribute": "role", "op": "eq", "value": None}, "string, a number"),
        ({"attribute": "role", "op": "like", "value": "x"}, "op"),
        ({"op": "in", "value": ["x"]}, "needs an attribute"),
        ({"attribute": "role", "op": "segment", "value": "beta"}, "no attribute"),
        ({"op": "segment", "value": 3}, "segment's name"),
        ({"attribute": "email", "op": "contains", "value": []}, "non-empty list"),
        ({"attribute": "age", "op": "lt", "value": "eighteen"}, "number"),
        ({"attribute": "age", "op": "lt", "value": True}, "number"),
        ({"attribute": "v", "op": "semver_lt", "value": "1.2"}, "semantic version"),
        ({"attribute": "v", "op": "semver_lt", "value": "01.2.3"}, "semantic version"),
        ({"attribute": "t", "op": "before", "value": "yesterday"}, "ISO-8601"),
        ({"attribute": "t", "op": "before", "value": "2025-01-31T12:00:00"}, "time zone"),
        ({"attribute": "bad name", "op": "eq", "value": 1}, "pattern"),
        ({"attribute": "ip", "op": "in_cidr", "value": ["10.0.0.0/8", "10.invalid"]}, "'10.invalid' is not"),
        ({"attribute": "ip", "op": "in_cidr", "value": "10.0.0.0/8"}, "list of IP addresses"),
        ({"attribute": "age", "op": "num_eq", "value": "twelve"}, "number"),
        ({"attribute": "age", "op": "lt", "value": 3, "case_insensitive": True}, "string operators"),
        ({"attribute": "a", "op": "in", "value": [], "inverted": "yes"}, "bool"),
    ],
)
def test_invalid_conditions(cond: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition.model_validate(cond)


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a+)+$",
        r"(a*)*b",
        r"(\w+\s?)+$",
        r"(a{1,5})+",
        r"((ab)*c)*",
        r"(a|aa)+$",
        r"(.*a){12}",
        r"(a)\1",
        r"(?P<x>a)(?P=x)",
        # what RE2 (Unleash's engine) and Python's re would read differently, or one of them not at all
        r"^[[:alpha:]]+$",
        r"^(?=a)b$",
        r"(?<!a)b",
        r"a*+",
        r"\pL",
        r"(?U)a+",
        r"(?x)a b",
        r"\Z",
        r"[\W]",
    ],
)
def test_catastrophic_patterns_are_rejected_at_validation(pattern: str) -> None:
    assert regex_problem(pattern) is not None
    with pytest.raises(ValidationError, match="unsafe or invalid pattern"):
        Condition.model_validate({"attribute": "email", "op": "matches", "value": pattern})


@pytest.mark.parametrize(
    "pattern", [r"^[a-z]+@example\.com$", r"^\d{3}-\d{4}$", r"(?i)^beta", r"^(GET|POST) /", r"a+b*c?"]
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert regex_problem(pattern) is None


def test_patterns_that_do_not_compile_or_are_too_long_are_rejected() -> None:
    assert "compile" in (regex_problem("(unclosed") or "")
    assert "longer" in (regex_problem("a" * 501) or "")


def test_a_posix_class_is_refused_with_its_range() -> None:
    assert "write the range, e.g. A-Za-z" in (regex_problem("^[[:alpha:]]+$") or "")


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (r"^abc$", "abc\n", False),  # RE2's $ is the end of the text; Python's also matches before \n
        (r"(?m)^foo$", "x\nfoo\ny", True),
        (r"^(?i)abc$", "AbC", True),  # RE2 takes flags anywhere; Python only at the start
        (r"a(?i)b|c", "C", True),  # the flag lasts to the group's end, across |
        (r"^(?s)a.b$", "a\nb", True),
        (r"^\d+$", "١٢", False),  # \d, \w, \s and \b are ASCII in RE2
        (r"^\w+$", "é", False),
        (r"\bcat\b", "écat", True),
        (r"^\s$", "\v", False),
        (r"^x{,3}$", "x{,3}", True),  # not a repeat in RE2
    ],
)
def test_patterns_mean_what_they_mean_in_re2(pattern: str, text: str, expected: bool) -> None:
    cond = {"attribute": "a", "op": "matches", "value": pattern}
    ev = compile_flagset(one_flag([{"conditions": [cond], "value": True}]))
    assert ev.is_enabled("f", {"a": text}, "production") is expected


# --- the flag set: references, cycles, forms ----------------------------------------------------


def test_unknown_segment_names_the_flag_environment_and_rule() -> None:
    data = {
        "flags": [
            flag(
                "checkout",
                environments=env(rule(), rule({"op": "segment", "value": "beta"}, name="beta users")),
            )
        ]
    }
    message = errors_of(data)
    assert (
        "flag 'checkout', environment 'production', rule 1 ('beta users') uses unknown segment 'beta'"
        in message
    )
    assert "flags[0].environments.production.rules[1].conditions[0]" in message


def test_check_references_reports_structured_issues() -> None:
    flags = [Flag.model_validate(flag("a", environments=env(rule({"op": "segment", "value": "nope"}))))]
    [issue] = check_references(flags, [])
    assert (issue.flag, issue.environment, issue.rule) == ("a", "production", 0)


def test_prerequisite_cycles_are_accepted_they_never_hold() -> None:
    # Prerequisites are one level deep, as Unleash's dependencies: a prerequisite on a flag that has
    # prerequisites never holds, so a cycle is no error (the evaluator tests show it never holds).
    data = [
        flag("a", prerequisites=[{"flag": "b"}]),
        flag("b", prerequisites=[{"flag": "c"}]),
        flag("c", prerequisites=[{"flag": "a"}]),
    ]
    assert [f.key for f in FlagSet.from_data(data).flags] == ["a", "b", "c"]
    assert FlagSet.from_data([flag("a", prerequisites=[{"flag": "a"}])]).flags[0].prerequisites[0].flag == "a"


def test_an_acyclic_prerequisite_graph_is_accepted() -> None:
    data = [
        flag("a"),
        flag("b", prerequisites=[{"flag": "a"}]),
        flag("c", prerequisites=[{"flag": "a"}, {"flag": "b"}]),
    ]
    assert [f.key for f in FlagSet.from_data(data).flags] == ["a", "b", "c"]


def test_unknown_prerequisites_and_variants_are_rejected() -> None:
    assert "flag 'b' requires unknown flag 'zz'" in errors_of([flag("b", prerequisites=[{"flag": "zz"}])])
    split = {"variants": [{"name": "red", "value": True, "weight": 1}]}
    data = [
        flag("a", environments=env({"split": split})),
        flag("b", prerequisites=[{"flag": "a", "variant": "blue"}]),
    ]
    assert "requires variant 'blue' of flag 'a'" in errors_of(data)
    ok = [
        flag("a", environments=env({"split": split})),
        flag("b", prerequisites=[{"flag": "a", "variant": "red"}]),
    ]
    assert FlagSet.from_data(ok).flags[1].prerequisites[0].variants == ["red"]
    # "disabled" is Unleash's name for on without a variant: any flag can serve it
    disabled = [flag("a"), flag("b", prerequisites=[{"flag": "a", "variants": ["disabled"]}])]
    assert FlagSet.from_data(disabled).flags[1].prerequisites[0].variants == ["disabled"]


def test_a_prerequisite_reads_the_older_single_variant() -> None:
    split = {"variants": [{"name": "red", "value": True, "weight": 1}]}
    both = [flag("a", environments=env({"split": split}))]
    pre = FlagSet.from_data([*both, flag("b", prerequisites=[{"flag": "a", "variant": "red"}])])
    assert pre.flags[1].prerequisites[0].variants == ["red"]
    assert pre.to_data()["flags"][1]["prerequisites"] == [{"flag": "a", "variants": ["red"]}]
    [none] = (
        FlagSet.from_data([flag("b", prerequisites=[{"flag": "b", "variant": None}])]).flags[0].prerequisites
    )
    assert none.variants == []
    with pytest.raises(ValidationError, match="not both"):
        FlagSet.from_data([*both, flag("b", prerequisites=[{"flag": "a", "variant": "red", "variants": []}])])


def test_variants_carry_payloads_and_overrides() -> None:
    variant = {
        "name": "red", "value": True, "weight": 1, "payload": {"type": "json", "value": '{"a": 1}'},
        "overrides": [{"attribute": "userId", "values": ["1", "2"]}],
    }  # fmt: skip
    data = [flag("a", environments=env({"split": {"variants": [variant]}}))]
    assert FlagSet.from_data(data).to_data()["flags"][0]["environments"]["production"]["rules"][0]["split"][
        "variants"
    ] == [variant]
    with pytest.raises(ValidationError, match="payload"):
        FlagSet.from_data([flag("a", environments=env({"split": {"variants": [
            {**variant, "payload": {"type": "xml", "value": "<a/>"}}]}}))])  # fmt: skip


def test_defaults_stay_out_of_the_dict_form() -> None:
    data = {"flags": [flag("a", environments=env(rule({"attribute": "x", "op": "in", "value": ["1"]})))]}
    assert FlagSet.from_data(data).to_data() == data


def test_segments_referencing_unknown_or_cyclic_segments_are_rejected() -> None:
    seg = {"name": "s", "conditions": [{"op": "segment", "value": "ghost"}]}
    assert "segment 's' uses unknown segment 'ghost'" in errors_of({"segments": [seg]})
    s1 = {"name": "s1", "conditions": [{"op": "segment", "value": "s2"}]}
    s2 = {"name": "s2", "conditions": [{"op": "segment", "value": "s1"}]}
    assert "segments include each other in a cycle: s1 → s2 → s1" in errors_of({"segments": [s1, s2]})


def test_duplicate_keys_and_segment_names_are_rejected() -> None:
    assert "duplicate key(s) a" in errors_of([flag("a"), flag("a")])
    seg = {"name": "s", "conditions": [{"attribute": "a", "op": "eq", "value": 1}]}
    assert "duplicate name(s) s" in errors_of({"segments": [seg, seg]})


REFERENCE_YAML = """
version: 4
segments:
  staff:
    conditions:
      - {attribute: email, op: ends_with, value: "@shipyard.dev"}
flags:
  new-checkout:
    description: The one-page checkout
    default_value: false
    owner: payments-team
    tags: [checkout]
    kind: release
    created_at: 2025-01-01T00:00:00Z
    environments:
      staging: {enabled: true, value: true}
      production:
        enabled: true
        rules:
          - conditions: [{op: segment, value: staff}]
            value: true
          - conditions: [{attribute: role, op: in, value: [USER, ADMIN]}]
            rollout: {percent: 30}
            value: true
  theme:
    type: string
    default_value: light
    prerequisites: [{flag: new-checkout}]
    environments:
      production:
        enabled: true
        rules:
          - split:
              variants:
                - {name: dark, value: dark, weight: 1}
                - {name: light, value: light, weight: 1}
"""


def test_yaml_round_trip_and_mapping_forms() -> None:
    fs = FlagSet.from_yaml(REFERENCE_YAML)
    assert fs.version == 4
    assert [f.key for f in fs.flags] == ["new-checkout", "theme"]
    assert fs.segments[0].name == "staff"
    assert FlagSet.from_yaml(fs.to_yaml()) == fs
    assert FlagSet.from_data(fs.to_data()) == fs
    assert FlagSet.model_validate_json(fs.model_dump_json()) == fs
    data = fs.to_data()
    assert data["flags"][0]["key"] == "new-checkout"  # exported as a list, snake_case
    assert "default_value" in data["flags"][0]


def test_the_stack_spec_may_hold_a_bare_list_or_mapping_of_flags() -> None:
    assert FlagSet.from_data([flag("a")]).flags[0].key == "a"
    assert FlagSet.from_data({"a": {"default_value": True}}).flags[0].default_value is True
    assert FlagSet.from_data({}).flags == []


# --- staleness ----------------------------------------------------------------------------------


def test_stale_flags_use_the_kind_lifetime_and_the_given_now() -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    fs = FlagSet.from_data(
        [
            flag("release", kind="release", created_at=created.isoformat(), owner="me"),
            flag("ops", kind="operational", created_at=created.isoformat()),
            flag("kill", kind="kill-switch", created_at=created.isoformat()),
            flag("custom", kind="release", lifetime_days=400, created_at=created.isoformat()),
            flag("undated", kind="experiment"),
        ]
    )
    assert stale_flags(fs, created + timedelta(days=7)) == []
    assert [s.key for s in stale_flags(fs, created + timedelta(days=8))] == ["ops"]
    stale = stale_flags(fs, datetime(2025, 3, 1))  # naive: taken as UTC
    assert [s.key for s in stale] == ["ops", "release"]  # most overdue first
    assert stale[1].owner == "me"
    assert stale[1].expected_lifetime == timedelta(days=40)
    assert stale[1].overdue == timedelta(days=59 - 40)
    assert [s.key for s in stale_flags(fs.flags, created + timedelta(days=401))] == [
        "ops",
        "release",
        "custom",
    ]


def test_created_at_needs_a_time_zone() -> None:
    with pytest.raises(ValidationError):
        Flag.model_validate(flag(created_at="2025-01-01T00:00:00"))
