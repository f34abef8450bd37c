"""The pydantic model of feature flags: flags, per-environment rules, segments, and the FlagSet.

It lives in the spec layer because the stack spec's `flags:` section is a flag set: the loader
validates it with this model, and the spec imports nothing above it. The flags package (store,
evaluator, SDK) builds on it.

The dict form (`FlagSet.to_data()` / `FlagSet.from_data()`) is what YAML/JSON files, the stack
spec's `flags:` section and the REST API hold. Keys are snake_case; the camelCase spelling of every
key (`defaultValue`, `groupId`) is accepted too. Unknown keys are errors.

Semantics, in evaluation order, for one flag in one environment:

1. the flag has no configuration for the environment, or it is not `enabled`: the flag's
   `default_value`, reason DISABLED;
2. a prerequisite does not hold: `default_value`, reason DEFAULT. As in Unleash, prerequisites are
   one level deep: a prerequisite on a flag that has prerequisites of its own never holds (so a
   cycle of prerequisites is no error: it never holds);
3. the environment has no rules: its `value` (or `default_value`), reason STATIC;
4. the first rule whose conditions all hold (and whose rollout, if any, includes the context)
   decides: its `value` (reason TARGETING_MATCH, or SPLIT when a rollout gated it) or a variant
   of its `split` (reason SPLIT);
5. no rule matched: the environment's `value` (or `default_value`), reason DEFAULT.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .flag_values import _SEMVER as SEMVER_PATTERN
from .flag_values import (
    MAX_PATTERN_LENGTH,
    parse_datetime,
    parse_network,
    parse_number,
    regex_problem,
    semver_key,
)

__all__ = [
    "EXPECTED_LIFETIME_DAYS",
    "NOT_IN_SCHEMA",
    "NO_VARIANT",
    "OPERATORS",
    "PAYLOAD_NUMBER_PATTERN",
    "STRING_OPERATORS",
    "AttributeName",
    "Condition",
    "EnvironmentName",
    "Flag",
    "FlagEnvironment",
    "FlagIssue",
    "FlagKey",
    "FlagKind",
    "FlagSet",
    "FlagType",
    "Operator",
    "Prerequisite",
    "Rollout",
    "Rule",
    "Segment",
    "Slug",
    "Split",
    "StaleFlag",
    "Variant",
    "VariantName",
    "VariantOverride",
    "VariantPayload",
    "check_references",
    "new_key_problem",
    "stale_flags",
    "type_problem",
]

Slug = Annotated[str, Field(pattern=r"^[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?$")]
"""A segment name or tag, and the key of a flag created new (API, CLI): lowercase letters and digits
with `-`, `_`, `.` inside, ≤ 100."""

FlagKey = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f-\x9f/]+$")]
"""A flag's key: Unleash's names too (`Feature.A`, UTF-8), 1–100 characters, no control character or
`/`. Flags created new through the API or the CLI are held to `Slug`; imported flags keep their names."""

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?")


def new_key_problem(key: object) -> str | None:
    """Why `key` cannot be the key of a flag created new (API, CLI), or None: those keys are slugs.

    A flag's key may be any FlagKey (an imported Unleash name keeps its spelling); a new one is
    lowercase letters and digits with `-`, `_`, `.` inside, at most 100 characters.
    """
    if isinstance(key, str) and _SLUG.fullmatch(key):
        return None
    return (
        f"{key!r} is not a key for a new flag: use lowercase letters and digits, with '-', '_' or '.' "
        "inside, at most 100 characters (e.g. new-checkout)"
    )


EnvironmentName = Annotated[str, Field(pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")]
AttributeName = Annotated[str, Field(pattern=r"^[A-Za-z_$][A-Za-z0-9_.$-]{0,99}$")]
VariantName = Annotated[str, Field(min_length=1, max_length=100)]

FlagType = Literal["boolean", "string", "number", "json"]
FlagKind = Literal["release", "experiment", "operational", "kill-switch", "permission"]
Operator = Literal[
    "in", "not_in", "eq", "neq",
    "contains", "starts_with", "ends_with", "matches",
    "lt", "lte", "gt", "gte",
    "semver_lt", "semver_eq", "semver_gt",
    "before", "after",
    "segment",
    "in_cidr", "num_eq", "semver_gte", "semver_lte",
]  # fmt: skip
OPERATORS: tuple[str, ...] = get_args(Operator)
STRING_OPERATORS = frozenset({"in", "not_in", "eq", "neq", "contains", "starts_with", "ends_with", "matches"})
"""The operators that honour `case_insensitive`."""

NO_VARIANT = "disabled"
"""The variant name a flag reports when it is on without a variant (Unleash's); prerequisites may
require it (`variants: [disabled]`: the flag is on and serves no named variant)."""

EXPECTED_LIFETIME_DAYS: dict[str, int | None] = {
    "release": 40,
    "experiment": 40,
    "operational": 7,
    "kill-switch": None,
    "permission": None,
}
"""How long a flag of each kind is expected to live (Unleash's defaults); None: permanent."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )


def _is_scalar(value: object) -> bool:
    return type(value) in (str, bool, int) or (type(value) is float and math.isfinite(value))


def _is_number(value: object) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def type_problem(flag_type: FlagType, value: object) -> str | None:
    """Why `value` cannot be a value of a flag of `flag_type`, or None when it can."""
    if value is None:
        return "a flag value cannot be null"
    ok = {
        "boolean": type(value) is bool,
        "string": type(value) is str,
        "number": _is_number(value),
        "json": True,
    }[flag_type]
    return None if ok else f"{value!r} is not a {flag_type} value"


# --- the JSON Schema's cross-field rules ----------------------------------------------------------
#
# pydantic states each field's own rules in the JSON Schema (and so in the OpenAPI document); the
# rules across fields that the validators below check are added to it here, in JSON Schema
# (if/then/else, oneOf, contains, uniqueItems, not-required), and the ones JSON Schema cannot state
# (parsing, uniqueness by a member, references between objects) are listed in the description of
# the object they are about, after NOT_IN_SCHEMA. The schema's property names are its own: camelCase
# (by alias) as the API and the OpenAPI document have them, snake_case with `by_alias=False`.

JsonSchema = dict[str, Any]

NOT_IN_SCHEMA = "Checked by shipyard (422 naming the field) but not stated in this JSON Schema:"

PAYLOAD_NUMBER_PATTERN = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?!\n)$"
"""A number payload's value: a JSON number. `(?!\\n)` keeps `$` from matching before a final newline
in Python's dialect (`re.search`, as jsonschema uses it), so the pattern reads alike there and in
ECMA-262's."""

_NOT_NULL: JsonSchema = {"not": {"type": "null"}}
_SCALAR: JsonSchema = {"type": ["string", "boolean", "number"]}
_STRINGS: JsonSchema = {"type": "array", "items": {"type": "string"}}
_OPERANDS: dict[str, JsonSchema] = {
    "in": {"type": "array", "items": _SCALAR},
    "eq": _SCALAR,
    "contains": {"anyOf": [{"type": "string"}, {**_STRINGS, "minItems": 1}]},
    "matches": {"type": "string", "maxLength": MAX_PATTERN_LENGTH},
    "lt": {"type": ["number", "string"]},
    "semver_eq": {"type": "string", "maxLength": 256, "pattern": SEMVER_PATTERN.pattern},
    "before": {"type": "string", "maxLength": 64},
    "in_cidr": _STRINGS,
    "segment": {"type": "string", "minLength": 1},
}
"""The operand each operator takes, by one operator of each kind (`_operand_kind`)."""

_VALUE_OF_TYPE: dict[str, JsonSchema] = {
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "number": {"type": "number"},
    "json": _NOT_NULL,
}
"""A value a flag of each type serves (`type_problem`)."""


def _operand_kind(op: str) -> str:
    """The operator `_OPERANDS` states `op`'s operand under."""
    if op.startswith("semver_"):
        return "semver_eq"
    return {
        "not_in": "in", "neq": "eq", "starts_with": "contains", "ends_with": "contains",
        "lte": "lt", "gt": "lt", "gte": "lt", "num_eq": "lt", "after": "before",
    }.get(op, op)  # fmt: skip


def _name(schema: JsonSchema, field: str) -> str:
    """The schema's name of a model field: its camelCase alias when the schema uses aliases."""
    camel = to_camel(field)
    return camel if camel in schema.get("properties", {}) else field


def _cross_field(rules: Callable[[JsonSchema], list[JsonSchema]], *unstated: str) -> Callable[..., None]:
    """A `json_schema_extra` adding `rules(schema)` to the object's `allOf`, and listing the rules
    `unstated` in its description."""

    def extra(schema: JsonSchema, *_: object) -> None:
        if stated := rules(schema):
            schema["allOf"] = [*schema.get("allOf", []), *stated]
        if unstated:
            listed = "\n".join(f"- {rule}" for rule in unstated)
            schema["description"] = f"{schema.get('description', '')}\n\n{NOT_IN_SCHEMA}\n{listed}".lstrip()

    return extra


def _condition_rules(schema: JsonSchema) -> list[JsonSchema]:
    case_insensitive = _name(schema, "case_insensitive")
    kinds: dict[str, list[str]] = {}
    for op in OPERATORS:
        kinds.setdefault(_operand_kind(op), []).append(op)
    return [
        {
            "if": {"properties": {"op": {"const": "segment"}}},
            "then": {"properties": {"attribute": {"type": "null"}}},
            "else": {"required": ["attribute"], "properties": {"attribute": {"type": "string"}}},
        },
        {
            "if": {"required": [case_insensitive], "properties": {case_insensitive: {"const": True}}},
            "then": {"properties": {"op": {"enum": sorted(STRING_OPERATORS | {"segment"})}}},
        },
        *(
            {"if": {"properties": {"op": {"enum": ops}}}, "then": {"properties": {"value": _OPERANDS[kind]}}}
            for kind, ops in kinds.items()
        ),
    ]


class Condition(_Model):
    """One test of the context: `attribute op value`, or `op: segment` with a segment name as value.

    A missing attribute, or a context value of the wrong type, makes a condition false, except for
    `not_in` and `neq`, which are exactly "not in" and "not eq" (Unleash's NOT_IN): true then.
    Numeric strings are read as JavaScript's `Number()` reads them (`" 12 "`, `"1e3"`, and `""` as 0),
    as Unleash's SDKs do. `case_insensitive` compares strings lowercased (STRING_OPERATORS only);
    `inverted` negates the whole condition, after every other rule (Unleash's `inverted`).
    """

    model_config = ConfigDict(
        json_schema_extra=_cross_field(
            _condition_rules,
            "a `matches` pattern is a regular expression that RE2 and Python read alike and that cannot "
            "backtrack without bound",
            "a numeric operator's (lt, lte, gt, gte, num_eq) string value reads as a finite number",
            "an `in_cidr` value's strings are IP addresses or CIDR blocks",
            "a `before`/`after` value is an ISO-8601 date-time with a time zone",
        )
    )

    attribute: AttributeName | None = None
    op: Operator
    value: JsonValue
    case_insensitive: Annotated[bool, Field(strict=True)] = False
    inverted: Annotated[bool, Field(strict=True)] = False

    @field_validator("case_insensitive")
    @classmethod
    def _case_for_strings(cls, case_insensitive: bool, info: ValidationInfo) -> bool:
        # A field's own check, so that the error names the field (the dashboard shows it there).
        op = info.data.get("op")
        if case_insensitive and op is not None and op != "segment" and op not in STRING_OPERATORS:
            raise ValueError(f"'case_insensitive' applies to string operators, not to {op!r}")
        return case_insensitive

    @model_validator(mode="after")
    def _check_operand(self) -> Condition:
        op, value = self.op, self.value
        if op == "segment":
            if self.attribute is not None:
                raise ValueError("a segment condition takes no attribute")
            if type(value) is not str or not value:
                raise ValueError("a segment condition's value is the segment's name")
            return self
        if self.attribute is None:
            raise ValueError(f"the {op!r} operator needs an attribute")
        if op in ("in", "not_in"):
            if type(value) is not list or not all(_is_scalar(v) for v in value):
                raise ValueError(f"{op!r} takes a list of strings, numbers or booleans")
        elif op in ("eq", "neq"):
            if not _is_scalar(value):
                raise ValueError(f"{op!r} takes a string, a number or a boolean")
        elif op in ("contains", "starts_with", "ends_with"):
            if not (
                type(value) is str or (type(value) is list and value and all(type(v) is str for v in value))
            ):
                raise ValueError(f"{op!r} takes a string or a non-empty list of strings")
        elif op == "matches":
            if type(value) is not str:
                raise ValueError("'matches' takes a regular expression as a string")
            problem = regex_problem(value)
            if problem:
                raise ValueError(f"unsafe or invalid pattern {value!r}: {problem}")
        elif op in ("lt", "lte", "gt", "gte", "num_eq"):
            if type(value) is bool or parse_number(value) is None:
                raise ValueError(f"{op!r} takes a number")
        elif op == "in_cidr":
            if type(value) is not list or not all(type(v) is str for v in value):
                raise ValueError(
                    "'in_cidr' takes a list of IP addresses or CIDR blocks (10.0.0.0/8, 2001:db8::/32)"
                )
            bad = [v for v in value if parse_network(v) is None]
            if bad:
                raise ValueError(f"'in_cidr': {', '.join(map(repr, bad))} is not an IP address or CIDR block")
        elif op.startswith("semver_"):
            if semver_key(value) is None:
                raise ValueError(f"{op!r} takes a semantic version such as 1.4.0 or 2.0.0-rc.1")
        elif op in ("before", "after"):
            parsed = parse_datetime(value) if type(value) is str else None
            if parsed is None:
                raise ValueError(f"{op!r} takes an ISO-8601 date-time such as 2025-01-31T12:00:00+01:00")
            if datetime.fromisoformat(str(value)).tzinfo is None:
                raise ValueError(f"{op!r} needs a date-time with a time zone (Z or +hh:mm)")
        return self


class _Sticky(_Model):
    stickiness: AttributeName = "userId"
    """The context attribute whose value decides the bucket (a non-empty string or an integer), or one
    of two reserved names, Unleash's: `default` (`userId`, else `sessionId`, and for a split else
    `remoteAddress`) and `random` (a random bucket every time)."""
    group_id: Annotated[str, Field(max_length=200)] | None = None
    """Hash group; defaults to the flag key (so a flag's buckets are independent of other flags')."""
    fallback: Literal["no_match", "random"] = "no_match"
    """When the stickiness attribute is missing (or empty): the rule does not match, or a random bucket."""


class Rollout(_Sticky):
    """Gate a rule to `percent` % of contexts, bucketed exactly as Unleash's flexibleRollout."""

    percent: Annotated[int, Field(ge=0, le=100, strict=True)]


class VariantPayload(_Model):
    """Unleash's variant payload, reported with the variant: a typed string. A `json` payload's value
    is JSON (as JavaScript's `JSON.parse` reads it) and a `number` payload's a JSON number, so that
    an SDK can read what it is told it gets."""

    model_config = ConfigDict(
        json_schema_extra=_cross_field(
            lambda schema: [
                {
                    "if": {"required": ["type"], "properties": {"type": {"const": "number"}}},
                    "then": {"properties": {"value": {"pattern": PAYLOAD_NUMBER_PATTERN}}},
                },
                {  # an annotation only: the rule is in the description
                    "if": {"required": ["type"], "properties": {"type": {"const": "json"}}},
                    "then": {"properties": {"value": {"contentMediaType": "application/json"}}},
                },
            ],
            "a `json` payload's value parses as JSON (no NaN or Infinity)",
        )
    )

    type: Literal["string", "json", "csv", "number"]
    value: str

    @field_validator("value")
    @classmethod
    def _value_is_its_type(cls, value: str, info: ValidationInfo) -> str:
        if _stored(info):
            return value
        kind = info.data.get("type")
        if kind == "json" and (problem := _json_problem(value)):
            raise ValueError(f"a json payload is JSON: {problem}")
        if kind == "number" and not re.search(PAYLOAD_NUMBER_PATTERN, value):
            raise ValueError(f"a number payload is a number such as 42, -1.5 or 1e3, not {value!r}")
        return value


STORED = {"stored": True}
"""The validation context of documents read back from the flag store: they were valid when written,
and a rule added since (a payload's type, `createdAt`'s form) must not make a stored flag set
unreadable, which would stop flag evaluation; the next write of that flag is held to it."""


def _stored(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("stored"))


def _json_problem(text: str) -> str | None:
    """Why `text` is not JSON as `JSON.parse` reads it (Python's reader also takes NaN and
    Infinity), or None."""

    def no_constant(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    try:
        json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    return None


class VariantOverride(_Model):
    """Serve the variant, without hashing, to contexts whose `attribute` is one of `values`."""

    attribute: AttributeName
    values: list[str]


class Variant(_Model):
    name: VariantName
    value: JsonValue
    weight: Annotated[int, Field(ge=0, le=1_000_000, strict=True)]
    payload: VariantPayload | None = None
    overrides: list[VariantOverride] = []
    """Checked before hashing, variant by variant in order: the first match is served (Unleash's)."""


class Split(_Sticky):
    """Serve one of the variants, chosen by weight, bucketed exactly as Unleash's variants."""

    model_config = ConfigDict(
        json_schema_extra=_cross_field(
            # Weights are whole and not negative: they add up to more than 0 when one is 1 or more.
            lambda schema: [
                {"properties": {"variants": {"contains": {"properties": {"weight": {"minimum": 1}}}}}}
            ],
            "the variants' names are unique within the split",
        )
    )

    variants: Annotated[list[Variant], Field(min_length=1)]

    @model_validator(mode="after")
    def _check_variants(self) -> Split:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique within a split")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("the variants' weights must add up to more than 0")
        return self


_SERVES_VALUE: JsonSchema = {"required": ["value"], "properties": {"value": _NOT_NULL}}
_SERVES_SPLIT: JsonSchema = {"required": ["split"], "properties": {"split": _NOT_NULL}}


class Rule(_Model):
    """Conditions that must all hold, an optional rollout gate, and a value or a split."""

    model_config = ConfigDict(
        json_schema_extra=_cross_field(
            lambda schema: [
                {"oneOf": [_SERVES_VALUE, _SERVES_SPLIT]},
                {"if": _SERVES_SPLIT, "then": {"properties": {"variant": {"type": "null"}}}},
            ]
        )
    )

    name: Annotated[str, Field(max_length=200)] | None = None
    conditions: list[Condition] = []
    rollout: Rollout | None = None
    value: JsonValue | None = None
    variant: VariantName | None = None
    """The name reported for `value` (e.g. "on"); None reports no variant."""
    split: Split | None = None

    @model_validator(mode="after")
    def _value_or_split(self) -> Rule:
        if (self.value is None) == (self.split is None):
            raise ValueError("a rule serves either a value or a split, exactly one of them")
        if self.split is not None and self.variant is not None:
            raise ValueError("a split rule's variants carry their own names; drop 'variant'")
        return self

    def served(self) -> list[tuple[str | None, JsonValue]]:
        """The (variant, value) pairs this rule can serve."""
        if self.split is not None:
            return [(v.name, v.value) for v in self.split.variants]
        return [(self.variant, self.value)]


class FlagEnvironment(_Model):
    """A flag's state in one environment."""

    enabled: Annotated[bool, Field(strict=True)] = False
    rules: list[Rule] = []
    value: JsonValue | None = None
    """Served when enabled and no rule matches (or there are no rules); default: the flag's default."""


def _prerequisite_rules(schema: JsonSchema) -> list[JsonSchema]:
    """The older `variant` (read before validation, so pydantic does not list it), and not both."""
    single = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 100}, {"type": "null"}]}
    schema["properties"]["variant"] = {**single, "deprecated": True, "description": "read as `variants: [x]`"}
    return [{"not": {"required": ["variant", "variants"]}}]


class Prerequisite(_Model):
    """The flag is evaluated only when `flag` is on (and serves one of `variants`, if any) for the same
    context, or, with `enabled: false`, only when `flag` is off.

    One level deep, as Unleash's dependencies: a prerequisite on a flag that has prerequisites never
    holds. `variants` may name NO_VARIANT ("disabled"): on without a named variant. The older
    `variant: x` is read as `variants: [x]`.
    """

    model_config = ConfigDict(json_schema_extra=_cross_field(_prerequisite_rules))

    flag: FlagKey
    variants: list[VariantName] = []
    enabled: Annotated[bool, Field(strict=True)] = True

    @model_validator(mode="before")
    @classmethod
    def _single_variant(cls, data: object) -> object:
        if isinstance(data, dict) and "variant" in data:
            data = dict(data)
            single = data.pop("variant")
            if "variants" in data:
                raise ValueError("give 'variants' (a list) or the older 'variant', not both")
            data["variants"] = [] if single is None else [single]
        return data


def _flag_rules(schema: JsonSchema) -> list[JsonSchema]:
    """Each value a flag serves is of its type; its tags are unique."""
    schema["properties"]["tags"]["uniqueItems"] = True
    default_value = _name(schema, "default_value")
    rules: list[JsonSchema] = [{"properties": {default_value: _NOT_NULL}}]
    for flag_type, value in _VALUE_OF_TYPE.items():
        unset_or_value = {"anyOf": [{"type": "null"}, value]}
        split = {"properties": {"variants": {"items": {"properties": {"value": value}}}}}
        rule = {"properties": {"value": unset_or_value, "split": split}}
        environment = {"properties": {"value": unset_or_value, "rules": {"items": rule}}}
        # A flag without `type` is boolean: `properties` holds when the property is absent.
        when: JsonSchema = {"properties": {"type": {"const": flag_type}}}
        if flag_type != "boolean":
            when["required"] = ["type"]
        then = {"properties": {default_value: value, "environments": {"additionalProperties": environment}}}
        rules.append({"if": when, "then": then})
    return rules


class Flag(_Model):
    model_config = ConfigDict(json_schema_extra=_cross_field(_flag_rules))

    key: FlagKey
    description: Annotated[str, Field(max_length=2000)] = ""
    type: FlagType = "boolean"
    default_value: JsonValue
    environments: dict[EnvironmentName, FlagEnvironment] = {}
    prerequisites: list[Prerequisite] = []
    owner: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    tags: list[Slug] = []
    kind: FlagKind = "release"
    lifetime_days: Annotated[int, Field(ge=1, strict=True)] | None = None
    """Overrides the kind's expected lifetime (EXPECTED_LIFETIME_DAYS)."""
    created_at: AwareDatetime | None = None

    @field_validator("created_at", mode="before")
    @classmethod
    def _created_at_is_a_time(cls, value: object, info: ValidationInfo) -> object:
        # pydantic would read a number as a Unix time; the schema says an RFC 3339 date-time string.
        if isinstance(value, int | float) and not _stored(info):
            raise ValueError("created_at is an RFC 3339 date-time such as 2026-01-31T12:00:00Z")
        return value

    @model_validator(mode="after")
    def _check_values(self) -> Flag:
        problems = []
        if problem := type_problem(self.type, self.default_value):
            problems.append(f"default_value: {problem}")
        for env_name, env in self.environments.items():
            if env.value is not None and (problem := type_problem(self.type, env.value)):
                problems.append(f"environments.{env_name}.value: {problem}")
            for i, rule in enumerate(env.rules):
                for _, value in rule.served():
                    if problem := type_problem(self.type, value):
                        problems.append(f"environments.{env_name}.rules[{i}]: {problem}")
        if len(set(self.tags)) != len(self.tags):
            problems.append("tags: a tag is listed twice")
        if problems:
            raise ValueError(f"flag {self.key!r}: " + "; ".join(problems))
        return self

    @property
    def expected_lifetime(self) -> timedelta | None:
        """How long this flag is expected to live; None for permanent flags."""
        days = self.lifetime_days if self.lifetime_days is not None else EXPECTED_LIFETIME_DAYS[self.kind]
        return None if days is None else timedelta(days=days)

    def variant_names(self) -> set[str]:
        """Every variant name any of the flag's rules can report."""
        return {
            name
            for env in self.environments.values()
            for rule in env.rules
            for name, _ in rule.served()
            if name is not None
        }


class Segment(_Model):
    """A named, reusable group of conditions (all must hold); rules use it with `op: segment`."""

    name: Slug
    description: Annotated[str, Field(max_length=2000)] = ""
    conditions: Annotated[list[Condition], Field(min_length=1)]


@dataclass(frozen=True)
class FlagIssue:
    """One broken reference in a flag set, located by flag (or segment), environment and rule."""

    path: str  # e.g. "flags[2].environments.production.rules[0].conditions[1]"
    message: str
    flag: str | None = None
    segment: str | None = None
    environment: str | None = None
    rule: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _named_rule(flag: str, env: str, index: int, rule: Rule) -> str:
    label = f" ({rule.name!r})" if rule.name else ""
    return f"flag {flag!r}, environment {env!r}, rule {index}{label}"


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, …, a], or None; iterative DFS, nodes in sorted order."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            edges = graph.get(node, [])
            if i < len(edges):
                stack[-1] = (node, i + 1)
                nxt = edges[i]
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if not state.get(nxt) and nxt in graph:
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def check_references(flags: Iterable[Flag], segments: Iterable[Segment]) -> list[FlagIssue]:
    """Every unknown segment, unknown prerequisite or variant, and cycle among segments."""
    flags, segments = list(flags), list(segments)
    issues: list[FlagIssue] = []
    by_key = {f.key: f for f in flags}
    seg_names = {s.name for s in segments}

    for i, seg in enumerate(segments):
        for j, cond in enumerate(seg.conditions):
            if cond.op == "segment" and cond.value not in seg_names:
                issues.append(FlagIssue(
                    f"segments[{i}].conditions[{j}]",
                    f"segment {seg.name!r} uses unknown segment {cond.value!r}",
                    segment=seg.name,
                ))  # fmt: skip
    seg_graph = {s.name: [str(c.value) for c in s.conditions if c.op == "segment"] for s in segments}
    if cycle := _find_cycle(seg_graph):
        issues.append(FlagIssue(
            f"segments[{[s.name for s in segments].index(cycle[0])}]",
            "segments include each other in a cycle: " + " → ".join(cycle),
            segment=cycle[0],
        ))  # fmt: skip

    for i, flag in enumerate(flags):
        for env_name, env in flag.environments.items():
            for r, rule in enumerate(env.rules):
                for c, cond in enumerate(rule.conditions):
                    if cond.op == "segment" and cond.value not in seg_names:
                        issues.append(FlagIssue(
                            f"flags[{i}].environments.{env_name}.rules[{r}].conditions[{c}]",
                            f"{_named_rule(flag.key, env_name, r, rule)} uses unknown segment {cond.value!r}",
                            flag=flag.key, environment=env_name, rule=r,
                        ))  # fmt: skip
        for p, pre in enumerate(flag.prerequisites):
            path = f"flags[{i}].prerequisites[{p}]"
            target = by_key.get(pre.flag)
            if target is None:
                issues.append(FlagIssue(
                    path, f"flag {flag.key!r} requires unknown flag {pre.flag!r}", flag=flag.key
                ))  # fmt: skip
                continue
            served = target.variant_names() | {NO_VARIANT}
            for variant in pre.variants:
                if variant not in served:
                    issues.append(FlagIssue(
                        path,
                        f"flag {flag.key!r} requires variant {variant!r} of flag {pre.flag!r}, "
                        f"which never serves it",
                        flag=flag.key,
                    ))  # fmt: skip
    # Prerequisites are one level deep (a prerequisite on a flag with prerequisites never holds), so
    # a cycle among them is no error: unlike segments, nothing follows it.
    return issues


def _keyed(items: object, key_name: str) -> object:
    """Accept a mapping {key: item-without-key} as well as a list of items."""
    if isinstance(items, dict):
        return [
            {key_name: k, **v} if isinstance(v, dict) and key_name not in v else v for k, v in items.items()
        ]
    return items


class FlagSet(_Model):
    """All flags and segments of a project at one version; references between them are checked."""

    model_config = ConfigDict(
        json_schema_extra=_cross_field(
            lambda schema: [],
            "flags' keys are unique, and segments' names",
            "a `segment` condition names a segment of the set, and segments do not include each other "
            "in a cycle",
            "a prerequisite names a flag of the set, and only variants that flag can serve (or "
            f"{NO_VARIANT!r})",
        )
    )

    version: Annotated[int, Field(ge=0, strict=True)] = 0
    flags: list[Flag] = []
    segments: list[Segment] = []

    @field_validator("flags", mode="before")
    @classmethod
    def _flags_mapping(cls, value: object) -> object:
        return _keyed(value, "key")

    @field_validator("segments", mode="before")
    @classmethod
    def _segments_mapping(cls, value: object) -> object:
        return _keyed(value, "name")

    @model_validator(mode="after")
    def _check_references(self) -> FlagSet:
        problems = []
        keys = [f.key for f in self.flags]
        if dupes := sorted({k for k in keys if keys.count(k) > 1}):
            problems.append(f"flags: duplicate key(s) {', '.join(dupes)}")
        names = [s.name for s in self.segments]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"segments: duplicate name(s) {', '.join(dupes)}")
        problems += [str(issue) for issue in check_references(self.flags, self.segments)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def flag(self, key: str) -> Flag | None:
        return next((f for f in self.flags if f.key == key), None)

    @classmethod
    def from_data(cls, data: object) -> FlagSet:
        """A flag set from its dict form, or from a bare list (or mapping) of flags."""
        if isinstance(data, list) or (
            isinstance(data, dict) and not ({"version", "flags", "segments"} & set(data))
        ):
            data = {"flags": data}
        return cls.model_validate(data)

    def to_data(self) -> dict[str, Any]:
        """The dict form (JSON-compatible, snake_case keys, defaults left out)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    @classmethod
    def from_yaml(cls, text: str) -> FlagSet:
        return cls.from_data(yaml.safe_load(text) or {})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_data(), sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class StaleFlag:
    key: str
    kind: str
    owner: str | None
    age: timedelta
    expected_lifetime: timedelta

    @property
    def overdue(self) -> timedelta:
        return self.age - self.expected_lifetime


def stale_flags(flags: FlagSet | Iterable[Flag], now: datetime) -> list[StaleFlag]:
    """Flags older than their kind's expected lifetime at `now` (naive `now` is taken as UTC).

    Permanent kinds (kill-switch, permission) and flags without `created_at` are never stale.
    Sorted by how long they are overdue, most first.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    found = []
    for flag in flags.flags if isinstance(flags, FlagSet) else flags:
        lifetime = flag.expected_lifetime
        if lifetime is None or flag.created_at is None:
            continue
        age = now - flag.created_at
        if age > lifetime:
            found.append(StaleFlag(flag.key, flag.kind, flag.owner, age, lifetime))
    return sorted(found, key=lambda s: (-s.overdue, s.key))
