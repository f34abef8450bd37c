"""Unleash's client specification, run through the importer and shipyard's evaluator: 279 of 279;
then the importer's own cases (the three documents, errors, warnings) and Unleash's answers.

Every file of ../shared/unleash-client-specification (a copy of Unleash/client-specification, the
tests every official Unleash SDK passes) is imported with `from_unleash`, compiled, and each of its
`tests` (isEnabled) and `variantTests` (getVariant) is answered through `unleash_context`,
`unleash_enabled` and `unleash_variant`, the functions the Unleash-compatible APIs answer with.
The context is the one Unleash's Node SDK evaluates in its own specification test: the test's
context over the SDK's static context (`appName`, `environment: default`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import InvalidObjectError
from shipyard.flags import ErrorCode, Evaluation, Evaluator, Reason, compile_flagset
from shipyard.flags._unleash import unleash_context, unleash_enabled, unleash_variant
from shipyard.flags._unleash_import import from_unleash

SPEC = Path(__file__).resolve().parents[3].parent / "shared" / "unleash-client-specification"
ENVIRONMENT = "production"


def _cases() -> list[Any]:
    index = SPEC / "index.json"
    if not index.is_file():
        return [pytest.param(None, None, None, id="specification-missing")]
    cases = []
    for name in json.loads(index.read_text()):
        spec = json.loads((SPEC / name).read_text())
        for kind in ("tests", "variantTests"):
            for case in spec.get(kind, []):
                cases.append(pytest.param(name, kind, case, id=f"{name}:{case['description']}"))
    return cases


CASES = _cases()


@cache
def _evaluator(name: str) -> Evaluator:
    spec = json.loads((SPEC / name).read_text())
    return compile_flagset(from_unleash(spec["state"], environment=ENVIRONMENT).flagset)


def _context(name: str, case: dict[str, Any]) -> dict[str, Any]:
    static = {"appName": name, "environment": "default"}  # the Node SDK's static context
    return unleash_context({**static, **case["context"]})


def test_the_specification_is_all_there() -> None:
    assert (SPEC / "index.json").is_file(), f"Unleash's client specification is missing: {SPEC}"
    assert len(CASES) == 279


@pytest.mark.parametrize(("name", "kind", "case"), CASES)
def test_unleash_client_specification(name: str | None, kind: str | None, case: dict[str, Any]) -> None:
    if name is None:
        pytest.fail(f"Unleash's client specification is missing: {SPEC}/index.json")
    evaluation = _evaluator(name).evaluate(case["toggleName"], _context(name, case), ENVIRONMENT)
    if kind == "tests":
        assert unleash_enabled(evaluation) is case["expectedResult"], evaluation
        return
    expected = dict(case["expectedResult"])
    if "featureEnabled" in expected:  # the older spelling of feature_enabled
        expected["feature_enabled"] = expected.pop("featureEnabled")
    assert unleash_variant(evaluation) == expected, evaluation


# --- the importer: the three documents, all-or-nothing errors, warnings ---------------------------


def _state(*features: dict[str, Any], segments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"version": 2, "features": list(features), "segments": segments or []}


def _feature(name: str, *strategies: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": name, "enabled": True, "strategies": list(strategies), **fields}


def _answers(
    imported: Any, name: str, context: dict[str, Any], environment: str = ENVIRONMENT
) -> tuple[bool, dict[str, Any]]:
    evaluation = compile_flagset(imported.flagset).evaluate(name, unleash_context(context), environment)
    return unleash_enabled(evaluation), unleash_variant(evaluation)


def test_every_problem_is_named_with_its_path_and_nothing_is_imported() -> None:
    state = _state(
        _feature("ok", {"name": "default"}),
        _feature("x", {"name": "default"}, {"name": "flexibleRollout", "parameters": {"rollout": "abc"}}),
        _feature(
            "y",
            {"name": "default", "constraints": [{"contextName": "bad name", "operator": "IN", "values": []}]},
            variants=[{"name": "v", "weight": 1.5}],
        ),
        _feature("with/slash", {"name": "default"}),
    )
    with pytest.raises(InvalidObjectError) as info:
        from_unleash(state)
    message = str(info.value)
    assert "4 problems in the Unleash document (nothing was imported)" in message
    assert "features[1] (name 'x').strategies[1].parameters.rollout: 'abc' is not a percentage" in message
    assert "features[2] (name 'y').variants[0].weight: 1.5 is not a whole, non-negative weight" in message
    assert "features[3] (name 'with/slash').name: 'with/slash' is not a flag key" in message
    assert [path for path, _ in info.value.problems][:1] == [
        "features[1] (name 'x').strategies[1].parameters.rollout"
    ]


@pytest.mark.parametrize(
    "document",
    [[], "features", {}, {"flags": []}, {"features": "all"}, {"events": [{"type": "feature-exploded"}]}],
)
def test_what_is_no_unleash_document_is_refused_clearly(document: Any) -> None:
    with pytest.raises(InvalidObjectError, match=r"Unleash|features|event"):
        from_unleash(document)


def test_odd_but_reproducible_constructs_are_warnings() -> None:
    state = _state(
        _feature("custom", {"name": "myStrategy", "parameters": {}},
                 {"name": "userWithId", "parameters": {"userIds": "7"}}),
        _feature("unknown-op", {"name": "default", "constraints": [
            {"contextName": "a", "operator": "STR_REVERSED", "values": ["x"], "inverted": True}]}),
        _feature("bad-regex", {"name": "default", "constraints": [
            {"contextName": "a", "operator": "REGEX", "value": "(x", "inverted": True}]}),
        _feature("orphan", {"name": "default"}, dependencies=[{"feature": "ghost"}]),
    )  # fmt: skip
    imported = from_unleash(state)
    assert len(imported.warnings) == 4
    assert "'myStrategy' is unknown to Unleash's SDKs" in imported.warnings[0]
    # an unknown strategy never matches; the next strategy still can
    assert _answers(imported, "custom", {"userId": "7"})[0] is True
    assert _answers(imported, "custom", {"userId": "8"})[0] is False
    # an unknown operator is false even inverted; an invalid pattern is false, so inverted it holds
    assert _answers(imported, "unknown-op", {"a": "y"})[0] is False
    assert _answers(imported, "bad-regex", {"a": "y"})[0] is True
    assert _answers(imported, "orphan", {})[0] is False


def test_delta_events_apply_in_order() -> None:
    segment = {"id": 7, "name": "Beta Users!", "constraints": [
        {"contextName": "appName", "operator": "IN", "values": ["web"]}]}  # fmt: skip
    events = {
        "events": [
            {"type": "hydration", "features": [_feature("a", {"name": "default"})], "segments": []},
            {"type": "feature-updated", "feature": _feature("b", {"name": "default", "segments": [7]})},
            {"type": "segment-updated", "segment": segment},
            {"type": "feature-updated", "feature": _feature("a", {"name": "default"}, enabled=False)},
            {"type": "feature-updated", "feature": _feature("c", {"name": "default"})},
            {"type": "feature-removed", "featureName": "c"},
        ]
    }
    imported = from_unleash(events)
    assert [f.key for f in imported.flagset.flags] == ["a", "b"]
    assert [s.name for s in imported.flagset.segments] == ["beta-users"]
    assert _answers(imported, "a", {})[0] is False
    assert _answers(imported, "b", {"appName": "web"})[0] is True
    assert _answers(imported, "b", {"appName": "ios"})[0] is False
    removed = from_unleash({"events": [*events["events"], {"type": "segment-removed", "segmentId": 7}]})
    assert _answers(removed, "b", {"appName": "web"})[0] is False  # a missing segment: never matches


def test_segment_names_are_slugs_and_unique() -> None:
    constraint = [{"contextName": "a", "operator": "IN", "values": ["x"]}]
    segments = [
        {"id": 1, "name": "Beta", "constraints": constraint},
        {"id": 2, "name": "beta", "constraints": constraint},
        {"id": 3, "constraints": constraint},
        {"id": 4, "name": "!!!", "constraints": constraint},
    ]
    names = [s.name for s in from_unleash(_state(segments=segments)).flagset.segments]
    assert names == ["beta", "beta-2", "segment-3", "segment-4"]


EXPORT: dict[str, Any] = {
    "features": [
        {"name": "checkout", "description": "new checkout", "type": "experiment", "project": "default"},
        {"name": "child", "type": "permission"},
        {"name": "old", "archived": True},
    ],
    "featureStrategies": [
        {"name": "flexibleRollout", "featureName": "checkout", "sortOrder": 2,
         "parameters": {"rollout": "30", "stickiness": "userId", "groupId": "checkout"},
         "constraints": [{"contextName": "country", "operator": "IN", "values": ["BY", "PL"]}],
         "variants": [
             {"name": "a", "weight": 500, "stickiness": "userId",
              "payload": {"type": "string", "value": "A"}},
             {"name": "b", "weight": 500, "stickiness": "userId"}]},
        {"name": "userWithId", "featureName": "checkout", "sortOrder": 1, "parameters": {"userIds": "1, 2"}},
        {"name": "default", "featureName": "checkout", "sortOrder": 3, "disabled": True},
        {"name": "default", "featureName": "child"},
    ],
    "featureEnvironments": [
        {"featureName": "checkout", "environment": "production", "enabled": True, "variants": []},
        {"featureName": "child", "environment": "production", "enabled": True},
    ],
    "featureTags": [{"featureName": "checkout", "tagType": "simple", "tagValue": "payments"},
                    {"featureName": "checkout", "tagType": "simple", "tagValue": "Not A Slug"}],
    "dependencies": [{"feature": "child", "dependencies": [{"feature": "checkout", "variants": ["a"]}]}],
    "segments": [],
    "tagTypes": [{"name": "simple"}],
}  # fmt: skip


def test_an_admin_export_is_read_into_the_environment() -> None:
    imported = from_unleash(EXPORT, environment="staging")
    checkout, child = imported.flagset.flags
    assert (checkout.key, checkout.kind, checkout.description, checkout.tags) == (
        "checkout", "experiment", "new checkout", ["payments"]
    )  # fmt: skip
    rules = checkout.environments["staging"].rules
    assert [r.conditions[0].attribute if r.conditions else None for r in rules] == ["userId", "country"]
    assert rules[1].rollout is not None
    assert rules[1].rollout.percent == 30
    assert rules[1].split is not None
    assert rules[1].split.variants[0].payload is not None
    assert child.prerequisites[0].variants == ["a"]
    assert any("archived" in w for w in imported.warnings)
    assert any("Not A Slug" in w for w in imported.warnings)
    assert _answers(imported, "checkout", {"userId": "2"}, "staging") == (
        True, {"name": "disabled", "enabled": False, "feature_enabled": True}
    )  # fmt: skip


def test_an_admin_export_of_several_environments_or_without_segment_constraints_is_refused() -> None:
    dev = {"featureName": "child", "environment": "dev", "enabled": True}
    several = {**EXPORT, "featureEnvironments": [*EXPORT["featureEnvironments"], dev]}
    with pytest.raises(InvalidObjectError, match="several environments"):
        from_unleash(several)
    strategies = [{"name": "default", "featureName": "child", "segments": [1]}]
    bare = {**EXPORT, "featureStrategies": strategies, "segments": [{"id": 1, "name": "beta"}]}
    with pytest.raises(InvalidObjectError, match="client API state"):
        from_unleash(bare)


def test_posix_classes_are_imported_as_their_ranges() -> None:
    state = _state(_feature("f", {"name": "default", "constraints": [
        {"contextName": "userId", "operator": "REGEX", "value": "^[[:alpha:][:digit:]]+$"}]}))  # fmt: skip
    imported = from_unleash(state)
    assert (
        imported.flagset.flags[0].environments[ENVIRONMENT].rules[0].conditions[0].value == "^[A-Za-z0-9]+$"
    )
    assert _answers(imported, "f", {"userId": "Abc1"})[0] is True
    assert _answers(imported, "f", {"userId": "Abc-1"})[0] is False


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.sampled_from(
        ["", "default", "flexibleRollout", "IN", "NOT_IN", "REGEX", "userId", "50", "abc", "(x", "x"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from([
        "name", "enabled", "strategies", "parameters", "constraints", "contextName", "operator", "values",
        "value", "variants", "weight", "segments", "id", "rollout", "dependencies", "feature",
    ]), inner, max_size=5),
    max_leaves=25,
)  # fmt: skip


@given(st.lists(_JSON, max_size=3), st.lists(_JSON, max_size=2))
def test_any_document_is_imported_or_refused_with_an_invalid_object_error(
    features: Any, segments: Any
) -> None:
    try:
        imported = from_unleash({"features": features, "segments": segments})
    except InvalidObjectError as exc:
        refused: InvalidObjectError | None = exc
    else:
        refused = None
        compile_flagset(imported.flagset)  # what is imported compiles
    assert refused is None or refused.problems  # a refusal names its problems


# --- Unleash's context and answers ----------------------------------------------------------------


def test_unleash_context_reads_fields_then_properties_as_strings() -> None:
    context = {
        "userId": "u1", "sessionId": None, "properties": {"userId": "ignored", "sessionId": "s1", "n": 12,
        "f": 1.5, "on": True, "gone": None, "obj": {"a": 1}},
    }  # fmt: skip
    assert unleash_context(context) == {
        "userId": "u1",
        "sessionId": "s1",
        "n": "12",
        "f": "1.5",
        "on": "true",
    }
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert unleash_context({}, now=now) == {"currentTime": "2025-01-01T00:00:00+00:00"}
    assert unleash_context({"currentTime": "x"}, now=now) == {"currentTime": "x"}


def test_unleash_answers_from_evaluations() -> None:
    payload = {"type": "string", "value": "v"}
    on = Evaluation(True, "red", Reason.SPLIT, payload=payload)
    assert (unleash_enabled(on), unleash_variant(on)) == (
        True, {"name": "red", "enabled": True, "feature_enabled": True, "payload": payload}
    )  # fmt: skip
    plain = Evaluation(True, None, Reason.STATIC)
    assert unleash_variant(plain) == {"name": "disabled", "enabled": False, "feature_enabled": True}
    for off in (
        Evaluation(False, None, Reason.DEFAULT),
        Evaluation(True, None, Reason.DISABLED),  # a default of true does not make it on
        Evaluation(None, None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND),
        Evaluation("on", None, Reason.STATIC),
    ):
        assert unleash_enabled(off) is False
        assert unleash_variant(off) == {"name": "disabled", "enabled": False, "feature_enabled": False}
