"""What every rendered object shares: labels, metadata, the restricted security settings."""

from __future__ import annotations

from typing import Any

from ..spec import Postgres, Resources, Stack

Object = dict[str, Any]

NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ENVIRONMENT_LABEL = "shipyard.dev/environment"
CONFIG_HASH_ANNOTATION = "shipyard.dev/config-hash"

# A Kubernetes-wide cap; a CronJob's name is shorter because its Jobs append 11 characters.
MAX_NAME = 63
MAX_CRONJOB_NAME = 52


def labels(stack: Stack, name: str, component: str) -> dict[str, str]:
    """The recommended labels of everything shipyard renders for `name`."""
    return {
        NAME_LABEL: name,
        PART_OF_LABEL: stack.name,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: "shipyard",
    }


def selector(stack: Stack, name: str, component: str) -> dict[str, str]:
    """The pod selector of one workload; immutable once applied, so it holds only stable labels."""
    return {NAME_LABEL: name, PART_OF_LABEL: stack.name, COMPONENT_LABEL: component}


def metadata(stack: Stack, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": stack.k8s_namespace, "labels": labels(stack, name, component)}


def resources(spec: Resources) -> dict[str, dict[str, str]]:
    """A container's requests and limits; only the amounts the spec gives."""
    result: dict[str, dict[str, str]] = {}
    for section, amounts in (("requests", spec.requests), ("limits", spec.limits)):
        given = {k: v for k, v in (("cpu", amounts.cpu), ("memory", amounts.memory)) if v is not None}
        if given:
            result[section] = given
    return result


def pod_security(run_as_user: int | None = None) -> dict[str, Any]:
    """Pod-level settings that satisfy the `restricted` Pod Security Standard."""
    context: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if run_as_user is not None:
        # Datastore images start as root and drop privileges; running them as their own user
        # from the start needs the volumes group-owned by that user too.
        context |= {"runAsUser": run_as_user, "runAsGroup": run_as_user, "fsGroup": run_as_user}
    return context


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def empty_dir(name: str) -> dict[str, Any]:
    return {"name": name, "emptyDir": {}}


def cnpg_rw_service(name: str) -> str:
    """The Service CloudNativePG creates for a Cluster's primary (`-ro`: replicas, `-r`: any)."""
    return f"{name}-rw"


def cnpg_pooler_name(name: str) -> str:
    """The `Pooler` in front of Cluster `name`'s primary; CloudNativePG names its Service (and
    labels its pods `cnpg.io/poolerName`) after it. It may not be the Cluster's own name."""
    return f"{name}-pooler-rw"


def cluster_host(stack: Stack, name: str, *, direct: bool = False) -> str:
    """The host name of datastore `name`'s writable endpoint as pods of the stack reach it: what
    services and the backup CronJobs connect to. The one place that says it, per mode:

    - `statefulset`: the primary's Service, `name` (same namespace, found through the pod's DNS
      search path);
    - `cloudnative-pg`: the Cluster's `<name>-rw` Service, or with a `pooler` the Pooler's
      `<name>-pooler-rw`; `direct` skips the pooler, for what must reach PostgreSQL itself
      (pg_dump, which PgBouncer's transaction mode would break; exporters);
    - `external`: the managed database's `external.host`.
    """
    store = stack.datastores.get(name)
    if store is None or store.mode == "statefulset":
        return name
    if store.mode == "external":
        assert store.external is not None  # the model requires it in this mode
        return store.external.host
    settings = store.cloudnative_pg if isinstance(store, Postgres) else None
    if settings is not None and settings.pooler is not None and not direct:
        return cnpg_pooler_name(name)
    return cnpg_rw_service(name)


def env_name(name: str) -> str:
    """A component name as an environment variable prefix: 'orders-db' -> 'ORDERS_DB'."""
    return name.upper().replace("-", "_")
