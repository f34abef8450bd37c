"""The objects rendered for the Apricode example (seed 004), and the rules behind them."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.errors import RenderError
from shipyard.render import KIND_ORDER, build_manifests, dump_all, render_kubernetes, volume_claim_names
from shipyard.render._argo import render_argo
from shipyard.spec import Spec, load_spec
from unit.render.render_helpers import ROOT, by_kind, spec_from

LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
)


@pytest.fixture(scope="module")
def production(apricode: Spec) -> list[dict[str, Any]]:
    return render_kubernetes(apricode.stack("production"))


@pytest.fixture(scope="module")
def dev(apricode: Spec) -> list[dict[str, Any]]:
    return render_kubernetes(apricode.stack("dev"))


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def test_namespace_first_then_kind_order_then_name(production: list[dict[str, Any]]) -> None:
    assert production[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "production",
            "labels": {
                "app.kubernetes.io/part-of": "apricode",
                "app.kubernetes.io/managed-by": "shipyard",
                "pod-security.kubernetes.io/enforce": "restricted",
                "shipyard.dev/environment": "production",
            },
        },
    }
    keys = [(KIND_ORDER.index(o["kind"]), o["metadata"]["name"]) for o in production]
    assert keys == sorted(keys)


def test_every_namespaced_object_is_labelled_and_in_the_namespace(production: list[dict[str, Any]]) -> None:
    for obj in production[1:]:
        assert obj["metadata"]["namespace"] == "production", obj["metadata"]["name"]
        labels = obj["metadata"]["labels"]
        assert all(label in labels for label in LABELS), (obj["kind"], obj["metadata"]["name"])
        assert labels["app.kubernetes.io/part-of"] == "apricode"
        assert labels["app.kubernetes.io/managed-by"] == "shipyard"


def test_deployment_probes_security_rollout_and_drain(production: list[dict[str, Any]]) -> None:
    app = by_kind(production, "Deployment")["app"]
    spec = app["spec"]
    assert "replicas" not in spec  # the HPA owns the count in production
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
    }
    pod = spec["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["terminationGracePeriodSeconds"] == 20 + 10
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    container = _container(app)
    assert container["image"] == "registry.example.com/apricode-exchange:1.1.0"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/api/health", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    assert container["readinessProbe"]["periodSeconds"] == 5
    assert container["startupProbe"] == {
        "httpGet": {"path": "/api/health", "port": "http"},
        "periodSeconds": 5,
        "failureThreshold": 6,  # 30 s of startup_delay
    }
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 20}}}
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2000m", "memory": "3Gi"},
    }
    assert container["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]


def test_migration_is_an_init_container_with_the_same_image_and_env(production: list[dict[str, Any]]) -> None:
    app = by_kind(production, "Deployment")["app"]
    (init,) = app["spec"]["template"]["spec"]["initContainers"]
    container = _container(app)
    assert init["name"] == "migrate"
    assert init["command"] == ["/bin/sh", "-c", "npx prisma migrate deploy"]
    assert init["image"] == container["image"]
    assert init["env"] == container["env"]
    assert init["envFrom"] == container["envFrom"] == [{"configMapRef": {"name": "app-env"}}]


def test_env_plain_values_in_configmap_and_secrets_as_references(production: list[dict[str, Any]]) -> None:
    config = by_kind(production, "ConfigMap")["app-env"]
    assert config["data"] == {"NODE_ENV": "production", "NEXT_TELEMETRY_DISABLED": "1"}
    env = {e["name"]: e for e in _container(by_kind(production, "Deployment")["app"])["env"]}
    assert env["NEXTAUTH_SECRET"]["valueFrom"] == {
        "secretKeyRef": {"name": "apricode-app", "key": "nextauth-secret"}
    }
    assert env["PGPASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "apricode-postgres", "key": "password"}
    }
    assert env["PGHOST"]["value"] == "postgres"
    assert env["PGDATABASE"]["value"] == "apricode"
    assert (
        env["DATABASE_URL"]["value"]
        == "postgresql://$(PGUSER):$(PGPASSWORD)@$(PGHOST):$(PGPORT)/$(PGDATABASE)"
    )
    assert env["REDIS_URL"]["value"] == "redis://$(REDIS_HOST):$(REDIS_PORT)/0"
    names = [e["name"] for e in _container(by_kind(production, "Deployment")["app"])["env"]]
    # $(VAR) expands only variables defined earlier in the list.
    assert names.index("PGPASSWORD") < names.index("DATABASE_URL")
    assert names.index("REDIS_PORT") < names.index("REDIS_URL")


def test_external_secrets_fetch_every_referenced_key_from_the_store(production: list[dict[str, Any]]) -> None:
    secrets = by_kind(production, "ExternalSecret")
    # apricode-backup: the restic repository password the backup CronJobs read.
    # apricode-shipyard and apricode-alerts: the control plane's state store and Slack webhook.
    assert set(secrets) == {
        "apricode-app",
        "apricode-postgres",
        "apricode-backup",
        "apricode-shipyard",
        "apricode-alerts",
    }
    app = secrets["apricode-app"]
    assert app["apiVersion"] == "external-secrets.io/v1"
    assert app["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "vault"}
    assert app["spec"]["target"] == {"name": "apricode-app", "creationPolicy": "Owner"}
    assert [d["secretKey"] for d in app["spec"]["data"]] == [
        "nextauth-secret",
        "resend-api-key",
        "sumsub-app-token",
    ]
    assert app["spec"]["data"][0]["remoteRef"] == {"key": "apricode-app", "property": "nextauth-secret"}


def test_hpa_behaviour_and_pdb(production: list[dict[str, Any]], dev: list[dict[str, Any]]) -> None:
    hpa = by_kind(production, "HorizontalPodAutoscaler")["app"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["maxReplicas"] == 10
    assert [m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]] == [70, 80]
    assert hpa["spec"]["behavior"] == {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 30},
                {"type": "Pods", "value": 2, "periodSeconds": 30},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
        },
    }
    assert by_kind(production, "PodDisruptionBudget")["app"]["spec"]["maxUnavailable"] == 1
    # dev runs one replica without autoscaling: no HPA, no PDB, a fixed count.
    assert not by_kind(dev, "HorizontalPodAutoscaler")
    assert not by_kind(dev, "PodDisruptionBudget")
    assert by_kind(dev, "Deployment")["app"]["spec"]["replicas"] == 1


def test_ingress_tls_rate_limits_and_body_size(
    production: list[dict[str, Any]], dev: list[dict[str, Any]]
) -> None:
    ingress = by_kind(production, "Ingress")["app"]
    assert ingress["metadata"]["annotations"] == {
        "cert-manager.io/cluster-issuer": "letsencrypt-prod",
        "nginx.ingress.kubernetes.io/ssl-redirect": "true",
        "nginx.ingress.kubernetes.io/limit-rps": "10",
        "nginx.ingress.kubernetes.io/limit-rpm": "100",
        "nginx.ingress.kubernetes.io/proxy-body-size": "50m",
    }
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["apricode.exchange"], "secretName": "app-tls"}]
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"] == {"service": {"name": "app", "port": {"name": "http"}}}
    assert not by_kind(dev, "Ingress")


def test_network_policies_deny_then_allow_what_the_spec_implies(production: list[dict[str, Any]]) -> None:
    policies = by_kind(production, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    app_rules = policies["allow-app"]["spec"]["ingress"]
    app_from = [rule["from"] for rule in app_rules]
    # the ingress controller's namespace, as the platform component names it
    assert [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ] in app_from
    # the app's own cron jobs call it (http://app:3000/api/cron/...)
    app_pods = {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "app", "app.kubernetes.io/part-of": "apricode"}
        }
    }
    assert [app_pods] in app_from
    postgres = policies["allow-postgres"]["spec"]
    assert postgres["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "postgres"
    (rule,) = postgres["ingress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    assert app_pods in rule["from"]
    assert any(
        p["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "postgres-replica"
        for p in rule["from"]
    )
    assert policies["allow-redis"]["spec"]["ingress"] == [
        {"from": [app_pods], "ports": [{"port": 6379, "protocol": "TCP"}]}
    ]


def test_postgres_primary_and_replicas(production: list[dict[str, Any]], dev: list[dict[str, Any]]) -> None:
    sets = by_kind(production, "StatefulSet")
    primary, replicas = sets["postgres"], sets["postgres-replica"]
    assert primary["spec"]["replicas"] == 1
    assert replicas["spec"]["replicas"] == 1
    container = _container(primary)
    assert container["image"] == "postgres:15"
    assert container["args"][0] == "postgres"
    assert "shared_buffers=2GB" in container["args"]
    assert "max_connections=200" in container["args"]
    assert container["args"][container["args"].index("shared_buffers=2GB") - 1] == "-c"
    assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert {
        "name": "POSTGRES_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "apricode-postgres", "key": "password"}},
    } in container["env"]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert _container(replicas)["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    (claim,) = primary["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"] == {"requests": {"storage": "100Gi"}}
    copy = replicas["spec"]["template"]["spec"]["initContainers"][0]
    assert "pg_basebackup" in copy["command"][2]
    assert "--write-recovery-conf" in copy["command"][2]
    headless = by_kind(production, "Service")
    assert headless["postgres"]["spec"]["clusterIP"] == "None"
    assert headless["postgres-replica"]["spec"]["clusterIP"] == "None"
    # dev has no replicas (and smaller storage)
    dev_sets = by_kind(dev, "StatefulSet")
    assert "postgres-replica" not in dev_sets
    assert dev_sets["postgres"]["spec"]["volumeClaimTemplates"][0]["spec"]["resources"] == {
        "requests": {"storage": "10Gi"}
    }


def test_redis_args_probes_and_storage(production: list[dict[str, Any]]) -> None:
    redis = by_kind(production, "StatefulSet")["redis"]
    container = _container(redis)
    args = container["args"]
    assert args[args.index("--maxmemory") + 1] == str(2**30)
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert args[args.index("--save") + 1] == "900 1 300 10 60 10000"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "everysec"
    assert container["livenessProbe"]["exec"]["command"] == ["redis-cli", "-p", "6379", "ping"]
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"] == {"requests": {"storage": "10Gi"}}


def test_cron_jobs_use_the_service_image_and_policy(production: list[dict[str, Any]]) -> None:
    jobs = by_kind(production, "CronJob")
    # The service's own, then one per schedule of the spec's backup policy.
    assert set(jobs) == {
        "app-cleanup-sessions",
        "app-process-notifications",
        "backup-database",
        "backup-full",
        "backup-verify",
    }
    job = jobs["app-process-notifications"]
    assert job["spec"]["schedule"] == "*/5 * * * *"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == "registry.example.com/apricode-exchange:1.1.0"
    # the service's selector must not pick the job's pods
    service = by_kind(production, "Service")["app"]
    selector = service["spec"]["selector"]
    assert not all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items())


SMALL = """
name: shop
services:
  web:
    role: web
    image: shop/web:1
    port: 8080
    replicas: 2
    env:
      API_TOKEN: ${env:API_TOKEN}
      UPSTREAM: "https://user:${env:UPSTREAM_PASSWORD}@upstream.example/$(literal)"
    cron:
      nightly: {schedule: "0 3 * * *", command: [./nightly], concurrency: Replace, deadline: 10m}
    volumes:
      uploads: {size: 5Gi, mount: /srv/uploads, access_mode: ReadWriteMany, storage_class: standard}
    depends_on: [main-db, audit-db]
  local-only:
    role: worker
    run: ./worker
datastores:
  main-db: {kind: postgresql, storage: {size: 1Gi}}
  audit-db: {kind: postgresql, port: 5433, storage: {size: 1Gi}, password: {secretRef: audit/pw}}
environments:
  prod: {}
"""


@pytest.fixture(scope="module")
def small() -> list[dict[str, Any]]:
    return render_kubernetes(spec_from(SMALL).stack("prod"))


def test_env_references_become_keys_of_the_runtime_secret(small: list[dict[str, Any]]) -> None:
    env = {e["name"]: e for e in _container(by_kind(small, "Deployment")["web"])["env"]}
    assert env["API_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "shop-runtime", "key": "API_TOKEN"}}
    assert env["UPSTREAM_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "shop-runtime", "key": "UPSTREAM_PASSWORD"}
    }
    # assembled by Kubernetes; a literal $( in the spec is escaped so it stays literal
    assert env["UPSTREAM"]["value"] == "https://user:$(UPSTREAM_PASSWORD)@upstream.example/$$(literal)"
    # without a secret store, nothing is fetched: the Secrets are the cluster's own
    assert not by_kind(small, "ExternalSecret")


def test_two_postgres_dependencies_get_prefixed_connection_variables(small: list[dict[str, Any]]) -> None:
    env = {e["name"]: e for e in _container(by_kind(small, "Deployment")["web"])["env"]}
    assert env["MAIN_DB_PGHOST"]["value"] == "main-db"
    assert env["AUDIT_DB_PGPORT"]["value"] == "5433"
    assert env["MAIN_DB_PGPASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "main-db-credentials", "key": "password"}
    }
    assert env["AUDIT_DB_PGPASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "audit", "key": "pw"}}
    assert env["AUDIT_DB_DATABASE_URL"]["value"] == (
        "postgresql://$(AUDIT_DB_PGUSER):$(AUDIT_DB_PGPASSWORD)@$(AUDIT_DB_PGHOST):$(AUDIT_DB_PGPORT)/$(AUDIT_DB_PGDATABASE)"
    )
    assert "DATABASE_URL" not in env


def test_volumes_become_claims_mounted_into_the_deployment(small: list[dict[str, Any]]) -> None:
    claim = by_kind(small, "PersistentVolumeClaim")["web-uploads"]
    # Both replicas mount it: ReadWriteMany (validate refuses ReadWriteOnce shared so).
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "5Gi"}},
        "storageClassName": "standard",
    }
    deployment = by_kind(small, "Deployment")["web"]
    assert {"name": "uploads", "persistentVolumeClaim": {"claimName": "web-uploads"}} in deployment["spec"][
        "template"
    ]["spec"]["volumes"]
    assert {"name": "uploads", "mountPath": "/srv/uploads"} in _container(deployment)["volumeMounts"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 1


def test_cron_deadline_and_concurrency(small: list[dict[str, Any]]) -> None:
    job = by_kind(small, "CronJob")["web-nightly"]
    assert job["spec"]["concurrencyPolicy"] == "Replace"
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 600


def test_services_without_an_image_are_skipped_and_reported() -> None:
    manifests = build_manifests(spec_from(SMALL).stack("prod"))
    assert [s.name for s in manifests.skipped] == ["local-only"]
    assert "run" in manifests.skipped[0].reason
    assert all(o["metadata"]["name"] != "local-only" for o in manifests.objects)


def test_no_platform_component_is_rendered(production: list[dict[str, Any]]) -> None:
    names = {o["metadata"]["name"] for o in production}
    assert not names & {"prometheus", "grafana", "loki", "ingress-nginx"}


def test_ingress_controller_namespace_defaults_to_ingress_nginx() -> None:
    spec = spec_from(
        """
        name: tiny
        services:
          web: {role: web, image: "tiny:1", port: 80, ingress: {host: tiny.example.com, tls: false}}
        platform:
          components:
            ingress-nginx: {namespace: edge}
        environments: {a: {}, b: {platform: {components: {ingress-nginx: null}}}}
        """
    )
    for env, namespace in (("a", "edge"), ("b", "ingress-nginx")):
        policy = by_kind(render_kubernetes(spec.stack(env)), "NetworkPolicy")["allow-web"]
        selectors = [
            peer["namespaceSelector"]["matchLabels"]
            for rule in policy["spec"]["ingress"]
            for peer in rule["from"]
            if "namespaceSelector" in peer
        ]
        assert selectors == [{"kubernetes.io/metadata.name": namespace}]
    ingress = by_kind(render_kubernetes(spec.stack("a")), "Ingress")["web"]
    assert "tls" not in ingress["spec"]
    assert "annotations" not in ingress["metadata"]


def test_an_older_kubernetes_gets_an_exec_sleep(apricode: Spec) -> None:
    app = by_kind(render_kubernetes(apricode.stack("production"), kube_version="1.29"), "Deployment")["app"]
    assert _container(app)["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "20"]}}}


def test_output_is_byte_identical_across_loads(apricode: Spec) -> None:
    again = load_spec(apricode.file)
    for env in apricode.environments:
        first = dump_all(render_kubernetes(apricode.stack(env)))
        second = dump_all(render_kubernetes(again.stack(env)))
        assert first == second
        assert first.startswith("---\napiVersion: v1\nkind: Namespace\n")


def test_copy_primary_has_the_replicas_resources(production: list[dict[str, Any]]) -> None:
    """The init container that copies the primary has requests and limits (checkov CKV_K8S_10-13).

    They are the replica's own: an init container runs before the others, so the pod's effective
    request is the larger of the two and equal amounts add nothing to what is scheduled.
    """
    replicas = by_kind(production, "StatefulSet")["postgres-replica"]
    (copy,) = replicas["spec"]["template"]["spec"]["initContainers"]
    assert copy["name"] == "copy-primary"
    assert (
        copy["resources"]
        == _container(replicas)["resources"]
        == {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"cpu": "2", "memory": "4Gi"},
        }
    )


def test_copy_primary_has_resources_when_the_spec_gives_none() -> None:
    spec = spec_from(
        """\
        name: shop
        datastores:
          db: {kind: postgresql, replicas: 1, storage: {size: 1Gi}}
        """
    )
    replicas = by_kind(render_kubernetes(spec.stack("production")), "StatefulSet")["db-replica"]
    (copy,) = replicas["spec"]["template"]["spec"]["initContainers"]
    assert set(copy["resources"]) == {"requests", "limits"}
    assert set(copy["resources"]["requests"]) == set(copy["resources"]["limits"]) == {"cpu", "memory"}


STATEFUL = """
name: shop
services:
  node:
    role: api
    image: shop/node:1
    port: 5001
    workload: statefulset
    replicas: 3
    volumes:
      data: {size: 20Gi, mount: /data, storage_class: gp3}
      blobs: {size: 5Gi, mount: /blobs}
environments:
  prod: {}
  scaled:
    services:
      node: {autoscaling: {min: 2, max: 6, cpu_percent: 70}}
"""


def test_a_statefulset_service_gets_a_claim_per_pod_and_a_governing_service() -> None:
    objects = render_kubernetes(spec_from(STATEFUL).stack("prod"))
    assert not by_kind(objects, "Deployment")
    assert not by_kind(objects, "PersistentVolumeClaim")  # no claim shared by the pods
    node = by_kind(objects, "StatefulSet")["node"]
    spec = node["spec"]
    assert spec["replicas"] == 3
    assert spec["serviceName"] == "node-pods"
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["blobs", "data"]
    assert spec["volumeClaimTemplates"][1]["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "gp3",
    }
    pod = spec["template"]["spec"]
    # The claims are the templates': no volume of the pod names a claim.
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert {"name": "data", "mountPath": "/data"} in pod["containers"][0]["volumeMounts"]
    assert pod["serviceAccountName"] == "node"
    services = by_kind(objects, "Service")
    assert services["node-pods"]["spec"]["clusterIP"] == "None"
    assert services["node-pods"]["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert services["node"]["spec"]["type"] == "ClusterIP"  # what clients connect to
    assert by_kind(objects, "PodDisruptionBudget")["node"]["spec"]["selector"] == spec["selector"]


def test_an_autoscaled_statefulset_is_the_hpas_target() -> None:
    objects = render_kubernetes(spec_from(STATEFUL).stack("scaled"))
    node = by_kind(objects, "StatefulSet")["node"]
    assert "replicas" not in node["spec"]  # the HPA's
    assert by_kind(objects, "HorizontalPodAutoscaler")["node"]["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "node",
    }


def test_argo_rollouts_leave_a_statefulset_alone() -> None:
    stack = spec_from(STATEFUL).stack("prod")
    objects = build_manifests(stack, argo=True).objects
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "StatefulSet"] == ["node"]
    assert not [o for o in objects if o["kind"] == "Rollout"]
    with pytest.raises(RenderError, match="StatefulSet"):
        render_argo(stack, "node")


def test_the_claims_of_a_volume_by_workload() -> None:
    stack = spec_from(STATEFUL).stack("prod")
    assert volume_claim_names("node", stack.services["node"], "data") == [
        "data-node-0",
        "data-node-1",
        "data-node-2",
    ]
    deployment_service = stack.services["node"].model_copy(update={"workload": "deployment"})
    assert volume_claim_names("node", deployment_service, "data") == ["node-data"]


def test_normaldances_ipfs_node_is_a_statefulset() -> None:
    normaldance = load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml")
    for env in normaldance.environments:
        objects = render_kubernetes(normaldance.stack(env))
        ipfs = by_kind(objects, "StatefulSet")["ipfs"]
        (claim,) = ipfs["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "ipfs-data"
        assert claim["spec"]["resources"] == {"requests": {"storage": "200Gi"}}
        assert "ipfs" not in by_kind(objects, "Deployment")
        assert "ipfs-ipfs-data" not in by_kind(objects, "PersistentVolumeClaim")


def test_a_service_without_cron_jobs_is_admitted_from_its_own_pods() -> None:
    # normaldance's api has no cron job; a pod calling its own Service (a cache warm-up, salespot's
    # /feature-flags) was dropped by the default deny, though its egress policy allowed the call.
    stack = load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml").stack("production")
    policies = by_kind(render_kubernetes(stack), "NetworkPolicy")
    own = {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "api", "app.kubernetes.io/part-of": "normaldance"}
        }
    }
    assert any(own in rule["from"] for rule in policies["allow-api"]["spec"]["ingress"])
