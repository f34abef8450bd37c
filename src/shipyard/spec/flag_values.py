"""Parsing of flag operand values shared by validation and compilation: semver, date-times, safe regexes.

Here, in the spec layer, because the flag model (`shipyard.spec.flags`) validates operands with
them; the flag evaluator (`shipyard.flags`) compiles with the same functions.
"""

from __future__ import annotations

import importlib
import math
import re
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "MAX_MATCH_INPUT",
    "MAX_PATTERN_LENGTH",
    "SemverKey",
    "parse_datetime",
    "parse_number",
    "regex_problem",
    "safe_regex",
    "semver_key",
]

MAX_PATTERN_LENGTH = 500
"""The longest `matches` pattern a rule may hold."""

MAX_MATCH_INPUT = 1024
"""A context string longer than this never matches a `matches` condition (bounds backtracking)."""

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)

SemverKey = tuple[int, int, int, tuple[tuple[int, int | str], ...]]


def semver_key(text: object) -> SemverKey | None:
    """A key ordering versions by SemVer 2.0 precedence, or None when `text` is not a version.

    A release sorts after its pre-releases; pre-release identifiers compare numerically when
    numeric, numeric before alphanumeric, and a shorter list first when one is a prefix of the
    other. Build metadata is ignored.
    """
    if type(text) is not str or len(text) > 256:
        return None
    m = _SEMVER.match(text)
    if m is None:
        return None
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    if pre is None:
        return (major, minor, patch, ((2, 0),))  # (2, …) sorts after every pre-release identifier
    idents = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (major, minor, patch, idents)


def parse_datetime(value: object) -> datetime | None:
    """An aware datetime from an ISO-8601 string (or a datetime); naive values are taken as UTC."""
    if type(value) is str:
        if len(value) > 64:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    elif isinstance(value, datetime):
        parsed = value
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def parse_number(value: object) -> float | int | None:
    """A finite number from an int, a float or a numeric string (query parameters are strings)."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[return-value]
    if kind is float:
        return value if math.isfinite(value) else None  # type: ignore[arg-type,return-value]
    if kind is str and len(value) <= 64:  # type: ignore[arg-type]
        try:
            number = float(value)  # type: ignore[arg-type]
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


_sre: Any = importlib.import_module("re._parser")
_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
_BACKREFS = {"GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE", "GROUPREF_LOC_IGNORE", "GROUPREF_UNI_IGNORE"}


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` is refused as a `matches` operand, or None when it is safe to run.

    Refused: patterns that do not compile, longer than MAX_PATTERN_LENGTH, with backreferences,
    with a quantifier nested inside another repeating quantifier (`(a+)+`, `(a{1,3})*`), or with an
    alternation under a repeating quantifier (`(a|ab)*`): the shapes that backtrack exponentially.
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"the pattern is longer than {MAX_PATTERN_LENGTH} characters"
    try:
        re.compile(pattern)
        parsed = _sre.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"the pattern does not compile: {exc}"
    return _walk(parsed, repeating=False)


def _walk(items: Any, *, repeating: bool) -> str | None:
    for op, arg in items:
        name = str(op)
        problem: str | None = None
        if name in _BACKREFS:
            return "backreferences are not allowed"
        if name in _REPEATS:
            _, high, body = arg
            repeats = high > 1
            if repeats and repeating:
                return "nested quantifiers (a repeated group that itself repeats) are not allowed"
            problem = _walk(body, repeating=repeating or repeats)
        elif name == "SUBPATTERN":
            problem = _walk(arg[3], repeating=repeating)
        elif name == "ATOMIC_GROUP":
            problem = _walk(arg, repeating=repeating)
        elif name in ("ASSERT", "ASSERT_NOT"):
            problem = _walk(arg[1], repeating=repeating)
        elif name == "BRANCH":
            if repeating:
                return "alternation inside a repeated group is not allowed (use a character class)"
            for branch in arg[1]:
                problem = problem or _walk(branch, repeating=repeating)
        if problem:
            return problem
    return None


def safe_regex(pattern: str) -> re.Pattern[str]:
    """Compile a pattern already accepted by `regex_problem`."""
    problem = regex_problem(pattern)
    if problem:
        raise ValueError(problem)
    return re.compile(pattern)
