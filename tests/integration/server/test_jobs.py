"""Jobs run as real `shipyard` child processes; their arguments are checked before anything runs.

A succeeding job (a backup, a release) and its audit trail: test_ops_api.py and
test_graceful_shutdown.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.errors import UserError
from shipyard.server import JobRunner
from shipyard.server._jobs import (
    backup_args,
    check_args,
    deploy_args,
    drill_args,
    restore_args,
    resume_args,
    verify_args,
)
from shipyard.spec import load_spec_text
from shipyard.state import JobRow, open_engine, session_factory

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


def test_a_failing_job_is_recorded_failed_with_its_last_line(runner: JobRunner) -> None:
    # No set with this id exists: the CLI says so and exits non-zero.
    job_id = runner.start("verify", verify_args("20200101-000000-abcd"), "token:ops")
    view = runner.wait(job_id, timeout_s=60)
    assert view.state == "failed"
    assert view.exit_code not in (0, None)
    assert view.summary
    assert "20200101-000000-abcd" in view.summary


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("deploy", deploy_args("nope", "v2"), "not in stack"),
        ("deploy", deploy_args("web", "v2; rm -rf /"), "version"),
        ("deploy", deploy_args("web", "v2", "yolo"), "strategy"),
        ("deploy", ["deploy", "web", "--version", "v2", "--yes"], "not a deploy job"),
        ("backup", backup_args("everything"), "backup kind"),
        ("verify", verify_args("../etc"), "backup set"),
        ("restore", [*restore_args("database", "20261201-000000-abcd")[:-1], "live"], "not a restore job"),
        ("drill", drill_args("chaos"), "drill mode"),
        ("resume", resume_args("nope"), "not in stack"),
        ("resume", ["rollout", "rollback", "web"], "not a resume job"),
        ("shell", ["sh", "-c", "id"], "unknown job kind"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    runner: JobRunner, kind: str, args: list[str], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        runner.start(kind, args, "token:ops")
    assert runner.recent() == []


def test_without_a_spec_a_job_names_serve_f(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    runner = JobRunner(
        session_factory(open_engine(url)), spec=None, environment="test", database_url=url, log_dir=tmp_path
    )
    with pytest.raises(UserError, match="serve -f SPEC"):
        runner.start("backup", backup_args("files"), "token:ops")


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
                        argv=["backup", "files"],
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


def test_every_restore_kind_of_the_cli_is_a_job_into_scratch(tmp_path: Path) -> None:
    stack = load_spec_text(SPEC.format(files=tmp_path), "shipyard.yaml").stack("test")
    for what in ("database", "redis", "files", "volumes"):
        args = restore_args(what, "20261201-000000-abcd")
        assert check_args("restore", args, stack) == "20261201-000000-abcd"
        assert args[-2:] == ["--into", "scratch"]
