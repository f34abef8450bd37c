"""The operations API over real work: a release of the demo app behind HAProxy started through
`POST /rollouts/web/deploy`, a files backup and its verification through `/backups`, each a real
`shipyard` child process; then what `/rollouts`, `/backups`, `/jobs`, `/audit` and `/metrics` say."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipyard.locks import holder
from shipyard.rollout import lock_name
from shipyard.server import ServerConfig, create_app
from shipyard.state import JobRow, open_engine, session_factory
from shipyard.tokens import create_token
from support.api import Api, metric_value
from support.releases import release_stack, wait_for

BACKUP_SPEC = """\
name: shop
services:
  web: {{role: web, image: "example/web:1", run: "exec python3 -m http.server 8080", port: 8080}}
backup:
  repository: ./repo
  password: ${{env:SHOP_RESTIC_PASSWORD}}
  sources: {{volumes: [{files}]}}
dr: {{rto: 15m, rpo: 1h}}
environments:
  test: {{}}
"""


@contextlib.contextmanager
def _api(spec: Path, database_url: str, log_dir: Path) -> Iterator[Api]:
    app = create_app(
        ServerConfig(database_url=database_url, environment="test", spec=spec, job_log_dir=log_dir)
    )
    with app.state.sessions() as session:
        admin = create_token(session, "ops", "admin")
        reader = create_token(session, "web", "client")
    with TestClient(app) as client:
        yield Api(client, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {reader}"})
    app.state.engine.dispose()


def wait_job(api: Api, job_id: int, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.client.get(f"/jobs/{job_id}", headers=api.admin).json()
        if job["state"] != "running":
            return dict(job)
        time.sleep(0.2)
    log = api.client.get(f"/jobs/{job_id}/log", headers=api.admin).text
    raise AssertionError(f"job {job_id} still runs after {timeout} s:\n{log}")


def _phase(api: Api) -> str:
    return str(api.client.get("/rollouts/web", headers=api.admin).json()["phase"])


metric = metric_value


@pytest.fixture
def backup_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_bytes(b"x" * 1000)
    (files / "b.txt").write_bytes(b"y" * 234)
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(BACKUP_SPEC.format(files=files))
    monkeypatch.setenv("SHOP_RESTIC_PASSWORD", "correct horse battery staple")
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(tmp_path / "state"))
    with _api(spec, f"sqlite:///{tmp_path / 'state.db'}", tmp_path / "jobs") as api:
        yield api


def test_backup_and_verify_through_the_api_then_metrics(backup_api: Api, tmp_path: Path) -> None:
    api = backup_api
    before = time.time()
    started = api.client.post("/backups", json={"kind": "files"}, headers=api.admin)
    assert started.status_code == 202, started.text
    assert started.json()["state"] == "running"
    assert started.json()["request"] == {"kind": "backup", "what": "files"}
    job = wait_job(api, started.json()["id"])
    assert job["state"] == "succeeded", api.client.get(f"/jobs/{job['id']}/log", headers=api.admin).text
    assert job["actor"] == "token:ops"

    sets = api.client.get("/backups", headers=api.admin).json()
    assert len(sets) == 1
    set_id = sets[0]["id"]
    assert sets[0]["state"] == "complete"
    source = f"files:{tmp_path / 'files'}"
    assert [a["name"] for a in sets[0]["artefacts"]] == [source]
    detail = api.client.get(f"/backups/{set_id}", headers=api.admin).json()
    assert detail["manifest"]["sources"] == [source]

    verified = api.client.post(f"/backups/{set_id}/verify", headers=api.admin)
    assert verified.status_code == 202
    assert wait_job(api, verified.json()["id"])["state"] == "succeeded"
    assert api.client.get(f"/backups/{set_id}", headers=api.admin).json()["state"] == "verified"

    # A restore from the API goes into scratch, never over the live data.
    assert api.client.post("/backups", json={"kind": "everything"}, headers=api.admin).status_code == 422
    missing = api.client.post(
        "/backups/20200101-000000-abcd/restore", json={"what": "files"}, headers=api.admin
    )
    assert missing.status_code == 404
    restore = api.client.post(f"/backups/{set_id}/restore", json={"what": "files"}, headers=api.admin)
    assert restore.status_code == 202
    assert restore.json()["request"]["into"] == "scratch"
    restored = wait_job(api, restore.json()["id"])
    assert restored["state"] == "succeeded"
    assert restored["result"] is not None
    assert restored["summary"]
    # A client (SDK) token reads flags, not operations.
    assert api.client.get("/backups", headers=api.reader).status_code == 403

    scraped = time.time()
    text = api.client.get("/metrics").text
    after = time.time()
    assert metric(text, "shipyard_backup_size_bytes", source=source) == 1234
    assert metric(text, "shipyard_backup_last_run_success", source=source) == 1
    assert metric(text, "shipyard_backup_last_verification_success") == 1
    # The times are this backup's: it ended during the test, and took part of it.
    end = metric(text, "shipyard_backup_last_success_timestamp_seconds", source=source)
    assert end is not None
    assert before - 1 <= end <= after + 1  # (1 s: stored times may be rounded)
    # The source's own time (its artefact's), not the whole set's.
    duration = metric(text, "shipyard_backup_duration_seconds", source=source)
    assert duration is not None
    assert 0 < duration <= after - before
    assert duration == detail["manifest"]["artefacts"][0]["seconds"]
    # The age counts from the set's point in time, its start, to the scrape.
    age = metric(text, "shipyard_backup_age_seconds", source=source)
    assert age is not None
    set_start = dt.datetime.fromisoformat(sets[0]["started_at"]).timestamp()
    assert scraped - set_start - 1 <= age <= after - set_start + 1  # (1 s: stored times may be rounded)
    assert metric(text, "shipyard_dr_target_rto_seconds") == 900
    assert metric(text, "shipyard_dr_target_rpo_seconds") == 3600

    log = api.client.get(f"/jobs/{job['id']}/log", headers=api.admin)
    assert log.headers["content-type"].startswith("text/plain")
    assert set_id in log.text
    # The server's own schedule (a freshness check every five minutes) may fire during the test.
    jobs = [j for j in api.client.get("/jobs", headers=api.admin).json() if j["actor"] == "token:ops"]
    assert [j["kind"] for j in jobs] == ["restore", "verify", "backup"]
    audit = api.client.get("/audit", params={"actor": "token:ops", "limit": 50}, headers=api.admin).json()
    jobs_audit = [(e["action"], e["outcome"]) for e in reversed(audit) if e["action"].startswith("job.")]
    assert jobs_audit == [
        ("job.backup", "started"),
        ("job.backup", "succeeded"),
        ("job.verify", "started"),
        ("job.verify", "succeeded"),
        ("job.restore", "started"),
        ("job.restore", "succeeded"),
    ]
    # Each operation also wrote what it did, as the same actor.
    done = [(e["action"], e["outcome"]) for e in reversed(audit) if not e["action"].startswith("job.")]
    for action in ("backup", "backup.verify", "backup.restore"):
        assert [o for a, o in done if a == action] == ["started", "ok"], done


def test_a_release_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with release_stack(tmp_path, "blue-green") as stack:
        monkeypatch.setenv("SHIPYARD_STATE_DIR", str(stack.directory / "state"))
        with _api(stack.spec, stack.env["SHIPYARD_DATABASE_URL"], tmp_path / "jobs") as api:
            listed = api.client.get("/rollouts", headers=api.admin).json()
            assert [(r["service"], r["candidate"], r["outcome"]) for r in listed] == [
                ("web", "v1", "succeeded")
            ]
            started = api.client.post("/rollouts/web/deploy", json={"version": "v2"}, headers=api.admin)
            assert started.status_code == 202, started.text
            # Without traffic the analysis is inconclusive and the release waits at full weight
            # for a decision: promote it through the API, to the controller the job runs.
            assert wait_for(lambda: _phase(api) == "paused", timeout=60), _phase(api)
            promoted = api.client.post("/rollouts/web/promote", headers=api.admin)
            assert promoted.status_code == 202
            assert promoted.json()["controller_running"] is True
            job = wait_job(api, started.json()["id"])
            assert job["state"] == "succeeded", api.client.get(
                f"/jobs/{job['id']}/log", headers=api.admin
            ).text
            detail = api.client.get("/rollouts/web", headers=api.admin).json()
            assert (detail["stable"], detail["candidate"], detail["outcome"]) == ("v1", "v2", "succeeded")
            assert detail["weights"] == {"stable": 0, "candidate": 100}
            assert detail["steps"]
            assert all(step["status"] in ("done", "failed") for step in detail["steps"])
            assert detail["actor"] == "token:ops"  # the API token acted, through the job
            history = api.client.get("/rollouts/web/history", headers=api.admin).json()
            assert [r["candidate"] for r in history] == ["v2", "v1"]

            # Steering a finished release is queued and answered, never a 5xx; nothing is started.
            paused = api.client.post("/rollouts/web/pause", headers=api.admin)
            assert paused.status_code == 202
            assert paused.json()["controller_running"] is False
            assert paused.json()["job_id"] is None

            text = api.client.get("/metrics").text
            assert metric(text, "shipyard_rollouts_total", service="web", outcome="succeeded") == 2
            steps = len(detail["steps"])
            counted = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("shipyard_rollout_step_duration_seconds_count{")
            )
            assert counted >= steps
            audit = api.client.get("/audit", params={"action": "job.deploy"}, headers=api.admin).json()
            assert [(e["actor"], e["outcome"], e["target"]) for e in reversed(audit)] == [
                ("cli:test", "started", "web"),  # v1, deployed from the command line: a job too
                ("cli:test", "succeeded", "web"),
                ("token:ops", "started", "web"),
                ("token:ops", "succeeded", "web"),
            ]
            # The release itself, as the same actor (v1 was deployed from the command line).
            audit = api.client.get("/audit", params={"action": "deploy"}, headers=api.admin).json()
            assert [(e["actor"], e["outcome"]) for e in reversed(audit)] == [
                ("cli:test", "started"),
                ("cli:test", "succeeded"),
                ("token:ops", "started"),
                ("token:ops", "succeeded"),
            ]
            steered = api.client.get("/audit", params={"action": "rollout."}, headers=api.admin).json()
            assert [e["action"] for e in reversed(steered)] == ["rollout.promote", "rollout.pause"]


def test_steering_a_release_whose_controller_was_killed_starts_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deploy job's controller is SIGKILLed while the release waits for a decision. A promote
    from the API then finds no controller: it starts `shipyard rollout resume` as a job, which
    applies the promote and finishes the release."""
    with release_stack(tmp_path, "blue-green") as stack:
        monkeypatch.setenv("SHIPYARD_STATE_DIR", str(stack.directory / "state"))
        with _api(stack.spec, stack.env["SHIPYARD_DATABASE_URL"], tmp_path / "jobs") as api:
            started = api.client.post("/rollouts/web/deploy", json={"version": "v2"}, headers=api.admin)
            assert started.status_code == 202, started.text
            assert wait_for(lambda: _phase(api) == "paused", timeout=60), _phase(api)
            sessions = session_factory(open_engine(stack.env["SHIPYARD_DATABASE_URL"]))
            with sessions() as session:
                row = session.get(JobRow, started.json()["id"])
                assert row is not None
                assert row.pid is not None
                pid = row.pid
            os.kill(pid, signal.SIGKILL)
            assert wait_job(api, started.json()["id"])["state"] == "failed"
            # The dead controller's lease runs out (15 s); until then a command would wait for it.
            assert wait_for(lambda: holder(sessions, lock_name("web")) is None, timeout=30)

            promoted = api.client.post("/rollouts/web/promote", headers=api.admin)
            assert promoted.status_code == 202, promoted.text
            assert promoted.json()["controller_running"] is False
            job_id = promoted.json()["job_id"]
            assert job_id is not None
            job = wait_job(api, job_id)
            assert job["kind"] == "resume"
            assert (job["request"]["kind"], job["request"]["service"]) == ("resume", "web")
            assert job["state"] == "succeeded", api.client.get(f"/jobs/{job_id}/log", headers=api.admin).text
            detail = api.client.get("/rollouts/web", headers=api.admin).json()
            assert (detail["candidate"], detail["outcome"]) == ("v2", "succeeded")
            assert detail["weights"] == {"stable": 0, "candidate": 100}
            audit = api.client.get("/audit", params={"action": "job.resume"}, headers=api.admin).json()
            assert [(e["actor"], e["outcome"], e["target"]) for e in reversed(audit)] == [
                ("token:ops", "started", "web"),
                ("token:ops", "succeeded", "web"),
            ]
