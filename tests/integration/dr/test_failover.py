"""`shipyard dr failover` / `failback` against a real primary, a real streaming replica with
synchronous replication, and a real HAProxy TCP proxy, all on loopback, while a client writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.cli import main
from shipyard.dr import ProxyRoute, configure_synchronous_replication, failover, resolve_topology
from shipyard.spec import load_spec
from shipyard.state import AuditRow, open_engine, session_factory
from support.replication import DATASTORE, Cluster, PgNode, Writer, replicated_postgres

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with replicated_postgres() as running:
        running.primary.scalar("CREATE TABLE drill (id bigint PRIMARY KEY)")
        spec = running.spec_file(tmp_path, rpo="0")
        configure_synchronous_replication(resolve_topology(load_spec(spec).stack("production")))
        running.wait_streaming(running.primary, "db_standby")
        yield running


def shipyard(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SHIPYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "SHIPYARD_ACTOR": "drill",
    }
    return subprocess.run(
        [sys.executable, "-c", "from shipyard.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def state(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def proxy_route(cluster: Cluster) -> ProxyRoute:
    servers = {"primary": "primary", "standby": "standby"}
    return ProxyRoute(
        str(cluster.proxy_paths.admin_socket), DATASTORE, servers, "127.0.0.1", cluster.proxy_port
    )


def audit(tmp_path: Path, action: str) -> list[AuditRow]:
    with state(tmp_path)() as session:
        return list(session.scalars(select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id)))


def ids_on(node: PgNode) -> set[int]:
    with node.connect() as connection:
        return {int(row[0]) for row in connection.execute("SELECT id FROM drill")}  # type: ignore[call-overload]


def sync_state(upstream: PgNode, name: str) -> object:
    return upstream.scalar(f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{name}'")


def test_failover_under_writes_loses_no_committed_row_and_reports_the_rto(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert sync_state(cluster.primary, "db_standby") == "sync"
    writer = Writer(cluster.proxy_port)
    writer.start()
    try:
        writer.wait_for(50)
        began = time.monotonic()
        result = shipyard(
            tmp_path,
            "dr",
            "failover",
            "-f",
            str(tmp_path / "shipyard.yaml"),
            *cluster.proxy_args,
            "-o",
            "json",
        )
        took = time.monotonic() - began
        assert result.returncode == 0, result.stderr
        writer.wait_for(50)  # the writer reconnected through the proxy and goes on, on the new primary
    finally:
        writer.stop()

    report = json.loads(result.stdout)
    assert report["primary"] == "standby"
    # The RTO measured is one of this failover (how small it is, the DR drills' benchmark says).
    assert 0 < report["rto_s"] <= took
    assert writer.errors > 0  # the fence really cut the writer off
    assert cluster.standby.scalar("SELECT pg_is_in_recovery()") is False
    assert cluster.server_states() == {"primary": "maint", "standby": "ready"}
    lost = set(writer.committed) - ids_on(cluster.standby)
    assert not lost, f"{len(lost)} committed rows lost: {sorted(lost)[:10]}"

    rows = audit(tmp_path, "dr.failover")
    steps = [(row.before or {})["step"] for row in rows if row.outcome == "ok"]
    assert steps == ["check", "fence-stop", "catch-up", "promote", "sync-off", "repoint", "health"]
    assert [row.outcome for row in rows] == ["started", "ok"] * len(steps)
    assert {row.actor for row in rows} == {"cli:drill"}


def test_after_a_crash_failover_then_failback_returns_the_original_primary_with_every_row(
    cluster: Cluster, tmp_path: Path
) -> None:
    spec = tmp_path / "shipyard.yaml"
    topology = resolve_topology(load_spec(spec).stack("production"))
    writer = Writer(cluster.proxy_port)
    writer.start()
    try:
        writer.wait_for(50)
        cluster.primary.stop("immediate")  # a crash: no shutdown checkpoint, nothing flushed on the way out
        # The primary is unreachable: it is fenced at the proxy (library call; the CLI's is tested above).
        began = time.monotonic()
        report = failover(state(tmp_path), topology, proxy=proxy_route(cluster))
        took = time.monotonic() - began
        writer.wait_for(30)  # rows written to the standby while it is the primary
        assert [result.step.kind for result in report.steps][:3] == ["check", "fence-proxy", "catch-up"]
        assert report.rto_s is not None
        assert 0 < report.rto_s <= took
        assert cluster.server_states() == {"primary": "maint", "standby": "ready"}
        lost = set(writer.committed) - ids_on(cluster.standby)
        assert not lost, f"{len(lost)} committed rows lost in the crash: {sorted(lost)[:10]}"

        # pg_rewind runs the crashed primary's crash recovery, rewinds it, and it takes over again.
        began = time.monotonic()
        back = shipyard(
            tmp_path, "dr", "failback", "-f", str(spec), *cluster.proxy_args
        )  # a table, for people
        took = time.monotonic() - began
        assert back.returncode == 0, back.stderr
        writer.wait_for(30)
    finally:
        writer.stop()

    assert "failback of db: the primary is now primary (127.0.0.1:" in back.stdout
    assert "kept in" not in back.stdout  # rewound in place, not copied afresh by pg_basebackup
    rto = re.search(r"RTO: ([0-9.]+) s \(target 30 s\)", back.stdout)
    assert rto, back.stdout
    assert 0 < float(rto[1]) <= took  # this failback's (how small, the DR benchmark says)
    assert cluster.primary.scalar("SELECT pg_is_in_recovery()") is False
    assert cluster.standby.scalar("SELECT pg_is_in_recovery()") is True
    assert cluster.server_states() == {"primary": "ready", "standby": "maint"}
    lost = set(writer.committed) - ids_on(cluster.primary)
    assert not lost, f"{len(lost)} committed rows lost: {sorted(lost)[:10]}"
    # The standby is a synchronous replica of the original primary again, with every row.
    assert sync_state(cluster.primary, "db_standby") == "sync"
    deadline = time.monotonic() + 10
    while set(writer.committed) - ids_on(cluster.standby) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(writer.committed) - ids_on(cluster.standby)
    steps = [(row.before or {})["step"] for row in audit(tmp_path, "dr.failback") if row.outcome == "ok"]
    assert steps[:4] == ["rebuild", "start-standby", "wait-streaming", "sync-on"]
    assert "promote" in steps
    assert steps[-4:] == ["rebuild", "start-standby", "wait-streaming", "sync-on"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The real CLI in-process: its exit code, stdout and stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_bad_input_is_refused_and_changes_nothing(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_db = ["--database-url", f"sqlite:///{tmp_path / 'state.db'}"]
    spec = tmp_path / "shipyard.yaml"
    dry_run = [*cluster.proxy_args, *state_db, "--dry-run", "-o", "json"]
    code, out, _ = run_cli(capsys, "dr", "failover", "-f", str(spec), *dry_run)
    assert code == 0
    plan = json.loads(out)
    assert plan["problems"] == []
    assert [step["step"] for step in plan["steps"]][:3] == ["check", "fence-stop", "catch-up"]
    assert cluster.primary.scalar("SELECT pg_is_in_recovery()") is False  # a dry run changes nothing
    no_standby = tmp_path / "no-standby"
    no_standby.mkdir()
    no_standby_spec = cluster.spec_file(no_standby, standby=False)
    code, _, err = run_cli(
        capsys, "dr", "failover", "-f", str(no_standby_spec), *cluster.proxy_args, *state_db
    )
    assert code == 2
    assert "datastores.db.standby is not set" in err

    # The standby stops streaming (its upstream is now a dead port): failover must refuse.
    cluster.standby.scalar("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 user=postgres'")
    cluster.standby.scalar("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 60
    while cluster.primary.scalar("SELECT count(*) FROM pg_stat_replication") != 0:
        assert time.monotonic() < deadline, "the standby kept streaming"
        time.sleep(0.05)
    # Synchronous commits would now wait forever for the missing standby: go asynchronous.
    cluster.primary.scalar("ALTER SYSTEM SET synchronous_standby_names = ''")
    cluster.primary.scalar("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 60
    while cluster.primary.scalar("SELECT current_setting('synchronous_standby_names')") != "":
        assert time.monotonic() < deadline, "the primary kept its synchronous standby"
        time.sleep(0.05)

    code, _, err = run_cli(capsys, "dr", "failover", "-f", str(spec), *cluster.proxy_args, *state_db)
    assert code == 1
    assert "is not streaming from the primary" in err
    assert "nothing was changed" in err

    # Nothing changed: the primary is up and writable through the proxy, the standby a replica.
    writer = Writer(cluster.proxy_port)
    writer.start()
    try:
        writer.wait_for(5)
    finally:
        writer.stop()
    assert writer.errors == 0
    assert cluster.primary.scalar("SELECT pg_is_in_recovery()") is False
    assert cluster.standby.scalar("SELECT pg_is_in_recovery()") is True
    assert cluster.server_states() == {"primary": "ready", "standby": "maint"}
    assert audit(tmp_path, "dr.failover") == []
