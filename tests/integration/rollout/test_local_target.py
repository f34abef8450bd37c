"""The local target against a real HAProxy and real demo-app processes on loopback.

Nothing here asserts how long something took (a loaded 2-core machine stretches everything):
each test waits for what it needs, with a generous deadline, and checks what happened to every
request. How fast a switch is, bench/rollout_bench.py measures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from shipyard.errors import TargetError
from shipyard.host import free_port
from shipyard.rollout._loadgen import LoadGenerator
from shipyard.rollout.targets.haproxy import HAProxyClient, backend_name
from shipyard.rollout.targets.local import LocalTarget
from support.haproxy import (
    DEMO_DIR,
    HAPROXY,
    demo_environ,
    demo_stack,
    get_versions,
    local_target,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(HAPROXY is None, reason="HAProxy is not installed (Debian's haproxy)"),
]

DEADLINE_S = 30.0
"""How long a test waits for something that should happen soon (a health check, some traffic)."""


def _ready(target: LocalTarget, version: str) -> None:
    assert wait_until(lambda: target.health("web", version).ready, DEADLINE_S), target.health("web", version)


def _app_pid(target: LocalTarget, instance: str) -> int:
    """The pid of instance `instance`'s app process (to stop and continue it)."""
    found = target.supervisor.get(instance)
    assert found is not None
    assert found.app_pid is not None
    return found.app_pid


def _servers(target: LocalTarget) -> list[str]:
    return sorted(s.server for s in target.client.servers_state(backend_name("web")))


def _answered(load: LoadGenerator, version: str, since: float = 0.0) -> int:
    """Requests answered by `version` so far that were sent after `since` (monotonic)."""
    return sum(1 for r in load.snapshot().records if r.version == version and r.start and r.start > since)


def test_switch_under_load_loses_no_request_and_is_immediate() -> None:
    with local_target(demo_environ()) as (target, port, _):
        target.prepare("web", "v1", 2)
        _ready(target, "v1")
        target.set_weights("web", {"v1": 100})
        load = LoadGenerator(f"http://127.0.0.1:{port}/", rate_per_s=250, connections=8).start()
        try:
            target.prepare("web", "v2", 2)
            _ready(target, "v2")
            # Load on v1 before, on v2 after the switch and after v1 is retired: waited for, not slept.
            assert wait_until(lambda: _answered(load, "v1") > 100, DEADLINE_S, 0.25)
            switch_start = time.monotonic()
            target.set_weights("web", {"v1": 0, "v2": 100})
            switch_end = time.monotonic()
            assert wait_until(lambda: _answered(load, "v2", since=switch_end) > 100, DEADLINE_S, 0.25)
            target.retire("web", "v1")
            retired = time.monotonic()
            assert wait_until(lambda: _answered(load, "v2", since=retired) > 50, DEADLINE_S, 0.25)
        finally:
            report = load.stop()

        sent = [r for r in report.records if r.start is not None]
        assert report.failed == 0, report.failures[:5]
        assert report.by_version["v1"].count > 100
        assert report.by_version["v2"].count > 100
        # Every request sent once set_weights returned went to v2: the switch is immediate.
        late = [r for r in sent if r.start is not None and r.start > switch_end]
        assert late
        assert {r.version for r in late} == {"v2"}
        last_v1 = max(r.start for r in sent if r.version == "v1" and r.start is not None)
        assert last_v1 <= switch_end
        print(
            f"\nswitch: set_weights took {(switch_end - switch_start) * 1000:.1f} ms; last request to v1 "
            f"sent {max(0.0, last_v1 - switch_start) * 1000:.1f} ms after it began; {report.total} "
            f"requests, {report.failed} failed"
        )
        # v1 is gone from HAProxy and from the host.
        assert _servers(target) == ["v2_1", "v2_2"]
        assert target.status("web").versions == {"v2": 100}
        # The target counted the same traffic as the clients; the latency histogram comes from
        # HAProxy's request log (a line HAProxy dropped from its full ring is missing from it only).
        v1, v2 = target.sample("web", "v1"), target.sample("web", "v2")
        assert (v1.requests, v2.requests) == (report.by_version["v1"].count, report.by_version["v2"].count)
        assert v1.errors == v2.errors == 0
        assert wait_until(
            lambda: sum(target.sample("web", "v2").latency_buckets) > 0.5 * v2.requests, DEADLINE_S
        )
        logged = sum(target.sample("web", "v1").latency_buckets) + sum(
            target.sample("web", "v2").latency_buckets
        )
        print(f"request log: {logged} of {report.total} requests logged")
        assert logged <= report.total


def test_canary_weights_split_requests() -> None:
    with local_target(demo_environ()) as (target, port, _):
        target.prepare("web", "v1", 2)
        target.prepare("web", "v2", 1)
        _ready(target, "v1")
        _ready(target, "v2")
        target.set_weights("web", {"v1": 90, "v2": 10})
        assert target.status("web").versions == {"v1": 90, "v2": 10}
        before = target.sample("web", "v2")
        results = get_versions(port, 1000)
        assert all(status == 200 for status, _ in results)
        share = sum(1 for _, version in results if version == "v2") / len(results)
        assert 0.08 <= share <= 0.12, share
        window = target.sample("web", "v2") - before
        assert window.requests == round(share * 1000)
        assert wait_until(
            lambda: (target.sample("web", "v2") - before).quantile_ms(0.5) is not None, DEADLINE_S
        )


def test_failing_health_keeps_a_version_out_of_traffic() -> None:
    environ = demo_environ()
    with local_target(environ) as (target, port, _):
        target.prepare("web", "v1", 1)
        _ready(target, "v1")
        target.set_weights("web", {"v1": 100})
        environ["DEMO_FAIL_HEALTH"] = "1"
        target.prepare("web", "v2", 1)
        assert wait_until(lambda: "503" in target.health("web", "v2").detail, DEADLINE_S)
        health = target.health("web", "v2")
        assert (health.healthy, health.total, health.ready) == (0, 1, False)
        assert "v2_1: DOWN" in health.detail
        # All traffic to an unhealthy version is refused; a share of it is routed around it.
        with pytest.raises(TargetError, match="no healthy instance"):
            target.set_weights("web", {"v1": 0, "v2": 100})
        # Refused too when the version serving misses checks while the refusal waits for v2's next
        # one: what counts is that it served when asked (it stalls 0.3 s in, and is DOWN soon after).
        serving = _app_pid(target, "web.v1_1")
        stall = threading.Timer(0.3, os.kill, (serving, signal.SIGSTOP))
        stall.start()
        try:
            with pytest.raises(TargetError, match="no healthy instance"):
                target.set_weights("web", {"v1": 0, "v2": 100})
        finally:
            stall.cancel()
            stall.join()
            os.kill(serving, signal.SIGCONT)
        _ready(target, "v1")
        target.set_weights("web", {"v1": 50, "v2": 50})
        results = get_versions(port, 100)
        assert results == [(200, "v1")] * 100
        status = target.status("web")
        assert status.health["v2"].healthy == 0
        assert status.health["v1"].ready


def test_an_instance_down_for_one_missed_check_is_waited_for_not_refused() -> None:
    """An instance that stalled past a health check's timeout (a loaded host) is DOWN until its next
    check passes. Moving all traffic to it then waits for that check instead of failing the release
    on one late answer (a resumed controller failed its last step this way once, in CI)."""
    with local_target(demo_environ()) as (target, port, _):
        target.prepare("web", "v1", 1)
        _ready(target, "v1")
        target.set_weights("web", {"v1": 100})
        target.prepare("web", "v2", 1)
        _ready(target, "v2")
        candidate = _app_pid(target, "web.v2_1")
        os.kill(candidate, signal.SIGSTOP)  # it answers nothing, its checks time out
        resume = threading.Timer(0.3, os.kill, (candidate, signal.SIGCONT))
        try:
            assert wait_until(lambda: "v2_1: DOWN" in target.health("web", "v2").detail, DEADLINE_S)
            resume.start()  # it answers again soon after the weights are asked for
            target.set_weights("web", {"v1": 0, "v2": 100})
        finally:
            resume.cancel()
            os.kill(candidate, signal.SIGCONT)
        assert target.status("web").versions == {"v1": 0, "v2": 100}
        assert get_versions(port, 20) == [(200, "v2")] * 20


def test_retire_lets_slow_requests_in_flight_finish() -> None:
    environ = demo_environ(DEMO_LATENCY_MS="6000")
    with local_target(environ) as (target, port, _):
        target.prepare("web", "v1", 1)
        environ["DEMO_LATENCY_MS"] = "0"
        target.prepare("web", "v2", 1)
        _ready(target, "v1")
        _ready(target, "v2")
        target.set_weights("web", {"v1": 100, "v2": 0})

        results: list[tuple[int, str | None]] = []
        ended: list[float] = []
        lock = threading.Lock()

        def slow_request() -> None:
            answer = get_versions(port, 1)
            with lock:
                results.extend(answer)
                ended.append(time.monotonic())

        threads = [threading.Thread(target=slow_request) for _ in range(6)]
        for thread in threads:
            thread.start()
        # All six in flight on v1 at once (each takes 6 s there, under the 10 s drain time).
        assert wait_until(
            lambda: sum(s.scur for s in target.client.show_stat("be_web") if s.server == "v1_1") == 6, 5.0
        ), "the six requests were not in flight together"
        target.set_weights("web", {"v1": 0, "v2": 100})
        began = time.monotonic()
        target.retire("web", "v1")
        for thread in threads:
            thread.join(DEADLINE_S)
        assert results == [(200, "v1")] * 6  # every request in flight finished, on v1, uncut
        assert min(ended) > began  # they were still in flight when retire began: it waited for them
        assert _servers(target) == ["v2_1"]
        assert [i.name for i in target.supervisor.list()] == ["web.v2_1"]
        assert get_versions(port, 3) == [(200, "v2")] * 3


def test_unreachable_haproxy_is_a_target_error(tmp_path: Path) -> None:
    missing = tmp_path / "admin.sock"
    with pytest.raises(TargetError, match=str(missing)):
        HAProxyClient(missing).show_stat()

    with local_target(demo_environ()) as (target, port, _):
        target.prepare("web", "v1", 1)
        target.stop_proxy()
        with pytest.raises(TargetError, match="admin socket"):
            target.client.servers_state()
        # HAProxy cannot come back while something else holds its port: the error says why.
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            with pytest.raises(TargetError, match="cannot bind"):
                target.status("web")

    broken = LocalTarget(demo_stack(1), tmp_path / "s", "/nonexistent/haproxy", workdir=DEMO_DIR)
    with pytest.raises(TargetError, match="not installed"):
        broken.ensure_proxy()
    broken.close()


def test_a_new_target_rediscovers_a_running_release() -> None:
    environ = demo_environ()
    with local_target(environ) as (first, port, state):
        first.prepare("web", "v1", 2)
        first.prepare("web", "v2", 1)
        _ready(first, "v1")
        _ready(first, "v2")
        first.set_weights("web", {"v1": 80, "v2": 20})
        first.close()  # the controller goes away; HAProxy and the processes stay

        second = LocalTarget(first.stack, state, HAPROXY or "haproxy", workdir=DEMO_DIR, environ=environ)
        try:
            status = second.status("web")
            assert status.versions == {"v1": 80, "v2": 20}
            assert status.health["v1"].ready
            assert status.health["v1"].total == 2
            assert status.health["v2"].ready
            second.set_weights("web", {"v1": 0, "v2": 100})
            second.retire("web", "v1")
            second.prepare("web", "v2", 1)  # idempotent: nothing changes
            assert _servers(second) == ["v2_1"]
            second.prepare("web", "v2", 2)  # one more instance of the version taking all traffic
            _ready(second, "v2")
            assert {s.server: s.weight for s in second.client.servers_state("be_web")} == {
                "v2_1": 256,
                "v2_2": 256,
            }
            assert get_versions(port, 5) == [(200, "v2")] * 5
            assert wait_until(lambda: second.sample("web", "v2").requests >= 5, DEADLINE_S)
            assert second.status("web").versions == {"v2": 100}
        finally:
            second.close()


def test_haproxy_restarted_gets_its_servers_and_weights_back() -> None:
    with local_target(demo_environ()) as (target, port, _):
        target.prepare("web", "v1", 1)
        _ready(target, "v1")
        target.set_weights("web", {"v1": 100})
        target.stop_proxy()
        target.ensure_proxy()
        assert _servers(target) == ["v1_1"]
        _ready(target, "v1")
        assert target.status("web").versions == {"v1": 100}
        assert get_versions(port, 3) == [(200, "v1")] * 3


def test_migrate_runs_the_service_migration_with_the_version() -> None:
    with local_target(demo_environ()) as (target, _, _):
        result = target.migrate("web", "v7")
        assert result.ok
        assert "schema is at version v7" in result.output_tail


def test_prometheus_sees_the_instances_and_haproxy_exports_per_server_counters() -> None:
    """With `alerts.haproxy_target`, HAProxy serves its exporter there; the discovery file lists
    each running instance by version and drops a retired one."""
    exporter = free_port()
    base = demo_stack(free_port())
    stack = base.model_copy(
        update={"alerts": base.alerts.model_copy(update={"haproxy_target": f"127.0.0.1:{exporter}"})}
    )
    state = Path(tempfile.mkdtemp(prefix="sy-prom-"))
    assert HAPROXY is not None
    target = LocalTarget(stack, state, HAPROXY, workdir=DEMO_DIR, environ=demo_environ())
    try:
        target.prepare("web", "v1", 2)
        target.prepare("web", "v2", 1)
        _ready(target, "v1")
        target.set_weights("web", {"v1": 100, "v2": 0})
        listed = json.loads((state / "prometheus" / "targets" / "web.json").read_text())
        assert [(group["labels"]["version"], len(group["targets"])) for group in listed] == [
            ("v1", 2),
            ("v2", 1),
        ]
        assert all(t.startswith("127.0.0.1:") for group in listed for t in group["targets"])
        get_versions(stack.services["web"].port or 0, 20)
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        served = [
            line for line in metrics.splitlines()
            if line.startswith('haproxy_backend_http_requests_total{proxy="be_web"}')
        ]  # fmt: skip
        assert served
        assert float(served[0].split()[-1]) >= 20
        target.retire("web", "v2")
        listed = json.loads((state / "prometheus" / "targets" / "web.json").read_text())
        assert [group["labels"]["version"] for group in listed] == ["v1"]
    finally:
        target.destroy()
        shutil.rmtree(state, ignore_errors=True)
