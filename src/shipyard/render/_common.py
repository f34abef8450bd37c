"""What every rendered object shares: labels, metadata, the restricted security settings."""

from __future__ import annotations

from typing import Any

from ..spec import Resources, Stack

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


def cluster_host(stack: Stack, name: str) -> str:
    """The in-cluster host name of datastore `name`'s writable endpoint: what services and the
    backup CronJobs connect to (a Service of the same namespace, found through the pod's DNS
    search path)."""
    return name


def env_name(name: str) -> str:
    """A component name as an environment variable prefix: 'orders-db' -> 'ORDERS_DB'."""
    return name.upper().replace("-", "_")
