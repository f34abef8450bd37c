"""Issue 13: ServiceMonitors, PodMonitors and a PrometheusRule when the Prometheus Operator runs
the cluster's Prometheus; the rules are `render prometheus`'s own groups."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.errors import SpecError
from shipyard.render import build_manifests, rule_groups
from shipyard.spec import Stack
from unit.render.render_helpers import by_kind, spec_from

STACK = """
name: shop
services:
  api: {role: api, image: "shop/api:1", port: 8000, depends_on: [db]}
  web: {role: web, image: "shop/web:1", port: 3000, metrics: {path: /internal/metrics}}
  admin: {role: web, image: "shop/admin:1", port: 4000, metrics: ~}
  worker: {role: worker, image: "shop/api:1"}
datastores:
  db: {kind: postgresql, port: 5433, storage: {size: 10Gi}}
  events: {kind: postgresql, mode: cloudnative-pg, storage: {size: 10Gi}}
  cache: {kind: redis}
platform:
  prometheus_operator: {namespace: observability, labels: {release: kps}}
alerts:
  scrape_interval: 30s
  slos:
    - {service: api, objective: 99.9}
environments:
  production: {}
"""

MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


def _stack(text: str = STACK) -> Stack:
    return spec_from(text).stack("production")


def _objects(stack: Stack, *, argo: bool = False) -> list[dict[str, Any]]:
    return list(build_manifests(stack, argo=argo).objects)


def test_nothing_of_the_operator_without_it() -> None:
    text = STACK.replace(
        "platform:\n  prometheus_operator: {namespace: observability, labels: {release: kps}}\n", ""
    )
    objects = _objects(_stack(text))
    assert not [o for o in objects if o["kind"] in MONITORING_KINDS]


def test_service_monitors_for_services_with_metrics_and_exporters() -> None:
    monitors = by_kind(_objects(_stack()), "ServiceMonitor")
    assert sorted(monitors) == ["api", "cache-exporter", "db-exporter", "web"]
    web = monitors["web"]
    assert web["metadata"]["labels"]["release"] == "kps"
    assert web["metadata"]["namespace"] == "shop-production"
    spec = web["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["shop-production"]}
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/name"] == "web"
    [endpoint] = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/internal/metrics", "30s")
    assert {"action": "keep", "sourceLabels": ["__meta_kubernetes_service_name"], "regex": "web"} in endpoint[
        "relabelings"
    ]
    [db] = monitors["db-exporter"]["spec"]["endpoints"]
    assert db["port"] == "metrics"
    # The series are labelled as the rendered prometheus.yml labels them: the rules select on it.
    assert {"action": "replace", "targetLabel": "job", "replacement": "postgres-exporter"} in db[
        "relabelings"
    ]
    assert {"action": "replace", "targetLabel": "datastore", "replacement": "db"} in db["relabelings"]


def test_pod_monitor_for_cloudnative_pg() -> None:
    [(name, monitor)] = by_kind(_objects(_stack()), "PodMonitor").items()
    assert name == "events"
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"cnpg.io/cluster": "events", "cnpg.io/podRole": "instance"}
    }
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert {"action": "replace", "targetLabel": "datastore", "replacement": "events"} in endpoint[
        "relabelings"
    ]


def test_prometheus_rule_holds_the_rendered_rule_groups() -> None:
    stack = _stack()
    [rule] = by_kind(_objects(stack), "PrometheusRule").values()
    assert rule["spec"]["groups"] == rule_groups(stack)["groups"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    alerts = {r.get("alert") for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"DatabaseDown", "ErrorBudgetBurn", "HighErrorRate"} <= alerts


def test_exporter_policies_admit_the_operator_namespace() -> None:
    policies = by_kind(_objects(_stack()), "NetworkPolicy")
    for name in ("allow-db-exporter", "allow-cache-exporter", "allow-events-metrics"):
        [rule] = policies[name]["spec"]["ingress"]
        assert rule["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}
        ]


def test_argo_canary_services_are_not_scraped_twice() -> None:
    """With Argo Rollouts the canary Service selects the same pods: each ServiceMonitor keeps only
    the Service named like the service (and all of it validates against the CRDs)."""
    routed = STACK.replace(
        "port: 8000, depends_on: [db]}", "port: 8000, depends_on: [db], ingress: {host: api.shop.example}}"
    )
    objects = _objects(_stack(routed), argo=True)
    services = by_kind(objects, "Service")
    assert "api-canary" in services
    assert services["api-canary"]["spec"]["selector"] == services["api"]["spec"]["selector"]
    assert sorted(by_kind(objects, "ServiceMonitor")) == ["api", "cache-exporter", "db-exporter", "web"]


@pytest.mark.parametrize(("value", "rendered"), [("true", True), ("false", False)])
def test_boolean_switch(value: str, rendered: bool) -> None:
    text = STACK.replace("{namespace: observability, labels: {release: kps}}", value)
    objects = _objects(_stack(text))
    assert bool(by_kind(objects, "PrometheusRule")) is rendered


def test_unknown_operator_setting_is_refused() -> None:
    with pytest.raises(SpecError, match="namespce"):
        _stack(STACK.replace("{namespace: observability,", "{namespce: observability,"))
