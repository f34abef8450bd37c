"""Two real `shipyard serve` on one PostgreSQL state store: a job whose server and child are both
SIGKILLed is closed as failed by the other server (`jobs._orphans`), and the audit log says so."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from shipyard.host import pid_alive
from shipyard.state import AuditRow, JobRow, open_engine, session_factory
from shipyard.tokens import create_token
from support.serve import start_serve, stop_serve, wait_ready
from support.servers import Postgres, free_port, postgres_server

PASSWORD_ENV = "ORPHAN_RESTIC_PASSWORD"
SPEC = """\
name: shop
backup:
  repository: ./repo
  password: ${{env:{password}}}
  sources: {{volumes: [{files}]}}
environments:
  test: {{}}
"""
REAP_WAIT_SECONDS = 90  # the minute, and room for a loaded machine


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def _serve(tmp_path: Path, url: str, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = ["-f", str(tmp_path / "shipyard.yaml"), "-e", "test", "--database-url", url]
    env = {
        **os.environ,
        PASSWORD_ENV: "correct horse battery staple",
        "SHIPYARD_STATE_DIR": str(tmp_path / f"state-{name}"),
    }
    process = start_serve(args, port=port, log=tmp_path / f"serve-{name}.log", cwd=tmp_path, env=env)
    return process, f"http://127.0.0.1:{port}"


def test_a_job_whose_server_and_child_were_killed_is_closed_by_the_other_server(
    postgres: Postgres, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "blob").write_bytes(os.urandom(4 << 20))
    (tmp_path / "shipyard.yaml").write_text(SPEC.format(password=PASSWORD_ENV, files=files))
    postgres.psql("CREATE DATABASE orphans")
    url = postgres.url("orphans")
    sessions = session_factory(open_engine(url))  # migrated once, before the servers share it
    with sessions() as session:
        admin = {"Authorization": f"Bearer {create_token(session, 'ops', 'admin')}"}
    doomed, doomed_base = _serve(tmp_path, url, "doomed")
    survivor, survivor_base = _serve(tmp_path, url, "survivor")
    child_pid: int | None = None
    try:
        wait_ready(doomed_base, doomed, tmp_path / "serve-doomed.log")
        wait_ready(survivor_base, survivor, tmp_path / "serve-survivor.log")
        started = httpx.post(f"{doomed_base}/backups", json={"kind": "files"}, headers=admin, timeout=30)
        assert started.status_code == 202, started.text
        job_id = int(started.json()["id"])
        deadline = time.monotonic() + 30
        while child_pid is None:
            with sessions() as session:
                child_pid = session.scalar(select(JobRow.pid).where(JobRow.id == job_id))
            assert time.monotonic() < deadline, "the job's child never started"
            time.sleep(0.02)
        # The server first, so that nobody sees the child end; then the child and its tools.
        doomed.kill()
        doomed.wait()
        assert pid_alive(child_pid), "the job ended before its server was killed"
        os.killpg(child_pid, signal.SIGKILL)
        with sessions() as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            assert (row.state, row.owner.rpartition(":")[2]) == ("running", str(doomed.pid))

        deadline = time.monotonic() + REAP_WAIT_SECONDS
        while True:
            job = httpx.get(f"{survivor_base}/jobs/{job_id}", headers=admin, timeout=10).json()
            if job["state"] != "running":
                break
            assert time.monotonic() < deadline, f"job {job_id} is still running: nobody reaped it"
            time.sleep(0.5)
        assert job["state"] == "failed", job
        assert job["summary"].startswith(f"orphaned: server {row.owner} stopped"), job["summary"]
        with sessions() as session:
            audit = [
                (entry.outcome, (entry.after or {}).get("summary"))
                for entry in session.scalars(
                    select(AuditRow).where(AuditRow.action == "job.backup").order_by(AuditRow.id)
                )
            ]
        assert [outcome for outcome, _ in audit] == ["started", "failed"], audit
        assert audit[-1][1] == job["summary"]
    finally:
        for process in (doomed, survivor):
            if process.poll() is None:
                stop_serve(process)
        if child_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child_pid, signal.SIGKILL)
