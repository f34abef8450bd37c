"""The DR families of /metrics: the spec's targets, and the last drill of each mode as the drills
table holds it (read through `shipyard.dr.last_drills`, the reader the API and dashboard use)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from shipyard.dr import record_drill
from shipyard.monitor import ShipyardCollector
from shipyard.spec import load_spec_text
from shipyard.state import DrillRow, open_engine, record_audit, session_factory
from support.api import metric_value

NOW = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
SPEC = "name: shop\ndr: {rto: 15m, rpo: 5m}\nenvironments:\n  production: {}\n"


def _scrape(registry: CollectorRegistry) -> Callable[..., float | None]:
    text = generate_latest(registry).decode()
    return lambda name, **labels: metric_value(text, name, **labels)


def test_targets_and_the_last_drill_of_each_mode(tmp_path: Path) -> None:
    sessions = session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    stack = load_spec_text(SPEC, "shipyard.yaml").stack("production")
    registry = CollectorRegistry()
    registry.register(ShipyardCollector(sessions, lambda: stack, now=lambda: NOW))

    m = _scrape(registry)
    assert m("shipyard_dr_target_rto_seconds") == 900
    assert m("shipyard_dr_target_rpo_seconds") == 300
    assert m("shipyard_dr_drill_passed", mode="full") is None  # no drill yet

    for minutes, mode, passed, rto in [
        (30, "full", False, None),
        (20, "full", True, 20.0),
        (10, "backup", False, 31.0),
    ]:
        record_drill(
            sessions,
            DrillRow(stack="shop", environment="production", mode=mode, passed=passed, actor="cli:ops",
                     finished_at=NOW - dt.timedelta(minutes=minutes), rto_seconds=rto, rpo_seconds=4.0),
        )  # fmt: skip
    # A drill's audit entries do not make a drill: only its row does.
    record_audit(sessions, actor="a", action="dr.drill", target_kind="stack", target="shop/production",
                 after={"mode": "partial", "achieved": {"rto_seconds": 1.0}}, outcome="passed")  # fmt: skip

    m = _scrape(registry)
    assert m("shipyard_dr_drill_rto_seconds", mode="full") == 20.0  # the newest full drill
    assert m("shipyard_dr_drill_rpo_seconds", mode="full") == 4.0
    assert m("shipyard_dr_drill_passed", mode="full") == 1
    assert (
        m("shipyard_dr_drill_timestamp_seconds", mode="full") == (NOW - dt.timedelta(minutes=20)).timestamp()
    )
    assert m("shipyard_dr_drill_passed", mode="backup") == 0
    assert m("shipyard_dr_drill_rto_seconds", mode="backup") == 31.0
    assert m("shipyard_dr_drill_passed", mode="partial") is None
    assert m("shipyard_dr_standby_ready") is None  # no standby declared
