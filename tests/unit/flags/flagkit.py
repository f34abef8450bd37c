"""Helpers for the flag tests: build a one-flag set and evaluate it.

Imported as `unit.flags.flagkit` (tests/ is on the path).
"""

from __future__ import annotations

from typing import Any

from shipyard.flags import Evaluation, Evaluator, FlagSet, compile_flagset

ENV = "production"


def one_flag(
    rules: list[dict[str, Any]],
    *,
    flag_type: str = "boolean",
    default: Any = False,
    segments: list[dict[str, Any]] | None = None,
    key: str = "f",
    **env: Any,
) -> FlagSet:
    """A flag set holding one flag, enabled in `production` with `rules`."""
    flag = {
        "key": key,
        "type": flag_type,
        "default_value": default,
        "environments": {ENV: {"enabled": True, "rules": rules, **env}},
    }
    return FlagSet.from_data({"flags": [flag], "segments": segments or []})


def condition_holds(cond: dict[str, Any], context: Any, segments: list[dict[str, Any]] | None = None) -> bool:
    """Whether a single condition matches `context` (the rule serves True when it does)."""
    ev = compile_flagset(one_flag([{"conditions": [cond], "value": True}], segments=segments))
    result = ev.evaluate("f", context, ENV)
    assert result.error_code is None, result
    return result.value is True


def evaluate_one(rules: list[dict[str, Any]], context: Any, **kwargs: Any) -> Evaluation:
    """Evaluate the flag of `one_flag(rules, **kwargs)` for `context` in production."""
    return compile_flagset(one_flag(rules, **kwargs)).evaluate("f", context, ENV)


def compiled(data: Any) -> Evaluator:
    return compile_flagset(FlagSet.from_data(data))
