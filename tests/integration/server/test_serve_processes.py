"""Two `serve` processes (the real app under uvicorn) on one PostgreSQL, a job scheduled every
second, for a minute as the issue asks: every fire runs exactly once, in one process or the other.

This file is also the worker (`python test_serve_processes.py URL PORT OUT`): `shipyard.server.serve`
with a ticking job; it runs until SIGTERM. Each run appends `fire pid` to OUT.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.server import ServerConfig, serve
from shipyard.server._scheduler import ScheduledJob, scheduled_runs
from shipyard.state import open_engine, session_factory

if TYPE_CHECKING:  # run as a script, this file has no `support` on its path
    from support.servers import Postgres

WINDOW_S = 60  # the acceptance item's minute: this test takes a little over one minute


def _worker(url: str, port: int, out: Path) -> None:
    def tick(fire_time: dt.datetime) -> None:
        time.sleep(0.1)
        with out.open("a") as file:  # one short O_APPEND write per line: lines never interleave
            file.write(f"{fire_time.isoformat()} {os.getpid()}\n")

    config = ServerConfig(database_url=url, scheduled=(ScheduledJob("tick", "* * * * * *", tick),))
    serve(config, "127.0.0.1", port)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_two_serve_processes_run_a_every_second_job_once_per_fire(postgres: Postgres, tmp_path: Path) -> None:
    from support.servers import free_port  # noqa: PLC0415

    postgres.psql("CREATE DATABASE serve_two")
    url = postgres.url("serve_two")
    open_engine(url).dispose()  # migrate once, before the servers share the store
    out = tmp_path / "runs.txt"
    ports = [free_port(), free_port()]
    # Each server's log goes to a file: a pipe read only at the end would stall a server once full
    # (it logs a line per request and per run).
    logs = [tmp_path / f"serve-{port}.log" for port in ports]
    servers = []
    for port, log in zip(ports, logs, strict=True):
        with log.open("w") as sink:
            servers.append(
                subprocess.Popen(
                    [sys.executable, __file__, url, str(port), str(out)],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        deadline = time.monotonic() + 60
        while not all(_ready(port) for port in ports):
            assert time.monotonic() < deadline, "the servers did not become ready"
            assert all(s.poll() is None for s in servers), [log.read_text()[-4000:] for log in logs]
            time.sleep(0.2)
        started = dt.datetime.now(dt.UTC)
        time.sleep(WINDOW_S)
        ended = dt.datetime.now(dt.UTC)
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)
        outputs = [log.read_text()[-4000:] for log in logs]
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught: -15, not a crash.
    assert [server.returncode for server in servers] == [-signal.SIGTERM] * 2, outputs

    runs = [line.split() for line in out.read_text().splitlines()]
    fires = [dt.datetime.fromisoformat(fire) for fire, _ in runs]
    assert len(fires) == len(set(fires)), "a fire ran twice"
    in_window = [fire for fire in fires if started <= fire <= ended]
    assert len(in_window) >= WINDOW_S - 5, f"fires were lost: {len(in_window)} in {WINDOW_S} s"
    assert {int(pid) for _, pid in runs} == {server.pid for server in servers}, "one process ran every fire"

    sessions = session_factory(open_engine(url, migrate=False))
    recorded = scheduled_runs(sessions, "tick")
    assert sorted(fires) == [r.fire_time for r in recorded if r.outcome == "succeeded"]
    assert len({r.fire_time for r in recorded}) == len(recorded)


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
