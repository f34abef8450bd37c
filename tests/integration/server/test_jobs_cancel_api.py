"""`POST /jobs/{id}/cancel` over a real job: a files backup run by a real `python -m shipyard.jobs`
child, held in the middle of its run, cancelled through the API; the child stops (SIGTERM, as
Ctrl-C), the job stays `cancelled`, and the backup set it was taking is recorded failed.

Also: every id that names no job (unknown, 0, negative, past any row's range) is a 404 problem, a
job's `origin` tells a CLI run from a server's, and only an admin token may cancel.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.backup import PAUSE_ENV
from shipyard.host import group_members, pid_alive
from shipyard.jobs import JobRunner
from shipyard.server import ServerConfig, create_app
from shipyard.state import AuditRow, BackupSetRow
from shipyard.tokens import create_token
from support.backup_stack import SHIPYARD

PASSWORD_ENV = "CANCEL_RESTIC_PASSWORD"
PASSWORD = "correct horse battery staple"
SPEC = """\
name: shop
backup:
  repository: ./repo
  password: ${{env:{password}}}
  sources: {{volumes: [{files}]}}
environments:
  test: {{}}
"""
PROBLEM = "application/problem+json"


@dataclass
class Served:
    client: TestClient
    admin: dict[str, str]
    reader: dict[str, str]
    jobs: JobRunner
    sessions: sessionmaker[Session]
    base: Path
    files: Path
    database_url: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("jobs-cancel")
    files = base / "files"
    (files / "nested").mkdir(parents=True)
    for index in range(8):
        (files / "nested" / f"{index}.bin").write_bytes(os.urandom(64 << 10))
    spec = base / "shipyard.yaml"
    spec.write_text(SPEC.format(password=PASSWORD_ENV, files=files))
    database_url = f"sqlite:///{base / 'state.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PASSWORD_ENV, PASSWORD)
        env.setenv("SHIPYARD_STATE_DIR", str(base / ".shipyard"))
        app = create_app(
            ServerConfig(database_url=database_url, environment="test", spec=spec, job_log_dir=base / "jobs")
        )
        with app.state.sessions() as session:
            admin = create_token(session, "ops", "admin")
            reader = create_token(session, "web", "client")
        with TestClient(app) as client:
            yield Served(
                client,
                {"Authorization": f"Bearer {admin}"},
                {"Authorization": f"Bearer {reader}"},
                app.state.jobs,
                app.state.sessions,
                base,
                files,
                database_url,
            )
        app.state.engine.dispose()


def _until(what: str, done: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _set_phase(served: Served) -> tuple[str, str | None, str | None] | None:
    """(state, phase, error) of the newest backup set, None before there is one."""
    with served.sessions() as session:
        row = session.scalars(select(BackupSetRow).order_by(BackupSetRow.started_at.desc())).first()
        return None if row is None else (row.state, row.phase, row.error)


def test_a_running_backup_is_cancelled_and_its_child_stops(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    held_at = f"files:{served.files}:digest"
    monkeypatch.setenv(PAUSE_ENV, held_at)  # the child holds there (inherited when it starts) …
    started = served.client.post("/backups", json={"kind": "files"}, headers=served.admin)
    monkeypatch.delenv(PAUSE_ENV)  # … and nothing started later does
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    assert started.json()["origin"] == "server"
    _until(
        "the backup reached the phase it is held at",
        lambda: (_set_phase(served) or ("", "", ""))[1] == held_at,
    )
    pid, _ = served.jobs.process(job_id)
    assert pid is not None
    assert pid_alive(pid)

    cancelled = served.client.post(f"/jobs/{job_id}/cancel", headers=served.admin)
    assert cancelled.status_code == 200, cancelled.text
    job = cancelled.json()
    assert (job["state"], job["exit_code"], job["summary"]) == ("cancelled", 130, "cancelled by token:ops")
    assert job["finished_at"] is not None

    _until(
        "the job's child and its process group are gone",
        lambda: not pid_alive(pid) and not group_members(pid),
    )
    # It stopped as on Ctrl-C (SIGTERM), so the set it was taking says so; its own end changed nothing.
    _until("the backup set is recorded failed", lambda: (_set_phase(served) or ("",))[0] == "failed")
    assert _set_phase(served) == ("failed", held_at, "interrupted")
    again = served.client.get(f"/jobs/{job_id}", headers=served.admin).json()
    assert (again["state"], again["exit_code"], again["summary"]) == (
        "cancelled",
        130,
        "cancelled by token:ops",
    )
    with served.sessions() as session:
        audit = session.scalars(select(AuditRow).where(AuditRow.action == "job.cancel")).all()
    assert [(a.actor, a.target) for a in audit] == [("token:ops", str(job_id))]

    twice = served.client.post(f"/jobs/{job_id}/cancel", headers=served.admin)
    assert twice.status_code == 409
    assert twice.headers["content-type"] == PROBLEM
    assert "not running" in twice.json()["detail"]


@pytest.mark.parametrize("job_id", ["99999999999999999999", str(2**31), str(2**63), "0", "-1", "424242"])
def test_an_id_that_names_no_job_is_a_404_problem(served: Served, job_id: str) -> None:
    for method, path in (
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}/log"),
        ("POST", f"/jobs/{job_id}/cancel"),
    ):
        answer = served.client.request(method, path, headers=served.admin)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        assert f"job {job_id} does not exist" in answer.json()["detail"]


def test_only_an_admin_token_may_cancel(served: Served) -> None:
    assert served.client.post("/jobs/1/cancel", headers=served.reader).status_code == 403
    assert served.client.post("/jobs/1/cancel").status_code == 401


def test_a_job_run_from_the_cli_is_listed_with_its_origin(served: Served) -> None:
    env = {
        **os.environ,
        PASSWORD_ENV: PASSWORD,
        "SHIPYARD_DATABASE_URL": served.database_url,
        "SHIPYARD_STATE_DIR": str(served.base / ".shipyard"),
        "SHIPYARD_ACTOR": "alice",
    }
    ran = subprocess.run(
        [SHIPYARD, "backup", "files", "-e", "test", "-o", "json"],
        cwd=served.base, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    listed = served.client.get("/jobs", headers=served.admin).json()
    newest = listed[0]
    assert (newest["kind"], newest["actor"], newest["origin"], newest["state"]) == (
        "backup", "cli:alice", "cli", "succeeded",
    )  # fmt: skip
    assert served.client.get(f"/jobs/{newest['id']}", headers=served.admin).json()["origin"] == "cli"
    assert {job["origin"] for job in listed} <= {"cli", "server"}
    ended = served.client.post(f"/jobs/{newest['id']}/cancel", headers=served.admin)
    assert ended.status_code == 409, ended.text


def test_the_document_declares_the_states_the_origin_and_the_cancel_answers(served: Served) -> None:
    document = served.client.get("/openapi.json").json()
    job = document["components"]["schemas"]["JobOut"]["properties"]
    assert job["state"]["enum"] == ["running", "succeeded", "failed", "cancelled"]
    assert job["origin"]["enum"] == ["cli", "server"]
    cancel = document["paths"]["/jobs/{job_id}/cancel"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409"} <= set(cancel)
