"""The scheduler on a real clock: two processes on one PostgreSQL state store run each fire once.

This file is also the worker those processes run (`python test_scheduler_processes.py URL OUT`): a
Scheduler with a quick job and a slow one, both firing every second. Once imported it says
`ready`, and runs from when it reads a stop time (epoch seconds) on stdin until that time. The
issue asks for a minute of firing; 18 seconds keeps the suite quick and still gives eighteen
contested fires.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shipyard.errors import BackupError
from shipyard.server._scheduler import (
    ScheduledJob,
    ScheduledRun,
    Scheduler,
    run_shipyard,
    scheduled_runs,
)
from shipyard.state import open_engine, session_factory

if TYPE_CHECKING:  # run as a script, this file has no `support` on its path
    from support.servers import Postgres

EVERY_SECOND = "* * * * * *"
WINDOW_S = 18
SLOW_S = 2.2


def _worker(url: str, out: Path) -> None:
    """Run the two jobs until the stop time read from stdin, appending each run to `out`; print
    the fire results."""
    engine = open_engine(url, migrate=False)
    sessions = session_factory(engine)

    def record(job: str, fire_time: dt.datetime, started: float) -> None:
        line = f"{job} {fire_time.isoformat()} {os.getpid()} {started:.6f} {time.time():.6f}\n"
        with out.open("a") as file:  # one short O_APPEND write per line: lines never interleave
            file.write(line)

    def tick(fire_time: dt.datetime) -> None:
        started = time.time()
        time.sleep(0.2)
        record("tick", fire_time, started)

    def slow(fire_time: dt.datetime) -> None:
        started = time.time()
        time.sleep(SLOW_S)
        record("slow", fire_time, started)

    scheduler = Scheduler(
        sessions,
        [ScheduledJob("tick", EVERY_SECOND, tick), ScheduledJob("slow", EVERY_SECOND, slow)],
        lease_ttl_s=6,
        misfire_grace_s=1,
    )
    print("ready", flush=True)
    stop_at = float(sys.stdin.readline())
    scheduler.start()
    time.sleep(max(0.0, stop_at - time.time()))
    scheduler.shutdown(wait=True)
    print(json.dumps(scheduler.results()))
    engine.dispose()


def _lines(out: Path, job: str) -> list[tuple[dt.datetime, int, float, float]]:
    runs = []
    for line in out.read_text().splitlines():
        name, fire, pid, started, ended = line.split()
        if name == job:
            runs.append((dt.datetime.fromisoformat(fire), int(pid), float(started), float(ended)))
    return runs


@dataclass(frozen=True)
class Window:
    """What two worker processes did in one window: their runs, and each one's fire results."""

    out: Path
    results: list[dict[str, dict[str, int]]]
    recorded: dict[str, list[ScheduledRun]]


@pytest.fixture(scope="module")
def window(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Window:
    postgres.psql("CREATE DATABASE scheduler_two")
    url = postgres.url("scheduler_two")
    open_engine(url).dispose()  # migrate once, before the workers share the store
    out = tmp_path_factory.mktemp("scheduler") / "runs.txt"
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, url, str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:  # both imported: start them together
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        stop_at = time.time() + WINDOW_S
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(f"{stop_at:.3f}\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=WINDOW_S + 30) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    engine = open_engine(url, migrate=False)
    sessions = session_factory(engine)
    recorded = {job: scheduled_runs(sessions, job) for job in ("tick", "slow")}
    engine.dispose()
    results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    return Window(out, results, recorded)


def test_two_processes_on_one_store_run_each_fire_once(window: Window) -> None:
    tick_fires = [fire for fire, *_ in _lines(window.out, "tick")]
    assert len(tick_fires) == len(set(tick_fires)), "a fire ran twice"
    assert len(tick_fires) >= WINDOW_S - 3, f"fires were lost: {len(tick_fires)} in {WINDOW_S} s"
    recorded = window.recorded["tick"]
    assert sorted(tick_fires) == [r.fire_time for r in recorded]
    assert {r.outcome for r in recorded} == {"succeeded"}
    for result in window.results:  # each process tried (nearly) every fire: the guard was contested
        assert sum(result["tick"].values()) >= WINDOW_S - 3, window.results
    assert sum(r["tick"].get("succeeded", 0) for r in window.results) == len(tick_fires)


def test_a_run_still_going_when_its_next_fire_comes_is_not_started_twice(window: Window) -> None:
    # The slow job takes longer than its period, in either process.
    slows = sorted(_lines(window.out, "slow"), key=lambda run: run[2])
    for (_, _, _, ended), (_, _, started, _) in itertools.pairwise(slows):
        assert started >= ended, "two runs of the slow job overlapped"
    recorded = window.recorded["slow"]
    ran = [r for r in recorded if r.outcome == "succeeded"]
    assert sorted(fire for fire, *_ in slows) == [r.fire_time for r in ran]
    assert WINDOW_S / (SLOW_S + 2) <= len(ran) <= WINDOW_S / SLOW_S + 1
    skipped = [r for r in recorded if r.outcome == "skipped"]
    assert skipped, "a fire that comes while the job runs is recorded as skipped"
    assert all(sum(result["slow"].values()) > 0 for result in window.results)


def test_run_shipyard_runs_the_cli_in_a_child_process_and_reports_its_failure(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.yaml"
    with pytest.raises(BackupError, match=r"`shipyard validate` exited with 2: .*nothing\.yaml"):
        run_shipyard(["validate"], spec=missing)


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
