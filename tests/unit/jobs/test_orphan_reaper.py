"""Which running jobs are orphans (`jobs._orphans`): the rules alone, then a reaper's pass over a real
SQLite store holding jobs of another host, whose heartbeats the pass must read."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.jobs import OrphanReaper
from shipyard.jobs._orphans import SeenLease, is_orphaned, job_lease_name, server_lease_name
from shipyard.state import AuditRow, JobRow, LockRow, open_engine, session_factory, utcnow

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
HERE = "here"
LIVE_PIDS = {100, 101}


def alive(pid: int) -> bool:
    return pid in LIVE_PIDS


def lease(owner: str, seconds_left: float) -> SeenLease:
    return SeenLease(owner, NOW + dt.timedelta(seconds=seconds_left))


def orphaned(
    owner: str, pid: int | None, server: SeenLease | None, child: SeenLease | None, trust: bool
) -> bool:
    return is_orphaned(owner, pid, server, child, now=NOW, host=HERE, alive=alive, trust_expiry=trust)


def test_on_this_host_the_processes_decide() -> None:
    assert orphaned("here:7", 8, None, None, trust=False)  # both dead: at once, no lease needed
    assert not orphaned("here:100", 8, None, None, trust=True)  # its server runs: its watcher records
    assert not orphaned("here:7", 101, None, None, trust=True)  # the child runs: it records itself
    # Killed before its pid was recorded: a live child lease says it runs, a lapsed or none that not.
    assert not orphaned("here:7", None, None, lease("here:101:a", 20), trust=True)
    assert orphaned("here:7", None, None, lease("here:9:a", 20), trust=True)


def test_on_another_host_the_heartbeats_decide() -> None:
    server_lapsed, child_lapsed = lease("there:7", -1), lease("there:8:a", -1)
    assert orphaned("there:7", 8, server_lapsed, child_lapsed, trust=True)
    assert orphaned("there:7", 8, None, child_lapsed, trust=True)  # the server stopped, released it
    assert not orphaned("there:7", 8, lease("there:7", 5), child_lapsed, trust=True)  # server beats
    assert not orphaned("there:7", 8, server_lapsed, lease("there:8:a", 5), trust=True)  # child beats
    # A child that never held a lease (a CLI's own run, an older shipyard): nothing says it died.
    assert not orphaned("there:7", 8, server_lapsed, None, trust=True)
    # Right after this server's own outage every lease has lapsed: none is read as a death.
    assert not orphaned("there:7", 8, server_lapsed, child_lapsed, trust=False)


leases = st.none() | st.builds(
    lease, st.sampled_from(["there:7", "there:8:a", "here:100:a", "here:9:a"]), st.floats(-100, 100)
)


@given(
    owner=st.sampled_from(["here:7", "here:100", "there:7"]),
    pid=st.none() | st.sampled_from([8, 100, 101]),
    server=leases,
    child=leases,
    trust=st.booleans(),
)
def test_a_job_is_never_an_orphan_while_anything_says_it_runs(
    owner: str, pid: int | None, server: SeenLease | None, child: SeenLease | None, trust: bool
) -> None:
    on_this_host = owner.startswith(f"{HERE}:")
    running = (
        (on_this_host and (alive(int(owner.split(":")[1])) or (pid is not None and alive(pid))))
        or (
            not on_this_host
            and server is not None
            and server.expires_at >= NOW
            and server.owner.startswith("there")
        )
        or (
            not on_this_host
            and child is not None
            and child.expires_at >= NOW
            and child.owner.startswith("there")
        )
    )
    if running:
        assert not orphaned(owner, pid, server, child, trust)
    if not trust and not on_this_host:
        assert not orphaned(owner, pid, server, child, trust)  # no lapse is trusted after an outage


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _job(sessions: sessionmaker[Session], owner: str, pid: int) -> int:
    with sessions() as session, session.begin():
        row = JobRow(kind="backup", request={"kind": "backup", "what": "full"}, actor="token:ops")
        row.state, row.owner, row.pid = "running", owner, pid
        session.add(row)
        session.flush()
        return row.id


def _lease(sessions: sessionmaker[Session], name: str, owner: str, seconds_left: float) -> None:
    with sessions() as session, session.begin():
        session.add(LockRow(name=name, owner=owner, expires_at=utcnow() + dt.timedelta(seconds=seconds_left)))


def test_a_pass_closes_the_jobs_whose_server_and_child_stopped_beating(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "elsewhere.example"
    assert socket.gethostname() != other
    dead = _job(sessions, f"{other}:7", 8)
    _lease(sessions, server_lease_name(f"{other}:7"), f"{other}:7", -40)
    _lease(sessions, job_lease_name(dead), f"{other}:8:a", -35)
    child_beats = _job(sessions, f"{other}:7", 9)
    _lease(sessions, job_lease_name(child_beats), f"{other}:9:a", 20)
    server_beats = _job(sessions, f"{other}:17", 18)
    _lease(sessions, server_lease_name(f"{other}:17"), f"{other}:17", 20)
    _lease(sessions, job_lease_name(server_beats), f"{other}:18:a", -35)

    reaper = OrphanReaper(sessions, f"{socket.gethostname()}:1")
    assert reaper.pass_once() == []  # it has just reached the store: no lapse is trusted yet
    monkeypatch.setattr("shipyard.jobs._orphans.RECOVERY_GRACE_SECONDS", 0.0)
    assert reaper.pass_once() == [dead]
    assert reaper.pass_once() == []  # closed once

    with sessions() as session:
        states = {row.id: (row.state, row.summary) for row in session.scalars(select(JobRow))}
        audit = [
            (a.action, a.outcome, (a.after or {}).get("summary")) for a in session.scalars(select(AuditRow))
        ]
        held = session.get(LockRow, server_lease_name(reaper.owner))
    summary = f"orphaned: server {other}:7 stopped (closed by server {reaper.owner})"
    assert states == {
        dead: ("failed", summary),
        child_beats: ("running", None),
        server_beats: ("running", None),
    }
    assert audit == [("job.backup", "failed", summary)]
    assert held is not None  # this server's own heartbeat
    assert held.expires_at.replace(tzinfo=dt.UTC) > utcnow()
    reaper.stop()
    with sessions() as session:
        assert session.get(LockRow, server_lease_name(reaper.owner)) is None  # released on a stop
