"""The SDK without a server: bootstrap sets, local evaluation, hostile input, change detection."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.flags import ErrorCode, Evaluation, FlagSet, Reason
from shipyard.flags.client import (
    FlagsClient,
    _sse_events,
    changed_flags,
    load_bootstrap,
)

ENV = "production"
TOKEN = "shy_client_THIS-IS-A-SECRET-TOKEN-VALUE"

FLAGS: dict[str, Any] = {
    "version": 7,
    "flags": [
        {
            "key": "new-checkout",
            "default_value": False,
            "environments": {
                ENV: {
                    "enabled": True,
                    "rules": [
                        {
                            "conditions": [{"attribute": "role", "op": "eq", "value": "ADMIN"}],
                            "value": True,
                            "variant": "on",
                        },
                        {"conditions": [{"op": "segment", "value": "beta-users"}], "value": True},
                    ],
                },
                "staging": {"enabled": True, "value": True},
            },
        },
        {
            "key": "button-colour",
            "type": "string",
            "default_value": "blue",
            "environments": {ENV: {"enabled": True, "value": "green"}},
        },
        {"key": "max-items", "type": "number", "default_value": 10, "environments": {ENV: {"enabled": True}}},
        {
            "key": "ratio",
            "type": "number",
            "default_value": 0.5,
            "environments": {ENV: {"enabled": True, "value": 0.25}},
        },
        {
            "key": "limits",
            "type": "json",
            "default_value": {"rpm": 100},
            "environments": {ENV: {"enabled": True}},
        },
        {
            "key": "dark-mode",
            "default_value": False,
            "environments": {ENV: {"enabled": False, "value": True}},
        },
        {
            "key": "experiment",
            "type": "string",
            "default_value": "control",
            "environments": {
                ENV: {
                    "enabled": True,
                    "rules": [
                        {
                            "split": {
                                "variants": [
                                    {"name": "a", "value": "a", "weight": 1},
                                    {"name": "b", "value": "b", "weight": 1},
                                ]
                            }
                        }
                    ],
                }
            },
        },
    ],
    "segments": [
        {"name": "beta-users", "conditions": [{"attribute": "userId", "op": "in", "value": ["1", "2"]}]}
    ],
}


@pytest.fixture
def client() -> Iterator[FlagsClient]:
    """A client serving the bootstrap set, its worker not started (no network at all)."""
    with FlagsClient("http://127.0.0.1:9", TOKEN, ENV, bootstrap=FLAGS, start=False) as flags:
        yield flags


# --- bootstrap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["yaml", "yml", "json", "dict", "flagset"])
def test_bootstrap_forms_load_the_same_set(form: str, tmp_path: Path) -> None:
    source: Any
    if form in ("yaml", "yml"):
        source = tmp_path / f"flags.{form}"
        source.write_text(yaml.safe_dump(FLAGS))
    elif form == "json":
        source = tmp_path / "flags.json"
        source.write_text(json.dumps(FLAGS))
    elif form == "dict":
        source = FLAGS
    else:
        source = FlagSet.from_data(FLAGS)
    assert load_bootstrap(source) == FlagSet.from_data(FLAGS)
    with FlagsClient("http://127.0.0.1:9", TOKEN, ENV, bootstrap=source, start=False) as flags:
        assert flags.loaded
        assert flags.version == 7
        assert flags.is_enabled("new-checkout", {"role": "ADMIN"}) is True


def test_bootstrap_in_the_export_format(tmp_path: Path) -> None:
    """What `shipyard flags export` writes (FlagSet.to_yaml) is a bootstrap file."""
    path = tmp_path / "export.yaml"
    path.write_text(FlagSet.from_data(FLAGS).to_yaml())
    assert load_bootstrap(path) == FlagSet.from_data(FLAGS)


def test_a_bad_bootstrap_file_fails_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("flags:\n  - key: Not A Slug\n    default_value: 1\n")
    with pytest.raises(ValueError, match="key"):
        FlagsClient("http://127.0.0.1:9", TOKEN, ENV, bootstrap=path, start=False)


# --- evaluation ---------------------------------------------------------------------------------


def test_is_enabled(client: FlagsClient) -> None:
    assert client.is_enabled("new-checkout", {"role": "ADMIN"}) is True
    assert client.is_enabled("new-checkout", {"role": "USER"}) is False
    assert client.is_enabled("new-checkout", {"userId": "2"}) is True  # through the segment
    assert client.is_enabled("new-checkout") is False
    assert client.is_enabled("dark-mode", {}) is False  # disabled
    assert client.is_enabled("nope", {}, default=True) is True  # unknown: the caller's default
    assert client.is_enabled("button-colour", {}, default=True) is True  # not boolean: the default


def test_evaluate_reports_reasons_and_variants(client: FlagsClient) -> None:
    assert client.evaluate("new-checkout", {"role": "ADMIN"}) == Evaluation(
        True, "on", Reason.TARGETING_MATCH
    )
    assert client.evaluate("new-checkout", {"role": "USER"}) == Evaluation(False, None, Reason.DEFAULT)
    assert client.evaluate("button-colour") == Evaluation("green", None, Reason.STATIC)
    assert client.evaluate("dark-mode") == Evaluation(False, None, Reason.DISABLED)
    split = client.evaluate("experiment", {"userId": "42"})
    assert split.reason == Reason.SPLIT
    assert split.variant in ("a", "b")
    assert split == client.evaluate("experiment", {"userId": "42"})  # sticky
    missing = client.evaluate("nope")
    assert (missing.reason, missing.error_code) == (Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)
    mismatch = client.evaluate("button-colour", {}, expected_type="boolean")
    assert (mismatch.value, mismatch.error_code) == (None, ErrorCode.TYPE_MISMATCH)


def test_get_value_serves_the_default_on_errors_and_other_kinds(client: FlagsClient) -> None:
    assert client.get_value("button-colour", "red") == "green"
    assert client.get_value("max-items", 1) == 10
    assert client.get_value("ratio", 1.0) == 0.25
    assert client.get_value("limits", {}) == {"rpm": 100}
    assert client.get_value("nope", "red") == "red"
    assert client.get_value("button-colour", False) is False  # a string flag asked for a bool
    assert client.get_value("max-items", "ten") == "ten"
    assert client.get_value("limits", []) == []
    assert client.get_value("button-colour", None) == "green"  # None accepts anything


def test_evaluate_all(client: FlagsClient) -> None:
    results = client.evaluate_all({"role": "ADMIN"})
    assert list(results) == [f["key"] for f in FLAGS["flags"]]
    assert results["new-checkout"].value is True
    assert results["button-colour"].value == "green"


def test_other_environments_are_evaluated_as_their_own() -> None:
    with FlagsClient("http://127.0.0.1:9", TOKEN, "staging", bootstrap=FLAGS, start=False) as staging:
        assert staging.is_enabled("new-checkout", {}) is True
        assert staging.evaluate("button-colour").reason == Reason.DISABLED
    with FlagsClient("http://127.0.0.1:9", TOKEN, "nowhere", bootstrap=FLAGS, start=False) as nowhere:
        assert nowhere.evaluate("new-checkout") == Evaluation(False, None, Reason.DISABLED)


def test_before_any_set_is_loaded() -> None:
    with FlagsClient("http://127.0.0.1:9", TOKEN, ENV, start=False) as flags:
        assert not flags.loaded
        assert flags.version is None
        assert not flags.ready.is_set()
        assert flags.is_enabled("new-checkout", {}) is False
        assert flags.is_enabled("new-checkout", {}, default=True) is True
        assert flags.get_value("button-colour", "red") == "red"
        result = flags.evaluate("new-checkout")
        assert (result.reason, result.error_code) == (Reason.ERROR, ErrorCode.GENERAL)
        assert "not ready" in (result.error_message or "")
        assert flags.evaluate_all({}) == {}


class Hostile(Mapping[str, Any]):
    """A mapping that fails in every way it can."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        raise RuntimeError("boom")


class WeirdValue:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("boom")

    def __hash__(self) -> int:
        raise RuntimeError("boom")

    def __str__(self) -> str:
        raise RuntimeError("boom")


HOSTILE_CONTEXTS: list[Any] = [
    None,
    [],
    "role=ADMIN",
    42,
    Hostile(),
    {"role": WeirdValue(), "userId": WeirdValue()},
    {"role": None, "userId": None},
    {"role": ["ADMIN"], "userId": {"nested": True}},
    {"userId": "x" * 1_000_000, "role": "A" * 100_000},
    {1: "a", None: "b", ("t",): "c"},
    {"userId": float("nan"), "role": float("inf")},
]


@pytest.mark.parametrize("context", HOSTILE_CONTEXTS, ids=lambda c: type(c).__name__)
def test_hostile_contexts_never_raise(client: FlagsClient, context: Any) -> None:
    for key in [f["key"] for f in FLAGS["flags"]]:
        assert isinstance(client.is_enabled(key, context), bool)
        result = client.evaluate(key, context)
        assert isinstance(result, Evaluation)
        client.get_value(key, "x", context)
    assert isinstance(client.evaluate_all(context), dict)


@pytest.mark.parametrize("key", [None, 42, ["unhashable"], "", "x" * 10_000, "new-checkout\0"])
def test_hostile_keys_never_raise(client: FlagsClient, key: Any) -> None:
    assert client.is_enabled(key, {}) is False
    assert client.evaluate(key, {}).reason == Reason.ERROR
    assert client.get_value(key, "d", {}) == "d"


def test_the_repr_hides_credentials_in_the_url() -> None:
    with FlagsClient("http://user:pa55word@127.0.0.1:9/", TOKEN, ENV, start=False) as flags:
        text = repr(flags)
    assert "pa55word" not in text
    assert TOKEN not in text
    assert "127.0.0.1:9" in text


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        FlagsClient("http://127.0.0.1:9", TOKEN, ENV, poll_interval=0, start=False)


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    flags = FlagsClient(
        "http://127.0.0.1:9",
        TOKEN,
        ENV,
        start=False,
        min_retry_delay=0.5,
        max_retry_delay=8,
        poll_interval=30,
    )
    delays = [[flags._delay(n) for _ in range(200)] for n in range(8)]
    for n, samples in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2**n)
        assert all(ceiling / 2 <= d <= ceiling for d in samples)
        assert len(set(samples)) > 1  # jitter
    assert max(delays[-1]) <= 8.0
    fast_poll = FlagsClient("http://127.0.0.1:9", TOKEN, ENV, start=False, poll_interval=1.0)
    assert max(fast_poll._delay(10) for _ in range(100)) <= 1.0  # a broken stream still polls that often


# --- change detection and the event-stream parser ------------------------------------------------


def _with(data: dict[str, Any], **changes: Any) -> FlagSet:
    copy = json.loads(json.dumps(data))
    for key, flag in changes.items():
        copy["flags"] = [f for f in copy["flags"] if f["key"] != key]
        if flag is not None:
            copy["flags"].append(flag)
    return FlagSet.from_data(copy)


def test_changed_flags() -> None:
    base = FlagSet.from_data(FLAGS)
    assert changed_flags(base, base) == []
    assert changed_flags(None, base) == sorted(f["key"] for f in FLAGS["flags"])
    edited = dict(FLAGS["flags"][1], default_value="red")
    assert changed_flags(base, _with(FLAGS, **{"button-colour": edited})) == ["button-colour"]
    assert changed_flags(base, _with(FLAGS, **{"dark-mode": None})) == ["dark-mode"]
    added = {"key": "fresh", "default_value": True}
    assert changed_flags(base, _with(FLAGS, fresh=added)) == ["fresh"]


def test_changed_flags_follows_segments_and_prerequisites() -> None:
    data = json.loads(json.dumps(FLAGS))
    data["flags"].append(
        {"key": "dependent", "default_value": False, "prerequisites": [{"flag": "new-checkout"}]}
    )
    data["segments"].append({"name": "outer", "conditions": [{"op": "segment", "value": "beta-users"}]})
    data["flags"].append(
        {
            "key": "uses-outer",
            "default_value": False,
            "environments": {
                ENV: {
                    "enabled": True,
                    "rules": [{"conditions": [{"op": "segment", "value": "outer"}], "value": True}],
                }
            },
        }
    )
    before = FlagSet.from_data(data)
    data["segments"][0]["conditions"][0]["value"] = ["1", "2", "3"]
    after = FlagSet.from_data(data)
    # beta-users changed: new-checkout uses it, dependent needs new-checkout, uses-outer uses it through outer
    assert changed_flags(before, after) == ["dependent", "new-checkout", "uses-outer"]


def test_sse_parser() -> None:
    lines = [
        ": keep-alive",
        "",
        "id: 3",
        "event: flagset",
        'data: {"version":',
        "data: 3}",
        "",
        "data:plain",
        "retry: 1000",
        "",
        "event: ignored-without-data",
        "",
        "id: 4",
        "event: flagset",
        "data: {}",
    ]  # the last event is not terminated by a blank line: it is not dispatched
    events = list(_sse_events(lines))
    assert [(e.type, e.data, e.id) for e in events] == [
        ("flagset", '{"version":\n3}', "3"),
        ("message", "plain", "3"),
    ]
