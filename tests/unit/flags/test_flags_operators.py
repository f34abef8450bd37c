"""Every condition operator: semantics, missing attributes, wrong types, semver and date-time edges,
IN_CIDR, case-insensitive and inverted conditions (as Unleash's SDKs evaluate them)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.flags import MAX_MATCH_INPUT, OPERATORS, semver_key
from unit.flags.flagkit import ENV, compiled, condition_holds

MISSING = object()


def holds(op: str, value: Any, context_value: Any, attribute: str = "a") -> bool:
    context = {} if context_value is MISSING else {attribute: context_value}
    return condition_holds({"attribute": attribute, "op": op, "value": value}, context)


CASES: list[tuple[str, Any, Any, bool]] = [
    # in / not_in: strict JSON types (1 is not "1", True is not 1)
    ("in", ["USER", "ADMIN"], "USER", True),
    ("in", ["USER", "ADMIN"], "GUEST", False),
    ("in", ["USER", "ADMIN"], "user", False),
    ("in", [1, 2], 2, True),
    ("in", [1, 2], 2.0, True),
    ("in", [1, 2], "1", False),
    ("in", [1, 2], True, False),
    ("in", [True], True, True),
    ("in", [True], 1, False),
    ("in", ["a", 1, False], False, True),
    ("in", [], "x", False),
    ("not_in", ["USER"], "GUEST", True),
    ("not_in", ["USER"], "USER", False),
    ("not_in", [1], 2, True),
    ("not_in", [1], True, True),
    ("not_in", ["x"], None, True),  # not_in is "not in": a missing value is not in (Unleash's NOT_IN)
    ("not_in", ["x"], ["x"], True),
    # eq / neq
    ("eq", "pro", "pro", True),
    ("eq", "pro", "Pro", False),
    ("eq", 3, 3.0, True),
    ("eq", 1, True, False),
    ("eq", False, False, True),
    ("eq", False, 0, False),
    ("neq", "pro", "free", True),
    ("neq", "pro", "pro", False),
    ("neq", 3, 4, True),
    ("neq", 3, "3", True),
    # strings
    ("contains", "@corp", "ann@corp.io", True),
    ("contains", "@corp", "ann@other.io", False),
    ("contains", ["x", "corp"], "ann@corp.io", True),
    ("starts_with", "beta-", "beta-7", True),
    ("starts_with", "beta-", "alpha-beta-7", False),
    ("starts_with", ["a", "b"], "bx", True),
    ("ends_with", "@corp.io", "ann@corp.io", True),
    ("ends_with", ["@a.io", "@b.io"], "x@c.io", False),
    ("matches", r"^[a-z]+@corp\.io$", "ann@corp.io", True),
    ("matches", r"^[a-z]+@corp\.io$", "Ann@corp.io", False),
    ("matches", r"corp", "x-corp-y", True),  # search, not fullmatch
    # numbers (numeric strings count: query parameters are strings)
    ("lt", 18, 17, True),
    ("lt", 18, 18, False),
    ("lte", 18, 18, True),
    ("gt", 18, 18.5, True),
    ("gte", 18, 17.99, False),
    ("gte", 18, "18", True),
    ("lt", 1.5, "1.25", True),
    ("gt", 0, "nan", False),
    ("gt", 0, "inf", False),
    ("gt", 0, "ten", False),
    ("gt", 0, 10**400, True),
    ("lt", 0, float("-inf"), True),
    # numeric strings as JavaScript's Number() reads them (Unleash's SDKs): trimmed, hex, "" is 0
    ("gt", 10, " 12 ", True),
    ("gt", 10, "0x10", True),
    ("lt", 1, "", True),
    ("gt", 10, "1_000", False),
    ("gt", 10, "Infinity", True),
    ("gt", 0, "١٢", False),
    ("gt", 0, True, False),
    ("num_eq", 12, "12.0", True),
    ("num_eq", 12, 12.0, True),
    ("num_eq", 12.5, "12.5", True),
    ("num_eq", 12, "13", False),
    ("num_eq", 12, "twelve", False),
    # semver: precedence per SemVer 2.0
    ("semver_lt", "2.0.0", "1.9.9", True),
    ("semver_lt", "2.0.0", "2.0.0-rc.1", True),
    ("semver_lt", "2.0.0-rc.2", "2.0.0-rc.10", False),
    ("semver_lt", "1.0.0-beta", "1.0.0-alpha.1", True),
    ("semver_lt", "1.0.0-beta", "1.0.0-beta.2", False),
    ("semver_lt", "1.0.0-alpha.beta", "1.0.0-alpha.1", True),
    ("semver_gt", "1.0.0-alpha", "1.0.0-alpha.1", True),
    ("semver_gt", "1.10.0", "1.9.0", False),
    ("semver_gt", "1.9.0", "1.10.0", True),
    ("semver_eq", "1.2.3", "1.2.3+build.7", True),
    ("semver_eq", "1.2.3", "1.2.3-rc.1", False),
    ("semver_eq", "1.2.3", "v1.2.3", False),
    ("semver_eq", "1.2.3", "1.2", False),
    ("semver_gt", "1.0.0", 2, False),
    ("semver_gte", "1.2.2", "1.2.2", True),
    ("semver_gte", "1.2.2", "1.2.1", False),
    ("semver_gte", "2.0.0-alpha.1", "2.0.0-beta.1", True),
    ("semver_lte", "1.2.2", "1.2.2+build", True),
    ("semver_lte", "1.2.2", "1.2.3", False),
    ("semver_eq", "1.2.2", " 1.2.2 ", True),  # node-semver trims
    # IPv4/IPv6 addresses and CIDR blocks
    ("in_cidr", ["127.0.0.1"], "127.0.0.1", True),
    ("in_cidr", ["127.0.0.1"], "127.0.0.2", False),
    ("in_cidr", ["160.33.0.0/16"], "160.33.0.33", True),
    ("in_cidr", ["160.33.0.0/16"], "160.34.0.1", False),
    ("in_cidr", ["10.0.0.7/8"], "10.200.1.1", True),
    ("in_cidr", ["2001:db8::/32"], "2001:db8:0:1::42", True),
    ("in_cidr", ["2001:db8::/32"], "2001:db9::1", False),
    ("in_cidr", ["2001:db8::/32", "10.0.0.0/8"], "10.1.2.3", True),
    ("in_cidr", ["0.0.0.0/0"], "::1", False),
    ("in_cidr", ["0.0.0.0/0"], "not an ip", False),
    ("in_cidr", [], "10.1.2.3", False),
    # date-times, with time zones; a naive context value is UTC
    ("before", "2025-01-01T00:00:00Z", "2025-01-01T01:00:00+02:00", True),
    ("before", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00+00:00", False),
    ("after", "2025-01-01T00:00:00Z", "2024-12-31T23:30:00-01:00", True),
    ("after", "2025-01-01T00:00:00+01:00", "2024-12-31T23:00:00", False),
    ("after", "2025-01-01T00:00:00+01:00", "2024-12-31T23:00:01", True),
    ("before", "2025-01-01T00:00:00Z", "2024-12-31", True),
    ("before", "2025-01-01T00:00:00Z", "not a date", False),
    ("before", "2025-01-01T00:00:00Z", 1735689599, False),
    ("after", "2025-01-01T00:00:00Z", datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC), True),
    (
        "after",
        "2025-01-01T00:00:00Z",
        datetime(2025, 1, 1, 1, 0, 1, tzinfo=timezone(timedelta(hours=1))),
        True,
    ),
]


@pytest.mark.parametrize(("op", "value", "context_value", "expected"), CASES)
def test_operator_semantics(op: str, value: Any, context_value: Any, expected: bool) -> None:
    assert holds(op, value, context_value) is expected


OPERAND = {
    "in": ["x", 1], "not_in": ["x", 1], "eq": "x", "neq": "x", "contains": "x", "starts_with": "x",
    "ends_with": "x", "matches": "x", "lt": 1, "lte": 1, "gt": 1, "gte": 1, "num_eq": 1,
    "semver_lt": "1.0.0", "semver_eq": "1.0.0", "semver_gt": "1.0.0", "semver_lte": "1.0.0",
    "semver_gte": "1.0.0", "before": "2025-01-01T00:00:00Z", "after": "2025-01-01T00:00:00Z",
    "in_cidr": ["0.0.0.0/0", "::/0"],
}  # fmt: skip
NEGATIVE = {"not_in", "neq"}  # exactly "not in" / "not eq": true when the value is missing (Unleash's NOT_IN)


@pytest.mark.parametrize("op", [op for op in OPERATORS if op != "segment"])
@pytest.mark.parametrize("context_value", [MISSING, None, [], {}, ["x"], {"x": 1}])
def test_missing_attribute_or_wrong_type_is_false_except_for_the_negations(
    op: str, context_value: Any
) -> None:
    assert holds(op, OPERAND[op], context_value) is (op in NEGATIVE)


@pytest.mark.parametrize("op", [op for op in OPERATORS if op != "segment"])
@pytest.mark.parametrize("context_value", [MISSING, "x", "1.0.0", 1, "2030-01-01T00:00:00Z", "10.0.0.1"])
def test_inverted_is_exactly_not(op: str, context_value: Any) -> None:
    context = {} if context_value is MISSING else {"a": context_value}
    cond = {"attribute": "a", "op": op, "value": OPERAND[op]}
    assert condition_holds({**cond, "inverted": True}, context) is not condition_holds(cond, context)


@given(
    st.sampled_from(["in", "not_in", "eq", "neq", "contains", "starts_with", "ends_with"]),
    st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4),
    st.text(max_size=8),
)
def test_case_insensitive_is_the_same_test_on_lowercased_strings(
    op: str, values: list[str], text: str
) -> None:
    operand: Any = values[0] if op in ("eq", "neq") else values
    folded: Any = operand.lower() if isinstance(operand, str) else [v.lower() for v in operand]
    insensitive = {"attribute": "a", "op": op, "value": operand, "case_insensitive": True}
    plain = {"attribute": "a", "op": op, "value": folded}
    assert condition_holds(insensitive, {"a": text}) is condition_holds(plain, {"a": text.lower()})


def test_case_insensitive_matches() -> None:
    cond = {"attribute": "a", "op": "matches", "value": "^abc$", "case_insensitive": True}
    assert condition_holds(cond, {"a": "AbC"})
    assert not condition_holds({**cond, "case_insensitive": False}, {"a": "AbC"})


_NETWORKS = st.one_of(
    st.builds(lambda a, n: f"{ipaddress.IPv4Address(a)}/{n}", st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(
        lambda a, n: f"{ipaddress.IPv6Address(a)}/{n}", st.integers(0, 2**128 - 1), st.integers(0, 128)
    ),
    st.builds(lambda a: str(ipaddress.IPv4Address(a)), st.integers(0, 2**32 - 1)),
)
_ADDRESSES = st.one_of(
    st.builds(lambda a: str(ipaddress.IPv4Address(a)), st.integers(0, 2**32 - 1)),
    st.builds(lambda a: str(ipaddress.IPv6Address(a)), st.integers(0, 2**128 - 1)),
)


@given(st.lists(_NETWORKS, max_size=4), _ADDRESSES)
def test_in_cidr_agrees_with_ipaddress(networks: list[str], address: str) -> None:
    expected = any(ipaddress.ip_address(address) in ipaddress.ip_network(n, strict=False) for n in networks)
    assert holds("in_cidr", networks, address) is expected


def test_every_operator_is_covered() -> None:
    assert set(OPERAND) | {"segment"} == set(OPERATORS)
    assert {case[0] for case in CASES} == set(OPERAND)


def test_matches_bounds_the_input_length() -> None:
    assert holds("matches", "^a", "a" * MAX_MATCH_INPUT)
    assert not holds("matches", "^a", "a" * (MAX_MATCH_INPUT + 1))


def test_environment_attribute_defaults_to_the_evaluated_environment() -> None:
    cond = {"attribute": "environment", "op": "in", "value": [ENV]}
    assert condition_holds(cond, {})
    assert not condition_holds(cond, {"environment": "staging"})
    assert not condition_holds({"attribute": "environment", "op": "eq", "value": "staging"}, {})


def test_custom_attributes_and_the_standard_ones() -> None:
    cond = {"attribute": "userId", "op": "in", "value": ["u1", "u2"]}
    assert condition_holds(cond, {"userId": "u2"})
    assert condition_holds({"attribute": "tenant.tier", "op": "eq", "value": "gold"}, {"tenant.tier": "gold"})
    assert not condition_holds(cond, {"userid": "u2"})  # attribute names are case-sensitive


def test_all_conditions_of_a_rule_must_hold() -> None:
    conds = [
        {"attribute": "role", "op": "eq", "value": "ADMIN"},
        {"attribute": "age", "op": "gte", "value": 18},
        {"attribute": "country", "op": "in", "value": ["BY", "PL"]},
    ]
    ev = compiled([{"key": "f", "default_value": False, "environments": {ENV: {"enabled": True, "rules": [
        {"conditions": conds, "value": True}]}}}])  # fmt: skip
    assert ev.is_enabled("f", {"role": "ADMIN", "age": 30, "country": "BY"}, ENV)
    assert not ev.is_enabled("f", {"role": "ADMIN", "age": 30, "country": "DE"}, ENV)
    assert not ev.is_enabled("f", {"role": "ADMIN", "country": "BY"}, ENV)
    assert not ev.is_enabled("f", {"age": 30, "country": "BY"}, ENV)


def test_segments_nest_and_are_shared() -> None:
    segments = [
        {"name": "adults", "conditions": [{"attribute": "age", "op": "gte", "value": 18}]},
        {"name": "staff", "conditions": [
            {"op": "segment", "value": "adults"},
            {"attribute": "email", "op": "ends_with", "value": "@corp.io"}]},
    ]  # fmt: skip
    assert condition_holds({"op": "segment", "value": "staff"}, {"age": 40, "email": "a@corp.io"}, segments)
    assert not condition_holds(
        {"op": "segment", "value": "staff"}, {"age": 17, "email": "a@corp.io"}, segments
    )
    assert not condition_holds({"op": "segment", "value": "staff"}, {"age": 40, "email": "a@x.io"}, segments)
    assert condition_holds({"op": "segment", "value": "adults"}, {"age": "18"}, segments)


@given(
    st.lists(st.integers(0, 30), min_size=3, max_size=3), st.lists(st.integers(0, 30), min_size=3, max_size=3)
)
def test_semver_release_precedence_is_numeric_tuple_order(a: list[int], b: list[int]) -> None:
    ka, kb = semver_key(".".join(map(str, a))), semver_key(".".join(map(str, b)))
    assert ka is not None
    assert kb is not None
    assert (ka < kb) == (a < b)
    assert (ka == kb) == (a == b)


def test_semver_spec_example_ordering() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"]  # fmt: skip
    keys = [semver_key(v) for v in ordered]
    assert all(k is not None for k in keys)
    assert sorted(keys) == keys  # type: ignore[type-var]
    assert len(set(keys)) == len(keys)
