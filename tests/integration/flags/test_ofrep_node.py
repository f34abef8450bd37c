"""OFREP with npm's official OpenFeature SDKs and providers against a real `shipyard serve`.

- Node (as a NestJS API): `@openfeature/server-sdk` with `@openfeature/ofrep-provider`, in a
  `node` process (tests/node/ofrep-server.mjs).
- A browser (as a Next.js page): `@openfeature/web-sdk` with `@openfeature/ofrep-web-provider`,
  bundled by npm's esbuild at test time and loaded in Debian's Chromium through Playwright, from
  a page on another origin than the server's (so CORS is exercised as a real app meets it).

Each evaluates every seed-003 flag type and rule kind (tests/node/ofrep-flags.json) for every
context; the answers must be shipyard's own evaluator's. Then a flag changes through the API and
the same client, not restarted, must see it (the web provider through its polling, with ETags).

The packages are pinned in tests/node/package-lock.json; `make test` installs them (`npm ci`).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.flags import Evaluator, FlagSet, compile_flagset
from support.browser import bundle_page, chromium_page
from support.flag_server import FlagServer, StateTemplate, running_flag_server
from support.servers import free_port

from .test_ofrep import CASES, ENV, TYPES, expected_variant, load_flags, shipyard_context

pytestmark = pytest.mark.integration

NODE_DIR = Path(__file__).resolve().parents[2] / "node"
NODE = shutil.which("node")
TIMEOUT_S = 60.0


@pytest.fixture(scope="module", autouse=True)
def node_packages() -> None:
    if NODE is None:
        pytest.skip("node is not installed (Node 20 is part of this machine's image)")
    if not (NODE_DIR / "node_modules" / "@openfeature" / "ofrep-provider").is_dir():
        pytest.fail(f"the npm packages are not installed: run `npm ci --prefix {NODE_DIR}` (make test does)")


@pytest.fixture(scope="module")
def server(flag_state: StateTemplate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlagServer]:
    """One server for the file (starting one costs seconds); each test re-imports the flags."""
    with running_flag_server(flag_state, tmp_path_factory.mktemp("ofrep-node-server")) as running:
        yield running


@pytest.fixture
def flag_server(server: FlagServer) -> FlagServer:
    return server


def check_answers(answers: list[dict[str, Any]], evaluator: Evaluator, where: str) -> None:
    """Each SDK answer is what shipyard's evaluator says for the same context."""
    assert [a["context"] for a in answers] == CASES["contexts"]
    for answer in answers:
        context = answer["context"]
        for key, got in answer["flags"].items():
            expected = evaluator.evaluate(key, shipyard_context(context), ENV)
            at = f"{where}: {key} for {context}: {got}"
            assert got["errorCode"] is None, at
            assert got["value"] == expected.value, at
            assert got["reason"] == str(expected.reason), at
            assert got["variant"] == expected_variant(expected), at
            assert got["flagMetadata"]["type"] == TYPES[key], at
            assert got["flagMetadata"]["kind"] == next(
                f for f in CASES["flagset"]["flags"] if f["key"] == key
            ).get("kind", "release"), at
        assert set(answer["flags"]) == set(TYPES), where


# --- Node: the server SDK and the OFREP provider -------------------------------------------------


def test_node_server_sdk_gives_shipyards_answers_and_sees_a_change(flag_server: FlagServer) -> None:
    evaluator = load_flags(flag_server)
    started = time.monotonic()
    process = subprocess.Popen(
        [NODE or "node", str(NODE_DIR / "ofrep-server.mjs"), flag_server.url, flag_server.client_token],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=NODE_DIR,
    )
    try:
        assert process.stdout is not None
        assert process.stdin is not None
        first = json.loads(process.stdout.readline() or "null")
        assert first is not None, process.stderr.read() if process.stderr else ""
        print(
            f"\nnode: {len(CASES['contexts']) * len(TYPES)} evaluations in {time.monotonic() - started:.1f} s"
        )
        check_answers(first["answers"], evaluator, "node")
        assert first["probes"]["missing"]["errorCode"] == "FLAG_NOT_FOUND"
        assert first["probes"]["missing"]["value"] is True
        assert first["probes"]["mismatch"]["errorCode"] == "TYPE_MISMATCH"
        assert first["probes"]["mismatch"]["value"] == 7

        change = CASES["change"]
        flag_server.patch_flag(change["flag"], change["patch"])
        changed = compile_after(flag_server)
        process.stdin.write("again\n")
        process.stdin.flush()
        second = json.loads(process.stdout.readline() or "null")
        assert second is not None, process.stderr.read() if process.stderr else ""
        check_answers(second["answers"], changed, "node after the change")
        assert {a["flags"][change["flag"]]["value"] for a in second["answers"]} == {True}
        process.stdin.write("exit\n")
        process.stdin.flush()
        assert process.wait(TIMEOUT_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def compile_after(server: FlagServer) -> Evaluator:
    """shipyard's evaluator over the server's flags as they are now."""
    return compile_flagset(FlagSet.from_data(server.request("GET", "/feature-flags").json()))


# --- a browser: the web SDK and the OFREP web provider -------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """Serve `directory` on loopback (the app's own origin, not the flag server's)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_browser_web_sdk_gives_shipyards_answers_and_sees_a_change(
    flag_server: FlagServer, tmp_path: Path
) -> None:
    evaluator = load_flags(flag_server)
    site = tmp_path / "site"
    bundle_page(NODE_DIR / "ofrep-web.js", site)
    poll_ms = 300
    with static_site(site) as origin, chromium_page(tmp_path, "ofrep-web") as browser:
        page = browser.page
        failed: list[str] = []
        page.on("console", lambda message: failed.append(message.text) if message.type == "error" else None)
        page.goto(f"{origin}/index.html")
        first_context = CASES["contexts"][0]
        started = time.monotonic()
        page.evaluate(
            "c => window.ofrep.start(c)",
            {
                "baseUrl": flag_server.url,
                "token": flag_server.client_token,
                "context": first_context,
                "pollInterval": poll_ms,
            },
        )
        answers = [
            {
                "context": context,
                "flags": page.evaluate(
                    "a => window.ofrep.evaluate(...a)", [context, TYPES, CASES["defaults"]]
                ),
            }
            for context in CASES["contexts"]
        ]
        print(f"\nbrowser: {len(answers)} contexts in {time.monotonic() - started:.1f} s")
        check_answers(answers, evaluator, "browser")
        assert not failed, failed
        missing = page.evaluate("() => window.ofrep.value('no-such-flag', 'boolean', true)")
        assert (missing["value"], missing["errorCode"]) == (True, "FLAG_NOT_FOUND")

        # The page stays on the last context; a change must reach it by the provider's polling.
        change = CASES["change"]
        before = page.evaluate("k => window.ofrep.value(k, 'boolean', true)", change["flag"])
        assert (before["value"], before["reason"]) == (False, "DISABLED")
        changes_before = page.evaluate("() => window.ofrep.changes()")
        flag_server.patch_flag(change["flag"], change["patch"])
        changed_at = time.monotonic()
        page.wait_for_function(
            "k => window.ofrep.value(k, 'boolean', false).value === true",
            arg=change["flag"],
            timeout=TIMEOUT_S * 1000,
        )
        print(f"browser: change seen after {time.monotonic() - changed_at:.2f} s (polled every {poll_ms} ms)")
        after = page.evaluate("k => window.ofrep.value(k, 'boolean', false)", change["flag"])
        assert after["reason"] == "STATIC"
        assert page.evaluate("() => window.ofrep.changes()") > changes_before
        browser.shot("after-change")
    # Polling sent If-None-Match; the unchanged rounds were answered 304 by the server.
    assert flag_server.requests_served("/ofrep/v1/evaluate/flags", 304, method="POST") > 0
