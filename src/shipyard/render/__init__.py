"""Rendering: the spec as Kubernetes manifests, a Kustomize tree and a Helm chart, and its
monitoring as Prometheus configuration and rules, Alertmanager routing and a Grafana dashboard.

Everything here is pure until a `write`/`render_*` function writes its output (atomically, into a
directory it owns). Objects are checked against Kubernetes' strict JSON schemas before anything
is written, and the Kustomize and Helm outputs are derived from the very objects
`render_kubernetes` returns, so they cannot say something else.
"""

from ._alertmanager import alertmanager_config, secret_file
from ._argo import argo_rollouts, canary_service_name, preview_service_name
from ._backups import scheduled_request
from ._grafana import dashboard
from ._kubernetes import (
    KIND_ORDER,
    Manifests,
    SkippedService,
    build_manifests,
    render_kubernetes,
)
from ._monitoring import MonitoringKind, monitoring_files, monitoring_text, monitoring_tree, write_monitoring
from ._outputs import (
    EnvironmentOutput,
    Rendered,
    Written,
    all_manifests,
    file_name,
    helm_tree,
    kubernetes_tree,
    kustomize_tree,
    manifests_text,
    render_helm,
    render_kustomize,
    write_kubernetes,
)
from ._prometheus import BURN_TIERS, Target, rule_groups, scrape_config, seed_alerts
from ._schema import DEFAULT_KUBE_VERSION, supported_versions, validate_objects
from ._workloads import config_map_name, volume_claim_name
from ._writer import write_tree
from ._yaml import dump, dump_all

__all__ = [
    "BURN_TIERS",
    "DEFAULT_KUBE_VERSION",
    "KIND_ORDER",
    "EnvironmentOutput",
    "Manifests",
    "MonitoringKind",
    "Rendered",
    "SkippedService",
    "Target",
    "Written",
    "alertmanager_config",
    "all_manifests",
    "argo_rollouts",
    "build_manifests",
    "canary_service_name",
    "config_map_name",
    "dashboard",
    "dump",
    "dump_all",
    "file_name",
    "helm_tree",
    "kubernetes_tree",
    "kustomize_tree",
    "manifests_text",
    "monitoring_files",
    "monitoring_text",
    "monitoring_tree",
    "preview_service_name",
    "render_helm",
    "render_kubernetes",
    "render_kustomize",
    "rule_groups",
    "scheduled_request",
    "scrape_config",
    "secret_file",
    "seed_alerts",
    "supported_versions",
    "validate_objects",
    "volume_claim_name",
    "write_kubernetes",
    "write_monitoring",
    "write_tree",
]
