"""The Prometheus Operator's objects, for a cluster whose Prometheus the operator runs.

Rendered only when the spec says so (`platform.prometheus_operator`):
- a `ServiceMonitor` per service that serves metrics (an HTTP service whose `metrics` is not null),
  on its Service's `http` port, and per datastore exporter, on its Service's `metrics` port;
- a `PodMonitor` per CloudNativePG cluster, whose instances export their own metrics;
- one `PrometheusRule` holding `rule_groups(stack)`: the very groups `render prometheus` writes
  to rules.yml, so the rules have one source whichever way Prometheus is configured.

The series get the labels the rules select on, as the rendered prometheus.yml gives them: `job` is
the service's name, or `postgres-exporter`/`redis-exporter` with a `datastore` label.
"""

from __future__ import annotations

from typing import Any

from ..spec import Stack
from ._common import Object, metadata, selector
from ._control_plane import CONTROL_PLANE_NAME, control_plane_selector
from ._exporters import (
    CLOUDNATIVE_PG,
    EXPORTER,
    METRICS_PATH,
    METRICS_PORT,
    cnpg_instances,
    datastore_mode,
    exporters,
)
from ._prometheus import (
    POSTGRES_JOB,
    REDIS_JOB,
    SHIPYARD_JOB,
    duration,
    metrics_services,
    regex_literal,
    rule_groups,
)
from ._workloads import PORT_NAME

API_VERSION = "monitoring.coreos.com/v1"
MONITORING = "monitoring"
"""The component label of the operator's objects."""


def operator_enabled(stack: Stack) -> bool:
    return stack.platform.prometheus_operator is not None


def _metadata(stack: Stack, name: str) -> dict[str, Any]:
    meta = metadata(stack, name, MONITORING)
    operator = stack.platform.prometheus_operator
    if operator is not None and operator.labels:
        meta["labels"] = {**meta["labels"], **operator.labels}
    return meta


def _labels(**values: str) -> list[dict[str, Any]]:
    """Relabelings that set fixed target labels (`job`, `datastore`, `service`)."""
    return [
        {"action": "replace", "targetLabel": label, "replacement": value} for label, value in values.items()
    ]


def _only_service(name: str) -> dict[str, Any]:
    # An Argo Rollouts preview or canary Service selects the same pods under another name; the
    # pods are scraped once, through the Service named like the service.
    return {
        "action": "keep",
        "sourceLabels": ["__meta_kubernetes_service_name"],
        "regex": regex_literal(name),
    }


def _service_monitor(
    stack: Stack, name: str, match: dict[str, str], port: str, path: str, relabelings: list[dict[str, Any]]
) -> Object:
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": _metadata(stack, name),
        "spec": {
            "selector": {"matchLabels": match},
            "namespaceSelector": {"matchNames": [stack.k8s_namespace]},
            "endpoints": [
                {
                    "port": port,
                    "path": path,
                    "interval": duration(stack.alerts.scrape_interval),
                    "relabelings": [_only_service(name), *relabelings],
                }
            ],
        },
    }


def _pod_monitor(stack: Stack, name: str) -> Object:
    return {
        "apiVersion": API_VERSION,
        "kind": "PodMonitor",
        "metadata": _metadata(stack, name),
        "spec": {
            "selector": {"matchLabels": cnpg_instances(name)},
            "namespaceSelector": {"matchNames": [stack.k8s_namespace]},
            "podMetricsEndpoints": [
                {
                    "port": METRICS_PORT,
                    "path": METRICS_PATH,
                    "interval": duration(stack.alerts.scrape_interval),
                    "relabelings": _labels(job=POSTGRES_JOB, datastore=name),
                }
            ],
        },
    }


def operator_objects(stack: Stack, rendered_services: list[str]) -> list[Object]:
    """ServiceMonitors, PodMonitors and the PrometheusRule; none without the operator."""
    if not operator_enabled(stack):
        return []
    objects: list[Object] = []
    scraped = metrics_services(stack)
    for name in rendered_services:
        service = stack.services[name]
        if name not in scraped or service.metrics is None:
            continue
        objects.append(
            _service_monitor(
                stack,
                name,
                selector(stack, name, service.role),
                PORT_NAME,
                service.metrics.path,
                _labels(job=name, service=name),
            )
        )
    for exporter in exporters(stack):
        job = POSTGRES_JOB if exporter.kind == "postgresql" else REDIS_JOB
        objects.append(
            _service_monitor(
                stack,
                exporter.name,
                selector(stack, exporter.name, EXPORTER),
                METRICS_PORT,
                METRICS_PATH,
                _labels(job=job, datastore=exporter.datastore),
            )
        )
    for name, store in sorted(stack.datastores.items()):
        if datastore_mode(store) == CLOUDNATIVE_PG:
            objects.append(_pod_monitor(stack, name))
    if stack.control_plane is not None:  # shipyard itself, as job `shipyard` (render/_control_plane.py)
        objects.append(
            _service_monitor(
                stack,
                CONTROL_PLANE_NAME,
                control_plane_selector(stack),
                PORT_NAME,
                METRICS_PATH,
                _labels(job=SHIPYARD_JOB),
            )
        )
    groups = rule_groups(stack)["groups"]
    if groups:
        objects.append(
            {
                "apiVersion": API_VERSION,
                "kind": "PrometheusRule",
                "metadata": _metadata(stack, stack.name),
                "spec": {"groups": groups},
            }
        )
    return objects
