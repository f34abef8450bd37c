"""A backup killed with SIGKILL at each phase: the set ends `failed` once the next command looks,
is never offered for restore, is ignored by retention, and the next backup succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from integration.backup._cli import shipyard
from shipyard.backup import PAUSE_ENV
from shipyard.state import BackupSetRow, open_engine, session_factory
from support.backup_stack import SHIPYARD, BackupStack, backup_stack
from support.restic import finished_locks, working_on


@pytest.fixture(scope="module")
def stack() -> Iterator[BackupStack]:
    with backup_stack() as created:
        yield created


def _kill_each_at(stack: BackupStack, runs: list[tuple[str, str]]) -> list[str]:
    """Start `shipyard backup KIND` for each (kind, phase), all at once, each pausing at its phase;
    SIGKILL each (with its children) there. Returns the ids of their sets, in order."""
    sessions = session_factory(open_engine(stack.state_url))
    with sessions() as session:
        before = set(session.scalars(select(BackupSetRow.id)))
    processes = [
        subprocess.Popen(
            [SHIPYARD, "backup", kind, "-f", str(stack.spec)],
            env=stack.cli_env(**{PAUSE_ENV: phase}),
            cwd=stack.base,
            stdout=subprocess.DEVNULL,
            stderr=(stack.base / f"killed-{index}.err").open("w"),
            start_new_session=True,  # its own process group: the kill takes restic and pg_dump too
        )
        for index, (kind, phase) in enumerate(runs)
    ]
    try:
        deadline = time.monotonic() + 90
        while True:
            with sessions() as session:
                rows = list(session.scalars(select(BackupSetRow).where(BackupSetRow.id.not_in(before))))
            # The sources upload at the same time: a set's phase lists each one in progress.
            paused = {
                (row.kind, phase): row
                for row in rows
                if row.state == "running"
                for phase in (row.phase or "").split(", ")
            }
            if all(run in paused for run in runs):
                break
            for index, ((_, phase), process) in enumerate(zip(runs, processes, strict=True)):
                stderr = (stack.base / f"killed-{index}.err").read_text()
                assert process.poll() is None, f"the backup ended before {phase}: {stderr}"
            assert time.monotonic() < deadline, f"not every backup reached its phase: {sorted(paused)}"
            time.sleep(0.05)
        time.sleep(0.3)  # the upload pauses are at restic's first progress report: let restic go on
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return [paused[run].id for run in runs]


def test_a_backup_killed_at_any_phase_is_failed_ignored_and_the_next_one_succeeds(
    stack: BackupStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    killed = _kill_each_at(
        stack,
        [
            ("database", "postgres:db:dump"),
            ("full", "postgres:db:upload"),
            ("redis", "redis:cache:snapshot"),
            ("files", f"files:{stack.files}:upload"),
        ],
    )

    listed = shipyard(stack, monkeypatch, capsys, "backup", "list", "-o", "json")
    assert listed.code == 0, listed.err
    states = {s["id"]: s for s in listed.json()}
    for set_id in killed:
        assert states[set_id]["state"] == "failed"
        assert states[set_id]["restorable"] is False
        assert "abandoned" in states[set_id]["error"]
    assert not list(Path(tempfile.gettempdir()).glob(f"shipyard-backup-{killed[0]}-*"))  # dump dir cleaned

    refused = shipyard(
        stack, monkeypatch, capsys, "restore", "database", "--set", killed[1], "-f", str(stack.spec)
    )
    assert refused.code == 2
    assert "failed" in refused.err
    nothing = shipyard(stack, monkeypatch, capsys, "restore", "database", "-f", str(stack.spec))
    assert nothing.code == 2
    assert "no restorable backup set" in nothing.err

    plan = shipyard(
        stack, monkeypatch, capsys, "backup", "prune", "--dry-run", "-f", str(stack.spec), "-o", "json"
    )
    assert plan.code == 0, plan.err
    assert sorted(plan.json()["ignored"]) == sorted(killed)
    assert plan.json()["keep"] == {}
    assert plan.json()["drop"] == []

    after = shipyard(stack, monkeypatch, capsys, "backup", "full", "-f", str(stack.spec), "-o", "json")
    assert after.code == 0, after.err
    assert after.json()["state"] == "complete"
    assert not any((stack.base / "repo" / "locks").iterdir())  # stale restic locks removed


def _kill_at(stack: BackupStack, kind: str, phase: str, *, restic_running: bool, restic_too: bool) -> None:
    """Start `shipyard backup KIND` pausing at PHASE, and SIGKILL its process group there; with
    `restic_running`, only once a restic of it is running with its lock written; with
    `restic_too`, SIGKILL that restic as well (as the OOM killer could)."""
    sessions = session_factory(open_engine(stack.state_url))
    with sessions() as session:
        before = set(session.scalars(select(BackupSetRow.id)))
    repository = stack.base / "repo"
    err = stack.base / f"killed-at-{phase.replace('/', '_')}.err"
    process = subprocess.Popen(
        [SHIPYARD, "backup", kind, "-f", str(stack.spec)],
        env=stack.cli_env(**{PAUSE_ENV: phase}),
        cwd=stack.base,
        stdout=subprocess.DEVNULL,
        stderr=err.open("w"),
        start_new_session=True,  # its own process group, as an operator's or a supervisor's kill
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            with sessions() as session:
                rows = list(session.scalars(select(BackupSetRow).where(BackupSetRow.id.not_in(before))))
            paused = any(phase in (row.phase or "").split(", ") for row in rows if row.state == "running")
            working = not restic_running or (
                any("(restic)" in p for p in working_on(repository)) and finished_locks(repository)
            )
            if paused and working:
                break
            assert process.poll() is None, f"the backup ended before {phase}: {err.read_text()}"
            assert time.monotonic() < deadline, f"the backup did not reach {phase} with restic running"
            time.sleep(0.02)
    finally:
        if restic_too:
            for found in working_on(repository):
                if found.endswith("(restic)"):
                    os.kill(int(found.split()[0]), signal.SIGKILL)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _plain_restic_check(stack: BackupStack, killed_at: str) -> None:
    """Once the killed backup's own processes are gone, `restic check` itself (it wants an
    exclusive lock) passes: no lock of the killed backup is left for anyone to clear."""
    repository = stack.base / "repo"
    deadline = time.monotonic() + 120
    while processes := working_on(repository):
        assert time.monotonic() < deadline, f"killed at {killed_at}: its restic did not end: {processes}"
        time.sleep(0.05)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env |= {"RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD": stack.password}
    env["XDG_CACHE_HOME"] = str(stack.base / "plain-cache")
    check = subprocess.run(
        ["restic", "check"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    locks = sorted(p.name for p in finished_locks(repository))
    failed = f"killed at {killed_at}: restic check failed, locks {locks} left"
    assert check.returncode == 0, f"{failed}:\n{check.stdout}\n{check.stderr}"
    assert locks == []  # (restic ignores a lock killed half-written: only written ones count)


def test_a_backup_killed_at_any_phase_leaves_no_lock_that_stops_a_plain_restic_check(
    stack: BackupStack,
) -> None:
    """SIGKILL of `shipyard backup` (its whole process group) at each phase, restic reading when it
    runs; after each, a plain `restic check` with no shipyard command in between."""
    big = stack.files / "big.bin"  # so that the files' restic is still reading when it is killed
    with big.open("wb") as out:
        for _ in range(24):
            out.write(os.urandom(8 << 20))
    upload = f"files:{stack.files}:upload"
    runs = [  # (kind, phase, wait until restic runs, SIGKILL restic itself too)
        ("database", "postgres:db:dump", False, False),
        ("database", "postgres:db:upload", False, False),
        ("redis", "redis:cache:snapshot", False, False),
        ("redis", "redis:cache:upload", False, False),
        ("files", f"files:{stack.files}:digest", False, False),
        ("files", upload, True, False),
        ("full", "postgres:db:upload", True, False),  # the files upload alongside the dump
        ("files", upload, True, True),  # restic gets no SIGINT: its lock is provably stale
    ]
    try:
        for kind, phase, restic_running, restic_too in runs:
            _kill_at(stack, kind, phase, restic_running=restic_running, restic_too=restic_too)
            _plain_restic_check(stack, phase + (" (restic killed too)" if restic_too else ""))
    finally:
        big.unlink()
