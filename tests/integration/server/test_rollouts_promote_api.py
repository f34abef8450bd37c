"""`promote` against `promote` with `{"full": true}` through the API, and a second deploy refused at once.

A real release of the demo app behind HAProxy, run by a real deploy job (`shipyard` child process)
that the API started; the canary waits at a pause after each weight, so every decision is the
test's. `promote` ends one pause (10 % → 50 %); `promote` with `full` skips the 75 % step and its
pause (50 % → 100 %). A second deploy while the first runs is a 409 problem naming the running
release.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shipyard.server import ServerConfig, create_app
from shipyard.tokens import create_token
from support.api import Api
from support.releases import release_stack, wait_for

STEPS = (
    "[{weight: 10}, {pause: until-promoted}, {weight: 50}, {pause: until-promoted},"
    " {weight: 75}, {pause: until-promoted}, {weight: 100}]"
)
PROBLEM = "application/problem+json"


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


def _release(api: Api) -> dict[str, Any]:
    answer = api.client.get("/rollouts/web", headers=api.admin)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def _paused_at(api: Api, candidate: int) -> bool:
    release = _release(api)
    return bool(release["phase"] == "paused" and release["weights"]["candidate"] == candidate)


def _wait_job(api: Api, job_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.client.get(f"/jobs/{job_id}", headers=api.admin).json()
        if job["state"] != "running":
            return job
        time.sleep(0.2)
    raise AssertionError(api.client.get(f"/jobs/{job_id}/log", headers=api.admin).text)


def test_promote_goes_one_step_promote_full_skips_the_rest_and_a_second_deploy_is_409(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with release_stack(tmp_path, "canary", steps=STEPS) as stack:
        monkeypatch.setenv("SHIPYARD_STATE_DIR", str(stack.directory / "state"))
        with _api(stack.spec, stack.env["SHIPYARD_DATABASE_URL"], tmp_path / "jobs") as api:
            started = api.client.post("/rollouts/web/deploy", json={"version": "v2"}, headers=api.admin)
            assert started.status_code == 202, started.text
            # At once, before the job's child may even hold the lease: refused, not accepted.
            again = api.client.post("/rollouts/web/deploy", json={"version": "v3"}, headers=api.admin)
            assert (again.status_code, again.headers["content-type"]) == (409, PROBLEM), again.text

            assert wait_for(lambda: _paused_at(api, 10), timeout=60), _release(api)
            release = _release(api)
            # migrate, prepare, health, 10 %, *pause*, 50 %, pause, 75 %, pause, 100 %, warm, retire
            assert (release["step"], release["plan_steps"]) == (4, 12)  # 0-based
            assert {"promote", "promote-full"} <= set(release["commands"])
            # While the controller holds the lease: 409 naming the running release.
            again = api.client.post("/rollouts/web/deploy", json={"version": "v3"}, headers=api.admin)
            assert again.status_code == 409, again.text
            assert again.headers["content-type"] == PROBLEM
            assert again.json()["rollout_id"] == release["id"]
            assert f"release {release['id']}" in again.json()["detail"]

            # `full` belongs to promote only.
            wrong = api.client.post("/rollouts/web/pause", json={"full": True}, headers=api.admin)
            assert wrong.status_code == 422, wrong.text
            assert wrong.json()["errors"][0]["field"] == "body.full"

            # promote: the next step only (10 % → 50 %, then the next pause).
            promoted = api.client.post("/rollouts/web/promote", headers=api.admin)
            assert promoted.status_code == 202, promoted.text
            assert promoted.json()["command"] == "promote"
            assert wait_for(lambda: _paused_at(api, 50), timeout=60), _release(api)
            assert _release(api)["step"] == 6

            # promote --full: the 75 % step and its pause are skipped; v2 takes everything.
            full = api.client.post("/rollouts/web/promote", json={"full": True}, headers=api.admin)
            assert full.status_code == 202, full.text
            assert full.json()["command"] == "promote-full"
            job = _wait_job(api, started.json()["id"])
            assert job["state"] == "succeeded", api.client.get(
                f"/jobs/{job['id']}/log", headers=api.admin
            ).text
        row = stack.latest()
        assert (row.candidate, row.outcome) == ("v2", "succeeded")
        weights = [
            s.action["weights"]["candidate"] for s in stack.steps(row.id) if s.action["type"] == "SetWeights"
        ]
        assert weights == [10, 50, 100]
        assert stack.target().status("web").versions == {"v2": 100}


def test_the_promote_body_is_documented_in_openapi(tmp_path: Path) -> None:
    app = create_app(ServerConfig(database_url=f"sqlite:///{tmp_path / 'state.db'}", environment="test"))
    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()
    app.state.engine.dispose()
    full = schema["components"]["schemas"]["CommandIn"]["properties"]["full"]
    assert full["type"] == "boolean"
    assert "kubectl argo rollouts promote --full" in full["description"]
    assert "409" in schema["paths"]["/rollouts/{service}/deploy"]["post"]["responses"]
