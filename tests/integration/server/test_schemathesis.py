"""Schemathesis over every operation of the operations API (rollouts, backups, DR, jobs, audit):
with an admin token no 5xx and documented shapes; without a token, 401 everywhere but the
health and metrics endpoints, and the dashboard's pages send to its login (or refuse).

The server has no stack here, so the routes that start jobs answer 422 naming `serve -f SPEC`
rather than start a backup per generated case; test_ops_api.py runs them for real. The
feature-flag operations are fuzzed by test_api_schema.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from shipyard.server import ServerConfig, create_app
from shipyard.server._dashboard import build_router as build_dashboard_router
from shipyard.state import AuditRow, BackupSetRow, DrillRow, JobRow, RolloutRow, RolloutStepRow
from shipyard.tokens import create_token

OPEN = {"/healthz", "/readyz", "/metrics"}
MAX_EXAMPLES = 12


def _seed(app: Any) -> None:
    """A little of everything the reads show, so they answer 200 as well as 404."""
    now = dt.datetime.now(dt.UTC)
    with app.state.sessions() as session, session.begin():
        release = RolloutRow(
            service="web", environment="production", target="local", strategy="canary", stable="v1",
            candidate="v2", phase="finished", outcome="succeeded", actor="cli:ops", stack={}, state={},
            finished_at=now,
        )  # fmt: skip
        session.add(release)
        session.flush()
        session.add(RolloutStepRow(rollout_id=release.id, seq=1, action={"type": "Prepare"}, status="done",
                                   started_at=now, finished_at=now))  # fmt: skip
        session.add(BackupSetRow(id="20261201-030000-abcd", stack="shop", environment="production",
                                 kind="full", state="complete", owner="h:1", actor="cli:ops", finished_at=now,
                                 manifest=MANIFEST))  # fmt: skip
        session.add(JobRow(kind="backup", request={"kind": "backup", "what": "full"}, actor="token:ops",
                           state="succeeded", owner="h:1", exit_code=0, summary="done",
                           finished_at=now))  # fmt: skip
        session.add(AuditRow(actor="cli:ops", action="dr.drill", target_kind="stack", target="shop/prod",
                             outcome="passed", after={"mode": "full"}))  # fmt: skip
        session.add(DrillRow(stack="shop", environment="production", mode="full", passed=True,
                             actor="cli:ops", finished_at=now, rto_seconds=2.5, rpo_seconds=0.0))  # fmt: skip


MANIFEST = {
    # As `shipyard backup files` writes it (a set's manifest is read as a typed model).
    "id": "20261201-030000-abcd", "spec": "shop", "environment": "production", "kind": "full",
    "repository": "/srv/backups", "restic_host": "shop-production", "sources": ["files:/srv"],
    "tools": {"restic": "restic 0.14.0"}, "started_at": "2026-12-01T03:00:00+00:00",
    "finished_at": "2026-12-01T03:00:05+00:00",
    "artefacts": [{"name": "files:/srv", "type": "files", "path": "/srv", "snapshot_id": "0" * 64,
                   "sha256": "1" * 64, "files": 1, "raw_bytes": 10, "data_added": 10, "seconds": 0.1}],
}  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    base = Path(tmp_path_factory.mktemp("ops-api"))
    app = create_app(ServerConfig(database_url=f"sqlite:///{base / 'state.db'}", job_log_dir=base / "jobs"))
    with app.state.sessions() as session:
        token = create_token(session, "fuzz", "admin")
    _seed(app)
    yield app, token
    app.state.engine.dispose()


def _operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_with_an_admin_token_has_no_5xx(served: tuple[Any, str]) -> None:
    app, token = served
    headers = {"Authorization": f"Bearer {token}"}
    tested = []
    for operation in _operations(app):
        if operation.path.startswith(("/feature-flags", "/feature-segments")):
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

        run()
        tested.append(operation.label)
    for expected in ("GET /rollouts/{service}", "POST /backups/{set_id}/restore", "GET /audit",
                     "GET /jobs/{job_id}/log", "POST /dr/drills", "POST /rollouts/{service}/{command}",
                     "GET /metrics"):  # fmt: skip
        assert expected in tested


def test_without_a_token_everything_but_health_and_metrics_is_401(served: tuple[Any, str]) -> None:
    app, _ = served
    checked = []
    for operation in _operations(app):
        if operation.path in OPEN or operation.path == "/feature-flags/stream":
            continue  # the stream is refused alike (test_api_schema), but would hold the connection

        @given(case=operation.as_strategy())
        @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            response = case.call()
            assert response.status_code == 401, (case.method, case.formatted_path, response.status_code)

        run()
        checked.append(operation.label)
    assert len(checked) >= 25, checked
    # No `with`: schemathesis's client has already run the app's start-up in this module.
    client = TestClient(app)
    for path in OPEN:
        assert client.get(path).status_code != 401, path
    assert client.get("/feature-flags/stream").status_code == 401


def test_the_dashboard_sends_strangers_to_its_login(served: tuple[Any, str]) -> None:
    app, _ = served
    pages = sorted(
        {
            route.path.replace("{service}", "web").replace("{key}", "banner")
            .replace("{set_id}", "20261201-030000-abcd").replace("{job_id}", "1")
            .replace("{command}", "promote").replace("{rest:path}", "anything")
            for route in build_dashboard_router().routes
            if getattr(route, "path", "").startswith("/ui") and "login" not in route.path
            and not route.path.startswith("/ui/static")
        }
    )  # fmt: skip
    assert "/ui/services" in pages
    client = TestClient(app, follow_redirects=False)
    for path in pages:
        for method in ("GET", "POST"):
            response = client.request(method, path)
            if response.status_code in (404, 405):
                continue  # that method is not served there
            assert response.status_code in (302, 303, 307, 401, 403), (method, path, response.status_code)
            if response.status_code in (302, 303, 307):
                assert response.headers["location"].startswith("/ui/login"), (path, response.headers)
