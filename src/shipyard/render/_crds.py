"""The CustomResourceDefinitions of the operators shipyard renders for, as strict validators.

`render/crds/*.json` holds, for each CRD of `../shared/crds/` (their source and commit are in
`render/crds/README.md`), its group, kind, plural, scope and the `openAPIV3Schema` of every
served version, with descriptions dropped (`packaged_form`; `scripts/vendor_crds.py` writes them,
and tests/unit/render/test_crds.py checks they still equal what the shared files give).

`strict_schema` turns a structural schema into a JSON Schema that refuses what an API server with
strict field validation (`kubectl apply --validate=strict`, server-side apply's default) refuses:

- an unknown field, wherever the schema does not say `x-kubernetes-preserve-unknown-fields`
  (the API server would report it; without strict validation it would silently prune it);
- a value of the wrong type; `x-kubernetes-int-or-string` admits an integer or a string;
- `null` where the schema is not `nullable` (the API server prunes such a null; nothing rendered
  should carry one, so it is refused here: stricter than a cluster);
- duplicates in a `x-kubernetes-list-type: set` list, and two items of a `map` list with the same
  `x-kubernetes-list-map-keys`;
- an `x-kubernetes-validations` CEL rule that does not hold, evaluated with cel-python. Transition
  rules (those that read `oldSelf`) only run on an update, so they are not run here: a create
  never runs them either.
- `metadata` is checked as Kubernetes' own ObjectMeta of the target version; a cluster-scoped
  object has no namespace.

What a cluster would still check that this does not: admission webhooks (cert-manager's,
CloudNativePG's, Argo CD's) and the CEL functions of Kubernetes' own libraries (`quantity()`,
`isURL()`, regex extensions), which none of these CRDs' rules use.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError
from jsonschema.exceptions import ValidationError

CEL_KEYWORD = "x-shipyard-cel"
MAP_KEYS_KEYWORD = "x-shipyard-map-keys"
_DROPPED = frozenset({"description", "example"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})


@dataclass(frozen=True)
class CustomResource:
    """One kind a CRD defines: what its API paths and its validator need."""

    group: str
    kind: str
    plural: str
    namespaced: bool
    versions: Mapping[str, dict[str, Any]]
    """The structural schema (`openAPIV3Schema`) of each served version."""
    source: str
    """The CRD's file name under `../shared/crds/`."""


def packaged_form(crd: Mapping[str, Any], source: str) -> dict[str, Any]:
    """What `render/crds/` keeps of one CRD document: names, scope, served versions' schemas."""
    spec = crd["spec"]
    return {
        "source": source,
        "group": spec["group"],
        "kind": spec["names"]["kind"],
        "plural": spec["names"]["plural"],
        "scope": spec["scope"],
        "versions": {
            version["name"]: _without_descriptions(version["schema"]["openAPIV3Schema"])
            for version in spec["versions"]
            if version.get("served", False)
        },
    }


def _without_descriptions(schema: Any) -> Any:
    """A schema node without its `description` annotations; a property that is *named*
    `description` (an AppProject's `spec.description`) stays."""
    if isinstance(schema, list):
        return [_without_descriptions(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in ("properties", "patternProperties", "definitions"):
            result[key] = {name: _without_descriptions(child) for name, child in value.items()}
        elif key in ("enum", "default", "example", "x-kubernetes-validations", "required"):
            result[key] = value
        else:
            result[key] = _without_descriptions(value)
    return result


@functools.cache
def custom_resources() -> dict[tuple[str, str], CustomResource]:
    """Every packaged kind by (kind, apiVersion), e.g. ("Cluster", "postgresql.cnpg.io/v1")."""
    found: dict[tuple[str, str], CustomResource] = {}
    for entry in resources.files("shipyard.render").joinpath("crds").iterdir():
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text("utf-8"))
        resource = CustomResource(
            group=data["group"],
            kind=data["kind"],
            plural=data["plural"],
            namespaced=data["scope"] == "Namespaced",
            versions=data["versions"],
            source=data["source"],
        )
        for version in resource.versions:
            found[(resource.kind, f"{resource.group}/{version}")] = resource
    return found


def custom_resource(kind: str, api_version: str) -> CustomResource | None:
    return custom_resources().get((kind, api_version))


def strict_schema(resource: CustomResource, api_version: str, object_meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema an object of `resource` at `api_version` must satisfy (see the module)."""
    version = api_version.rsplit("/", 1)[1]
    root = _strict(resource.versions[version])
    meta = dict(object_meta)
    meta["required"] = sorted({*meta.get("required", []), "name"})
    if not resource.namespaced:
        meta["not"] = {"required": ["namespace"]}
    root["properties"] = {
        **root.get("properties", {}),
        "apiVersion": {"const": api_version},
        "kind": {"const": resource.kind},
        "metadata": meta,
    }
    root["required"] = sorted({*root.get("required", []), "apiVersion", "kind", "metadata"})
    root["additionalProperties"] = False
    return root


def _strict(node: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key in _SCHEMA_MAPS:
            result[key] = {name: _strict(child) for name, child in value.items()}
        elif key in _SCHEMA_LISTS:
            result[key] = [_strict(child) for child in value]
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            result[key] = _strict(value)
        else:
            result[key] = value
    if node.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [*result.get("anyOf", []), {"type": "integer"}, {"type": "string"}]
    is_object = node.get("type") == "object"
    if is_object and not node.get("x-kubernetes-preserve-unknown-fields"):
        if node.get("x-kubernetes-embedded-resource"):
            # An embedded object always has its type meta and metadata, whatever the schema lists.
            embedded = {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
            }
            result["properties"] = {**embedded, **result.get("properties", {})}
        if "additionalProperties" not in node:
            result["additionalProperties"] = False
    if node.get("nullable"):
        kind = result.get("type")
        if isinstance(kind, str):
            result["type"] = [kind, "null"]
        if "enum" in result and None not in result["enum"]:
            result["enum"] = [*result["enum"], None]
        if "anyOf" in result:
            result["anyOf"] = [*result["anyOf"], {"type": "null"}]
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        result["uniqueItems"] = True
    elif list_type == "map":
        result[MAP_KEYS_KEYWORD] = list(node.get("x-kubernetes-list-map-keys", []))
    rules = [rule for rule in node.get("x-kubernetes-validations", []) if "oldSelf" not in rule["rule"]]
    if rules:
        result[CEL_KEYWORD] = rules
    return result


@functools.cache
def _program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def cel_rules(validator: Any, rules: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """jsonschema keyword: each CEL rule of `x-kubernetes-validations` holds for `instance`."""
    for rule in rules:
        try:
            verdict = _program(rule["rule"]).evaluate({"self": json_to_cel(instance)})
        except CELEvalError as exc:  # a rule that cannot be evaluated refuses, as the API server's would
            yield ValidationError(f"rule {rule['rule']!r} could not be evaluated: {exc}")
            continue
        if not (isinstance(verdict, BoolType) and bool(verdict)):
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            yield ValidationError(str(message))


def map_keys(validator: Any, keys: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """jsonschema keyword: no two items of a `map` list share their key fields."""
    if not isinstance(instance, list):
        return
    seen: set[str] = set()
    for item in instance:
        if not isinstance(item, dict):
            continue
        key = json.dumps([item.get(name) for name in keys])
        if key in seen:
            yield ValidationError(f"duplicate item with {dict(zip(keys, json.loads(key), strict=True))}")
        seen.add(key)
