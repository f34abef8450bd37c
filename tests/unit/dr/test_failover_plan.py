"""The pure side of failover: plans, the checks that gate a switchover, the spec → topology."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.dr import (
    DrReport,
    Node,
    NodeStatus,
    Replica,
    Step,
    StepResult,
    Topology,
    application_name,
    failback_plan,
    failover_plan,
    resolve_topology,
    switchover_problems,
)
from shipyard.dr._postgres import Admin, conninfo, lsn_value, make_standby
from shipyard.errors import UserError
from shipyard.spec import load_spec_text

PRIMARY = Node("primary", "127.0.0.1", 5432, "/data/a", "db_primary")
STANDBY = Node("standby", "127.0.0.1", 5433, "/data/b", "db_standby")
TOPOLOGY = Topology("db", PRIMARY, STANDBY, synchronous=True, rto_target_s=60)


def kinds(steps: list[Step]) -> list[str]:
    return [step.kind for step in steps]


def test_a_failover_of_a_reachable_primary_stops_it_and_waits_for_its_last_wal() -> None:
    steps = failover_plan(TOPOLOGY, primary_reachable=True, proxy=True)
    assert kinds(steps) == ["check", "fence-stop", "catch-up", "promote", "sync-off", "repoint", "health"]
    assert [step.node for step in steps] == ["standby", "primary", *["standby"] * 5]


def test_an_unreachable_primary_is_fenced_at_the_proxy() -> None:
    steps = failover_plan(TOPOLOGY, primary_reachable=False, proxy=True)
    assert kinds(steps)[1] == "fence-proxy"
    assert "maint" in steps[1].detail


def test_without_a_proxy_the_repoint_step_names_the_new_address() -> None:
    steps = failover_plan(TOPOLOGY, primary_reachable=True, proxy=False)
    repoint = next(step for step in steps if step.kind == "repoint")
    assert "127.0.0.1:5433" in repoint.detail
    assert "through the proxy" not in steps[-1].detail


def test_failback_rebuilds_switches_back_and_rebuilds_the_other_node() -> None:
    steps = failback_plan(TOPOLOGY, old_primary_running=True, old_primary_streaming=False, proxy=True)
    assert kinds(steps) == [
        *["stop", "rebuild", "start-standby", "wait-streaming", "sync-on"],
        *["check", "fence-stop", "catch-up", "promote", "sync-off", "repoint", "health"],
        *["rebuild", "start-standby", "wait-streaming", "sync-on"],
    ]
    # the first rebuild acts on the spec's primary, the switchover promotes it, the last rebuilds the standby
    assert steps[1].node == "primary"
    assert next(step for step in steps if step.kind == "promote").node == "primary"
    assert steps[-3].node == "standby"
    assert steps[-1].node == "primary"  # the primary waits for the standby again (RPO 0)


def test_failback_skips_the_rebuild_when_the_old_primary_already_streams() -> None:
    steps = failback_plan(TOPOLOGY, old_primary_running=True, old_primary_streaming=True, proxy=True)
    assert kinds(steps)[:2] == ["sync-on", "check"]
    asynchronous = Topology("db", PRIMARY, STANDBY, synchronous=False)
    steps = failback_plan(asynchronous, old_primary_running=True, old_primary_streaming=True, proxy=True)
    assert kinds(steps)[0] == "check"
    assert "sync-on" not in kinds(steps)


def healthy_pair(sync_state: str = "sync", lag: int | None = 0) -> tuple[NodeStatus, NodeStatus]:
    primary = NodeStatus(True, False, replicas=(Replica("db_standby", "streaming", sync_state, lag),))
    standby = NodeStatus(True, True, "streaming", "0/3000000", "0/3000000")
    return primary, standby


def problems(
    primary: NodeStatus, standby: NodeStatus, *, synchronous: bool = True, proxy: bool = True
) -> list[str]:
    return switchover_problems(PRIMARY, STANDBY, primary, standby, synchronous=synchronous, proxy=proxy)


def test_a_streaming_synchronous_caught_up_standby_may_take_over() -> None:
    assert problems(*healthy_pair()) == []


@pytest.mark.parametrize(
    ("primary", "standby", "expected"),
    [
        (healthy_pair()[0], NodeStatus(False, error="connection refused"), "is not reachable"),
        (healthy_pair()[0], NodeStatus(True, False), "is not a replica"),
        (healthy_pair()[0], NodeStatus(True, True, "waiting", "0/1", "0/1"), "is not streaming"),
        (NodeStatus(True, False), healthy_pair()[1], "does not list 'db_standby'"),
        (healthy_pair(sync_state="async")[0], healthy_pair()[1], "is not a synchronous standby"),
        (healthy_pair(lag=1 << 30)[0], healthy_pair()[1], "bytes behind"),
        (NodeStatus(True, True), healthy_pair()[1], "is itself a replica"),
        (NodeStatus(False, error="timeout"), NodeStatus(True, True, None, None, None), "never received WAL"),
    ],
)
def test_each_reason_to_refuse_is_named(primary: NodeStatus, standby: NodeStatus, expected: str) -> None:
    found = problems(primary, standby)
    assert any(expected in problem for problem in found), found


def test_an_unreachable_primary_needs_a_proxy_to_fence_at() -> None:
    standby = NodeStatus(True, True, None, "0/5", "0/5")
    down = NodeStatus(False, error="connection refused")
    assert problems(down, standby, proxy=True) == []
    assert any("--proxy-socket" in p for p in problems(down, standby, proxy=False))


def test_an_asynchronous_standby_is_fine_when_the_rpo_is_not_zero() -> None:
    assert problems(*healthy_pair(sync_state="async"), synchronous=False) == []


@given(
    reachable=st.booleans(),
    in_recovery=st.none() | st.booleans(),
    receiver=st.sampled_from([None, "streaming", "waiting", "stopping"]),
    sync_state=st.sampled_from(["sync", "async", "potential"]),
    lag=st.none() | st.integers(0, 1 << 40),
    listed=st.booleans(),
)
def test_a_standby_that_is_not_streaming_from_a_live_primary_is_always_refused(
    reachable: bool,
    in_recovery: bool | None,
    receiver: str | None,
    sync_state: str,
    lag: int | None,
    listed: bool,
) -> None:
    replicas = (Replica("db_standby", "streaming", sync_state, lag),) if listed else ()
    primary = NodeStatus(True, False, replicas=replicas)
    standby = NodeStatus(reachable, in_recovery, receiver, "0/1", "0/1")
    found = problems(primary, standby)
    ready = reachable and in_recovery and receiver == "streaming" and listed and sync_state == "sync"
    ready = ready and (lag is None or lag <= 16 * 1024 * 1024)
    assert (found == []) == bool(ready)


SPEC = """
name: shop
datastores:
  db:
    kind: postgresql
    storage: {size: 1Gi}
    local: {host: 10.0.0.1, port: 5432, data_dir: /var/lib/pg/a}
    standby: {host: 10.0.0.2, data_dir: /var/lib/pg/b}
dr: {rto: 5m, rpo: 0}
"""


def test_the_topology_comes_from_the_spec() -> None:
    topology = resolve_topology(load_spec_text(SPEC).stack("production"))
    assert topology.primary == Node("primary", "10.0.0.1", 5432, "/var/lib/pg/a", "db_primary")
    assert topology.standby == Node("standby", "10.0.0.2", 5432, "/var/lib/pg/b", "db_standby")
    assert topology.synchronous
    assert topology.rto_target_s == 300
    asynchronous = SPEC.replace("rpo: 0", "rpo: 1m")
    assert not resolve_topology(load_spec_text(asynchronous).stack("production")).synchronous


@pytest.mark.parametrize(
    ("spec", "datastore", "message"),
    [
        (
            SPEC.replace("    standby: {host: 10.0.0.2, data_dir: /var/lib/pg/b}\n", ""),
            None,
            "datastores.db.standby",
        ),
        (SPEC.replace(", data_dir: /var/lib/pg/a", ""), None, "datastores.db.local.data_dir"),
        (SPEC, "cache", "datastores.cache: no such PostgreSQL datastore"),
        (SPEC.replace("host: 10.0.0.2", "host: 10.0.0.1"), None, "the primary's own address"),
    ],
)
def test_a_spec_that_cannot_fail_over_names_the_field(spec: str, datastore: str | None, message: str) -> None:
    with pytest.raises(UserError) as raised:
        resolve_topology(load_spec_text(spec).stack("production"), datastore)
    assert message in raised.value.message


def test_application_names_are_per_datastore_and_node() -> None:
    assert application_name("db", "standby") == "db_standby"
    assert application_name("db", "primary") != application_name("db", "standby")


def test_conninfo_quotes_what_libpq_would_misread_and_carries_no_password() -> None:
    text = conninfo(
        "db.internal", 5432, Admin(user="o'brien", database="my db"), application_name="db_standby"
    )
    assert text == r"host=db.internal port=5432 user='o\'brien' dbname='my db' application_name=db_standby"
    assert "password" not in text


def test_lsn_values_order_like_postgres() -> None:
    assert lsn_value("0/3000000") == 0x3000000
    assert lsn_value("1/0") > lsn_value("0/FFFFFFFF")


def test_make_standby_replaces_the_copied_upstream_settings(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "postgresql.auto.conf").write_text(
        "# Do not edit this file manually!\n"
        "synchronous_standby_names = '\"db_primary\"'\n"
        "primary_conninfo = 'host=old port=1'\n"
        "work_mem = '8MB'\n"
    )
    node = Node("primary", "127.0.0.1", 5432, str(data), "db_primary")
    make_standby(node, STANDBY, Admin())
    lines = (data / "postgresql.auto.conf").read_text().splitlines()
    assert "work_mem = '8MB'" in lines
    assert not any(line.startswith("synchronous_standby_names") for line in lines)
    conninfo_lines = [line for line in lines if line.startswith("primary_conninfo")]
    upstream = "host=127.0.0.1 port=5433 user=postgres dbname=postgres application_name=db_primary"
    assert conninfo_lines == [f"primary_conninfo = '{upstream}'"]
    assert (data / "standby.signal").exists()


def test_the_report_says_whether_the_rto_target_was_met() -> None:
    step = Step("health", "standby", "a write commits")
    report = DrReport("failover", "db", "standby", "127.0.0.1:5433", rto_s=1.23456, rto_target_s=60)
    report.steps.append(StepResult(step, "ok", 0.5, "a write committed"))
    data = report.as_dict()
    assert data["rto_s"] == 1.235
    assert data["rto_met"] is True
    assert data["steps"] == [
        {
            "step": "health",
            "node": "standby",
            "detail": "a write commits",
            "outcome": "ok",
            "seconds": 0.5,
            "note": "a write committed",
        }
    ]
    slow = DrReport("failover", "db", "standby", "127.0.0.1:5433", rto_s=90.0, rto_target_s=60)
    assert slow.as_dict()["rto_met"] is False
