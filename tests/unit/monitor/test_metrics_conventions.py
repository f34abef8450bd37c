"""/metrics as Prometheus' conventions want it, over a SQLite store: process and build-info
series, no `_created` lines (`promtool check metrics` finds nothing to say), status as `code`,
no dashboard route in the API histogram, refused credentials counted; and from the store:
counters that stay where they were when history is pruned, each source's own backup duration,
each service's newest release (phase, traffic split) and jobs by kind and outcome."""

from __future__ import annotations

import datetime as dt
import importlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from shipyard import __version__
from shipyard.monitor import ShipyardCollector
from shipyard.monitor._metrics import STEP_BUCKETS
from shipyard.server import ServerConfig, create_app
from shipyard.state import BackupSetRow, JobRow, RolloutRow, RolloutStepRow, open_engine, session_factory
from shipyard.tokens import create_token
from support.api import metric_value

NOW = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@dataclass
class Served:
    client: TestClient
    admin: dict[str, str]
    reader: dict[str, str]

    def metrics(self) -> str:
        return str(self.client.get("/metrics").text)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    database = tmp_path_factory.mktemp("metrics") / "state.db"
    app = create_app(ServerConfig(database_url=f"sqlite:///{database}"))
    with app.state.sessions() as session:
        admin = create_token(session, "ops", "admin")
        reader = create_token(session, "web", "client")
    # No lifespan: the scheduler and pollers are not needed to answer these requests.
    yield Served(TestClient(app), {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {reader}"})
    app.state.engine.dispose()


def test_process_and_build_info_and_no_created_series(served: Served) -> None:
    served.client.get("/healthz")
    text = served.metrics()
    assert metric_value(text, "shipyard_build_info", version=__version__) == 1
    assert (metric_value(text, "process_start_time_seconds") or 0) > 0
    assert (metric_value(text, "process_resident_memory_bytes") or 0) > 0
    assert "\npython_info{" in text
    assert "_created" not in text
    assert metric_value(text, "shipyard_state_store_up") == 1
    linted = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout + linted.stderr == ""


def test_requests_are_labelled_code_and_the_dashboard_is_not_the_api(served: Served) -> None:
    served.client.get("/healthz")
    served.client.get("/ui/login")
    served.client.get("/ui/static/dashboard.css")
    served.client.get("/ui/no-such-page")
    text = served.metrics()
    count = "shipyard_http_request_duration_seconds_count"
    assert (metric_value(text, count, method="GET", route="/healthz", code="200") or 0) >= 1
    requests = [line for line in text.splitlines() if line.startswith("shipyard_http_request_duration")]
    assert requests
    assert not [line for line in requests if "status=" in line or 'route="/ui' in line]


def test_refused_tokens_and_sign_ins_are_counted(served: Served) -> None:
    def failures(via: str, reason: str) -> float:
        return metric_value(served.metrics(), "shipyard_auth_failures_total", via=via, reason=reason) or 0

    before = {
        (via, reason): failures(via, reason)
        for via, reason in [
            ("api", "missing"),
            ("api", "invalid"),
            ("api", "scope"),
            ("dashboard", "invalid"),
        ]
    }
    assert served.client.get("/audit").status_code == 401
    assert served.client.get("/audit", headers={"Authorization": "Bearer shy_admin_nope"}).status_code == 401
    assert served.client.get("/audit", headers=served.reader).status_code == 403
    assert served.client.get("/audit", headers=served.admin).status_code == 200
    login = served.client.post(
        "/ui/login", data={"token": "shy_admin_nope"}, headers={"Origin": "http://testserver"}
    )
    assert login.status_code == 401
    for key, count in before.items():
        assert failures(*key) == count + 1, key


def _scrape(registry: CollectorRegistry) -> Callable[..., float | None]:
    text = generate_latest(registry).decode()
    return lambda name, **labels: metric_value(text, name, **labels)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], CollectorRegistry]]:
    engine = open_engine(f"sqlite:///{tmp_path / 'state.db'}")
    sessions = session_factory(engine)
    registry = CollectorRegistry()
    registry.register(ShipyardCollector(sessions, now=lambda: NOW))
    yield sessions, registry
    engine.dispose()


def _release(service: str, phase: str, outcome: str | None, state: dict[str, Any]) -> RolloutRow:
    return RolloutRow(
        service=service, environment="production", target="local", strategy="canary", candidate="v2",
        phase=phase, outcome=outcome, actor="a", stack={}, state=state,
        finished_at=NOW if outcome else None,
    )  # fmt: skip


def test_counters_stay_where_they_were_when_history_is_pruned(
    store: tuple[sessionmaker[Session], CollectorRegistry],
) -> None:
    sessions, registry = store
    t = NOW - dt.timedelta(hours=1)
    with sessions() as session, session.begin():
        release = _release("web", "succeeded", "succeeded", {})
        session.add_all([release, _release("web", "rolled_back", "rolled_back", {})])
        session.flush()
        session.add(RolloutStepRow(rollout_id=release.id, seq=1, action={"type": "Prepare"}, status="done",
                                   started_at=t, finished_at=t + dt.timedelta(seconds=2)))  # fmt: skip
        for _ in range(4):
            session.add(JobRow(kind="backup", request={}, actor="a", state="running", owner="h:1"))
        session.flush()
    with sessions() as session, session.begin():
        # Jobs finish as the runner ends them: an UPDATE of a running row.
        for row, state in zip(
            session.query(JobRow).order_by(JobRow.id), ("succeeded", "failed", "failed"), strict=False
        ):
            row.state = state
    m = _scrape(registry)
    assert m("shipyard_rollouts_total", service="web", outcome="succeeded") == 1
    assert m("shipyard_rollouts_total", service="web", outcome="rolled_back") == 1
    assert m("shipyard_jobs_total", kind="backup", outcome="succeeded") == 1
    assert m("shipyard_jobs_total", kind="backup", outcome="failed") == 2
    assert m("shipyard_jobs_running", kind="backup") == 1
    step = {"service": "web", "action": "Prepare"}
    assert m("shipyard_rollout_step_duration_seconds_count", **step) == 1
    assert m("shipyard_rollout_step_duration_seconds_bucket", **step, le="2.5") == 1

    with sessions() as session, session.begin():  # history pruned (the steps go with their release)
        session.execute(delete(RolloutRow))
        session.execute(delete(JobRow))
    m = _scrape(registry)
    assert m("shipyard_rollouts_total", service="web", outcome="succeeded") == 1
    assert m("shipyard_jobs_total", kind="backup", outcome="failed") == 2
    assert m("shipyard_rollout_step_duration_seconds_count", **step) == 1
    assert m("shipyard_rollout_step_duration_seconds_sum", **step) == 2


def test_each_source_has_its_own_backup_duration(
    store: tuple[sessionmaker[Session], CollectorRegistry],
) -> None:
    sessions, registry = store
    started = NOW - dt.timedelta(hours=2)
    artefacts = [
        {"name": "postgres:db", "type": "postgres", "raw_bytes": 1000, "seconds": 12.5},
        {"name": "files:/srv/uploads", "type": "files", "raw_bytes": 50, "seconds": 3.25},
    ]
    with sessions() as session, session.begin():
        session.add(BackupSetRow(
            id="20261201-040000-aaaa", stack="shop", environment="production", kind="full", state="complete",
            owner="h:1", actor="a", started_at=started, finished_at=started + dt.timedelta(seconds=42),
            manifest={"sources": [a["name"] for a in artefacts], "artefacts": artefacts},
        ))  # fmt: skip
    m = _scrape(registry)
    assert m("shipyard_backup_duration_seconds", source="postgres:db") == 12.5
    assert m("shipyard_backup_duration_seconds", source="files:/srv/uploads") == 3.25
    assert m("shipyard_backup_age_seconds", source="postgres:db") == 7200


def test_each_services_newest_release_phase_and_traffic_split(
    store: tuple[sessionmaker[Session], CollectorRegistry],
) -> None:
    sessions, registry = store
    with sessions() as session, session.begin():
        session.add(_release("web", "succeeded", "succeeded", {"weights": {"stable": 0, "candidate": 100}}))
        session.add(_release("web", "paused", None, {"weights": {"stable": 80, "candidate": 20}}))
        argo = {
            "kubernetes": {"status": {"phase": "Progressing", "weights": {"stable": 75, "candidate": 25}}}
        }
        session.add(_release("api", "Progressing", None, argo))
    m = _scrape(registry)
    assert m("shipyard_rollout_phase", service="web", phase="paused") == 1
    assert m("shipyard_rollout_phase", service="web", phase="succeeded") == 0
    assert m("shipyard_rollout_phase", service="web", phase="progressing") == 0
    assert m("shipyard_rollout_weight_ratio", service="web", track="candidate") == 0.2
    assert m("shipyard_rollout_weight_ratio", service="web", track="stable") == 0.8
    assert m("shipyard_rollout_phase", service="api", phase="Progressing") == 1  # Argo's own phase
    assert m("shipyard_rollout_weight_ratio", service="api", track="candidate") == 0.25


def test_the_step_buckets_are_the_ones_the_triggers_count_into() -> None:
    migration = importlib.import_module("shipyard.state.migrations.versions.0010_metric_totals")
    assert tuple(repr(bound) for bound in STEP_BUCKETS) == migration.STEP_BOUNDS
