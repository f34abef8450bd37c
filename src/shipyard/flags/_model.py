"""The flag model, as the flags package names it: defined in `shipyard.spec.flags`.

The model moved down to the spec layer (the stack spec's `flags:` section is a flag set, and the
spec imports nothing above it); the store, the evaluator and the SDK keep importing it from here.
"""

from ..spec.flags import (
    EXPECTED_LIFETIME_DAYS,
    OPERATORS,
    Condition,
    Flag,
    FlagEnvironment,
    FlagIssue,
    FlagKind,
    FlagSet,
    FlagType,
    Operator,
    Prerequisite,
    Rollout,
    Rule,
    Segment,
    Split,
    StaleFlag,
    Variant,
    check_references,
    stale_flags,
    type_problem,
)

__all__ = [
    "EXPECTED_LIFETIME_DAYS",
    "OPERATORS",
    "Condition",
    "Flag",
    "FlagEnvironment",
    "FlagIssue",
    "FlagKind",
    "FlagSet",
    "FlagType",
    "Operator",
    "Prerequisite",
    "Rollout",
    "Rule",
    "Segment",
    "Split",
    "StaleFlag",
    "Variant",
    "check_references",
    "stale_flags",
    "type_problem",
]
