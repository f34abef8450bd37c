"""The supervisor's building blocks: pids, state files, environments, one-off commands."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shipyard.errors import TargetError
from shipyard.host import (
    free_port,
    group_members,
    pid_alive,
    proc_stat,
    read_json,
    read_pidfile,
    start_time,
    tail,
    write_json,
    write_pidfile,
)
from shipyard.rollout._model import MigrationResult
from shipyard.rollout.targets._processes import Paths, app_environment, check_name, run_command
from support.demo_app import migrate_command


def test_our_own_pid_is_alive_and_its_start_time_guards_against_reuse() -> None:
    me = os.getpid()
    stat = proc_stat(me)
    assert stat is not None
    assert stat.pid == me
    assert stat.ppid == os.getppid()
    assert pid_alive(me)
    assert pid_alive(me, start_time(me))
    assert not pid_alive(me, start_time(me) + 1)  # same pid, another process
    assert not pid_alive(None)
    assert not pid_alive(0)
    assert not pid_alive(-1)


def test_a_zombie_is_not_alive_and_a_reaped_pid_is_gone() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while (stat := proc_stat(child.pid)) is not None and stat.state != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(child.pid)  # exited, not yet reaped: a zombie
    child.wait()
    assert proc_stat(child.pid) is None or not pid_alive(child.pid)


def test_group_members_lists_a_process_group_without_its_zombies() -> None:
    leader = subprocess.Popen(["sleep", "30"], process_group=0)
    try:
        assert group_members(leader.pid) == [leader.pid]
    finally:
        leader.kill()
        deadline = time.monotonic() + 30
        while group_members(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert group_members(leader.pid) == []
        leader.wait()


def test_pid_files_and_state_files_round_trip(tmp_path: Path) -> None:
    paths = Paths.of(tmp_path, "api-v1-0")
    write_pidfile(paths.supervisor_pid, os.getpid())
    assert read_pidfile(paths.supervisor_pid) == (os.getpid(), start_time(os.getpid()))
    assert read_pidfile(paths.app_pid) is None
    paths.app_pid.write_text("garbage")
    assert read_pidfile(paths.app_pid) is None
    write_json(paths.state, {"port": 8080, "restarts": 2})
    assert read_json(paths.state) == {"port": 8080, "restarts": 2}
    paths.state.write_text("{half a docu")
    assert read_json(paths.state) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "api-v1-0.app.pid",
        "api-v1-0.json",
        "api-v1-0.supervisor.pid",
    ]  # no temporary file left behind by the atomic writes


def test_tail_gives_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert tail(log) == ""
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"


@pytest.mark.parametrize("name", ["api-v1-0", "web_2.blue", "A"])
def test_good_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-x", ".hidden", "a b", "x" * 129])
def test_bad_names(name: str) -> None:
    with pytest.raises(TargetError, match="invalid instance name"):
        check_name(name)


def test_an_app_gets_basics_its_env_and_port_but_not_our_other_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/opt/bin:/usr/bin")
    monkeypatch.setenv("SHIPYARD_ADMIN_TOKEN", "not-for-apps")
    env = app_environment({"VERSION": "v2", "PATH": "/app/bin"}, 8123)
    assert env["VERSION"] == "v2"
    assert env["PORT"] == "8123"
    assert env["PATH"] == "/app/bin"  # the spec wins
    assert "SHIPYARD_ADMIN_TOKEN" not in env
    monkeypatch.delenv("PATH")
    assert app_environment({})["PATH"]  # always a PATH for /bin/sh to find things with


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_run_command_reports_exit_code_and_output_tail(tmp_path: Path) -> None:
    result = run_command(
        "for i in $(seq 1 50); do echo line $i; done; echo oops >&2; exit 4", {}, tmp_path, 10
    )
    assert not result.ok
    assert result.exit_code == 4
    lines = result.output_tail.splitlines()
    assert lines[-1] == "oops"
    assert lines[-2] == "line 50"
    assert len(lines) == 20


def test_run_command_passes_env_and_workdir(tmp_path: Path) -> None:
    result = run_command('echo "$GREETING from $(pwd)"', {"GREETING": "hello"}, tmp_path, 10)
    assert result.ok
    assert result.exit_code == 0
    assert result.output_tail == f"hello from {tmp_path}"


def _sleeping(seconds: str) -> list[int]:
    """The live `sleep SECONDS` processes of this host."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().split(b"\0")[:2] == [b"sleep", seconds.encode()]:
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid_alive(pid)]


def test_run_command_kills_a_command_that_overruns(tmp_path: Path) -> None:
    hour = "3600.0717"  # an hour, and a duration no other test sleeps
    command = f"echo started; sleep {hour} & sleep {hour}"
    results: list[MigrationResult] = []
    runner = threading.Thread(target=lambda: results.append(run_command(command, {}, tmp_path, 0.5)))
    runner.start()
    runner.join(60)  # it returns at its timeout, not when its output's last writer ends (an hour)
    try:
        assert not runner.is_alive(), "run_command waited for the command"
        (result,) = results
        assert not result.ok
        assert result.exit_code == -9
        assert result.output_tail.splitlines() == [
            "started",
            f"[shipyard] `{command}` timed out after 0.5s and was killed",
        ]
        assert _sleeping(hour) == []  # the whole group was killed, the background sleep too
    finally:
        for pid in _sleeping(hour):
            os.kill(pid, signal.SIGKILL)


def test_run_command_in_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="does not exist"):
        run_command("true", {}, tmp_path / "nope", 5)


@pytest.mark.parametrize(
    ("fail", "code"), [(None, 0), ("0", 0), ("3", 3), ("yes", 1)], ids=["unset", "zero", "three", "word"]
)
def test_the_demo_migration_exits_as_told(tmp_path: Path, fail: str | None, code: int) -> None:
    env = {"VERSION": "v7"} | ({"MIGRATION_FAIL": fail} if fail is not None else {})
    result = run_command(migrate_command(), env, tmp_path, 30)
    assert result.exit_code == code
    assert result.ok is (code == 0)
    assert "migrating the schema to version v7" in result.output_tail
    assert ("failed" in result.output_tail) is (code != 0)


def test_supervise_refuses_without_a_record(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shipyard.rollout.targets._supervise", str(tmp_path), "ghost"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "no instance record" in result.stderr
