"""Unleash's answers from shipyard's: the context an Unleash SDK sends, and isEnabled/getVariant.

One place for the mapping, shared by the Unleash-compatible APIs and the conformance test that runs
Unleash's client specification through shipyard's evaluator, so the two cannot drift apart:

    context = unleash_context(request_context, now=clock())     # flat, string-valued, as Unleash reads it
    evaluation = evaluator.evaluate(name, context, environment)
    unleash_enabled(evaluation)                                  # isEnabled
    unleash_variant(evaluation)                                  # getVariant

An imported Unleash feature is a boolean flag (`_unleash_import`); these answers are defined for
boolean flags, and a flag of another type is simply never "enabled".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..spec.flags import NO_VARIANT
from ._evaluator import Evaluation, Reason

__all__ = ["unleash_context", "unleash_enabled", "unleash_variant"]

_OFF_REASONS = frozenset({Reason.DISABLED, Reason.ERROR})


def unleash_enabled(evaluation: Evaluation) -> bool:
    """Unleash's isEnabled: the flag served `true`, and not because it is disabled or failed."""
    return evaluation.value is True and evaluation.reason not in _OFF_REASONS


def unleash_variant(evaluation: Evaluation) -> dict[str, Any]:
    """Unleash's getVariant (and the frontend API's `variant`) for one evaluation.

    On with a variant: its name and payload; on without one: Unleash's `disabled` variant with
    `feature_enabled` true; off (or unknown): `disabled` with `feature_enabled` false. The payload
    key is left out when the variant has none, as Unleash's SDKs leave it undefined.
    """
    if not unleash_enabled(evaluation):
        return {"name": NO_VARIANT, "enabled": False, "feature_enabled": False}
    if evaluation.variant is None:
        return {"name": NO_VARIANT, "enabled": False, "feature_enabled": True}
    answer: dict[str, Any] = {"name": evaluation.variant, "enabled": True, "feature_enabled": True}
    if evaluation.payload is not None:
        answer["payload"] = evaluation.payload
    return answer


def _js_string(value: object) -> str | None:
    """`String(value)` as JavaScript writes a scalar (Unleash's SDKs stringify context values)."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        number: float = value  # type: ignore[assignment]
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return str(int(number)) if number.is_integer() and abs(number) < 1e21 else repr(number)
    return None


def unleash_context(context: Mapping[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """An Unleash context (`userId`, …, `properties: {…}`) as shipyard's flat evaluation context.

    Unleash reads a field from the context, else from its `properties`, and always as a string
    (null and undefined being absent); non-scalar values are dropped. `now`, when given, becomes
    `currentTime` if the context has none: Unleash's SDKs compare DATE constraints with their clock.
    """
    flat: dict[str, Any] = {}
    for key, value in context.items():
        if key != "properties" and (text := _js_string(value)) is not None:
            flat[key] = text
    properties = context.get("properties")
    if isinstance(properties, Mapping):
        for key, value in properties.items():
            if key not in flat and (text := _js_string(value)) is not None:
                flat[key] = text
    if now is not None and "currentTime" not in flat:
        flat["currentTime"] = now.isoformat()
    return flat
