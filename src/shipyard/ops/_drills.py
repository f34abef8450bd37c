"""DR verbs: run a drill, fail a PostgreSQL datastore over to its standby and back, run an
`ha: patroni` datastore's processes; and the drills that ran.

    run_drill(ws, RunDrill(mode="restore"))      → DrillOutcome   "drill restore passed: RTO 12.31 s, …"
    failover(ws, Failover())                     → FailoverOutcome
    failback(ws, Failback(dry_run=True))         → FailoverOutcome (the plan, and what blocks it)
    ha_up(ws, HaUp())                            → HaOutcome      etcd, Patroni, HAProxy, the watcher
    ha_status(ws, ShowHa()) / ha_down(ws, HaDown())
    drill_history(ws.sessions, limit=20)         → [DrillView], newest first
    last_drills(ws.sessions)                     → {mode: DrillView}

The CLI (`shipyard dr test|failover|failback|ha`), the API (`/dr`), the dashboard and drill jobs all
call these. The drill history's reader is the DR package's own (`shipyard.dr`), re-exported here,
so that the metrics collector, which sits below this layer, reads drills the same way.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..dr import (
    Admin,
    DrillPlan,
    DrillResult,
    DrillView,
    DrReport,
    HaCluster,
    HaPasswords,
    HaStatus,
    ProxyRoute,
    Step,
    StepResult,
    Topology,
    WatcherSpec,
    drill_data,
    drill_history,
    drill_sources,
    format_seconds,
    last_drills,
    plan_drill,
    plan_failback,
    plan_failover,
    plan_failover_drill,
    reference_variables,
    resolve_topology,
    run_stack_drill,
)
from ..dr import failback as dr_failback
from ..dr import failover as dr_failover
from ..errors import UserError
from ..render import etcd_argv, ha_datastores, ha_layout, haproxy_config, patroni_yaml
from ..spec import DRILL_MODES, DrillMode, Postgres, Stack
from ..state import default_url, record_audit
from ._base import Request, Result
from ._workspace import Workspace

__all__ = [
    "DRILL_MODES",
    "DrillMode",
    "DrillOutcome",
    "DrillView",
    "Failback",
    "Failover",
    "FailoverOutcome",
    "HaDown",
    "HaOutcome",
    "HaUp",
    "PlannedDrillPhase",
    "RunDrill",
    "ShowHa",
    "drill_history",
    "failback",
    "failover",
    "ha_down",
    "ha_status",
    "ha_up",
    "last_drills",
    "run_drill",
]


# --- drills --------------------------------------------------------------------------------------


class RunDrill(Request):
    """Recover from a simulated disaster into scratch servers; measure RTO and RPO."""

    kind: Literal["drill"] = "drill"
    mode: DrillMode
    dry_run: bool = False
    """Plan the drill's phases; run nothing, record nothing."""
    report_dir: str | None = None
    """Where the Markdown and JSON reports go (None: the workspace's drill reports directory)."""


class PlannedDrillPhase(BaseModel):
    """One phase of a drill's plan, as a dry run shows it."""

    model_config = ConfigDict(frozen=True)

    phase: str
    kind: str
    after_disaster: bool
    pitr: bool
    """Recovered by point-in-time recovery (pgBackRest and WAL), not from a backup set."""


class DrillOutcome(Result):
    """A drill's plan (dry run), or what it measured and where its report is."""

    mode: DrillMode
    stack: str
    environment: str
    dry_run: bool = False
    plan: tuple[PlannedDrillPhase, ...]
    result: DrillResult | None = None
    """What the drill measured; None for a dry run."""
    report_markdown: str | None = None
    report_json: str | None = None
    drill_id: int | None = None
    """Its row in the drills table (`drill_history`)."""

    @property
    def ok(self) -> bool:
        """Every phase passed and no target that is set was missed (a dry run is ok)."""
        return self.result is None or self.result.passed

    def data(self) -> dict[str, Any]:
        """The machine form (`-o json`): the plan, or the report's data and where it was written."""
        if self.result is None:
            return {"mode": self.mode, "phases": [phase.model_dump() for phase in self.plan]}
        return drill_data(self.result) | {
            "report": {"markdown": self.report_markdown, "json": self.report_json}
        }

    def summary(self) -> str:
        result = self.result
        if result is None:
            return f"drill {self.mode} dry run: {len(self.plan)} phases, nothing run"
        if result.passed:
            achieved = [
                f"{check.name.upper()} {format_seconds(check.achieved)}"
                for check in result.checks
                if check.name in ("rto", "rpo") and check.achieved is not None
            ]
            return f"drill {self.mode} passed" + (": " + ", ".join(achieved) if achieved else "")
        reasons = []
        failed = result.failed_phase
        if failed is not None:
            detail = " ".join(failed.detail.split()) or "no reason given"
            reasons.append(f"phase {failed.name!r} failed: {detail}")
        for check in result.checks:
            if check.verdict == "fail" and check.achieved is not None and check.target is not None:
                reasons.append(
                    f"{check.name.upper()} {format_seconds(check.achieved)} > {format_seconds(check.target)}"
                )
        return f"drill {self.mode} failed: " + "; ".join(reasons)


def _planned(stack: Stack, mode: DrillMode) -> tuple[DrillPlan, tuple[PlannedDrillPhase, ...]]:
    # The failover drill fails a scratch Patroni cluster over: it needs no backup sources.
    plan = plan_failover_drill(stack) if mode == "failover" else plan_drill(mode, drill_sources(stack))
    phases = tuple(
        PlannedDrillPhase(
            phase=phase.name,
            kind=phase.kind,
            after_disaster=index >= plan.disaster_before,
            pitr=phase.source is not None and phase.source.pitr,
        )
        for index, phase in enumerate(plan.phases)
    )
    return plan, phases


def run_drill(
    ws: Workspace, request: RunDrill, *, on_phase: Callable[[str], None] | None = None
) -> DrillOutcome:
    """Run a drill of the workspace's stack into scratch servers (never the live stack), write its
    report, record it and notify the spec's channels; `on_phase(name)` before each phase.

    A drill that fails (a phase, or a missed target) is an outcome, not an error: `ok` is False.
    """
    stack = ws.stack
    plan, planned = _planned(stack, request.mode)
    outcome = DrillOutcome(mode=request.mode, stack=stack.name, environment=stack.environment, plan=planned)
    if request.dry_run:
        return outcome.model_copy(update={"dry_run": True})
    run = run_stack_drill(
        stack,
        plan,
        sessions=ws.sessions,
        base_dir=ws.workdir,
        actor=ws.actor,
        report_dir=Path(request.report_dir) if request.report_dir else ws.drill_reports(),
        notifier=ws.notifier,
        on_phase=on_phase,
    )
    return outcome.model_copy(
        update={
            "result": run.result,
            "report_markdown": str(run.markdown),
            "report_json": str(run.json),
            "drill_id": run.drill_id,
        }
    )


# --- failover and failback -----------------------------------------------------------------------


class _Switchover(Request):
    datastore: str | None = None
    """The PostgreSQL datastore (None: the one with a standby)."""
    dry_run: bool = False
    """Plan the steps and say what would block them; change nothing."""
    proxy_socket: str | None = None
    """HAProxy's admin socket: the TCP proxy the app reaches the database through."""
    proxy_address: str | None = None
    """HOST:PORT of the proxy's database frontend (the health check writes there)."""
    proxy_backend: str | None = None
    """The HAProxy backend (None: the datastore's name)."""
    proxy_servers: str = "primary,standby"
    """The HAProxy server names of the spec's primary and standby."""
    admin_user: str = "postgres"
    """A PostgreSQL superuser (its password from PGPASSWORD or ~/.pgpass)."""


class Failover(_Switchover):
    """Promote the standby: fence the primary, promote, repoint the app, prove a write."""

    kind: Literal["failover"] = "failover"


class Failback(_Switchover):
    """Make the spec's primary the primary again: rebuild it as a replica, switch back, rebuild
    the other."""

    kind: Literal["failback"] = "failback"


class FailoverOutcome(Result):
    """A failover's or failback's plan (dry run), or what it did."""

    action: Literal["failover", "failback"]
    datastore: str
    dry_run: bool = False
    steps: tuple[Step, ...] = ()
    """The plan (dry run); what was done is in `report`."""
    problems: tuple[str, ...] = ()
    """Why it would be refused (dry run); each says how to fix it."""
    report: DrReport | None = None

    @property
    def ok(self) -> bool:
        """It was done, or (dry run) nothing would refuse it."""
        return not self.problems

    def data(self) -> dict[str, Any]:
        """The machine form (`-o json`)."""
        if self.report is not None:
            return self.report.as_dict()
        return {
            "action": self.action,
            "datastore": self.datastore,
            "dry_run": True,
            "steps": [step.as_dict() for step in self.steps],
            "problems": list(self.problems),
        }

    def summary(self) -> str:
        report = self.report
        if report is None:
            if self.problems:
                return f"{self.action} of {self.datastore} would be refused: " + "; ".join(self.problems)
            return f"{self.action} of {self.datastore} planned: {len(self.steps)} steps, nothing changed"
        line = f"{self.action} of {self.datastore}: {report.primary} {report.primary_address} is the primary"
        if report.rto_s is not None:
            line += f", RTO {format_seconds(report.rto_s)}"
            if report.rto_target_s is not None:
                line += f" (target {format_seconds(report.rto_target_s)})"
        return line


def _proxy_route(topology: Topology, request: _Switchover) -> ProxyRoute | None:
    socket, address = request.proxy_socket, request.proxy_address
    if socket is None:
        if address is not None:
            raise UserError("--proxy-address needs --proxy-socket (HAProxy's admin socket)")
        return None
    if address is None:
        raise UserError("--proxy-socket needs --proxy-address HOST:PORT (the proxy's database frontend)")
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UserError(f"--proxy-address {address!r}: give HOST:PORT, e.g. 127.0.0.1:6432")
    names = [name.strip() for name in request.proxy_servers.split(",")]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise UserError(
            f"--proxy-servers {request.proxy_servers!r}: give two different names, PRIMARY,STANDBY"
        )
    return ProxyRoute(
        socket=socket,
        backend=request.proxy_backend or topology.datastore,
        servers={"primary": names[0], "standby": names[1]},
        host=host,
        port=int(port_text),
    )


def _switchover(
    ws: Workspace, request: Failover | Failback, on_step: Callable[[StepResult], None] | None
) -> FailoverOutcome:
    stack = ws.stack
    topology = resolve_topology(stack, request.datastore)
    if topology.patroni is not None and request.proxy_socket is not None:
        raise UserError(
            f"datastores.{topology.datastore} has ha: patroni: HAProxy follows Patroni's health checks"
            " by itself, so there is no proxy to repoint; drop --proxy-socket and --proxy-address"
        )
    proxy = _proxy_route(topology, request)
    datastore = stack.datastores[topology.datastore]
    version = datastore.version if isinstance(datastore, Postgres) else "15"
    admin = Admin(user=request.admin_user, version=version)
    action = request.kind
    if request.dry_run:
        planner = plan_failover if action == "failover" else plan_failback
        steps, problems = planner(topology, proxy, admin)
        return FailoverOutcome(
            action=action,
            datastore=topology.datastore,
            dry_run=True,
            steps=tuple(steps),
            problems=tuple(problems),
        )
    carry_out = dr_failover if action == "failover" else dr_failback
    report = carry_out(ws.sessions, topology, proxy=proxy, admin=admin, actor=ws.actor, on_step=on_step)
    return FailoverOutcome(action=action, datastore=topology.datastore, report=report)


def failover(
    ws: Workspace, request: Failover, *, on_step: Callable[[StepResult], None] | None = None
) -> FailoverOutcome:
    """Promote the datastore's standby in place of its primary; the RTO is fence → first write.

    DrError, with nothing changed, when it must not (the standby is not streaming, not caught up,
    …); a dry run returns the plan and those problems instead. `on_step` sees each step's end.
    """
    return _switchover(ws, request, on_step)


def failback(
    ws: Workspace, request: Failback, *, on_step: Callable[[StepResult], None] | None = None
) -> FailoverOutcome:
    """Rebuild the old primary as a replica, switch back to it, rebuild the standby as its replica."""
    return _switchover(ws, request, on_step)


# --- the processes of `ha: patroni` datastores ---------------------------------------------------


class _HaRequest(Request):
    datastore: str | None = None
    """The `ha: patroni` datastore (None: every one of the spec)."""


class HaUp(_HaRequest):
    """Start (or keep) this host's etcd, Patroni, HAProxy and failover watcher of a Patroni datastore."""

    kind: Literal["ha-up"] = "ha-up"
    dry_run: bool = False
    """Show what would run (each node's patroni.yml, etcd's command line, HAProxy's configuration)."""
    watch: bool = True
    """Also run the failover watcher, which notifies `dr.failover` to the spec's channels."""


class HaDown(_HaRequest):
    """Stop this host's processes of a Patroni datastore (its data directories stay)."""

    kind: Literal["ha-down"] = "ha-down"
    dry_run: bool = False


class ShowHa(_HaRequest):
    """Each process, Patroni's view of each node and HAProxy's of each route."""

    kind: Literal["ha-status"] = "ha-status"


class HaOutcome(Result):
    action: Literal["up", "down", "status"]
    dry_run: bool = False
    clusters: tuple[HaStatus, ...] = ()
    rendered: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Dry run of `up`: per datastore, what would be written or run (never a password)."""

    @property
    def ok(self) -> bool:
        if self.dry_run or self.action == "down":
            return True
        return all(cluster.healthy for cluster in self.clusters)

    def data(self) -> dict[str, Any]:
        if self.dry_run:
            return {"action": self.action, "dry_run": True, "rendered": self.rendered}
        return {"action": self.action, "clusters": [cluster.as_dict() for cluster in self.clusters]}

    def summary(self) -> str:
        if self.dry_run:
            return f"ha {self.action} dry run: {', '.join(self.rendered)}; nothing started"
        parts = []
        for cluster in self.clusters:
            if self.action == "down":
                alive = [p.name for p in cluster.processes if p.here and p.alive]
                parts.append(
                    f"{cluster.datastore}: " + (f"still running {', '.join(alive)}" if alive else "stopped")
                )
                continue
            leader = cluster.leader or "no leader"
            health = "healthy" if cluster.healthy else "NOT healthy"
            parts.append(f"{cluster.datastore}: {health}, primary {leader}")
        return f"ha {self.action}: " + "; ".join(parts)


def _ha_names(stack: Stack, datastore: str | None) -> list[str]:
    names = ha_datastores(stack)
    if datastore is not None:
        ha_layout(stack, datastore)  # UserError naming the field when it is not a Patroni datastore
        return [datastore]
    if not names:
        raise UserError(
            "no datastore of the spec has ha: patroni; set datastores.<name>.ha: patroni and"
            " patroni.etcd (see `shipyard dr ha up --help`)"
        )
    return names


def _ha_state(ws: Workspace, datastore: str) -> Path:
    return (ws.state_dir / "ha" / f"{ws.stack.name}-{ws.environment}" / datastore).resolve()


def _database_url(ws: Workspace) -> str:
    """The state store's URL as another process on this host reaches it (SQLite made absolute)."""
    url = ws.database_url or default_url()
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(Path(url.removeprefix(prefix)).resolve())
    return url


def _watcher(ws: Workspace) -> WatcherSpec | None:
    if ws.spec_path is None:
        return None
    channels = ws.stack.notifications.values()
    names = reference_variables([ref for c in channels for ref in (c.url, c.token, c.smtp_password)])
    environ = {name: os.environ[name] for name in names if name in os.environ}
    return WatcherSpec(ws.spec_path, ws.environment, _database_url(ws), environ)


def _cluster(ws: Workspace, datastore: str, passwords: HaPasswords, **kwargs: Any) -> HaCluster:
    return HaCluster(ha_layout(ws.stack, datastore), _ha_state(ws, datastore), passwords, **kwargs)


def ha_up(ws: Workspace, request: HaUp, *, on_action: Callable[[str], None] | None = None) -> HaOutcome:
    """Start this host's processes of each Patroni datastore (those running are kept) and wait
    until each node runs; `on_action` sees each thing done. Recorded in the audit log (`dr.ha`).

    The passwords come from shipyard's environment (UserError naming each field and variable that
    is not set); none is written by shipyard. A dry run renders and starts nothing."""
    names = _ha_names(ws.stack, request.datastore)
    if request.dry_run:
        rendered = {}
        for name in names:
            layout = ha_layout(ws.stack, name)
            files = {node.config_path: patroni_yaml(layout, node) for node in layout.nodes}
            files |= {f"etcd {m.name}": shlex.join(etcd_argv(layout, m)) for m in layout.etcd}
            if layout.proxy is not None:
                socket = str(_ha_state(ws, name) / "haproxy" / "admin.sock")
                files["haproxy.cfg"] = haproxy_config(layout, admin_socket=socket)
            rendered[name] = files
        return HaOutcome(action="up", dry_run=True, rendered=rendered)
    clusters = []
    for name in names:
        layout = ha_layout(ws.stack, name)
        passwords = HaPasswords.from_environment(layout)
        watcher = _watcher(ws) if request.watch else None
        cluster = _cluster(ws, name, passwords, watcher=watcher, on_action=on_action)
        try:
            status = cluster.up()
        except Exception as error:
            _ha_audit(ws, name, "up", {"actions": cluster.actions, "error": type(error).__name__}, "failed")
            raise
        _ha_audit(ws, name, "up", {"actions": list(status.actions), "leader": status.leader}, "ok")
        clusters.append(status)
    return HaOutcome(action="up", clusters=tuple(clusters))


def ha_down(ws: Workspace, request: HaDown, *, on_action: Callable[[str], None] | None = None) -> HaOutcome:
    """Stop this host's processes of each Patroni datastore: watcher, HAProxy, replicas, leader, etcd."""
    clusters = []
    for name in _ha_names(ws.stack, request.datastore):
        cluster = _cluster(ws, name, HaPasswords({}), on_action=on_action)
        if request.dry_run:
            clusters.append(cluster.status())
            continue
        status = cluster.down()
        _ha_audit(ws, name, "down", {"actions": list(status.actions)}, "ok")
        clusters.append(status)
    return HaOutcome(action="down", dry_run=request.dry_run, clusters=tuple(clusters))


def ha_status(ws: Workspace, request: ShowHa) -> HaOutcome:
    """What runs here, and what Patroni and HAProxy say about each node (changes nothing)."""
    names = _ha_names(ws.stack, request.datastore)
    return HaOutcome(
        action="status", clusters=tuple(_cluster(ws, n, HaPasswords({})).status() for n in names)
    )


def _ha_audit(ws: Workspace, datastore: str, verb: str, after: dict[str, Any], outcome: str) -> None:
    record_audit(
        ws.sessions, actor=ws.actor, action=f"dr.ha.{verb}", target_kind="datastore",
        target=datastore, after=after, outcome=outcome,
    )  # fmt: skip
