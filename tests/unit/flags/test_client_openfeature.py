"""The OpenFeature provider, driven through the official SDK (`openfeature.api`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import ProviderStatus

from shipyard.flags.client import FlagsClient
from shipyard.flags.openfeature import ShipyardProvider, to_context
from unit.flags.test_client import ENV, FLAGS, TOKEN, Hostile

DOMAIN = "shipyard-unit"

TARGETED: dict[str, Any] = {
    "key": "by-user",
    "type": "string",
    "default_value": "nobody",
    "environments": {
        ENV: {
            "enabled": True,
            "rules": [
                {
                    "conditions": [{"attribute": "userId", "op": "eq", "value": "42"}],
                    "value": "user-42",
                    "variant": "vip",
                },
                {"conditions": [{"attribute": "plan", "op": "in", "value": ["pro"]}], "value": "pro"},
            ],
        }
    },
}
SCALAR_JSON = {
    "key": "json-scalar",
    "type": "json",
    "default_value": "text",
    "environments": {ENV: {"enabled": True}},
}
FRACTION = {
    "key": "fraction",
    "type": "number",
    "default_value": 2.5,
    "environments": {ENV: {"enabled": True}},
}
BOOTSTRAP = {**FLAGS, "flags": [*FLAGS["flags"], TARGETED, SCALAR_JSON, FRACTION]}


@pytest.fixture
def of_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenFeatureClient]:
    flags = FlagsClient("http://127.0.0.1:9", TOKEN, ENV, bootstrap=BOOTSTRAP, start=False)
    # No network: the provider starts its client's worker, which is kept from starting here (an
    # unreachable server is tests/integration/flags/test_client_unreachable.py's).
    monkeypatch.setattr(flags, "start", lambda: None)
    provider = ShipyardProvider(flags)
    api.set_provider_and_wait(provider, DOMAIN)
    yield api.get_client(DOMAIN)
    api.clear_providers()
    flags.close()


def test_ready_with_a_bootstrap_set(of_client: OpenFeatureClient) -> None:
    assert of_client.get_provider_status() == ProviderStatus.READY
    assert of_client.provider.get_metadata().name == "shipyard"


def test_resolves_every_type(of_client: OpenFeatureClient) -> None:
    admin = EvaluationContext(attributes={"role": "ADMIN"})
    assert of_client.get_boolean_value("new-checkout", False, admin) is True
    assert (
        of_client.get_boolean_value("new-checkout", True, EvaluationContext(attributes={"role": "USER"}))
        is False
    )
    assert of_client.get_string_value("button-colour", "red") == "green"
    assert of_client.get_integer_value("max-items", 1) == 10
    assert of_client.get_float_value("ratio", 1.0) == 0.25
    assert of_client.get_float_value("max-items", 1.0) == 10.0
    assert isinstance(of_client.get_float_value("max-items", 1.0), float)
    assert of_client.get_object_value("limits", {}) == {"rpm": 100}


def test_reasons_variants_and_metadata(of_client: OpenFeatureClient) -> None:
    details = of_client.get_boolean_details(
        "new-checkout", False, EvaluationContext(attributes={"role": "ADMIN"})
    )
    assert (details.value, details.reason, details.variant) == (True, Reason.TARGETING_MATCH, "on")
    assert details.flag_metadata == {"flagSetVersion": 7}
    assert of_client.get_boolean_details("new-checkout", False).reason == Reason.DEFAULT
    assert of_client.get_string_details("button-colour", "x").reason == Reason.STATIC
    assert of_client.get_boolean_details("dark-mode", True).reason == Reason.DISABLED
    split = of_client.get_string_details("experiment", "x", EvaluationContext("user-1"))
    assert split.reason == Reason.SPLIT
    assert split.variant in ("a", "b")
    assert split.value == split.variant
    assert split.error_code is None
    assert of_client.get_boolean_details("new-checkout", False).error_code is None


def test_targeting_key_is_the_user_id_and_attributes_pass_through(of_client: OpenFeatureClient) -> None:
    vip = of_client.get_string_details("by-user", "d", EvaluationContext("42"))
    assert (vip.value, vip.variant, vip.reason) == ("user-42", "vip", Reason.TARGETING_MATCH)
    assert of_client.get_string_value("by-user", "d", EvaluationContext("7", {"plan": "pro"})) == "pro"
    assert of_client.get_string_value("by-user", "d", EvaluationContext("7")) == "nobody"
    # the targeting key wins over a userId attribute
    assert of_client.get_string_value("by-user", "d", EvaluationContext("42", {"userId": "7"})) == "user-42"
    assert to_context(EvaluationContext("42", {"plan": "pro"})) == {"userId": "42", "plan": "pro"}
    assert to_context(None) == {}


def test_flag_not_found(of_client: OpenFeatureClient) -> None:
    details = of_client.get_boolean_details("no-such-flag", True)
    assert (details.value, details.reason, details.error_code) == (
        True,
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
    )


@pytest.mark.parametrize(
    ("method", "key", "default"),
    [
        ("get_boolean_details", "button-colour", True),
        ("get_string_details", "new-checkout", "d"),
        ("get_integer_details", "limits", 3),
        ("get_integer_details", "fraction", 3),  # 2.5 is not an integer
        ("get_float_details", "button-colour", 1.5),
        ("get_object_details", "max-items", {"d": 1}),
        ("get_object_details", "json-scalar", ["d"]),  # a json flag holding a string
    ],
)
def test_type_mismatch_serves_the_callers_default(
    of_client: OpenFeatureClient, method: str, key: str, default: Any
) -> None:
    details = getattr(of_client, method)(key, default)
    assert details.value == default
    assert details.reason == Reason.ERROR
    assert details.error_code == ErrorCode.TYPE_MISMATCH


class HostileAttributes(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(
    "context",
    [
        EvaluationContext(attributes=HostileAttributes()),
        EvaluationContext(targeting_key=42, attributes={"role": Hostile()}),  # type: ignore[arg-type]
        EvaluationContext(attributes={"role": ["ADMIN"], "userId": {"a": 1}}),
        EvaluationContext("x" * 100_000, {"role": "ADMIN" * 10_000}),
    ],
)
def test_hostile_contexts_never_raise(of_client: OpenFeatureClient, context: EvaluationContext) -> None:
    provider = of_client.provider
    assert isinstance(provider, ShipyardProvider)
    for key in [f["key"] for f in BOOTSTRAP["flags"]]:
        resolvers: list[tuple[Callable[..., FlagResolutionDetails[Any]], Any]] = [
            (provider.resolve_boolean_details, False),
            (provider.resolve_string_details, "d"),
            (provider.resolve_integer_details, 1),
            (provider.resolve_float_details, 1.0),
            (provider.resolve_object_details, {}),
        ]
        for resolve, default in resolvers:
            details = resolve(key, default, context)
            assert details.error_code is not None or details.value is not None
        if isinstance(context.attributes, dict):  # the SDK itself iterates the attributes to merge them
            of_client.get_boolean_value(key, False, context)
