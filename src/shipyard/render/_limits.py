"""Sizes the API server refuses that no JSON schema states, checked before anything is written.

- A ConfigMap's `data` plus `binaryData`, and a Secret's `data`, may hold at most 1 MiB
  (`core.MaxSecretSize`, summed over the values by `ValidateConfigMap` and `ValidateSecret` in
  kubernetes/pkg/apis/core/validation; the ConfigMap documentation says the same).
- An object's annotations may total at most 256 KiB (`TotalAnnotationSizeLimitB`, summed over keys
  and values by `ValidateAnnotationsSize`).
- Any object: etcd refuses a request over 1.5 MiB (its default `--max-request-bytes`,
  etcd.io/docs/latest/dev-guide/limit), and the API server writes each object as one etcd value,
  so no object larger can be stored. It is measured here as compact JSON: custom resources are
  stored as JSON; built-in kinds as protobuf, which is the same size for the strings that make an
  object large and a little smaller for its structure.

Each refusal names the object, its size, the spec field it came from (the service or datastore
its `app.kubernetes.io/name` label names) and, for the whole object, where in it the bulk is.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..errors import RenderError
from ..spec import Stack
from ._common import NAME_LABEL, Object

MIB = 1024 * 1024
MAX_DATA_BYTES = MIB
MAX_ANNOTATION_BYTES = 256 * 1024
MAX_OBJECT_BYTES = MIB + MIB // 2


def check_sizes(objects: list[Object], stack: Stack) -> None:
    """Raise RenderError for the first object the API server would refuse for its size."""
    for obj in objects:
        kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
        source = _source(obj, stack)
        if kind in ("ConfigMap", "Secret"):
            sizes = _data_sizes(obj)
            total = sum(sizes.values())
            if total > MAX_DATA_BYTES:
                key = max(sizes, key=lambda k: sizes[k])
                field = f"{source}.env.{key}" if source.startswith("services.") else f"{source} ({key})"
                raise RenderError(
                    f"{kind}/{name}: its data is {_mib(total)}, and the API server refuses a {kind}"
                    f" whose data is over 1 MiB; the largest value is {key!r} ({_mib(sizes[key])}),"
                    f" from {field}: keep large configuration out of the spec (in the image, or a"
                    " volume the service reads)"
                )
        annotations = obj["metadata"].get("annotations") or {}
        annotated = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items())
        if annotated > MAX_ANNOTATION_BYTES:
            raise RenderError(
                f"{kind}/{name}: its annotations total {annotated / 1024:.0f} KiB, and the API server"
                f" refuses more than 256 KiB (from {source}); shorten them"
            )
        size = len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_OBJECT_BYTES:
            path, largest = _largest_string(obj)
            raise RenderError(
                f"{kind}/{name} is {_mib(size)} as JSON, and etcd stores no object over 1.5 MiB"
                f" (its default --max-request-bytes), so the API server cannot keep it; the largest"
                f" value is {path} ({_mib(largest)}), from {source}: make that field smaller"
            )


def _data_sizes(obj: Object) -> dict[str, int]:
    """The bytes of each value as the API server counts them: `binaryData` and a Secret's `data`
    decoded from base64, the rest as UTF-8."""
    sizes: dict[str, int] = {}
    for key, value in (obj.get("data") or {}).items():
        sizes[str(key)] = _decoded(value) if obj["kind"] == "Secret" else len(str(value).encode())
    for key, value in (obj.get("stringData") or {}).items():
        sizes[str(key)] = len(str(value).encode())
    for key, value in (obj.get("binaryData") or {}).items():
        sizes[str(key)] = _decoded(value)
    return sizes


def _decoded(value: Any) -> int:
    try:
        return len(base64.b64decode(str(value), validate=True))
    except (binascii.Error, ValueError):
        return len(str(value).encode())  # not base64: the schema check reports it


def _source(obj: Object, stack: Stack) -> str:
    """The spec field an object was rendered from, as far as its name label tells: the service
    or datastore it names, or whose name it starts with (`api-env` is `api`'s ConfigMap)."""
    name = str((obj["metadata"].get("labels") or {}).get(NAME_LABEL) or obj["metadata"]["name"])
    parts = name.split("-")
    for end in range(len(parts), 0, -1):
        candidate = "-".join(parts[:end])
        if candidate in stack.services:
            return f"services.{candidate}"
        if candidate in stack.datastores:
            return f"datastores.{candidate}"
    return "the stack as a whole"


def _largest_string(tree: Any, path: str = "") -> tuple[str, int]:
    """The path and UTF-8 size of the longest string in an object."""
    best = (path or "(the object)", 0)
    children: list[tuple[str, Any]] = []
    if isinstance(tree, dict):
        children = [(f"{path}.{key}" if path else str(key), value) for key, value in tree.items()]
    elif isinstance(tree, list):
        children = [(f"{path}[{index}]", value) for index, value in enumerate(tree)]
    elif isinstance(tree, str):
        return path, len(tree.encode())
    for child_path, value in children:
        found = _largest_string(value, child_path)
        if found[1] > best[1]:
            best = found
    return best


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"
