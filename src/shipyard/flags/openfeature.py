"""An OpenFeature provider over the SDK: shipyard flags behind the vendor-neutral API.

    from openfeature import api
    from shipyard.flags.openfeature import ShipyardProvider

    api.set_provider(ShipyardProvider(url="https://shipyard.internal", token=token, environment="production"))
    client = api.get_client()
    client.get_boolean_value("new-checkout", False, EvaluationContext("user-42", {"role": "USER"}))

Evaluation is local (a `FlagsClient` underneath). The evaluation context's `targeting_key`
becomes the `userId` attribute; the other attributes pass through as they are. Reasons and error
codes are the core's, which mirror OpenFeature's; on any error the caller's default is served.
A flag of another type than asked for is TYPE_MISMATCH (a `number` flag serves both integer
and float requests; an integer request needs a whole number; object requests need a `json` flag
holding an object or a list).

Events: PROVIDER_READY once a flag set is loaded (the SDK emits it when `initialize` returns;
the provider emits it itself when the first set arrives after `initialize` gave up, and when the
server is back after a STALE), PROVIDER_CONFIGURATION_CHANGED with the changed flag keys on each
new version, PROVIDER_STALE when the server cannot be reached (the last good set is served),
PROVIDER_ERROR when it cannot be reached and no set was ever loaded.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.exception import ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.flag_evaluation import Reason as OFReason
from openfeature.provider import AbstractProvider, Metadata

from ..spec.flags import FlagSet, FlagType
from ._evaluator import ErrorCode, Reason
from .client import ConnectionState, FlagsClient, changed_flags

__all__ = ["ShipyardProvider", "to_context"]

T = TypeVar("T")

REASONS: dict[Reason, OFReason] = {
    Reason.STATIC: OFReason.STATIC,
    Reason.TARGETING_MATCH: OFReason.TARGETING_MATCH,
    Reason.SPLIT: OFReason.SPLIT,
    Reason.DEFAULT: OFReason.DEFAULT,
    Reason.DISABLED: OFReason.DISABLED,
    Reason.ERROR: OFReason.ERROR,
}
ERROR_CODES: dict[ErrorCode, OFErrorCode] = {
    ErrorCode.FLAG_NOT_FOUND: OFErrorCode.FLAG_NOT_FOUND,
    ErrorCode.TYPE_MISMATCH: OFErrorCode.TYPE_MISMATCH,
    ErrorCode.PARSE_ERROR: OFErrorCode.PARSE_ERROR,
    ErrorCode.TARGETING_KEY_MISSING: OFErrorCode.TARGETING_KEY_MISSING,
    ErrorCode.INVALID_CONTEXT: OFErrorCode.INVALID_CONTEXT,
    ErrorCode.GENERAL: OFErrorCode.GENERAL,
}


class _Mismatch(Exception):
    pass


class _Status(Enum):
    """What the provider last told the OpenFeature SDK."""

    NOT_READY = "NOT_READY"
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"


def to_context(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    """The shipyard context of an OpenFeature one: its attributes, and `userId` = targeting key."""
    if evaluation_context is None:
        return {}
    context = dict(evaluation_context.attributes) if evaluation_context.attributes else {}
    if evaluation_context.targeting_key is not None:
        context["userId"] = evaluation_context.targeting_key
    return context


def _boolean(value: Any) -> bool:
    if value.__class__ is not bool:
        raise _Mismatch(f"{value!r} is not a boolean")
    return bool(value)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Mismatch(f"{value!r} is not a string")
    return value


def _integer(value: Any) -> int:
    if value.__class__ is int:
        return int(value)
    if value.__class__ is float and value.is_integer():
        return int(value)
    raise _Mismatch(f"{value!r} is not an integer")


def _float(value: Any) -> float:
    if value.__class__ in (int, float):
        return float(value)
    raise _Mismatch(f"{value!r} is not a number")


def _object(value: Any) -> Sequence[FlagValueType] | Mapping[str, FlagValueType]:
    if isinstance(value, Mapping | list):
        return value
    raise _Mismatch(f"{value!r} is not an object or a list")


_live_providers: weakref.WeakSet[ShipyardProvider] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for provider in list(_live_providers):
        provider._lock = threading.Lock()  # it may have been held by the parent's worker thread


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ShipyardProvider(AbstractProvider):
    """OpenFeature provider evaluating shipyard flags locally.

    Give it a `FlagsClient` (it then leaves the client open on shutdown), or `url`, `token`,
    `environment` and any other `FlagsClient` options (it then owns the client it makes).
    `initialize` waits up to `init_timeout` seconds for a first flag set (none when the client
    already serves one, e.g. from a bootstrap file).
    """

    def __init__(
        self,
        client: FlagsClient | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        environment: str = "production",
        init_timeout: float = 5.0,
        **client_options: Any,
    ) -> None:
        super().__init__()
        if client is None:
            if url is None or token is None:
                raise ValueError("ShipyardProvider needs a FlagsClient, or url and token to make one")
            client = FlagsClient(url, token, environment, **client_options)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.init_timeout = init_timeout
        self._lock = threading.Lock()
        self._status = _Status.NOT_READY
        self._initializing = False
        self._previous: FlagSet | None = None
        self._listening = False
        _live_providers.add(self)

    def get_metadata(self) -> Metadata:
        return Metadata(name="shipyard")

    def __repr__(self) -> str:
        return f"ShipyardProvider({self.client!r})"

    # --- lifecycle and events -------------------------------------------------------------------

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        client = self.client
        with self._lock:
            self._initializing = True
            self._previous = client.flagset if client.loaded else None
            if not self._listening:
                client.add_change_listener(self._on_change)
                client.add_state_listener(self._on_state)
                self._listening = True
        client.start()
        loaded = client.loaded or client.wait_until_ready(self.init_timeout)
        with self._lock:
            self._initializing = False
            if loaded or client.loaded:
                self._previous = client.flagset
                self._status = _Status.READY  # the SDK emits PROVIDER_READY when this returns
                return
            self._status = _Status.ERROR  # the SDK emits PROVIDER_ERROR for the exception
        reason = client.stats.last_error or "no answer yet"
        raise ProviderNotReadyError(f"no flag set within {self.init_timeout:g} s ({reason})")

    def shutdown(self) -> None:
        with self._lock:
            if self._listening:
                self.client.remove_change_listener(self._on_change)
                self.client.remove_state_listener(self._on_state)
                self._listening = False
            self._status = _Status.NOT_READY
        if self._owns_client:
            self.client.close()

    def _on_change(self, old_version: int | None, new_version: int) -> None:
        new = self.client.flagset
        with self._lock:
            previous, self._previous = self._previous, new
            if self._initializing:
                return  # initialize() returns at once and the SDK announces READY
            first = self._status in (_Status.NOT_READY, _Status.ERROR)
            if first:
                self._status = _Status.READY
        if first:
            self.emit_provider_ready(ProviderEventDetails(metadata={"version": new_version}))
            return
        self.emit_provider_configuration_changed(
            ProviderEventDetails(
                flags_changed=changed_flags(previous, new),
                message=f"flag set version {new_version} (was {old_version})",
                metadata={"version": new_version},
            )
        )

    def _on_state(self, state: ConnectionState, message: str | None) -> None:
        with self._lock:
            if self._initializing or self._status == _Status.NOT_READY:
                return
            before = self._status
            if state == ConnectionState.DISCONNECTED and before == _Status.READY:
                self._status = _Status.STALE
            elif state == ConnectionState.CONNECTED and before == _Status.STALE:
                self._status = _Status.READY
            after = self._status
        if after == before:
            return
        if after == _Status.STALE:
            self.emit_provider_stale(
                ProviderEventDetails(message=message or "the flag server is unreachable")
            )
        else:
            self.emit_provider_ready(ProviderEventDetails(message="the flag server is reachable again"))

    # --- resolution -----------------------------------------------------------------------------

    def _resolve(
        self,
        flag_key: str,
        default_value: T,
        evaluation_context: EvaluationContext | None,
        flag_type: FlagType,
        convert: Callable[[Any], T],
    ) -> FlagResolutionDetails[T]:
        client = self.client
        try:
            context = to_context(evaluation_context)
        except Exception as exc:
            return FlagResolutionDetails(
                default_value,
                OFErrorCode.INVALID_CONTEXT,
                f"the evaluation context is unusable ({type(exc).__name__})",
                OFReason.ERROR,
            )
        if not client.loaded:
            return FlagResolutionDetails(
                default_value, OFErrorCode.PROVIDER_NOT_READY, "no flag set loaded yet", OFReason.ERROR
            )
        result = client.evaluate(flag_key, context, flag_type)
        if result.error_code is not None:
            return FlagResolutionDetails(
                default_value,
                ERROR_CODES.get(result.error_code, OFErrorCode.GENERAL),
                result.error_message,
                OFReason.ERROR,
            )
        try:
            value = convert(result.value)
        except _Mismatch as exc:
            return FlagResolutionDetails(
                default_value, OFErrorCode.TYPE_MISMATCH, f"flag {flag_key!r}: {exc}", OFReason.ERROR
            )
        version = client.version
        return FlagResolutionDetails(
            value,
            reason=REASONS.get(result.reason, OFReason.UNKNOWN),
            variant=result.variant,
            flag_metadata={"flagSetVersion": version} if version is not None else {},
        )

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, "boolean", _boolean)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, "string", _string)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, "number", _integer)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, "number", _float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, "json", _object)
