"""The platform a stack assumes, as Argo CD Applications of the upstream Helm charts.

Which add-ons: the `platform.components` that name one (`ingress-nginx`, `traefik`, `prometheus`
or `kube-prometheus-stack`, `grafana`, `loki`, `cert-manager`, `external-secrets`,
`argo-rollouts`, `cloudnative-pg`), sized from the component (replicas, resources, storage,
retention), and the ones the rendered stack cannot run without even when no component names them:
cert-manager for TLS ingresses or declared issuers, External Secrets for `secrets.store`, Argo
Rollouts when workloads are Rollouts, CloudNativePG for `mode: cloudnative-pg` datastores. Those
are installed with the chart's defaults: list them under `platform.components` to size them (and to
count them in `capacity`).

Chart versions are pinned here, not floated: a sync must install what was reviewed. Versions as
published in late 2025; raise them here, one reviewed change at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RenderError
from ..spec import PlatformComponent, Stack, byte_count
from ._common import Object, resources


@dataclass(frozen=True)
class Chart:
    """An upstream Helm chart, pinned."""

    repo: str
    name: str
    version: str
    namespace: str
    """Where it is installed unless the component names another namespace."""
    cluster_kinds: tuple[tuple[str, str], ...]
    """The cluster-scoped (group, kind)s the chart creates: the platform AppProject allows these."""


_RBAC = (("rbac.authorization.k8s.io", "ClusterRole"), ("rbac.authorization.k8s.io", "ClusterRoleBinding"))
_CRDS = (("apiextensions.k8s.io", "CustomResourceDefinition"),)
_WEBHOOKS = (
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
)
_INGRESS_CLASS = (("networking.k8s.io", "IngressClass"),)

CHARTS: dict[str, Chart] = {
    "ingress-nginx": Chart(
        "https://kubernetes.github.io/ingress-nginx",
        "ingress-nginx",
        "4.14.0",
        "ingress-nginx",
        _RBAC + _WEBHOOKS + _INGRESS_CLASS,
    ),
    "traefik": Chart(
        "https://traefik.github.io/charts", "traefik", "37.3.0", "traefik", _RBAC + _CRDS + _INGRESS_CLASS
    ),
    "cert-manager": Chart(
        "https://charts.jetstack.io", "cert-manager", "v1.19.1", "cert-manager", _RBAC + _CRDS + _WEBHOOKS
    ),
    "external-secrets": Chart(
        "https://charts.external-secrets.io",
        "external-secrets",
        "1.1.1",
        "external-secrets",
        _RBAC + _CRDS + _WEBHOOKS,
    ),
    "argo-rollouts": Chart(
        "https://argoproj.github.io/argo-helm", "argo-rollouts", "2.40.3", "argo-rollouts", _RBAC + _CRDS
    ),
    "kube-prometheus-stack": Chart(
        "https://prometheus-community.github.io/helm-charts",
        "kube-prometheus-stack",
        "79.9.0",
        "monitoring",
        _RBAC + _CRDS + _WEBHOOKS,
    ),
    "grafana": Chart("https://grafana.github.io/helm-charts", "grafana", "10.1.2", "monitoring", _RBAC),
    "loki": Chart("https://grafana.github.io/helm-charts", "loki", "6.45.1", "monitoring", _RBAC),
    "cloudnative-pg": Chart(
        "https://cloudnative-pg.github.io/charts",
        "cloudnative-pg",
        "0.26.1",
        "cnpg-system",
        _RBAC + _CRDS + _WEBHOOKS,
    ),
}
"""Each add-on shipyard installs, by its Application's name."""

COMPONENT_ADDON = {name: name for name in CHARTS} | {"prometheus": "kube-prometheus-stack"}
"""`platform.components` keys that name an add-on, and the add-on (chart) each one is."""

NOT_ADDONS = {"argocd": "Argo CD applies this tree: install it first (it cannot install itself here)"}

CRD_PROVIDERS = (
    "cert-manager",
    "external-secrets",
    "argo-rollouts",
    "kube-prometheus-stack",
    "cloudnative-pg",
)
"""Add-ons whose CRDs other objects need: synced in an earlier wave than anything else."""


@dataclass(frozen=True)
class Addon:
    """One add-on as it will be installed."""

    name: str
    chart: Chart
    namespace: str
    values: dict[str, Any]
    reason: str
    """Why it is installed: the component naming it, or what in the stack needs it."""


@dataclass
class PlatformPlan:
    addons: list[Addon] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def named(self, name: str) -> Addon | None:
        return next((a for a in self.addons if a.name == name), None)


def duration_text(value: int) -> str:
    """Seconds as Prometheus/Loki spell a duration: whole days, hours or minutes when exact."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}s"


def _sized(values: dict[str, Any], key: str, component: PlatformComponent | None) -> None:
    if component is not None and resources(component.resources):
        values[key] = resources(component.resources)


def _replicas(component: PlatformComponent | None) -> int:
    return component.replicas if component is not None else 1


def _prometheus_values(stack: Stack, component: PlatformComponent | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": _replicas(component),
        # Select every ServiceMonitor/PodMonitor/PrometheusRule, not only those labelled with this
        # Helm release: the stack's own monitors (render kubernetes) carry no such label.
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "ruleSelectorNilUsesHelmValues": False,
    }
    _sized(spec, "resources", component)
    if component is not None and component.retention is not None:
        spec["retention"] = duration_text(component.retention)
    if component is not None and component.storage is not None:
        size = byte_count(component.storage)
        # Prometheus deletes the oldest blocks past retentionSize; 85% leaves the WAL and
        # compaction room so a full volume never stops ingestion.
        spec["retentionSize"] = f"{max(1, size * 85 // 100 // 2**30)}GB"
        spec["storageSpec"] = {
            "volumeClaimTemplate": {
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": component.storage}},
                }
            }
        }
    return {"crds": {"enabled": True}, "prometheus": {"prometheusSpec": spec}}


def _grafana_values(component: PlatformComponent, loki: Addon | None, *, in_stack: bool) -> dict[str, Any]:
    """Grafana's values: as kube-prometheus-stack's subchart (`in_stack`, which already provisions
    its Prometheus) or as the grafana chart; either way with Loki as a data source when installed."""
    values: dict[str, Any] = {"replicas": component.replicas}
    _sized(values, "resources", component)
    if component.storage is not None:
        values["persistence"] = {"enabled": True, "size": component.storage}
    if loki is not None:
        source = {
            "name": "Loki",
            "type": "loki",
            "access": "proxy",
            "url": f"http://loki.{loki.namespace}.svc.cluster.local:3100",
        }
        if in_stack:
            values["additionalDataSources"] = [source]
        else:
            values["datasources"] = {"datasources.yaml": {"apiVersion": 1, "datasources": [source]}}
    return values


def _loki_values(name: str, component: PlatformComponent | None) -> dict[str, Any]:
    replicas = _replicas(component)
    if replicas != 1:
        raise RenderError(
            f"platform.components.{name}.replicas: {replicas}: shipyard installs Loki as one binary on"
            " its own volume (filesystem storage), which runs as one replica; set replicas: 1"
        )
    loki: dict[str, Any] = {
        "auth_enabled": False,
        "commonConfig": {"replication_factor": 1},
        "storage": {"type": "filesystem"},
        "schemaConfig": {
            "configs": [
                {
                    "from": "2024-04-01",
                    "store": "tsdb",
                    "object_store": "filesystem",
                    "schema": "v13",
                    "index": {"prefix": "loki_index_", "period": "24h"},
                }
            ]
        },
    }
    if component is not None and component.retention is not None:
        loki["limits_config"] = {"retention_period": duration_text(component.retention)}
        loki["compactor"] = {"retention_enabled": True, "delete_request_store": "filesystem"}
    single: dict[str, Any] = {"replicas": 1}
    _sized(single, "resources", component)
    if component is not None and component.storage is not None:
        single["persistence"] = {"enabled": True, "size": component.storage}
    return {
        "deploymentMode": "SingleBinary",
        "loki": loki,
        "singleBinary": single,
        # The scalable targets and caches of the chart's default mode: none in one-binary mode.
        "read": {"replicas": 0},
        "write": {"replicas": 0},
        "backend": {"replicas": 0},
        "chunksCache": {"enabled": False},
        "resultsCache": {"enabled": False},
    }


def _values(addon: str, component: PlatformComponent | None) -> dict[str, Any]:
    """The chart values of one add-on (besides Prometheus, Grafana and Loki, done apart)."""
    replicas = _replicas(component)
    values: dict[str, Any]
    if addon == "ingress-nginx":
        controller: dict[str, Any] = {"replicaCount": replicas, "metrics": {"enabled": True}}
        _sized(controller, "resources", component)
        values = {"controller": controller}
    elif addon == "traefik":
        values = {"deployment": {"replicas": replicas}}
        _sized(values, "resources", component)
    elif addon == "cert-manager":
        # crds.keep: uninstalling the chart must not delete every Certificate in the cluster.
        values = {"crds": {"enabled": True, "keep": True}, "replicaCount": replicas}
        _sized(values, "resources", component)
    elif addon == "external-secrets":
        values = {"installCRDs": True, "replicaCount": replicas}
        _sized(values, "resources", component)
    elif addon == "argo-rollouts":
        controller = {"replicas": replicas}
        _sized(controller, "resources", component)
        values = {"installCRDs": True, "keepCRDs": True, "controller": controller}
    elif addon == "cloudnative-pg":
        values = {"crds": {"create": True}, "replicaCount": replicas}
        _sized(values, "resources", component)
    else:  # pragma: no cover - every chart has a branch here or in plan_platform
        raise AssertionError(addon)
    return values


def _implied(stacks: list[Stack], argo_rollouts: bool) -> dict[str, str]:
    """Add-ons the rendered stack needs whether or not a component names them, and why."""
    needed: dict[str, str] = {}
    for stack in stacks:
        tls = [s for s in stack.services.values() if s.ingress is not None and s.ingress.tls]
        if tls or (stack.gitops is not None and stack.gitops.issuers):
            needed.setdefault("cert-manager", "TLS ingresses get their certificates from a ClusterIssuer")
        if stack.secrets.store is not None:
            needed.setdefault("external-secrets", f"secrets come from the {stack.secrets.store.kind}")
        if argo_rollouts and any(s.image for s in stack.services.values()):
            needed.setdefault("argo-rollouts", "the workloads are Argo Rollouts")
        if any(getattr(d, "mode", None) == "cloudnative-pg" for d in stack.datastores.values()):
            needed.setdefault("cloudnative-pg", "a datastore is run by CloudNativePG")
        if stack.platform.prometheus_operator is not None:
            needed.setdefault("kube-prometheus-stack", "the stack renders Prometheus Operator monitors")
    return needed


def plan_platform(stacks: list[Stack], sizing: Stack) -> PlatformPlan:
    """The add-ons of the cluster that runs `stacks`, sized from `sizing`'s components."""
    plan = PlatformPlan()
    components = sizing.platform.components
    chosen: dict[str, tuple[str | None, str]] = {}  # add-on -> (component key, reason)
    for key in components:
        addon = COMPONENT_ADDON.get(key)
        if addon is None:
            why = NOT_ADDONS.get(key, "not an add-on shipyard knows; install it yourself")
            plan.notes.append(f"platform.components.{key}: not installed: {why}")
        elif addon not in chosen:
            chosen[addon] = (key, f"platform.components.{key}")
    gitops = sizing.gitops
    for addon, why in _implied(stacks, gitops is None or gitops.argo_rollouts).items():
        if addon not in chosen:
            chosen[addon] = (None, why)
            plan.notes.append(
                f"{addon}: installed with its chart's defaults ({why}); name it under"
                " platform.components to size it and count it in `capacity`"
            )
    grafana_key = chosen.pop("grafana", None)
    loki_key = chosen.pop("loki", None)
    loki: Addon | None = None
    if loki_key is not None:
        component = components.get(loki_key[0]) if loki_key[0] else None
        loki = Addon(
            "loki",
            CHARTS["loki"],
            _namespace("loki", component),
            _loki_values(loki_key[0] or "loki", component),
            loki_key[1],
        )
    for addon, (named_by, reason) in chosen.items():
        component = components.get(named_by) if named_by else None
        if addon == "kube-prometheus-stack":
            values = _prometheus_values(sizing, component)
            grafana = components.get(grafana_key[0]) if grafana_key and grafana_key[0] else None
            if grafana is not None:
                # The chart's own Grafana (already wired to this Prometheus), sized as the component.
                values["grafana"] = {"enabled": True, **_grafana_values(grafana, loki, in_stack=True)}
                grafana_key = None
            else:
                values["grafana"] = {"enabled": False}
        else:
            values = _values(addon, component)
        if addon == "argo-rollouts" and sizing.platform.ingress_controller == "traefik":
            # Argo Rollouts' controller looks for TraefikServices in the traefik.containo.us group
            # unless told otherwise (before 1.10); Traefik 3 serves them only as traefik.io.
            values["controller"]["extraArgs"] = [
                "--traefik-api-group=traefik.io",
                "--traefik-api-version=traefik.io/v1alpha1",
            ]
        plan.addons.append(Addon(addon, CHARTS[addon], _namespace(addon, component), values, reason))
    if grafana_key is not None and grafana_key[0]:
        component = components[grafana_key[0]]
        plan.addons.append(
            Addon(
                "grafana",
                CHARTS["grafana"],
                _namespace("grafana", component),
                _grafana_values(component, loki, in_stack=False),
                grafana_key[1],
            )
        )
    if loki is not None:
        plan.addons.append(loki)
    plan.addons.sort(key=lambda a: (a.name not in CRD_PROVIDERS, a.name))
    return plan


def _namespace(addon: str, component: PlatformComponent | None) -> str:
    if component is not None and component.namespace:
        return component.namespace
    return CHARTS[addon].namespace


def cluster_issuers(stacks: list[Stack], ingress_class: str) -> tuple[list[Object], list[str]]:
    """The ClusterIssuers `gitops.issuers` declares, and notes on issuers ingresses name but the
    spec does not declare (they must exist in the cluster already)."""
    declared: dict[str, Any] = {}
    for stack in stacks:
        if stack.gitops is not None:
            declared.update(stack.gitops.issuers)
    objects = [
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "ClusterIssuer",
            "metadata": {"name": name},
            "spec": {
                "acme": {
                    "email": issuer.email,
                    "server": issuer.server,
                    # The ACME account key cert-manager creates and keeps: no secret in Git.
                    "privateKeySecretRef": {"name": f"{name}-account-key"},
                    "solvers": [{"http01": {"ingress": {"ingressClassName": ingress_class}}}],
                }
            },
        }
        for name, issuer in sorted(declared.items())
    ]
    notes = []
    used = sorted(
        {
            s.ingress.cluster_issuer
            for stack in stacks
            for s in stack.services.values()
            if s.ingress is not None and s.ingress.tls
        }
    )
    for name in used:
        if name not in declared:
            notes.append(
                f"ClusterIssuer {name!r}: named by an ingress but not declared under gitops.issuers;"
                " it must already exist in the cluster"
            )
    return objects, notes


def secret_stores(stacks: list[Stack]) -> tuple[list[Object], list[str]]:
    """The External Secrets store of `secrets.store` when it gives its provider: one
    ClusterSecretStore, or a SecretStore in each environment's namespace."""
    objects: list[Object] = []
    notes: list[str] = []
    seen: set[tuple[str, str]] = set()
    for stack in stacks:
        store = stack.secrets.store
        if store is None:
            continue
        if store.provider is None:
            if (store.kind, store.name) not in seen:
                notes.append(
                    f"{store.kind} {store.name!r}: secrets.store gives no provider; it must already exist"
                )
            seen.add((store.kind, store.name))
            continue
        metadata: dict[str, Any] = {"name": store.name}
        if store.kind == "SecretStore":
            metadata["namespace"] = stack.k8s_namespace
        key = (store.kind, f"{metadata.get('namespace', '')}/{store.name}")
        if key in seen:
            continue
        seen.add(key)
        objects.append(
            {
                "apiVersion": "external-secrets.io/v1",
                "kind": store.kind,
                "metadata": metadata,
                "spec": {"provider": store.provider, "refreshInterval": store.refresh},
            }
        )
    return objects, notes
