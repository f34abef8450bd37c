"""The datastores' Prometheus exporters: postgres_exporter and redis_exporter beside each datastore.

Each is a Deployment of one pod and a ClusterIP Service whose port is named `metrics`, so the
scrape config (`<name>-exporter.<namespace>.svc:<port>`) and a ServiceMonitor reach exactly what is
rendered here. The exporter connects to the datastore's in-cluster host (`cluster_host`) with the
datastore's own secret references, and NetworkPolicies admit exactly that: the exporter to its
datastore's port, and Prometheus' namespace to the exporter's metrics port.

A CloudNativePG cluster exports its own metrics (port 9187 of each instance, scraped through a
PodMonitor), so it gets no exporter. An external datastore (RDS, ElastiCache) gets one: its metrics
are then scraped like an in-cluster one's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..spec import Postgres, Redis, Stack
from ._common import (
    Object,
    cluster_host,
    container_security,
    labels,
    metadata,
    pod_security,
    resources,
    selector,
)
from ._datastores import CACHE, PRIMARY
from ._env import SecretUses, postgres_password
from ._network import NAMESPACE_NAME_LABEL

POSTGRES_EXPORTER_IMAGE = "quay.io/prometheuscommunity/postgres-exporter:v0.16.0"
REDIS_EXPORTER_IMAGE = "oliver006/redis_exporter:v1.66.0"
POSTGRES_EXPORTER_PORT = 9187
REDIS_EXPORTER_PORT = 9121
EXPORTER = "exporter"
"""The component label of an exporter's objects."""
METRICS_PORT = "metrics"
METRICS_PATH = "/metrics"
# Both images run a static binary as `nobody`, named rather than numbered in the image; the
# kubelet refuses a named USER under runAsNonRoot, so the uid is given.
EXPORTER_UID = 65534
DEFAULT_PROMETHEUS_NAMESPACE = "monitoring"
_PROMETHEUS_COMPONENTS = ("kube-prometheus-stack", "prometheus")
CLOUDNATIVE_PG = "cloudnative-pg"
EXTERNAL = "external"
CNPG_INSTANCES = {"cnpg.io/podRole": "instance"}
"""CloudNativePG's label of a Cluster's instance pods (its PgBouncer pods are `pooler`), beside
`cnpg.io/cluster: <name>`; both export on a port named `metrics`, only the instances PostgreSQL's."""

Datastore = Postgres | Redis


@dataclass(frozen=True)
class ExporterSpec:
    """One rendered exporter: for which datastore, its objects' name, image and port."""

    datastore: str
    kind: str
    """`postgresql` or `redis`."""
    name: str
    image: str
    port: int


def exporter_name(datastore: str) -> str:
    return f"{datastore}-exporter"


def datastore_mode(store: Datastore) -> str:
    """`statefulset`, `cloudnative-pg` (PostgreSQL only) or `external`."""
    return store.mode


def exporters(stack: Stack) -> list[ExporterSpec]:
    """The exporters rendered for the stack, by datastore name: one per datastore whose
    `exporter` is not null, except CloudNativePG clusters, which export their own metrics."""
    found = []
    for name, store in sorted(stack.datastores.items()):
        exporter = store.kubernetes_exporter
        if exporter is None:
            continue
        if isinstance(store, Postgres):
            image, port = POSTGRES_EXPORTER_IMAGE, POSTGRES_EXPORTER_PORT
        else:
            image, port = REDIS_EXPORTER_IMAGE, REDIS_EXPORTER_PORT
        found.append(ExporterSpec(name, store.kind, exporter_name(name), exporter.image or image, port))
    return found


def prometheus_namespace(stack: Stack) -> str:
    """The namespace Prometheus scrapes from: the operator's, else the `kube-prometheus-stack` or
    `prometheus` component's, else `monitoring`."""
    operator = stack.platform.prometheus_operator
    if operator is not None and operator.namespace:
        return operator.namespace
    for component in _PROMETHEUS_COMPONENTS:
        found = stack.platform.components.get(component)
        if found is not None and found.namespace:
            return found.namespace
    return DEFAULT_PROMETHEUS_NAMESPACE


def _postgres_env(stack: Stack, name: str, store: Postgres, uses: SecretUses) -> list[dict[str, Any]]:
    # In the cluster the official image serves no TLS; a managed database says what it needs.
    sslmode = store.external.sslmode if store.external is not None and store.mode == EXTERNAL else "disable"
    # `direct`: the exporter watches PostgreSQL itself, never a connection pooler in front of it.
    host = cluster_host(stack, name, direct=True)
    return [
        {"name": "DATA_SOURCE_URI", "value": f"{host}:{store.port}/{store.database}?sslmode={sslmode}"},
        {"name": "DATA_SOURCE_USER", "value": store.user},
        {"name": "DATA_SOURCE_PASS", "valueFrom": uses.ref(postgres_password(name, store))},
    ]


def _redis_env(stack: Stack, name: str, store: Redis, uses: SecretUses) -> list[dict[str, Any]]:
    tls = store.mode == EXTERNAL and store.external is not None and store.external.tls
    scheme = "rediss" if tls else "redis"
    env: list[dict[str, Any]] = [
        {"name": "REDIS_ADDR", "value": f"{scheme}://{cluster_host(stack, name)}:{store.port}"}
    ]
    if store.password is not None:
        env.append({"name": "REDIS_PASSWORD", "valueFrom": uses.ref(store.password)})
    return env


def _probe(path: str, period: int, initial_delay: int) -> dict[str, Any]:
    # Probes ask the exporter's own HTTP server, never the datastore: a datastore that is down
    # shows as pg_up/redis_up 0, not as an exporter restarted over and over.
    return {
        "httpGet": {"path": path, "port": METRICS_PORT},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }


def _deployment(stack: Stack, spec: ExporterSpec, store: Datastore, env: list[dict[str, Any]]) -> Object:
    exporter = store.kubernetes_exporter
    assert exporter is not None  # exporters() keeps only datastores with one
    # postgres_exporter serves a landing page at `/`; redis_exporter has `/health`.
    health = "/" if isinstance(store, Postgres) else "/health"
    amounts = resources(exporter.resources)
    container: dict[str, Any] = {
        "name": EXPORTER,
        "image": spec.image,
        "env": env,
        "ports": [{"name": METRICS_PORT, "containerPort": spec.port, "protocol": "TCP"}],
        **({"resources": amounts} if amounts else {}),
        "securityContext": container_security(),
        "livenessProbe": _probe(health, period=20, initial_delay=10),
        "readinessProbe": _probe(health, period=10, initial_delay=5),
    }
    pod = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security(EXPORTER_UID),
        "containers": [container],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(stack, spec.name, EXPORTER),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(stack, spec.name, EXPORTER)},
            "template": {"metadata": {"labels": labels(stack, spec.name, EXPORTER)}, "spec": pod},
        },
    }


def _service(stack: Stack, spec: ExporterSpec) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(stack, spec.name, EXPORTER),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(stack, spec.name, EXPORTER),
            "ports": [
                {"name": METRICS_PORT, "port": spec.port, "targetPort": METRICS_PORT, "protocol": "TCP"}
            ],
        },
    }


def _policies(stack: Stack, spec: ExporterSpec, store: Datastore) -> list[Object]:
    """Prometheus' namespace may scrape the exporter; the exporter may reach its datastore.

    NetworkPolicies add up, so the datastore's rule is a policy of its own beside the one that
    admits its services: nothing else about the datastore's policy changes.
    """
    scrapers = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: prometheus_namespace(stack)}}}
    policies: list[Object] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(stack, f"allow-{spec.name}", EXPORTER),
            "spec": {
                "podSelector": {"matchLabels": selector(stack, spec.name, EXPORTER)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [scrapers], "ports": [{"port": METRICS_PORT, "protocol": "TCP"}]}],
            },
        }
    ]
    if datastore_mode(store) == EXTERNAL:
        return policies  # no pod of this cluster to admit the exporter to
    component = PRIMARY if isinstance(store, Postgres) else CACHE
    exporter_pods = {"podSelector": {"matchLabels": selector(stack, spec.name, EXPORTER)}}
    policies.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(stack, f"allow-{spec.datastore}-from-{EXPORTER}", component),
            "spec": {
                "podSelector": {"matchLabels": selector(stack, spec.datastore, component)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [exporter_pods], "ports": [{"port": store.port, "protocol": "TCP"}]}],
            },
        }
    )
    return policies


def cnpg_instances(name: str) -> dict[str, str]:
    """The labels of CloudNativePG Cluster `name`'s instance pods."""
    return {"cnpg.io/cluster": name, **CNPG_INSTANCES}


def _cnpg_metrics_policy(stack: Stack, name: str) -> Object:
    """Prometheus' namespace may scrape a CloudNativePG Cluster's instances (their own exporter)."""
    scrapers = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: prometheus_namespace(stack)}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(stack, f"allow-{name}-metrics", PRIMARY),
        "spec": {
            "podSelector": {"matchLabels": cnpg_instances(name)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [scrapers], "ports": [{"port": POSTGRES_EXPORTER_PORT, "protocol": "TCP"}]}],
        },
    }


def exporter_objects(stack: Stack, uses: SecretUses) -> list[Object]:
    """Every exporter's Deployment, Service and NetworkPolicies, and the policies that let
    Prometheus scrape CloudNativePG's instances."""
    objects: list[Object] = [
        _cnpg_metrics_policy(stack, name)
        for name, store in sorted(stack.datastores.items())
        if datastore_mode(store) == CLOUDNATIVE_PG
    ]
    for spec in exporters(stack):
        store = stack.datastores[spec.datastore]
        env = (
            _postgres_env(stack, spec.datastore, store, uses)
            if isinstance(store, Postgres)
            else _redis_env(stack, spec.datastore, store, uses)
        )
        objects += [
            _deployment(stack, spec, store, env),
            _service(stack, spec),
            *_policies(stack, spec, store),
        ]
    return objects
