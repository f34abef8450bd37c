"""The disaster a drill reports is the instant its copies reflect (issue 12, defect 8): when the
phase the disaster falls before fixes that instant itself (a PITR drill's WAL freeze, after the
phase began), the RTO and the non-PITR losses count from it, not from the phase's start."""

from __future__ import annotations

import datetime as dt

from shipyard.dr._drills import DrillSource, PhaseOutcome, plan_drill, run_drill
from shipyard.dr._report import RestorePoint

T0 = 1_764_554_400.0  # 2025-12-01T02:00:00Z


def test_the_disaster_is_the_instant_the_disaster_phase_states() -> None:
    now = [T0]
    plan = plan_drill("partial", (DrillSource("postgres:db", "postgresql", pitr=True),))
    frozen_at = T0 + 0.75  # the freeze read the primary's position 0.75 s into the phase
    replayed = dt.datetime.fromtimestamp(T0 + 0.5, dt.UTC)

    def select() -> PhaseOutcome:
        now[0] += 1.0
        return PhaseOutcome(detail="frozen", disaster_at=frozen_at)

    def restore() -> PhaseOutcome:
        now[0] += 10.0
        return PhaseOutcome()

    def health() -> PhaseOutcome:
        now[0] += 2.0
        point = RestorePoint("postgres:db", "pitr:0/3000060", replayed, replayed, 0)
        return PhaseOutcome(points=(point,))

    phases = {
        "select newest restorable set": select,
        "restore postgres:db": restore,
        "health postgres:db": health,
    }
    result = run_drill(plan, phases, targets=None, stack="shop", environment="test", clock=lambda: now[0])
    assert result.disaster_at == frozen_at
    assert result.rto == 13.0 - 0.75
    assert result.rpo == 0.0


def test_a_phase_after_the_disaster_cannot_move_it() -> None:
    now = [T0]
    plan = plan_drill("full", (DrillSource("files:/srv", "files"),))

    def phase(seconds: float, stated: float | None = None) -> PhaseOutcome:
        now[0] += seconds
        return PhaseOutcome(disaster_at=stated)

    phases = {
        "take backup set": lambda: phase(5, stated=T0 + 99),  # before the disaster: ignored
        "select newest restorable set": lambda: phase(1),  # states nothing: its start counts
        "restore files:/srv": lambda: phase(3, stated=T0 + 99),  # after it: ignored
        "health files:/srv": lambda: phase(1),
    }
    result = run_drill(plan, phases, targets=None, stack="shop", environment="test", clock=lambda: now[0])
    assert result.disaster_at == T0 + 5
    assert result.rto == 5.0
