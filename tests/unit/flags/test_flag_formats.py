"""Flag formats (`shipyard.flags._formats`): each one's round trip, what it refuses, and the merge
of a one-environment import into the flags there.

Round trips (hypothesis): for every flag set a format can carry, export → JSON text → import gives
the same FlagSet:
- shipyard: every valid flag set (rollouts, splits, prerequisites, every environment);
- flagd: one environment, conditions flagd's JsonLogic has (any of them inverted), segments
  (nested too), named and unnamed variants, rule names and every flag field;
- openfeature-json: key, type, default and description;
- unleash: the flag sets an Unleash document gives (every client-specification state).
What a format cannot carry is refused (flagd, unleash) or warned about (openfeature-json), naming
each flag and construct.
"""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.errors import InvalidObjectError
from shipyard.flags import FlagSet, compile_flagset
from shipyard.flags._conversion import Imported, merge_import
from shipyard.flags._flagd import export_flagd, import_flagd
from shipyard.flags._formats import FORMATS, FormatName, flag_format
from shipyard.flags._openfeature_json import export_manifest, import_manifest

ENV = "production"
SPEC = Path(__file__).resolve().parents[4] / "shared" / "unleash-client-specification"

# --- strategies ----------------------------------------------------------------------------------

slugs = st.from_regex(r"[a-z][a-z0-9-]{0,6}[a-z0-9]", fullmatch=True)
keys = slugs | st.sampled_from(["Feature.A", "Bestillingsløsning", "feature_B", "9lives"])
attributes = st.sampled_from(["userId", "role", "country", "email", "appVersion", "age", "environment", "$p"])
scalars = st.text(max_size=6) | st.integers(-50, 50) | st.booleans()
numbers = st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False)
versions = st.sampled_from(["1.0.0", "1.2.3", "2.0.0-rc.1", "0.9.12+build.5"])
strings_or_lists = st.text(max_size=5) | st.lists(st.text(max_size=5), min_size=1, max_size=3)
JSON_SCALARS = st.none() | st.booleans() | st.integers(-9, 9) | st.text(max_size=4)
json_values = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
)


def _condition(op: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda a, v: {"attribute": a, "op": op, "value": v}, attributes, values)


# The conditions flagd's JsonLogic can hold. `in`/`eq` are never inverted here: their negation is
# written as not_in/neq (the same test), which is what an import gives back.
FLAGD_CONDITIONS = st.one_of(
    _condition("in", st.lists(scalars, min_size=1, max_size=3)),
    _condition("not_in", st.lists(scalars, min_size=1, max_size=3)),
    _condition("eq", scalars),
    _condition("neq", scalars),
    _condition("num_eq", numbers),
    *(_condition(op, strings_or_lists) for op in ("contains", "starts_with", "ends_with")),
    *(_condition(op, numbers) for op in ("lt", "lte", "gt", "gte")),
    *(_condition(op, versions) for op in ("semver_lt", "semver_lte", "semver_eq", "semver_gte", "semver_gt")),
)


@st.composite
def flagd_condition(draw: st.DrawFn, segments: list[str]) -> dict[str, Any]:
    uses: list[dict[str, Any]] = [{"op": "segment", "value": s} for s in segments]
    cond = dict(draw(FLAGD_CONDITIONS | st.sampled_from(uses) if uses else FLAGD_CONDITIONS))
    if cond["op"] not in ("in", "eq") and draw(st.booleans()):
        cond["inverted"] = True
    return cond


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "boolean": st.booleans(),
    "string": st.text(max_size=8),
    "number": numbers,
}


@st.composite
def flagd_flag(draw: st.DrawFn, segments: list[str]) -> dict[str, Any]:
    flag_type = draw(st.sampled_from(["boolean", "string", "number", "json", "json-strings"]))
    if flag_type == "json":
        values: st.SearchStrategy[Any] = st.dictionaries(st.text(max_size=3), JSON_SCALARS, max_size=3)
    elif flag_type == "json-strings":  # a json flag flagd sees as a string flag: its type is metadata
        flag_type, values = "json", st.text(max_size=4)
    else:
        values = VALUES[flag_type]
    named = draw(st.dictionaries(st.sampled_from(["on", "off", "blue", "v 2", "false"]), values, max_size=3))
    rules = []
    for _ in range(draw(st.integers(0, 4))):
        rule: dict[str, Any] = {"conditions": draw(st.lists(flagd_condition(segments), max_size=3))}
        name = draw(st.sampled_from([None, *named]))
        if name is None:
            rule["value"] = draw(values)
        else:
            rule["value"], rule["variant"] = named[name], name
        if draw(st.booleans()):
            rule["name"] = draw(st.text(max_size=6))
        rules.append(rule)
    environment: dict[str, Any] = {"enabled": draw(st.booleans()), "rules": rules}
    if draw(st.booleans()):
        environment["value"] = draw(values)
    flag: dict[str, Any] = {
        "key": draw(keys),
        "type": flag_type,
        "default_value": draw(values),
        "environments": {ENV: environment},
        "description": draw(st.text(max_size=12)),
        "tags": draw(st.lists(slugs, max_size=2, unique=True)),
        "kind": draw(st.sampled_from(["release", "experiment", "kill-switch"])),
    }
    if draw(st.booleans()):
        flag["owner"] = draw(st.text(min_size=1, max_size=8))
    if draw(st.booleans()):
        flag["lifetime_days"] = draw(st.integers(1, 400))
    if draw(st.booleans()):
        flag["created_at"] = draw(st.datetimes(timezones=st.just(UTC))).isoformat()
    return flag


@st.composite
def flagd_flagsets(draw: st.DrawFn) -> FlagSet:
    names = draw(st.lists(slugs, max_size=3, unique=True))
    segments = [
        # a segment may use the ones before it (flagd: an evaluator with a $ref)
        {"name": name, "conditions": draw(st.lists(flagd_condition(names[:i]), min_size=1, max_size=3))}
        for i, name in enumerate(names)
    ]
    flags = draw(st.lists(flagd_flag(names), max_size=4, unique_by=lambda f: f["key"]))
    return FlagSet.from_data({"flags": flags, "segments": segments})


def through_json(document: dict[str, Any]) -> Any:
    """The document as a file holds it (and a reader sees it)."""
    return json.loads(json.dumps(document))


# --- round trips ---------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(flagd_flagsets())
def test_flagd_round_trip(flagset: FlagSet) -> None:
    exported = export_flagd(flagset, ENV)
    assert exported.warnings == []
    imported = import_flagd(through_json(exported.document), ENV)
    assert imported.flagset == flagset
    assert imported.warnings == []
    assert imported.environments == frozenset({ENV})


@st.composite
def any_flagsets(draw: st.DrawFn) -> FlagSet:
    """Flag sets with what flagd cannot carry too: rollouts, splits, prerequisites, environments."""
    flags = draw(st.lists(flagd_flag([]), min_size=1, max_size=3, unique_by=lambda f: f["key"]))
    for flag in flags:
        rules = flag["environments"][ENV]["rules"]
        if flag["type"] == "boolean" and draw(st.booleans()):
            rules.append(
                {"value": True, "rollout": {"percent": draw(st.integers(0, 100)), "stickiness": "default"}}
            )
        if draw(st.booleans()):
            flag["environments"]["staging"] = {"enabled": True, "value": flag["default_value"]}
    if len(flags) > 1 and draw(st.booleans()):
        flags[1]["prerequisites"] = [{"flag": flags[0]["key"], "enabled": draw(st.booleans())}]
    return FlagSet.from_data({"flags": flags})


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(any_flagsets() | flagd_flagsets())
def test_shipyard_round_trip(flagset: FlagSet) -> None:
    shipyard = flag_format("shipyard")
    assert shipyard.read(through_json(shipyard.write(flagset, ENV).document), ENV).flagset == flagset


manifest_flags = st.builds(
    lambda key, typed, description: {"key": key, **typed, "description": description},
    keys,
    st.one_of(
        st.builds(lambda v: {"type": "boolean", "default_value": v}, st.booleans()),
        st.builds(lambda v: {"type": "string", "default_value": v}, st.text(max_size=8)),
        st.builds(lambda v: {"type": "number", "default_value": v}, numbers),
        st.builds(
            lambda v: {"type": "json", "default_value": v}, json_values.filter(lambda v: v is not None)
        ),
    ),
    st.text(max_size=12),
)


@settings(max_examples=200)
@given(st.lists(manifest_flags, max_size=5, unique_by=lambda f: f["key"]))
def test_openfeature_manifest_round_trip(flags: list[dict[str, Any]]) -> None:
    flagset = FlagSet.from_data({"flags": flags})
    exported = export_manifest(flagset)
    assert exported.warnings == []
    for key, entry in exported.document["flags"].items():
        assert entry["flagType"] in ("boolean", "string", "integer", "float", "object"), key
    assert import_manifest(through_json(exported.document)).flagset == flagset


def test_manifest_types_follow_the_openfeature_cli() -> None:
    flagset = FlagSet.from_data([
        {"key": "a", "type": "number", "default_value": 3},
        {"key": "b", "type": "number", "default_value": 2.5},
        {"key": "c", "type": "json", "default_value": {"x": 1}, "description": "C"},
    ])  # fmt: skip
    assert export_manifest(flagset).document["flags"] == {
        "a": {"flagType": "integer", "defaultValue": 3},
        "b": {"flagType": "float", "defaultValue": 2.5},
        "c": {"flagType": "object", "defaultValue": {"x": 1}, "description": "C"},
    }


def test_manifest_export_warns_about_each_flag_it_leaves_out() -> None:
    flagset = FlagSet.from_data({
        "segments": [{"name": "staff", "conditions": [{"attribute": "role", "op": "eq", "value": "staff"}]}],
        "flags": [
            {"key": "plain", "default_value": False},
            {"key": "busy", "default_value": False, "owner": "ana", "environments": {ENV: {"enabled": True}}},
        ],
    })  # fmt: skip
    assert export_manifest(flagset).warnings == [
        "flags.busy: environments, owner not in a flag manifest",
        "segments staff: not in a flag manifest",
    ]


def test_manifest_import_names_every_bad_entry() -> None:
    document = {"flags": {
        "a": {"flagType": "integer", "defaultValue": 1.5},
        "b": {"flagType": "color", "defaultValue": "red"},
        "c": {"flagType": "boolean", "defaultValue": True, "schema": {}},
    }}  # fmt: skip
    with pytest.raises(InvalidObjectError) as caught:
        import_manifest(document)
    assert caught.value.problems == [
        ("flags.a.defaultValue", "1.5 is not a integer value"),
        ("flags.b.flagType", "'color': use one of boolean, string, integer, float, object"),
    ]


def test_every_format_is_in_the_table() -> None:
    assert set(FORMATS) == set(FormatName)
    assert {name for name, f in FORMATS.items() if f.one_environment} == {
        FormatName.unleash,
        FormatName.flagd,
    }
    with pytest.raises(ValueError, match="'yaml'"):
        flag_format("yaml")


# --- flagd: what an export refuses ---------------------------------------------------------------


def one(rule: dict[str, Any], key: str = "f", **flag: Any) -> FlagSet:
    environments = {ENV: {"enabled": True, "rules": [rule]}}
    return FlagSet.from_data(
        {"flags": [{"key": key, "default_value": False, "environments": environments, **flag}]}
    )


def cond(op: str, value: Any, attribute: str = "userId", **more: Any) -> dict[str, Any]:
    return {"conditions": [{"attribute": attribute, "op": op, "value": value, **more}], "value": True}


RULE = f"flags.f.environments.{ENV}.rules[0]"


@pytest.mark.parametrize(
    ("rule", "path", "says"),
    [
        ({"value": True, "rollout": {"percent": 50}}, f"{RULE}.rollout", "fractional hashes"),
        (
            {"split": {"variants": [{"name": "a", "value": True, "weight": 1}]}},
            f"{RULE}.split",
            "the same users would land in other buckets",
        ),
        (cond("matches", "^a"), f"{RULE}.conditions[0]", "op 'matches'"),
        (cond("before", "2030-01-01T00:00:00Z"), f"{RULE}.conditions[0]", "op 'before'"),
        (cond("in_cidr", ["10.0.0.0/8"]), f"{RULE}.conditions[0]", "op 'in_cidr'"),
        (cond("eq", "a", case_insensitive=True), f"{RULE}.conditions[0].case_insensitive", "case-sensitive"),
        (cond("eq", "a", attribute="user.id"), f"{RULE}.conditions[0]", "nested object"),
    ],
)
def test_flagd_export_refuses(rule: dict[str, Any], path: str, says: str) -> None:
    with pytest.raises(InvalidObjectError) as caught:
        export_flagd(one(rule), ENV)
    ((where, message),) = caught.value.problems
    assert (where, says in message) == (path, True), message


def test_flagd_export_names_every_construct_in_one_error() -> None:
    flagset = FlagSet.from_data({"flags": [
        {"key": "base", "default_value": False},
        {"key": "child", "default_value": False, "prerequisites": [{"flag": "base"}],
         "environments": {ENV: {"enabled": True, "rules": [
             cond("matches", "x"), {"value": True, "variant": "on"}, {"value": False, "variant": "on"}]}}},
        {"key": "mixed", "type": "json", "default_value": {"a": 1},
         "environments": {ENV: {"rules": [{"value": "text"}]}}},
    ]})  # fmt: skip
    with pytest.raises(InvalidObjectError) as caught:
        export_flagd(flagset, ENV)
    assert [p for p, _ in caught.value.problems] == [
        "flags.child.prerequisites",
        f"flags.child.environments.{ENV}.rules[2].variant",
        f"flags.child.environments.{ENV}.rules[0].conditions[0]",
        "flags.mixed",
    ]


def test_flagd_export_holds_one_environment_and_says_so() -> None:
    environments = {ENV: {"enabled": True}, "staging": {}, "dev": {}}
    flagset = FlagSet.from_data([{"key": "f", "default_value": False, "environments": environments}])
    exported = export_flagd(flagset, "staging")
    assert exported.document["flags"]["f"] == {
        "state": "DISABLED",
        "variants": {"false": False},
        "defaultVariant": "false",
        "metadata": {"shipyard.unnamed": '["false"]'},
    }
    assert exported.warnings == [
        "a flagd file holds one environment: staging is exported; "
        "dev, production are not (export each with --env)"
    ]


# --- flagd: reading files written by hand ------------------------------------------------------


def evaluate(flagset: FlagSet, key: str, context: dict[str, Any]) -> Any:
    return compile_flagset(flagset).evaluate(key, context, ENV).value


def test_flagd_import_reads_jsonlogic_as_flagd_evaluates_it() -> None:
    document = {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "$evaluators": {
            "faas": {"in": ["@faas.com", {"var": "email"}]},
            "withCountry": {"===": [{"var": "country"}, "NO"]},  # not a segment's name: pasted in
            "isBeta": {"if": [{"==": [{"var": "tier"}, 2]}, "beta", None]},  # a targeting, pasted in
        },
        "flags": {
            "headerColor": {
                "state": "ENABLED",
                "variants": {"red": "#FF0000", "blue": "#0000FF", "yellow": "#FFFF00"},
                "defaultVariant": "red",
                "targeting": {"if": [
                    {"or": [{"$ref": "faas"}, {"$ref": "withCountry"}]}, "blue",
                    {"if": [{"<": [18, {"var": "age"}, 65]},
                            {"if": [{"==": [{"var": "plan"}, "pro"]}, "yellow", None]}, None]},
                ]},
            },
            "beta": {
                "variants": {"beta": True, "off": False},
                "defaultVariant": "off",
                "targeting": {"$ref": "isBeta"},
                "metadata": {"team": "growth", "description": "Beta programme"},
            },
            "legacy": {"state": "DISABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        },
    }  # fmt: skip
    imported = import_flagd(document, ENV)
    flagset = imported.flagset
    assert [s.name for s in flagset.segments] == ["faas"]
    header = flagset.flag("headerColor")
    assert header is not None
    # the `or` is two rules; the nested `if` falls back to the default inside its branch
    assert [len(r.conditions) for r in header.environments[ENV].rules] == [1, 1, 3, 2]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"email": "ana@faas.com"}, "#0000FF"),
        ({"country": "NO", "age": 30, "plan": "pro"}, "#0000FF"),
        ({"age": 30, "plan": "pro"}, "#FFFF00"),
        ({"age": "30", "plan": "pro"}, "#FFFF00"),  # JsonLogic's < reads numeric strings
        ({"age": 30, "plan": "free"}, "#FF0000"),
        ({"age": 70, "plan": "pro"}, "#FF0000"),
        ({"age": 18, "plan": "pro"}, "#FF0000"),  # a strict between
        ({}, "#FF0000"),
    ]
    assert [evaluate(flagset, "headerColor", c) for c, _ in cases] == [v for _, v in cases]
    assert [evaluate(flagset, "beta", {"tier": t}) for t in (2, "2", 3)] == [True, True, False]
    assert evaluate(flagset, "legacy", {}) is True  # disabled: the default variant's value
    beta = flagset.flag("beta")
    assert beta is not None
    assert beta.description == "Beta programme"
    assert imported.warnings == [
        "flags.beta.metadata: team not imported (shipyard has no place for it)",
        'loose equality (==, !=) read as strict: a context value of another type (42 and "42") no longer '
        "matches; at flags.headerColor.targeting.if[2].if[1].if[0].==",
    ]


def test_flagd_import_names_every_construct_in_one_error() -> None:
    document = {
        "$evaluators": {"loop": {"$ref": "loop"}},
        "flags": {
            "split": {"variants": {"a": "A", "b": "B"}, "defaultVariant": "a",
                      "targeting": {"fractional": [{"var": "email"}, ["a", 50], ["b", 50]]}},
            "caret": {"variants": {"on": True, "off": False}, "defaultVariant": "off",
                      "targeting": {"if": [{"sem_ver": [{"var": "version"}, "^", "1.0.0"]}, "on", None]}},
            "clock": {"variants": {"on": True, "off": False}, "defaultVariant": "off",
                      "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, 1700000000]}, "on", None]}},
            "concat": {"variants": {"on": True, "off": False}, "defaultVariant": "off",
                       "targeting": {"if": [{"===": [{"cat": [{"var": "a"}, "x"]}, "bx"]}, "on", None]}},
            "no-default": {"variants": {"on": True}, "defaultVariant": None},
            "mixed": {"variants": {"on": True, "text": "x"}, "defaultVariant": "on"},
            "ghost": {"variants": {"on": True}, "defaultVariant": "on",
                      "targeting": {"if": [True, "nope", None]}},
            "cycle": {"variants": {"on": True}, "defaultVariant": "on", "targeting": {"$ref": "loop"}},
            "fine": {"variants": {"on": True}, "defaultVariant": "on"},
        },
    }  # fmt: skip
    with pytest.raises(InvalidObjectError) as caught:
        import_flagd(document, ENV)
    problems = dict(caught.value.problems)
    assert list(problems) == [
        "flags.split.targeting.fractional",
        "flags.caret.targeting.if[0].sem_ver",
        "flags.clock.targeting.if[0].>",
        "flags.concat.targeting.if[0].===",
        "flags.no-default.defaultVariant",
        "flags.mixed.variants",
        "flags.ghost.targeting",
        "$evaluators.loop",
    ]
    assert "murmur3" in problems["flags.split.targeting.fractional"]
    assert "'^'" in problems["flags.caret.targeting.if[0].sem_ver"]
    assert "$flagd.timestamp" in problems["flags.clock.targeting.if[0].>"]
    assert "null (the code's default) has no equivalent" in problems["flags.no-default.defaultVariant"]
    assert "'nope', which is not a variant" in problems["flags.ghost.targeting"]
    assert "cycle" in problems["$evaluators.loop"]


# --- one-environment imports keep the flags' other environments ---------------------------------


def test_a_one_environment_import_keeps_other_environments() -> None:
    current = FlagSet.from_data({
        "segments": [{"name": "staff", "conditions": [{"attribute": "role", "op": "eq", "value": "staff"}]}],
        "flags": [
            {"key": "base", "default_value": False},
            {"key": "f", "default_value": False, "owner": "ana", "prerequisites": [{"flag": "base"}],
             "environments": {"staging": {"enabled": True, "rules": [
                 {"conditions": [{"op": "segment", "value": "staff"}], "value": True}]},
                 ENV: {"enabled": True}}},
        ],
    })  # fmt: skip
    document = {"flags": {"f": {"variants": {"on": True, "off": False}, "defaultVariant": "on"},
                          "g": {"variants": {"on": True}, "defaultVariant": "on"}}}  # fmt: skip
    flagd = import_flagd(document, ENV)
    merged = merge_import(current, flagd)
    f = merged.flag("f")
    assert f is not None
    assert (f.owner, f.prerequisites) == (None, [])  # flagd describes the whole flag …
    assert sorted(f.environments) == [ENV, "staging"]  # … in its one environment
    assert (f.environments[ENV].value, f.default_value) == (None, True)
    assert [fl.key for fl in merged.flags] == ["f", "g"]  # nothing else is written
    manifest = import_manifest({"flags": {"f": {"flagType": "boolean", "defaultValue": True}}})
    merged = merge_import(current, manifest)
    f = merged.flag("f")
    assert f is not None
    assert (f.default_value, f.owner) == (True, "ana")  # a manifest: type and default only
    assert f.environments == current.flag("f").environments  # type: ignore[union-attr]
    assert [fl.key for fl in merged.flags] == ["f", "base"]  # with what it refers to, to validate it
    assert [s.name for s in merged.segments] == ["staff"]
    whole = Imported(FlagSet.from_data([{"key": "f", "default_value": True}]))
    assert merge_import(current, whole) is whole.flagset  # shipyard's own format: as it is


# --- unleash ---------------------------------------------------------------------------------------


def spec_states() -> list[tuple[str, Any]]:
    """Every specification file's state that is a client API body (the delta API's are events)."""
    files = [(p.name, json.loads(p.read_text())) for p in sorted(SPEC.glob("[0-9][0-9]-*.json"))]
    return [(name, spec["state"]) for name, spec in files if "features" in spec.get("state", {})]


@pytest.mark.parametrize(("name", "state"), spec_states())
def test_unleash_round_trip_of_every_specification_state(name: str, state: Any) -> None:
    """What an Unleash document holds comes back the same: import, export, import again."""
    unleash = flag_format("unleash")
    first = unleash.read(state, ENV).flagset
    exported = unleash.write(first, ENV)
    assert unleash.read(through_json(exported.document), ENV).flagset == first
