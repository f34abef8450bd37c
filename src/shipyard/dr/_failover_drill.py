"""Automatic failover, measured: kill the primary's host under writes and watch Patroni take over.

    experiment = FailoverExperiment(cluster)     # an HaCluster that is up, with its proxy
    measurement = experiment.run()               # load, kill, wait, count, restart the old primary
    measurement.writer_rto_s, .probe_rto_s, .lost, .rejoined, .rewound

The kill is a dead host: SIGKILL at once to the node's supervisor (nothing restarts it), its Patroni,
PostgreSQL's postmaster and every backend, while a writer commits a row every 5 ms through HAProxy
and a probe connects afresh every 0.1 s. Measured from the kill:

- the writer's RTO: the first commit acknowledged after it (and the gap since its last one before);
- the probe's RTO: the first new connection through HAProxy that could write;
- when Patroni named the new leader (its REST API, polled every 0.1 s);
- the acknowledged commits the new primary does not hold (0 with `synchronous_mode`, RPO 0);
- the old node started again: when it runs as a replica streaming from the new primary, and
  whether Patroni rewound it with pg_rewind (its log says so).

The `failover` drill mode (`shipyard dr test failover`) runs the same experiment on a scratch copy of
the spec's `ha: patroni` datastore (same node count, Patroni timings, synchronous mode and settings,
on free loopback ports in a temp directory, with throwaway passwords), never on the live one; its
RTO ends when writes succeed again, its RPO is the acknowledged commits lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DrError, UserError
from ..host import free_port
from ..monitor import Notifier
from ..render import HaLayout, ha_datastores, ha_layout, scratch_layout
from ..spec import Stack
from ._drills import Clock, DrillPlan, DrillSource, Phase, PhaseOutcome, PlannedPhase
from ._failover_load import Endpoint, Probe, Writer, prepare_table, present_ids
from ._ha import HaCluster, HaPasswords, sigkill
from ._patroni import ClusterView, PatroniClient
from ._report import RestorePoint

WRITER_PERIOD_S = 0.005
PROBE_PERIOD_S = 0.1
WATCH_PERIOD_S = 0.1


@dataclass(frozen=True)
class FailoverMeasurement:
    """One automatic failover as the app saw it; times in seconds from the kill."""

    datastore: str
    killed: str
    """The spec's name of the node that was the primary and was killed."""
    new_primary: str | None
    synchronous: bool
    ttl: int
    loop_wait: int
    retry_timeout: int
    killed_processes: int
    writer_rto_s: float | None
    """Kill → the first commit acknowledged after it (None: none within the wait)."""
    write_gap_s: float | None
    """The writer's last acknowledged commit before the kill → its first after."""
    probe_rto_s: float | None
    promoted_s: float | None
    """Kill → Patroni's REST API names another leader."""
    acknowledged: int
    lost: int
    """Acknowledged commits the new primary does not hold."""
    writer_errors: int
    rejoined: bool
    rejoin_s: float | None
    """Restart of the old node → it runs as a replica streaming from the new primary."""
    rewound: bool
    """Patroni ran pg_rewind on the old primary before it followed the new one."""
    rejoined_as: str | None
    """Its Patroni role once back (`replica`, `sync_standby`)."""

    def as_dict(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "datastore": self.datastore,
            "killed": self.killed,
            "new_primary": self.new_primary,
            "synchronous": self.synchronous,
            "patroni": {"ttl": self.ttl, "loop_wait": self.loop_wait, "retry_timeout": self.retry_timeout},
            "killed_processes": self.killed_processes,
            "writer_rto_s": r(self.writer_rto_s),
            "write_gap_s": r(self.write_gap_s),
            "probe_rto_s": r(self.probe_rto_s),
            "promoted_s": r(self.promoted_s),
            "acknowledged": self.acknowledged,
            "lost": self.lost,
            "writer_errors": self.writer_errors,
            "rejoined": self.rejoined,
            "rejoin_s": r(self.rejoin_s),
            "rewound": self.rewound,
            "rejoined_as": self.rejoined_as,
        }


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


class FailoverExperiment:
    """The steps of one measured failover of a running HaCluster (see the module's docstring)."""

    def __init__(self, cluster: HaCluster) -> None:
        layout = cluster.layout
        if layout.proxy is None:
            raise DrError(
                f"datastores.{layout.datastore}.patroni.proxy is null: the failover is measured through"
                " the HAProxy shipyard runs, as the app reaches the primary"
            )
        self.cluster = cluster
        self.layout = layout
        self.endpoint = Endpoint(
            layout.proxy.host, layout.proxy.port, layout.superuser, cluster.passwords["superuser"]
        )
        # Patroni's worst case: the lock expires (ttl), a loop notices (loop_wait), it retries.
        self.timeout_s = float(layout.ttl + 3 * layout.loop_wait + 2 * layout.retry_timeout + 60)
        self.writer = Writer(self.endpoint, WRITER_PERIOD_S)
        self.probe = Probe(self.endpoint, PROBE_PERIOD_S)
        self.killed: str | None = None
        self.killed_member: str | None = None
        self.killed_at: float | None = None
        self.killed_processes = 0
        self.promoted_at: float | None = None
        self.new_primary: str | None = None
        self.writer_rto_s: float | None = None
        self.write_gap_s: float | None = None
        self.probe_rto_s: float | None = None
        self.lost_ids: list[int] | None = None
        self.point: RestorePoint | None = None
        self.rejoin_s: float | None = None
        self.rewound = False
        self.rejoined_as: str | None = None
        self._watch_stop = threading.Event()
        self._watch: threading.Thread | None = None

    # -- the steps

    def start_load(self, commits: int = 100) -> str:
        """Wait for a healthy cluster (a leader; a synchronous standby when RPO is 0), then start
        the writer and the probe through HAProxy."""

        def ready(view: ClusterView) -> bool:
            sync_ok = bool(view.sync_standbys) or not self.layout.synchronous
            return view.leader is not None and sync_ok and len(view.members) == len(self.layout.nodes)

        view = self.cluster.wait(ready, self.timeout_s, "healthy cluster (leader, replicas, sync standby)")
        deadline = time.monotonic() + 30
        while True:  # HAProxy takes the leader after its first passed check
            try:
                prepare_table(self.endpoint)
                break
            except psycopg.Error as error:
                if time.monotonic() > deadline:
                    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    raise DrError(
                        f"no write through HAProxy at {self.endpoint.host}:{self.endpoint.port}: {first}"
                    ) from None
                time.sleep(0.2)
        self.writer.start()
        self.probe.start()
        try:
            self.writer.wait_commits(commits)
        except TimeoutError as error:
            raise DrError(str(error)) from None
        leader = view.leader
        assert leader is not None
        return (
            f"{self.layout.member_role(leader.name)} is the primary; {commits} rows committed through"
            f" HAProxy at {self.endpoint.host}:{self.endpoint.port}, one every {WRITER_PERIOD_S * 1000:g} ms"
        )

    def kill_primary(self) -> str:
        """SIGKILL every process of the node that is the primary now."""
        leader = self.cluster.client(timeout_s=1.0).cluster().leader
        if leader is None:
            raise DrError("there is no primary to kill")
        self.killed_member = leader.name
        self.killed = self.layout.member_role(leader.name)
        others = [n.rest_url for n in self.layout.nodes if n.member != leader.name]
        self._watch = threading.Thread(target=self._watch_leader, args=(others,), daemon=True)
        pids = self.cluster.node_processes(self.killed)  # found first: /proc is slow to scan
        sigkill(pids)
        # The moment of death is after the signals: a commit acknowledged in between came from
        # the old primary, still alive.
        self.killed_at = time.monotonic()
        self._watch.start()
        self.killed_processes = len(pids)
        return (
            f"SIGKILL to {len(pids)} processes of {self.killed} ({leader.name}): its supervisor, Patroni,"
            " PostgreSQL's postmaster and backends (a dead host)"
        )

    def _watch_leader(self, urls: list[str]) -> None:
        client = PatroniClient(urls, timeout_s=0.5)
        while not self._watch_stop.is_set():
            view = client.try_cluster()
            leader = view.leader if view is not None else None
            if leader is not None and leader.name != self.killed_member:
                self.promoted_at = time.monotonic()
                self.new_primary = self.layout.member_role(leader.name)
                return
            self._watch_stop.wait(WATCH_PERIOD_S)

    def wait_writes(self) -> str:
        """Block until a write is acknowledged again; DrError when none comes within Patroni's worst case."""
        assert self.killed_at is not None
        first = self.writer.wait_success_after(self.killed_at, self.timeout_s)
        if first is None:
            raise DrError(
                f"no write was acknowledged through HAProxy within {self.timeout_s:g} s of the kill"
                f" (writer errors: {self.writer.errors}; Patroni named "
                f"{self.new_primary or 'no new leader'})"
            )
        self.writer_rto_s = first - self.killed_at
        before = self.writer.successes.last_before(self.killed_at)
        self.write_gap_s = None if before is None else first - before
        probe = self.probe.successes.wait_after(self.killed_at, 30)
        self.probe_rto_s = None if probe is None else probe - self.killed_at
        if self._watch is not None:
            self._watch.join(timeout=5)
        promoted = None if self.promoted_at is None else self.promoted_at - self.killed_at
        return (
            f"writer: {_secs(self.writer_rto_s)} after the kill (no commit for {_secs(self.write_gap_s)});"
            f" probe: {_secs(self.probe_rto_s)}; Patroni promoted {self.new_primary or '?'} after"
            f" {_secs(promoted)} (ttl {self.layout.ttl} s, loop_wait {self.layout.loop_wait} s)"
        )

    def count_lost(self) -> str:
        """Stop the load (after more commits on the new primary) and find the acknowledged rows the
        new primary does not hold."""
        with contextlib.suppress(TimeoutError):
            self.writer.wait_commits(50, timeout_s=10)
        self.writer.stop()
        self.probe.stop()
        acknowledged = self.writer.acknowledged
        ids = [row_id for row_id, _, _ in acknowledged]
        present = present_ids(self.endpoint, ids)
        lost = [(row_id, wall) for row_id, _, wall in acknowledged if row_id not in present]
        self.lost_ids = [row_id for row_id, _ in lost]
        kept = [
            wall
            for row_id, _, wall in acknowledged
            if row_id in present and (not lost or row_id < lost[0][0])
        ]
        last_kept = dt.datetime.fromtimestamp(kept[-1] if kept else time.time(), dt.UTC)
        last_lost = dt.datetime.fromtimestamp(lost[-1][1], dt.UTC) if lost else last_kept
        self.point = RestorePoint(
            f"postgres:{self.layout.datastore}",
            f"failover to {self.new_primary or '?'}",
            last_kept,
            last_lost,
            len(lost),
        )
        mode = "synchronous" if self.layout.synchronous else "asynchronous"
        missing = f"{len(lost)} missing on the new primary ({mode} replication)"
        return f"{len(acknowledged)} commits acknowledged, {missing}"

    def rejoin(self) -> str:
        """Start the killed node again; wait until it streams from the new primary as a replica."""
        assert self.killed is not None
        assert self.killed_member is not None
        log = self.cluster.log_path(self.killed)
        offset = log.stat().st_size if log.exists() else 0
        began = time.monotonic()
        self.cluster.start_node(self.killed)
        member = self.killed_member
        view = self.cluster.wait(
            lambda v: (m := v.member(member)) is not None and m.is_running_replica,
            self.timeout_s + 120,
            f"{member} back as a running replica",
            self.layout.node(self.killed),
        )
        self._wait_streaming(member, began + self.timeout_s + 120)
        self.rejoin_s = time.monotonic() - began
        found = view.member(member)
        self.rejoined_as = found.role if found is not None else None
        with log.open("rb") as f:  # what Patroni logged since the restart
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        self.rewound = "running pg_rewind from" in text and "pg_rewind exit code=0" in text
        how = "rewound by pg_rewind" if self.rewound else "without pg_rewind"
        took = f"{self.rejoin_s:.2f} s after its restart"
        return f"{self.killed} runs as {self.rejoined_as}, streaming, {took} ({how})"

    def _wait_streaming(self, member: str, deadline: float) -> None:
        sql = "SELECT state FROM pg_stat_replication WHERE application_name = %s"
        while True:
            with contextlib.suppress(psycopg.Error), self.endpoint.connect(2) as connection:
                row = connection.execute(sql, (member,)).fetchone()
                if row is not None and row[0] == "streaming":
                    return
            if time.monotonic() > deadline:
                raise DrError(f"{member} does not stream from the new primary")
            time.sleep(0.2)

    def close(self) -> None:
        self._watch_stop.set()
        self.writer.stop()
        self.probe.stop()

    # -- all of it

    def measurement(self) -> FailoverMeasurement:
        promoted = None
        if self.promoted_at is not None and self.killed_at is not None:
            promoted = self.promoted_at - self.killed_at
        return FailoverMeasurement(
            datastore=self.layout.datastore,
            killed=self.killed or "?",
            new_primary=self.new_primary,
            synchronous=self.layout.synchronous,
            ttl=self.layout.ttl,
            loop_wait=self.layout.loop_wait,
            retry_timeout=self.layout.retry_timeout,
            killed_processes=self.killed_processes,
            writer_rto_s=self.writer_rto_s,
            write_gap_s=self.write_gap_s,
            probe_rto_s=self.probe_rto_s,
            promoted_s=promoted,
            acknowledged=len(self.writer.acknowledged),
            lost=len(self.lost_ids or []),
            writer_errors=self.writer.errors,
            rejoined=self.rejoin_s is not None,
            rejoin_s=self.rejoin_s,
            rewound=self.rewound,
            rejoined_as=self.rejoined_as,
        )

    def run(self, on_step: Callable[[str], None] | None = None) -> FailoverMeasurement:
        try:
            for step in (self.start_load, self.kill_primary, self.wait_writes, self.count_lost, self.rejoin):
                detail = step()
                if on_step is not None:
                    on_step(detail)
        finally:
            self.close()
        return self.measurement()


def measure_automatic_failover(
    cluster: HaCluster, on_step: Callable[[str], None] | None = None
) -> FailoverMeasurement:
    """Kill the primary of a running cluster under load and measure what follows (see above)."""
    return FailoverExperiment(cluster).run(on_step)


# --- a scratch copy ------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class ScratchCluster:
    """A copy of a Patroni datastore's layout on loopback, in a temp directory, with throwaway
    passwords; `close()` stops it and removes everything."""

    def __init__(self, layout: HaLayout, *, on_action: Callable[[str], None] | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="shipyard-ha-drill-"))
        self.base.chmod(0o755)  # the postgres (and etcd) user must reach the directories below
        needed = 2 * (len(layout.nodes) + len(layout.etcd)) + 2
        self.layout = scratch_layout(layout, str(self.base), iter(_free_ports(needed)))
        self.cluster = HaCluster(
            self.layout, self.base / "supervise", HaPasswords.generated(), on_action=on_action
        )

    def up(self) -> None:
        self.cluster.up()

    def close(self) -> None:
        try:
            with contextlib.suppress(Exception):
                self.cluster.down()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


# --- the drill mode ------------------------------------------------------------------------------


def drill_datastore(stack: Stack) -> str:
    """The datastore a failover drill copies: the stack's (first) `ha: patroni` one."""
    found = ha_datastores(stack)
    if not found:
        raise UserError(
            "a failover drill fails over a scratch copy of a PostgreSQL datastore with automatic"
            " failover, and the spec has none: set datastores.<name>.ha: patroni (with patroni.etcd)"
        )
    return found[0]


def plan_failover_drill(stack: Stack) -> DrillPlan:
    """The failover drill's phases; the disaster is the kill, the recovery the first write after it."""
    datastore = drill_datastore(stack)
    ha_layout(stack, datastore)  # the spec's own errors, before anything runs
    source = DrillSource(f"postgres:{datastore}", "postgresql")
    phases = (
        PlannedPhase(f"start a scratch copy of {datastore}'s Patroni cluster", "setup"),
        PlannedPhase("a writer commits every 5 ms through HAProxy", "setup"),
        PlannedPhase("SIGKILL every process of the primary's node", "kill", source),
        PlannedPhase("writes succeed again", "failover", source),
        PlannedPhase("no acknowledged commit lost", "health", source),
        PlannedPhase("the old primary rejoins as a replica", "rejoin", source),
    )
    return DrillPlan("failover", phases, disaster_before=2, recovered_after=3)


class FailoverDrillPhases:
    """The failover drill's phases over a scratch cluster (same interface as the backup drills':
    `phases(plan)`, then `close()` whatever happened)."""

    def __init__(
        self,
        stack: Stack,
        sessions: sessionmaker[Session],
        *,
        base_dir: Path,
        actor: str,
        clock: Clock,
        notifier: Notifier,
    ) -> None:
        self.stack = stack
        self.layout = ha_layout(stack, drill_datastore(stack))
        self.scratch: ScratchCluster | None = None
        self.experiment: FailoverExperiment | None = None

    def phases(self, plan: DrillPlan) -> dict[str, Phase]:
        steps: list[Phase] = [
            self.start_cluster,
            self.start_load,
            self.kill,
            self.writes_again,
            self.no_loss,
            self.rejoin,
        ]
        return {planned.name: step for planned, step in zip(plan.phases, steps, strict=False)}

    def _experiment(self) -> FailoverExperiment:
        if self.experiment is None:
            raise DrError("the scratch cluster did not start")
        return self.experiment

    def start_cluster(self) -> PhaseOutcome:
        self.scratch = ScratchCluster(self.layout)
        self.scratch.up()
        self.experiment = FailoverExperiment(self.scratch.cluster)
        layout = self.scratch.layout
        sync = "synchronous" if layout.synchronous else "asynchronous"
        return PhaseOutcome(
            detail=f"etcd, {len(layout.nodes)} Patroni nodes ({sync}; ttl {layout.ttl} s, loop_wait"
            f" {layout.loop_wait} s, retry_timeout {layout.retry_timeout} s) and HAProxy"
            f" under {self.scratch.base}"
        )

    def start_load(self) -> PhaseOutcome:
        return PhaseOutcome(detail=self._experiment().start_load())

    def kill(self) -> PhaseOutcome:
        return PhaseOutcome(detail=self._experiment().kill_primary())

    def writes_again(self) -> PhaseOutcome:
        return PhaseOutcome(detail=self._experiment().wait_writes())

    def no_loss(self) -> PhaseOutcome:
        experiment = self._experiment()
        detail = experiment.count_lost()
        points = (experiment.point,) if experiment.point is not None else ()
        lost = len(experiment.lost_ids or [])
        # With RPO 0 (synchronous mode) a lost acknowledged commit is a failed drill; otherwise the
        # loss is the RPO, checked against the spec's target.
        return PhaseOutcome(ok=lost == 0 or not self.layout.synchronous, detail=detail, points=points)

    def rejoin(self) -> PhaseOutcome:
        return PhaseOutcome(detail=self._experiment().rejoin())

    def close(self) -> None:
        if self.experiment is not None:
            self.experiment.close()
        if self.scratch is not None:
            self.scratch.close()
