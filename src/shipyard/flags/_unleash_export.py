"""shipyard flags as Unleash serves them: the client API's body, the frontend API's toggles, and
Unleash's admin export document.

An Unleash SDK evaluates the client API's features itself, so a flag goes into that body only when
every Unleash SDK rule reproduces shipyard's evaluator exactly for every context an Unleash SDK can
send (its values are strings). A flag that cannot be written that way is left out, with the reason
(`UnleashExport.omitted`): the route names it in a response header and a log line. The frontend
API needs no such care: the server evaluates with shipyard's own evaluator (`frontend_toggle`).

How a flag of one environment becomes an Unleash feature:

- The environment's `enabled` is the feature's; a flag with no configuration there is disabled.
- Rules become strategies, in order, each with its conditions as constraints: `in`/`eq` → IN,
  `not_in`/`neq` → NOT_IN, `contains`/`starts_with`/`ends_with` → STR_*, `matches` → REGEX,
  `lt`…`gte`/`num_eq` → NUM_*, `semver_*` → SEMVER_*, `in_cidr` → IN_CIDR, `before`/`after` on
  `currentTime` → DATE_*; `inverted` and `case_insensitive` as Unleash's own. A segment
  condition refers to the Unleash segment of the same flattened conditions (Unleash segments
  cannot nest); a negated segment is written out as its negated constraints. A split that needs
  its stickiness attribute (`fallback: no_match`) also gets a REGEX constraint requiring it.
- A rollout becomes flexibleRollout (stickiness, groupId: the rule's, else the flag key); a split
  becomes the strategy's variants (with payload and overrides); prerequisites become dependencies.
- A boolean flag is on where Unleash finds an enabled strategy, so a rule serving `false` before a
  rule serving `true` is written into the later strategies as its negation (De Morgan: one
  strategy per alternative), and a `true` fallthrough becomes a last `default` strategy.
- A string, number or json flag is read with `getVariant`: each rule's strategy carries the value
  as its variant's payload (`string`, `number`, `json`), named after the rule's variant (or `rule`),
  and a last `default` strategy serves the environment's value as the variant `default`. Unleash's
  first enabled strategy decides, as shipyard's first matching rule does.

What has no exact Unleash equivalent (the flag is left out, naming the construct): values that are
not strings compared with `in`/`eq` (Unleash's context holds strings), strings an Unleash SDK trims
or drops (empty, or with surrounding blanks), case-insensitive `in`/`eq` (Unleash's IN has no such
option), `before`/`after` on another attribute than `currentTime`, a `fallback: no_match` on
`default` stickiness, a split and a partial rollout on different hash groups, the negation of a
partial rollout, a boolean split serving both values, a prerequisite naming an unnamed variant of a
string/number/json flag, a prerequisite on a flag that is left out, and more than MAX_STRATEGIES
strategies. A disabled flag is always served (off): no answer depends on its rules.

The contexts are Unleash's (`_unleash.unleash_context`: strings, `currentTime` the SDK's clock when
absent). One difference is the Node SDK's own: npm's `unleash-client` hashes a non-ASCII stickiness
value by its UTF-16 code units' low bytes, where shipyard and Unleash's other SDKs hash UTF-8, so
such ids may bucket differently there (ASCII ids, the common case, bucket identically everywhere).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..spec.flag_values import parse_number
from ..spec.flags import NO_VARIANT, Condition, Flag, FlagEnvironment, FlagSet, Rule, Segment, Split
from ._conversion import Exported
from ._evaluator import Evaluation, Evaluator, Reason
from ._unleash import unleash_enabled, unleash_variant

__all__ = [
    "MAX_STRATEGIES",
    "Omitted",
    "UnleashExport",
    "build_client_features",
    "client_features",
    "export_document",
    "frontend_toggle",
    "prerequisites_hold",
    "unleash_document",
]

MAX_STRATEGIES = 64
"""The most strategies one flag may expand into (negations multiply them); more: left out."""

PRESENT = r"[\s\S]"
"""A REGEX constraint value matching any non-empty context value: "the attribute is there"."""

DEFAULT_VARIANT = "default"
"""The variant a string/number/json flag serves when no rule matched (the environment's value)."""
RULE_VARIANT = "rule"
"""The variant of a string/number/json flag's rule that names none."""

_OPERATORS = {
    "in": "IN", "eq": "IN", "not_in": "NOT_IN", "neq": "NOT_IN",
    "contains": "STR_CONTAINS", "starts_with": "STR_STARTS_WITH", "ends_with": "STR_ENDS_WITH",
    "lt": "NUM_LT", "lte": "NUM_LTE", "gt": "NUM_GT", "gte": "NUM_GTE", "num_eq": "NUM_EQ",
    "semver_lt": "SEMVER_LT", "semver_eq": "SEMVER_EQ", "semver_gt": "SEMVER_GT",
    "semver_lte": "SEMVER_LTE", "semver_gte": "SEMVER_GTE",
    "in_cidr": "IN_CIDR", "matches": "REGEX", "before": "DATE_BEFORE", "after": "DATE_AFTER",
}  # fmt: skip


class _NotExportable(Exception):
    """A construct of a flag that Unleash cannot evaluate exactly as shipyard does."""


@dataclass(frozen=True)
class Omitted:
    """A flag left out of an export, and why."""

    flag: str
    reason: str

    def __str__(self) -> str:
        return f"{self.flag}: {self.reason}"


@dataclass(frozen=True)
class UnleashExport:
    """The client API's body for one environment, and the flags it leaves out."""

    body: dict[str, Any]
    omitted: list[Omitted] = field(default_factory=list)


# --- constraints and their negations ------------------------------------------------------------


@dataclass(frozen=True)
class _Atom:
    """One Unleash constraint (hashable, so that alternatives can be built from it)."""

    constraint: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.constraint)
        if "values" in data:
            data["values"] = list(data["values"])
        return data

    def negated(self) -> _Atom:
        """Every Unleash constraint is negated by its `inverted` (shipyard's `inverted` too)."""
        data = dict(self.constraint)
        data["inverted"] = not data.get("inverted", False)
        return _Atom(tuple(data.items()))


@dataclass(frozen=True)
class _Conj:
    """Constraints and segments that must all hold: one strategy's condition."""

    atoms: tuple[_Atom, ...] = ()
    segments: tuple[int, ...] = ()


_Dnf = list[_Conj]
"""Alternatives, any of which may hold: one strategy each."""

_ALWAYS: _Dnf = [_Conj()]
_NEVER: _Dnf = []


def _and(left: _Dnf, right: _Dnf) -> _Dnf:
    product = [_Conj(a.atoms + b.atoms, a.segments + b.segments) for a in left for b in right]
    if len(product) > MAX_STRATEGIES:
        raise _NotExportable(f"its negated rules expand into more than {MAX_STRATEGIES} strategies")
    return product


def _present(attribute: str) -> _Atom:
    """The attribute has a non-empty value (what Unleash's stickiness needs)."""
    return _Atom((("contextName", attribute), ("operator", "REGEX"), ("value", PRESENT), ("inverted", False)))


def _strings(values: Iterable[Any], attribute: str, op: str) -> tuple[str, ...]:
    found = []
    for value in values:
        if type(value) is not str:
            raise _NotExportable(
                f"{attribute} {op} {value!r}: an Unleash context holds strings, so it could not match "
                "through an Unleash SDK as it does in shipyard"
            )
        if not value or value != value.strip():
            raise _NotExportable(
                f"{attribute} {op} {value!r}: Unleash SDKs drop empty values and trim the others"
            )
        found.append(value)
    return tuple(found)


def _number_text(value: Any) -> str:
    """A numeric operand as Unleash's constraint value (a string JavaScript's Number() reads)."""
    return json.dumps(parse_number(value))


class _Segments:
    """Each shipyard segment as alternatives of constraints, and as an Unleash segment when it
    flattens to one conjunction (Unleash's segments are lists of constraints; shipyard's nest)."""

    def __init__(self, segments: list[Segment]) -> None:
        self.by_name = {s.name: s for s in segments}
        self.ids = {s.name: i + 1 for i, s in enumerate(segments)}
        self._dnf: dict[str, _Dnf | _NotExportable] = {}

    def dnf(self, name: str) -> _Dnf:
        """The segment's conditions, flattened into alternatives of constraints."""
        if name not in self._dnf:
            try:
                found = _ALWAYS
                for cond in self.by_name[name].conditions:
                    found = _and(found, self.condition(cond, expand=True))
                self._dnf[name] = found
            except _NotExportable as exc:
                self._dnf[name] = _NotExportable(f"segment {name!r}: {exc}")
        result = self._dnf[name]
        if isinstance(result, _NotExportable):
            raise result
        return result

    def flat(self, name: str) -> list[dict[str, Any]] | None:
        """The Unleash segment's constraints; None when the segment is not one conjunction."""
        try:
            dnf = self.dnf(name)
        except _NotExportable:
            return None
        if len(dnf) != 1:
            return None
        return [atom.as_dict() for atom in dnf[0].atoms]

    def condition(self, cond: Condition, *, expand: bool = False) -> _Dnf:
        """One condition as alternatives; a segment by reference unless `expand`."""
        if cond.op == "segment":
            name = str(cond.value)
            dnf = self.dnf(name)
            if cond.inverted:
                return _negate(dnf, self)
            if not expand and self.flat(name) is not None:
                return [_Conj(segments=(self.ids[name],))]
            return dnf
        return [_Conj(_condition_atoms(cond))]

    def expanded(self, conj: _Conj) -> _Dnf:
        """`conj` with its segment references replaced by their constraints."""
        found: _Dnf = [_Conj(conj.atoms)]
        for segment_id in conj.segments:
            name = next(n for n, i in self.ids.items() if i == segment_id)
            found = _and(found, self.dnf(name))
        return found


def _negate(dnf: _Dnf, segments: _Segments) -> _Dnf:
    """not (C1 or C2 …) = (not C1) and (not C2) …, each `not Ci` one alternative per constraint."""
    result = _ALWAYS
    for conj in dnf:
        for expanded in segments.expanded(conj):
            if not expanded.atoms:
                return _NEVER  # `expanded` always holds: its negation never does
            result = _and(result, [_Conj((atom.negated(),)) for atom in expanded.atoms])
    return result


def _condition_atoms(cond: Condition) -> tuple[_Atom, ...]:
    op, value, attribute = cond.op, cond.value, str(cond.attribute)
    inverted = bool(cond.inverted)
    base: dict[str, Any] = {"contextName": attribute, "operator": _OPERATORS[op]}
    if op in ("in", "not_in", "eq", "neq"):
        if cond.case_insensitive:
            raise _NotExportable(f"a case-insensitive {op!r} on {attribute}: Unleash's IN has no such option")
        values = value if isinstance(value, list) else [value]
        base["values"] = _strings(values, attribute, op)
    elif op in ("contains", "starts_with", "ends_with"):
        values = value if isinstance(value, list) else [value]
        base["values"] = _strings(values, attribute, op)
        base["caseInsensitive"] = bool(cond.case_insensitive)
    elif op == "in_cidr":
        base["values"] = _strings(value if isinstance(value, list) else [value], attribute, op)
    elif op == "matches":
        base["value"] = str(value)
        base["caseInsensitive"] = bool(cond.case_insensitive)
    elif op in ("lt", "lte", "gt", "gte", "num_eq"):
        base["value"] = _number_text(value)
    elif op.startswith("semver_"):
        base["value"] = str(value)
    elif op in ("before", "after"):
        # Unleash's DATE_* compare the context's currentTime, and the SDK's clock without one: the
        # Unleash-facing APIs give shipyard the same context (`_unleash.unleash_context(now=…)`).
        if attribute != "currentTime":
            raise _NotExportable(
                f"{op!r} on {attribute}: Unleash's DATE_* operators compare only the context's currentTime"
            )
        base["value"] = str(value)
    else:  # pragma: no cover - every operator but `segment` is listed above
        raise _NotExportable(f"the {op!r} operator")
    base["inverted"] = inverted
    return (_Atom(tuple(base.items())),)


# --- rules, flags -------------------------------------------------------------------------------


def _payload_data(payload: Any) -> dict[str, Any] | None:
    if payload is None:
        return None
    data = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else dict(payload)
    return {"type": data["type"], "value": data["value"]}


def _value_payload(flag: Flag, value: Any) -> dict[str, str]:
    """A string/number/json value as an Unleash variant payload (whose value is a string)."""
    if flag.type == "string":
        return {"type": "string", "value": str(value)}
    if flag.type == "number":
        return {"type": "number", "value": json.dumps(value)}
    return {"type": "json", "value": json.dumps(value, separators=(",", ":"), ensure_ascii=False)}


def _stickiness(sticky: Any, what: str) -> str:
    """Unleash's stickiness for a rollout's or split's, when the fallback is Unleash's too."""
    if sticky.stickiness == "default" and sticky.fallback != "random":
        raise _NotExportable(f"a {what} on default stickiness without fallback random")
    return str(sticky.stickiness)


@dataclass(frozen=True)
class _Strategy:
    """A rule as Unleash reads it: what it tests, how it is gated, what it serves."""

    match: _Dnf
    name: str
    parameters: dict[str, str]
    variants: list[dict[str, Any]]


def _variants(flag: Flag, split: Split, *, boolean: bool) -> list[dict[str, Any]]:
    stickiness = "random" if split.stickiness == "random" else _stickiness(split, "split")
    found = []
    for variant in split.variants:
        data: dict[str, Any] = {"name": variant.name, "weight": variant.weight, "weightType": "variable"}
        data["stickiness"] = stickiness
        payload = _payload_data(variant.payload)
        if boolean:
            if payload is not None:
                data["payload"] = payload
        elif payload is not None:
            raise _NotExportable(
                f"variant {variant.name!r} of a {flag.type} flag has a payload besides its value"
            )
        else:
            data["payload"] = _value_payload(flag, variant.value)
        if variant.overrides:
            data["overrides"] = [
                {"contextName": o.attribute, "values": list(_strings(o.values, o.attribute, "override"))}
                for o in variant.overrides
            ]
        found.append(data)
    return found


def _rule_strategy(flag: Flag, rule: Rule, segments: _Segments) -> _Strategy:
    match = _ALWAYS
    for cond in rule.conditions:
        match = _and(match, segments.condition(cond))
    boolean = flag.type == "boolean"
    rollout, split = rule.rollout, rule.split
    group = flag.key
    parameters: dict[str, str] = {}
    name = "default"
    if rollout is not None:
        group = rollout.group_id if rollout.group_id is not None else flag.key
        stickiness = rollout.stickiness
        if stickiness not in ("default", "random") and rollout.fallback == "random" and rollout.percent > 0:
            # Unleash does not match without the attribute; shipyard buckets at random: the rule
            # is written as two strategies, with and without the attribute.
            raise _FallbackRandom(rule)
        if stickiness == "default":
            _stickiness(rollout, "rollout")
        name = "flexibleRollout"
        parameters = {"rollout": str(rollout.percent), "stickiness": str(stickiness), "groupId": group}
    variants: list[dict[str, Any]] = []
    if split is not None:
        split_group = split.group_id if split.group_id is not None else flag.key
        partial = rollout is not None and 0 < rollout.percent < 100
        if partial and split_group != group:
            raise _NotExportable("a split and a partial rollout hashed on different groups")
        if split.stickiness not in ("default", "random") and split.fallback != "random":
            if any(v.overrides for v in split.variants):
                raise _NotExportable("variant overrides on a split that needs its stickiness attribute")
            match = _and(match, [_Conj((_present(split.stickiness),))])
        if rollout is None:
            name, parameters = "flexibleRollout", {"rollout": "100", "stickiness": "default"}
        parameters["groupId"] = split_group
        variants = _variants(flag, split, boolean=boolean)
    elif boolean and rule.variant is not None:
        variants = [{"name": rule.variant, "weight": 1000, "weightType": "variable", "stickiness": "default"}]
    elif not boolean:
        name_of = rule.variant or RULE_VARIANT
        variants = [
            {
                "name": name_of,
                "weight": 1000,
                "weightType": "variable",
                "stickiness": "default",
                "payload": _value_payload(flag, rule.value),
            }
        ]
    return _Strategy(match, name, parameters, variants)


class _FallbackRandom(_NotExportable):
    def __init__(self, rule: Rule) -> None:
        super().__init__("a rollout with fallback random")
        self.rule = rule


def _rule_strategies(flag: Flag, rule: Rule, segments: _Segments) -> list[_Strategy]:
    """The rule as one or two strategies (two for a rollout on an attribute with fallback random)."""
    try:
        return [_rule_strategy(flag, rule, segments)]
    except _FallbackRandom:
        assert rule.rollout is not None
        attribute = rule.rollout.stickiness
        with_attribute = rule.model_copy(
            update={"rollout": rule.rollout.model_copy(update={"fallback": "no_match"})}
        )
        without = rule.model_copy(
            update={"rollout": rule.rollout.model_copy(update={"stickiness": "random", "fallback": "random"})}
        )
        first = _rule_strategy(flag, with_attribute, segments)
        second = _rule_strategy(flag, without, segments)
        missing = [_Conj((_present(attribute).negated(),))]
        return [
            first,
            _Strategy(_and(second.match, missing), second.name, second.parameters, second.variants),
        ]


def _gate(rule: Rule, flag: Flag) -> _Dnf:
    """When a rule serving `false` matches beyond its conditions: the attribute its rollout or split
    needs, or nothing; a partial rollout cannot be negated."""
    rollout, split = rule.rollout, rule.split
    found = _ALWAYS
    if rollout is not None:
        if rollout.percent == 0:
            return _NEVER
        if rollout.percent < 100:
            raise _NotExportable("a partial rollout serving false before a rule serving true")
        if rollout.stickiness not in ("default", "random") and rollout.fallback == "no_match":
            found = [_Conj((_present(rollout.stickiness),))]
        elif rollout.stickiness == "default":
            _stickiness(rollout, "rollout")
    if split is not None and split.stickiness not in ("default", "random") and split.fallback != "random":
        found = _and(found, [_Conj((_present(split.stickiness),))])
    return found


def _served(rule: Rule) -> set[bool]:
    return {value for _, value in rule.served()}  # type: ignore[misc]


def _strategy_data(strategy: _Strategy, match: _Conj, *, variants: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": strategy.name,
        "parameters": dict(strategy.parameters),
        "constraints": [atom.as_dict() for atom in match.atoms],
    }
    if match.segments:
        data["segments"] = list(match.segments)
    if variants and strategy.variants:
        data["variants"] = strategy.variants
    return data


def _strategies(flag: Flag, environment: str, segments: _Segments) -> tuple[bool, list[dict[str, Any]]]:
    """The feature's `enabled` and strategies in `environment` (a disabled one keeps its
    strategies, as Unleash's documents do, when they can be written: no answer depends on them)."""
    env = flag.environments.get(environment)
    if env is None:
        return False, []
    if not env.enabled:
        try:
            return False, _enabled_strategies(flag, env, segments)[1]
        except _NotExportable:
            return False, []
    return _enabled_strategies(flag, env, segments)


def _enabled_strategies(
    flag: Flag, env: FlagEnvironment, segments: _Segments
) -> tuple[bool, list[dict[str, Any]]]:
    served = env.value if env.value is not None else flag.default_value
    strategies: list[dict[str, Any]] = []
    if flag.type != "boolean":
        for rule in env.rules:
            for strategy in _rule_strategies(flag, rule, segments):
                strategies += [_strategy_data(strategy, conj) for conj in strategy.match]
        fallthrough = {
            "name": DEFAULT_VARIANT,
            "weight": 1000,
            "weightType": "variable",
            "stickiness": "default",
            "payload": _value_payload(flag, served),
        }
        strategies.append({"name": "default", "parameters": {}, "constraints": [], "variants": [fallthrough]})
        return True, strategies
    if not env.rules:
        return served is True, []
    unless = _ALWAYS  # no earlier rule serving false matched
    for rule in env.rules:
        values = _served(rule)
        if values == {True}:
            for strategy in _rule_strategies(flag, rule, segments):
                for conj in _and(strategy.match, unless):
                    strategies.append(_strategy_data(strategy, conj))
        elif values == {False}:
            rule_match = _ALWAYS
            for cond in rule.conditions:
                rule_match = _and(rule_match, segments.condition(cond))
            unless = _and(unless, _negate(_and(rule_match, _gate(rule, flag)), segments))
        else:
            raise _NotExportable(
                "a split serving both true and false (Unleash's variants cannot turn a flag off)"
            )
    if served is True:
        strategies += [
            {"name": "default", "parameters": {}, "constraints": []} | _conj_data(c) for c in unless
        ]
    elif not strategies:
        return False, []  # nothing ever serves true
    if len(strategies) > MAX_STRATEGIES:
        raise _NotExportable(f"it expands into more than {MAX_STRATEGIES} strategies")
    return True, strategies


def _conj_data(conj: _Conj) -> dict[str, Any]:
    data: dict[str, Any] = {"constraints": [atom.as_dict() for atom in conj.atoms]}
    if conj.segments:
        data["segments"] = list(conj.segments)
    return data


def _feature(flag: Flag, environment: str, segments: _Segments, flags: Mapping[str, Flag]) -> dict[str, Any]:
    enabled, strategies = _strategies(flag, environment, segments)
    feature: dict[str, Any] = {
        "name": flag.key,
        "description": flag.description or None,
        "type": flag.kind,
        "project": "default",
        "enabled": enabled,
        "stale": False,
        "impressionData": False,
        "strategies": strategies,
        "variants": [],
    }
    for pre in flag.prerequisites if enabled else ():  # a flag that is off reads none of them
        unnamed = {NO_VARIANT, DEFAULT_VARIANT, RULE_VARIANT} & set(pre.variants)
        if unnamed and flags[pre.flag].type != "boolean":
            parent = f"{flags[pre.flag].type} flag {pre.flag!r}"
            raise _NotExportable(
                f"it requires variant {sorted(unnamed)[0]!r} of {parent}, whose unnamed values Unleash "
                f"serves as variants {DEFAULT_VARIANT!r} and {RULE_VARIANT!r}"
            )
    if flag.prerequisites:
        feature["dependencies"] = [
            {
                "feature": p.flag,
                "enabled": p.enabled,
                **({"variants": list(p.variants)} if p.variants else {}),
            }
            for p in flag.prerequisites
        ]
    return feature


def _features(flagset: FlagSet, environment: str) -> tuple[list[dict[str, Any]], list[Omitted], _Segments]:
    segments = _Segments(flagset.segments)
    flags = {f.key: f for f in flagset.flags}
    features: dict[str, dict[str, Any]] = {}
    omitted: list[Omitted] = []
    for flag in flagset.flags:
        try:
            features[flag.key] = _feature(flag, environment, segments, flags)
        except _NotExportable as exc:
            omitted.append(Omitted(flag.key, str(exc)))
    # A flag whose prerequisite is left out would be off in Unleash (an unknown parent): out too.
    changed = True
    while changed:
        changed = False
        for key, feature in list(features.items()):
            missing = [d["feature"] for d in feature.get("dependencies", []) if d["feature"] not in features]
            if missing:
                del features[key]
                omitted.append(Omitted(key, f"it requires flag {missing[0]!r}, which is left out"))
                changed = True
    return [features[f.key] for f in flagset.flags if f.key in features], omitted, segments


def _segment_list(flagset: FlagSet, segments: _Segments) -> list[dict[str, Any]]:
    found = []
    for segment in flagset.segments:
        constraints = segments.flat(segment.name)
        if constraints is not None:
            found.append({"id": segments.ids[segment.name], "name": segment.name, "constraints": constraints})
    return found


def build_client_features(flagset: FlagSet, environment: str) -> UnleashExport:
    """Unleash's client API body (`GET /api/client/features`) for `environment`, and what it leaves out."""
    features, omitted, segments = _features(flagset, environment)
    body = {
        "version": 2,
        "features": features,
        "segments": _segment_list(flagset, segments),
        "query": {"environment": environment, "inlineSegmentConstraints": False},
        "meta": {"revisionId": flagset.version, "etag": f'"{flagset.version}"', "queryHash": environment},
    }
    return UnleashExport(body, omitted)


def client_features(flagset: FlagSet, environment: str) -> dict[str, Any]:
    """Unleash's client API body for `environment` (flags without an exact equivalent left out)."""
    return build_client_features(flagset, environment).body


def unleash_document(flagset: FlagSet, environment: str) -> Exported:
    """Unleash's admin export (features, featureStrategies, featureEnvironments, segments,
    dependencies, featureTags) of `environment`, and one warning per flag left out."""
    features, omitted, segments = _features(flagset, environment)
    tags = {f.key: f.tags for f in flagset.flags}
    document: dict[str, Any] = {
        "features": [
            {k: feature[k] for k in ("name", "description", "type", "project", "stale", "impressionData")}
            | {"archived": False}
            for feature in features
        ],
        "featureStrategies": [
            {
                "id": f"{feature['name']}:{environment}:{i}",
                "featureName": feature["name"],
                "environment": environment,
                "sortOrder": i,
                "disabled": False,
                "segments": strategy.get("segments", []),
                "variants": strategy.get("variants", []),
                **{k: strategy[k] for k in ("name", "parameters", "constraints")},
            }
            for feature in features
            for i, strategy in enumerate(feature["strategies"])
        ],
        "featureEnvironments": [
            {
                "name": feature["name"],
                "featureName": feature["name"],
                "environment": environment,
                "enabled": feature["enabled"],
                "variants": [],
            }
            for feature in features
        ],
        "segments": _segment_list(flagset, segments),
        "dependencies": [
            {"feature": feature["name"], "dependencies": feature["dependencies"]}
            for feature in features
            if feature.get("dependencies")
        ],
        "featureTags": [
            {"featureName": feature["name"], "tagType": "simple", "tagValue": tag}
            for feature in features
            for tag in tags[feature["name"]]
        ],
        "tagTypes": [
            {"name": "simple", "description": "Used to simplify filtering of features", "icon": "#"}
        ],
        "contextFields": [],
    }
    return Exported(document, [f"flag {o.flag!r} is left out: {o.reason}" for o in omitted])


def export_document(flagset: FlagSet, environment: str) -> dict[str, Any]:
    """Unleash's admin export document of `environment` (see `unleash_document` for the warnings)."""
    return unleash_document(flagset, environment).document


# --- the frontend API: shipyard's evaluation as Unleash's toggle ----------------------------------


_OFF_REASONS = (Reason.DISABLED, Reason.ERROR)


def prerequisites_hold(
    flag: Flag, flags: Mapping[str, Flag], evaluator: Evaluator, context: Mapping[str, Any], environment: str
) -> bool:
    """Whether `flag`'s prerequisites hold for `context`, as the evaluator decides them (Unleash's
    dependencies: one level deep, a variant named NO_VARIANT when on without one): what says
    whether a string, number or json flag is on, since its evaluation alone does not tell a failed
    prerequisite from a fallthrough to the flag's default."""
    for pre in flag.prerequisites:
        parent_flag = flags[pre.flag]
        if parent_flag.prerequisites:
            return False
        parent = evaluator.evaluate(pre.flag, context, environment)
        on = parent.reason not in _OFF_REASONS and (parent.value is True or parent_flag.type != "boolean")
        if not pre.enabled:
            if on:
                return False
        elif not on or (pre.variants and (parent.variant or NO_VARIANT) not in pre.variants):
            return False
    return True


def frontend_toggle(flag: Flag, evaluation: Evaluation, *, on: bool | None = None) -> dict[str, Any] | None:
    """The frontend API's toggle for one evaluation, or None when the flag is off (Unleash's
    frontend API lists enabled toggles only). A boolean flag answers as `_unleash` says Unleash's
    SDKs do; a string, number or json flag is on unless disabled, or `on` is False (its
    prerequisites, `prerequisites_hold`), and carries its value as the variant's payload."""
    if flag.type == "boolean":
        if not unleash_enabled(evaluation):
            return None
        variant = unleash_variant(evaluation)
    else:
        if evaluation.reason in _OFF_REASONS or on is False:
            return None
        unnamed = DEFAULT_VARIANT if evaluation.reason in (Reason.STATIC, Reason.DEFAULT) else RULE_VARIANT
        variant = {
            "name": evaluation.variant or unnamed,
            "enabled": True,
            "payload": _value_payload(flag, evaluation.value),
            "feature_enabled": True,
        }
    variant["featureEnabled"] = True
    return {"name": flag.key, "enabled": True, "variant": variant, "impressionData": False}
