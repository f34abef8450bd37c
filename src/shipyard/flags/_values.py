"""Operand parsing (semver, date-times, safe regexes), as the flags package names it.

Defined in `shipyard.spec.flag_values`, next to the flag model that validates operands with it;
the evaluator compiles with the same functions.
"""

from ..spec.flag_values import (
    MAX_MATCH_INPUT,
    MAX_PATTERN_LENGTH,
    SemverKey,
    parse_datetime,
    parse_number,
    regex_problem,
    safe_regex,
    semver_key,
)

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
