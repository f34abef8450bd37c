"""Reading `shipyard.yaml`: YAML with positions, environment overlays, every error at once.

The file is parsed once into plain Python data plus a map from each field path to its line and
column. An environment is the base document deep-merged with its overlay (maps merge, anything
else replaces; `null` removes a key), and the merged positions point at whichever document the
value came from, so an error in an overlay names the overlay's line. Two exceptions to the merge:

- a map that is a set of schedules (`backup.schedules`, `dr.drills`) is replaced whole by the
  overlay's, so an environment says exactly what it runs: `schedules: {full: "0 3 * * *"}` runs
  only that, `schedules: {}` runs none (a `null` entry inside it is refused: leave it out);
- an overlay changes the services and datastores the base declares; one it names that the base
  does not have must be given whole (a service with its `role`, a datastore with its `kind`),
  else it is reported as unknown rather than as a half-made entity missing its required fields.

The input is bounded before it is trusted: a file of at most 10 MiB, and aliases counted as they
are composed, so that a few hundred bytes of aliases of aliases ("billion laughs") are refused at
the alias that crosses 100,000 values or 10 MiB of text instead of expanding to gigabytes.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer
from yaml.events import AliasEvent

from ..errors import SpecError, SpecIssue, UnknownEnvironmentError
from ._checks import check_stack
from ._model import Stack
from ._secrets import find_secret_values

DEFAULT_ENVIRONMENTS = ("dev", "staging", "production")
_ENV_NAME = re.compile(r"^[a-z][-a-z0-9]{0,20}$")
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|SecretRef|[a-z-]+\[.*\])$")
FieldPath = tuple[str | int, ...]
Positions = dict[FieldPath, tuple[int, int]]

MIB = 1024 * 1024
MAX_SPEC_BYTES = 10 * MIB
"""The largest spec file read. The examples are under 10 kB; the largest object rendered from
one may be 1 MiB, so 10 MiB leaves room for any real stack and none for a data dump."""
MAX_EXPANDED_NODES = 100_000
"""The most values (keys, scalars, lists and maps) a spec may hold once every alias is expanded:
about fifty times the largest example's."""
MAX_EXPANDED_BYTES = MAX_SPEC_BYTES
"""The most text a spec may hold once every alias is expanded: no more than a file may."""

# The overlay replaces these maps whole: each is a set of schedules, and a merge could only add.
_REPLACED: frozenset[FieldPath] = frozenset({("backup", "schedules"), ("dr", "drills")})
# An overlay may add an entity to these sections only whole: with the field that makes one.
_WHOLE = {"services": ("service", "role", "role, image, port"), "datastores": ("datastore", "kind", "kind")}


@dataclass(frozen=True)
class Spec:
    """A loaded, fully validated spec: the base document and one Stack per environment."""

    file: str
    environments: tuple[str, ...]
    _stacks: Mapping[str, Stack] = field(repr=False)

    def stack(self, environment: str) -> Stack:
        """The stack of one environment, overlay applied."""
        try:
            return self._stacks[environment]
        except KeyError:
            known = ", ".join(self.environments)
            hint = _did_you_mean(environment, self.environments)
            raise UnknownEnvironmentError(
                f"{self.file}: no environment {environment!r}{hint}; the spec defines: {known}"
            ) from None

    def stacks(self) -> Iterator[Stack]:
        for name in self.environments:
            yield self._stacks[name]


def load_spec(path: str | Path) -> Spec:
    """Load and validate a spec file; raise SpecError listing every problem."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)  # never the whole of a huge file
        if len(raw) > MAX_SPEC_BYTES:
            size = path.stat().st_size if path.is_file() else len(raw)
            raise SpecError([_too_big(str(path), size)])
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise SpecError(
            [SpecIssue(str(path), 0, 0, "", "no such file; create one with `shipyard init`")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecIssue(str(path), 0, 0, "", f"cannot read the file: {exc}")]) from None
    return load_spec_text(text, str(path))


def _too_big(file: str, size: int) -> SpecIssue:
    return SpecIssue(
        file,
        0,
        0,
        "",
        f"the file is {size / MIB:.1f} MiB; a spec may be at most {MAX_SPEC_BYTES // MIB} MiB: keep"
        " data (certificates, dashboards, seed data, large configuration) out of it, in a volume,"
        " an image or a Secret the spec refers to",
    )


def load_spec_text(text: str, file: str = "shipyard.yaml") -> Spec:
    """Load and validate a spec given as text; `file` is the name errors use."""
    if len(text) > MAX_SPEC_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError([_too_big(file, len(text.encode("utf-8", "surrogatepass")))])
    data, positions = _parse(text, file)
    issues: list[SpecIssue] = []

    def issue(path: FieldPath, message: str) -> None:
        line, column = _position(positions, path)
        issues.append(SpecIssue(file, line, column, _dotted(path), message))

    if not isinstance(data, dict):
        issue((), "the spec must be a mapping with at least `name:`; see `shipyard init`")
        raise SpecError(issues)
    secret_paths: list[FieldPath] = []
    for path, why in find_secret_values(data):
        issue(path, why)
        secret_paths.append(path[2:] if path[:1] == ("environments",) else path)

    overlays = data.pop("environments", None)
    if overlays is None:
        overlays = dict.fromkeys(DEFAULT_ENVIRONMENTS)
    if not isinstance(overlays, dict) or not overlays:
        issue(("environments",), "expected a mapping of environment name to overlay, e.g. {production: {}}")
        raise SpecError(issues)
    if "environment" in data:
        issue(
            ("environment",), "the environment is chosen with `-e`, not written in the file; remove this key"
        )
        data.pop("environment")

    stacks: dict[str, Stack] = {}
    for env_name, overlay in overlays.items():
        env_path: FieldPath = ("environments", env_name)
        if not _ENV_NAME.match(env_name):
            issue(
                env_path, "an environment name is lower-case letters, digits and '-', starting with a letter"
            )
            continue
        if overlay is not None and not isinstance(overlay, dict):
            issue(env_path, "expected a mapping of fields to override (or nothing)")
            continue
        for key in ("environments", "environment", "name"):
            if overlay and key in overlay:
                issue((*env_path, key), f"`{key}` cannot be overridden per environment")
        changes = _checked_overlay(data, overlay or {}, env_path, issue)
        merged = _merge(data, changes)
        merged["environment"] = env_name

        def where(loc: Iterable[str | int], env_path: FieldPath = env_path) -> tuple[int, int]:
            return _position(positions, loc, overlay=env_path)

        try:
            stack = Stack.model_validate(merged)
        except ValidationError as exc:
            seen: set[FieldPath] = set()
            for error in exc.errors():
                loc = _field_path(error["loc"])
                if loc in seen:  # one message per field, not one per member of a union
                    continue
                if any(loc[: len(secret)] == secret for secret in secret_paths):
                    continue  # already reported, and pydantic's message would quote the value
                seen.add(loc)
                line, column = where(loc)
                issues.append(SpecIssue(file, line, column, _dotted(loc), _explain(error, loc)))
            # Still run the cross-field checks on the parts that are valid, so that one pass
            # reports every problem: drop each broken entity and validate what is left.
            pruned, dropped = _without_broken(merged, [_field_path(e["loc"]) for e in exc.errors()])
            try:
                partial = Stack.model_validate(pruned)
            except ValidationError:
                continue
            for loc, message in check_stack(partial, assumed=dropped):
                line, column = where(loc)
                issues.append(SpecIssue(file, line, column, _dotted(loc), message))
            continue
        for loc, message in check_stack(stack):
            line, column = where(loc)
            issues.append(SpecIssue(file, line, column, _dotted(loc), message))
        stacks[env_name] = stack
    if issues:
        raise SpecError(issues)
    return Spec(file=file, environments=tuple(overlays), _stacks=stacks)


_NAMED_SECTIONS = {"services", "datastores", "notifications"}


def _checked_overlay(
    base: dict[str, Any],
    overlay: dict[str, Any],
    env_path: FieldPath,
    issue: Callable[[FieldPath, str], None],
) -> dict[str, Any]:
    """`overlay` without what it cannot mean, each reported: an entity the base does not declare
    given only in part, and a `null` entry in a map the overlay replaces whole."""
    env = env_path[-1]
    kept = dict(overlay)
    for section, (what, required, whole) in _WHOLE.items():
        entries, declared = overlay.get(section), base.get(section)
        if not isinstance(entries, dict):
            continue
        known = sorted(declared) if isinstance(declared, dict) else []
        unknown = [
            name
            for name, entry in entries.items()
            if name not in known and not (isinstance(entry, dict) and required in entry)
        ]
        for name in unknown:
            close = _closest(str(name), known)
            listed = f"known: {', '.join(known)}" if known else "the base declares none"
            issue(
                (*env_path, section, name),
                f"unknown {what} {name!r} in environments.{env}.{section}"
                f" ({f'did you mean {close!r}?; ' if close else ''}{listed}); an overlay changes the"
                f" {section} above, or adds one given whole ({whole})",
            )
        if unknown:
            kept[section] = {k: v for k, v in entries.items() if k not in unknown}
    for path in sorted(_REPLACED):
        replaced: Any = overlay
        for part in path:
            replaced = replaced.get(part) if isinstance(replaced, dict) else None
        if not isinstance(replaced, dict):
            continue
        for key in [k for k, v in replaced.items() if v is None]:
            issue(
                (*env_path, *path, key),
                f"in an overlay, {_dotted(path)} replaces the base's whole set: leave {key!r} out"
                f" rather than setting it to null (`{path[-1]}: {{}}` runs none)",
            )
            replaced.pop(key)
    return kept


def _without_broken(data: dict[str, Any], locs: list[FieldPath]) -> tuple[dict[str, Any], set[str]]:
    """`data` without each named entity (or top-level section) that has a schema error."""
    pruned = {key: (dict(value) if isinstance(value, dict) else value) for key, value in data.items()}
    dropped: set[str] = set()
    for loc in locs:
        if not loc:
            continue
        section = loc[0]
        if section in _NAMED_SECTIONS and len(loc) > 1 and isinstance(pruned.get(section), dict):
            pruned[section].pop(loc[1], None)
            dropped.add(str(loc[1]))
        elif section not in ("name",):
            pruned.pop(str(section), None)
    return pruned, dropped


# --- YAML with positions ----------------------------------------------------------------------


def _parse(text: str, file: str) -> tuple[Any, Positions]:
    """Parse with libyaml, compose with aliases counted, then read scalars by YAML 1.2's core schema.

    The node tree keeps every line and column. Resolving scalars ourselves gives YAML 1.2
    semantics (`on`, `no`, `y` stay strings: no Norway problem), as ruamel would, at libyaml's speed.
    """
    try:
        node = yaml.compose(text, Loader=_Loader)
    except _TooManyAliases as exc:
        raise SpecError([SpecIssue(file, exc.line, exc.column, "", exc.message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = (exc.problem or exc.context or "malformed YAML").strip()
        raise SpecError([SpecIssue(file, line, column, "", f"not valid YAML: {problem}")]) from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise SpecError([SpecIssue(file, 0, 0, "", f"not valid YAML: {type(exc).__name__}: {exc}")]) from None
    positions: Positions = {(): (1, 1)}
    if node is None:
        return None, positions
    try:
        return _Builder(file, positions).build(node, ()), positions
    except RecursionError:
        raise SpecError([SpecIssue(file, 0, 0, "", "the document nests too deeply")]) from None


class _TooManyAliases(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = mark.line + 1, mark.column + 1, message


_ParserLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(Composer, _ParserLoader):  # type: ignore[misc]
    """libyaml's parser under PyYAML's own composer (first in the MRO), which counts what each
    alias stands for as it composes: the node tree shares an aliased node, so composing is cheap,
    but building data from it copies the node once per alias, and aliases of aliases multiply.

    Each anchored node's size (values, characters of text) is recorded when it is complete; an
    alias adds that size to the running total of the expanded document, and the alias that takes
    it past a bound is refused, with its own line. Python's composer costs about 1 ms more than
    libyaml's on the largest example.
    """

    def __init__(self, stream: str) -> None:
        _ParserLoader.__init__(self, stream)
        Composer.__init__(self)
        self.expanded_nodes = 0
        self.expanded_bytes = 0
        self.sizes: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            # An alias of a node still being composed has no size yet: it is a cycle, refused
            # when the data is built.
            nodes, size = self.sizes.get(id(node), (1, 0))
            self.expanded_nodes += nodes
            self.expanded_bytes += size
            if self.expanded_nodes > MAX_EXPANDED_NODES or self.expanded_bytes > MAX_EXPANDED_BYTES:
                raise _TooManyAliases(
                    event.start_mark,
                    f"aliases expand the document too far: with this alias (*{event.anchor}) it"
                    f" holds {self.expanded_nodes:,} values and {self.expanded_bytes / MIB:.1f} MiB"
                    f" of text once every alias is expanded, and a spec may hold at most"
                    f" {MAX_EXPANDED_NODES:,} values and {MAX_EXPANDED_BYTES // MIB} MiB; aliases of"
                    " aliases multiply (a 'billion laughs'): alias smaller parts, or write them out",
                )
            return node
        nodes, size = self.expanded_nodes, self.expanded_bytes
        node = super().compose_node(parent, index)
        self.expanded_nodes += 1
        if isinstance(node, yaml.ScalarNode):
            self.expanded_bytes += len(node.value)
        if getattr(event, "anchor", None) is not None:
            self.sizes[id(node)] = (self.expanded_nodes - nodes, self.expanded_bytes - size)
        return node


_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULLS = {"", "~", "null", "Null", "NULL"}
_INT = re.compile(r"^[-+]?[0-9]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}


class _Builder:
    """Plain data from a composed node tree, recording where each field stands."""

    def __init__(self, file: str, positions: Positions) -> None:
        self.file = file
        self.positions = positions
        self.active: set[int] = set()  # nodes on the current path: an alias to one is a cycle

    def fail(self, node: yaml.Node, message: str) -> SpecError:
        mark = node.start_mark
        return SpecError([SpecIssue(self.file, mark.line + 1, mark.column + 1, "", message)])

    def build(self, node: yaml.Node, path: FieldPath) -> Any:
        if id(node) in self.active:
            raise self.fail(node, "not valid YAML for a spec: an alias refers to the node that contains it")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.positions[(*path, index)] = (item.start_mark.line + 1, item.start_mark.column + 1)
                    items.append(self.build(item, (*path, index)))
                return items
            assert isinstance(node, yaml.MappingNode)  # the composer makes only these three kinds
            return self.mapping(node, path)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise self.fail(source, "a merge (<<) takes a mapping or a list of mappings")
                    merged = {**self.build(source, path), **merged}
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "a key must be a plain value, not a list or mapping")
            key = str(self.scalar(key_node))
            if key in result:
                raise self.fail(key_node, f"the key {key!r} appears twice in the same mapping")
            self.positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, (*path, key))
        return {**merged, **result}

    @staticmethod
    def scalar(node: yaml.ScalarNode) -> Any:
        value = node.value
        # Quoted and block scalars, and what the resolver already called a string (or a tag
        # written by hand: !!binary, !custom), stay text: nothing is ever constructed from a tag.
        if node.style not in (None, "") or node.tag not in _RESOLVED_TAGS:
            return value
        if value in _NULLS:
            return None
        if value in _BOOLS:
            return _BOOLS[value]
        if _INT.match(value):
            return int(value)
        if _OCT.match(value):
            return int(value[2:], 8)
        if _HEX.match(value):
            return int(value[2:], 16)
        if _FLOAT.match(value):
            return float(value)
        if value.lower() in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value.lower()]
        return value  # e.g. `on`, `no`, `2024-01-01`: YAML 1.1 types, strings in YAML 1.2


# The tags libyaml's (YAML 1.1) resolver gives plain scalars that are not strings: re-read by 1.2.
_RESOLVED_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("int", "float", "bool", "null", "timestamp")}


def _merge(base: Any, overlay: Any, path: FieldPath = ()) -> Any:
    """Deep-merge `overlay` onto `base`: maps merge, anything else replaces, None removes a key;
    the maps of `_REPLACED` (sets of schedules) are replaced whole."""
    if not isinstance(base, dict) or not isinstance(overlay, dict) or path in _REPLACED:
        return overlay
    result = dict(base)
    for key, value in overlay.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(base[key], value, (*path, key)) if key in base else value
    return result


def _position(positions: Positions, path: Iterable[str | int], overlay: FieldPath = ()) -> tuple[int, int]:
    """Where the nearest field at or above `path` stands, the overlay's place before the base's.

    A value the overlay replaced has all of its fields in the overlay, and one it merged keeps
    the base's fields it did not name, so the deepest match, overlay first, is the right place.
    """
    parts = tuple(path)
    while parts:
        if overlay and (*overlay, *parts) in positions:
            return positions[(*overlay, *parts)]
        if parts in positions:
            return positions[parts]
        parts = parts[:-1]
    return positions.get((), (0, 0))


def _field_path(loc: Iterable[str | int]) -> FieldPath:
    """Drop the union members' tags pydantic puts in a location, keeping only the spec's keys."""
    parts = tuple(loc)
    kept: list[str | int] = []
    for index, part in enumerate(parts):
        is_datastore_kind = index == 2 and parts[0] == "datastores" and part in ("postgresql", "redis")
        if is_datastore_kind or (isinstance(part, str) and index > 1 and _UNION_TAG.match(part)):
            continue
        kept.append(part)
    return tuple(kept)


def _dotted(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --- explaining pydantic's errors -------------------------------------------------------------


def _explain(error: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields_at(loc[:-1])
        hint = _did_you_mean(key, allowed)
        known = f"; known keys: {', '.join(sorted(allowed))}" if allowed and not hint else ""
        return f"unknown key {key!r}{hint}{known}"
    if kind == "missing":
        return "this field is required"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    elif kind in {"string_pattern_mismatch"}:
        pattern = error.get("ctx", {}).get("pattern", "")
        message = f"{error.get('input')!r} does not match the expected form {pattern}"
    elif kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        message = f"unknown kind {error.get('ctx', {}).get('tag')!r}; expected one of {tags}"
    elif kind == "union_tag_not_found":
        message = "give `kind:` (postgresql or redis)"
    return message[0].lower() + message[1:] if message else kind


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = _closest(word, candidates)
    return f" (did you mean {close!r}?)" if close else ""


def _closest(word: str, candidates: Iterable[str]) -> str | None:
    options = list(candidates)
    close = [c for c in options if word and c.startswith(word)] or difflib.get_close_matches(
        word, options, n=1, cutoff=0.6
    )
    return close[0] if close else None


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at `loc`, walking the Stack model's annotations."""
    models: list[Any] = [Stack]
    for part in loc:
        next_models: list[Any] = []
        for model in models:
            next_models += _child_types(model, part)
        models = next_models
    names: set[str] = set()
    for model in models:
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, info in model.model_fields.items():
                names.add(info.alias or name)
    return sorted(names)


def _child_types(annotation: Any, part: Any) -> list[Any]:
    """The types that stand at `part` below a value of type `annotation`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            if part in (name, info.alias):
                return _unwrap(info.annotation)
        return []
    origin = get_origin(annotation)
    if origin is dict:
        return _unwrap(get_args(annotation)[1])
    if origin is list:
        return _unwrap(get_args(annotation)[0])
    # pydantic puts the discriminator's tag (or a union member's name) in the loc: pass through.
    return [annotation] if isinstance(part, str) else []


def _unwrap(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    origin = get_origin(annotation)
    if origin is None:
        return [annotation]
    if origin in (dict, list):
        return [annotation]
    result: list[Any] = []
    for arg in args:
        if not isinstance(arg, type) or issubclass(arg, BaseModel) or get_origin(arg) is not None:
            result += _unwrap(arg) if get_origin(arg) is not None else [arg]
    return result
