"""Disaster recovery: failover and failback of PostgreSQL, automatic failover through Patroni
(`ha: patroni`: etcd, Patroni and HAProxy supervised on this host), and drills that measure RTO
and RPO."""

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
from ._failover_drill import (
    FailoverExperiment,
    FailoverMeasurement,
    ScratchCluster,
    measure_automatic_failover,
    plan_failover_drill,
)
from ._ha import (
    HaCluster,
    HaPasswords,
    HaStatus,
    ProcessStatus,
    WatcherSpec,
    is_here,
    reference_variables,
)
from ._history import DrillView, drill_history, last_drills, record_drill
from ._patroni import ClusterView, Member, PatroniClient
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
    "ClusterView",
    "DrReport",
    "DrillPlan",
    "DrillResult",
    "DrillRun",
    "DrillView",
    "FailoverExperiment",
    "FailoverMeasurement",
    "HaCluster",
    "HaPasswords",
    "HaStatus",
    "Member",
    "Node",
    "NodeStatus",
    "PatroniClient",
    "ProcessStatus",
    "ProxyRoute",
    "Replica",
    "ScratchCluster",
    "Step",
    "StepResult",
    "Topology",
    "WatcherSpec",
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
    "is_here",
    "last_drills",
    "measure_automatic_failover",
    "node_status",
    "plan_drill",
    "plan_failback",
    "plan_failover",
    "plan_failover_drill",
    "record_drill",
    "reference_variables",
    "resolve_topology",
    "run_drill",
    "run_stack_drill",
    "switchover_problems",
    "target_met",
]
