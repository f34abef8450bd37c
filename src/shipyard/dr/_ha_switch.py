"""`dr failover` and `dr failback` of an `ha: patroni` datastore: a switchover Patroni makes.

Patroni owns the roles, so shipyard does not fence, promote or rebuild: it asks Patroni's REST API
to make the spec's standby (failover) or the spec's primary (failback) the leader, then proves it
as the manual path does. The steps, each recorded in the audit log like the manual ones:

    check         the target is a running replica Patroni may promote (the synchronous standby
                  when the RPO is 0); another node is the leader
    switchover    POST /switchover {leader, candidate} (POST /failover {candidate} when no leader
                  runs: Patroni then promotes it whatever the old leader's state)
    wait-leader   Patroni names the target the leader and its /primary health check answers 200
                  (HAProxy's check): from now on writes are routed there
    health        a write commits where the app connects (HAProxy's write port); the RTO is from
                  the switchover request to this write
    wait-streaming  the old leader follows the new one as a replica (Patroni restarts it, rewinding
                  it with pg_rewind when it must); only when it was running
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from ..errors import DrError
from ..render import HaLayout, HaNode
from ._failover import POLL_S, WAIT_S, DrReport, StepResult, _Run
from ._failover_load import Endpoint
from ._ha import HaPasswords
from ._patroni import ClusterView, PatroniClient
from ._plan import Step, Topology
from ._postgres import Admin

Action = Literal["failover", "failback"]


def _layout(topology: Topology) -> HaLayout:
    if topology.patroni is None:  # pragma: no cover - callers dispatch on it
        raise DrError(f"{topology.datastore} is not a Patroni datastore")
    return topology.patroni


def _target(layout: HaLayout, action: Action) -> HaNode:
    """The node the action makes the leader: the spec's standby (failover) or primary (failback)."""
    return layout.node("standby" if action == "failover" else "primary")


def _client(layout: HaLayout, passwords: HaPasswords | None) -> PatroniClient:
    auth = (layout.restapi_user, passwords["restapi"]) if passwords is not None else None
    return PatroniClient([n.rest_url for n in layout.nodes], auth=auth, loop_wait=layout.loop_wait)


def _problems(layout: HaLayout, action: Action, view: ClusterView | None) -> list[str]:
    """Why Patroni must not be asked now (empty when it may); each says how to fix it."""
    target = _target(layout, action)
    if view is None:
        addresses = ", ".join(n.rest_address for n in layout.nodes)
        return [
            f"no Patroni REST API of {layout.datastore} answered ({addresses}): start the cluster with"
            " `shipyard dr ha up`"
        ]
    member = view.member(target.member)
    leader = view.leader
    if leader is not None and leader.name == target.member:
        other = "failback" if action == "failover" else "failover"
        return [
            f"the {target.role} ({target.member}) is the primary already: there is nothing to {action}"
            f" (`shipyard dr {other}` switches to the other node)"
        ]
    if member is None or not member.is_running_replica:
        seen = f"{member.role}/{member.state}" if member is not None else "not in the cluster"
        return [
            f"the {target.role} ({target.member}) is not a running replica (Patroni: {seen}); start it"
            " (`shipyard dr ha up` on its host) and wait until it streams"
        ]
    if layout.synchronous and leader is not None and member.role != "sync_standby":
        sync = ", ".join(m.name for m in view.sync_standbys) or "none"
        return [
            f"the spec's RPO is 0 but the {target.role} ({target.member}) is not the synchronous standby"
            f" (Patroni's: {sync}): wait until Patroni makes it synchronous, then retry"
        ]
    return []


def plan(topology: Topology, action: Action) -> tuple[list[Step], list[str]]:
    """The switchover's steps and, when it must not go ahead, why (read-only)."""
    layout = _layout(topology)
    target = _target(layout, action)
    view = _client(layout, None).try_cluster()
    leader = view.leader if view is not None else None
    old = layout.member_role(leader.name) if leader is not None else None
    steps = [Step("check", target.role, f"{target.role} is a running replica Patroni may promote")]
    if leader is not None:
        detail = f"POST /switchover leader={leader.name} candidate={target.member} (Patroni's REST API)"
        steps.append(Step("switchover", target.role, detail))
    else:
        steps.append(
            Step("switchover", target.role, f"POST /failover candidate={target.member}: no leader runs")
        )
    steps.append(
        Step(
            "wait-leader", target.role, f"Patroni names {target.member} the leader; its /primary answers 200"
        )
    )
    where = "through HAProxy" if layout.proxy is not None else "on the new primary"
    steps.append(Step("health", target.role, f"a write commits {where}"))
    if old is not None:
        steps.append(
            Step("wait-streaming", old, f"{old} follows {target.role} as a replica (pg_rewind if it must)")
        )
    return steps, _problems(layout, action, view)


class _PatroniRun(_Run):
    """The manual run's recording, lease and RTO, with Patroni doing the work."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        topology: Topology,
        passwords: HaPasswords,
        actor: str,
        action: Action,
        on_step: Callable[[StepResult], None] | None,
    ) -> None:
        super().__init__(
            sessions, topology, None, Admin(user=_layout(topology).superuser), actor, action, on_step
        )
        self.layout = _layout(topology)
        self.client = _client(self.layout, passwords)
        self.passwords = passwords
        self.leader_before: str | None = None

    def act(self, step: Step) -> str:
        handler = getattr(self, "ha_" + step.kind.replace("-", "_"))
        return str(handler(self.layout.node(step.node)))

    def ha_check(self, target: HaNode) -> str:
        view = self.client.cluster()
        problems = _problems(self.layout, self.action, view)
        if problems:
            raise DrError("; ".join(problems))
        self.leader_before = view.leader.name if view.leader is not None else None
        member = view.member(target.member)
        return f"{target.member} is {member.role if member is not None else '?'}"

    def ha_switchover(self, target: HaNode) -> str:
        self.fenced_at = time.monotonic()
        if self.leader_before is not None:
            return self.client.switchover(self.leader_before, target.member)
        return self.client.failover(target.member)

    def ha_wait_leader(self, target: HaNode) -> str:
        deadline = time.monotonic() + WAIT_S
        while True:
            view = self.client.try_cluster()
            leader = view.leader if view is not None else None
            promoted = leader is not None and leader.name == target.member
            if promoted and self.client.health(target.rest_url, "/primary") == 200:
                assert leader is not None
                return f"{target.member} is the leader (timeline {leader.timeline})"
            if time.monotonic() > deadline:
                named = leader.name if leader is not None else "none"
                raise DrError(
                    f"Patroni did not make {target.member} the leader within {WAIT_S:g} s (leader: {named})"
                )
            time.sleep(POLL_S)

    def ha_health(self, target: HaNode) -> str:
        proxy = self.layout.proxy
        host, port = (proxy.host, proxy.port) if proxy is not None else (target.host, target.port)
        endpoint = Endpoint(host, port, self.layout.superuser, self.passwords["superuser"])

        def write() -> None:
            with endpoint.connect(2) as connection:
                connection.execute("SET statement_timeout = 2000")
                connection.execute("SELECT txid_current()")

        return self.until_a_write_commits(host, port, write)

    def ha_wait_streaming(self, node: HaNode) -> str:
        deadline = time.monotonic() + 2 * WAIT_S
        while True:
            view = self.client.try_cluster()
            member = view.member(node.member) if view is not None else None
            if member is not None and member.is_running_replica:
                return f"{node.member} is {member.role}, {member.lag or 0} bytes behind"
            if time.monotonic() > deadline:
                seen = f"{member.role}/{member.state}" if member is not None else "not in the cluster"
                raise DrError(f"{node.member} does not follow the new leader (Patroni: {seen})")
            time.sleep(POLL_S)


def run(
    sessions: sessionmaker[Session],
    topology: Topology,
    action: Action,
    *,
    actor: str,
    on_step: Callable[[StepResult], None] | None,
    passwords: HaPasswords | None = None,
) -> DrReport:
    """Carry the switchover out; DrError (nothing changed) when it must not."""
    layout = _layout(topology)
    steps, problems = plan(topology, action)
    if problems:
        raise DrError(
            f"{action} of {topology.datastore} refused; nothing was changed: " + "; ".join(problems)
        )
    passwords = passwords or HaPasswords.from_environment(layout, roles=("restapi", "superuser"))
    run = _PatroniRun(sessions, topology, passwords, actor, action, on_step)
    run.execute(steps)
    target = _target(layout, action)
    proxy = layout.proxy
    return DrReport(
        action=action,
        datastore=topology.datastore,
        primary=target.role,
        primary_address=target.address,
        rto_s=run.rto_s,
        rto_target_s=topology.rto_target_s,
        steps=run.results,
        database_url=None
        if proxy is not None
        else f"postgresql://{topology.user}@{target.host}:{target.port}/{topology.database}",
        synchronous=layout.synchronous,
    )
