"""`shipyard serve -f spec` runs the spec's backup schedules; /readyz says the scheduler runs."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from shipyard.server import ServerConfig, create_app

SPEC = """\
name: shop
datastores:
  db: {kind: postgresql, storage: {size: 1Gi}}
backup:
  repository: ./repo
  password: ${env:SHOP_RESTIC_PASSWORD}
  sources: {datastores: [db]}
  schedules:
    full: "0 2 * * *"
    database: "0 * * * *"
"""


def test_serve_schedules_the_specs_backups(tmp_path: Path) -> None:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC)
    config = ServerConfig(database_url=f"sqlite:///{tmp_path / 'state.db'}", spec=spec)
    app = create_app(config)
    scheduler = app.state.scheduler
    assert scheduler.jobs == ("backup-database", "backup-full")
    assert not scheduler.running
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["scheduledJobs"] == ["backup-database", "backup-full"]
        assert scheduler.running
        fires = scheduler.next_fire_times()
        assert (fires["backup-full"].hour, fires["backup-full"].minute) == (2, 0)
        assert fires["backup-database"].minute == 0
    assert not scheduler.running


def test_serve_without_a_spec_schedules_nothing(tmp_path: Path) -> None:
    app = create_app(ServerConfig(database_url=f"sqlite:///{tmp_path / 'state.db'}"))
    with TestClient(app) as client:
        assert client.get("/readyz").json()["scheduledJobs"] == []


def test_with_an_rpo_target_serve_also_checks_backup_freshness(tmp_path: Path) -> None:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC + "dr: {rto: 15m, rpo: 5m}\n")
    app = create_app(ServerConfig(database_url=f"sqlite:///{tmp_path / 'state.db'}", spec=spec))
    assert app.state.scheduler.jobs == ("backup-database", "backup-full", "backup-freshness")
