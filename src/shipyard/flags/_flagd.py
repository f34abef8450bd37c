"""flagd's flag definitions (https://flagd.dev/reference/flag-definitions/), both ways.

A flagd file holds one environment: each flag has a `state`, named `variants`, a `defaultVariant`
and a `targeting` rule in JsonLogic with flagd's operators; `$evaluators` are reusable rules that
`{"$ref": name}` pastes in. A shipyard flag in one environment maps onto it as:

- `state`: ENABLED when the environment is enabled; `variants`: every value the flag serves, by
  the rule's variant name, or by a name made up for a value served without one (listed in the
  flag's metadata `shipyard.unnamed`, so that an import reports no variant for them again);
- `defaultVariant`: the value served when no rule matches (the environment's `value`, else the
  flag's `default_value`; when both exist, `default_value` is in metadata `shipyard.defaultValue`);
- `targeting`: the rules as nested `if`s (flagd takes only the 3-argument form), each serving its
  variant and falling through to the next; a segment is an evaluator, used with `$ref`;
- metadata: `description`, and shipyard's own fields as `shipyard.type`, `shipyard.kind`, … (flagd
  metadata holds strings, numbers and booleans, so lists and JSON values are JSON text).

Conditions: in, not_in (`!` of `in`), eq (`===`), neq (`!==`), num_eq (`==` with a number),
contains (`in` with the string first), starts_with, ends_with, lt/lte/gt/gte (`<`…) and
semver_lt/lte/eq/gte/gt (`sem_ver`); `inverted` is `!`. The `environment` attribute, which shipyard defaults
to the environment evaluated, is `{"var": ["environment", "<env>"]}` (JsonLogic's default).

Refused, both ways, each named with its place: rollouts and splits (flagd's `fractional` hashes
`flagKey + targetingKey` with murmur3 and scales it to the weights; shipyard buckets as Unleash does,
`murmur3("groupId:userId") % 100`: the same user would land in another bucket), prerequisites (a
flagd flag cannot depend on another), `matches`, `before`/`after`, `in_cidr` and case-insensitive
conditions (no JsonLogic equivalent), attributes with a dot (JsonLogic reads `a.b` as a nested
object), and on import every JsonLogic operation that is not a condition shipyard has (`cat`,
arithmetic, `$flagd.timestamp`, `sem_ver` with `~`, `^` or `!=`, …).

An import turns `or` into one rule per alternative (an `or` of the same string test on one
attribute stays one condition with a list), `==`/`!=` with a
string or boolean into eq/neq (strict; a warning says so), and a nested `if` in a `then` into rules
that keep its fall-back to the default variant.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import InvalidObjectError
from ..spec.flag_values import parse_number
from ..spec.flags import FlagSet, Slug
from ._conversion import Exported, Imported, Problems, flagset_from_data

__all__ = ["SCHEMA", "export_flagd", "import_flagd"]

SCHEMA = "https://flagd.dev/schema/v0/flags.json"
META = "shipyard."
"""The prefix of the flag metadata keys that carry shipyard's own fields."""
MAX_ALTERNATIVES = 64
"""The most rules one `if` condition may become (an `and` of `or`s multiplies out)."""

_BUCKETING = (
    "flagd's fractional hashes flagKey+targetingKey with murmur3 scaled to the weights, shipyard "
    "(like Unleash) murmur3 of 'groupId:userId' mod 100: the same users would land in other buckets"
)
_SLUG: TypeAdapter[str] = TypeAdapter(Slug)
_FRACTIONAL = f"fractional: {_BUCKETING}; remove it (a shipyard rollout or split re-buckets users)"
_COMPARISONS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_SEMVER = {"semver_lt": "<", "semver_lte": "<=", "semver_eq": "=", "semver_gte": ">=", "semver_gt": ">"}
_STRING_OPS = ("contains", "starts_with", "ends_with")
_STRING_LOGIC = {"in", "starts_with", "ends_with"}
"""The JsonLogic of shipyard's string tests (`in` with a string first is `contains`)."""
_CONDITION_KEYS = {"attribute", "op", "value", "inverted"}
_FLAG_FIELDS = {
    "key", "description", "type", "default_value", "environments", "prerequisites",
    "owner", "tags", "kind", "lifetime_days", "created_at",
}  # fmt: skip
_CONDITION_PROBLEMS = {
    "case_insensitive": (
        "flagd's string tests are case-sensitive; remove case_insensitive (or list each spelling)"
    ),
}
_ENV_FIELDS = {"enabled", "rules", "value"}
_RULE_FIELDS = {"name", "conditions", "value", "variant"}
_JSON_TEXT = {"defaultValue", "unnamed", "ruleNames"}
"""Metadata that holds JSON text (flagd metadata values are strings, numbers and booleans)."""
_META_FIELDS = {"type": "type", "kind": "kind", "owner": "owner", "lifetimeDays": "lifetime_days",
                "createdAt": "created_at", "tags": "tags"}  # fmt: skip


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _value_kind(value: object) -> str | None:
    """flagd's variant type of `value` (boolean, string, number, object), or None: not a variant."""
    if type(value) is bool:
        return "boolean"
    if type(value) is str:
        return "string"
    if type(value) in (int, float):
        return "number"
    if type(value) is dict:
        return "object"
    return None


def _inferred_type(kinds: set[str | None]) -> str | None:
    """The shipyard type flagd's variants of these kinds imply; None: no single type."""
    if len(kinds) != 1 or None in kinds:
        return None
    (kind,) = kinds
    return "json" if kind == "object" else kind


# --- export ---------------------------------------------------------------------------------------


class _Variants:
    """A flag's flagd variants: named ones as shipyard names them, unnamed values given a name."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.values: dict[str, Any] = {}
        self.unnamed: list[str] = []
        self._named = named  # every name the flag's rules use: made-up names must avoid them

    def named(self, name: str, value: Any) -> str | None:
        """The variant `name` serving `value`; None when the name serves another value already."""
        if name in self.values and _compact(self.values[name]) != _compact(value):
            return None
        self.values[name] = value
        return name

    def anonymous(self, value: Any) -> str:
        """The made-up variant serving `value` without a name (one per distinct value)."""
        for name in self.unnamed:  # compared as JSON: 1 and true, 1 and 1.0 are different values
            if _compact(self.values[name]) == _compact(value):
                return name
        text = value if type(value) is str else _compact(value)
        base = text if 0 < len(text) <= 60 else "value"
        name, n = base, 1
        while name in self.values or name in self._named:
            n += 1
            name = f"{base}-{n}"
        self.values[name] = value
        self.unnamed.append(name)
        return name


def _var(attribute: str, environment: str) -> dict[str, Any]:
    # shipyard's `environment` attribute defaults to the environment evaluated: JsonLogic's default.
    return {"var": [attribute, environment]} if attribute == "environment" else {"var": attribute}


def _condition_logic(cond: dict[str, Any], environment: str, path: str, problems: Problems) -> Any:
    """One shipyard condition as JsonLogic; None (with a problem added) when flagd cannot hold it."""
    unknown = sorted(set(cond) - _CONDITION_KEYS)
    if unknown:
        why = _CONDITION_PROBLEMS.get(unknown[0], "flagd's JsonLogic has no such test (remove it)")
        problems.add(f"{path}.{unknown[0]}", why)
        return None
    op, value, attribute = cond["op"], cond["value"], cond.get("attribute")
    logic: Any
    if op == "segment":
        logic = {"$ref": value}
    elif attribute is not None and "." in attribute:
        problems.add(
            path,
            f"attribute {attribute!r}: JsonLogic reads a dotted name as a nested object; "
            "rename the attribute without '.'",
        )
        return None
    else:
        var = _var(attribute or "", environment)
        if op in ("in", "not_in"):
            logic = {"in": [var, value]}
            if op == "not_in":
                logic = {"!": logic}
        elif op == "eq":
            logic = {"===": [var, value]}
        elif op == "neq":
            logic = {"!==": [var, value]}
        elif op == "num_eq":
            logic = {"==": [var, value if type(value) in (int, float) else parse_number(value)]}
        elif op in _STRING_OPS:
            parts = [
                {"in": [s, var]} if op == "contains" else {op: [var, s]}
                for s in ([value] if type(value) is str else value)
            ]
            logic = parts[0] if type(value) is str else {"or": parts}
        elif op in _COMPARISONS:
            logic = {_COMPARISONS[op]: [var, value]}
        elif op in _SEMVER:
            logic = {"sem_ver": [var, _SEMVER[op], value]}
        else:
            problems.add(path, f"op {op!r}: flagd's JsonLogic has no such test; remove the condition")
            return None
    return {"!": logic} if cond.get("inverted") else logic


def _conjunction(conditions: list[dict[str, Any]], environment: str, path: str, problems: Problems) -> Any:
    parts = [
        _condition_logic(c, environment, f"{path}.conditions[{j}]", problems)
        for j, c in enumerate(conditions)
    ]
    if not parts:
        return True
    return parts[0] if len(parts) == 1 else {"and": parts}


class _FlagExport:
    """One flag's flagd definition in one environment; problems go to `problems`."""

    def __init__(self, flag: dict[str, Any], environment: str, problems: Problems) -> None:
        self.flag, self.environment, self.problems = flag, environment, problems
        self.path = f"flags.{flag['key']}"

    def problem(self, where: str, message: str) -> None:
        self.problems.add(f"{self.path}{where}", message)

    def build(self) -> dict[str, Any]:
        flag, env_name = self.flag, self.environment
        for name in sorted(set(flag) - _FLAG_FIELDS):
            self.problem(f".{name}", "flagd has no place for it (remove it to export to flagd)")
        if flag.get("prerequisites"):
            self.problem(
                ".prerequisites",
                "a flagd flag cannot depend on another flag; "
                "remove the prerequisites, or export --to unleash",
            )
        env = flag.get("environments", {}).get(env_name, {})
        for name in sorted(set(env) - _ENV_FIELDS):
            self.problem(f".environments.{env_name}.{name}", "flagd has no place for it")
        rules: list[dict[str, Any]] = env.get("rules", [])
        named = {r["variant"]: r.get("value") for r in rules if r.get("variant") is not None}
        variants = _Variants(named)
        default = flag["default_value"]
        fallthrough = env.get("value", default)
        default_variant = variants.anonymous(fallthrough)
        served_by = [self._rule(rule, i, variants) for i, rule in enumerate(rules)]
        targeting: Any = None
        for i in reversed(range(len(rules))):
            served = served_by[i]
            if served is None:
                continue
            condition = _conjunction(
                rules[i].get("conditions", []), env_name, f"{self.path}.environments.{env_name}.rules[{i}]",
                self.problems,
            )  # fmt: skip
            targeting = (
                served if condition is True and targeting is None else {"if": [condition, served, targeting]}
            )
        kinds = {_value_kind(v) for v in variants.values.values()}
        if _inferred_type(kinds) is None:
            self.problem(
                "", "flagd's variants of one flag are all booleans, strings, numbers or objects; "
                f"this flag serves {', '.join(sorted(str(k) for k in kinds))}",
            )  # fmt: skip
        result: dict[str, Any] = {
            "state": "ENABLED" if env.get("enabled") else "DISABLED",
            "variants": variants.values,
            "defaultVariant": default_variant,
        }
        if targeting is not None:
            result["targeting"] = targeting
        metadata = self._metadata(kinds, variants, rules)
        if "value" in env:
            metadata[f"{META}defaultValue"] = _compact(default)
        if metadata:
            result["metadata"] = metadata
        return result

    def _rule(self, rule: dict[str, Any], index: int, variants: _Variants) -> str | None:
        where = f".environments.{self.environment}.rules[{index}]"
        for name in sorted(set(rule) - _RULE_FIELDS):
            construct = {"rollout": "a rollout", "split": "a split"}.get(name)
            if construct:
                self.problem(
                    f"{where}.{name}", f"{construct}: {_BUCKETING}; remove it, or export --to unleash"
                )
            else:
                self.problem(f"{where}.{name}", "flagd has no place for it")
        if "value" not in rule:
            return None
        if rule.get("variant") is None:
            return variants.anonymous(rule["value"])
        served = variants.named(rule["variant"], rule["value"])
        if served is None:
            self.problem(
                f"{where}.variant",
                f"variant {rule['variant']!r} serves two values in this flag; a flagd variant has one "
                "value: rename one of them",
            )
        return served

    def _metadata(
        self, kinds: set[str | None], variants: _Variants, rules: list[dict[str, Any]]
    ) -> dict[str, Any]:
        flag = self.flag
        metadata: dict[str, Any] = {}
        if flag.get("description"):
            metadata["description"] = flag["description"]
        flag_type = flag.get("type", "boolean")
        if _inferred_type(kinds) not in (None, flag_type):
            metadata[f"{META}type"] = flag_type
        for meta, name in _META_FIELDS.items():
            if name in flag and meta != "type":
                metadata[f"{META}{meta}"] = ",".join(flag[name]) if name == "tags" else flag[name]
        if variants.unnamed:
            metadata[f"{META}unnamed"] = _compact(variants.unnamed)
        if any("name" in r for r in rules):
            metadata[f"{META}ruleNames"] = _compact([r.get("name") for r in rules])
        return metadata


def export_flagd(flagset: FlagSet, environment: str) -> Exported:
    """`flagset` in `environment` as a flagd flag definition file; InvalidObjectError names every
    construct flagd cannot hold (each flag, environment, rule and condition)."""
    problems = Problems()
    data = flagset.to_data()
    evaluators = {
        s["name"]: _conjunction(s["conditions"], environment, f"segments.{s['name']}", problems)
        for s in data.get("segments", [])
    }
    flags = {f["key"]: _FlagExport(f, environment, problems).build() for f in data.get("flags", [])}
    problems.check(f"the flag set cannot be exported to flagd (environment {environment!r})")
    others = sorted({e for f in flagset.flags for e in f.environments} - {environment})
    warnings = []
    if others:
        warnings.append(
            f"a flagd file holds one environment: {environment} is exported; "
            f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} not (export each with --env)"
        )
    document: dict[str, Any] = {"$schema": SCHEMA, "flags": flags}
    if evaluators:
        document["$evaluators"] = evaluators
    return Exported(document, warnings)


# --- import ---------------------------------------------------------------------------------------

Conjunction = list[dict[str, Any]]


class _Refused(Exception):
    """A construct with no shipyard equivalent: (path, message)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def _negated(cond: dict[str, Any]) -> dict[str, Any]:
    """`cond` negated: in ↔ not_in and eq ↔ neq when plain, else `inverted` toggled."""
    cond = dict(cond)
    if cond.pop("inverted", False):
        return cond
    swap = {"in": "not_in", "eq": "neq"}
    if cond["op"] in swap:
        return {**cond, "op": swap[cond["op"]]}
    return {**cond, "inverted": True}


def _operands(args: Any, path: str, op: str, count: int) -> list[Any]:
    items = args if type(args) is list else [args]
    if len(items) != count:
        raise _Refused(path, f"{op!r} takes {count} arguments here, not {len(items)}")
    return items


class _Reader:
    """Reads JsonLogic into shipyard conditions and rules for one flagd document."""

    def __init__(self, evaluators: dict[str, Any], segments: set[str], environment: str) -> None:
        self.evaluators, self.segments, self.environment = evaluators, segments, environment
        self.loose: list[str] = []  # paths of loose (==, !=) comparisons read as strict ones
        self.pasted: set[str] = set()  # the evaluators pasted in (not segments)
        self._expanding: list[str] = []

    def _ref(self, node: Any, path: str) -> tuple[Any, str] | None:
        """The evaluator `node` pastes in, with its path; None when `node` is no `$ref`."""
        if not (type(node) is dict and set(node) == {"$ref"}):
            return None
        name = node["$ref"]
        if type(name) is not str or name not in self.evaluators:
            raise _Refused(path, f"$ref {name!r}: no such evaluator in $evaluators")
        if name in self._expanding:
            raise _Refused(path, f"$ref {name!r}: evaluators refer to each other in a cycle")
        return self.evaluators[name], f"$evaluators.{name}"

    def attribute(self, node: Any, path: str) -> str:
        """The context attribute a `var` reads."""
        if not (type(node) is dict and set(node) == {"var"}):
            raise _Refused(path, f'{_compact(node)}: expected {{"var": "<attribute>"}} here')
        name = node["var"]
        if type(name) is list and len(name) == 2 and name[0] == "environment" and name[1] == self.environment:
            return "environment"  # shipyard's `environment` defaults to the environment evaluated
        if type(name) is list and len(name) == 1:
            name = name[0]
        if type(name) is not str or not name:
            raise _Refused(
                path, f"var {_compact(name)}: a default other than the environment's has no equivalent"
            )
        if name.startswith("$flagd."):
            raise _Refused(path, f"var {name!r}: flagd's own properties have no shipyard equivalent")
        if "." in name:
            raise _Refused(
                path, f"var {name!r}: a nested attribute has no equivalent (shipyard's context is flat)"
            )
        return name

    def dnf(self, node: Any, path: str) -> list[Conjunction]:
        """A condition as alternatives, each a list of conditions that must all hold."""
        if node is True:
            return [[]]
        if node is False or node is None:
            return []
        ref = self._ref(node, path)
        if ref is not None:
            name = node["$ref"]
            if name in self.segments:
                return [[{"op": "segment", "value": name}]]
            self._expanding.append(name)
            self.pasted.add(name)
            try:
                return self.dnf(*ref)
            finally:
                self._expanding.pop()
        if type(node) is not dict or len(node) != 1:
            raise _Refused(path, f"{_compact(node)[:80]}: not a JsonLogic condition")
        ((op, args),) = node.items()
        at = f"{path}.{op}"
        if op == "and":
            alternatives: list[Conjunction] = [[]]
            for i, part in enumerate(args if type(args) is list else [args]):
                alternatives = [a + b for a in alternatives for b in self.dnf(part, f"{at}[{i}]")]
                if len(alternatives) > MAX_ALTERNATIVES:
                    raise _Refused(
                        at, f"this condition makes more than {MAX_ALTERNATIVES} rules; simplify it"
                    )
            return alternatives
        if op == "or":
            parts = args if type(args) is list else [args]
            merged = self._string_list(parts, at)
            if merged is not None:
                return [[merged]]
            alternatives = [a for i, part in enumerate(parts) for a in self.dnf(part, f"{at}[{i}]")]
            if len(alternatives) > MAX_ALTERNATIVES:
                raise _Refused(at, f"this condition makes more than {MAX_ALTERNATIVES} rules; simplify it")
            return alternatives
        if op == "!":
            (inner,) = _operands(args, at, op, 1)
            alternatives = self.dnf(inner, f"{at}[0]")
            if len(alternatives) != 1 or len(alternatives[0]) != 1:
                raise _Refused(
                    at, "the negation of an and/or has no equivalent; negate each condition instead"
                )
            return [[_negated(alternatives[0][0])]]
        return [self.leaf(op, args, at)]

    def _string_list(self, parts: list[Any], path: str) -> dict[str, Any] | None:
        """An `or` of one string test on one attribute as one condition with a list; else None."""
        if not parts or not all(type(p) is dict and len(p) == 1 and set(p) & _STRING_LOGIC for p in parts):
            return None
        try:
            conds = [self.leaf(op, args, path) for p in parts for op, args in p.items()]
        except _Refused:
            return None
        first = conds[0][0]
        if first["op"] not in _STRING_OPS or first.get("inverted"):
            return None
        shape = (first["op"], first["attribute"])
        if any((c[0]["op"], c[0]["attribute"]) != shape or c[0].get("inverted") for c in conds):
            return None
        return {**first, "value": [c[0]["value"] for c in conds]}

    def leaf(self, op: str, args: Any, path: str) -> Conjunction:
        """One JsonLogic comparison as the conditions that must all hold."""
        if op == "in":
            needle, haystack = _operands(args, path, op, 2)
            if type(haystack) is list:
                return [{"attribute": self.attribute(needle, f"{path}[0]"), "op": "in", "value": haystack}]
            if type(needle) is str:
                return [
                    {"attribute": self.attribute(haystack, f"{path}[1]"), "op": "contains", "value": needle}
                ]
            raise _Refused(path, "'in' tests an attribute against a list, or a string within an attribute")
        if op in ("===", "!==", "==", "!="):
            left, right = _operands(args, path, op, 2)
            var, literal = (left, right) if type(left) is dict else (right, left)
            attribute = self.attribute(var, path)
            if type(literal) in (int, float) and op in ("==", "!="):
                cond = {"attribute": attribute, "op": "num_eq", "value": literal}
                return [cond if op == "==" else _negated(cond)]
            if type(literal) not in (str, bool, int, float):
                raise _Refused(
                    path, f"{op!r} with {_compact(literal)[:40]}: compares to a string, number or boolean"
                )
            if op in ("==", "!=") and path not in self.loose:
                self.loose.append(path)
            return [{"attribute": attribute, "op": "eq" if op in ("===", "==") else "neq", "value": literal}]
        if op in ("<", "<=", ">", ">="):
            return self._comparison(op, args, path)
        if op in ("starts_with", "ends_with"):
            var, literal = _operands(args, path, op, 2)
            if type(literal) is not str:
                raise _Refused(path, f"{op!r} takes an attribute and a string")
            return [{"attribute": self.attribute(var, f"{path}[0]"), "op": op, "value": literal}]
        if op == "sem_ver":
            var, relation, version = _operands(args, path, op, 3)
            attribute = self.attribute(var, f"{path}[0]")
            ops = {relation: op for op, relation in _SEMVER.items()}
            if relation in ops:
                return [{"attribute": attribute, "op": ops[relation], "value": version}]
            raise _Refused(
                path, f"sem_ver {relation!r}: shipyard compares versions with <, <=, =, >= and >; "
                "ranges (~, ^) and != have no equivalent (write the range as two comparisons)",
            )  # fmt: skip
        if op == "fractional":
            raise _Refused(path, _FRACTIONAL)
        raise _Refused(path, f"JsonLogic {op!r} has no shipyard equivalent")

    def _comparison(self, op: str, args: Any, path: str) -> Conjunction:
        items = args if type(args) is list else [args]
        names = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
        mirror = {"lt": "gt", "lte": "gte", "gt": "lt", "gte": "lte"}
        if len(items) == 3 and op in ("<", "<="):  # between: a < var < b
            low, var, high = items
            attribute = self.attribute(var, f"{path}[1]")
            return [
                {"attribute": attribute, "op": mirror[names[op]], "value": self._number(low, path)},
                {"attribute": attribute, "op": names[op], "value": self._number(high, path)},
            ]
        left, right = _operands(items, path, op, 2)
        if type(left) is dict:
            return [
                {"attribute": self.attribute(left, path), "op": names[op], "value": self._number(right, path)}
            ]
        return [
            {
                "attribute": self.attribute(right, path),
                "op": mirror[names[op]],
                "value": self._number(left, path),
            }
        ]

    @staticmethod
    def _number(value: Any, path: str) -> Any:
        if type(value) is bool or parse_number(value) is None:
            raise _Refused(path, f"{_compact(value)[:40]}: a comparison needs a number here")
        return value

    def rules(
        self, node: Any, path: str, prefix: Conjunction, catch: bool, default: str
    ) -> list[tuple[Conjunction, str]]:
        """A targeting expression as (conditions, variant) rules in order. With `catch` (inside an
        `if`'s branch), the rules end with one that always matches (flagd's null: the default)."""
        if node is None:
            return [(prefix, default)] if catch else []
        if type(node) is bool:
            node = "true" if node else "false"  # flagd looks booleans up as "true"/"false"
        if type(node) is str:
            return [(prefix, node)]
        ref = self._ref(node, path)
        if ref is not None:
            self._expanding.append(node["$ref"])
            self.pasted.add(node["$ref"])
            try:
                return self.rules(ref[0], ref[1], prefix, catch, default)
            finally:
                self._expanding.pop()
        if type(node) is dict and "fractional" in node:
            raise _Refused(f"{path}.fractional", _FRACTIONAL)
        if not (
            type(node) is dict and set(node) == {"if"} and type(node["if"]) is list and len(node["if"]) >= 2
        ):
            raise _Refused(path, f"{_compact(node)[:80]}: targeting must be a variant name, null or an if")
        args = list(node["if"])
        found: list[tuple[Conjunction, str]] = []
        i = 0
        while i + 1 < len(args):  # [condition, then, condition, then, …, else]
            for alternative in self.dnf(args[i], f"{path}.if[{i}]"):
                found += self.rules(args[i + 1], f"{path}.if[{i + 1}]", prefix + alternative, True, default)
            i += 2
        rest = args[i] if i < len(args) else None
        return found + self.rules(rest, f"{path}.if[{i}]", prefix, catch, default)


def _metadata(meta: Any, path: str, warnings: list[str]) -> dict[str, Any]:
    """The shipyard fields in a flag's metadata (JSON text decoded); other keys are warned about."""
    if meta is None:
        return {}
    if type(meta) is not dict:
        raise _Refused(path, "metadata is a mapping of names to strings, numbers or booleans")
    found: dict[str, Any] = {}
    ignored = []
    for key, value in meta.items():
        name = key.removeprefix(META) if key.startswith(META) else None
        if key == "description":
            found["description"] = value
        elif name in _JSON_TEXT:
            try:
                found[name] = json.loads(value)
            except (TypeError, json.JSONDecodeError):
                raise _Refused(f"{path}.{key}", "expected JSON text (shipyard writes it so)") from None
        elif name in _META_FIELDS:
            found[_META_FIELDS[name]] = value.split(",") if name == "tags" and type(value) is str else value
        else:
            ignored.append(key)
    if ignored:
        warnings.append(f"{path}: {', '.join(ignored)} not imported (shipyard has no place for it)")
    return found


def _import_flag(key: str, flag: Any, path: str, reader: _Reader, warnings: list[str]) -> dict[str, Any]:
    if type(flag) is not dict:
        raise _Refused(path, "a flag is a mapping with state, variants, defaultVariant and targeting")
    unknown = sorted(set(flag) - {"key", "state", "variants", "defaultVariant", "targeting", "metadata"})
    if unknown:
        raise _Refused(f"{path}.{unknown[0]}", "not a flagd flag field")
    state = flag.get("state", "ENABLED")
    if state not in ("ENABLED", "DISABLED"):
        raise _Refused(f"{path}.state", f"{state!r}: use ENABLED or DISABLED")
    variants = flag.get("variants", {"true": True, "false": False})
    if type(variants) is not dict or not variants:
        raise _Refused(f"{path}.variants", "a mapping of variant names to values, at least one")
    kinds = {_value_kind(v) for v in variants.values()}
    if _inferred_type(kinds) is None:
        raise _Refused(
            f"{path}.variants", "every variant is a boolean, or every one a string, number or object"
        )
    meta = _metadata(flag.get("metadata"), f"{path}.metadata", warnings)
    default = flag.get("defaultVariant")
    if type(default) is not str or default not in variants:
        raise _Refused(
            f"{path}.defaultVariant",
            f"{_compact(default)}: shipyard serves a default value, so name one of the variants "
            f"({', '.join(sorted(variants))}); flagd's null (the code's default) has no equivalent",
        )
    unnamed = set(meta.pop("unnamed", []))
    targeting = flag.get("targeting")
    found = (
        [] if targeting in (None, {}) else reader.rules(targeting, f"{path}.targeting", [], False, default)
    )
    rules = []
    for conditions, name in found:
        if name not in variants:
            raise _Refused(f"{path}.targeting", f"serves {name!r}, which is not a variant of the flag")
        rule: dict[str, Any] = {"conditions": conditions, "value": variants[name]}
        if name not in unnamed:
            rule["variant"] = name
        rules.append(rule)
    names = meta.pop("ruleNames", None)
    if type(names) is list and len(names) == len(rules):
        for rule, rule_name in zip(rules, names, strict=True):
            if rule_name is not None:
                rule["name"] = rule_name
    fallthrough = variants[default]
    environment: dict[str, Any] = {"enabled": state == "ENABLED", "rules": rules}
    if "defaultValue" in meta:
        environment["value"] = fallthrough
        fallthrough = meta.pop("defaultValue")
    return {
        "key": key,
        "type": meta.pop("type", None) or _inferred_type(kinds),
        "default_value": fallthrough,
        "environments": {reader.environment: environment},
        **meta,
    }


def _is_slug(name: str) -> bool:
    try:
        _SLUG.validate_python(name)
    except ValidationError:
        return False
    return True


def _segment_names(evaluators: dict[str, Any], environment: str) -> set[str]:
    """The evaluators that are segments: each one list of conditions (other segments included).

    The largest such set: start from all, drop each evaluator that is not one conjunction when the
    others still in are segments, until none drops (the ones dropped are pasted in where used).
    """
    names = {name for name in evaluators if _is_slug(name)}  # others cannot name a segment: pasted in
    while True:
        reader = _Reader(evaluators, names, environment)
        keep = set()
        for name in names:
            try:
                alternatives = reader.dnf(evaluators[name], f"$evaluators.{name}")
            except _Refused:
                continue
            if len(alternatives) == 1 and alternatives[0]:
                keep.add(name)
        if keep == names:
            return names
        names = keep


def import_flagd(data: object, environment: str) -> Imported:
    """A flagd flag definition document as shipyard flags in `environment` (all or nothing:
    InvalidObjectError names every construct with no equivalent, by its path in the document)."""
    problems = Problems()
    if type(data) is not dict or "flags" not in data:
        raise InvalidObjectError("not a flagd flag definition", [("", "expected a mapping with 'flags'")])
    unknown = sorted(set(data) - {"$schema", "flags", "$evaluators", "metadata"})
    for name in unknown:
        problems.add(name, "not a flagd field")
    raw_flags = data["flags"]
    if type(raw_flags) is list:  # flagd's import form: a list of flags, each with its key
        raw_flags = {f.get("key") if type(f) is dict else None: f for f in raw_flags}
    if type(raw_flags) is not dict:
        problems.add("flags", "a mapping of flag keys to flags (or a list of flags with keys)")
        raw_flags = {}
    evaluators = data.get("$evaluators") or {}
    if type(evaluators) is not dict:
        problems.add("$evaluators", "a mapping of names to JsonLogic")
        evaluators = {}
    warnings: list[str] = []
    names = _segment_names(evaluators, environment)
    reader = _Reader(evaluators, names, environment)
    segments: dict[str, Conjunction] = {}
    for name in (n for n in evaluators if n in names):  # in the file's order
        try:
            segments[name] = reader.dnf(evaluators[name], f"$evaluators.{name}")[0]
        except _Refused as refused:  # unreachable: `_segment_names` read each with the same names
            problems.add(refused.path, refused.message)
    flags = []
    for key, flag in raw_flags.items():
        try:
            flags.append(_import_flag(str(key), flag, f"flags.{key}", reader, warnings))
        except _Refused as refused:
            problems.add(refused.path, refused.message)
    if reader.loose:
        warnings.append(
            'loose equality (==, !=) read as strict: a context value of another type (42 and "42") '
            f"no longer matches; at {', '.join(reader.loose)}"
        )
    unused = sorted(set(evaluators) - names - reader.pasted)
    if unused:
        warnings.append(
            f"$evaluators {', '.join(unused)}: not imported (no flag uses them, and they are not segments)"
        )
    problems.check("the flagd file has constructs shipyard cannot hold")
    document = {"flags": flags, "segments": [{"name": n, "conditions": c} for n, c in segments.items()]}
    flagset = flagset_from_data(document, "the flagd file, converted, is not a valid flag set")
    return Imported(flagset, warnings, environments=frozenset({environment}))
