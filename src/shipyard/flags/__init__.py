"""Feature flags: the model, Unleash-compatible sticky bucketing, and the compiled evaluator.

This part is pure (no I/O, no clock, no web server, no database): the store, the REST API, the
SDK and the OpenFeature provider are built on it.

    flagset = FlagSet.from_yaml(text)              # or FlagSet.from_data(dict_or_list)
    evaluator = compile_flagset(flagset)           # once per flag-set version
    evaluator.evaluate("new-checkout", {"userId": "42", "role": "USER"}, "production")
    evaluator.is_enabled("new-checkout", {"userId": "42", "role": "USER"}, "production")
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..spec.flag_values import MAX_MATCH_INPUT, MAX_PATTERN_LENGTH, regex_problem, semver_key
    from ..spec.flags import (
        EXPECTED_LIFETIME_DAYS,
        NO_VARIANT,
        OPERATORS,
        Condition,
        Flag,
        FlagEnvironment,
        FlagIssue,
        FlagKey,
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
        VariantOverride,
        VariantPayload,
        check_references,
        new_key_problem,
        stale_flags,
    )
    from ._backends import FlagBackend, LocalBackend, RemoteBackend, audit_data, evaluation_data
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
    from ._live import LiveFlagSet
    from ._store import AuditEntry, FlagChange, FlagDocuments, FlagStore, Stored, apply_merge_patch
    from ._unleash import unleash_context, unleash_enabled, unleash_variant
    from ._unleash_export import (
        Omitted,
        UnleashExport,
        build_client_features,
        client_features,
        export_document,
        frontend_toggle,
        prerequisites_hold,
    )
    from ._wire import flag_to_snake, flag_to_wire, flagset_to_wire, segment_to_wire

# The names are loaded on first use (PEP 562): `import shipyard.flags` (the SDK's package) stays
# cheap, and the model's pydantic and PyYAML are imported only by what uses a flag or the model.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "_evaluator": (
        "Context",
        "EnvironmentEvaluator",
        "ErrorCode",
        "Evaluation",
        "Evaluator",
        "Reason",
        "compile_flagset",
    ),
    "_hashing": (
        "ROLLOUT_SEED",
        "VARIANT_SEED",
        "bucket",
        "in_rollout",
        "murmur3_32",
    ),
    # The flag model is the spec's (a stack spec's `flags:` section is a flag set).
    "shipyard.spec.flags": (
        "EXPECTED_LIFETIME_DAYS",
        "NO_VARIANT",
        "OPERATORS",
        "Condition",
        "Flag",
        "FlagEnvironment",
        "FlagIssue",
        "FlagKey",
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
        "VariantOverride",
        "VariantPayload",
        "check_references",
        "new_key_problem",
        "stale_flags",
    ),
    "shipyard.spec.flag_values": (
        "MAX_MATCH_INPUT",
        "MAX_PATTERN_LENGTH",
        "regex_problem",
        "semver_key",
    ),
    # Server-side names (the store, the live set, the backends the CLI and ops write through):
    # lazy like the rest, so that the SDK's import never loads SQLAlchemy for them.
    "_backends": (
        "FlagBackend",
        "LocalBackend",
        "RemoteBackend",
        "audit_data",
        "evaluation_data",
    ),
    "_live": ("LiveFlagSet",),
    "_store": (
        "AuditEntry",
        "FlagChange",
        "FlagDocuments",
        "FlagStore",
        "Stored",
        "apply_merge_patch",
    ),
    "_wire": ("flag_to_snake", "flag_to_wire", "flagset_to_wire", "segment_to_wire"),
    # Unleash's answers (isEnabled, getVariant) and context for an evaluation (the Unleash APIs, tests).
    "_unleash": ("unleash_context", "unleash_enabled", "unleash_variant"),
    # Unleash's client API body and admin export of a flag set (the Unleash-compatible routes, the CLI).
    "_unleash_export": (
        "Omitted",
        "UnleashExport",
        "build_client_features",
        "client_features",
        "export_document",
        "frontend_toggle",
        "prerequisites_hold",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


if not TYPE_CHECKING:  # type checkers see the imports above; a name they don't know stays an error

    def __getattr__(name: str) -> object:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(module if "." in module else f"{__name__}.{module}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})


__all__ = [
    "EXPECTED_LIFETIME_DAYS",
    "MAX_MATCH_INPUT",
    "MAX_PATTERN_LENGTH",
    "NO_VARIANT",
    "OPERATORS",
    "ROLLOUT_SEED",
    "VARIANT_SEED",
    "AuditEntry",
    "Condition",
    "Context",
    "EnvironmentEvaluator",
    "ErrorCode",
    "Evaluation",
    "Evaluator",
    "Flag",
    "FlagBackend",
    "FlagChange",
    "FlagDocuments",
    "FlagEnvironment",
    "FlagIssue",
    "FlagKey",
    "FlagKind",
    "FlagSet",
    "FlagStore",
    "FlagType",
    "LiveFlagSet",
    "LocalBackend",
    "Omitted",
    "Operator",
    "Prerequisite",
    "Reason",
    "RemoteBackend",
    "Rollout",
    "Rule",
    "Segment",
    "Split",
    "StaleFlag",
    "Stored",
    "UnleashExport",
    "Variant",
    "VariantOverride",
    "VariantPayload",
    "apply_merge_patch",
    "audit_data",
    "bucket",
    "build_client_features",
    "check_references",
    "client_features",
    "compile_flagset",
    "evaluation_data",
    "export_document",
    "flag_to_snake",
    "flag_to_wire",
    "flagset_to_wire",
    "frontend_toggle",
    "in_rollout",
    "murmur3_32",
    "new_key_problem",
    "prerequisites_hold",
    "regex_problem",
    "segment_to_wire",
    "semver_key",
    "stale_flags",
    "unleash_context",
    "unleash_enabled",
    "unleash_variant",
]
