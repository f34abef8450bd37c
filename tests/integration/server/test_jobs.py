"""Jobs run ops requests in real child processes (`python -m shipyard.jobs <id>`); a request is
checked before anything runs, and a job's typed result and summary come back in its row.

A succeeding job (a backup, a release) and its audit trail: test_ops_api.py and
test_graceful_shutdown.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shipyard.errors import UserError
from shipyard.jobs import JobRunner, choices, parse_request
from shipyard.state import JobRow, open_engine, session_factory, upgrade

SPEC = """\
name: shop
services:
  web: {{role: web, image: "example/web:1", run: "exec python3 -m http.server 8080", port: 8080}}
backup:
  repository: ./repo
  password: ${{env:SHOP_RESTIC_PASSWORD}}
  sources: {{volumes: [{files}]}}
environments:
  test: {{}}
"""


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobRunner:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("hello")
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC.format(files=files))
    monkeypatch.setenv("SHOP_RESTIC_PASSWORD", "correct horse battery staple")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    return JobRunner(
        session_factory(open_engine(url)),
        spec=spec,
        environment="test",
        database_url=url,
        log_dir=tmp_path / "jobs",
    )


def test_a_failing_job_is_recorded_failed_with_its_error(runner: JobRunner) -> None:
    # No set with this id exists: the verification says so and the job fails.
    job_id = runner.start(parse_request({"kind": "verify", "set_id": "20200101-000000-abcd"}), "token:ops")
    view = runner.wait(job_id, timeout_s=120)
    assert view.state == "failed"
    assert view.exit_code not in (0, None)
    assert view.summary
    assert "20200101-000000-abcd" in view.summary
    assert view.result is None
    assert view.request == {"kind": "verify", "set_id": "20200101-000000-abcd", "read_data": None}


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        ({"kind": "deploy", "service": "nope", "version": "v2"}, "not in stack"),
        ({"kind": "deploy", "service": "web", "version": "v2; rm -rf /"}, "version"),
        ({"kind": "deploy", "service": "web", "version": "v2", "strategy": "yolo"}, "strategy"),
        ({"kind": "deploy", "service": "web", "version": "v2", "yes": True}, "yes"),
        ({"kind": "backup", "what": "everything"}, "what"),
        ({"kind": "verify", "set_id": "../etc"}, "backup set"),
        (
            {"kind": "restore", "what": "database", "set_id": "20261201-000000-abcd", "into": "live"},
            "scratch",
        ),
        ({"kind": "drill", "mode": "chaos"}, "mode"),
        ({"kind": "resume", "service": "nope"}, "not in stack"),
        ({"kind": "shell", "command": "id"}, "kind"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(
    runner: JobRunner, wanted: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        runner.start(parse_request(wanted), "token:ops")
    assert runner.recent() == []


def test_without_a_spec_a_job_names_serve_f(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    runner = JobRunner(
        session_factory(open_engine(url)), spec=None, environment="test", database_url=url, log_dir=tmp_path
    )
    with pytest.raises(UserError, match="serve -f SPEC"):
        runner.start(parse_request({"kind": "backup", "what": "files"}), "token:ops")


def test_start_up_closes_jobs_whose_child_is_gone(runner: JobRunner) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(gone.stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with runner._sessions() as session, session.begin():
            for pid, owner in (
                (dead_pid, runner.owner),
                (alive.pid, runner.owner),
                (dead_pid, "elsewhere:1"),
            ):
                session.add(
                    JobRow(
                        kind="backup",
                        request={"kind": "backup", "what": "files"},
                        actor="a",
                        state="running",
                        owner=owner,
                        pid=pid,
                    )
                )
        assert runner.reconcile() == 1
        states = [(v.state, v.summary) for v in reversed(runner.recent())]
        assert states == [("failed", "server stopped while it ran"), ("running", None), ("running", None)]
    finally:
        alive.kill()
        alive.wait()
    assert os.getpid() != dead_pid


def test_the_forms_offer_exactly_what_a_request_accepts() -> None:
    assert set(choices("restore", "what")) == {"database", "redis", "files", "volumes"}
    assert set(choices("deploy", "strategy")) == {"blue-green", "canary"}
    for what in choices("backup", "what"):
        assert parse_request({"kind": "backup", "what": what}).what == what


def test_jobs_recorded_before_requests_keep_their_history(tmp_path: Path) -> None:
    """Migration 0006 turns each old argv into the request it ran, and drops the argv."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    upgrade(engine, "0005")
    old = [
        ("deploy", ["deploy", "web", "--version", "v2", "--strategy", "canary"]),
        ("rollback", ["rollout", "rollback", "web"]),
        ("backup", ["backup", "full"]),
        ("verify", ["backup", "verify", "20261201-000000-abcd"]),
        ("restore", ["restore", "redis", "--set", "20261201-000000-abcd", "--into", "scratch"]),
        ("drill", ["dr", "test", "partial"]),
    ]
    with engine.begin() as connection:
        for kind, argv in old:
            connection.execute(
                sa.text(
                    "INSERT INTO jobs (kind, argv, actor, state, owner, started_at)"
                    " VALUES (:kind, :argv, 'a', 'succeeded', 'h:1', '2026-01-01 00:00:00')"
                ),
                {"kind": kind, "argv": json.dumps(argv)},
            )
    engine.dispose()
    runner = JobRunner(
        session_factory(open_engine(url)), spec=None, environment="test", database_url=url, log_dir=tmp_path
    )
    requests = [view.request for view in reversed(runner.recent())]
    assert requests == [
        {"kind": "deploy", "service": "web", "version": "v2", "strategy": "canary"},
        {"kind": "rollback", "service": "web"},
        {"kind": "backup", "what": "full"},
        {"kind": "verify", "set_id": "20261201-000000-abcd"},
        {"kind": "restore", "what": "redis", "set_id": "20261201-000000-abcd", "into": "scratch"},
        {"kind": "drill", "mode": "partial"},
    ]
    for request in requests:
        parse_request(request)  # each is a request today's jobs can run again
