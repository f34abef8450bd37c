"""Unleash's own SDKs against a real `shipyard serve`: npm's `unleash-client` (Node, as a NestJS
API) on the client API, and npm's `unleash-proxy-client` in Chromium (as a Next.js page) on the
frontend API.

- Unleash's client specification: every file is imported (`shipyard.flags._unleash_import`) into
  the server, then the Node SDK, fetching `/api/client/features`, evaluates every test and variant
  test of it. The bar is all of them.
- shipyard-native flags (seed 003's, tests/node/ofrep-flags.json, and a set built to reach every
  branch of the mapping): the Node SDK's answers must be shipyard's evaluator's, for every context.
- The browser SDK on `/api/frontend`: the same answers, and a change made through the API reaches
  the page without a reload (the SDK polls, with ETags).

One server and one Node process serve the whole file; each test imports its flags (`?replace=true`).
The packages are pinned in tests/node/package-lock.json; `make test` installs them (`npm ci`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shipyard.flags import Evaluation, Evaluator, FlagSet, Reason, compile_flagset
from shipyard.flags._unleash import unleash_context as evaluation_context
from shipyard.flags._unleash_import import from_unleash
from support.browser import bundle_page, chromium_page
from support.flag_server import FlagServer, StateTemplate, running_flag_server

from .test_ofrep import CASES, ENV
from .test_ofrep_node import static_site

pytestmark = pytest.mark.integration

NODE_DIR = Path(__file__).resolve().parents[2] / "node"
NODE = shutil.which("node")
SPEC_DIR = Path(__file__).resolve().parents[4] / "shared" / "unleash-client-specification"
TIMEOUT_S = 60.0
APP_NAME = "shipyard-node-tests"
"""The Node SDK's appName: part of every context it evaluates (its static context)."""
UNLEASH_FIELDS = ("userId", "sessionId", "remoteAddress", "currentTime", "appName", "environment")


@pytest.fixture(scope="module", autouse=True)
def node_packages() -> None:
    if NODE is None:
        pytest.skip("node is not installed (Node 20 is part of this machine's image)")
    if not (NODE_DIR / "node_modules" / "unleash-client").is_dir():
        pytest.fail(f"the npm packages are not installed: run `npm ci --prefix {NODE_DIR}` (make test does)")


@pytest.fixture(scope="module")
def server(flag_state: StateTemplate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlagServer]:
    with running_flag_server(flag_state, tmp_path_factory.mktemp("unleash-node-server")) as running:
        yield running


class NodeSdk:
    """tests/node/unleash-client.mjs: one JSON command per line, one JSON answer per line."""

    def __init__(self, server: FlagServer) -> None:
        self.process = subprocess.Popen(
            [NODE or "node", str(NODE_DIR / "unleash-client.mjs"), f"{server.url}/api", server.client_token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=NODE_DIR,
        )

    def send(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"the Node SDK ended: {stderr}")
        return json.loads(line)  # type: ignore[no-any-return]

    def evaluate(self, cases: list[dict[str, Any]]) -> list[Any]:
        """Start a new SDK instance (it fetches the features now on the server) and evaluate."""
        started = self.send({"cmd": "start"})
        assert started == {"started": True}, started
        answer = self.send({"cmd": "evaluate", "cases": cases})
        return answer["results"]  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
            self.process.stdin.flush()
            self.process.wait(TIMEOUT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture(scope="module")
def node(server: FlagServer) -> Iterator[NodeSdk]:
    sdk = NodeSdk(server)
    try:
        yield sdk
    finally:
        sdk.close()


def import_flags(server: FlagServer, flagset: FlagSet | dict[str, Any]) -> Evaluator:
    """Replace the server's flags; shipyard's own evaluator over the flags the server now holds."""
    data = flagset.to_data() if isinstance(flagset, FlagSet) else flagset
    response = server.request("POST", "/feature-flags/import?replace=true", json=data)
    assert response.status_code == 200, response.text
    return compile_flagset(FlagSet.from_data(server.request("GET", "/feature-flags").json()))


# --- Unleash's client specification ----------------------------------------------------------------


def spec_files() -> list[str]:
    if not SPEC_DIR.is_dir():
        return []
    return list(json.loads((SPEC_DIR / "index.json").read_text()))


def test_node_sdk_passes_unleashs_client_specification(server: FlagServer, node: NodeSdk) -> None:
    files = spec_files()
    if not files:
        pytest.skip(f"Unleash's client specification is not at {SPEC_DIR}")
    total, failures = 0, []
    started = time.monotonic()
    for name in files:
        spec = json.loads((SPEC_DIR / name).read_text())
        imported = from_unleash(spec["state"], environment=ENV)
        import_flags(server, imported.flagset)
        cases = [
            {
                "toggle": t["toggleName"],
                "context": t["context"],
                "kind": "enabled",
                "expected": t["expectedResult"],
            }
            for t in spec.get("tests", [])
        ] + [
            {
                "toggle": t["toggleName"],
                "context": t["context"],
                "kind": "variant",
                "expected": t["expectedResult"],
            }
            for t in spec.get("variantTests", [])
        ]
        results = node.evaluate([{k: c[k] for k in ("toggle", "context", "kind")} for c in cases])
        for case, got in zip(cases, results, strict=True):
            total += 1
            if got != case["expected"]:
                failures.append(
                    f"{name}: {case['toggle']} for {case['context']}: {got} != {case['expected']}"
                )
    passed = total - len(failures)
    took = time.monotonic() - started
    print(f"\nUnleash client specification through the Node SDK: {passed}/{total} ({took:.1f} s)")
    assert total == 279
    assert not failures, "\n".join(failures)


# --- shipyard-native flags -------------------------------------------------------------------------


def unleash_context(context: dict[str, Any]) -> dict[str, Any]:
    """An OFREP test context as an Unleash one: `targetingKey` is the userId, the rest properties."""
    found: dict[str, Any] = {}
    properties = {k: v for k, v in context.items() if k != "targetingKey" and k not in UNLEASH_FIELDS}
    if "targetingKey" in context:
        found["userId"] = context["targetingKey"]
    found |= {k: v for k, v in context.items() if k in UNLEASH_FIELDS}
    if properties:
        found["properties"] = properties
    return found


def shipyard_context(context: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An Unleash context as shipyard's evaluator reads it (flat, strings; currentTime now when
    it has none, as Unleash's SDKs compare dates with their clock)."""
    return evaluation_context({**context, **extra}, now=datetime.now(UTC))


def check_payload(flagset: FlagSet, key: str, payload: dict[str, str], value: Any, at: str) -> None:
    """The payload of a string, number or json flag's variant carries its value, typed."""
    flag = flagset.flag(key)
    assert flag is not None
    assert payload["type"] == flag.type, at
    assert (json.loads(payload["value"]) if flag.type != "string" else payload["value"]) == value, at


def expected_answer(
    flagset: FlagSet, evaluator: Evaluator, key: str, context: dict[str, Any]
) -> tuple[bool, dict[str, Any]]:
    """Unleash's isEnabled and getVariant for shipyard's evaluation (issue 14's contract): a
    boolean flag is on when it serves true; a string, number or json flag when it is enabled and
    its prerequisites hold, its value being the variant's payload."""
    flag = flagset.flag(key)
    assert flag is not None
    evaluation: Evaluation = evaluator.evaluate(key, context, ENV)
    off = {"name": "disabled", "enabled": False, "feature_enabled": False}
    if evaluation.reason in (Reason.DISABLED, Reason.ERROR):
        return False, off
    if flag.type == "boolean":
        if evaluation.value is not True:
            return False, off
        if evaluation.variant is None:
            return True, {"name": "disabled", "enabled": False, "feature_enabled": True}
        variant = {"name": evaluation.variant, "enabled": True, "feature_enabled": True}
        if evaluation.payload is not None:
            variant["payload"] = evaluation.payload
        return True, variant
    for pre in flag.prerequisites:
        parent = evaluator.evaluate(pre.flag, context, ENV)
        parent_flag = flagset.flag(pre.flag)
        assert parent_flag is not None
        parent_on = parent.reason not in (Reason.DISABLED, Reason.ERROR) and not parent_flag.prerequisites
        parent_on = parent_on and (parent.value is True or parent_flag.type != "boolean")
        variant_ok = not pre.variants or (parent.variant or "disabled") in pre.variants
        if (parent_on and variant_ok) != pre.enabled:
            return False, off
    unnamed = "default" if evaluation.reason in (Reason.STATIC, Reason.DEFAULT) else "rule"
    return True, {
        "name": evaluation.variant or unnamed,
        "enabled": True,
        "feature_enabled": True,
        "value": evaluation.value,
    }


def check_node_answers(
    flagset: FlagSet,
    evaluator: Evaluator,
    contexts: list[dict[str, Any]],
    node: NodeSdk,
    random_without: dict[str, str] | None = None,
) -> int:
    """Every flag for every context through the Node SDK equals shipyard's answer; how many.

    `random_without` names the flags whose answer is random (by design, in both) for a context
    without the given attribute: those pairs are not compared."""
    keys = [f.key for f in flagset.flags]
    random_without = random_without or {}
    cases: list[dict[str, Any]] = [
        {"toggle": key, "context": context, "kind": kind}
        for context in contexts
        for key in keys
        for kind in ("enabled", "variant")
        if key not in random_without or random_without[key] in shipyard_context(context)
    ]
    results = node.evaluate(cases)
    for case, got in zip(cases, results, strict=True):
        key: str = case["toggle"]
        unleash: dict[str, Any] = case["context"]
        enabled, variant = expected_answer(
            flagset, evaluator, key, shipyard_context(unleash, appName=APP_NAME)
        )
        at = f"{key} for {unleash}"
        if case["kind"] == "enabled":
            assert got is enabled, at
            continue
        if "value" in variant:  # a string, number or json flag: its value is the payload
            check_payload(flagset, key, got.pop("payload"), variant.pop("value"), at)
        assert got == variant, at
    return len(cases)


def test_node_sdk_gives_shipyards_answers_on_seed_flags_and_sees_a_change(
    server: FlagServer, node: NodeSdk
) -> None:
    evaluator = import_flags(server, CASES["flagset"])
    flagset = FlagSet.from_data(CASES["flagset"])
    contexts = [unleash_context(c) for c in CASES["contexts"]]
    count = check_node_answers(flagset, evaluator, contexts, node)
    print(f"\nseed-003 flags through the Node SDK: {count} answers equal shipyard's")

    # The same SDK instance, not restarted, polls (with ETags) and sees a change made through the API.
    change = CASES["change"]
    probe = {"toggle": change["flag"], "context": contexts[0], "kind": "enabled"}
    assert node.send({"cmd": "evaluate", "cases": [probe]})["results"] == [False]
    server.patch_flag(change["flag"], change["patch"])
    assert node.send({"cmd": "until", "case": probe, "result": True}) == {"reached": True}
    # Its next polls send the new ETag and are answered 304; it announced itself and sends metrics.
    wait_until(lambda: server.requests_served("/api/client/features", 304) > 0, "no poll was answered 304")
    assert server.requests_served("/api/client/register", 202, method="POST") > 0
    wait_until(lambda: server.requests_served("/api/client/metrics", 202, method="POST") > 0, "no metrics")


def wait_until(condition: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


# Every branch of the mapping: rules serving false before rules serving true (negated into the later
# strategies), negated and nested segments, inverted and case-insensitive conditions, a rollout on an
# attribute with fallback random (two strategies), splits with payloads and overrides, non-boolean
# flags with rollouts, splits and prerequisites, and dependencies on and off.
MAPPING_FLAGS: dict[str, Any] = {
    "segments": [
        {"name": "eu", "conditions": [{"attribute": "country", "op": "in", "value": ["FR", "DE"]}]},
        {
            "name": "eu-staff",
            "conditions": [
                {"op": "segment", "value": "eu"},
                {"attribute": "email", "op": "ends_with", "value": "@example.com", "case_insensitive": True},
            ],
        },
        {"name": "not-eu", "conditions": [{"op": "segment", "value": "eu", "inverted": True}]},
    ],
    "flags": [
        {
            "key": "blocklist-then-staff",
            "default_value": False,
            "environments": {
                "production": {
                    "enabled": True,
                    "rules": [
                        {
                            "conditions": [{"attribute": "plan", "op": "eq", "value": "banned"}],
                            "value": False,
                        },
                        {
                            "conditions": [{"op": "segment", "value": "eu-staff"}],
                            "value": True,
                            "variant": "staff",
                        },
                        {
                            "conditions": [
                                {"attribute": "role", "op": "in", "value": ["ADMIN"]},
                                {"attribute": "country", "op": "eq", "value": "US"},
                            ],
                            "value": False,
                        },
                        {
                            "conditions": [{"attribute": "version", "op": "semver_gte", "value": "2.0.0"}],
                            "rollout": {"percent": 60},
                            "value": True,
                        },
                    ],
                }
            },
        },
        {
            "key": "on-except",
            "default_value": False,
            "environments": {
                "production": {
                    "enabled": True,
                    "value": True,
                    "rules": [
                        {
                            "conditions": [
                                {"op": "segment", "value": "eu"},
                                {"attribute": "plan", "op": "not_in", "value": ["pro"]},
                            ],
                            "value": False,
                        },
                        {
                            "conditions": [{"attribute": "userId", "op": "matches", "value": "^u-[0-4]$"}],
                            "value": False,
                        },
                    ],
                }
            },
        },
        {
            "key": "sticky-on-plan",
            "default_value": False,
            "environments": {
                "production": {
                    "enabled": True,
                    "rules": [
                        {
                            "conditions": [{"op": "segment", "value": "not-eu"}],
                            "rollout": {
                                "percent": 50,
                                "stickiness": "plan",
                                "fallback": "random",
                                "group_id": "g1",
                            },
                            "value": True,
                        },
                    ],
                }
            },
        },
        {
            "key": "banner",
            "type": "string",
            "default_value": "none",
            "environments": {
                "production": {
                    "enabled": True,
                    "value": "plain",
                    "rules": [
                        {
                            "conditions": [{"attribute": "country", "op": "in", "value": ["FR"]}],
                            "value": "bonjour",
                            "variant": "fr",
                        },
                        {
                            "conditions": [{"attribute": "age", "op": "gte", "value": 18}],
                            "split": {
                                "stickiness": "default",
                                "fallback": "random",
                                "variants": [
                                    {
                                        "name": "a",
                                        "value": "A",
                                        "weight": 30,
                                        "overrides": [{"attribute": "userId", "values": ["u-7"]}],
                                    },
                                    {"name": "b", "value": "B", "weight": 70},
                                ],
                            },
                        },
                        {"rollout": {"percent": 40}, "value": "forty"},
                    ],
                }
            },
        },
        {
            "key": "limits",
            "type": "json",
            "default_value": {"max": 1},
            "prerequisites": [{"flag": "blocklist-then-staff", "enabled": False}],
            "environments": {"production": {"enabled": True, "value": {"max": 10, "tags": ["ü", "x"]}}},
        },
        {
            "key": "ratio",
            "type": "number",
            "default_value": 0,
            "prerequisites": [{"flag": "banner", "variants": ["fr", "a"]}],
            "environments": {"production": {"enabled": True, "value": 0.25}},
        },
        {
            "key": "legacy-window",
            "default_value": False,
            "environments": {
                "production": {
                    "enabled": True,
                    "value": True,
                    "rules": [
                        {
                            "conditions": [
                                {
                                    "attribute": "currentTime",
                                    "op": "after",
                                    "value": "2100-01-01T00:00:00+02:00",
                                }
                            ],
                            "value": False,
                        },
                        {
                            "conditions": [
                                {"attribute": "currentTime", "op": "before", "value": "2000-01-01T00:00:00Z"}
                            ],
                            "value": True,
                            "variant": "y2k",
                        },
                    ],
                }
            },
        },
        {
            "key": "experiment",
            "default_value": False,
            "prerequisites": [{"flag": "on-except"}],
            "environments": {
                "production": {
                    "enabled": True,
                    "rules": [
                        {
                            "conditions": [
                                {
                                    "attribute": "ip",
                                    "op": "in_cidr",
                                    "value": ["10.0.0.0/8"],
                                    "inverted": True,
                                }
                            ],
                            "split": {
                                "group_id": "exp",
                                "variants": [
                                    {
                                        "name": "blue",
                                        "value": True,
                                        "weight": 1,
                                        "payload": {"type": "json", "value": '{"c":"blue"}'},
                                    },
                                    {"name": "green", "value": True, "weight": 3},
                                ],
                            },
                        }
                    ],
                }
            },
        },
    ],
}

MAPPING_CONTEXTS: list[dict[str, Any]] = [
    {},
    {"userId": "u-1"},
    {"userId": "u-7", "properties": {"age": "30", "country": "US", "plan": "pro", "role": "ADMIN"}},
    {"userId": "u-9", "properties": {"country": "FR", "email": "Ann@EXAMPLE.com", "plan": "banned"}},
    {"userId": "u-5", "properties": {"country": "DE", "email": "bob@example.com", "version": "2.1.0"}},
    {"userId": "u-6", "properties": {"country": "DE", "plan": "pro", "ip": "10.1.2.3", "age": "17"}},
    {"sessionId": "s-1", "properties": {"version": "3.0.0", "age": "40", "ip": "192.168.1.1"}},
    {"userId": "u-2000", "currentTime": "1999-06-01T00:00:00Z"},
    {"userId": "u-2150", "currentTime": "2150-01-01T00:00:00Z", "properties": {"country": "FR"}},
    *[
        {
            "userId": f"user-{i}",
            "properties": {"plan": f"p{i % 7}", "version": f"{i % 4}.0.0", "age": str(10 + i)},
        }
        for i in range(40)
    ],
]


def test_node_sdk_gives_shipyards_answers_on_every_mapped_construct(
    server: FlagServer, node: NodeSdk
) -> None:
    evaluator = import_flags(server, MAPPING_FLAGS)
    flagset = FlagSet.from_data(MAPPING_FLAGS)
    response = server.request("GET", "/api/client/features", headers={"Authorization": server.client_token})
    assert "X-Shipyard-Unleash-Omitted" not in response.headers, response.headers
    count = check_node_answers(
        flagset, evaluator, MAPPING_CONTEXTS, node, random_without={"sticky-on-plan": "plan"}
    )
    print(f"\nevery mapped construct through the Node SDK: {count} answers equal shipyard's")


# --- a browser: unleash-proxy-client on the frontend API ------------------------------------------------


def check_browser_answers(
    flagset: FlagSet, evaluator: Evaluator, sent: dict[str, Any], flags: dict[str, Any], where: str
) -> None:
    context = shipyard_context(sent, environment=ENV)
    for key, got in flags.items():
        enabled, variant = expected_answer(flagset, evaluator, key, context)
        at = f"{where}: {key} for {sent}: {got}"
        assert got["enabled"] is enabled, at
        if "value" in variant:
            check_payload(flagset, key, got["variant"].pop("payload"), variant.pop("value"), at)
        assert got["variant"] == variant, at


def test_browser_sdk_gives_shipyards_answers_and_sees_a_change(server: FlagServer, tmp_path: Path) -> None:
    evaluator = import_flags(server, CASES["flagset"])
    flagset = FlagSet.from_data(CASES["flagset"])
    keys = [f.key for f in flagset.flags]
    site = tmp_path / "site"
    bundle_page(NODE_DIR / "unleash-web.js", site)
    with static_site(site) as origin, chromium_page(tmp_path, "unleash-web") as browser:
        page = browser.page
        failed: list[str] = []
        page.on("console", lambda message: failed.append(message.text) if message.type == "error" else None)
        page.goto(f"{origin}/index.html")
        contexts = [unleash_context(c) for c in CASES["contexts"]]
        page.evaluate(
            "c => window.unleash.start(c)",
            {
                "url": f"{server.url}/api/frontend",
                "clientKey": server.client_token,
                "context": contexts[0],
                "refreshInterval": 1,
            },
        )
        for context in contexts:
            answer = page.evaluate("a => window.unleash.evaluate(...a)", [context, keys])
            check_browser_answers(flagset, evaluator, answer["sent"], answer["flags"], "browser")
        assert not failed, failed

        change = CASES["change"]
        before = page.evaluate("k => window.unleash.answer(k)", change["flag"])
        assert before["enabled"] is False
        server.patch_flag(change["flag"], change["patch"])
        changed_at = time.monotonic()
        page.wait_for_function(
            "k => window.unleash.answer(k).enabled === true", arg=change["flag"], timeout=TIMEOUT_S * 1000
        )
        print(f"\nbrowser: change seen after {time.monotonic() - changed_at:.2f} s (polled every 1 s)")
        browser.shot("after-change")
    # Polling sent If-None-Match; the unchanged rounds were answered 304.
    assert server.requests_served("/api/frontend", 304) > 0
