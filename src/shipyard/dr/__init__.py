"""Disaster recovery: failover and failback of PostgreSQL, and drills that measure RTO and RPO."""

from ._drills import DrillPlan, DrillRun, drill_sources, plan_drill, run_drill, run_stack_drill
from ._failover import (
    DrReport,
    StepResult,
    configure_synchronous_replication,
    failback,
    failover,
    plan_failback,
    plan_failover,
    resolve_topology,
)
from ._history import DrillView, drill_history, last_drills, record_drill
from ._plan import (
    ProxyRoute,
    Step,
    Topology,
    application_name,
    failback_plan,
    failover_plan,
    switchover_problems,
)
from ._postgres import Admin, Node, NodeStatus, Replica, connect, node_status
from ._report import DrillResult, drill_data, drill_markdown, format_seconds, target_met

__all__ = [
    "Admin",
    "DrReport",
    "DrillPlan",
    "DrillResult",
    "DrillRun",
    "DrillView",
    "Node",
    "NodeStatus",
    "ProxyRoute",
    "Replica",
    "Step",
    "StepResult",
    "Topology",
    "application_name",
    "configure_synchronous_replication",
    "connect",
    "drill_data",
    "drill_history",
    "drill_markdown",
    "drill_sources",
    "failback",
    "failback_plan",
    "failover",
    "failover_plan",
    "format_seconds",
    "last_drills",
    "node_status",
    "plan_drill",
    "plan_failback",
    "plan_failover",
    "record_drill",
    "resolve_topology",
    "run_drill",
    "run_stack_drill",
    "switchover_problems",
    "target_met",
]
