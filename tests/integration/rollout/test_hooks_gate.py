"""Release gates on real processes behind a real HAProxy, under load, through the `shipyard` CLI.

- A smoke test that finds the new version answering errors rolls the release back before a single
  user request reaches it: no request fails, the load generator never got an answer from it, and
  the new version's own access log holds the smoke test's requests and HAProxy's health checks only.
- A passing smoke test and a passing test step release normally; a failing test step rolls back.
- A controller killed while a hook runs is resumed: the earlier run is killed, the hook runs again.

No assertion is on wall time.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

from shipyard.host import pid_alive
from shipyard.rollout import LoadGenerator
from support.releases import ReleaseStack, kill_group, release_stack, spec_text, wait_for

SMOKE_PATH = "/smoke"
SMOKE_HEADER = "X-Smoke-Test"


def _smoke_script(tmp: Path, *, hold_s: float = 0.0) -> str:
    """A smoke test: 50 requests to the candidate's own address (not HAProxy), on its own path and
    with a header, failing at the first error answer. It notes each start and end in `smoke.log`; its
    first run waits `hold_s` first (long enough that only a kill ends it)."""
    script = tmp / "smoke.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import os, sys, time, urllib.error, urllib.request
            path = {str(tmp / "smoke.log")!r}
            first_run = not os.path.exists(path)
            log = open(path, "a")
            env = {{k: v for k, v in os.environ.items() if k.startswith("SHIPYARD_")}}
            print("start", os.getpid(), sorted(env.items()), file=log, flush=True)
            time.sleep({hold_s} if first_run else 0)
            url = os.environ["SHIPYARD_CANDIDATE_URL"] + {SMOKE_PATH!r}
            for i in range(50):
                request = urllib.request.Request(url, headers={{{SMOKE_HEADER!r}: "1"}})
                try:
                    urllib.request.urlopen(request, timeout=5).read()
                except urllib.error.HTTPError as error:
                    print(f"smoke: GET {SMOKE_PATH} answered {{error.code}} at request {{i + 1}}")
                    sys.exit(1)
            print("end", os.getpid(), file=log, flush=True)
            """
        )
    )
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


@contextlib.contextmanager
def _gated(tmp: Path, hooks: str, steps: str | None = None) -> Iterator[ReleaseStack]:
    """v1 live (released without hooks), then the spec gets `hooks` (a flow mapping) and `steps`
    for the releases under test. Every version logs each request it answers (ACCESS_LOG)."""
    env = {"ACCESS_LOG": "1"}
    with release_stack(tmp, "canary", env=env) as stack:
        text = spec_text(stack.port, "canary", env=env, steps=steps)
        stack.spec.write_text(text.replace("rollout:\n", f"rollout:\n  hooks: {hooks}\n", 1))
        yield stack


def _access_log(stack: ReleaseStack, version: str) -> list[str]:
    """The request lines version `version`'s first instance logged."""
    log = stack.directory / "state" / "local" / "releases-test" / "processes" / f"web.{version}_1.log"
    return [line for line in log.read_text().splitlines() if '"GET ' in line]


def test_a_failing_smoke_test_rolls_back_before_any_user_request_reaches_the_new_version(
    tmp_path: Path,
) -> None:
    with _gated(tmp_path, f"{{smoke: {{command: {_smoke_script(tmp_path)!r}, timeout: 30s}}}}") as stack:
        with LoadGenerator(stack.url, 200, connections=8) as load:
            time.sleep(0.5)
            deploy = stack.cli("deploy", "web", "--version", "bad")  # ERROR_RATE__bad: 0.2
            time.sleep(0.5)
        row = stack.latest()
        history = row.state["history"]
        whats = [event["what"] for event in history]
        assert row.outcome == "rolled_back", (deploy.stdout, deploy.stderr, whats)
        assert deploy.returncode != 0
        assert row.reason.startswith("smoke test failed with exit code 1: smoke: GET /smoke answered 500")
        assert "smoke test failed" in whats
        # The release never gave it a share, and it is gone.
        assert all(event["weights"]["candidate"] == 0 for event in history)
        assert "weights set" not in whats
        assert stack.target().status("web").versions == {"v1": 100}
        # No user request failed, and none was answered by it.
        assert load.report is not None
        assert load.report.failed == 0, load.report.failures[:5]
        assert load.report.total > 200
        assert "bad" not in load.report.by_version
        # Its own log: the smoke test's requests (so it did log them) and health checks, nothing else.
        lines = _access_log(stack, "bad")
        smoke = [line for line in lines if f'"GET {SMOKE_PATH} ' in line]
        assert smoke, lines[:5]
        others = [
            line for line in lines if f'"GET {SMOKE_PATH} ' not in line and '"GET /healthz ' not in line
        ]
        assert others == [], others[:5]
        # The smoke test was told where and what (the candidate's own address, not HAProxy's).
        seen = (tmp_path / "smoke.log").read_text()
        assert "('SHIPYARD_CANDIDATE_VERSION', 'bad')" in seen
        assert "('SHIPYARD_SERVICE', 'web')" in seen
        assert "('SHIPYARD_ENVIRONMENT', 'test')" in seen
        assert f":{stack.port}" not in seen.split("SHIPYARD_CANDIDATE_URL', '", 1)[1].split("'", 1)[0]
        # `rollout history --steps` shows the hook's step with its output's tail.
        steps = stack.steps(row.id)
        smoke_step = next(step for step in steps if step.action["type"] == "RunHook")
        assert smoke_step.status == "done"
        assert smoke_step.outcome["ok"] is False
        assert "answered 500" in smoke_step.outcome["output_tail"]
        shown = stack.cli("rollout", "history", "web", "--steps", str(row.id))
        assert shown.returncode == 0, shown.stderr
        assert "smoke test" in shown.stdout


def test_passing_gates_release_normally_and_a_failing_test_step_rolls_back(tmp_path: Path) -> None:
    checkout = (
        'test "$SHIPYARD_CANDIDATE_VERSION" != v3 || { echo "checkout: cart total 0.00 != 9.99"; exit 1; };'
        ' echo "checkout ok for $SHIPYARD_CANDIDATE_VERSION"'
    )
    hooks = (
        f"{{smoke: {_smoke_script(tmp_path)!r}, tests: {{checkout: {{command: {checkout!r}, timeout: 20s}}}},"
        f" post: 'echo post for $SHIPYARD_CANDIDATE_VERSION'}}"
    )
    steps = "[{weight: 20}, {test: checkout}, {analysis: 2s}, {weight: 100}]"
    with _gated(tmp_path, hooks, steps) as stack:
        with LoadGenerator(stack.url, 150, connections=8) as load:
            time.sleep(0.5)
            good = stack.cli("deploy", "web", "--version", "v2")
            passed = stack.latest()
            bad = stack.cli("deploy", "web", "--version", "v3")
            time.sleep(0.5)
        assert passed.outcome == "succeeded", (good.stdout, good.stderr, passed.reason)
        whats = [event["what"] for event in passed.state["history"]]
        assert [w for w in whats if w.endswith("passed") and "analysis" not in w] == [
            "smoke test passed",
            "test 'checkout' passed",
            "post hook passed",
        ]
        ran = [s.action for s in stack.steps(passed.id) if s.action["type"] == "RunHook"]
        assert [(a["kind"], a["name"]) for a in ran] == [("smoke", ""), ("test", "checkout"), ("post", "")]
        failed = stack.latest()
        assert failed.candidate == "v3"
        assert failed.outcome == "rolled_back", (bad.stdout, bad.stderr, failed.reason)
        assert failed.reason == "test 'checkout' failed with exit code 1: checkout: cart total 0.00 != 9.99"
        assert stack.target().status("web").versions == {"v2": 100}
        assert load.report is not None
        assert load.report.failed == 0, load.report.failures[:5]


def test_a_controller_killed_while_a_hook_runs_resumes_it_from_its_start(tmp_path: Path) -> None:
    smoke = _smoke_script(tmp_path, hold_s=60.0)
    hooks = f"{{smoke: {{command: {smoke!r}, timeout: 90s}}}}"
    with _gated(tmp_path, hooks, "[{weight: 50}, {weight: 100}]") as stack:
        log = tmp_path / "smoke.log"
        with LoadGenerator(stack.url, 100, connections=4) as load:
            controller = stack.start_cli("deploy", "web", "--version", "v2")
            started = wait_for(lambda: log.exists() and "start" in log.read_text(), 60)
            assert started, "the smoke test never started"
            first = int(log.read_text().split()[1])
            kill_group(controller)
            assert pid_alive(first)  # the hook has a session of its own: it outlived its controller
            resumed = stack.cli("rollout", "resume", "web")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert load.report is not None
        assert load.report.failed == 0, load.report.failures[:5]
        row = stack.latest()
        assert row.outcome == "succeeded", (row.reason, resumed.stdout)
        assert not pid_alive(first)
        runs = [line.split()[:2] for line in log.read_text().splitlines()]
        second = next(int(pid) for what, pid in runs if what == "start" and int(pid) != first)
        # The first run was killed before it finished; the second ran to its end.
        assert ["end", str(first)] not in runs
        assert ["end", str(second)] in runs
        whats = [event["what"] for event in row.state["history"]]
        # (The pid recorded is the hook's shell's, the leader of the group the test's process is in.)
        assert any(what.startswith("stopped the smoke hook's earlier run (pid ") for what in whats), whats
        # One step for the hook, started once and finished by the resumed controller.
        hooks = [s for s in stack.steps(row.id) if s.action["type"] == "RunHook"]
        assert len(hooks) == 1
        assert hooks[0].status == "done"
        assert hooks[0].outcome["ok"] is True
