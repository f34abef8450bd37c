"""/metrics of a real `shipyard serve` while its PostgreSQL state store is stopped and started
again: the series read from the store keep their last good values (a backup's age still grows)
and `shipyard_state_store_up` says 0, then 1 once the store is back."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shipyard.dr import record_drill
from shipyard.host import free_port
from shipyard.state import BackupSetRow, DrillRow, JobRow, RolloutRow, open_engine, session_factory, utcnow
from support.api import metric_value
from support.serve import start_serve, stop_serve, wait_ready
from support.servers import Postgres, postgres_server

pytestmark = pytest.mark.integration

SOURCE = "postgres:db"


@pytest.fixture(scope="module")
def store() -> Iterator[Postgres]:
    """A PostgreSQL of this module's own: stopping it must not take other tests' store down."""
    with postgres_server() as server:
        yield server


def _record_history(url: str) -> None:
    engine = open_engine(url)
    sessions = session_factory(engine)
    started = utcnow() - dt.timedelta(hours=1)
    with sessions() as session, session.begin():
        weights = {"weights": {"stable": 0, "candidate": 100}}
        session.add(RolloutRow(service="web", environment="production", target="local", strategy="canary",
                               candidate="v2", phase="succeeded", outcome="succeeded", actor="a", stack={},
                               state=weights, finished_at=utcnow()))  # fmt: skip
        session.add(JobRow(kind="backup", request={}, actor="a", state="running", owner="h:1"))
        artefact = {"name": SOURCE, "type": "postgres", "raw_bytes": 1234, "seconds": 4.5}
        session.add(BackupSetRow(
            id="20261201-040000-aaaa", stack="shop", environment="production", kind="database",
            state="complete", owner="h:1", actor="a", started_at=started,
            finished_at=started + dt.timedelta(seconds=10),
            manifest={"sources": [SOURCE], "artefacts": [artefact]},
        ))  # fmt: skip
    with sessions() as session, session.begin():
        session.query(JobRow).update({JobRow.state: "failed"})
    drill = DrillRow(stack="shop", environment="production", mode="full", passed=False, actor="a",
                     finished_at=utcnow(), rto_seconds=30.0, rpo_seconds=2.0)  # fmt: skip
    record_drill(sessions, drill)
    engine.dispose()


def _scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return response.text


KEPT = [
    ("shipyard_rollouts_total", {"service": "web", "outcome": "succeeded"}, 1),
    ("shipyard_jobs_total", {"kind": "backup", "outcome": "failed"}, 1),
    ("shipyard_rollout_phase", {"service": "web", "phase": "succeeded"}, 1),
    ("shipyard_rollout_weight_ratio", {"service": "web", "track": "candidate"}, 1),
    ("shipyard_backup_last_run_success", {"source": SOURCE}, 1),
    ("shipyard_backup_size_bytes", {"source": SOURCE}, 1234),
    ("shipyard_backup_duration_seconds", {"source": SOURCE}, 4.5),
    ("shipyard_dr_drill_passed", {"mode": "full"}, 0),
]


def test_metrics_keep_their_series_while_the_store_is_down(store: Postgres, tmp_path: Path) -> None:
    store.psql("CREATE DATABASE metrics_down")
    url = store.url("metrics_down")
    _record_history(url)
    port = free_port()
    log = tmp_path / "serve.log"
    server = start_serve(["--database-url", url], port=port, log=log, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, log)
        text = _scrape(base)
        assert metric_value(text, "shipyard_state_store_up") == 1
        for name, labels, value in KEPT:
            assert metric_value(text, name, **labels) == value, name
        age_before = metric_value(text, "shipyard_backup_age_seconds", source=SOURCE)
        assert age_before is not None
        assert age_before >= 3600

        store.stop()
        try:
            text = _scrape(base)
            assert metric_value(text, "shipyard_state_store_up") == 0
            for name, labels, value in KEPT:
                assert metric_value(text, name, **labels) == value, name
            # The age is the set's point in time against now: it goes on growing in an outage.
            age_down = metric_value(text, "shipyard_backup_age_seconds", source=SOURCE)
            assert age_down is not None
            assert age_down > age_before
            assert metric_value(text, "process_start_time_seconds") is not None
            assert "Traceback" not in log.read_text()
        finally:
            store.start()

        deadline = time.monotonic() + 30  # a pooled connection cut by the stop fails once first
        while metric_value(text := _scrape(base), "shipyard_state_store_up") != 1:
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        for name, labels, value in KEPT:
            assert metric_value(text, name, **labels) == value, name
    finally:
        stop_serve(server)
