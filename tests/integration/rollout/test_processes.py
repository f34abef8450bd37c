"""The process supervisor against real processes: the demo app, shells, a killed controller."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shipyard.errors import TargetError
from shipyard.host import free_port, pid_alive, read_pidfile
from shipyard.rollout.targets._processes import Instance, InstanceSpec, Supervisor
from support.demo_app import DEMO_DIR, demo_spec, requests_waiting, wait_http

pytestmark = pytest.mark.integration

TESTS_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def sup(state_dir: Path) -> Iterator[Supervisor]:
    supervisor = Supervisor(state_dir, check_s=0.25)
    yield supervisor
    for instance in Supervisor(state_dir).list():
        supervisor.stop(instance.name)


def eventually(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout_s:g}s")


def serves(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def version_at(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).headers["x-version"]


def test_start_serves_is_idempotent_and_stop_removes_it(sup: Supervisor, state_dir: Path) -> None:
    spec = demo_spec("api-v1-0", "v1")
    instance = sup.start(spec)
    assert instance.alive
    assert instance.port == spec.port
    assert instance.restarts == 0
    assert instance.supervisor_pid
    assert instance.app_pid
    assert instance.log == state_dir / "api-v1-0.log"
    wait_http(f"http://127.0.0.1:{spec.port}/healthz")
    assert version_at(spec.port) == "v1"

    # Starting again returns the running instance, even from another Supervisor with another port.
    again = Supervisor(state_dir).start(demo_spec("api-v1-0", "v1"))
    assert again == instance
    assert sup.get("api-v1-0") == instance
    assert sup.list() == [instance]

    sup.stop("api-v1-0")
    assert sup.get("api-v1-0") is None
    assert sup.list() == []
    assert not pid_alive(instance.supervisor_pid)
    assert not pid_alive(instance.app_pid)
    assert not serves(spec.port)
    sup.stop("api-v1-0")  # idempotent
    sup.stop("never-started")
    assert instance.log.exists()  # the log outlives the instance


def test_the_environment_is_never_written_to_the_state(sup: Supervisor, state_dir: Path) -> None:
    spec = demo_spec("api-v1-0", "v1", database_url="postgresql://u:s3cr3t-value@db/app")
    sup.start(spec)
    wait_http(f"http://127.0.0.1:{spec.port}/healthz")
    for path in state_dir.iterdir():
        assert "s3cr3t-value" not in path.read_text(errors="replace"), path.name
    record = json.loads((state_dir / "api-v1-0.json").read_text())
    assert record["port"] == spec.port
    assert "env" not in record


def test_several_instances_are_listed_by_name(sup: Supervisor) -> None:
    specs = [demo_spec(f"api-v{n}-0", f"v{n}") for n in (2, 1)]
    for spec in specs:
        sup.start(spec)
    listed = sup.list()
    assert [i.name for i in listed] == ["api-v1-0", "api-v2-0"]
    assert all(i.alive for i in listed)
    for spec in specs:
        wait_http(f"http://127.0.0.1:{spec.port}/healthz")
        assert version_at(spec.port) == spec.env["VERSION"]


def test_concurrent_starts_of_one_name_make_one_instance(sup: Supervisor, state_dir: Path) -> None:
    results: list[Instance] = []
    threads = [
        threading.Thread(target=lambda: results.append(Supervisor(state_dir).start(demo_spec("api-v1-0"))))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 3
    assert len({r.supervisor_pid for r in results}) == 1
    assert len({r.port for r in results}) == 1


def test_a_command_that_exits_at_once_is_an_error_quoting_its_log(sup: Supervisor, tmp_path: Path) -> None:
    spec = InstanceSpec(
        "bad-v1-0", "echo 'cannot connect to the database' >&2; exit 3", free_port(), {}, tmp_path
    )
    with pytest.raises(TargetError) as caught:
        sup.start(spec)
    message = str(caught.value)
    assert "exited at once with code 3" in message
    assert "cannot connect to the database" in message
    assert sup.get("bad-v1-0") is None  # nothing left behind: a later start tries afresh


def test_bad_names_and_workdirs_are_errors(sup: Supervisor, tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="invalid instance name"):
        sup.start(InstanceSpec("../escape", "true", free_port(), {}, tmp_path))
    with pytest.raises(TargetError, match="does not exist"):
        sup.start(InstanceSpec("api-v1-0", "true", free_port(), {}, tmp_path / "missing"))


def test_a_crashed_app_is_restarted_and_counted(sup: Supervisor) -> None:
    spec = demo_spec("api-v1-0", "v1")
    first = sup.start(spec)
    wait_http(f"http://127.0.0.1:{spec.port}/healthz")
    assert first.app_pid is not None
    os.killpg(first.app_pid, signal.SIGKILL)  # the app (its shell and the server) dies

    def restarted() -> bool:
        now = sup.get("api-v1-0")
        return now is not None and now.restarts == 1 and now.alive and now.app_pid != first.app_pid

    eventually(restarted, what="a restart")
    wait_http(f"http://127.0.0.1:{spec.port}/healthz")
    now = sup.get("api-v1-0")
    assert now is not None
    assert now.supervisor_pid == first.supervisor_pid
    assert "restarting in" in now.log.read_text()


CONTROLLER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from support.demo_app import demo_spec
from shipyard.rollout.targets._processes import Supervisor
instance = Supervisor(Path(sys.argv[1])).start(demo_spec("api-v2-0", "v2"))
print(json.dumps({"port": instance.port, "supervisor_pid": instance.supervisor_pid}), flush=True)
time.sleep(120)
"""


def test_instances_survive_the_death_of_the_controller(sup: Supervisor, state_dir: Path) -> None:
    controller = subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, str(state_dir), str(TESTS_DIR)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert controller.stdout is not None
        started = json.loads(controller.stdout.readline())
    finally:
        controller.kill()  # SIGKILL: no cleanup of any kind
        controller.wait(10)
    assert controller.returncode == -signal.SIGKILL

    wait_http(f"http://127.0.0.1:{started['port']}/healthz")
    assert version_at(started["port"]) == "v2"
    found = sup.get("api-v2-0")  # a new Supervisor over the same state_dir
    assert found is not None
    assert found.alive
    assert found.supervisor_pid == started["supervisor_pid"]
    assert found.port == started["port"]
    assert sup.start(demo_spec("api-v2-0", "v2")) == found  # resuming: start is a no-op
    sup.stop("api-v2-0")
    assert not serves(started["port"])


def test_an_app_whose_supervisor_was_killed_is_replaced_on_start(sup: Supervisor) -> None:
    spec = demo_spec("api-v1-0", "v1")
    first = sup.start(spec)
    wait_http(f"http://127.0.0.1:{spec.port}/healthz")
    assert first.supervisor_pid is not None
    os.kill(first.supervisor_pid, signal.SIGKILL)
    eventually(lambda: not pid_alive(first.supervisor_pid), what="the supervisor's death")
    orphan = sup.get("api-v1-0")
    assert orphan is not None
    assert not orphan.alive
    assert orphan.supervisor_pid is None
    assert serves(spec.port)  # the app itself still runs

    second = sup.start(spec)
    assert second.alive
    assert second.supervisor_pid != first.supervisor_pid
    assert not pid_alive(first.app_pid)
    wait_http(f"http://127.0.0.1:{spec.port}/healthz")


def test_stop_lets_a_request_in_flight_finish(sup: Supervisor) -> None:
    spec = demo_spec("slow-v1-0", "v1", added_latency_ms=5000, grace_s=60)
    instance = sup.start(spec)
    assert instance.app_pid is not None
    wait_http(f"http://127.0.0.1:{spec.port}/healthz")
    with socket.create_connection(("127.0.0.1", spec.port), timeout=60) as conn:
        conn.sendall(b"GET /work HTTP/1.1\r\nHost: demo\r\n\r\n")
        app_pid = instance.app_pid
        eventually(lambda: requests_waiting(app_pid) == 1, what="the app to hold the request")
        assert select.select([conn], [], [], 0)[0] == []  # not answered yet: in flight
        sup.stop("slow-v1-0")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    # The stop waited for it: answered in full, and the app drained and ended by itself (the
    # grace period's SIGKILL was not needed).
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"X-Version: v1" in answer
    assert b"Connection: close" in answer
    assert "did not stop within" not in instance.log.read_text()
    assert not pid_alive(instance.app_pid)


def test_an_app_ignoring_sigterm_is_killed_after_the_grace_period(sup: Supervisor) -> None:
    spec = demo_spec("stubborn-v1-0", "v1", ignore_sigterm=True, grace_s=1.0)
    instance = sup.start(spec)
    wait_http(f"http://127.0.0.1:{spec.port}/healthz")
    began = time.monotonic()
    sup.stop("stubborn-v1-0")
    assert time.monotonic() - began >= 0.9  # it had its grace period (a lower bound: load only adds)
    assert not serves(spec.port)
    assert not pid_alive(instance.app_pid)
    # ...and the supervisor killed it at the end of it (not the stop's own last resort).
    assert "did not stop within 1s: killed" in instance.log.read_text()


def test_a_removed_state_dir_stops_its_instances(sup: Supervisor, state_dir: Path) -> None:
    spec = demo_spec("api-v1-0", "v1", grace_s=5)
    instance = sup.start(spec)
    wait_http(f"http://127.0.0.1:{spec.port}/healthz")
    app = read_pidfile(state_dir / "api-v1-0.app.pid")
    assert app is not None
    shutil.rmtree(state_dir)  # nobody could stop them any more: they stop themselves
    eventually(lambda: not pid_alive(instance.supervisor_pid), what="the supervisor's exit")
    assert not pid_alive(*app)
    assert not serves(spec.port)


def test_workdir_and_env_reach_the_app(sup: Supervisor, tmp_path: Path) -> None:
    out = tmp_path / "seen"
    command = f'echo "$PORT $VERSION $GREETING $(pwd)" > {out}; exec sleep 30'
    spec = InstanceSpec("env-v3-0", command, free_port(), {"VERSION": "v3", "GREETING": "hi"}, DEMO_DIR)
    sup.start(spec)
    eventually(lambda: out.exists() and out.read_text().strip() != "", what="the app's output")
    assert out.read_text().split() == [str(spec.port), "v3", "hi", str(DEMO_DIR)]
