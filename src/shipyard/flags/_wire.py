"""The flag API's wire spelling: camelCase on the wire, snake_case in files and in Python.

Seed 003 writes its flag API in camelCase (`defaultValue`), as a NestJS service does; the flag
files, the stack spec's `flags:` section and the store keep the snake_case of `FlagSet.to_data()`.
These functions rename the *field names* of a flag, segment or flag-set document between the two,
walking the pydantic models (`shipyard.spec.flags`) so that they know which keys are fields: the
user's own data (a json flag's value, a rule's value, an environment's name) is never renamed.

They do not validate: a partial document (a JSON merge patch) renames as well as a whole one, and
an unknown key is left as it is for the model's validation to name in its error.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from ..spec.flags import Flag, FlagSet, Segment

__all__ = ["flag_to_snake", "flag_to_wire", "flagset_to_wire", "segment_to_wire", "to_snake", "to_wire"]

Spelling = Literal["wire", "snake"]


def _fields(model: type[BaseModel]) -> dict[str, tuple[str, str, Any]]:
    """Every spelling of each field of `model` → (snake name, camelCase alias, annotation)."""
    found: dict[str, tuple[str, str, Any]] = {}
    for name, info in model.model_fields.items():
        entry = (name, info.alias or name, info.annotation)
        found[name] = entry
        found[info.alias or name] = entry
    return found


_FIELDS: dict[type[BaseModel], dict[str, tuple[str, str, Any]]] = {}


def _rename(value: Any, annotation: Any, spelling: Spelling) -> Any:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _rename(value, get_args(annotation)[0], spelling)
    if origin is Union or origin is types.UnionType:
        # `Rollout | None`, `list[Rule] | None`: the one member that is a model or a container.
        for member in get_args(annotation):
            if member is not type(None):
                value = _rename(value, member, spelling)
        return value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(value, dict):
            return value
        fields = _FIELDS.get(annotation)
        if fields is None:
            fields = _FIELDS[annotation] = _fields(annotation)
        renamed: dict[str, Any] = {}
        for key, item in value.items():
            entry = fields.get(key)
            if entry is None:
                renamed[key] = item  # unknown: the model's validation names it
                continue
            name, alias, inner = entry
            renamed[alias if spelling == "wire" else name] = _rename(item, inner, spelling)
        return renamed
    if origin is list and isinstance(value, list):
        (inner,) = get_args(annotation)
        return [_rename(item, inner, spelling) for item in value]
    if origin is dict and isinstance(value, dict):
        _, inner = get_args(annotation)
        return {key: _rename(item, inner, spelling) for key, item in value.items()}
    return value  # a scalar, or JsonValue: the user's data


def to_wire(document: Any, model: type[BaseModel]) -> Any:
    """A `model` document (whole or partial) with its field names in camelCase."""
    return _rename(document, model, "wire")


def to_snake(document: Any, model: type[BaseModel]) -> Any:
    """A `model` document (whole or partial) with its field names in snake_case."""
    return _rename(document, model, "snake")


def flag_to_wire(document: dict[str, Any]) -> dict[str, Any]:
    """A flag (or a merge patch of one) as the API sends it."""
    renamed: dict[str, Any] = to_wire(document, Flag)
    return renamed


def flag_to_snake(document: dict[str, Any]) -> dict[str, Any]:
    """A flag (or a merge patch of one) as files and the store hold it."""
    renamed: dict[str, Any] = to_snake(document, Flag)
    return renamed


def segment_to_wire(document: dict[str, Any]) -> dict[str, Any]:
    renamed: dict[str, Any] = to_wire(document, Segment)
    return renamed


def flagset_to_wire(document: dict[str, Any]) -> dict[str, Any]:
    """A flag set's dict form (`version`, `flags`, `segments` lists) as the API sends it."""
    renamed: dict[str, Any] = to_wire(document, FlagSet)
    return renamed
