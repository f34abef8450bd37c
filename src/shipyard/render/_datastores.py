"""PostgreSQL and Redis as StatefulSets, each behind a headless Service; the dispatch on a
datastore's `mode` (CloudNativePG in `_cnpg.py`; nothing for `external`); and the pods each
datastore's NetworkPolicies select.

PostgreSQL is one StatefulSet for the primary and, when replicas are asked for, one for the
streaming replicas: a replica's first start copies the primary with `pg_basebackup
--write-recovery-conf`, later starts find the copy on their volume and follow the primary.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from ..spec import CNPG_PORT, Postgres, Redis, Resources, Stack, Storage, byte_count, millicores
from ._cnpg import CLUSTER_LABEL, POOLER, POOLER_LABEL, STATUS_PORT, cnpg_objects, cnpg_settings
from ._common import (
    Object,
    cnpg_pooler_name,
    container_security,
    empty_dir,
    labels,
    metadata,
    pod_security,
    resources,
    selector,
)
from ._env import SecretUses, postgres_password
from ._env import replica_name as replica_name  # noqa: PLC0414 (the replicas' name, re-exported)

# The uid (and gid) of the `postgres` and `redis` users in the official Debian-based images.
DATASTORE_UID = 999
PRIMARY = "database"
REPLICA = "database-replica"
CACHE = "cache"
CACHE_REPLICA = "cache-replica"
PGDATA_MOUNT = "/var/lib/postgresql/data"
INIT_SCRIPT = "10-replication.sh"
# Lets replicas connect for streaming replication (the image only admits ordinary connections).
_REPLICATION_HBA = """#!/bin/sh
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
"""


def init_config_name(name: str) -> str:
    return f"{name}-init"


def _setting(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _pg_args(store: Postgres) -> list[str]:
    args = ["postgres"]
    settings = {"port": store.port, **store.settings}
    for key in sorted(settings):
        args += ["-c", f"{key}={_setting(settings[key])}"]
    return args


def _claim_template(name: str, storage: Storage) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class is not None:
        spec["storageClassName"] = storage.storage_class
    return {"metadata": {"name": name}, "spec": spec}


def _exec_probe(command: list[str], period: int, initial_delay: int) -> dict[str, Any]:
    return {
        "exec": {"command": command},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": 6,
    }


def headless_service(stack: Stack, name: str, component: str, port_name: str, port: int) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(stack, name, component),
        "spec": {
            "clusterIP": "None",
            "selector": selector(stack, name, component),
            "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}],
        },
    }


def _stateful_set(
    stack: Stack,
    name: str,
    *,
    component: str,
    replicas: int,
    pod: dict[str, Any],
    claims: list[dict[str, Any]],
) -> Object:
    spec: dict[str, Any] = {
        "serviceName": name,
        "replicas": replicas,
        "podManagementPolicy": "OrderedReady",
        "selector": {"matchLabels": selector(stack, name, component)},
        "template": {"metadata": {"labels": labels(stack, name, component)}, "spec": pod},
    }
    if claims:
        spec["volumeClaimTemplates"] = claims
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(stack, name, component),
        "spec": spec,
    }


# pg_basebackup streams files to disk and holds little in memory: what the copy gets for an amount
# the spec does not give the replica.
COPY_PRIMARY_REQUESTS = {"cpu": "100m", "memory": "64Mi"}
COPY_PRIMARY_LIMITS = {"cpu": "1", "memory": "256Mi"}


def _copy_resources(replica: Resources) -> dict[str, dict[str, str]]:
    """The copy-primary init container's requests and limits: the replica's own.

    An init container runs before the pod's containers, so the pod's effective request is the larger
    of the two: equal amounts add nothing to what is scheduled, and the copy of a large primary gets
    the replica's whole CPU. An amount the spec leaves out is a fixed small one, kept on the right
    side of the amount given (a request never above its limit).
    """
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for field, parse in (("cpu", millicores), ("memory", byte_count)):
        request = getattr(replica.requests, field)
        limit = getattr(replica.limits, field)
        if request is None:
            fixed = COPY_PRIMARY_REQUESTS[field]
            request = fixed if limit is None or parse(fixed) <= parse(limit) else limit
        if limit is None:
            fixed = COPY_PRIMARY_LIMITS[field]
            limit = fixed if parse(fixed) >= parse(request) else request
        requests[field], limits[field] = str(request), str(limit)
    return {"requests": requests, "limits": limits}


def postgres_objects(stack: Stack, name: str, store: Postgres, uses: SecretUses) -> list[Object]:
    """What runs PostgreSQL datastore `name` in the cluster, by its mode: StatefulSets, a
    CloudNativePG Cluster, or nothing for an external (managed) database."""
    if store.mode == "external":
        return []
    if store.mode == "cloudnative-pg":
        return cnpg_objects(stack, name, store, uses)
    return _postgres_stateful_sets(stack, name, store, uses)


def _postgres_stateful_sets(stack: Stack, name: str, store: Postgres, uses: SecretUses) -> list[Object]:
    assert store.storage is not None  # the model requires it outside `mode: external`
    image = store.image or f"postgres:{store.version}"
    password = uses.ref(postgres_password(name, store))
    pgdata = f"{PGDATA_MOUNT}/pgdata"
    ready = ["pg_isready", "-h", "127.0.0.1", "-p", str(store.port), "-U", store.user, "-d", store.database]
    mounts = [
        {"name": "data", "mountPath": PGDATA_MOUNT},
        {"name": "run", "mountPath": "/var/run/postgresql"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    env = [
        {"name": "POSTGRES_DB", "value": store.database},
        {"name": "POSTGRES_USER", "value": store.user},
        {"name": "POSTGRES_PASSWORD", "valueFrom": password},
        {"name": "PGDATA", "value": pgdata},
    ]

    def container(spec_resources: Resources, extra_mounts: list[dict[str, Any]]) -> dict[str, Any]:
        amounts = resources(spec_resources)
        return {
            "name": "postgres",
            "image": image,
            "args": _pg_args(store),
            "env": env,
            "ports": [{"name": "postgres", "containerPort": store.port, "protocol": "TCP"}],
            **({"resources": amounts} if amounts else {}),
            "securityContext": container_security(),
            "volumeMounts": [*mounts, *extra_mounts],
            "readinessProbe": _exec_probe(ready, period=5, initial_delay=5),
            "livenessProbe": _exec_probe(ready, period=10, initial_delay=30),
        }

    volumes = [empty_dir("run"), empty_dir("tmp")]
    claims = [_claim_template("data", store.storage)]
    primary_mounts: list[dict[str, Any]] = []
    primary_volumes = list(volumes)
    objects: list[Object] = []
    if store.replicas > 0:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(stack, init_config_name(name), PRIMARY),
                "data": {INIT_SCRIPT: _REPLICATION_HBA},
            }
        )
        primary_mounts = [{"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True}]
        primary_volumes.append({"name": "init", "configMap": {"name": init_config_name(name)}})
    primary_pod = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security(DATASTORE_UID),
        "terminationGracePeriodSeconds": 60,
        "containers": [container(store.resources, primary_mounts)],
        "volumes": primary_volumes,
    }
    objects += [
        headless_service(stack, name, PRIMARY, "postgres", store.port),
        _stateful_set(stack, name, component=PRIMARY, replicas=1, pod=primary_pod, claims=claims),
    ]
    if store.replicas == 0:
        return objects
    copy = (
        'set -e; if [ ! -s "$PGDATA/PG_VERSION" ]; then pg_basebackup'
        f" --host={shlex.quote(name)} --port={store.port} --username={shlex.quote(store.user)}"
        ' --pgdata="$PGDATA" --wal-method=stream --write-recovery-conf --checkpoint=fast; fi'
    )
    replica_pod = {
        **primary_pod,
        "initContainers": [
            {
                "name": "copy-primary",
                "image": image,
                "command": ["sh", "-c", copy],
                "env": [{"name": "PGPASSWORD", "valueFrom": password}, {"name": "PGDATA", "value": pgdata}],
                "resources": _copy_resources(store.replica_resources or store.resources),
                "securityContext": container_security(),
                "volumeMounts": mounts,
            }
        ],
        "containers": [container(store.replica_resources or store.resources, [])],
        "volumes": volumes,
    }
    replica = replica_name(name)
    objects += [
        headless_service(stack, replica, REPLICA, "postgres", store.port),
        _stateful_set(
            stack, replica, component=REPLICA, replicas=store.replicas, pod=replica_pod, claims=claims
        ),
    ]
    return objects


def redis_objects(stack: Stack, name: str, store: Redis, uses: SecretUses) -> list[Object]:
    """Redis datastore `name`: a primary StatefulSet and, with `replicas`, a second one of read
    replicas (`<name>-replica`, each `--replicaof` the primary's Service) behind its own Service;
    nothing for an external (managed) Redis."""
    if store.mode == "external":
        return []
    image = store.image or f"redis:{store.version}"
    args = ["redis-server", "--port", str(store.port), "--dir", "/data"]
    if store.maxmemory is not None:
        args += ["--maxmemory", str(byte_count(store.maxmemory))]
    args += ["--maxmemory-policy", store.eviction_policy]
    args += ["--save", " ".join(store.persistence.rdb)]
    if store.persistence.aof == "no":
        args += ["--appendonly", "no"]
    else:
        args += ["--appendonly", "yes", "--appendfsync", store.persistence.aof]
    env: list[dict[str, Any]] = []
    if store.password is not None:
        secret = uses.ref(store.password)
        # REDISCLI_AUTH lets the probes' redis-cli authenticate without a password argument.
        env = [
            {"name": "REDIS_PASSWORD", "valueFrom": secret},
            {"name": "REDISCLI_AUTH", "valueFrom": secret},
        ]
        args += ["--requirepass", "$(REDIS_PASSWORD)"]
    ping = ["redis-cli", "-p", str(store.port), "ping"]
    amounts = resources(store.resources)

    def pod(container_args: list[str]) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": "redis",
            "image": image,
            "args": container_args,
            **({"env": env} if env else {}),
            "ports": [{"name": "redis", "containerPort": store.port, "protocol": "TCP"}],
            **({"resources": amounts} if amounts else {}),
            "securityContext": container_security(),
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
            "readinessProbe": _exec_probe(ping, period=5, initial_delay=5),
            "livenessProbe": _exec_probe(ping, period=10, initial_delay=30),
        }
        volumes = [empty_dir("tmp")] if store.storage is not None else [empty_dir("data"), empty_dir("tmp")]
        return {
            "automountServiceAccountToken": False,
            "securityContext": pod_security(DATASTORE_UID),
            "terminationGracePeriodSeconds": 30,
            "containers": [container],
            "volumes": volumes,
        }

    claims = [_claim_template("data", store.storage)] if store.storage is not None else []
    objects = [
        headless_service(stack, name, CACHE, "redis", store.port),
        _stateful_set(stack, name, component=CACHE, replicas=1, pod=pod(args), claims=claims),
    ]
    if store.replicas == 0:
        return objects
    # A replica follows the primary's Service (the primary pod, whatever its IP after a restart),
    # authenticating with the same password, and serves reads only.
    follow = [*args, "--replicaof", name, str(store.port), "--replica-read-only", "yes"]
    if store.password is not None:
        follow += ["--masterauth", "$(REDIS_PASSWORD)"]
    replica = replica_name(name)
    objects += [
        headless_service(stack, replica, CACHE_REPLICA, "redis", store.port),
        _stateful_set(
            stack, replica, component=CACHE_REPLICA, replicas=store.replicas, pod=pod(follow), claims=claims
        ),
    ]
    return objects


@dataclasses.dataclass(frozen=True)
class DatastoreTarget:
    """Pods of the namespace that accept connections for a datastore, and who besides the stack's
    services may connect: what a NetworkPolicy `allow-<name>` admits."""

    name: str
    component: str
    port: int
    pods: dict[str, str]
    """The pod selector (shipyard's labels, or the operator's for pods it creates)."""
    datastore: str
    dependents: bool
    """Whether the services that depend on the datastore connect here (its `cluster_host`, or its
    replicas for reads)."""
    peers: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    """Other pods of the datastore that connect here (replicas to their primary, a pooler to its
    Cluster), by a name for the rule."""
    rules: tuple[dict[str, Any], ...] = ()
    """Further ingress rules, whole (e.g. the CloudNativePG operator's namespace)."""


def datastore_targets(stack: Stack, name: str, store: Postgres | Redis) -> list[DatastoreTarget]:
    """The NetworkPolicy targets of one datastore, by its mode; none for an external one."""
    if store.mode == "external":
        return []
    if isinstance(store, Postgres) and store.mode == "cloudnative-pg":
        return _cnpg_targets(stack, name, store)
    primary_component, replica_component = (
        (PRIMARY, REPLICA) if isinstance(store, Postgres) else (CACHE, CACHE_REPLICA)
    )
    primary = DatastoreTarget(
        name, primary_component, store.port, selector(stack, name, primary_component), name, dependents=True
    )
    if store.replicas == 0:
        return [primary]
    replica = replica_name(name)
    primary.peers[replica] = selector(stack, replica, replica_component)
    return [
        primary,
        DatastoreTarget(
            replica,
            replica_component,
            store.port,
            selector(stack, replica, replica_component),
            name,
            dependents=True,
        ),
    ]


def _cnpg_targets(stack: Stack, name: str, store: Postgres) -> list[DatastoreTarget]:
    settings = cnpg_settings(store)
    instances = {CLUSTER_LABEL: name}
    namespace = {"kubernetes.io/metadata.name": settings.operator_namespace}
    operator: dict[str, Any] = {
        "from": [{"namespaceSelector": {"matchLabels": namespace}}],
        "ports": [{"port": STATUS_PORT, "protocol": "TCP"}, {"port": CNPG_PORT, "protocol": "TCP"}],
    }
    # Instances stream WAL from the primary and answer each other's instance managers.
    among = {"from": [{"podSelector": {"matchLabels": instances}}], "ports": operator["ports"]}
    pooled = settings.pooler is not None
    cluster = DatastoreTarget(
        name, PRIMARY, CNPG_PORT, instances, name, dependents=not pooled, rules=(operator, among)
    )
    if not pooled:
        return [cluster]
    pooler = cnpg_pooler_name(name)
    cluster.peers[pooler] = {POOLER_LABEL: pooler}
    return [
        cluster,
        DatastoreTarget(pooler, POOLER, CNPG_PORT, {POOLER_LABEL: pooler}, name, dependents=True),
    ]
