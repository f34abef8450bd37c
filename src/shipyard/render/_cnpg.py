"""PostgreSQL run by the CloudNativePG operator (`mode: cloudnative-pg`): a `Cluster`, its
`ScheduledBackup` and, when asked, a PgBouncer `Pooler`.

The operator creates the instances' pods, PVCs and the Services `<name>-rw` (the primary), `-ro`
(replicas) and `-r` (any); services connect to `-rw`, or to the Pooler's `<name>-pooler-rw`
(`_common.cluster_host`). Its pods are labelled `cnpg.io/cluster: <name>` (the Pooler's
`cnpg.io/poolerName: <pooler>`), which the NetworkPolicies select.

The application's credentials: CloudNativePG creates the database and its owner at bootstrap
(`initdb`) from a Secret of type `kubernetes.io/basic-auth` holding `username` and `password`.
That Secret is the one the spec's `password` reference names (`<name>-credentials/password` by
default), so services, backups and the operator read one password: it must hold `password` (the
reference's key, which `validate` requires to be `password`) and `username`, the spec's `user`.
When the stack's secrets come from an external store, the ExternalSecret writes that type and
adds the username itself; otherwise create the Secret as such (`kubectl create secret generic
--type=kubernetes.io/basic-auth --from-literal=username=… --from-literal=password=…`).
"""

from __future__ import annotations

from typing import Any

from ..spec import CloudNativePg, Postgres, SecretRef, Stack
from ._common import Object, cnpg_pooler_name, labels, metadata, resources, selector
from ._env import SecretUses, postgres_password

CNPG_API = "postgresql.cnpg.io/v1"
CNPG_IMAGE = "ghcr.io/cloudnative-pg/postgresql"
"""The operator project's PostgreSQL images (`<CNPG_IMAGE>:<major>`), with barman-cloud inside."""
CLUSTER_LABEL = "cnpg.io/cluster"
POOLER_LABEL = "cnpg.io/poolerName"
STATUS_PORT = 8000
"""The instance manager's status endpoint, which the operator polls on every pod."""
DATABASE = "database"
POOLER = "database-pooler"


def cnpg_settings(store: Postgres) -> CloudNativePg:
    return store.cloudnative_pg or CloudNativePg()


def cnpg_schedule(schedule: str) -> str:
    """A five-field cron schedule as CloudNativePG reads it: with a leading seconds field."""
    return f"0 {schedule}"


def _parameter(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _key_ref(ref: SecretRef, uses: SecretUses) -> dict[str, str]:
    uses.ref(ref)
    return {"name": ref.name, "key": ref.key}


def _barman(stack: Stack, settings: CloudNativePg, uses: SecretUses) -> dict[str, Any] | None:
    backup = settings.backup
    if backup is None:
        return None
    credentials: dict[str, Any]
    if backup.iam_role:
        credentials = {"inheritFromIAMRole": True}
    else:
        assert backup.access_key_id is not None
        assert backup.secret_access_key is not None
        credentials = {
            "accessKeyId": _key_ref(backup.access_key_id, uses),
            "secretAccessKey": _key_ref(backup.secret_access_key, uses),
        }
    if backup.region is not None:
        credentials["region"] = _key_ref(backup.region, uses)
    store: dict[str, Any] = {"destinationPath": backup.destination, "s3Credentials": credentials}
    if backup.endpoint_url is not None:
        store["endpointURL"] = backup.endpoint_url
    if backup.compression is not None:
        store["wal"] = {"compression": backup.compression}
        store["data"] = {"compression": backup.compression}
    return {"barmanObjectStore": store, "retentionPolicy": backup.retention, "target": backup.target}


def cluster(stack: Stack, name: str, store: Postgres, uses: SecretUses) -> Object:
    settings = cnpg_settings(store)
    assert store.storage is not None  # the model requires it outside `mode: external`
    password = postgres_password(name, store)
    uses.basic_auth_ref(password, store.user)
    storage: dict[str, Any] = {"size": store.storage.size}
    if store.storage.storage_class is not None:
        storage["storageClass"] = store.storage.storage_class
    spec: dict[str, Any] = {
        "instances": 1 + store.replicas,
        "imageName": store.image or f"{CNPG_IMAGE}:{store.version}",
        # The operator restarts replicas, then switches over to an updated one: no manual step.
        "primaryUpdateStrategy": "unsupervised",
        "enableSuperuserAccess": False,
        "bootstrap": {
            "initdb": {"database": store.database, "owner": store.user, "secret": {"name": password.name}}
        },
        "storage": storage,
        "affinity": {
            "enablePodAntiAffinity": True,
            "topologyKey": "kubernetes.io/hostname",
            "podAntiAffinityType": settings.anti_affinity,
        },
        # PodMonitors are rendered beside the stack's other monitors when the Prometheus Operator
        # is there; the operator's own would duplicate them.
        "monitoring": {"enablePodMonitor": False},
        # The stack's labels on every pod, PVC and Service the operator creates for it.
        # (the selector labels only: the operator, not shipyard, manages those objects).
        "inheritedMetadata": {"labels": selector(stack, name, DATABASE)},
    }
    parameters = {key: _parameter(value) for key, value in sorted(store.settings.items())}
    if parameters:
        spec["postgresql"] = {"parameters": parameters}
    amounts = resources(store.resources)
    if amounts:
        spec["resources"] = amounts
    barman = _barman(stack, settings, uses)
    if barman is not None:
        spec["backup"] = barman
    return {
        "apiVersion": CNPG_API,
        "kind": "Cluster",
        "metadata": metadata(stack, name, DATABASE),
        "spec": spec,
    }


def scheduled_backup(stack: Stack, name: str, store: Postgres) -> Object | None:
    backup = cnpg_settings(store).backup
    if backup is None:
        return None
    return {
        "apiVersion": CNPG_API,
        "kind": "ScheduledBackup",
        "metadata": metadata(stack, f"{name}-base", DATABASE),
        "spec": {
            "cluster": {"name": name},
            "schedule": cnpg_schedule(backup.schedule),
            "method": "barmanObjectStore",
            "backupOwnerReference": "self",
            "immediate": True,
        },
    }


def pooler(stack: Stack, name: str, store: Postgres) -> Object | None:
    bouncer = cnpg_settings(store).pooler
    if bouncer is None:
        return None
    pooler_name = cnpg_pooler_name(name)
    parameters: dict[str, str] = {}
    if bouncer.max_client_conn is not None:
        parameters["max_client_conn"] = str(bouncer.max_client_conn)
    if bouncer.default_pool_size is not None:
        parameters["default_pool_size"] = str(bouncer.default_pool_size)
    pgbouncer: dict[str, Any] = {"poolMode": bouncer.pool_mode}
    if parameters:
        pgbouncer["parameters"] = parameters
    spec: dict[str, Any] = {
        "cluster": {"name": name},
        "instances": bouncer.instances,
        "type": "rw",
        "pgbouncer": pgbouncer,
        "monitoring": {"enablePodMonitor": False},
    }
    template: dict[str, Any] = {"metadata": {"labels": labels(stack, pooler_name, POOLER)}}
    amounts = resources(bouncer.resources)
    if amounts:
        # The operator fills in the rest of its `pgbouncer` container (image, command, probes).
        template["spec"] = {"containers": [{"name": "pgbouncer", "resources": amounts}]}
    spec["template"] = template
    return {
        "apiVersion": CNPG_API,
        "kind": "Pooler",
        "metadata": metadata(stack, pooler_name, POOLER),
        "spec": spec,
    }


def cnpg_objects(stack: Stack, name: str, store: Postgres, uses: SecretUses) -> list[Object]:
    objects = [cluster(stack, name, store, uses)]
    for extra in (scheduled_backup(stack, name, store), pooler(stack, name, store)):
        if extra is not None:
            objects.append(extra)
    return objects
