"""One environment's Stack -> the Kubernetes objects that run it, validated."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..errors import RenderError
from ..spec import Postgres, Stack
from ._argo import argo_rollouts
from ._backups import backup_objects
from ._common import (
    ENVIRONMENT_LABEL,
    MANAGED_BY_LABEL,
    MAX_CRONJOB_NAME,
    MAX_NAME,
    PART_OF_LABEL,
    Object,
    metadata,
)
from ._control_plane import control_plane_objects
from ._datastores import postgres_objects, redis_objects
from ._egress import egress_policies
from ._env import SecretUses, service_env
from ._exporters import exporter_objects
from ._ingress import ingress_objects
from ._limits import check_sizes
from ._network import network_policies
from ._operator import operator_objects
from ._schema import DEFAULT_KUBE_VERSION, schema_version, validate_objects
from ._workloads import (
    autoscaler,
    cluster_service,
    config_map,
    cron_jobs,
    disruption_budget,
    workload_objects,
)

# Apply order: the namespace, the identities pods run as, its network rules before any pod can
# start, the Secrets and configuration pods read, storage, datastores (an operator's Cluster
# before the workloads that connect to it), then workloads and what routes to, scales, backs up
# or watches them.
KIND_ORDER = (
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
    "ExternalSecret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Service",
    "Cluster",
    "StatefulSet",
    "Pooler",
    "AnalysisTemplate",
    "Deployment",
    "Rollout",
    "CronJob",
    "ScheduledBackup",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Middleware",
    "TraefikService",
    "Certificate",
    "IngressRoute",
    "Ingress",
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
)
_KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}


@dataclass(frozen=True)
class SkippedService:
    """A service that has no Kubernetes form, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Manifests:
    """The validated objects of one environment, in apply order."""

    environment: str
    namespace: str
    objects: tuple[Object, ...]
    skipped: tuple[SkippedService, ...] = ()

    def counts(self) -> dict[str, int]:
        """How many objects of each kind, in apply order."""
        counted = Counter(str(obj["kind"]) for obj in self.objects)
        return {kind: counted[kind] for kind in sorted(counted, key=object_rank)}


def object_rank(kind: str) -> int:
    return _KIND_RANK.get(kind, len(KIND_ORDER))


def object_key(obj: Object) -> tuple[int, str, str]:
    """The stable sort key of an object: kind in apply order, then name."""
    return (object_rank(str(obj["kind"])), str(obj["kind"]), str(obj["metadata"]["name"]))


def build_manifests(
    stack: Stack, *, kube_version: str = DEFAULT_KUBE_VERSION, argo: bool = False
) -> Manifests:
    """Render one environment and validate every object; raise RenderError if one is invalid.

    With `argo`, each service's Deployment is replaced by an Argo Rollouts `Rollout` (and its
    AnalysisTemplate and preview/canary Service) driven by the spec's rollout policy.
    """
    version = schema_version(kube_version)
    major, minor = (int(part) for part in version.split("."))
    uses = SecretUses(stack)
    objects: list[Object] = [_namespace(stack)]
    rendered: list[str] = []
    skipped: list[SkippedService] = []
    for name, service in sorted(stack.services.items()):
        if service.image is None:
            skipped.append(SkippedService(name, "no image: it runs only on plain hosts (`run`)"))
            continue
        rendered.append(name)
        env = service_env(stack, service, uses)
        if env.config:
            objects.append(config_map(stack, name, service, env))
        objects += workload_objects(stack, name, service, env, (major, minor))
        if service.port is not None:
            objects.append(cluster_service(stack, name, service))
        if service.autoscaling is not None:
            objects.append(autoscaler(stack, name, service))
        if service.autoscaling is not None or service.replicas >= 2:
            objects.append(disruption_budget(stack, name, service))
        objects += ingress_objects(stack, name, service)
        objects += cron_jobs(stack, name, service, env)
    for name, store in sorted(stack.datastores.items()):
        if isinstance(store, Postgres):
            objects += postgres_objects(stack, name, store, uses)
        else:
            objects += redis_objects(stack, name, store, uses)
    objects += exporter_objects(stack, uses)
    objects += backup_objects(stack, uses)
    objects += control_plane_objects(stack, uses)
    objects += network_policies(stack, rendered)
    objects += egress_policies(stack, rendered)
    objects += operator_objects(stack, rendered)
    objects += _external_secrets(stack, uses)
    if argo:
        objects = argo_rollouts(stack, objects, kube_version=version)
    objects.sort(key=object_key)
    _check_names(objects)
    check_sizes(objects, stack)
    validate_objects(objects, kube_version=version)
    return Manifests(
        environment=stack.environment,
        namespace=stack.k8s_namespace,
        objects=tuple(objects),
        skipped=tuple(skipped),
    )


def render_kubernetes(
    stack: Stack, *, kube_version: str = DEFAULT_KUBE_VERSION, argo: bool = False
) -> list[dict[str, Any]]:
    """The Kubernetes objects of one environment, validated, in apply order."""
    return list(build_manifests(stack, kube_version=kube_version, argo=argo).objects)


def _namespace(stack: Stack) -> Object:
    labels = {
        PART_OF_LABEL: stack.name,
        MANAGED_BY_LABEL: "shipyard",
        # Everything rendered here meets the restricted standard; admission enforces it.
        "pod-security.kubernetes.io/enforce": "restricted",
    }
    if stack.environment:
        labels[ENVIRONMENT_LABEL] = stack.environment
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": stack.k8s_namespace, "labels": labels},
    }


def _external_secrets(stack: Stack, uses: SecretUses) -> list[Object]:
    """One ExternalSecret per Secret that is read from an external store.

    The remote key is the Secret's name and the property its key, so `apricode-app/api-key` is
    read from `apricode-app`'s `api-key` in the store.
    """
    default_store = stack.secrets.store
    refresh = f"{default_store.refresh}s" if default_store else "3600s"
    kind = default_store.kind if default_store else "ClusterSecretStore"
    objects = []
    for secret, store in sorted(uses.stores.items()):
        meta = metadata(stack, secret, "secrets")
        objects.append(
            {
                "apiVersion": "external-secrets.io/v1",
                "kind": "ExternalSecret",
                "metadata": meta,
                "spec": {
                    "refreshInterval": refresh,
                    "secretStoreRef": {"kind": kind, "name": store},
                    "target": _secret_target(secret, uses),
                    "data": [
                        {"secretKey": key, "remoteRef": {"key": secret, "property": key}}
                        for key in sorted(uses.keys[secret])
                    ],
                },
            }
        )
    return objects


def _secret_target(secret: str, uses: SecretUses) -> dict[str, Any]:
    """The Secret an ExternalSecret writes; a database owner's (CloudNativePG reads it at
    bootstrap) is `kubernetes.io/basic-auth` with the owner's `username` beside the fetched keys."""
    target: dict[str, Any] = {"name": secret, "creationPolicy": "Owner"}
    username = uses.basic_auth.get(secret)
    if username is not None:
        target["template"] = {
            "type": "kubernetes.io/basic-auth",
            "mergePolicy": "Merge",
            "data": {"username": username},
        }
    return target


def _check_names(objects: list[Object]) -> None:
    """Names the schemas do not check: unique per kind, and short enough for the API server."""
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
        if (kind, name) in seen:
            raise RenderError(
                f"{kind}/{name} would be rendered twice: a service and a datastore (or two derived"
                " names) collide; rename one of them"
            )
        seen.add((kind, name))
        limit = MAX_CRONJOB_NAME if kind == "CronJob" else MAX_NAME
        if len(name) > limit:
            raise RenderError(
                f"{kind}/{name}: metadata.name is {len(name)} characters, Kubernetes allows {limit};"
                " shorten the names it is made of"
            )
