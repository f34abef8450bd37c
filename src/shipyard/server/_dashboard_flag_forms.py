"""The flag pages' forms and views, pure (no request, no store): what the dashboard's flag routes
show and what they turn a posted form into.

- the environments a flag is shown in (production first, then the spec's order, then the rest);
- a rule builder form (attribute, operator, values per condition, each maybe negated or ignoring
  case; a rollout percentage; a value or weighted variants, each maybe with a payload) to and from
  a rule document of the flag model;
- a validation error's field path (`environments.production.rules.0.conditions.1`) mapped to the
  form field it is about (`conditions.1.values`), so that it is shown beside that field;
- the field-level diff of two versions of a flag, for the change history;
- the list's search and filters.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, get_args

from ..flags import OPERATORS, VariantPayload

PRODUCTION = "production"

LIST_OPERATORS = frozenset({"in", "not_in", "in_cidr", "contains", "starts_with", "ends_with"})
"""Operators whose values field is a comma-separated list."""
NUMBER_OPERATORS = frozenset({"lt", "lte", "gt", "gte", "num_eq"})

OPERATOR_LABELS: dict[str, str] = {
    "in": "is one of",
    "not_in": "is not one of",
    "eq": "equals",
    "neq": "does not equal",
    "contains": "contains",
    "starts_with": "starts with",
    "ends_with": "ends with",
    "matches": "matches regex",
    "lt": "<",
    "lte": "≤",
    "gt": ">",
    "gte": "≥",
    "num_eq": "= (number)",
    "semver_lt": "version <",
    "semver_lte": "version ≤",
    "semver_eq": "version =",
    "semver_gte": "version ≥",
    "semver_gt": "version >",
    "before": "is before (date-time)",
    "after": "is after (date-time)",
    "in_cidr": "is in network (CIDR)",
    "segment": "is in segment",
}
assert set(OPERATOR_LABELS) == set(OPERATORS), "every operator of the flag model has a label"

PAYLOAD_TYPES: tuple[str, ...] = get_args(VariantPayload.model_fields["type"].annotation)
"""The types a variant's payload may have (Unleash's), as the flag model lists them."""

FLAG_TYPES = ("boolean", "string", "number", "json")
FLAG_KINDS = ("release", "experiment", "operational", "kill-switch", "permission")


# --- environments ---------------------------------------------------------------------------------


def ordered_environments(*sources: Iterable[str]) -> list[str]:
    """Every environment named by `sources` once: production first, then in the order the sources
    name them (the spec's first: its order is the operator's)."""
    seen: dict[str, None] = {}
    for source in sources:
        for name in source:
            seen.setdefault(name, None)
    names = list(seen)
    return sorted(names, key=lambda name: name != PRODUCTION)  # stable: the rest keep their order


# --- values ---------------------------------------------------------------------------------------


class FieldProblem(ValueError):
    """A form field's text cannot be what the field holds."""


def parse_value(text: str, flag_type: str) -> Any:
    """A flag value of `flag_type` from a form field's text."""
    text = text.strip()
    if flag_type == "boolean":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise FieldProblem("a boolean flag's value is true or false")
    if flag_type == "number":
        number = _number(text)
        if number is None:
            raise FieldProblem(f"{text!r} is not a number")
        return number
    if flag_type == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise FieldProblem(f"not JSON: {exc.msg} at column {exc.colno}") from None
    return text


def format_value(value: Any, flag_type: str) -> str:
    """A flag value as its form field shows it (the inverse of `parse_value`)."""
    if value is None:
        return ""
    if flag_type == "string" and isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _number(text: str) -> int | float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def brief(value: Any) -> str:
    """A value in one line, for the history and rule summaries."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


# --- the rule builder -----------------------------------------------------------------------------


@dataclass
class ConditionRow:
    attribute: str = ""
    op: str = "in"
    values: str = ""
    inverted: bool = False
    case_insensitive: bool = False


@dataclass
class VariantRow:
    name: str = ""
    value: str = ""
    weight: str = ""
    payload_type: str = ""
    """"": no payload."""
    payload: str = ""


@dataclass
class RuleForm:
    """The rule builder's fields, as text (what was typed is shown again when it is refused)."""

    environment: str
    index: int | None = None
    """The rule's position in the environment; None for a new rule (added last)."""
    name: str = ""
    conditions: list[ConditionRow] = field(default_factory=list)
    percent: str = "100"
    stickiness: str = "userId"
    serve: str = "value"  # value | split
    value: str = ""
    variants: list[VariantRow] = field(default_factory=list)

    @classmethod
    def blank(cls, environment: str, flag_type: str) -> RuleForm:
        value = "true" if flag_type == "boolean" else ""
        return cls(environment=environment, conditions=[ConditionRow()], value=value)

    @classmethod
    def of_rule(cls, environment: str, index: int, rule: Mapping[str, Any], flag_type: str) -> RuleForm:
        """The form of a stored rule (snake_case document)."""
        rows = []
        for condition in rule.get("conditions", []):
            raw = condition.get("value")
            values = ", ".join(map(brief, raw)) if isinstance(raw, list) else brief(raw)
            rows.append(
                ConditionRow(
                    condition.get("attribute") or "",
                    condition["op"],
                    values,
                    inverted=bool(condition.get("inverted")),
                    case_insensitive=bool(condition.get("case_insensitive")),
                )
            )
        rollout = rule.get("rollout") or {}
        split = rule.get("split") or {}
        sticky = rollout or split
        return cls(
            environment=environment,
            index=index,
            name=rule.get("name") or "",
            conditions=rows,
            percent=str(rollout.get("percent", 100)),
            stickiness=sticky.get("stickiness", "userId"),
            serve="split" if split else "value",
            value=format_value(rule.get("value"), flag_type),
            variants=[
                VariantRow(
                    v["name"],
                    format_value(v.get("value"), flag_type),
                    str(v.get("weight", 0)),
                    *((v["payload"]["type"], v["payload"]["value"]) if v.get("payload") else ()),
                )
                for v in split.get("variants", [])
            ],
        )

    @classmethod
    def of_form(cls, form: Mapping[str, Sequence[str]]) -> RuleForm:
        """The form as posted: repeated fields (`attribute`, `op`, `values`; `variant_name`, …) give
        one row each, in order; rows left blank are dropped.

        A checkbox is posted only when it is checked, so a condition's checkboxes (`inverted`,
        `case_insensitive`) carry the key of their row, which each row posts in `condition_row`.
        A payload comes from a textarea, which a browser posts with CRLF line ends: they are read
        as LF."""

        def one(name: str, default: str = "") -> str:
            values = form.get(name) or [default]
            return values[0]

        def column(name: str) -> list[str]:
            return list(form.get(name) or [])

        index = one("index").strip()
        inverted, case_insensitive = set(column("inverted")), set(column("case_insensitive"))
        conditions = [
            ConditionRow(a.strip(), o, v, inverted=k in inverted, case_insensitive=k in case_insensitive)
            for k, a, o, v in _zip_padded(
                column("condition_row"), column("attribute"), column("op"), column("values")
            )
            if a.strip() or v.strip() or (k and (k in inverted or k in case_insensitive))
        ]
        variants = [
            VariantRow(n.strip(), v, w.strip(), t.strip(), p.replace("\r\n", "\n"))
            for n, v, w, t, p in _zip_padded(
                column("variant_name"),
                column("variant_value"),
                column("variant_weight"),
                column("variant_payload_type"),
                column("variant_payload"),
            )
            if n.strip() or v.strip() or w.strip() or t.strip() or p.strip()
        ]
        return cls(
            environment=one("environment").strip(),
            index=int(index) if index.isdigit() else None,
            name=one("name").strip(),
            conditions=conditions,
            percent=one("percent", "100").strip(),
            stickiness=one("stickiness", "userId").strip() or "userId",
            serve="split" if one("serve") == "split" else "value",
            value=one("value"),
            variants=variants,
        )

    def with_blank_rows(self) -> RuleForm:
        """The form with one empty condition and one empty variant row more, for a browser without
        JavaScript (which cannot add rows)."""
        return replace(
            self, conditions=[*self.conditions, ConditionRow()], variants=[*self.variants, VariantRow()]
        )

    def to_rule(self, flag_type: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The rule document, and the problems found in the text itself (field → message); the
        flag model checks the rest when the change is made."""
        problems: dict[str, str] = {}
        rule: dict[str, Any] = {}
        if self.name:
            rule["name"] = self.name
        conditions = []
        for i, row in enumerate(self.conditions):
            condition: dict[str, Any] = {"op": row.op}
            if row.op not in OPERATOR_LABELS:
                problems[f"conditions.{i}.op"] = f"unknown operator {row.op!r}"
            if row.inverted:
                condition["inverted"] = True
            if row.case_insensitive:
                condition["case_insensitive"] = True
            if row.op == "segment":
                condition["value"] = row.values.strip()
                if row.attribute:
                    problems[f"conditions.{i}.attribute"] = "a segment condition takes no attribute"
            else:
                if not row.attribute:
                    problems[f"conditions.{i}.attribute"] = "name the context attribute, e.g. userId"
                condition["attribute"] = row.attribute
                condition["value"] = _operand(row.op, row.values)
            conditions.append(condition)
        if conditions:
            rule["conditions"] = conditions
        percent = _number(self.percent)
        if not isinstance(percent, int) or not 0 <= percent <= 100:
            problems["percent"] = "a whole percentage from 0 to 100"
        elif percent < 100 or self.stickiness != "userId":
            rule["rollout"] = {"percent": percent, "stickiness": self.stickiness}
        if self.serve == "split":
            variants = []
            for k, variant in enumerate(self.variants):
                weight = _number(variant.weight)
                if not isinstance(weight, int):
                    problems[f"variants.{k}.weight"] = "a whole number, e.g. 50"
                try:
                    value = parse_value(variant.value, flag_type)
                except FieldProblem as exc:
                    problems[f"variants.{k}.value"] = str(exc)
                    value = variant.value
                document = {"name": variant.name, "value": value, "weight": weight}
                if variant.payload_type:
                    # The flag model checks the payload against its type (JSON, a number).
                    document["payload"] = {"type": variant.payload_type, "value": variant.payload}
                elif variant.payload.strip():
                    problems[f"variants.{k}.payload_type"] = (
                        f"choose the payload's type ({', '.join(PAYLOAD_TYPES)}), or empty the payload"
                    )
                variants.append(document)
            if not variants:
                problems["variants"] = "add at least one variant (name, value, weight)"
            split: dict[str, Any] = {"variants": variants}
            if self.stickiness != "userId":
                split["stickiness"] = self.stickiness
            rule["split"] = split
        else:
            try:
                rule["value"] = parse_value(self.value, flag_type)
            except FieldProblem as exc:
                problems["value"] = str(exc)
        return rule, problems


def builder_drops(rule: Mapping[str, Any]) -> list[str]:
    """The parts of a stored rule the builder has no field for (saving it from the builder would
    drop them): edit such a rule as JSON."""
    dropped = [f"the variant name {rule['variant']!r}"] if rule.get("variant") else []
    for part in ("rollout", "split"):
        dropped += [f"{part}.{name}" for name in ("group_id", "fallback") if (rule.get(part) or {}).get(name)]
    for variant in (rule.get("split") or {}).get("variants", []):
        if variant.get("overrides"):
            dropped.append(f"variant {variant['name']}: overrides")
    return dropped


def _zip_padded(*columns: list[str]) -> list[tuple[str, ...]]:
    width = max((len(c) for c in columns), default=0)
    return list(zip(*(c + [""] * (width - len(c)) for c in columns), strict=True))


def _operand(op: str, text: str) -> Any:
    """A condition's value from its values field: a list for the list operators, a number for the
    numeric ones (the text as typed when it is none: the model says why), else the text."""
    text = text.strip()
    if op in LIST_OPERATORS:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if op in ("contains", "starts_with", "ends_with") and len(items) == 1:
            return items[0]
        return items
    if op in NUMBER_OPERATORS:
        number = _number(text)
        return text if number is None else number
    return text


def describe_rule(rule: Mapping[str, Any]) -> list[str]:
    """A rule in words, one line per part: its conditions, its rollout, what it serves."""
    lines = []
    for condition in rule.get("conditions", []):
        raw = condition.get("value")
        values = ", ".join(map(brief, raw)) if isinstance(raw, list) else brief(raw)
        label = OPERATOR_LABELS.get(condition["op"], condition["op"])
        subject = condition.get("attribute") or "context"
        case = " (any case)" if condition.get("case_insensitive") else ""
        lines.append(f"{'NOT ' if condition.get('inverted') else ''}{subject} {label} {values}{case}")
    if not rule.get("conditions"):
        lines.append("everyone")
    if rollout := rule.get("rollout"):
        lines.append(f"{rollout['percent']} % of them by {rollout.get('stickiness', 'userId')}")
    if split := rule.get("split"):
        total = sum(v.get("weight", 0) for v in split["variants"]) or 1
        shares = [
            f"{v['name']} = {brief(v.get('value'))} ({v.get('weight', 0) * 100 / total:.0f} %"
            + (f", {v['payload']['type']} payload {v['payload']['value']}" if v.get("payload") else "")
            + ")"
            for v in split["variants"]
        ]
        lines.append("serves " + "; ".join(shares))
    else:
        lines.append(
            f"serves {brief(rule.get('value'))}" + (f" ({rule['variant']})" if rule.get("variant") else "")
        )
    return lines


# --- errors beside fields -------------------------------------------------------------------------

_RULE_PATH = re.compile(r"^environments\.(?P<env>[^.]+)\.rules\.(?P<rule>\d+)(?:\.(?P<rest>.*))?$")
_RULE_IN_MESSAGE = re.compile(r"environments\.(?P<env>[^.\s]+)\.rules\[(?P<rule>\d+)\]: (?P<message>[^;]+)")
_SUBFIELDS = {
    "rollout.percent": "percent",
    "rollout.stickiness": "stickiness",
    "split.stickiness": "stickiness",
    "name": "name",
    "value": "value",
}


def rule_field_errors(problems: Iterable[tuple[str, str]], environment: str, index: int) -> dict[str, str]:
    """The flag model's problems (field path, message) as errors of the rule builder's fields.

    A problem about another part of the flag is the form's (key ""): the change was refused for it.
    """
    errors: dict[str, str] = {}

    def add(name: str, message: str) -> None:
        errors[name] = f"{errors[name]}; {message}" if name in errors else message

    for path, message in problems:
        if path == "environment" or (path.startswith("environments.") and path.count(".") == 1):
            add("environment", message)
            continue
        if path.endswith("[key]"):  # a key of `environments` that is no environment name
            add("environment", message)
            continue
        nested = [m for m in _RULE_IN_MESSAGE.finditer(message)]
        if not path and nested:  # the flag's own check: a value of the wrong type, in the message
            for found in nested:
                here = found["env"] == environment and int(found["rule"]) == index
                add("value" if here else "", found["message"].strip())
            continue
        match = _RULE_PATH.match(path)
        if match is None or match["env"] != environment or int(match["rule"]) != index:
            add("", f"{path}: {message}" if path else message)
            continue
        add(_rule_field(match["rest"] or ""), message)
    return errors


_CONDITION_FIELDS = {
    "attribute": "attribute",
    "op": "op",
    "inverted": "inverted",
    "case_insensitive": "case_insensitive",
    "caseInsensitive": "case_insensitive",
}
"""A condition's fields by their model names (snake_case or camelCase, as posted) that the builder
shows beside a field of their own; the rest are about the values field."""


def _variant_field(parts: list[str]) -> str:
    """The builder's field for a path inside one variant (`payload.value` → `payload`)."""
    if parts[0] == "payload":
        return "payload_type" if parts[1:] == ["type"] else "payload"
    return parts[0] if parts[0] in ("name", "weight") else "value"


def _rule_field(rest: str) -> str:
    """The builder's field for a path inside one rule (`conditions.1.value` → `conditions.1.values`)."""
    parts = rest.split(".") if rest else []
    if not parts:
        return "serve"  # the rule's own check: a value or a split
    if parts[0] == "conditions" and len(parts) >= 2:
        sub = parts[2] if len(parts) > 2 else "value"
        return f"conditions.{parts[1]}.{_CONDITION_FIELDS.get(sub, 'values')}"
    if parts[:2] == ["split", "variants"]:
        if len(parts) >= 4:
            return f"variants.{parts[2]}.{_variant_field(parts[3:])}"
        return "variants"
    if parts[0] == "split":
        return "variants"
    return _SUBFIELDS.get(".".join(parts[:2]), _SUBFIELDS.get(parts[0], "serve"))


def flag_field_errors(problems: Iterable[tuple[str, str]], fields: Iterable[str]) -> dict[str, str]:
    """The flag model's problems as errors of a form with `fields` (top-level names: key,
    description, kind, default_value, …); the rest are the form's (key "")."""
    known = set(fields)
    errors: dict[str, str] = {}
    for path, message in problems:
        name = path.split(".")[0] if path else ""
        if not path:
            # The flag's own check names the field in its message: "flag 'x': default_value: …".
            for part in message.split(": ", 1)[-1].split("; "):
                head, _, rest = part.partition(": ")
                target = head if head in known else ""
                errors[target] = f"{errors[target]}; {rest or part}" if target in errors else (rest or part)
            continue
        target = name if name in known else ""
        text = message if target else f"{path}: {message}"
        errors[target] = f"{errors[target]}; {text}" if target in errors else text
    return errors


# --- history --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: str | None
    """None: the field was not there."""
    after: str | None
    """None: the field is gone."""

    @property
    def kind(self) -> str:
        return "added" if self.before is None else "removed" if self.after is None else "changed"


def flatten(document: Any, prefix: str = "") -> dict[str, str]:
    """Every leaf of a JSON document by its path (`environments.production.rules[0].value`).

    Lists of named things (rules, variants) are still indexed: a reorder shows as changes, which
    is what it is to an evaluation. An empty list or object is a leaf (`[]`, `{}`).
    """
    leaves: dict[str, str] = {}
    if isinstance(document, dict) and document:
        for key, value in document.items():
            leaves.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(document, list) and document:
        for i, value in enumerate(document):
            leaves.update(flatten(value, f"{prefix}[{i}]"))
    else:
        leaves[prefix] = brief(document)
    return leaves


def diff(before: Any, after: Any) -> list[FieldChange]:
    """The fields that differ between two versions of a document, in path order."""
    old, new = flatten(before) if before is not None else {}, flatten(after) if after is not None else {}
    return [
        FieldChange(path, old.get(path), new.get(path))
        for path in sorted(old.keys() | new.keys(), key=_path_key)
        if old.get(path) != new.get(path)
    ]


def _path_key(path: str) -> list[tuple[int, str | int]]:
    """Sort `rules[10]` after `rules[2]`."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.\[\]]+", path) if part]


# --- the list -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilter:
    """The flag list's search and filters, as the query string gives them."""

    q: str = ""
    type: str = ""
    state: str = ""
    """`on:ENV` or `off:ENV`: flags on (off) in that environment; "" any."""
    archived: bool = False

    @property
    def active(self) -> bool:
        return bool(self.q or self.type or self.state)

    def matches(self, document: Mapping[str, Any]) -> bool:
        text = self.q.strip().lower()
        if (
            text
            and text not in document["key"].lower()
            and text not in document.get("description", "").lower()
        ):
            return False
        if self.type and document.get("type", "boolean") != self.type:
            return False
        wanted, _, environment = self.state.partition(":")
        if wanted in ("on", "off") and environment:
            enabled = bool(((document.get("environments") or {}).get(environment) or {}).get("enabled"))
            if enabled != (wanted == "on"):
                return False
        return True
