"""Releases end to end: the `shipyard` CLI, real HAProxy, real processes, real load on loopback."""

from __future__ import annotations

import datetime as dt
import socket
import time
from pathlib import Path

import pytest

from shipyard.rollout._loadgen import LoadGenerator
from support.releases import release_stack, wait_for

pytestmark = pytest.mark.integration
RATE = 200  # requests per second, keep-alive
DEADLINE_S = 60.0


def _answered(load: LoadGenerator, since: float = 0.0) -> int:
    """Requests answered so far that were sent after `since` (monotonic)."""
    return sum(1 for r in load.snapshot().records if r.start is not None and r.start > since and not r.failed)


def test_blue_green_under_load_loses_nothing_and_switches_everything(tmp_path: Path) -> None:
    with release_stack(tmp_path, "blue-green") as stack:
        with LoadGenerator(stack.url, RATE, connections=8) as load:
            assert wait_for(lambda: _answered(load) >= RATE, DEADLINE_S, 0.25), "no load before the release"
            deploy_began = time.monotonic()
            result = stack.cli("deploy", "web", "--version", "v2")
            assert result.returncode == 0, result.stdout + result.stderr
            switched = next(r for r in stack.steps(stack.latest().id) if r.action["type"] == "SetWeights")
            assert switched.finished_at is not None
            # The step's time is wall-clock UTC in the store; the load generator's are monotonic
            # on the same machine.
            done_wall = switched.finished_at.replace(tzinfo=switched.finished_at.tzinfo or dt.UTC).timestamp()
            done = time.monotonic() - (time.time() - done_wall)
            # Enough requests after the switch to tell, however long a busy host takes to send them.
            after_switch = wait_for(lambda: _answered(load, since=done) > RATE, DEADLINE_S, 0.25)
            assert after_switch, "too few requests after the switch to tell"
        report = load.report
        assert report is not None
        assert report.failed == 0, report.failures[:5]
        assert any(r.start is not None and deploy_began <= r.start <= done for r in report.records)  # during
        # Every request sent after the switch was recorded done went to v2.
        after = [r for r in report.records if r.start is not None and r.start > done]
        assert {r.version for r in after} == {"v2"}


def test_bad_canary_is_rolled_back_and_only_the_canary_failed(tmp_path: Path) -> None:
    with release_stack(tmp_path, "canary") as stack:
        with LoadGenerator(stack.url, RATE, connections=8) as load:
            time.sleep(1)
            started = time.monotonic()
            result = stack.cli("deploy", "web", "--version", "bad")
            rolled_back_after = time.monotonic() - started
            time.sleep(1)
        assert result.returncode == 1, result.stdout
        assert "rolled_back" in result.stdout
        assert "error_rate" in result.stdout  # the check and its values are named
        report = load.report
        assert report.failed > 0
        assert {f.version for f in report.failures} == {"bad"}, report.failures[
            :5
        ]  # none from v1 or the proxy
        weights = [
            r.action["weights"]["candidate"]
            for r in stack.steps(stack.latest().id)
            if r.action["type"] == "SetWeights"
        ]
        assert weights == [10, 0], weights  # caught at 10 %: never given 50 %
        first_bad = report.first_failure_time
        assert first_bad is not None
        print(
            f"\nbad canary: {report.failed} failed of {report.total} requests"
            f" ({report.failed / report.total:.2%}); deploy to rollback {rolled_back_after:.1f} s"
        )


def test_a_release_whose_health_never_passes_moves_no_traffic(tmp_path: Path) -> None:
    with release_stack(tmp_path, "canary", health_timeout="4s") as stack:
        with LoadGenerator(stack.url, 50, connections=4) as load:
            result = stack.cli("deploy", "web", "--version", "sick")
        assert result.returncode == 1
        assert "health check never passed" in result.stdout
        # The health gate waited out its whole timeout, as recorded (that it gives up soon after
        # it is a speed claim for a benchmark: a loaded host stretches it).
        gate = next(r for r in stack.steps(stack.latest().id) if r.action["type"] == "WaitHealthy")
        assert gate.finished_at is not None
        assert (gate.finished_at - gate.started_at).total_seconds() >= 4
        assert load.report.failed == 0
        assert set(load.report.by_version) == {"v1"}
        assert not any(r.action["type"] == "SetWeights" for r in stack.steps(stack.latest().id)), (
            "traffic must never move to an unhealthy release"
        )


def test_a_failed_migration_stops_the_release_with_traffic_untouched(tmp_path: Path) -> None:
    with release_stack(tmp_path, "blue-green") as stack:
        result = stack.cli("deploy", "web", "--version", "broken")
        assert result.returncode == 1
        assert "failed" in result.stdout
        kinds = [r.action["type"] for r in stack.steps(stack.latest().id)]
        assert "SetWeights" not in kinds
        assert stack.target().status("web").versions == {"v1": 100}


def test_bad_requests_change_nothing(tmp_path: Path) -> None:
    # The first release holds at a pause until promoted, so it surely still runs when the second
    # deploy is asked for (with timed steps, a loaded machine could finish it in between).
    steps = "[{weight: 10}, {analysis: 2s}, {pause: until-promoted}, {weight: 100}]"
    with release_stack(tmp_path, "canary", steps=steps) as stack:
        before = stack.target().status("web").versions
        unknown = stack.cli("deploy", "nope", "--version", "v2")
        live = stack.cli("deploy", "web", "--version", "v1")
        assert (unknown.returncode, live.returncode) == (2, 2)
        assert "no service 'nope'" in unknown.stderr
        assert "already live" in live.stderr
        assert "Traceback" not in unknown.stderr + live.stderr
        # A second deploy while one runs is refused (under load: the canary's analysis needs traffic).
        with LoadGenerator(stack.url, RATE, connections=8):
            first = stack.start_cli("deploy", "web", "--version", "v2")
            assert wait_for(lambda: stack.latest().candidate == "v2", DEADLINE_S)
            second = stack.cli("deploy", "web", "--version", "v3")
            assert second.returncode == 2  # ReleaseInProgress, a ConflictError
            assert f"in progress (release {stack.latest().id}: v2" in second.stderr
            assert wait_for(lambda: stack.latest().phase == "paused", DEADLINE_S)
            promoted = stack.cli("rollout", "promote", "web")
            assert promoted.returncode == 0, promoted.stdout + promoted.stderr
            assert first.wait(60) == 0
        assert stack.target().status("web").versions == {"v2": 100}
        assert before == {"v1": 100}
        # HAProxy not reachable (it died, and its port is now taken, so it cannot be started
        # again): a clear error, and no instance of the new version is started.
        target = stack.target()
        target.stop_proxy()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", stack.port))
            squatter.listen()
            down = stack.cli("deploy", "web", "--version", "v4", timeout=60)
        assert down.returncode != 0
        assert "HAProxy" in down.stderr
        assert "Traceback" not in down.stderr
        assert not [i for i in target.supervisor.list() if "v4" in i.name]
