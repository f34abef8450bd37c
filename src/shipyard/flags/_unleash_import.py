"""Unleash → shipyard: a flag set that answers as Unleash's SDKs answer, from three of its documents.

    from_unleash(state)                  # client API state: {version, features, segments}
    from_unleash({"events": [...]})      # delta API events, applied in order (hydration, updates …)
    from_unleash(export, environment="production")   # the admin export (features, featureStrategies …)

The mapping (the contract shared with the exporter, `_unleash_export`): an Unleash feature is a
boolean flag, default false, configured in one environment (`environment`); `enabled: false` is a
disabled environment. Each strategy is a rule serving `true`, in order, and nothing matching falls
through to false; a feature enabled without strategies is on (no rules, value true). Strategy
constraints and segments are the rule's conditions (a segment is an `op: segment` condition);
flexibleRollout and the gradual rollouts are the rule's rollout; userWithId and remoteAddress are
`in` and `in_cidr` conditions. Strategy variants are the rule's split; feature variants (legacy) a
split on every rule without strategy variants. Dependencies are prerequisites.

All or nothing: what cannot be reproduced raises one InvalidObjectError naming every problem with
its path in the document. What is reproduced exactly but is odd (an unknown strategy or operator,
which Unleash's SDKs never match; a dependency on a missing feature, which keeps the feature off)
is a warning. "Exactly" means as Unleash's Node SDK evaluates it, the reference the client
specification's tests hold shipyard to (tests/unit/flags/test_unleash_spec.py).

Segment names: shipyard's segment names are slugs and Unleash's client API gives segments an id and
often no name, so a segment is named after its name, slugified (`Beta users` → `beta-users`), or
`segment-<id>` without one; a clash gets `-<id>` appended.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

from pydantic import ValidationError

from ..errors import InvalidObjectError
from ..spec.flag_values import check_regex, expand_posix_classes, js_number, parse_network, semver_key
from ..spec.flags import NO_VARIANT, Condition, Flag, FlagKind, FlagSet, Rule, Segment

__all__ = ["UnleashImport", "from_unleash"]


@dataclass(frozen=True)
class UnleashImport:
    """The flag set read from an Unleash document, and what about it deserves a look."""

    flagset: FlagSet
    warnings: list[str]


def from_unleash(data: object, *, environment: str = "production") -> UnleashImport:
    """Read an Unleash client API state, delta API events or admin export into `environment`.

    Raises InvalidObjectError listing every construct that cannot be reproduced, each with its path.
    """
    return _Importer(environment).run(data)


_OPERATORS = {
    "IN": "in", "NOT_IN": "not_in",
    "STR_CONTAINS": "contains", "STR_STARTS_WITH": "starts_with", "STR_ENDS_WITH": "ends_with",
    "NUM_EQ": "num_eq", "NUM_GT": "gt", "NUM_GTE": "gte", "NUM_LT": "lt", "NUM_LTE": "lte",
    "DATE_AFTER": "after", "DATE_BEFORE": "before",
    "SEMVER_EQ": "semver_eq", "SEMVER_GT": "semver_gt", "SEMVER_LT": "semver_lt",
    "SEMVER_GTE": "semver_gte", "SEMVER_LTE": "semver_lte",
    "REGEX": "matches", "IN_CIDR": "in_cidr",
}  # fmt: skip
_VALUE_LISTS = {"in", "not_in", "contains", "starts_with", "ends_with", "in_cidr"}
_ATTRIBUTE = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$-]{0,99}")
_LIST_SEPARATOR = re.compile(r"\s*,\s*")  # how Unleash's SDKs split userIds and IPs
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_KINDS = set(get_args(FlagKind))
_TAG = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?")
_FLAG_KEY = re.compile(r"[^\x00-\x1f\x7f-\x9f/]{1,100}")  # FlagKey's rule
_FALLBACK_ATTRIBUTE = "unleash"  # for a never-true condition on a context name shipyard cannot hold
_ALWAYS = "always"  # a constraint that always holds (left out)
_UNREADABLE = "unreadable"  # a date Unleash's SDKs read as an invalid Date


def _never(attribute: str) -> dict[str, Any]:
    """A condition that never holds (nothing is in an empty list)."""
    name = attribute if _ATTRIBUTE.fullmatch(attribute) else _FALLBACK_ATTRIBUTE
    return {"attribute": name, "op": "in", "value": []}


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug[:100].rstrip("-._")


def _number_value(number: float | int) -> float | int:
    return int(number) if float(number).is_integer() and abs(number) < 2**53 else number


@dataclass
class _Feature:
    """One Unleash feature gathered from the document, each part with its path there."""

    path: str
    raw: Mapping[str, Any]
    enabled: bool
    strategies: list[tuple[str, Any]] = field(default_factory=list)
    variants: tuple[str, Any] | None = None
    dependencies: list[tuple[str, Any]] = field(default_factory=list)
    tags: list[tuple[str, Any]] = field(default_factory=list)


@dataclass
class _Built:
    """A feature turned into a flag's parts, before its prerequisites are resolved."""

    feature: _Feature
    name: str
    flag: dict[str, Any]
    variant_names: set[str]


class _Importer:
    def __init__(self, environment: str) -> None:
        self.environment = environment
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[str] = []
        self.features: list[_Feature] = []
        self.raw_segments: dict[Any, tuple[str, Mapping[str, Any]]] = {}
        self.segment_names: dict[Any, str] = {}
        self.segment_always: set[Any] = set()  # segments whose every constraint always holds

    # --- reporting ------------------------------------------------------------------------------

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")

    def _mapping(self, value: object, path: str) -> Mapping[str, Any] | None:
        if isinstance(value, Mapping):
            return value
        self.problem(path, f"expected an object, found {type(value).__name__}")
        return None

    def _list(self, value: object, path: str) -> list[Any]:
        """A list field; missing (None) reads as empty, as Unleash's SDKs read it."""
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.problem(path, f"expected a list, found {type(value).__name__}")
        return []

    # --- the three documents --------------------------------------------------------------------

    def run(self, data: object) -> UnleashImport:
        if not isinstance(data, Mapping):
            raise InvalidObjectError(
                "an Unleash document is a JSON object: a client API state ({features, segments}), "
                "delta API events ({events}) or an admin export ({features, featureStrategies, …})"
            )
        if "events" in data:
            self._read_events(data)
        elif "featureStrategies" in data or "featureEnvironments" in data:
            self._read_export(data)
        elif "features" in data:
            self._read_state(data)
        else:
            raise InvalidObjectError(
                "not an Unleash document: expected `features` (client API state), `events` (delta "
                "API) or `featureStrategies` (admin export)"
            )
        flagset = self._build()
        if self.problems:
            count = len(self.problems)
            lines = "\n".join(f"  {path}: {message}" for path, message in self.problems)
            raise InvalidObjectError(
                f"{count} problem{'s' if count != 1 else ''} in the Unleash document "
                f"(nothing was imported):\n{lines}",
                list(self.problems),
            )
        assert flagset is not None
        return UnleashImport(flagset, list(self.warnings))

    def _state_feature(self, raw: object, path: str) -> _Feature | None:
        feature = self._mapping(raw, path)
        if feature is None:
            return None
        label = f"{path} (name {feature.get('name')!r})"
        found = _Feature(label, feature, feature.get("enabled") is True)
        found.strategies = [
            (f"{label}.strategies[{i}]", s)
            for i, s in enumerate(self._list(feature.get("strategies"), f"{label}.strategies"))
        ]
        if feature.get("variants") is not None:
            found.variants = (f"{label}.variants", feature.get("variants"))
        found.dependencies = [
            (f"{label}.dependencies[{i}]", d)
            for i, d in enumerate(self._list(feature.get("dependencies"), f"{label}.dependencies"))
        ]
        found.tags = [
            (f"{label}.tags[{i}]", t.get("value") if isinstance(t, Mapping) else t)
            for i, t in enumerate(self._list(feature.get("tags"), f"{label}.tags"))
        ]
        return found

    def _add_segment(self, raw: object, path: str) -> None:
        segment = self._mapping(raw, path)
        if segment is None:
            return
        seg_id = segment.get("id")
        if not isinstance(seg_id, int | str) or isinstance(seg_id, bool):
            self.problem(f"{path}.id", f"a segment's id is a number, found {seg_id!r}")
            return
        self.raw_segments[seg_id] = (path, segment)

    def _read_state(self, data: Mapping[str, Any]) -> None:
        for i, raw in enumerate(self._list(data.get("features"), "features")):
            if (feature := self._state_feature(raw, f"features[{i}]")) is not None:
                self.features.append(feature)
        for i, raw in enumerate(self._list(data.get("segments"), "segments")):
            self._add_segment(raw, f"segments[{i}]")

    def _read_events(self, data: Mapping[str, Any]) -> None:
        features: dict[str, _Feature] = {}  # by name, in the order they first appeared
        for e, raw in enumerate(self._list(data.get("events"), "events")):
            path = f"events[{e}]"
            event = self._mapping(raw, path)
            if event is None:
                continue
            kind = event.get("type")
            if kind == "hydration":
                features.clear()
                self.raw_segments.clear()
                for i, f in enumerate(self._list(event.get("features"), f"{path}.features")):
                    if (feature := self._state_feature(f, f"{path}.features[{i}]")) is not None:
                        features[str(feature.raw.get("name"))] = feature
                for i, s in enumerate(self._list(event.get("segments"), f"{path}.segments")):
                    self._add_segment(s, f"{path}.segments[{i}]")
            elif kind == "feature-updated":
                if (feature := self._state_feature(event.get("feature"), f"{path}.feature")) is not None:
                    features[str(feature.raw.get("name"))] = feature
            elif kind == "feature-removed":
                features.pop(str(event.get("featureName")), None)
            elif kind == "segment-updated":
                self._add_segment(event.get("segment"), f"{path}.segment")
            elif kind == "segment-removed":
                self.raw_segments.pop(event.get("segmentId"), None)
            else:
                self.problem(f"{path}.type", f"unknown delta event type {kind!r}")
        self.features = list(features.values())

    def _read_export(self, data: Mapping[str, Any]) -> None:
        """Unleash's admin export (one environment's; read into `environment`)."""
        by_name: dict[str, _Feature] = {}
        for i, raw in enumerate(self._list(data.get("features"), "features")):
            feature = self._mapping(raw, f"features[{i}]")
            if feature is None:
                continue
            label = f"features[{i}] (name {feature.get('name')!r})"
            if feature.get("archived") is True:
                self.warn(label, "archived in Unleash: not imported")
                continue
            gathered = _Feature(label, feature, False)
            if feature.get("variants") is not None:  # older exports kept variants on the feature
                gathered.variants = (f"{label}.variants", feature.get("variants"))
            by_name[str(feature.get("name"))] = gathered
            self.features.append(gathered)

        def owner(items: str, i: int, raw: object) -> tuple[str, Mapping[str, Any], _Feature] | None:
            item = self._mapping(raw, f"{items}[{i}]")
            if item is None:
                return None
            name = str(item.get("featureName", item.get("feature")))
            path = f"{items}[{i}] (feature {name!r})"
            if name not in by_name:
                self.warn(path, "names a feature the export does not hold (or an archived one): skipped")
                return None
            return path, item, by_name[name]

        strategies = self._list(data.get("featureStrategies"), "featureStrategies")
        ordered = sorted(
            enumerate(strategies),
            key=lambda pair: (pair[1].get("sortOrder") or 0) if isinstance(pair[1], Mapping) else 0,
        )
        for i, raw in ordered:
            if (found := owner("featureStrategies", i, raw)) is not None:
                path, strategy, target = found
                target.strategies.append((path, strategy))
        seen_environments: set[str] = set()
        configured: set[int] = set()
        for i, raw in enumerate(self._list(data.get("featureEnvironments"), "featureEnvironments")):
            if (found := owner("featureEnvironments", i, raw)) is not None:
                path, item, target = found
                configured.add(id(target))
                target.enabled = item.get("enabled") is True
                if isinstance(item.get("environment"), str):
                    seen_environments.add(item["environment"])
                if item.get("variants") is not None:
                    target.variants = (f"{path}.variants", item.get("variants"))
        if len(seen_environments) > 1:
            self.problem(
                "featureEnvironments",
                f"the export holds several environments ({', '.join(sorted(seen_environments))}): "
                "export one environment from Unleash at a time",
            )
        for i, raw in enumerate(self._list(data.get("dependencies"), "dependencies")):
            if (found := owner("dependencies", i, raw)) is not None:
                path, item, target = found
                target.dependencies += [
                    (f"{path}.dependencies[{j}]", d)
                    for j, d in enumerate(self._list(item.get("dependencies"), f"{path}.dependencies"))
                ]
        for i, raw in enumerate(self._list(data.get("featureTags"), "featureTags")):
            if (found := owner("featureTags", i, raw)) is not None:
                path, item, target = found
                target.tags.append((path, item.get("tagValue")))
        for i, raw in enumerate(self._list(data.get("segments"), "segments")):
            self._add_segment(raw, f"segments[{i}]")
        for each in self.features:
            if id(each) not in configured:
                self.warn(each.path, "no featureEnvironments entry: imported as disabled")

    # --- constraints ----------------------------------------------------------------------------

    def _constant(self, holds: bool, inverted: bool, attribute: str) -> dict[str, Any] | str:
        """A constraint whose operator answers `holds` whatever the context, then inverted."""
        return _ALWAYS if holds is not inverted else _never(attribute)

    def _constraint(self, raw: object, path: str) -> dict[str, Any] | str | None:
        """A constraint as a condition dict, _ALWAYS (it always holds), or None (a problem)."""
        constraint = self._mapping(raw, path)
        if constraint is None:
            return None
        name, operator = constraint.get("contextName"), constraint.get("operator")
        inverted = constraint.get("inverted") is True
        fold = constraint.get("caseInsensitive") is True
        if not isinstance(name, str) or not _ATTRIBUTE.fullmatch(name):
            self.problem(
                f"{path}.contextName",
                f"{name!r} is not a context field shipyard can hold (letters, digits, _ . $ -, ≤ 100)",
            )
            return None
        op = _OPERATORS.get(operator) if isinstance(operator, str) else None
        if op is None:
            self.warn(path, f"operator {operator!r} is unknown to Unleash's SDKs, which never match it")
            return _never(name)  # Unleash: an unknown operator is false, inverted or not
        condition: dict[str, Any] = {"attribute": name, "op": op}
        value: Any = constraint.get("value")
        values: list[str] = []
        if op in _VALUE_LISTS:
            raw_values = self._list(constraint.get("values"), f"{path}.values")
            if not all(isinstance(v, str) for v in raw_values):
                self.problem(f"{path}.values", "Unleash's constraint values are strings")
                return None
            # Unleash's SDKs drop empty values and trim the rest (IN_CIDR: only drop)
            values = [v if op == "in_cidr" else v.strip() for v in raw_values if v]
        if op in ("in", "not_in"):
            if fold:
                self.warn(path, "caseInsensitive on IN/NOT_IN is ignored by Unleash's SDKs, and here")
            condition["value"] = values
        elif op in ("contains", "starts_with", "ends_with"):
            if not values:
                return self._constant(False, inverted, name)
            condition.update(value=values, case_insensitive=fold)
        elif op == "in_cidr":
            networks = [v for v in values if parse_network(v) is not None]
            if len(networks) < len(values):
                bad = ", ".join(repr(v) for v in values if parse_network(v) is None)
                self.warn(path, f"{bad}: not an IP address or CIDR block, never matched (as in Unleash)")
            if not networks:
                return self._constant(False, inverted, name)
            condition["value"] = networks
        elif op in ("num_eq", "gt", "gte", "lt", "lte"):
            number = js_number(value) if type(value) in (str, int, float) else None
            if number is None:
                self.warn(path, f"{value!r} is not a number: Unleash's SDKs never match it")
                return self._constant(False, inverted, name)
            if math.isinf(number):
                self.problem(f"{path}.value", f"{value!r}: shipyard compares finite numbers only")
                return None
            condition["value"] = _number_value(number)
        elif op.startswith("semver_"):
            version = value.strip() if isinstance(value, str) else None
            if version is not None and version.startswith("v"):
                version = version[1:]  # node-semver reads v1.2.3 as 1.2.3
            if version is None or semver_key(version) is None:
                self.warn(path, f"{value!r} is not a semantic version: Unleash's SDKs never match it")
                return self._constant(False, inverted, name)
            condition["value"] = version
        elif op in ("before", "after"):
            moment = self._date(value, path)
            if moment is None:
                return None
            if moment == _UNREADABLE:  # an invalid Date: every comparison with it is false
                return self._constant(False, inverted, name)
            if name != "currentTime":
                self.warn(path, f"a date constraint on {name!r}: Unleash's SDKs compare currentTime")
            condition.update(attribute="currentTime", value=moment)
        else:  # matches
            if not isinstance(value, str):
                self.warn(path, "a REGEX constraint without a pattern: Unleash's SDKs never match it")
                return self._constant(False, inverted, name)
            pattern = expand_posix_classes(value)
            checked = check_regex(pattern)
            if checked.python is None:
                if checked.invalid_in_re2:
                    self.warn(path, f"pattern {value!r}: {checked.problem}; Unleash's SDKs never match it")
                    return self._constant(False, inverted, name)
                self.problem(f"{path}.value", f"pattern {value!r}: {checked.problem}")
                return None
            condition.update(value=pattern, case_insensitive=fold)
        if inverted:
            condition["inverted"] = True
        try:
            Condition.model_validate(condition)
        except ValidationError as exc:
            self.problem(path, "; ".join(e["msg"] for e in exc.errors()))
            return None
        return condition

    def _date(self, value: object, path: str) -> str | None:
        """An ISO date-time with a time zone; _UNREADABLE; or None (a problem) when in local time."""
        if not isinstance(value, str):
            return _UNREADABLE
        text = value.strip()
        if _DATE_ONLY.fullmatch(text):
            return f"{text}T00:00:00+00:00"  # JavaScript reads a bare date as UTC midnight
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.warn(path, f"{value!r} is not an ISO date-time: Unleash's SDKs never match it")
            return _UNREADABLE
        if moment.tzinfo is None:
            self.problem(
                f"{path}.value",
                f"{value!r} has no time zone: Unleash's SDKs read it in their own host's time zone; "
                "add Z or an offset",
            )
            return None
        return moment.isoformat()

    def _conditions(self, raws: list[Any], path: str) -> tuple[list[dict[str, Any]], bool]:
        """Conditions for a list of constraints, and whether all were read."""
        conditions, ok = [], True
        for i, raw in enumerate(raws):
            condition = self._constraint(raw, f"{path}[{i}]")
            if condition is None:
                ok = False
            elif condition != _ALWAYS:
                assert isinstance(condition, dict)
                conditions.append(condition)
        return conditions, ok

    # --- segments -------------------------------------------------------------------------------

    def _segments(self) -> list[dict[str, Any]]:
        used: set[str] = set()
        segments = []
        for seg_id, (path, raw) in self.raw_segments.items():
            wanted = _slug(raw["name"]) if isinstance(raw.get("name"), str) else ""
            name = wanted or f"segment-{seg_id}"
            if name in used:
                name = f"{name}-{seg_id}"
            used.add(name)
            self.segment_names[seg_id] = name
            if "constraints" not in raw:
                continue  # an admin export's segments carry no constraints: see _strategy_conditions
            conditions, ok = self._conditions(
                self._list(raw.get("constraints"), f"{path}.constraints"), f"{path}.constraints"
            )
            if not ok:
                continue
            if not conditions:
                self.segment_always.add(seg_id)
                conditions = [{"attribute": _FALLBACK_ATTRIBUTE, "op": "not_in", "value": []}]
            segment = {"name": name, "conditions": conditions}
            if isinstance(raw.get("description"), str):
                segment["description"] = raw["description"][:2000]
            segments.append(segment)
        return segments

    # --- strategies -----------------------------------------------------------------------------

    def _percent(self, value: object, path: str) -> int | None:
        number = js_number(value) if type(value) in (str, int, float) else None
        if number is None:
            self.problem(path, f"{value!r} is not a percentage")
            return None
        # Unleash: on when `percentage > 0 && bucket <= percentage`, buckets being 1..100.
        return 0 if number <= 0 else 100 if number >= 100 else math.floor(number)

    def _variants(self, raw: object, path: str) -> list[dict[str, Any]] | None:
        """Unleash variants as shipyard's split variants; None on a problem."""
        variants, ok = [], True
        for i, item in enumerate(self._list(raw, path)):
            vpath = f"{path}[{i}]"
            variant = self._mapping(item, vpath)
            if variant is None:
                ok = False
                continue
            weight = variant.get("weight", 0)
            if type(weight) is not int or weight < 0:
                self.problem(f"{vpath}.weight", f"{weight!r} is not a whole, non-negative weight")
                ok = False
                continue
            out: dict[str, Any] = {"name": variant.get("name"), "value": True, "weight": weight}
            if variant.get("payload") is not None:
                out["payload"] = variant["payload"]
            overrides = []
            for j, o in enumerate(self._list(variant.get("overrides"), f"{vpath}.overrides")):
                if isinstance(o, Mapping):
                    overrides.append({"attribute": o.get("contextName"), "values": o.get("values") or []})
                else:
                    self.problem(f"{vpath}.overrides[{j}]", "expected an object")
            if overrides:
                out["overrides"] = overrides
            variants.append(out)
        return variants if ok else None

    def _split(self, variants: list[dict[str, Any]], stickiness: object, group: str) -> dict[str, Any] | None:
        """A split for variants that can pick one (total weight > 0); None otherwise (no variant)."""
        if sum(v["weight"] for v in variants) <= 0:
            return None
        return {
            "variants": variants,
            "stickiness": stickiness if isinstance(stickiness, str) and stickiness else "default",
            "group_id": group,
            "fallback": "random",  # Unleash picks a random variant for a context without the id
        }

    def _strategy(
        self, raw: object, path: str, feature_name: str, feature_split: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        strategy = self._mapping(raw, path)
        if strategy is None:
            return None
        name = strategy.get("name")
        params = strategy.get("parameters") or {}
        if not isinstance(params, Mapping):
            self.problem(f"{path}.parameters", "expected an object")
            return None
        label = f"{path} ({name!r})"
        conditions, ok = self._conditions(
            self._list(strategy.get("constraints"), f"{path}.constraints"), f"{path}.constraints"
        )
        never = False
        for i, seg_id in enumerate(self._list(strategy.get("segments"), f"{path}.segments")):
            if seg_id not in self.raw_segments:
                self.warn(f"{path}.segments[{i}]", f"no segment {seg_id!r}: the strategy never matches")
                never = True
            elif "constraints" not in self.raw_segments[seg_id][1]:
                self.problem(
                    f"{path}.segments[{i}]",
                    f"segment {seg_id!r} comes without its constraints (Unleash's admin export leaves "
                    "them out): import the client API state (GET /api/client/features) instead",
                )
                ok = False
            elif seg_id not in self.segment_always:
                conditions.append({"op": "segment", "value": self.segment_names[seg_id]})
        rule: dict[str, Any] = {"value": True}
        if isinstance(strategy.get("title"), str) and strategy["title"]:
            rule["name"] = strategy["title"][:200]
        rollout: dict[str, Any] | None = None
        pct = f"{path}.parameters"
        if name == "default":
            pass
        elif name == "flexibleRollout":
            stickiness = params.get("stickiness") or "default"
            percent = self._percent(params.get("rollout"), f"{pct}.rollout")
            rollout = {"percent": percent, "stickiness": stickiness}
            if stickiness != "random":  # a random bucket has no group
                rollout["group_id"] = str(params.get("groupId") or "")  # Node: `groupId || ''`
            rollout["fallback"] = "random" if stickiness in ("default", "random") else "no_match"
        elif name in ("gradualRolloutUserId", "gradualRolloutSessionId"):
            stickiness = "userId" if name == "gradualRolloutUserId" else "sessionId"
            percent = self._percent(params.get("percentage"), f"{pct}.percentage")
            group = str(params.get("groupId") or "")
            rollout = {"percent": percent, "stickiness": stickiness, "group_id": group}
        elif name == "gradualRolloutRandom":
            percent = self._percent(params.get("percentage"), f"{pct}.percentage")
            rollout = {"percent": percent, "stickiness": "random", "fallback": "random"}
        elif name == "userWithId":
            ids = params.get("userIds")
            users = _LIST_SEPARATOR.split(ids) if isinstance(ids, str) and ids else []
            conditions.insert(0, {"attribute": "userId", "op": "in", "value": users})
        elif name == "remoteAddress":
            conditions.insert(0, self._remote_address(params.get("IPs"), f"{pct}.IPs"))
        elif name == "applicationHostname":
            hosts = params.get("hostNames")
            names = [h.lower() for h in _LIST_SEPARATOR.split(hosts)] if isinstance(hosts, str) else []
            conditions.insert(
                0, {"attribute": "hostname", "op": "in", "value": names, "case_insensitive": True}
            )
            self.warn(label, "applicationHostname: shipyard compares the context's `hostname` attribute")
        else:
            self.warn(label, f"strategy {name!r} is unknown to Unleash's SDKs (a custom one): never matches")
            never = True
        if not ok or (rollout is not None and rollout["percent"] is None):
            return None
        if never:
            rollout = {**(rollout or {}), "percent": 0}
        if rollout is not None and not 0 < rollout["percent"] < 100:
            rollout.pop("group_id", None)  # no bucket is hashed at 0 or 100 %: the group is moot
            if rollout["percent"] == 100 and rollout.get("fallback") == "random":
                rollout = None  # every context is in: the same rule without a rollout
        if conditions:
            rule["conditions"] = conditions
        if rollout is not None:
            rule["rollout"] = rollout
        split = self._strategy_split(strategy, params, path) or feature_split
        if split is not None:
            del rule["value"]
            rule["split"] = split
        try:
            Rule.model_validate(rule)
        except ValidationError as exc:
            self.problem(path, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
            return None
        return rule

    def _strategy_split(
        self, strategy: Mapping[str, Any], params: Mapping[str, Any], path: str
    ) -> dict[str, Any] | None:
        raw = strategy.get("variants")
        if not raw:
            return None
        variants = self._variants(raw, f"{path}.variants")
        if not variants:
            return None
        stickiness = _variants_stickiness(raw) or params.get("stickiness")
        # Node hashes `${parameters.groupId}:id`: a strategy without a groupId hashes "undefined:id".
        group = params.get("groupId")
        return self._split(variants, stickiness, "undefined" if group is None else str(group))

    def _remote_address(self, ips: object, path: str) -> dict[str, Any]:
        """Unleash's remoteAddress strategy: an exact address, or an IPv4 CIDR block (Address4)."""
        entries = [e for e in _LIST_SEPARATOR.split(ips) if e] if isinstance(ips, str) else []
        kept = []
        for entry in entries:
            network = parse_network(entry)
            if network is None:
                self.warn(path, f"{entry!r} is no IP address or CIDR block: never matched (as in Unleash)")
            elif network.version == 6 and "/" in entry:
                self.warn(path, f"{entry!r}: Unleash's remoteAddress strategy matches no IPv6 block")
            else:
                kept.append(entry)
        if not kept:
            return _never("remoteAddress")
        return {"attribute": "remoteAddress", "op": "in_cidr", "value": kept}

    # --- features -------------------------------------------------------------------------------

    def _feature(self, feature: _Feature) -> _Built | None:
        raw = feature.raw
        name = raw.get("name")
        if not isinstance(name, str) or not _FLAG_KEY.fullmatch(name):
            self.problem(
                f"{feature.path}.name",
                f"{name!r} is not a flag key shipyard can hold: 1–100 characters, no '/' and no "
                "control characters",
            )
            return None
        feature_split = None
        failed = False
        if feature.variants is not None:
            vpath, vraw = feature.variants
            variants = self._variants(vraw, vpath)
            if variants is None:
                failed = True  # carry on: every problem of the document is reported at once
            else:
                # Feature variants are hashed on the feature's name, sticky as its first variant says.
                feature_split = self._split(variants, _variants_stickiness(vraw), name)
        rules = []
        for spath, sraw in feature.strategies:
            if isinstance(sraw, Mapping) and sraw.get("disabled") is True:
                continue  # Unleash sends no disabled strategy to its SDKs
            rule = self._strategy(sraw, spath, name, feature_split)
            if rule is not None:
                rules.append(rule)
        if failed:
            return None
        environment: dict[str, Any] = {"enabled": feature.enabled}
        if rules == [{"value": True}]:  # one strategy that everyone passes: simply on
            rules = []
            environment["value"] = True
        elif not feature.strategies:
            if feature_split is not None:  # on, and a variant for everyone
                rules.append({"split": feature_split})
            else:
                environment["value"] = True  # Unleash: enabled without strategies is on
        if rules:
            environment["rules"] = rules
        flag: dict[str, Any] = {
            "key": name,
            "type": "boolean",
            "default_value": False,
            "environments": {self.environment: environment},
        }
        if isinstance(raw.get("description"), str) and raw["description"]:
            flag["description"] = raw["description"][:2000]
        kind = raw.get("type")
        if isinstance(kind, str) and kind in _KINDS:
            flag["kind"] = kind
        elif kind is not None:
            self.warn(feature.path, f"type {kind!r} has no shipyard kind: imported as a release flag")
        created = raw.get("createdAt")
        if isinstance(created, str):
            try:
                moment = datetime.fromisoformat(created)
                if moment.tzinfo is not None:
                    flag["created_at"] = moment.isoformat()
            except ValueError:
                pass
        tags = []
        for tpath, value in feature.tags:
            if isinstance(value, str) and _TAG.fullmatch(value) and value not in tags:
                tags.append(value)
            elif value not in tags:
                self.warn(tpath, f"tag {value!r} is not a shipyard tag (lowercase slug): not imported")
        if tags:
            flag["tags"] = tags
        names = {v["name"] for r in rules if "split" in r for v in r["split"]["variants"]}
        return _Built(feature, name, flag, {n for n in names if isinstance(n, str)})

    def _prerequisites(self, built: _Built, by_name: dict[str, _Built]) -> None:
        prerequisites = []
        environment = built.flag["environments"][self.environment]
        for dpath, raw in built.feature.dependencies:
            dependency = self._mapping(raw, dpath)
            if dependency is None:
                continue
            parent = dependency.get("feature")
            if not isinstance(parent, str):
                self.problem(f"{dpath}.feature", "a dependency names its parent feature")
                continue
            if parent not in by_name:
                self.warn(dpath, f"depends on {parent!r}, which does not exist: the feature is never on")
                environment["enabled"] = False
                continue
            enabled = dependency.get("enabled") is not False
            prerequisite: dict[str, Any] = {"flag": parent}
            if not enabled:
                prerequisite["enabled"] = False  # Unleash ignores the variants of a "disabled" dependency
            else:
                wanted = [v for v in self._list(dependency.get("variants"), f"{dpath}.variants")]
                served = by_name[parent].variant_names | {NO_VARIANT}
                kept = [v for v in wanted if v in served]
                if wanted and not kept:
                    self.warn(dpath, f"requires variants {wanted} that {parent!r} never serves: never on")
                    environment["enabled"] = False
                    continue
                if kept:
                    prerequisite["variants"] = kept
            prerequisites.append(prerequisite)
        if prerequisites:
            built.flag["prerequisites"] = prerequisites

    def _build(self) -> FlagSet | None:
        segments = self._segments()
        built = [b for f in self.features if (b := self._feature(f)) is not None]
        by_name = {b.name: b for b in built}
        for b in built:
            self._prerequisites(b, by_name)
        flags = []
        for b in built:
            try:
                flags.append(Flag.model_validate(b.flag))
            except ValidationError as exc:
                for e in exc.errors():
                    where = ".".join(map(str, e["loc"]))
                    self.problem(f"{b.feature.path}{'.' + where if where else ''}", e["msg"])
        seen: dict[str, str] = {}
        for b in built:
            if b.name in seen:
                self.problem(b.feature.path, f"a second feature named {b.name!r} (first: {seen[b.name]})")
            seen.setdefault(b.name, b.feature.path)
        if self.problems:
            return None
        try:
            return FlagSet(flags=flags, segments=[Segment.model_validate(s) for s in segments])
        except ValidationError as exc:
            for e in exc.errors():
                self.problem(".".join(map(str, e["loc"])), e["msg"])
            return None


def _variants_stickiness(raw: object) -> object:
    """The stickiness of a variant list: its first variant's (Unleash's rule), or None."""
    if isinstance(raw, list) and raw and isinstance(raw[0], Mapping):
        return raw[0].get("stickiness")
    return None
