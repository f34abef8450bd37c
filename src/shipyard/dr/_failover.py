"""Failover and failback of a PostgreSQL datastore with a streaming replica, carried out.

`failover` fences the primary, lets the standby replay everything it received, promotes it,
repoints the app (HAProxy's TCP backend through its runtime API, or a URL to set) and proves a
write commits where the app connects; the time from fence to that write is the RTO. `failback`
rebuilds the old primary as a replica (pg_rewind, else pg_basebackup), switches back to it the
same way, and rebuilds the other node as its replica.

Each step is recorded in the audit log (action `dr.failover` / `dr.failback`) when it starts and
when it ends, and the datastore's lease (`dr:<datastore>`) is held throughout, so two operators
cannot fail over the same datastore at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DrError, TargetError, UserError
from ..locks import Lease, LockHeldError
from ..render import ha_layout
from ..rollout.targets.haproxy import HAProxyClient, HAProxyUnreachable
from ..spec import Postgres, Stack
from ..state import record_audit
from . import _postgres as pg
from ._plan import (
    ProxyRoute,
    Step,
    Topology,
    application_name,
    failback_plan,
    failover_plan,
    switchover_problems,
)
from ._postgres import Admin, Node, NodeStatus
from ._report import target_met

WAIT_S = 60.0
"""How long a wait (catch-up, streaming, the first write) may take before the step fails."""
POLL_S = 0.05
DEFAULT_ADMIN = Admin()


# --- the topology from the spec ------------------------------------------------------------------


def resolve_topology(stack: Stack, datastore: str | None = None) -> Topology:
    """The spec's PostgreSQL datastore with a standby; UserError naming the field when there is none."""
    candidates = {name: ds for name, ds in stack.datastores.items() if isinstance(ds, Postgres)}
    if datastore is None:
        with_standby = [name for name, ds in candidates.items() if ds.standby is not None]
        if len(with_standby) == 1:
            datastore = with_standby[0]
        elif len(candidates) == 1:
            datastore = next(iter(candidates))  # the error below names its missing standby
        elif not with_standby:
            raise UserError(
                "no PostgreSQL datastore in the spec has a standby: add datastores.<name>.standby"
                " (host, port, data_dir of the streaming replica)"
            )
        else:
            raise UserError(f"several datastores have a standby ({', '.join(with_standby)}): name one")
    spec = candidates.get(datastore)
    if spec is None:
        known = ", ".join(candidates) or "none"
        raise UserError(
            f"datastores.{datastore}: no such PostgreSQL datastore (PostgreSQL datastores: {known})"
        )
    if spec.standby is None:
        raise UserError(
            f"datastores.{datastore}.standby is not set: failover needs a streaming replica;"
            " add its host, port and data_dir"
        )
    if spec.local.data_dir is None:
        raise UserError(
            f"datastores.{datastore}.local.data_dir is not set: failover stops (fences) the primary"
            " and failback rebuilds it from its data directory"
        )
    primary = Node(
        "primary",
        spec.local.host,
        spec.local.port or spec.port,
        spec.local.data_dir,
        application_name(datastore, "primary"),
    )
    standby = Node(
        "standby",
        spec.standby.host,
        spec.standby.port or spec.port,
        spec.standby.data_dir,
        application_name(datastore, "standby"),
    )
    if primary.address == standby.address:
        raise UserError(f"datastores.{datastore}.standby is the primary's own address ({primary.address})")
    return Topology(
        datastore=datastore,
        primary=primary,
        standby=standby,
        synchronous=stack.dr is not None and stack.dr.rpo == 0,
        rto_target_s=stack.dr.rto if stack.dr is not None else None,
        database=spec.database,
        user=spec.user,
        patroni=ha_layout(stack, datastore) if spec.ha == "patroni" else None,
    )


def configure_synchronous_replication(
    topology: Topology, admin: Admin = DEFAULT_ADMIN, wait_s: float = 10.0
) -> None:
    """Make the primary wait for the standby on every commit (RPO 0): ALTER SYSTEM + reload, then
    wait up to `wait_s` for the standby to be listed as `sync` (DrError if it is not)."""
    pg.set_synchronous_standby(topology.primary, admin, topology.standby.application_name)
    if wait_s > 0:
        _wait_synchronous(topology.primary, topology.standby, admin, wait_s)


def _wait_synchronous(upstream: Node, node: Node, admin: Admin, timeout_s: float) -> None:
    """Wait until `upstream` lists `node` as its synchronous standby (walsenders take a new
    synchronous_standby_names on their own reload, a moment after the backend that set it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = pg.node_status(upstream, admin)
        replica = next((r for r in status.replicas if r.application_name == node.application_name), None)
        if replica is not None and replica.sync_state == "sync":
            return
        if time.monotonic() > deadline:
            seen = f"sync_state {replica.sync_state}" if replica else "not connected"
            raise DrError(f"the {node.name} is not a synchronous standby of the {upstream.name} ({seen})")
        time.sleep(POLL_S)


# --- reports -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    step: Step
    outcome: Literal["ok", "failed", "skipped"]
    seconds: float
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.step.as_dict(),
            "outcome": self.outcome,
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }


@dataclass
class DrReport:
    """What a failover or failback did; `rto_s` is fence → first committed write where the app connects."""

    action: Literal["failover", "failback"]
    datastore: str
    primary: str
    """The node that is primary at the end (`primary` or `standby`, the spec's names)."""
    primary_address: str
    rto_s: float | None = None
    rto_target_s: int | None = None
    steps: list[StepResult] = field(default_factory=list)
    database_url: str | None = None
    """Where to point the app when no proxy switches it."""
    kept: list[str] = field(default_factory=list)
    """Data directories moved aside by a rebuild (pg_basebackup), kept for the operator to remove."""
    synchronous: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "datastore": self.datastore,
            "primary": self.primary,
            "primary_address": self.primary_address,
            "rto_s": None if self.rto_s is None else round(self.rto_s, 3),
            "rto_target_s": self.rto_target_s,
            "rto_met": target_met(self.rto_s, self.rto_target_s),
            "synchronous": self.synchronous,
            "database_url": self.database_url,
            "kept": self.kept,
            "steps": [result.as_dict() for result in self.steps],
        }


# --- planning (read-only) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    primary: NodeStatus
    standby: NodeStatus


def observe(topology: Topology, admin: Admin) -> Observed:
    return Observed(pg.node_status(topology.primary, admin), pg.node_status(topology.standby, admin))


def plan_failover(
    topology: Topology, proxy: ProxyRoute | None, admin: Admin = DEFAULT_ADMIN
) -> tuple[list[Step], list[str]]:
    """The failover's steps and, when it must not go ahead, why (read-only: nothing changes)."""
    if topology.patroni is not None:
        from . import _ha_switch  # noqa: PLC0415 - it builds on this module's run

        return _ha_switch.plan(topology, "failover")
    seen = observe(topology, admin)
    steps = failover_plan(topology, primary_reachable=seen.primary.reachable, proxy=proxy is not None)
    problems = switchover_problems(
        topology.primary,
        topology.standby,
        seen.primary,
        seen.standby,
        synchronous=topology.synchronous,
        proxy=proxy is not None,
    )
    return steps, problems + _proxy_problems(proxy, f"failover of {topology.datastore}")


def plan_failback(
    topology: Topology, proxy: ProxyRoute | None, admin: Admin = DEFAULT_ADMIN
) -> tuple[list[Step], list[str]]:
    """The failback's steps and, when it must not go ahead, why (read-only)."""
    if topology.patroni is not None:
        from . import _ha_switch  # noqa: PLC0415 - it builds on this module's run

        return _ha_switch.plan(topology, "failback")
    seen = observe(topology, admin)
    problems = []
    standby, primary = topology.standby, topology.primary
    if not seen.standby.reachable:
        problems.append(f"the standby {standby.address} is not reachable ({seen.standby.error})")
    elif seen.standby.in_recovery:
        problems.append(
            f"the standby {standby.address} is a replica, not the primary: there is nothing to fail back"
            " (failback follows a failover)"
        )
    if standby.data_dir is None:
        problems.append(
            f"datastores.{topology.datastore}.standby.data_dir is not set: failback rebuilds the standby"
            " as a replica from its data directory"
        )
    streaming = bool(
        seen.primary.reachable and seen.primary.in_recovery and seen.primary.receiver_status == "streaming"
    )
    running = seen.primary.reachable or pg.is_running(primary, admin)
    steps = failback_plan(
        topology, old_primary_running=running, old_primary_streaming=streaming, proxy=proxy is not None
    )
    return steps, problems + _proxy_problems(proxy, f"failback of {topology.datastore}")


def _proxy_problems(proxy: ProxyRoute | None, action: str) -> list[str]:
    """Why the proxy given (`--proxy-socket`) would refuse the switch; HAProxyUnreachable (exit 3,
    one line naming the socket) when nothing answers there, before any step changed anything."""
    if proxy is None:
        return []
    client = HAProxyClient(proxy.socket)
    try:
        states = client.servers_state(proxy.backend)
    except HAProxyUnreachable as error:
        raise HAProxyUnreachable(f"{action} refused, nothing was changed: {error.message}") from None
    except TargetError as error:
        return [f"the proxy: {error.message}"]
    names = {state.server for state in states}
    missing = [server for server in proxy.servers.values() if server not in names]
    if missing:
        return [
            f"HAProxy backend {proxy.backend} has no server {', '.join(missing)} (it has:"
            f" {', '.join(sorted(names)) or 'none'}); pass --proxy-servers PRIMARY,STANDBY"
        ]
    return []


# --- carrying a plan out -------------------------------------------------------------------------


class _Run:
    """One failover or failback: executes steps, records each, keeps the lease, times the RTO."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        topology: Topology,
        proxy: ProxyRoute | None,
        admin: Admin,
        actor: str,
        action: Literal["failover", "failback"],
        on_step: Callable[[StepResult], None] | None,
    ) -> None:
        self.sessions = sessions
        self.topology = topology
        self.proxy = proxy
        self.admin = admin
        self.actor = actor
        self.action = action
        self.on_step = on_step
        self.run_id = uuid.uuid4().hex[:12]
        self.results: list[StepResult] = []
        self.kept: list[str] = []
        self.fenced_at: float | None = None
        self.rto_s: float | None = None
        self.fence_lsn: str | None = None
        self.lease = Lease(sessions, f"dr:{topology.datastore}", ttl_s=600)

    def node(self, name: str) -> Node:
        return self.topology.primary if name == "primary" else self.topology.standby

    def other(self, name: str) -> Node:
        return self.topology.standby if name == "primary" else self.topology.primary

    def record(self, step: Step, outcome: str, after: dict[str, Any] | None) -> None:
        before = {**step.as_dict(), "run": self.run_id}
        record_audit(
            self.sessions, actor=self.actor, action=f"dr.{self.action}", target_kind="datastore",
            target=self.topology.datastore, before=before, after=after, outcome=outcome,
        )  # fmt: skip

    def execute(self, steps: list[Step]) -> None:
        try:
            self.lease.acquire()
        except LockHeldError as error:
            raise DrError(
                f"another failover or failback of {self.topology.datastore} is running: {error.message}"
            ) from error
        try:
            for step in steps:
                self.lease.renew()
                self.record(step, "started", None)
                started = time.monotonic()
                try:
                    note = self.act(step)
                except (DrError, TargetError, psycopg.Error) as error:
                    message = error.message if isinstance(error, DrError | TargetError) else str(error)
                    result = StepResult(step, "failed", time.monotonic() - started, message)
                    self.results.append(result)
                    self.record(step, "failed", {"error": message})
                    if self.on_step:
                        self.on_step(result)
                    raise DrError(
                        f"{self.action} of {self.topology.datastore} failed at step {step.kind}"
                        f" ({step.detail}): {message}" + self.left_as(step)
                    ) from error
                result = StepResult(step, "ok", time.monotonic() - started, note)
                self.results.append(result)
                self.record(step, "ok", {"note": note, "seconds": round(result.seconds, 3)})
                if self.on_step:
                    self.on_step(result)
        finally:
            self.lease.release()

    def left_as(self, failed: Step) -> str:
        done = [r.step.kind for r in self.results if r.outcome == "ok"]
        if not done or done == ["check"]:
            return "; no step before it had changed anything"
        return f"; done before it: {', '.join(done)} (see the audit log, run {self.run_id})"

    # --- the steps ---

    def act(self, step: Step) -> str:
        node = self.node(step.node)
        handler = getattr(self, "do_" + step.kind.replace("-", "_"))
        return str(handler(step, node))

    def do_check(self, step: Step, new: Node) -> str:
        old = self.other(new.name)
        problems = switchover_problems(
            old,
            new,
            pg.node_status(old, self.admin),
            pg.node_status(new, self.admin),
            synchronous=self.topology.synchronous,
            proxy=self.proxy is not None,
        )
        if problems:
            raise DrError("; ".join(problems))
        return "ready"

    def do_fence_stop(self, step: Step, old: Node) -> str:
        self.fenced_at = time.monotonic()
        pg.stop(old, self.admin)
        self.fence_lsn = pg.checkpoint_lsn(old, self.admin)
        return f"stopped; shutdown checkpoint at {self.fence_lsn}"

    def do_fence_proxy(self, step: Step, old: Node) -> str:
        self.fenced_at = time.monotonic()
        if self.proxy is None:  # pragma: no cover - the plan fences at the proxy only when there is one
            raise DrError("no proxy to fence at")
        self.fence_lsn = None
        client = HAProxyClient(self.proxy.socket)
        server = self.proxy.servers[old.name]
        client.set_state(self.proxy.backend, server, "maint")
        client.command(f"shutdown sessions server {self.proxy.backend}/{server}")
        return f"{self.proxy.backend}/{server} in maint, its sessions cut"

    def do_catch_up(self, step: Step, new: Node) -> str:
        target = pg.lsn_value(self.fence_lsn) if self.fence_lsn else None
        deadline = time.monotonic() + WAIT_S
        status = pg.node_status(new, self.admin)
        while True:
            if status.reachable and status.receive_lsn and status.replay_lsn:
                received, replayed = pg.lsn_value(status.receive_lsn), pg.lsn_value(status.replay_lsn)
                if (target is None or received > target) and replayed >= received:
                    return f"received and replayed up to {status.replay_lsn}"
            if time.monotonic() > deadline:
                raise DrError(
                    f"the {new.name} did not catch up within {WAIT_S:g} s (received {status.receive_lsn},"
                    f" replayed {status.replay_lsn}, needed past {self.fence_lsn or 'everything received'})"
                )
            time.sleep(POLL_S)
            status = pg.node_status(new, self.admin)

    def do_promote(self, step: Step, new: Node) -> str:
        pg.promote(new, self.admin)
        return "promoted"

    def do_sync_off(self, step: Step, new: Node) -> str:
        pg.set_synchronous_standby(new, self.admin, None)
        return "synchronous_standby_names = ''"

    def do_repoint(self, step: Step, new: Node) -> str:
        if self.proxy is None:
            return f"set the app's database host to {new.address}"
        old = self.other(new.name)
        client = HAProxyClient(self.proxy.socket)
        old_server, new_server = self.proxy.servers[old.name], self.proxy.servers[new.name]
        client.set_state(self.proxy.backend, old_server, "maint")
        client.command(f"shutdown sessions server {self.proxy.backend}/{old_server}")
        client.set_state(self.proxy.backend, new_server, "ready")
        return f"{self.proxy.backend}: {old_server} maint, {new_server} ready"

    def do_health(self, step: Step, new: Node) -> str:
        host, port = (self.proxy.host, self.proxy.port) if self.proxy else (new.host, new.port)
        return self.until_a_write_commits(host, port, lambda: pg.write_probe(host, port, self.admin))

    def until_a_write_commits(self, host: str, port: int, write: Callable[[], None]) -> str:
        """Retry `write` (one committed transaction where the app connects; raises psycopg.Error)
        until it succeeds; the time since the fence is the RTO."""
        deadline = time.monotonic() + WAIT_S
        last = ""
        while time.monotonic() < deadline:
            try:
                write()
            except psycopg.Error as error:
                last = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                time.sleep(POLL_S)
                continue
            if self.fenced_at is not None:
                self.rto_s = time.monotonic() - self.fenced_at
            return f"a write committed through {host}:{port}"
        raise DrError(f"no write committed through {host}:{port} within {WAIT_S:g} s: {last}")

    def do_stop(self, step: Step, node: Node) -> str:
        if pg.is_running(node, self.admin):
            pg.stop(node, self.admin)
            return "stopped"
        return "was not running"

    def do_rebuild(self, step: Step, node: Node) -> str:
        upstream = self.other(node.name)
        # A just-promoted server's control file names its new timeline only after a checkpoint,
        # and pg_rewind reads the source's timeline from there.
        pg.query_one(upstream, self.admin, "CHECKPOINT")
        try:
            pg.rewind(node, upstream, self.admin)
        except DrError as error:
            kept = pg.basebackup(node, upstream, self.admin)
            self.kept.append(str(kept))
            return (
                f"pg_rewind could not ({error.message}); pg_basebackup copied it, the old data kept in {kept}"
            )
        return "pg_rewind"

    def do_start_standby(self, step: Step, node: Node) -> str:
        upstream = self.other(node.name)
        pg.make_standby(node, upstream, self.admin)
        pg.start(node, self.admin)
        return f"started, streaming from {upstream.address}"

    def do_wait_streaming(self, step: Step, node: Node) -> str:
        upstream = self.other(node.name)
        deadline = time.monotonic() + WAIT_S
        while True:
            status = pg.node_status(upstream, self.admin)
            replica = next((r for r in status.replicas if r.application_name == node.application_name), None)
            if replica is not None and replica.state == "streaming":
                return f"streaming, {replica.lag_bytes} bytes behind"
            if time.monotonic() > deadline:
                seen = replica.state if replica else "not connected"
                raise DrError(f"the {node.name} does not stream from the {upstream.name} ({seen})")
            time.sleep(POLL_S * 4)

    def do_sync_on(self, step: Step, upstream: Node) -> str:
        node = self.other(upstream.name)
        pg.set_synchronous_standby(upstream, self.admin, node.application_name)
        _wait_synchronous(upstream, node, self.admin, WAIT_S)
        return f"synchronous_standby_names = '\"{node.application_name}\"'; {node.name} is sync"


def _report(run: _Run, primary: Node) -> DrReport:
    return DrReport(
        action=run.action,
        datastore=run.topology.datastore,
        primary=primary.name,
        primary_address=primary.address,
        rto_s=run.rto_s,
        rto_target_s=run.topology.rto_target_s,
        steps=run.results,
        database_url=None
        if run.proxy
        else f"postgresql://{run.topology.user}@{primary.host}:{primary.port}/{run.topology.database}",
        kept=run.kept,
        synchronous=run.topology.synchronous,
    )


def failover(
    sessions: sessionmaker[Session],
    topology: Topology,
    *,
    proxy: ProxyRoute | None = None,
    admin: Admin = DEFAULT_ADMIN,
    actor: str = "shipyard",
    on_step: Callable[[StepResult], None] | None = None,
) -> DrReport:
    """Promote the standby in place of the primary; DrError (nothing changed) when it must not.

    With `ha: patroni` it is a switchover Patroni makes (see `_ha_switch`), recorded the same way."""
    if topology.patroni is not None:
        from . import _ha_switch  # noqa: PLC0415 - it builds on this module's run

        return _ha_switch.run(sessions, topology, "failover", actor=actor, on_step=on_step)
    steps, problems = plan_failover(topology, proxy, admin)
    if problems:
        raise DrError(
            f"failover of {topology.datastore} refused; nothing was changed: " + "; ".join(problems)
        )
    run = _Run(sessions, topology, proxy, admin, actor, "failover", on_step)
    run.execute(steps)
    return _report(run, topology.standby)


def failback(
    sessions: sessionmaker[Session],
    topology: Topology,
    *,
    proxy: ProxyRoute | None = None,
    admin: Admin = DEFAULT_ADMIN,
    actor: str = "shipyard",
    on_step: Callable[[StepResult], None] | None = None,
) -> DrReport:
    """Rebuild the old primary as a replica, switch back to it, rebuild the standby as its replica.

    With `ha: patroni`, a switchover back to the spec's primary (Patroni rewinds the other)."""
    if topology.patroni is not None:
        from . import _ha_switch  # noqa: PLC0415 - it builds on this module's run

        return _ha_switch.run(sessions, topology, "failback", actor=actor, on_step=on_step)
    steps, problems = plan_failback(topology, proxy, admin)
    if problems:
        raise DrError(
            f"failback of {topology.datastore} refused; nothing was changed: " + "; ".join(problems)
        )
    run = _Run(sessions, topology, proxy, admin, actor, "failback", on_step)
    run.execute(steps)
    return _report(run, topology.primary)
