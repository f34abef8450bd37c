"""Issue 13: postgres_exporter and redis_exporter rendered beside their datastores, and a scrape
config for `--target kubernetes` that points only at what is rendered (shipyard through its
Service, never 127.0.0.1)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shipyard.render import build_manifests, scrape_config
from shipyard.spec import Stack, load_spec
from unit.render.render_helpers import ROOT, by_kind, spec_from

EXAMPLES = sorted(ROOT.glob("examples/*/shipyard.yaml"))

STACK = """
name: shop
services:
  api: {role: api, image: "shop/api:1", port: 8000, depends_on: [db, cache]}
  web: {role: web, image: "shop/web:1", port: 3000, metrics: {path: /internal/metrics}}
  admin: {role: web, image: "shop/admin:1", port: 4000, metrics: ~}
datastores:
  db: {kind: postgresql, storage: {size: 10Gi}, database: shop, user: shop}
  cache: {kind: redis, password: {secretRef: cache-auth/password}}
platform:
  components:
    prometheus: {namespace: observability}
control_plane: {}
environments:
  production: {}
"""


def _stack(text: str = STACK, env: str = "production") -> Stack:
    return spec_from(text).stack(env)


def _objects(stack: Stack) -> list[dict[str, Any]]:
    return list(build_manifests(stack).objects)


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def _jobs(stack: Stack) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in scrape_config(stack, "kubernetes")["scrape_configs"]}


# --- the defect: targets that are never rendered --------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.parent.name)
def test_every_static_scrape_target_is_a_rendered_service(example: Path) -> None:
    """Defect: the scrape config targeted `<name>-exporter` Services nothing rendered (DatabaseDown
    fired on a fresh cluster), and shipyard at 127.0.0.1:8080."""
    spec = load_spec(example)
    for env in spec.environments:
        stack = spec.stack(env)
        services = by_kind(_objects(stack), "Service")
        namespace = stack.k8s_namespace
        for job in scrape_config(stack, "kubernetes")["scrape_configs"]:
            for group in job.get("static_configs", []):
                for target in group["targets"]:
                    host, port = target.rsplit(":", 1)
                    assert not host.startswith("127."), f"{env}: job {job['job_name']} scrapes {target}"
                    name, ns, svc = host.split(".")
                    assert (ns, svc) == (namespace, "svc"), target
                    if job["job_name"] == "shipyard":
                        continue  # shipyard's own Service, where `shipyard serve` runs
                    assert name in services, f"{env}: {target} is not a rendered Service"
                    ports = {p["port"]: p["name"] for p in services[name]["spec"]["ports"]}
                    assert ports.get(int(port)) == "metrics", target


def test_shipyard_is_found_through_its_service() -> None:
    stack = _stack()
    assert _jobs(stack)["shipyard"]["static_configs"] == [{"targets": ["shipyard.shop-production.svc:8080"]}]
    local = {job["job_name"]: job for job in scrape_config(stack, "local")["scrape_configs"]}
    assert local["shipyard"]["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]
    # shipyard outside the stack's control plane: where `alerts.shipyard_service` says.
    moved = _stack(
        STACK.replace("control_plane: {}\n", "").replace(
            "platform:", "alerts: {shipyard_service: 'shipyard.ops.svc:9000'}\nplatform:"
        )
    )
    assert _jobs(moved)["shipyard"]["static_configs"] == [{"targets": ["shipyard.ops.svc:9000"]}]


def test_exporter_jobs_label_the_datastore() -> None:
    jobs = _jobs(_stack())
    assert jobs["postgres-exporter"]["static_configs"] == [
        {"targets": ["db-exporter.shop-production.svc:9187"], "labels": {"datastore": "db"}}
    ]
    assert jobs["redis-exporter"]["static_configs"] == [
        {"targets": ["cache-exporter.shop-production.svc:9121"], "labels": {"datastore": "cache"}}
    ]


def test_services_without_metrics_are_not_scraped() -> None:
    jobs = _jobs(_stack())
    assert "admin" not in jobs
    assert jobs["web"]["metrics_path"] == "/internal/metrics"
    assert "metrics_path" not in jobs["api"]


# --- the exporters' objects -----------------------------------------------------------------


def test_postgres_exporter_connects_through_the_cluster_host_and_secret() -> None:
    objects = _objects(_stack())
    deployment = by_kind(objects, "Deployment")["db-exporter"]
    env = _env(deployment)
    assert env == {
        "DATA_SOURCE_URI": "db:5432/shop?sslmode=disable",
        "DATA_SOURCE_USER": "shop",
        "DATA_SOURCE_PASS": {"secretKeyRef": {"name": "db-credentials", "key": "password"}},
    }
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"quay\.io/prometheuscommunity/postgres-exporter:v\d+\.\d+\.\d+", container["image"])
    assert container["ports"] == [{"name": "metrics", "containerPort": 9187, "protocol": "TCP"}]
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "200m", "memory": "128Mi"},
    }
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "metrics"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65534  # the image's USER is a name
    assert pod["automountServiceAccountToken"] is False
    service = by_kind(objects, "Service")["db-exporter"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9187, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_redis_exporter_reads_the_password_reference() -> None:
    deployment = by_kind(_objects(_stack()), "Deployment")["cache-exporter"]
    assert _env(deployment) == {
        "REDIS_ADDR": "redis://cache:6379",
        "REDIS_PASSWORD": {"secretKeyRef": {"name": "cache-auth", "key": "password"}},
    }
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("oliver006/redis_exporter:v")
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}


def test_network_policies_admit_prometheus_and_the_exporter() -> None:
    policies = by_kind(_objects(_stack()), "NetworkPolicy")
    scrape = policies["allow-db-exporter"]["spec"]
    assert scrape["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "db-exporter"
    assert scrape["ingress"] == [
        {
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}
            ],
            "ports": [{"port": "metrics", "protocol": "TCP"}],
        }
    ]
    reach = policies["allow-db-from-exporter"]["spec"]
    assert reach["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "db"
    [rule] = reach["ingress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "db-exporter"
    assert policies["allow-cache-from-exporter"]["spec"]["ingress"][0]["ports"] == [
        {"port": 6379, "protocol": "TCP"}
    ]


def test_exporter_spec_image_resources_and_null() -> None:
    text = STACK.replace(
        "database: shop, user: shop}",
        "database: shop, user: shop,\n       exporter: {image: 'mirror.example/pg-exporter:1',"
        " resources: {requests: {cpu: 10m}, limits: {memory: 32Mi}}}}",
    ).replace(
        "password: {secretRef: cache-auth/password}}",
        "password: {secretRef: cache-auth/password}, exporter: ~}",
    )
    objects = _objects(_stack(text))
    deployments = by_kind(objects, "Deployment")
    assert "cache-exporter" not in deployments
    assert "cache-exporter" not in by_kind(objects, "Service")
    [container] = deployments["db-exporter"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "mirror.example/pg-exporter:1"
    assert container["resources"] == {"requests": {"cpu": "10m"}, "limits": {"memory": "32Mi"}}
    assert "redis-exporter" not in _jobs(_stack(text))


def test_external_datastores_get_an_exporter_over_tls() -> None:
    text = STACK.replace(
        "db: {kind: postgresql, storage: {size: 10Gi}, database: shop, user: shop}",
        "db: {kind: postgresql, mode: external, database: shop, user: shop,"
        " external: {host: shop.abc.eu-central-1.rds.amazonaws.com}}",
    ).replace(
        "cache: {kind: redis, password: {secretRef: cache-auth/password}}",
        "cache: {kind: redis, mode: external, external: {host: shop.cache.amazonaws.com}}",
    )
    objects = _objects(_stack(text))
    deployments = by_kind(objects, "Deployment")
    assert _env(deployments["db-exporter"])["DATA_SOURCE_URI"] == (
        "shop.abc.eu-central-1.rds.amazonaws.com:5432/shop?sslmode=require"
    )
    assert _env(deployments["cache-exporter"]) == {"REDIS_ADDR": "rediss://shop.cache.amazonaws.com:6379"}
    policies = by_kind(objects, "NetworkPolicy")
    assert "allow-db-exporter" in policies
    assert "allow-db-from-exporter" not in policies  # no pod in this cluster to admit it to


def test_cloudnative_pg_exports_its_own_metrics() -> None:
    text = STACK.replace(
        "db: {kind: postgresql, storage: {size: 10Gi}, database: shop, user: shop}",
        "db: {kind: postgresql, mode: cloudnative-pg, replicas: 2, storage: {size: 10Gi},"
        " database: shop, user: shop}",
    )
    stack = _stack(text)
    objects = _objects(stack)
    assert "db-exporter" not in by_kind(objects, "Deployment")
    policy = by_kind(objects, "NetworkPolicy")["allow-db-metrics"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"cnpg.io/cluster": "db", "cnpg.io/podRole": "instance"}
    assert policy["ingress"][0]["ports"] == [{"port": 9187, "protocol": "TCP"}]
    jobs = _jobs(stack)
    assert "postgres-exporter" not in jobs
    cnpg = jobs["postgres-cloudnative-pg"]
    keep = cnpg["relabel_configs"][0]
    assert re.fullmatch(keep["regex"], "db;instance;metrics")
    assert not re.fullmatch(keep["regex"], "db;pooler;metrics")
    assert {"target_label": "job", "replacement": "postgres-exporter"} in cnpg["relabel_configs"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.parent.name)
def test_every_example_renders_its_exporters(example: Path) -> None:
    spec = load_spec(example)
    for env in spec.environments:
        stack = spec.stack(env)
        deployments = by_kind(_objects(stack), "Deployment")
        for name, store in stack.datastores.items():
            expected = store.exporter is not None and store.mode != "cloudnative-pg"
            assert (f"{name}-exporter" in deployments) == expected, (env, name)
