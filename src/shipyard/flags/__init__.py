"""Feature flags: the model, Unleash-compatible sticky bucketing, and the compiled evaluator.

This part is pure (no I/O, no clock, no web server, no database): the store, the REST API, the
SDK and the OpenFeature provider are built on it.

    flagset = FlagSet.from_yaml(text)              # or FlagSet.from_data(dict_or_list)
    evaluator = compile_flagset(flagset)           # once per flag-set version
    evaluator.evaluate("new-checkout", {"userId": "42", "role": "USER"}, "production")
    evaluator.is_enabled("new-checkout", {"userId": "42", "role": "USER"}, "production")
"""

from ._evaluator import (
    Context,
    EnvironmentEvaluator,
    ErrorCode,
    Evaluation,
    Evaluator,
    Reason,
    compile_flagset,
)
from ._hashing import ROLLOUT_SEED, VARIANT_SEED, bucket, in_rollout, murmur3_32
from ._model import (
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
)
from ._values import MAX_MATCH_INPUT, MAX_PATTERN_LENGTH, regex_problem, semver_key

__all__ = [
    "EXPECTED_LIFETIME_DAYS",
    "MAX_MATCH_INPUT",
    "MAX_PATTERN_LENGTH",
    "OPERATORS",
    "ROLLOUT_SEED",
    "VARIANT_SEED",
    "Condition",
    "Context",
    "EnvironmentEvaluator",
    "ErrorCode",
    "Evaluation",
    "Evaluator",
    "Flag",
    "FlagEnvironment",
    "FlagIssue",
    "FlagKind",
    "FlagSet",
    "FlagType",
    "Operator",
    "Prerequisite",
    "Reason",
    "Rollout",
    "Rule",
    "Segment",
    "Split",
    "StaleFlag",
    "Variant",
    "bucket",
    "check_references",
    "compile_flagset",
    "in_rollout",
    "murmur3_32",
    "regex_problem",
    "semver_key",
    "stale_flags",
]
