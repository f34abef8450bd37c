"""Generic differences between two JSON-like documents, in the two forms the outputs need.

- `json_patch`: RFC 6902 operations (Kustomize applies them exactly, lists by index);
- `values_patch`: a document that Helm's value merging turns `base` into `target` with: maps
  merge, anything else replaces, `null` deletes a key.
"""

from __future__ import annotations

from typing import Any


def same(left: Any, right: Any) -> bool:
    """Equality that tells `True` from `1` and `1.0` from `1`, as YAML and JSON do."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    return bool(left == right)


def _pointer(path: tuple[str | int, ...]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def json_patch(base: Any, target: Any, path: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """The RFC 6902 operations that turn `base` into `target` (empty when they are the same)."""
    if isinstance(base, dict) and isinstance(target, dict):
        ops: list[dict[str, Any]] = []
        for key in sorted(base):
            if key not in target:
                ops.append({"op": "remove", "path": _pointer((*path, key))})
        for key in sorted(target):
            if key not in base:
                ops.append({"op": "add", "path": _pointer((*path, key)), "value": target[key]})
            else:
                ops += json_patch(base[key], target[key], (*path, key))
        return ops
    if isinstance(base, list) and isinstance(target, list) and len(base) == len(target):
        return [
            op for index in range(len(base)) for op in json_patch(base[index], target[index], (*path, index))
        ]
    if same(base, target):
        return []
    return [{"op": "replace", "path": _pointer(path), "value": target}]


def values_patch(base: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """What to merge onto `base` (Helm's way) to get `target`; `{}` when they are the same.

    Neither document may hold a null: in Helm's values a null means "delete this key".
    """
    patch: dict[str, Any] = {}
    for key in sorted(base):
        if key not in target:
            patch[key] = None
    for key in sorted(target):
        if key not in base:
            patch[key] = target[key]
        elif isinstance(base[key], dict) and isinstance(target[key], dict):
            nested = values_patch(base[key], target[key])
            if nested:
                patch[key] = nested
        elif not same(base[key], target[key]):
            if isinstance(base[key], dict):
                # A map in the chart's values would be merged into, not replaced: delete it
                # key by key and set the new value, which Helm then takes as it is.
                raise ValueError(f"cannot replace the map at {key!r} with a {type(target[key]).__name__}")
            patch[key] = target[key]
    return patch
