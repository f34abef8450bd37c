"""Datastores as operators run them: `mode: statefulset | cloudnative-pg | external`, Redis replicas.

Each rendered custom resource is also checked by `validate_objects`, against the real CRDs of
CloudNativePG (../shared/crds/, packaged in render/crds/).
"""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.errors import RenderError, SpecError
from shipyard.render import build_manifests
from shipyard.render._common import cluster_host
from shipyard.render._schema import validate_objects
from shipyard.spec import Spec, Stack, load_spec
from unit.render.render_helpers import ROOT, by_kind, spec_from

BASE = """
name: shop
services:
  api:
    role: api
    image: shop/api:1.0
    port: 8080
    depends_on: [db, cache]
datastores:
  db:
    kind: postgresql
    storage: {size: 20Gi, storage_class: gp3}
    database: shop
    user: shop
{db}
  cache:
    kind: redis
    password: {secretRef: shop-cache/password}
{cache}
"""

CNPG = """
    mode: cloudnative-pg
    replicas: 2
    resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: "1", memory: 2Gi}}
    settings: {max_connections: 200, jit: false, work_mem: 16MB}
    cloudnative_pg:
      backup:
        destination: s3://shop-backups/production-cnpg
        endpoint_url: https://minio.example.com
        access_key_id: {secretRef: shop-s3/access-key-id}
        secret_access_key: {secretRef: shop-s3/secret-access-key}
        schedule: "30 2 * * *"
        retention: 14d
      pooler: {instances: 3, pool_mode: transaction, max_client_conn: 1000, default_pool_size: 25}
"""

EXTERNAL = """
    mode: external
    external:
      host: shop.abc123.eu-west-1.rds.amazonaws.com
      cidr: 10.20.32.0/20
      sslmode: verify-full
      instance_class: db.t4g.medium
"""


API_PODS = {
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "api", "app.kubernetes.io/part-of": "shop"}}
}


def stack_of(db: str = "", cache: str = "") -> Stack:
    spec = spec_from(BASE.replace("{db}", db).replace("{cache}", cache))
    return spec.stack(spec.environments[0])


def env_of(objects: tuple[dict[str, Any], ...], name: str) -> dict[str, Any]:
    deployment = by_kind(list(objects), "Deployment")[name]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in env}


def policy_rules(objects: tuple[dict[str, Any], ...], name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = by_kind(list(objects), "NetworkPolicy")[name]["spec"]["ingress"]
    return rules


# --- CloudNativePG -------------------------------------------------------------------------------


def test_cloudnative_pg_renders_a_cluster_of_one_plus_replicas_instead_of_stateful_sets() -> None:
    objects = build_manifests(stack_of(db=CNPG)).objects
    assert "db" not in by_kind(list(objects), "StatefulSet")
    assert "db-replica" not in by_kind(list(objects), "StatefulSet")
    cluster = by_kind(list(objects), "Cluster")["db"]
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert spec["instances"] == 3
    assert spec["imageName"] == "ghcr.io/cloudnative-pg/postgresql:15"
    assert spec["bootstrap"] == {
        "initdb": {"database": "shop", "owner": "shop", "secret": {"name": "db-credentials"}}
    }
    assert spec["storage"] == {"size": "20Gi", "storageClass": "gp3"}
    # postgresql.conf parameters are strings in a Cluster; booleans as PostgreSQL writes them.
    assert spec["postgresql"]["parameters"] == {"jit": "off", "max_connections": "200", "work_mem": "16MB"}
    assert spec["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    assert spec["monitoring"] == {"enablePodMonitor": False}
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    assert spec["enableSuperuserAccess"] is False


def test_the_cluster_archives_to_s3_with_credentials_by_reference_and_a_scheduled_base_backup() -> None:
    objects = build_manifests(stack_of(db=CNPG)).objects
    backup = by_kind(list(objects), "Cluster")["db"]["spec"]["backup"]
    assert backup["retentionPolicy"] == "14d"
    store = backup["barmanObjectStore"]
    assert store["destinationPath"] == "s3://shop-backups/production-cnpg"
    assert store["endpointURL"] == "https://minio.example.com"
    assert store["s3Credentials"] == {
        "accessKeyId": {"name": "shop-s3", "key": "access-key-id"},
        "secretAccessKey": {"name": "shop-s3", "key": "secret-access-key"},
    }
    scheduled = by_kind(list(objects), "ScheduledBackup")["db-base"]["spec"]
    # CloudNativePG's cron has a seconds field: the spec's five fields, at second 0.
    assert scheduled["schedule"] == "0 30 2 * * *"
    assert scheduled["cluster"] == {"name": "db"}
    assert scheduled["method"] == "barmanObjectStore"


def test_iam_role_credentials_need_no_keys() -> None:
    db = CNPG.replace(
        "        access_key_id: {secretRef: shop-s3/access-key-id}\n"
        "        secret_access_key: {secretRef: shop-s3/secret-access-key}\n",
        "        iam_role: true\n",
    )
    objects = build_manifests(stack_of(db=db)).objects
    store = by_kind(list(objects), "Cluster")["db"]["spec"]["backup"]["barmanObjectStore"]
    assert store["s3Credentials"] == {"inheritFromIAMRole": True}


def test_a_pooler_fronts_the_primary_and_services_connect_to_it() -> None:
    stack = stack_of(db=CNPG)
    objects = build_manifests(stack).objects
    pooler = by_kind(list(objects), "Pooler")["db-pooler-rw"]["spec"]
    assert pooler["cluster"] == {"name": "db"}
    assert pooler["type"] == "rw"
    assert pooler["instances"] == 3
    assert pooler["pgbouncer"] == {
        "poolMode": "transaction",
        "parameters": {"max_client_conn": "1000", "default_pool_size": "25"},
    }
    assert cluster_host(stack, "db") == "db-pooler-rw"
    assert cluster_host(stack, "db", direct=True) == "db-rw"
    env = env_of(objects, "api")
    assert env["PGHOST"] == "db-pooler-rw"
    assert env["PGPORT"] == "5432"


def test_without_a_pooler_services_connect_to_the_rw_service() -> None:
    db = CNPG.split("      pooler:", maxsplit=1)[0]
    stack = stack_of(db=db)
    objects = build_manifests(stack).objects
    assert by_kind(list(objects), "Pooler") == {}
    assert cluster_host(stack, "db") == "db-rw"
    assert env_of(objects, "api")["PGHOST"] == "db-rw"
    rules = policy_rules(objects, "allow-db")
    assert any(API_PODS in rule["from"] for rule in rules)


def test_network_policies_admit_the_operator_the_instances_and_the_pooler() -> None:
    objects = build_manifests(stack_of(db=CNPG)).objects
    cluster_policy = by_kind(list(objects), "NetworkPolicy")["allow-db"]["spec"]
    assert cluster_policy["podSelector"] == {"matchLabels": {"cnpg.io/cluster": "db"}}
    sources = [(peer, rule["ports"]) for rule in cluster_policy["ingress"] for peer in rule["from"]]
    operator = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cnpg-system"}}}
    status_and_postgres = [{"port": 8000, "protocol": "TCP"}, {"port": 5432, "protocol": "TCP"}]
    assert (operator, status_and_postgres) in sources
    assert ({"podSelector": {"matchLabels": {"cnpg.io/cluster": "db"}}}, status_and_postgres) in sources
    pooler_pods = {"podSelector": {"matchLabels": {"cnpg.io/poolerName": "db-pooler-rw"}}}
    assert (pooler_pods, [{"port": 5432, "protocol": "TCP"}]) in sources
    # With a pooler the services reach PostgreSQL through it, not directly.
    assert not any("app.kubernetes.io/name" in str(peer) and "api" in str(peer) for peer, _ in sources)
    pooler_policy = by_kind(list(objects), "NetworkPolicy")["allow-db-pooler-rw"]["spec"]
    assert pooler_policy["podSelector"] == {"matchLabels": {"cnpg.io/poolerName": "db-pooler-rw"}}
    [rule] = pooler_policy["ingress"]
    assert rule["from"] == [API_PODS]


def test_the_owner_secret_is_fetched_as_basic_auth_with_the_username() -> None:
    text = BASE.replace("{db}", CNPG).replace("{cache}", "") + "secrets: {store: {name: vault}}\n"
    spec = spec_from(text)
    objects = build_manifests(spec.stack(spec.environments[0])).objects
    target = by_kind(list(objects), "ExternalSecret")["db-credentials"]["spec"]["target"]
    assert target["template"] == {
        "type": "kubernetes.io/basic-auth",
        "mergePolicy": "Merge",
        "data": {"username": "shop"},
    }
    # Other Secrets are fetched as they are.
    assert "template" not in by_kind(list(objects), "ExternalSecret")["shop-cache"]["spec"]["target"]


def test_custom_resources_are_refused_by_their_crds_when_wrong() -> None:
    objects = build_manifests(stack_of(db=CNPG)).objects
    cluster = dict(by_kind(list(objects), "Cluster")["db"])
    cluster["spec"] = {**cluster["spec"], "instances": 0}  # the CRD's minimum is 1
    with pytest.raises(RenderError, match="instances"):
        validate_objects([cluster])


# --- external --------------------------------------------------------------------------------------


def test_an_external_database_renders_no_workload_and_services_point_at_its_host() -> None:
    stack = stack_of(db=EXTERNAL)
    objects = build_manifests(stack).objects
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for kind in ("StatefulSet", "Service", "Cluster", "ConfigMap"):
        assert (kind, "db") not in names
    assert ("NetworkPolicy", "allow-db") not in names
    host = "shop.abc123.eu-west-1.rds.amazonaws.com"
    assert cluster_host(stack, "db") == host
    env = env_of(objects, "api")
    assert env["PGHOST"] == host
    assert env["PGSSLMODE"] == "verify-full"
    assert env["DATABASE_URL"].endswith("?sslmode=$(PGSSLMODE)")
    assert env["PGPASSWORD"] == {"secretKeyRef": {"name": "db-credentials", "key": "password"}}


def test_an_external_redis_renders_nothing_and_is_reached_over_tls() -> None:
    cache = """
    mode: external
    external: {host: shop-cache.abc123.cache.amazonaws.com, instance_class: cache.t4g.small}
"""
    stack = stack_of(cache=cache)
    objects = build_manifests(stack).objects
    assert "cache" not in by_kind(list(objects), "StatefulSet")
    env = env_of(objects, "api")
    assert env["REDIS_HOST"] == "shop-cache.abc123.cache.amazonaws.com"
    assert env["REDIS_URL"].startswith("rediss://")


# --- Redis replicas --------------------------------------------------------------------------------


def test_a_redis_replica_follows_the_primary_with_its_password_behind_its_own_service() -> None:
    objects = build_manifests(stack_of(cache="    replicas: 1\n")).objects
    sets = by_kind(list(objects), "StatefulSet")
    replica = sets["cache-replica"]
    assert replica["spec"]["replicas"] == 1
    args = replica["spec"]["template"]["spec"]["containers"][0]["args"]
    at = args.index("--replicaof")
    assert args[at + 1 : at + 3] == ["cache", "6379"]
    assert args[args.index("--masterauth") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert "--replicaof" not in sets["cache"]["spec"]["template"]["spec"]["containers"][0]["args"]
    service = by_kind(list(objects), "Service")["cache-replica"]
    assert service["spec"]["selector"] == replica["spec"]["selector"]["matchLabels"]
    assert env_of(objects, "api")["REDIS_REPLICA_HOST"] == "cache-replica"
    # The services that use Redis may read from the replica; the replica may follow the primary.
    primary_sources = [peer for rule in policy_rules(objects, "allow-cache") for peer in rule["from"]]
    assert {"podSelector": {"matchLabels": replica["spec"]["selector"]["matchLabels"]}} in primary_sources
    assert policy_rules(objects, "allow-cache-replica")


def test_no_replica_by_default() -> None:
    objects = build_manifests(stack_of()).objects
    assert "cache-replica" not in by_kind(list(objects), "StatefulSet")
    assert "REDIS_REPLICA_HOST" not in env_of(objects, "api")


# --- what validate refuses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("db", "field", "words"),
    [
        (CNPG + "    ha: patroni\n", "datastores.db.ha", "patroni"),
        (EXTERNAL + "    ha: patroni\n", "datastores.db.ha", "patroni"),
        ("    cloudnative_pg: {anti_affinity: required}\n", "datastores.db.cloudnative_pg", "mode"),
        (CNPG + "    port: 5433\n", "datastores.db.port", "5432"),
        (CNPG + "    replica_resources: {limits: {cpu: 1}}\n", "datastores.db.replica_resources", "same"),
        (CNPG.replace("jit: false", "archive_mode: 'on'"), "datastores.db.settings.archive_mode", "operator"),
        (CNPG + "    password: {secretRef: db-secret/pw}\n", "datastores.db.password", "password"),
        (EXTERNAL + "    replicas: 1\n", "datastores.db.replicas", "provider"),
        ("    mode: external\n", "datastores.db", "external"),
    ],
)
def test_validate_refuses_a_mode_that_cannot_work_naming_the_field(db: str, field: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        stack_of(db=db)
    message = str(caught.value)
    assert field in message
    assert words in message


def test_barman_credentials_are_keys_or_an_iam_role() -> None:
    both = CNPG.replace("        schedule:", "        iam_role: true\n        schedule:")
    with pytest.raises(SpecError, match="one of the two"):
        stack_of(db=both)


# --- the examples ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def normaldance() -> Spec:
    return load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml")


@pytest.fixture(scope="module")
def salespot() -> Spec:
    return load_spec(ROOT / "examples" / "salespot" / "shipyard.yaml")


@pytest.mark.parametrize("environment", ["dev", "staging", "production"])
def test_normaldance_runs_cloudnative_pg_beyond_dev(normaldance: Spec, environment: str) -> None:
    objects = build_manifests(normaldance.stack(environment)).objects  # validated against the CRDs
    clusters = by_kind(list(objects), "Cluster")
    if environment == "dev":
        assert clusters == {}
        assert "postgres" in by_kind(list(objects), "StatefulSet")
        return
    cluster = clusters["postgres"]["spec"]
    assert cluster["instances"] == {"staging": 2, "production": 3}[environment]
    destination = cluster["backup"]["barmanObjectStore"]["destinationPath"]
    assert destination == f"s3://normaldance-backups/{environment}-cnpg"
    assert "postgres-base" in by_kind(list(objects), "ScheduledBackup")
    assert "postgres-pooler-rw" in by_kind(list(objects), "Pooler")
    assert "redis-replica" in by_kind(list(objects), "StatefulSet")


@pytest.mark.parametrize("environment", ["dev", "staging", "production"])
def test_salespot_uses_rds_beyond_dev_and_validates(salespot: Spec, environment: str) -> None:
    stack = salespot.stack(environment)
    objects = build_manifests(stack).objects
    sets = by_kind(list(objects), "StatefulSet")
    if environment == "dev":
        assert "postgres" in sets
        return
    assert "postgres" not in sets
    assert by_kind(list(objects), "Cluster") == {}
    host = env_of(objects, "api")["PGHOST"]
    assert host == f"salespot-{environment}.c7x2kq9vd1ab.eu-west-1.rds.amazonaws.com"
    assert by_kind(list(objects), "CronJob"), "the S3 backups still run in the cluster"
