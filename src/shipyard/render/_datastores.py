"""PostgreSQL and Redis as StatefulSets, each behind a headless Service.

PostgreSQL is one StatefulSet for the primary and, when replicas are asked for, one for the
streaming replicas: a replica's first start copies the primary with `pg_basebackup
--write-recovery-conf`, later starts find the copy on their volume and follow the primary.
"""

from __future__ import annotations

import shlex
from typing import Any

from ..spec import Postgres, Redis, Resources, Stack, Storage, byte_count
from ._common import (
    Object,
    container_security,
    empty_dir,
    labels,
    metadata,
    pod_security,
    resources,
    selector,
)
from ._env import SecretUses, postgres_password

# The uid (and gid) of the `postgres` and `redis` users in the official Debian-based images.
DATASTORE_UID = 999
PRIMARY = "database"
REPLICA = "database-replica"
CACHE = "cache"
PGDATA_MOUNT = "/var/lib/postgresql/data"
INIT_SCRIPT = "10-replication.sh"
# Lets replicas connect for streaming replication (the image only admits ordinary connections).
_REPLICATION_HBA = """#!/bin/sh
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
"""


def replica_name(name: str) -> str:
    return f"{name}-replica"


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


def postgres_objects(stack: Stack, name: str, store: Postgres, uses: SecretUses) -> list[Object]:
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
    container: dict[str, Any] = {
        "name": "redis",
        "image": image,
        "args": args,
        **({"env": env} if env else {}),
        "ports": [{"name": "redis", "containerPort": store.port, "protocol": "TCP"}],
        **({"resources": amounts} if amounts else {}),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
        "readinessProbe": _exec_probe(ping, period=5, initial_delay=5),
        "livenessProbe": _exec_probe(ping, period=10, initial_delay=30),
    }
    volumes = [empty_dir("tmp")]
    claims = []
    if store.storage is not None:
        claims = [_claim_template("data", store.storage)]
    else:
        volumes.insert(0, empty_dir("data"))
    pod = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security(DATASTORE_UID),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": volumes,
    }
    return [
        headless_service(stack, name, CACHE, "redis", store.port),
        _stateful_set(stack, name, component=CACHE, replicas=1, pod=pod, claims=claims),
    ]
