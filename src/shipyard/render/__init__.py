"""Rendering: the spec as Kubernetes manifests, a Kustomize tree and a Helm chart, and its
monitoring as Prometheus configuration and rules, Alertmanager routing and a Grafana dashboard.

Everything here is pure until a `write`/`render_*` function writes its output (atomically, into a
directory it owns). Objects are checked against Kubernetes' strict JSON schemas before anything
is written, and the Kustomize and Helm outputs are derived from the very objects
`render_kubernetes` returns, so they cannot say something else.
"""

from ._alertmanager import alertmanager_config, secret_file
from ._argo import argo_rollouts, canary_service_name, preview_service_name
from ._argocd import ArgoApplication, ArgoTree, argocd_tree
from ._backups import KUBERNETES_TARGET, TARGET_ENV, VOLUMES_ENV, VOLUMES_ROOT, scheduled_request, volume_path
from ._ci_github import ACTIONS, WORKFLOW_PATH, BuiltImage, CiWorkflow, PinnedAction, github_workflow
from ._common import cluster_host
from ._crds import CustomResource, custom_resource, custom_resources
from ._gitops_images import ImagePin, kept_pins, pin_image, pinned, pins
from ._grafana import dashboard
from ._kubernetes import (
    KIND_ORDER,
    Manifests,
    SkippedService,
    build_manifests,
    render_kubernetes,
)
from ._monitoring import MonitoringKind, monitoring_files, monitoring_text, monitoring_tree, write_monitoring
from ._opentofu import OPENTOFU_PROVIDERS, InfraPlan, OpenTofuModule, OpenTofuTree, infra_plan, opentofu_tree
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
from ._patroni import (
    ETCD_USER,
    PATRONI_PASSWORD_ENV,
    SECRET_ROLES,
    EtcdNode,
    HaLayout,
    HaNode,
    HaSecret,
    ProxyListen,
    SecretRole,
    dynamic_config,
    etcd_argv,
    ha_datastores,
    ha_layout,
    haproxy_config,
    haproxy_listen_sections,
    listen_names,
    patroni_config,
    patroni_environment,
    patroni_yaml,
    pg_hba,
    scratch_layout,
)
from ._prometheus import BURN_TIERS, Target, rule_groups, scrape_config, seed_alerts
from ._schema import DEFAULT_KUBE_VERSION, supported_versions, validate_objects
from ._workloads import config_map_name, volume_claim_name, volume_claim_names
from ._writer import write_tree
from ._yaml import dump, dump_all

__all__ = [
    "ACTIONS",
    "BURN_TIERS",
    "DEFAULT_KUBE_VERSION",
    "ETCD_USER",
    "KIND_ORDER",
    "KUBERNETES_TARGET",
    "OPENTOFU_PROVIDERS",
    "PATRONI_PASSWORD_ENV",
    "SECRET_ROLES",
    "TARGET_ENV",
    "VOLUMES_ENV",
    "VOLUMES_ROOT",
    "WORKFLOW_PATH",
    "ArgoApplication",
    "ArgoTree",
    "BuiltImage",
    "CiWorkflow",
    "CustomResource",
    "EnvironmentOutput",
    "EtcdNode",
    "HaLayout",
    "HaNode",
    "HaSecret",
    "ImagePin",
    "InfraPlan",
    "Manifests",
    "MonitoringKind",
    "OpenTofuModule",
    "OpenTofuTree",
    "PinnedAction",
    "ProxyListen",
    "Rendered",
    "SecretRole",
    "SkippedService",
    "Target",
    "Written",
    "alertmanager_config",
    "all_manifests",
    "argo_rollouts",
    "argocd_tree",
    "build_manifests",
    "canary_service_name",
    "cluster_host",
    "config_map_name",
    "custom_resource",
    "custom_resources",
    "dashboard",
    "dump",
    "dump_all",
    "dynamic_config",
    "etcd_argv",
    "file_name",
    "github_workflow",
    "ha_datastores",
    "ha_layout",
    "haproxy_config",
    "haproxy_listen_sections",
    "helm_tree",
    "infra_plan",
    "kept_pins",
    "kubernetes_tree",
    "kustomize_tree",
    "listen_names",
    "manifests_text",
    "monitoring_files",
    "monitoring_text",
    "monitoring_tree",
    "opentofu_tree",
    "patroni_config",
    "patroni_environment",
    "patroni_yaml",
    "pg_hba",
    "pin_image",
    "pinned",
    "pins",
    "preview_service_name",
    "render_helm",
    "render_kubernetes",
    "render_kustomize",
    "rule_groups",
    "scheduled_request",
    "scrape_config",
    "scratch_layout",
    "secret_file",
    "seed_alerts",
    "supported_versions",
    "validate_objects",
    "volume_claim_name",
    "volume_claim_names",
    "volume_path",
    "write_kubernetes",
    "write_monitoring",
    "write_tree",
]
