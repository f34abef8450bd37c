"""SIGTERM to `shipyard serve` while a job runs: the server stops at once, the job's process goes
on to the end and records its own outcome, and the next server start leaves that outcome alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sqlalchemy import select

from shipyard.state import AuditRow, BackupSetRow, JobRow, open_engine, session_factory
from shipyard.tokens import create_token
from support.servers import free_port

SHIPYARD = str(Path(sys.executable).with_name("shipyard"))
SPEC = """\
name: shop
backup:
  repository: ./repo
  password: ${{env:SHOP_RESTIC_PASSWORD}}
  sources: {{volumes: [{files}]}}
environments:
  test: {{}}
"""


def _request(port: int, method: str, path: str, token: str, body: object = None) -> tuple[int, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _serve(tmp_path: Path, url: str, port: int) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [
            SHIPYARD,
            "serve",
            "-f",
            str(tmp_path / "shipyard.yaml"),
            "-e",
            "test",
            "--database-url",
            url,
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "SHOP_RESTIC_PASSWORD": "correct horse battery staple",
            "SHIPYARD_STATE_DIR": str(tmp_path / "state"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return server
        except OSError:
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.2)


def test_sigterm_to_serve_leaves_a_running_job_to_finish_and_record_itself(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    for index in range(6):  # incompressible data, so the backup takes a few seconds
        (files / f"blob-{index}").write_bytes(os.urandom(8 << 20))
    (tmp_path / "shipyard.yaml").write_text(SPEC.format(files=files))
    url = f"sqlite:///{tmp_path / 'state.db'}"
    sessions = session_factory(open_engine(url))
    with sessions() as session:
        token = create_token(session, "ops", "admin")
    port = free_port()
    server = _serve(tmp_path, url, port)
    try:
        status, job = _request(port, "POST", "/backups", token, {"kind": "files"})
        assert status == 202
        assert isinstance(job, dict)
        job_id = int(job["id"])
        deadline = time.monotonic() + 30
        while True:
            with sessions() as session:
                pid = session.scalar(select(JobRow.pid).where(JobRow.id == job_id))
            if pid is not None:
                break
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert _alive(pid), "the backup ended before the server did: make it bigger"
    with sessions() as session:
        assert session.get(JobRow, job_id).state == "running"  # type: ignore[union-attr]

    deadline = time.monotonic() + 180
    while True:
        with sessions() as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            if row.state != "running":
                break
        assert time.monotonic() < deadline, "the job never recorded its end"
        time.sleep(0.2)
    assert (row.state, row.exit_code) == ("succeeded", 0), (
        tmp_path / "state" / "jobs" / f"{job_id}.log"
    ).read_text()
    summary = row.summary
    with sessions() as session:
        sets = list(session.scalars(select(BackupSetRow)))
        audit = [
            (a.actor, a.outcome)
            for a in session.scalars(
                select(AuditRow).where(AuditRow.action == "job.backup").order_by(AuditRow.id)
            )
        ]
    assert [s.state for s in sets] == ["complete"]
    assert summary
    assert sets[0].id in summary
    assert audit == [("token:ops", "started"), ("token:ops", "succeeded")]

    server = _serve(tmp_path, url, port)  # its start-up reconciliation leaves a finished job alone
    try:
        status, again = _request(port, "GET", f"/jobs/{job_id}", token)
        assert status == 200
        assert isinstance(again, dict)
        assert (again["state"], again["exit_code"]) == ("succeeded", 0)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
