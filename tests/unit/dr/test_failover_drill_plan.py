"""The failover drill's plan and verdicts (a fake clock), and when a Patroni switchover is refused
(Patroni's `/cluster` answers as data)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from shipyard.dr import ClusterView, plan_failover_drill
from shipyard.dr._drills import Phase, PhaseOutcome, run_drill
from shipyard.dr._ha_switch import _problems
from shipyard.dr._report import RestorePoint
from shipyard.errors import UserError
from shipyard.render import ha_layout
from shipyard.spec import DrTargets, Stack, load_spec_text

T0 = 1_764_554_400.0
SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {size: 1Gi}
    ha: patroni
    local: {host: 127.0.0.1, port: 5432, rest_port: 8008, data_dir: /srv/pg/primary}
    standby: {host: 127.0.0.1, port: 5433, rest_port: 8009, data_dir: /srv/pg/standby}
    patroni:
      etcd: [{host: 127.0.0.1, data_dir: /srv/etcd}]
dr: {rto: 15m, rpo: 0}
"""


def stack(text: str = SPEC) -> Stack:
    return load_spec_text(text).stack("production")


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def taking(clock: FakeClock, seconds: float, outcome: PhaseOutcome | None = None) -> Phase:
    def phase() -> PhaseOutcome:
        clock.now += seconds
        return outcome or PhaseOutcome()

    return phase


def test_the_plan_kills_then_recovers_at_the_first_write() -> None:
    plan = plan_failover_drill(stack())
    assert plan.mode == "failover"
    assert [p.kind for p in plan.phases] == ["setup", "setup", "kill", "failover", "health", "rejoin"]
    assert plan.phases[plan.disaster_before].kind == "kill"
    assert plan.recovered_after is not None
    assert plan.phases[plan.recovered_after].name == "writes succeed again"


def test_rto_ends_when_writes_succeed_again_not_after_the_checks() -> None:
    plan = plan_failover_drill(stack())
    clock = FakeClock()
    point = RestorePoint("postgres:db", "failover to standby", dt.datetime.fromtimestamp(T0 + 30, dt.UTC))
    seconds = [20.0, 1.0, 0.01, 10.5, 0.3, 7.0]  # setup, load, kill, failover, loss check, rejoin
    phases: dict[str, Callable[[], PhaseOutcome]] = {}
    for planned, took in zip(plan.phases, seconds, strict=True):
        outcome = PhaseOutcome(points=(point,)) if planned.kind == "health" else None
        phases[planned.name] = taking(clock, took, outcome)
    result = run_drill(
        plan, phases, targets=DrTargets(rto=15, rpo=0), stack="shop", environment="production", clock=clock
    )
    assert result.rto == pytest.approx(10.51)  # the kill and the wait for a write, not the rejoin
    assert result.rpo == 0
    assert result.passed is True
    slow = FakeClock()
    phases = {p.name: taking(slow, s) for p, s in zip(plan.phases, [1, 1, 0, 20, 0, 1], strict=True)}
    missed = run_drill(
        plan, phases, targets=DrTargets(rto=15, rpo=0), stack="shop", environment="production", clock=slow
    )
    assert missed.rto == pytest.approx(20)
    assert missed.passed is False


def test_a_failed_rejoin_fails_the_drill() -> None:
    plan = plan_failover_drill(stack())
    clock = FakeClock()
    phases = {p.name: taking(clock, 1) for p in plan.phases}
    phases[plan.phases[-1].name] = taking(clock, 1, PhaseOutcome(ok=False, detail="primary does not stream"))
    result = run_drill(plan, phases, targets=None, stack="shop", environment="production", clock=clock)
    assert result.passed is False
    assert result.failed_phase is not None
    assert result.failed_phase.kind == "rejoin"


def test_a_stack_without_ha_has_no_failover_drill() -> None:
    with pytest.raises(UserError, match=r"set datastores.<name>.ha: patroni"):
        plan_failover_drill(
            stack(
                SPEC.replace("    ha: patroni\n", "").replace(
                    "    patroni:\n      etcd: [{host: 127.0.0.1, data_dir: /srv/etcd}]\n", ""
                )
            )
        )


def view(*members: tuple[str, str, str]) -> ClusterView:
    return ClusterView.of(
        {
            "members": [
                {"name": n, "role": r, "state": s, "host": "127.0.0.1", "port": 1} for n, r, s in members
            ]
        }
    )


def test_when_patroni_must_not_be_asked_to_switch() -> None:
    layout = ha_layout(stack(), "db")
    healthy = view(("db-primary", "leader", "running"), ("db-standby", "sync_standby", "streaming"))
    assert _problems(layout, "failover", healthy) == []
    assert "start the cluster with `shipyard dr ha up`" in _problems(layout, "failover", None)[0]
    assert "is the primary already" in _problems(layout, "failback", healthy)[0]
    stopped = view(("db-primary", "leader", "running"), ("db-standby", "replica", "stopped"))
    assert "is not a running replica (Patroni: replica/stopped)" in _problems(layout, "failover", stopped)[0]
    asynchronous = view(("db-primary", "leader", "running"), ("db-standby", "replica", "streaming"))
    assert "is not the synchronous standby" in _problems(layout, "failover", asynchronous)[0]
