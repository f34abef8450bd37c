"""shipyard's own control plane in the cluster (render/_control_plane.py, `control_plane:`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import RenderError, SpecError
from shipyard.render import build_manifests
from shipyard.render._backups import BACKUP_UID, SPEC_CONFIG_MAP
from shipyard.render._control_plane import RULES, control_plane_objects
from shipyard.render._prometheus import scrape_config
from shipyard.rollout.targets.kubernetes import RELEASE_KINDS
from shipyard.rollout.targets.kubernetes_apply import WORKLOAD_KINDS, resource_of
from shipyard.spec import Stack, load_spec, load_spec_text
from shipyard.spec._model import default_shipyard_image

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(ROOT.glob("examples/*/shipyard.yaml"))

STACK = """\
name: shop
services:
  api: {role: api, image: "shop/api:1", port: 8000, depends_on: [db]}
datastores:
  db: {kind: postgresql, storage: {size: 10Gi}, database: shop, user: shop}
backup:
  repository: s3:https://s3.eu-west-1.amazonaws.com/shop
  password: {secretRef: shop-backup/restic-password}
  schedules: {database: "0 * * * *"}
  sources: {datastores: [db]}
notifications:
  chat: {kind: slack, url: {secretRef: shop-alerts/slack-url}}
control_plane:
  replicas: 2
  state_store: {secretRef: shop-shipyard/database-url}
  ingress: {host: shipyard.shop.example}
platform:
  prometheus_operator: {namespace: observability}
environments:
  production: {}
images: {environments: []}  # about the control plane, not which images production may run
"""


def _stack(text: str = STACK) -> Stack:
    return load_spec_text(text, "shipyard.yaml").stack("production")


def _by(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    return _by(list(build_manifests(_stack()).objects))


def _container(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    [container] = objects[("Deployment", "shipyard")]["spec"]["template"]["spec"]["containers"]
    return container


def test_the_control_plane_objects(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget"):
        assert (kind, "shipyard") in rendered, kind
    assert rendered[("ServiceAccount", "shipyard")]["automountServiceAccountToken"] is True
    pod = rendered[("Deployment", "shipyard")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "shipyard"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsUser"] == BACKUP_UID == 10001
    assert rendered[("Deployment", "shipyard")]["spec"]["replicas"] == 2
    container = _container(rendered)
    assert container["image"] == default_shipyard_image()
    assert container["command"][:2] == ["shipyard", "serve"]
    assert container["command"][container["command"].index("--port") + 1] == "8080"
    assert container["command"][container["command"].index("--env") + 1] == "production"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    service = rendered[("Service", "shipyard")]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    binding = rendered[("RoleBinding", "shipyard")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "shipyard", "namespace": "shop-production"}
    ]
    assert ("Ingress", "shipyard") in rendered
    monitor = rendered[("ServiceMonitor", "shipyard")]["spec"]
    assert monitor["endpoints"][0]["port"] == "http"
    assert monitor["endpoints"][0]["relabelings"][-1]["replacement"] == "shipyard"  # job="shipyard"


def test_nothing_without_control_plane_and_one_replica_has_no_budget() -> None:
    bare = _stack(re.sub(r"control_plane:\n(  .*\n)+", "", STACK))
    assert control_plane_objects(bare) == []
    single = _stack(STACK.replace("  replicas: 2\n", ""))
    assert ("PodDisruptionBudget", "shipyard") not in _by(control_plane_objects(single))


def test_the_role_grants_exactly_what_the_driver_and_status_send(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    rules = rendered[("Role", "shipyard")]["rules"]
    granted = {
        (group, resource): sorted(rule["verbs"])
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert all("*" not in key and "*" not in verbs for key, verbs in granted.items())
    assert granted == {
        ("", "configmaps"): ["create", "patch"],
        ("", "persistentvolumeclaims"): ["create", "patch"],
        ("", "services"): ["create", "patch"],
        ("networking.k8s.io", "ingresses"): ["create", "get", "patch"],
        ("autoscaling", "horizontalpodautoscalers"): ["create", "get", "patch"],
        ("policy", "poddisruptionbudgets"): ["create", "patch"],
        ("argoproj.io", "analysistemplates"): ["create", "patch"],
        ("argoproj.io", "rollouts"): ["create", "get", "patch"],
        ("argoproj.io", "rollouts/status"): ["patch"],
        ("apps", "deployments"): ["get"],
        ("apps", "statefulsets"): ["get"],
        ("batch", "cronjobs"): ["get"],
        ("postgresql.cnpg.io", "clusters"): ["get"],
    }
    # Held to the code: every kind a release applies can be created and patched, and every kind
    # read_status reads can be read.
    versions = {
        "ConfigMap": "v1",
        "PersistentVolumeClaim": "v1",
        "Service": "v1",
        "Ingress": "networking.k8s.io/v1",
        "AnalysisTemplate": "argoproj.io/v1alpha1",
        "Rollout": "argoproj.io/v1alpha1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "PodDisruptionBudget": "policy/v1",
        "Deployment": "apps/v1",
        "StatefulSet": "apps/v1",
        "Cluster": "postgresql.cnpg.io/v1",
        "CronJob": "batch/v1",
    }

    def key(kind: str) -> tuple[str, str]:
        api_version = versions[kind]
        group = api_version.rpartition("/")[0]
        return group, resource_of(kind, api_version).plural

    for kind in RELEASE_KINDS:
        assert {"create", "patch"} <= set(granted[key(kind)]), kind
    for kind in (*WORKLOAD_KINDS, "HorizontalPodAutoscaler", "Ingress", "CronJob"):
        assert "get" in granted[key(kind)], kind
    assert len(RULES) == len(rules)


def test_no_secret_value_is_rendered(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    env = {item["name"]: item for item in _container(rendered)["env"]}
    assert env["SHIPYARD_DATABASE_URL"] == {
        "name": "SHIPYARD_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "shop-shipyard", "key": "database-url"}},
    }
    assert env["SHOP_ALERTS_SLACK_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "shop-alerts", "key": "slack-url"}
    }
    assert all("value" not in item for item in env.values() if "valueFrom" in item)
    text = json.dumps([o for (_, name), o in rendered.items() if "shipyard" in name])
    assert "postgresql://" not in text
    assert not any(o["kind"] == "Secret" for o in rendered.values())


def test_the_spec_config_map_is_one_object_shared_with_the_backup_jobs(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    config_maps = [name for kind, name in rendered if kind == "ConfigMap" and name == SPEC_CONFIG_MAP]
    assert config_maps == ["shipyard-spec"]
    server = rendered[("Deployment", "shipyard")]["spec"]["template"]["spec"]["volumes"]
    job = rendered[("CronJob", "backup-database")]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "volumes"
    ]
    shared = {"name": "spec", "configMap": {"name": SPEC_CONFIG_MAP}}
    assert shared in server
    assert shared in job
    # Without backup schedules the control plane renders it itself.
    alone = _by(control_plane_objects(_stack(STACK.replace('  schedules: {database: "0 * * * *"}\n', ""))))
    assert ("ConfigMap", SPEC_CONFIG_MAP) in alone


def test_the_backups_record_into_the_control_planes_state_store(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    job = rendered[("CronJob", "backup-database")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    env = {item["name"]: item for item in job["containers"][0]["env"]}
    assert env["SHIPYARD_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "shop-shipyard", "key": "database-url"}
    }
    given = _stack(STACK.replace("  sources:", "  state_store: {secretRef: other/url}\n  sources:"))
    assert given.backup_state_store is not None
    assert given.backup_state_store == given.backup.state_store if given.backup else False


def test_network_policies(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    admitted = rendered[("NetworkPolicy", "allow-shipyard")]["spec"]
    namespaces = [
        peer["namespaceSelector"]["matchLabels"] for rule in admitted["ingress"] for peer in rule["from"]
    ]
    assert {"kubernetes.io/metadata.name": "observability"} in namespaces  # Prometheus
    assert {"kubernetes.io/metadata.name": "ingress-nginx"} in namespaces  # the ingress controller
    egress = rendered[("NetworkPolicy", "shipyard-egress")]["spec"]
    assert egress["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "shipyard"
    ports = {(port["port"], port.get("protocol")) for rule in egress["egress"] for port in rule["ports"]}
    assert {(53, "UDP"), (443, "TCP"), (6443, "TCP"), (5432, "TCP")} <= ports
    assert ("NetworkPolicy", "allow-shipyard-to-db") in rendered


def test_the_image_is_pinned_and_replicas_need_postgres() -> None:
    for image in ("shipyard/shipyard:latest", "shipyard/shipyard"):
        with pytest.raises(SpecError, match="latest"):
            _stack(STACK.replace("  replicas: 2\n", f"  replicas: 2\n  image: {image}\n"))
    with pytest.raises(SpecError, match="state_store"):
        _stack(STACK.replace("  state_store: {secretRef: shop-shipyard/database-url}\n", ""))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.parent.name)
def test_the_scrape_config_points_at_a_rendered_service(example: Path) -> None:
    spec = load_spec(example)
    for env in spec.environments:
        stack = spec.stack(env)
        services = {
            o["metadata"]["name"]: o for o in build_manifests(stack).objects if o["kind"] == "Service"
        }
        [job] = [
            j for j in scrape_config(stack, "kubernetes")["scrape_configs"] if j["job_name"] == "shipyard"
        ]
        [target] = job["static_configs"][0]["targets"]
        host, port = target.rsplit(":", 1)
        name, namespace, svc = host.split(".")
        assert (namespace, svc) == (stack.k8s_namespace, "svc")
        ports = {p["port"]: p["name"] for p in services[name]["spec"]["ports"]}
        assert ports[int(port)] == "http", target


def test_neither_control_plane_nor_shipyard_service_is_refused() -> None:
    bare = _stack(re.sub(r"control_plane:\n(  .*\n)+", "", STACK))
    with pytest.raises(RenderError, match=r"control_plane.*alerts\.shipyard_service"):
        scrape_config(bare, "kubernetes")
    assert scrape_config(bare, "local")["scrape_configs"][-1]["static_configs"] == [
        {"targets": ["127.0.0.1:8080"]}
    ]


def test_in_the_cluster_the_server_leaves_the_backup_schedules_to_their_cronjobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control plane runs with SHIPYARD_TARGET=kubernetes beside the backup CronJobs: its
    scheduler must not run each backup a second time; drills and freshness stay its own."""
    from shipyard.server._scheduler import planned_requests  # noqa: PLC0415 - the server is slow to import

    stack = _stack(STACK.replace("  sources:", "  pitr: {repository: /var/lib/pgbackrest}\n  sources:"))
    on_host = [name for name, _, _ in planned_requests(stack)]
    in_cluster = [name for name, _, _ in planned_requests(stack, cluster_backups=True)]
    assert "backup-database" in on_host
    assert not [name for name in in_cluster if name.startswith("backup-") and name != "backup-freshness"]
    env = {item["name"]: item.get("value") for item in _container(_by(control_plane_objects(stack)))["env"]}
    assert env["SHIPYARD_TARGET"] == "kubernetes"
