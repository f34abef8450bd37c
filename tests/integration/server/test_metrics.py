"""The /metrics collector over a real store (SQLite and PostgreSQL): each family of the contract
from rows as the packages write them, and the step histogram counting each finished step once."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import update

from shipyard.dr import record_drill
from shipyard.monitor import ShipyardCollector
from shipyard.monitor._metrics import probe_standby
from shipyard.spec import load_spec
from shipyard.state import (
    BackupSetRow,
    DrillRow,
    NotificationRow,
    RolloutRow,
    RolloutStepRow,
    open_engine,
    session_factory,
)
from support.api import metric_value

NOW = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
SPEC = "name: shop\ndr: {rto: 15m, rpo: 5m}\nenvironments:\n  production: {}\n"


def _scrape(registry: CollectorRegistry) -> Callable[..., float | None]:
    text = generate_latest(registry).decode()
    return lambda name, **labels: metric_value(text, name, **labels)


def test_every_family_from_the_store(database_url: str, tmp_path: Path) -> None:
    engine = open_engine(database_url)
    sessions = session_factory(engine)
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC)
    registry = CollectorRegistry()
    registry.register(
        ShipyardCollector(sessions, lambda: load_spec(spec).stack("production"), now=lambda: NOW)
    )
    t = NOW - dt.timedelta(hours=1)
    with sessions() as session, session.begin():
        for service, outcome in [("web", "succeeded"), ("web", "succeeded"), ("web", "rolled_back"),
                                 ("api", "aborted"), ("api", None)]:  # fmt: skip
            row = RolloutRow(service=service, environment="production", target="local", strategy="canary",
                             candidate="v2", phase="finished" if outcome else "analysing", outcome=outcome,
                             actor="a", stack={}, state={}, finished_at=t if outcome else None)  # fmt: skip
            session.add(row)
        session.flush()
        session.add_all([
            RolloutStepRow(rollout_id=1, seq=1, action={"type": "Prepare"}, status="done", started_at=t,
                           finished_at=t + dt.timedelta(seconds=0.05)),
            RolloutStepRow(rollout_id=1, seq=2, action={"type": "Observe"}, status="started", started_at=t),
            RolloutStepRow(rollout_id=1, seq=3, action={"type": "Prepare"}, status="done", started_at=t,
                           finished_at=t + dt.timedelta(seconds=3)),
        ])  # fmt: skip
        for set_id, state, minutes, raw in [("20261201-040000-aaaa", "verified", 120, 1000),
                                            ("20261201-050000-bbbb", "complete", 60, 2000),
                                            ("20261201-053000-cccc", "failed", 30, None)]:  # fmt: skip
            started = NOW - dt.timedelta(minutes=minutes)
            artefacts = [] if raw is None else [{"name": "postgres:db", "type": "postgres", "raw_bytes": raw}]
            session.add(BackupSetRow(
                id=set_id, stack="shop", environment="production", kind="database", state=state, owner="h:1",
                actor="a", started_at=started, finished_at=started + dt.timedelta(seconds=42),
                manifest={"sources": ["postgres:db"], "artefacts": artefacts},
                verification={"started_at": (started + dt.timedelta(minutes=5)).isoformat()}
                if state == "verified" else None,
                verified_at=started + dt.timedelta(minutes=6) if state == "verified" else None,
            ))  # fmt: skip
        for channel in ("slack", "slack", "email"):
            session.add(
                NotificationRow(channel=channel, channel_config={}, event="e", severity="page", body={})
            )
        session.add(NotificationRow(channel="email", channel_config={}, event="e", severity="page", body={},
                                    state="delivered"))  # fmt: skip
    # A drill that only started has no row: drills are recorded when they finish.
    for minutes, passed, rto in [(10, False, 30.5), (5, True, 20.0)]:
        record_drill(sessions, DrillRow(stack="shop", environment="production", mode="full", passed=passed,
                                        actor="a", finished_at=NOW - dt.timedelta(minutes=minutes),
                                        rto_seconds=rto, rpo_seconds=4))  # fmt: skip

    m = _scrape(registry)
    assert m("shipyard_rollouts_total", service="web", outcome="succeeded") == 2
    assert m("shipyard_rollouts_total", service="web", outcome="rolled_back") == 1
    assert m("shipyard_rollouts_total", service="api", outcome="aborted") == 1
    assert m("shipyard_rollouts_total", service="api", outcome="None") is None  # still going on
    step = "shipyard_rollout_step_duration_seconds"
    prepare = {"service": "web", "action": "Prepare"}
    assert m(f"{step}_count", **prepare) == 2
    assert m(f"{step}_bucket", **prepare, le="0.1") == 1
    assert m(f"{step}_bucket", **prepare, le="2.5") == 1
    assert m(f"{step}_bucket", **prepare, le="5.0") == 2
    assert m(f"{step}_bucket", **prepare, le="+Inf") == 2
    assert abs((m(f"{step}_sum", **prepare) or 0) - 3.05) < 1e-6
    assert m(f"{step}_count", service="web", action="Observe") is None  # not finished yet

    db = "postgres:db"
    assert m("shipyard_backup_size_bytes", source=db) == 2000  # of the newest complete set
    assert m("shipyard_backup_age_seconds", source=db) == 3600
    assert m("shipyard_backup_duration_seconds", source=db) == 42
    end = NOW - dt.timedelta(minutes=60) + dt.timedelta(seconds=42)
    assert m("shipyard_backup_last_success_timestamp_seconds", source=db) == end.timestamp()
    assert m("shipyard_backup_last_run_success", source=db) == 0  # the newest finished one failed
    assert m("shipyard_backup_last_verification_success") == 1
    verified = NOW - dt.timedelta(minutes=114)
    assert m("shipyard_backup_last_verification_timestamp_seconds") == verified.timestamp()

    assert m("shipyard_dr_target_rto_seconds") == 900
    assert m("shipyard_dr_target_rpo_seconds") == 300
    assert m("shipyard_dr_drill_rto_seconds", mode="full") == 20.0  # the newest full drill
    assert m("shipyard_dr_drill_rpo_seconds", mode="full") == 4
    assert m("shipyard_dr_drill_passed", mode="full") == 1
    assert m("shipyard_dr_drill_passed", mode="partial") is None  # started, never finished
    assert m("shipyard_dr_standby_ready") is None  # no standby declared

    assert m("shipyard_notifications_pending", channel="slack") == 2
    assert m("shipyard_notifications_pending", channel="email") == 1

    # The step that was going on finishes: counted once, and nothing counted twice.
    with sessions() as session, session.begin():
        session.execute(
            update(RolloutStepRow)
            .where(RolloutStepRow.seq == 2)
            .values(status="done", finished_at=t + dt.timedelta(seconds=20))
        )
    for _ in range(2):
        m = _scrape(registry)
        assert m(f"{step}_count", service="web", action="Observe") == 1
        assert m(f"{step}_count", **prepare) == 2
    engine.dispose()


def test_standby_readiness_and_lag_from_a_real_replica(tmp_path: Path) -> None:
    from support.replication import replicated_postgres  # noqa: PLC0415 - starts two PostgreSQLs

    sessions = session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    began = time.time()
    with replicated_postgres() as cluster:
        spec = cluster.spec_file(tmp_path)
        registry = CollectorRegistry()
        registry.register(ShipyardCollector(sessions, lambda: load_spec(spec).stack("production")))
        m = _scrape(registry)
        assert m("shipyard_dr_standby_ready") == 1
        lag = m("shipyard_dr_replication_lag_seconds")
        assert lag is not None
        assert 0 <= lag <= time.time() - began  # seconds behind this cluster's primary, not a date
        cluster.standby.stop()
        assert probe_standby("127.0.0.1", cluster.standby.port) == (False, None)
        # A primary is no standby: not ready either.
        assert probe_standby("127.0.0.1", cluster.primary.port) == (False, None)
