"""Offline validation of rendered objects against Kubernetes' strict JSON schemas.

The schemas are the ones PyPI `kubernetes-validate` ships (one file per kind and API version, all
pointing into a shared `_definitions.json`). `kubernetes_validate.validate()` reloads both files on
every call; here each version's definitions are loaded once and each kind's schema is compiled
once. References are inlined (and descriptions dropped) when a schema is compiled, because
resolving a `$ref` through `referencing` on every node is a large part of jsonschema's cost; the
one recursive definition (CRD schemas) keeps its `$ref` and resolves through the registry.

The other large part is jsonschema descending into every leaf (a string, a number) with a new
validator. `_Validator` is Draft 2020-12 with four keywords taught to skip that descent for a leaf
schema (only `type`, `enum`, `format`) that the value certainly satisfies; anything else, and every
failure, goes through jsonschema's own code, so the verdict and the messages are jsonschema's.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import jsonschema
from jsonschema import _keywords
from referencing import Registry, Resource

from ..errors import RenderError
from ._argo_checks import check_argo_objects
from ._crds import CEL_KEYWORD, MAP_KEYS_KEYWORD, cel_rules, custom_resource, map_keys, strict_schema

DEFAULT_KUBE_VERSION = "1.33"
_DEFINITIONS_URI = "https://kubernetes.io/api/_definitions.json"
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
_SCHEMA_ONE = frozenset(
    {"items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"}
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_MAX_REMEMBERED = 100_000
_LEAF_KEYWORDS = frozenset({"type", "enum", "format"})
_MAX_ERRORS = 5
_lock = threading.Lock()


def _schema_root() -> Traversable:
    return resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")


@functools.cache
def supported_versions() -> tuple[str, ...]:
    """The Kubernetes minor versions whose schemas are available, oldest first."""
    found = []
    for entry in _schema_root().iterdir():
        match = re.fullmatch(r"v(\d+\.\d+)\.\d+-local-strict", entry.name)
        if match:
            found.append(match[1])
    return tuple(sorted(found, key=_minor_key))


def _minor_key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def schema_version(kube_version: str) -> str:
    """The schema set to use for `kube_version` ('1.33', 'v1.33.2'): its minor, if shipped.

    An older schema set never stands in for a newer cluster silently, nor the reverse.
    """
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", kube_version.strip())
    if not match:
        raise RenderError(f"{kube_version!r} is not a Kubernetes version; write e.g. 1.33")
    wanted = f"{int(match[1])}.{int(match[2])}"
    known = supported_versions()
    if wanted not in known:
        raise RenderError(f"no Kubernetes schemas for version {wanted}; available: {known[0]} to {known[-1]}")
    return wanted


# The JSON types a Python value has under jsonschema's default type checker (a float is also an
# integer when it is integral; bool is not a number). A value of any other Python type is unsure.
_JSON_TYPES: dict[type, frozenset[str]] = {
    str: frozenset({"string"}),
    bool: frozenset({"boolean"}),
    int: frozenset({"integer", "number"}),
    type(None): frozenset({"null"}),
    dict: frozenset({"object"}),
    list: frozenset({"array"}),
}
_INTEGRAL_FLOAT = frozenset({"integer", "number"})
_FLOAT = frozenset({"number"})


@dataclass(frozen=True)
class _Leaf:
    """A leaf schema, digested once: the JSON types it admits and its string enum."""

    schema: dict[str, Any]
    types: frozenset[str] | None
    enum: frozenset[str] | None
    enum_given: bool


_leaves: dict[int, tuple[Any, _Leaf | None]] = {}


def _leaf(schema: Any) -> _Leaf | None:
    """`schema` digested if it is a leaf schema (only `type`, `enum`, `format`), else None."""
    cached = _leaves.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    digest: _Leaf | None = None
    if isinstance(schema, dict) and all(
        key in _LEAF_KEYWORDS or key.startswith("x-kubernetes-") for key in schema
    ):
        types = schema.get("type")
        enum = schema.get("enum")
        digest = _Leaf(
            schema=schema,
            types=None if types is None else frozenset([types] if isinstance(types, str) else types),
            enum=frozenset(enum) if enum is not None and all(type(v) is str for v in enum) else None,
            enum_given=enum is not None,
        )
    # Keyed by id for speed (schemas are unhashable dicts); the schema is kept with its digest,
    # so an id reused by another object is recognised above.
    _leaves[id(schema)] = (schema, digest)
    return digest


def _leaf_verdict(schema: Any, value: Any) -> bool | None:
    """Whether `value` satisfies a leaf `schema`: True, False, or None when not sure.

    Sure only for schemas made of `type` (jsonschema's default type semantics), `enum` of strings
    for a string value, and `format` (an annotation in Draft 2020-12 unless a format checker is
    given, and none is); `x-kubernetes-*` keys are annotations too.
    """
    leaf = _leaf(schema)
    if leaf is None:
        return None
    if leaf.types is not None:
        kind = type(value)
        if kind is float:
            admitted = _INTEGRAL_FLOAT if value.is_integer() else _FLOAT
        else:
            found = _JSON_TYPES.get(kind)
            if found is None:
                return None
            admitted = found
        if leaf.types.isdisjoint(admitted):
            return False
    if leaf.enum_given:
        if leaf.enum is None or type(value) is not str:  # == equates True and 1; jsonschema not
            return None
        if value not in leaf.enum:
            return False
    return True


def _properties(validator: Any, properties: Any, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for name, subschema in properties.items():
        if name in instance and _leaf_verdict(subschema, instance[name]) is not True:
            yield from validator.descend(instance[name], subschema, path=name, schema_path=name)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Any:
    if isinstance(additional, dict) and isinstance(instance, dict) and "patternProperties" not in schema:
        known = schema.get("properties", {})
        if all(key in known or _leaf_verdict(additional, value) is True for key, value in instance.items()):
            return
    yield from _keywords.additionalProperties(validator, additional, instance, schema)


def _items(validator: Any, items: Any, instance: Any, schema: Any) -> Any:
    if not isinstance(items, dict) or "prefixItems" in schema or not isinstance(instance, list):
        yield from _keywords.items(validator, items, instance, schema)
        return
    for index, item in enumerate(instance):
        if _leaf_verdict(items, item) is not True:
            yield from validator.descend(instance=item, schema=items, path=index)


def _one_of(validator: Any, one_of: Any, instance: Any, schema: Any) -> Any:
    verdicts = [_leaf_verdict(branch, instance) for branch in one_of]
    if None in verdicts or verdicts.count(True) != 1:
        yield from _keywords.oneOf(validator, one_of, instance, schema)


_Validator: Any = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={
        "properties": _properties,
        "additionalProperties": _additional_properties,
        "items": _items,
        "oneOf": _one_of,
        CEL_KEYWORD: cel_rules,
        MAP_KEYS_KEYWORD: map_keys,
    },
)


class _SchemaSet:
    """The compiled validators of one Kubernetes version, built on first use of each kind."""

    def __init__(self, version: str) -> None:
        folder = _schema_root().joinpath(f"v{version}.0-local-strict")
        self._folder = folder
        definitions = json.loads(folder.joinpath("_definitions.json").read_text("utf-8"))
        self._definitions: dict[str, Any] = definitions["$defs"]
        self._registry: Registry[Any] = Registry().with_resource(
            _DEFINITIONS_URI, Resource.from_contents(definitions)
        )
        self._inlined: dict[str, dict[str, Any] | None] = {}
        self._validators: dict[tuple[str, str], Any] = {}
        self._valid: set[str] = set()
        # Environments render the same object into different namespaces. When the schemas let
        # any string be a namespace, the namespace cannot decide validity, so an object already
        # found valid in one namespace need not be checked again in another.
        namespace = self._definitions[_OBJECT_META]["properties"]["namespace"]
        self._namespace_is_free = set(namespace) <= {"type", "description"} and "string" in namespace["type"]

    def known_valid(self, obj: Mapping[str, Any]) -> tuple[bool, str]:
        """Whether an equal object was found valid before, and the key to remember it by.

        The key is the object's repr, which tells True from 1 and a tuple from a list as the
        schemas do; an equal object built in another order merely misses the cache.
        """
        meta = obj.get("metadata")
        if self._namespace_is_free and isinstance(meta, dict) and type(meta.get("namespace")) is str:
            obj = {**obj, "metadata": {**meta, "namespace": ""}}
        key = repr(obj)
        return key in self._valid, key

    def remember_valid(self, key: str) -> None:
        if len(self._valid) >= _MAX_REMEMBERED:
            self._valid.clear()
        self._valid.add(key)

    def validator(self, kind: str, api_version: str) -> Any:
        key = (kind, api_version)
        if key not in self._validators:
            self._validators[key] = self._compile(kind, api_version)
        return self._validators[key]

    def _compile(self, kind: str, api_version: str) -> Any:
        custom = custom_resource(kind, api_version)
        if custom is not None:
            schema = strict_schema(custom, api_version, self._definition(_OBJECT_META))
            return _Validator(schema, registry=self._registry)
        # rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1 (kubernetes-validate's file naming)
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        path = self._folder.joinpath(f"{kind.lower()}-{group_version}.json")
        if not path.is_file():
            return None
        schema = json.loads(path.read_text("utf-8"))
        return _Validator(self._inline(schema), registry=self._registry)

    def _inline(self, node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return self._definition(str(node["$ref"]).rsplit("/", 1)[1])
        result: dict[str, Any] = {}
        for key, value in node.items():
            if key == "description":
                continue
            if key in _SCHEMA_MAPS:
                result[key] = {name: self._inline(child) for name, child in value.items()}
            elif key in _SCHEMA_ONE:
                result[key] = self._inline(value)
            elif key in _SCHEMA_LISTS:
                result[key] = [self._inline(child) for child in value]
            else:
                result[key] = value
        return result

    def _definition(self, name: str) -> dict[str, Any]:
        if name in self._inlined:
            done = self._inlined[name]
            # None marks a definition being inlined: a cycle, left to the registry to resolve.
            return done if done is not None else {"$ref": f"{_DEFINITIONS_URI}#/$defs/{name}"}
        self._inlined[name] = None
        inlined: dict[str, Any] = self._inline(self._definitions[name])
        self._inlined[name] = inlined
        return inlined


@functools.cache
def _schema_set(version: str) -> _SchemaSet:
    return _SchemaSet(version)


def validate_objects(
    objects: Iterable[Mapping[str, Any]], *, kube_version: str = DEFAULT_KUBE_VERSION
) -> None:
    """Check every object against its strict schema; raise RenderError naming the first bad one.

    The message names the object (kind/name), the field path and what is wrong, for up to a few
    problems of that object.
    """
    with _lock:  # the lazily built caches are not safe to fill from two threads at once
        schemas = _schema_set(schema_version(kube_version))
        for obj in objects:
            kind = str(obj.get("kind", "?"))
            api_version = str(obj.get("apiVersion", "?"))
            meta = obj.get("metadata")
            name = str(meta.get("name", "?")) if isinstance(meta, dict) else "?"
            validator = schemas.validator(kind, api_version)
            if validator is None:
                raise RenderError(
                    f"{kind}/{name}: no schema for {kind} {api_version} in Kubernetes {kube_version}"
                )
            seen, key = schemas.known_valid(obj)
            if seen:
                continue
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
            if not errors:
                # The API server would store it; Argo's controller may still refuse a Rollout.
                check_argo_objects([obj])
                schemas.remember_valid(key)
            else:
                problems = [f"{_field_path(e.absolute_path)}: {e.message}" for e in errors]
                shown = "; ".join(problems[:_MAX_ERRORS])
                more = f" (and {len(problems) - _MAX_ERRORS} more)" if len(problems) > _MAX_ERRORS else ""
                raise RenderError(
                    f"{kind}/{name} is not a valid {kind} for Kubernetes {kube_version}: {shown}{more}"
                )


def _field_path(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the object)"
