"""Hypothesis strategies for the rules the dashboard's rule builder can show whole: conditions of
every kind of operand, negated or not, string ones maybe case-insensitive; a rollout; a value or a
split whose variants may carry a payload of each type. Rules of a boolean flag.

Shared by the builder's pure round trip (tests/unit/server/test_dashboard_flag_forms.py) and the
one through the real pages (tests/integration/server/test_dashboard_flags_forms.py).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from shipyard.spec.flags import STRING_OPERATORS

words = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True)
segment_names = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)

_operands: dict[str, st.SearchStrategy[Any]] = {
    "in": st.lists(words, min_size=1, max_size=3),
    "not_in": st.lists(words, min_size=1, max_size=3),
    "eq": words,
    "neq": words,
    # One item of a list is read back as the item itself, which the model takes alike.
    "contains": words | st.lists(words, min_size=2, max_size=3),
    "starts_with": words,
    "ends_with": st.lists(words, min_size=2, max_size=3),
    "matches": words.map(lambda w: f"^{w}"),
    "gte": st.integers(-1000, 1000),
    "num_eq": st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 2)).filter(lambda x: x != int(x)),
    "semver_gt": st.tuples(st.integers(0, 9), st.integers(0, 20)).map(lambda v: f"{v[0]}.{v[1]}.0"),
    "after": st.sampled_from(["2025-01-31T12:00:00+01:00", "2026-12-06T00:00:00Z"]),
    "in_cidr": st.lists(
        st.sampled_from(["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]), min_size=1, max_size=2
    ),
}


@st.composite
def conditions(draw: st.DrawFn, segments: st.SearchStrategy[str] = segment_names) -> dict[str, Any]:
    op = draw(st.sampled_from([*_operands, "segment"]))
    condition: dict[str, Any] = {"op": op}
    if op == "segment":
        condition["value"] = draw(segments)
    else:
        condition["attribute"] = draw(words)
        condition["value"] = draw(_operands[op])
    if draw(st.booleans()):
        condition["inverted"] = True
    if op in STRING_OPERATORS and draw(st.booleans()):
        condition["case_insensitive"] = True
    return condition


def _json_text(value: Any, indent: int | None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=6,
)
# What a textarea can hold and post back: no carriage return (a browser posts every line end as
# CRLF, which the builder reads as LF) and no other control character.
_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\n"),
    max_size=12,
)
payloads = st.one_of(
    st.builds(lambda v: {"type": "string", "value": v}, _text),
    st.builds(lambda v: {"type": "csv", "value": v}, _text),
    st.builds(
        lambda v, i: {"type": "json", "value": _json_text(v, i)}, _json_values, st.sampled_from([None, 2])
    ),
    st.builds(
        lambda v: {"type": "number", "value": v},
        st.sampled_from(["0", "42", "-1.5", "1e3", "2.50", "-0"]),
    ),
)


@st.composite
def _variants(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(words, min_size=1, max_size=3, unique=True))
    weights = draw(st.lists(st.integers(0, 100), min_size=len(names), max_size=len(names)))
    if sum(weights) == 0:
        weights[0] = 1
    found = []
    for name, weight in zip(names, weights, strict=True):
        variant: dict[str, Any] = {"name": name, "value": draw(st.booleans()), "weight": weight}
        if draw(st.booleans()):
            variant["payload"] = draw(payloads)
        found.append(variant)
    return found


@st.composite
def builder_rules(draw: st.DrawFn, segments: st.SearchStrategy[str] = segment_names) -> dict[str, Any]:
    """A rule of a boolean flag that the builder shows whole (`builder_drops` names nothing)."""
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule["name"] = draw(words)
    if found := draw(st.lists(conditions(segments), max_size=3)):
        rule["conditions"] = found
    percent = draw(st.integers(0, 100))
    if percent < 100:
        rule["rollout"] = {"percent": percent}
    if draw(st.booleans()):
        rule["split"] = {"variants": draw(_variants())}
    else:
        rule["value"] = draw(st.booleans())
    return rule
