"""The analysis under load, on real processes behind a real HAProxy: it judges only what it measured.

- A canary 300 ms slower than the stable is caught in its first analysis window, never passed.
- A window whose request-log lines were lost (the log reader paused) is inconclusive, never passed.
- A candidate whose app crashes a moment after it became healthy fails the release at once, and
  the release says why with the app's last log lines.

No assertion is on wall time: on a loaded machine windows and counts decide, not seconds.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shipyard.rollout import LoadGenerator
from shipyard.rollout._analysis import analyse
from shipyard.rollout._model import Verdict
from shipyard.rollout.targets.haproxy import LOG_RING
from shipyard.rollout.targets.local import LocalTarget
from shipyard.spec import Analysis as AnalysisPolicy
from support.demo_app import APP, demo_command
from support.haproxy import demo_environ, local_target, wait_until
from support.releases import ReleaseStack, release_stack, spec_text

CRASHES_AFTER_S = 0.5


@contextlib.contextmanager
def _stack(tmp: Path, run: str, steps: str, analysis: str) -> Iterator[ReleaseStack]:
    """A stack with v1 live, deployed by the CLI; v-`slow` answers 300 ms late. v1 goes live with
    release_stack's short steps (its first release would otherwise wait out the long windows),
    then the spec gets `steps` and `analysis` for the release under test."""
    spec: dict[str, Any] = {
        "run": run,
        "env": {"ADDED_LATENCY_MS": "0", "ADDED_LATENCY_MS__slow": "300"},
        "health_timeout": "20s",
    }
    with release_stack(tmp, "canary", **spec) as stack:
        stack.spec.write_text(spec_text(stack.port, "canary", steps=steps, analysis=analysis, **spec))
        yield stack


def test_a_canary_300_ms_slower_is_caught_in_its_first_window_and_never_passed(tmp_path: Path) -> None:
    # One long window, analysed every second: the first analysis that proves it slow ends it.
    steps = "[{weight: 25}, {analysis: 30s}, {weight: 100}]"
    analysis = "{interval: 1s, window: 30s, max_error_rate: 0.02, max_p99_ratio: 2.0, min_requests: 20}"
    with _stack(tmp_path, demo_command(), steps, analysis) as stack:
        with LoadGenerator(stack.url, 200, connections=16) as load:
            deploy = stack.cli("deploy", "web", "--version", "slow")
        assert load.report is not None
        row = stack.latest()
        history = row.state["history"]
        whats = [event["what"] for event in history]
        assert row.outcome == "rolled_back", (deploy.stdout, deploy.stderr, whats)
        assert "analysis passed" not in whats
        assert "analysis inconclusive" not in whats  # no window before the one that caught it
        # The stable's p99 was measured before the canary took traffic (a max_p99_ms from it).
        assert "baseline measured" in whats
        assert whats.index("baseline measured") < whats.index("weights set")
        failed = next(event for event in history if event["what"] == "analysis failed")
        slow = {c["name"] for c in failed["checks"] if c["verdict"] == "fail"}
        assert slow & {"p99_ratio", "p99_ms"}, failed
        # The first analysis window: the observe step the canary's first weight led to.
        assert failed["step"] == next(e["step"] for e in history if e["what"] == "weights set")
        assert load.report.failed == 0, load.report.failures[:5]


SMALL_RING = 64 * 1024
"""A request-log ring of about 1,700 lines (the default holds 430,000): a reader that stops loses
lines within seconds at the test's rate."""


def test_a_window_whose_log_lines_were_lost_is_inconclusive() -> None:
    environ = demo_environ()
    with local_target(environ, log_ring_bytes=SMALL_RING) as (target, port, _state):
        target.prepare("web", "v1", 1)
        assert wait_until(lambda: target.health("web", "v1").ready, 20)
        target.set_weights("web", {"v1": 100})
        policy = AnalysisPolicy(min_requests=20)
        with LoadGenerator(f"http://127.0.0.1:{port}/", 300, connections=8):
            # Read normally: the window loses nothing and passes.
            before = target.sample("web", "v1")
            assert wait_until(lambda: (target.sample("web", "v1") - before).requests >= 200, 60)
            read = target.sample("web", "v1") - before
            normal = analyse(read, None, AnalysisPolicy(min_requests=20, max_p99_ms=5000))
            assert normal.verdict is Verdict.PASS, normal.checks
            # The reader stops: HAProxy keeps the lines it has not read until its ring is full, then
            # drops new ones. Serve until it says it dropped a fifth of those served meanwhile.
            before = target.sample("web", "v1")
            with target.sampler.paused():
                paused_at = _served(target)
                assert wait_until(lambda: _dropped(target) > (_served(target) - paused_at) / 5, 120)
                dropped = _dropped(target)
            lossy = target.sample("web", "v1") - before
        assert target.sampler.dropped >= dropped  # HAProxy's notice, read once the reader went on
        assert lossy.requests >= 200
        result = analyse(lossy, None, AnalysisPolicy(min_requests=20, max_p99_ms=5000))
        loss = next(c for c in result.checks if c.name == "log_loss")
        assert loss.verdict is Verdict.INCONCLUSIVE, loss
        assert loss.candidate is not None
        assert loss.candidate > policy.max_log_loss
        assert result.verdict is Verdict.INCONCLUSIVE, result.checks
        p99 = next(c for c in result.checks if c.name == "p99_ms")
        assert p99.verdict is Verdict.INCONCLUSIVE
        assert "max_log_loss" in p99.detail


def _served(target: LocalTarget) -> int:
    return sum(stat.stot for stat in target.client.show_stat("be_web"))


def _dropped(target: LocalTarget) -> int:
    """The lines HAProxy dropped from the log ring since it last wrote that it had (`show events`)."""
    sinks = target.client.command("show events")
    found = re.search(rf" {LOG_RING} : type=buffer, ([0-9]+) dropped", sinks)
    assert found, sinks
    return int(found[1])


def _crashing_command(tmp: Path) -> str:
    """The demo app, except that version `crashy` exits 0.5 s after it answered its first request
    that is not a health check (printing a last line first): an app that dies once it serves."""
    wrapper = tmp / "crashy.py"
    wrapper.write_text(
        textwrap.dedent(
            f"""\
            import os, subprocess, sys, threading, time
            APP = [sys.executable, {str(APP)!r}]
            if os.environ.get("VERSION") != "crashy":
                os.execv(sys.executable, APP)
            env = {{**os.environ, "ACCESS_LOG": "1"}}
            app = subprocess.Popen(APP, env=env, stderr=subprocess.PIPE, text=True)

            def crash():
                time.sleep({CRASHES_AFTER_S})
                print("crashy: out of memory, giving up", flush=True)
                app.kill()
                os._exit(3)

            for line in app.stderr:
                if '"GET / ' in line:
                    threading.Thread(target=crash).start()
                    break
            app.wait()
            """
        )
    )
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(wrapper))}"


def test_a_candidate_that_crashes_after_it_became_healthy_fails_the_release_with_its_log(
    tmp_path: Path,
) -> None:
    steps = "[{weight: 25}, {analysis: 60s}, {weight: 100}]"
    analysis = "{interval: 30s, window: 60s, max_error_rate: 0.02, max_p99_ratio: 2.0, min_requests: 20}"
    with _stack(tmp_path, _crashing_command(tmp_path), steps, analysis) as stack:
        with LoadGenerator(stack.url, 100, connections=8) as load:
            deploy = stack.cli("deploy", "web", "--version", "crashy")
        row = stack.latest()
        whats = [event["what"] for event in row.state["history"]]
        assert row.outcome == "failed", (deploy.stdout, deploy.stderr, whats)
        assert "candidate crashed" in whats
        # It crashed once it served, so while the first analysis window ran: cut short by the crash.
        assert whats.index("weights set") < whats.index("candidate crashed")
        assert row.reason.startswith("crashy crashed: instance web.crashy_")
        assert "exited with code 3" in row.reason
        assert "crashy: out of memory, giving up" in row.reason
        # Caught at once: within the first 30 s analysis interval, not at its end (no analysis).
        assert "analysis passed" not in whats
        assert "analysis failed" not in whats
        assert stack.target().status("web").versions == {"v1": 100}
        assert load.report is not None
        # Requests the crashed instance had in flight may fail; most went to v1.
        assert load.report.failed <= load.report.total * 0.05
