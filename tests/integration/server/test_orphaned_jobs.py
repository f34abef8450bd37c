"""Two real `shipyard serve` on one PostgreSQL state store: a job whose server and child are both
SIGKILLed is closed as failed by the other server (`jobs._orphans`), and the audit log says so.

On one host the other server sees the dead pids; from another host (a UTS namespace of its own
with its own host name, `unshare -u`) only the leases, so there it must also leave alone a job
whose server died but whose child still runs and beats its lease."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.host import pid_alive
from shipyard.jobs._orphans import (
    HEARTBEAT_TTL_SECONDS,
    RECOVERY_GRACE_SECONDS,
    job_lease_name,
    server_lease_name,
)
from shipyard.state import AuditRow, JobRow, LockRow, as_utc, open_engine, session_factory
from shipyard.tokens import create_token
from support.serve import start_serve, stop_serve, wait_ready
from support.servers import Postgres, free_port, postgres_server

PASSWORD_ENV = "ORPHAN_RESTIC_PASSWORD"
SPEC = """\
name: shop
datastores:
  db: {{kind: postgresql, storage: {{size: 1Gi}}, user: {user}, database: shop, local: {{port: {port}}}}}
backup:
  repository: ./repo
  password: ${{env:{password}}}
  sources: {{volumes: [{files}], datastores: [db]}}
environments:
  test: {{}}
"""
REAP_WAIT_SECONDS = 90  # the minute, and room for a loaded machine


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def _serve(
    tmp_path: Path, url: str, name: str, prefix: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = ["-f", str(tmp_path / "shipyard.yaml"), "-e", "test", "--database-url", url]
    env = {
        **os.environ,
        PASSWORD_ENV: "correct horse battery staple",
        "SHIPYARD_STATE_DIR": str(tmp_path / f"state-{name}"),
    }
    process = start_serve(
        args, port=port, log=tmp_path / f"serve-{name}.log", cwd=tmp_path, env=env, prefix=prefix
    )
    return process, f"http://127.0.0.1:{port}"


def _store(
    postgres: Postgres, tmp_path: Path, database: str
) -> tuple[str, sessionmaker[Session], dict[str, str]]:
    """The spec in `tmp_path` and a state store `database` for the servers: its URL, sessions on
    it and an admin's headers."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "blob").write_bytes(os.urandom(4 << 20))
    (tmp_path / "shipyard.yaml").write_text(
        SPEC.format(password=PASSWORD_ENV, files=files, user=postgres.user, port=postgres.port)
    )
    postgres.psql(f"CREATE DATABASE {database}")
    url = postgres.url(database)
    sessions = session_factory(open_engine(url))  # migrated once, before the servers share it
    with sessions() as session:
        admin = {"Authorization": f"Bearer {create_token(session, 'ops', 'admin')}"}
    return url, sessions, admin


def _child_pid(sessions: sessionmaker[Session], job_id: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        with sessions() as session:
            pid = session.scalar(select(JobRow.pid).where(JobRow.id == job_id))
        if pid is not None:
            return pid
        assert time.monotonic() < deadline, "the job's child never started"
        time.sleep(0.02)


def _wait_closed(base: str, admin: dict[str, str], job_id: int) -> dict[str, str]:
    """The job as `base` shows it once it is no longer running (within REAP_WAIT_SECONDS)."""
    deadline = time.monotonic() + REAP_WAIT_SECONDS
    while True:
        job: dict[str, str] = httpx.get(f"{base}/jobs/{job_id}", headers=admin, timeout=10).json()
        if job["state"] != "running":
            return job
        assert time.monotonic() < deadline, f"job {job_id} is still running: nobody reaped it"
        time.sleep(0.5)


def _audited_ends(sessions: sessionmaker[Session]) -> list[tuple[str, str | None]]:
    with sessions() as session:
        return [
            (entry.outcome, (entry.after or {}).get("summary"))
            for entry in session.scalars(
                select(AuditRow).where(AuditRow.action == "job.backup").order_by(AuditRow.id)
            )
        ]


def test_a_job_whose_server_and_child_were_killed_is_closed_by_the_other_server(
    postgres: Postgres, tmp_path: Path
) -> None:
    url, sessions, admin = _store(postgres, tmp_path, "orphans")
    doomed, doomed_base = _serve(tmp_path, url, "doomed")
    survivor, survivor_base = _serve(tmp_path, url, "survivor")
    child_pid: int | None = None
    try:
        wait_ready(doomed_base, doomed, tmp_path / "serve-doomed.log")
        wait_ready(survivor_base, survivor, tmp_path / "serve-survivor.log")
        started = httpx.post(f"{doomed_base}/backups", json={"kind": "files"}, headers=admin, timeout=30)
        assert started.status_code == 202, started.text
        job_id = int(started.json()["id"])
        child_pid = _child_pid(sessions, job_id)
        # The server first, so that nobody sees the child end; then the child and its tools.
        doomed.kill()
        doomed.wait()
        assert pid_alive(child_pid), "the job ended before its server was killed"
        os.killpg(child_pid, signal.SIGKILL)
        with sessions() as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            assert (row.state, row.owner.rpartition(":")[2]) == ("running", str(doomed.pid))

        job = _wait_closed(survivor_base, admin, job_id)
        assert job["state"] == "failed", job
        assert job["summary"].startswith(f"orphaned: server {row.owner} stopped"), job["summary"]
        audit = _audited_ends(sessions)
        assert [outcome for outcome, _ in audit] == ["started", "failed"], audit
        assert audit[-1][1] == job["summary"]
    finally:
        for process in (doomed, survivor):
            if process.poll() is None:
                stop_serve(process)
        if child_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child_pid, signal.SIGKILL)


def _on_host(name: str) -> list[str]:
    """A prefix that runs a command as on another host: in a UTS namespace of its own named `name`
    (`socket.gethostname()` says so), while pids, files and loopback stay shared with the test."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name]


def _why_no_other_host() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed: no second host name to run a server under"
    if os.geteuid() != 0:
        return "a UTS namespace (unshare -u) needs root: no second host name to run a server under"
    probe = subprocess.run([*_on_host("probe"), "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare -u fails here ({probe.stderr.strip()}): no second host name"
    return None


def _expiries(sessions: sessionmaker[Session], *names: str) -> dict[str, dt.datetime]:
    with sessions() as session:
        rows = session.scalars(select(LockRow).where(LockRow.name.in_(names)))
        return {row.name: as_utc(row.expires_at) for row in rows}


def test_a_job_orphaned_on_another_host_is_closed_once_its_childs_lease_lapses(
    postgres: Postgres, tmp_path: Path
) -> None:
    if reason := _why_no_other_host():
        pytest.skip(reason)
    url, sessions, admin = _store(postgres, tmp_path, "orphans_cross_host")
    postgres.psql("CREATE DATABASE shop")
    postgres.psql("CREATE TABLE marks (id int)", database="shop")
    # The backup's child counts the rows of `marks` and waits on this lock until the test lets go:
    # a child that runs (and beats its lease) for as long as the test needs.
    blocker = psycopg.connect(postgres.url("shop"))
    blocker.execute("LOCK TABLE marks IN ACCESS EXCLUSIVE MODE")
    # The survivor first: its reaper trusts lapsed leases well before the doomed server's lapses.
    survivor, survivor_base = _serve(tmp_path, url, "survivor", _on_host("host-b"))
    doomed, doomed_base = _serve(tmp_path, url, "doomed", _on_host("host-a"))
    child_pid: int | None = None
    try:
        wait_ready(survivor_base, survivor, tmp_path / "serve-survivor.log")
        wait_ready(doomed_base, doomed, tmp_path / "serve-doomed.log")
        doomed_lease = server_lease_name(f"host-a:{doomed.pid}")
        survivor_lease = server_lease_name(f"host-b:{survivor.pid}")
        started = httpx.post(f"{doomed_base}/backups", json={"kind": "database"}, headers=admin, timeout=30)
        assert started.status_code == 202, started.text
        job_id = int(started.json()["id"])
        child_pid = _child_pid(sessions, job_id)
        waiting = "SELECT count(*) FROM pg_locks WHERE relation = 'marks'::regclass AND NOT granted"
        while postgres.psql(waiting, database="shop") == "0":
            assert pid_alive(child_pid), "the job's child ended before it reached the locked table"
            time.sleep(0.05)
        doomed.kill()
        doomed.wait()
        with sessions() as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            assert (row.state, row.owner) == ("running", f"host-a:{doomed.pid}")
        doomed_lapses = _expiries(sessions, doomed_lease)[doomed_lease]

        # The guard: the child runs and beats, so the survivor must leave the job alone, through two
        # of its beats after the doomed server's lease lapsed (the pass that followed the first one
        # is then over), both late enough after its start for it to trust lapsed leases.
        ttl = dt.timedelta(seconds=HEARTBEAT_TTL_SECONDS)
        survivor_beats: set[dt.datetime] = set()
        deadline = time.monotonic() + REAP_WAIT_SECONDS
        while True:
            survivor_beats.add(_expiries(sessions, survivor_lease)[survivor_lease] - ttl)
            trusted = min(survivor_beats) + dt.timedelta(seconds=RECOVERY_GRACE_SECONDS)
            telling = [beat for beat in survivor_beats if beat > doomed_lapses and beat >= trusted]
            job = httpx.get(f"{survivor_base}/jobs/{job_id}", headers=admin, timeout=10).json()
            assert pid_alive(child_pid), "the job's child ended before the test killed it"
            assert job["state"] == "running", f"reaped while its child runs and beats its lease: {job}"
            if len(telling) >= 2:
                break
            assert time.monotonic() < deadline, f"the survivor stopped beating: {sorted(survivor_beats)}"
            time.sleep(0.5)

        os.killpg(child_pid, signal.SIGKILL)
        blocker.rollback()
        job = _wait_closed(survivor_base, admin, job_id)
        assert job["state"] == "failed", job
        expected = f"orphaned: server host-a:{doomed.pid} stopped (closed by server host-b:{survivor.pid})"
        assert job["summary"].startswith(expected), job["summary"]
        assert _audited_ends(sessions) == [("started", None), ("failed", job["summary"])]
        # Told by the lease, not by the pid (which this test's shared pid space would still show).
        with sessions() as session:
            finished_at = session.scalar(select(JobRow.finished_at).where(JobRow.id == job_id))
        child_lapsed = _expiries(sessions, job_lease_name(job_id))[job_lease_name(job_id)]
        assert finished_at is not None
        assert as_utc(finished_at) > child_lapsed, f"closed at {finished_at}, before {child_lapsed}"
    finally:
        for process in (doomed, survivor):
            if process.poll() is None:
                stop_serve(process)
        if child_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child_pid, signal.SIGKILL)
        blocker.close()
