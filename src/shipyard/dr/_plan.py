"""Failover and failback as plans: pure lists of steps, and the checks that gate them.

No I/O here: the adapter (`_failover.py`) observes the nodes, asks this module what to do and
whether it may, and carries the steps out one by one, recording each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ._postgres import Node, NodeStatus

if TYPE_CHECKING:
    from ..render import HaLayout

StepKind = Literal[
    "check",
    "fence-stop",
    "fence-proxy",
    "catch-up",
    "promote",
    "sync-off",
    "repoint",
    "health",
    "stop",
    "rebuild",
    "start-standby",
    "wait-streaming",
    "sync-on",
    "switchover",
    "wait-leader",
]

MAX_LAG_BYTES = 16 * 1024 * 1024
"""How far behind (replayed WAL) a standby may be and still count as caught up before a failover:
the last bytes are waited for after fencing, so this only bounds that wait."""


@dataclass(frozen=True)
class Step:
    kind: StepKind
    node: str
    """The node acted on (`primary` or `standby`: the spec's names)."""
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"step": self.kind, "node": self.node, "detail": self.detail}


@dataclass(frozen=True)
class Topology:
    """A PostgreSQL datastore with a streaming replica, as the spec describes it."""

    datastore: str
    primary: Node
    """The spec's `local`: the primary in normal operation."""
    standby: Node
    synchronous: bool
    """The spec's RPO is 0: every commit waits for the standby."""
    rto_target_s: int | None = None
    database: str = "app"
    user: str = "app"
    """The app's database and user (the spec's), for the URL to point the app at without a proxy."""
    patroni: HaLayout | None = None
    """`ha: patroni`: Patroni runs the nodes, and failover and failback are switchovers it makes."""


@dataclass(frozen=True)
class ProxyRoute:
    """The HAProxy TCP backend the app reaches the database through."""

    socket: str
    backend: str
    servers: dict[str, str]
    """Node name (`primary`, `standby`) → HAProxy server name."""
    host: str
    port: int
    """The frontend's address: where the health check writes, as the app would."""


def application_name(datastore: str, node: str) -> str:
    """What a node calls itself when it streams (the name `synchronous_standby_names` holds)."""
    return f"{datastore}_{node}"


def switchover_steps(old: Node, new: Node, *, fence: str, proxy: bool, synchronous: bool) -> list[Step]:
    """Make `new` (a streaming standby) the primary in place of `old`.

    `fence` is `stop` (old is reachable: stop it cleanly, so every WAL record it wrote reaches
    `new` before it goes) or `proxy` (old is unreachable: put it in maintenance at the proxy and
    cut its sessions, so no client reaches it even if it comes back).
    """
    steps = [Step("check", new.name, f"{new.name} is streaming from {old.name} and caught up")]
    if fence == "stop":
        steps.append(Step("fence-stop", old.name, f"pg_ctl stop -m fast on {old.address}"))
        steps.append(
            Step("catch-up", new.name, f"{new.name} has received and replayed {old.name}'s last WAL")
        )
    else:
        steps.append(Step("fence-proxy", old.name, f"{old.name} set to maint at the proxy, its sessions cut"))
        steps.append(Step("catch-up", new.name, f"{new.name} has replayed all the WAL it received"))
    steps.append(Step("promote", new.name, f"SELECT pg_promote(wait => true) on {new.address}"))
    steps.append(
        Step(
            "sync-off",
            new.name,
            "synchronous_standby_names cleared: no replica yet, commits must not wait for one"
            + (" (RPO 0 holds again once a replica is rebuilt)" if synchronous else ""),
        )
    )
    if proxy:
        steps.append(Step("repoint", new.name, f"proxy: {old.name} maint, {new.name} ready"))
    else:
        steps.append(Step("repoint", new.name, f"point the app's database URL at {new.address}"))
    steps.append(
        Step(
            "health", new.name, "a write commits on the new primary" + (" through the proxy" if proxy else "")
        )
    )
    return steps


def rebuild_steps(node: Node, upstream: Node, *, running: bool, synchronous: bool) -> list[Step]:
    """Turn `node` (a stopped or diverged former primary) into a streaming replica of `upstream`."""
    steps = []
    if running:
        steps.append(Step("stop", node.name, f"pg_ctl stop -m fast on {node.address}"))
    steps += [
        Step("rebuild", node.name, f"pg_rewind onto {upstream.name} (pg_basebackup if it cannot rewind)"),
        Step("start-standby", node.name, f"start as a replica streaming from {upstream.address}"),
        Step("wait-streaming", node.name, f"{node.name} streams from {upstream.name} and has caught up"),
    ]
    if synchronous:
        steps.append(Step("sync-on", upstream.name, f"{upstream.name} waits for {node.name} on every commit"))
    return steps


def failover_plan(topology: Topology, *, primary_reachable: bool, proxy: bool) -> list[Step]:
    return switchover_steps(
        topology.primary,
        topology.standby,
        fence="stop" if primary_reachable else "proxy",
        proxy=proxy,
        synchronous=topology.synchronous,
    )


def failback_plan(
    topology: Topology, *, old_primary_running: bool, old_primary_streaming: bool, proxy: bool
) -> list[Step]:
    """Rebuild the spec's primary as a replica (unless it already streams from the standby),
    switch back to it, and rebuild the spec's standby as its replica."""
    sync = topology.synchronous
    primary, standby = topology.primary, topology.standby
    if old_primary_streaming:
        first = [Step("sync-on", standby.name, f"{standby.name} waits for {primary.name} on every commit")]
        first = first if sync else []
    else:
        first = rebuild_steps(primary, standby, running=old_primary_running, synchronous=sync)
    return [
        *first,
        *switchover_steps(topology.standby, topology.primary, fence="stop", proxy=proxy, synchronous=sync),
        *rebuild_steps(topology.standby, topology.primary, running=False, synchronous=sync),
    ]


def switchover_problems(
    old: Node, new: Node, old_status: NodeStatus, new_status: NodeStatus, *, synchronous: bool, proxy: bool
) -> list[str]:
    """Why `new` must not take over from `old` now (empty when it may); each says how to fix it."""
    if not new_status.reachable:
        return [f"the {new.name} {new.address} is not reachable ({new_status.error}); start it and retry"]
    if not new_status.in_recovery:
        return [
            f"the {new.name} {new.address} is not a replica (it is not in recovery), so there is"
            " nothing to promote: it may be the primary already after a failover (`shipyard dr"
            " failback` switches back), or the spec names the wrong server"
        ]
    problems = []
    if old_status.reachable:
        if old_status.in_recovery:
            problems.append(f"the {old.name} {old.address} is itself a replica, not a primary")
        if new_status.receiver_status != "streaming":
            problems.append(
                f"the {new.name} {new.address} is not streaming from the {old.name}"
                f" (WAL receiver: {new_status.receiver_status or 'not running'}); check its"
                " primary_conninfo and the primary's pg_hba.conf, then retry"
            )
        replica = next((r for r in old_status.replicas if r.application_name == new.application_name), None)
        if replica is None and not problems:
            problems.append(
                f"the {old.name} does not list {new.application_name!r} among its replicas"
                f" (pg_stat_replication): set application_name={new.application_name} in the"
                f" {new.name}'s primary_conninfo"
            )
        elif replica is not None:
            if replica.lag_bytes is not None and replica.lag_bytes > MAX_LAG_BYTES:
                problems.append(
                    f"the {new.name} is {replica.lag_bytes} bytes behind: wait for it to catch up, then retry"
                )
            if synchronous and replica.sync_state != "sync":
                problems.append(
                    f"the spec's RPO is 0 but the {new.name} is not a synchronous standby"
                    f" (sync_state {replica.sync_state}): configure synchronous replication"
                    f" (synchronous_standby_names = '\"{new.application_name}\"') and retry"
                )
    else:
        if not proxy:
            problems.append(
                f"the {old.name} {old.address} is unreachable ({old_status.error}) and no proxy is"
                " given to fence it at: pass --proxy-socket, or make sure it is down and cannot come back"
            )
        if new_status.receive_lsn is None:
            problems.append(f"the {new.name} has never received WAL from the {old.name}")
    return problems
