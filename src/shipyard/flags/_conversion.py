"""What every flag format converter shares: the result of an import or an export, the one error
that names every construct a conversion cannot carry, and the merge of an import that describes
only part of each flag (one environment, or only the type and default) into the flags there now.

A conversion is all or nothing: a converter collects every problem (`Problems`) and raises them
together, so that the user fixes the whole file in one pass rather than one error at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..errors import InvalidObjectError
from ..spec.flags import Flag, FlagSet

__all__ = ["Exported", "Imported", "Problems", "flagset_from_data", "merge_import"]


class Problems:
    """Every (path, message) a conversion found; `check` raises them all as one error."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def check(self, message: str) -> None:
        if self.items:
            raise InvalidObjectError(message, list(self.items))


def flagset_from_data(data: object, message: str = "the flag set is not valid") -> FlagSet:
    """A FlagSet from its dict form; every validation problem in one InvalidObjectError."""
    try:
        return FlagSet.from_data(data)
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in e["loc"]), str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors()
        ]
        raise InvalidObjectError(message, problems) from None


@dataclass(frozen=True)
class Imported:
    """A flag set read from another format, and how much of each flag that format describes."""

    flagset: FlagSet
    warnings: list[str] = field(default_factory=list)
    """What was read but has no place in shipyard's model (nothing that changes an evaluation)."""
    environments: frozenset[str] | None = None
    """The environments the source describes; None: every one (a whole flag, shipyard's format).
    An existing flag keeps its other environments."""
    fields: frozenset[str] | None = None
    """The flag fields (besides `environments`) the source describes; None: all of them. An
    existing flag keeps its other fields (a flag manifest holds only type, default and description)."""


@dataclass(frozen=True)
class Exported:
    """A document in another format, and what of the flag set it leaves out (one line each)."""

    document: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _dump(flag: Flag) -> dict[str, Any]:
    return flag.model_dump(mode="json", exclude_defaults=True)


def _merged_flag(before: dict[str, Any], new: dict[str, Any], imported: Imported) -> dict[str, Any]:
    merged = dict(new) if imported.fields is None else dict(before)
    if imported.fields is not None:
        for name in imported.fields:
            if name in new:
                merged[name] = new[name]
            else:  # left out of the dump: the field's default
                merged.pop(name, None)
    environments = dict(before.get("environments", {}))
    for name in imported.environments or ():
        environments.pop(name, None)
    environments.update(new.get("environments", {}))
    merged["environments"] = environments
    return merged


def _references(flags: Iterable[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """The flags (prerequisites) and segments (conditions) that `flags` refer to."""
    keys: set[str] = set()
    segments: set[str] = set()
    for flag in flags:
        keys |= {p["flag"] for p in flag.get("prerequisites", [])}
        for env in flag.get("environments", {}).values():
            for rule in env.get("rules", []):
                segments |= {c["value"] for c in rule.get("conditions", []) if c["op"] == "segment"}
    return keys, segments


def merge_import(current: FlagSet, imported: Imported) -> FlagSet:
    """The set to write for `imported`: its flags, each merged into the flag of the same key in
    `current` for what the source does not describe, plus the flags and segments of `current` they
    refer to (so the set is whole; unchanged ones are not written again).

    A source that describes whole flags (shipyard's own format) is written as it is.
    """
    if imported.environments is None and imported.fields is None:
        return imported.flagset
    before = {f.key: _dump(f) for f in current.flags}
    flags = {
        f.key: _merged_flag(before[f.key], _dump(f), imported) if f.key in before else _dump(f)
        for f in imported.flagset.flags
    }
    segments = {s.name: s.model_dump(mode="json", exclude_defaults=True) for s in imported.flagset.segments}
    current_segments = {s.name: s.model_dump(mode="json", exclude_defaults=True) for s in current.segments}
    # Close over what the merged flags refer to (prerequisites of prerequisites, segments in
    # segments): the set is validated whole, and these are written only if they changed (they don't).
    pending = list(flags.values())
    names: set[str] = set()
    while pending:
        keys, used = _references(pending)
        names |= used
        pending = [before[k] for k in sorted(keys) if k not in flags and k in before]
        flags.update({f["key"]: f for f in pending})
    names |= {c["value"] for s in segments.values() for c in s["conditions"] if c["op"] == "segment"}
    while names:
        name = names.pop()
        if name in segments or name not in current_segments:
            continue
        segments[name] = current_segments[name]
        names |= {c["value"] for c in segments[name]["conditions"] if c["op"] == "segment"}
    return flagset_from_data(
        {"flags": list(flags.values()), "segments": list(segments.values())},
        "the imported flags, merged into the flags there now, are not valid",
    )
