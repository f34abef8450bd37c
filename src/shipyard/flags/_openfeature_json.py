"""The OpenFeature CLI's flag manifest (`flags.json`), both ways: what "openfeature-json" means.

The manifest (https://github.com/open-feature/cli, schema `schema/v0/flag_manifest.json`) lists
each flag's `flagType` (boolean, string, integer, float, object), `defaultValue` and
`description`; `openfeature generate` turns it into typed flag accessors for TypeScript, Go,
Python, … so an app's code names only flags that exist, with their types. OpenFeature has no
standard document for targeting (flagd's is one vendor's format, exported `--to flagd`), so the
manifest is the OpenFeature document a flag set can be exported to.

It holds no environments, rules, segments or prerequisites: an export warns, flag by flag, about
what it leaves out, and an import describes only each flag's type, default and description (an
existing flag keeps its environments and the rest). A `number` flag is `integer` when its default is
an integer, else `float`; a `json` flag is `object`.
"""

from __future__ import annotations

from typing import Any

from ..spec.flags import FlagSet
from ._conversion import Exported, Imported, Problems, flagset_from_data

__all__ = ["SCHEMA", "export_manifest", "import_manifest"]

SCHEMA = "https://raw.githubusercontent.com/open-feature/cli/refs/heads/main/schema/v0/flag_manifest.json"
_TYPES = {"boolean": "boolean", "string": "string", "integer": "number", "float": "number", "object": "json"}
_FIELDS = frozenset({"type", "default_value", "description"})
_CHECKS = {
    "boolean": lambda v: type(v) is bool,
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "float": lambda v: type(v) in (int, float),
    "object": lambda v: v is not None,
}


def _flag_type(flag_type: str, default: Any) -> str:
    if flag_type == "number":
        return "integer" if type(default) is int else "float"
    return "object" if flag_type == "json" else flag_type


def export_manifest(flagset: FlagSet, environment: str | None = None) -> Exported:
    """Every flag's type, default and description (the manifest holds no environment)."""
    flags: dict[str, Any] = {}
    warnings = []
    for flag in flagset.to_data().get("flags", []):
        entry: dict[str, Any] = {
            "flagType": _flag_type(flag.get("type", "boolean"), flag["default_value"]),
            "defaultValue": flag["default_value"],
        }
        if flag.get("description"):
            entry["description"] = flag["description"]
        flags[flag["key"]] = entry
        left_out = sorted(set(flag) - _FIELDS - {"key"})
        if left_out:
            warnings.append(f"flags.{flag['key']}: {', '.join(left_out)} not in a flag manifest")
    if flagset.segments:
        names = ", ".join(s.name for s in flagset.segments)
        warnings.append(f"segments {names}: not in a flag manifest")
    return Exported({"$schema": SCHEMA, "flags": flags}, warnings)


def import_manifest(data: object, environment: str | None = None) -> Imported:
    """A flag manifest's flags (type, default, description); InvalidObjectError names every bad entry."""
    problems = Problems()
    flags = data.get("flags") if type(data) is dict else None
    if type(flags) is not dict:
        problems.add("flags", "a flag manifest is a mapping with 'flags': {key: {flagType, defaultValue}}")
        problems.check("not an OpenFeature flag manifest")
        flags = {}
    warnings = []
    converted = []
    for key, entry in flags.items():
        path = f"flags.{key}"
        if type(entry) is not dict:
            problems.add(path, "a flag is a mapping with flagType, defaultValue and description")
            continue
        flag_type = entry.get("flagType")
        if flag_type not in _TYPES:
            problems.add(f"{path}.flagType", f"{flag_type!r}: use one of {', '.join(_TYPES)}")
            continue
        default = entry.get("defaultValue")
        if not _CHECKS[flag_type](default):
            problems.add(f"{path}.defaultValue", f"{default!r} is not a {flag_type} value")
            continue
        extra = sorted(set(entry) - {"flagType", "defaultValue", "description"})
        if extra:
            warnings.append(f"{path}: {', '.join(extra)} not imported (shipyard has no place for it)")
        flag: dict[str, Any] = {"key": key, "type": _TYPES[flag_type], "default_value": default}
        if "description" in entry:
            flag["description"] = entry["description"]
        converted.append(flag)
    problems.check("the flag manifest has entries shipyard cannot read")
    flagset = flagset_from_data({"flags": converted}, "the flag manifest, converted, is not a valid flag set")
    return Imported(flagset, warnings, environments=frozenset(), fields=_FIELDS)
