"""`/dr` over real work: `POST /dr/drills` starts a backup drill as a job (a real restic backup of a
files volume, then its verification in scratch), and `GET /dr` and `GET /dr/drills` read it back
from the drills table against the spec's targets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shipyard.server import ServerConfig, create_app
from shipyard.tokens import create_token

pytestmark = pytest.mark.integration

SPEC = """\
name: shop
backup:
  repository: ./repo
  password: ${{env:DRILL_API_RESTIC_PASSWORD}}
  sources: {{volumes: [{files}]}}
dr: {{rto: 15m, rpo: 1h}}
environments:
  test: {{}}
"""


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, dict[str, str]]]:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_bytes(b"x" * 1000)
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC.format(files=files))
    monkeypatch.setenv("DRILL_API_RESTIC_PASSWORD", "correct horse battery staple")
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    app = create_app(
        ServerConfig(
            database_url=f"sqlite:///{tmp_path / 'state.db'}",
            environment="test",
            spec=spec,
            job_log_dir=tmp_path / "jobs",
        )
    )
    with app.state.sessions() as session:
        token = create_token(session, "ops", "admin")
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {token}"}
    app.state.engine.dispose()


def _wait(client: TestClient, headers: dict[str, str], job_id: int, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["state"] != "running":
            return job
        time.sleep(0.2)
    raise AssertionError(client.get(f"/jobs/{job_id}/log", headers=headers).text)


def test_a_drill_started_from_the_api_is_read_back_against_the_targets(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, admin = api
    empty = client.get("/dr", headers=admin).json()
    assert empty == {
        "targets": {"rto_seconds": 900.0, "rpo_seconds": 3600.0, "mttr_seconds": None},
        "drills": [],
    }
    assert client.post("/dr/drills", json={"mode": "everything"}, headers=admin).status_code == 422
    assert client.get("/dr", headers={}).status_code == 401

    started = client.post("/dr/drills", json={"mode": "backup"}, headers=admin)
    assert started.status_code == 202, started.text
    assert started.json()["kind"] == "drill"
    assert started.json()["request"] == {
        "kind": "drill",
        "mode": "backup",
        "dry_run": False,
        "report_dir": None,
    }
    job = _wait(client, admin, started.json()["id"])
    log = client.get(f"/jobs/{job['id']}/log", headers=admin).text
    assert job["state"] == "succeeded", log
    assert job["summary"].startswith("drill backup passed: RTO ")
    assert job["result"]["result"]["mode"] == "backup"

    drills = client.get("/dr", headers=admin).json()["drills"]
    assert [(d["mode"], d["passed"], d["actor"]) for d in drills] == [("backup", True, "token:ops")]
    (drill,) = drills
    assert drill["id"] == job["result"]["drill_id"]
    assert (drill["stack"], drill["environment"]) == ("shop", "test")
    assert drill["rto_seconds"] > 0
    assert (drill["rto_met"], drill["rpo_met"]) == (True, True)
    assert drill["failed_phase"] is None

    history = client.get("/dr/drills", params={"mode": "backup", "limit": 5}, headers=admin).json()
    assert [d["id"] for d in history] == [drill["id"]]
    assert client.get("/dr/drills", params={"mode": "restore"}, headers=admin).json() == []
    assert client.get("/dr/drills", params={"limit": 0}, headers=admin).status_code == 422

    # The drill's own audit entry names its row; the job's says the job ran.
    entries = client.get("/audit", params={"action": "dr.drill"}, headers=admin).json()
    finished = [e for e in entries if e["outcome"] == "passed"]
    assert [e["after"]["drill"] for e in finished] == [drill["id"]]
