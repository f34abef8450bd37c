"""A service's objects: Deployment or StatefulSet, ServiceAccount, Service, HPA,
PodDisruptionBudget, CronJobs, PVCs (the Ingress is the ingress controller's: `_ingress`)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from ..spec import Probe, Service, Stack, Volume
from ._common import (
    CONFIG_HASH_ANNOTATION,
    Object,
    container_security,
    labels,
    metadata,
    pod_security,
    resources,
    selector,
)
from ._env import ContainerEnv

# How long a stopping pod gets beyond its drain before it is killed: time for the app's own
# shutdown once traffic has stopped.
SHUTDOWN_MARGIN = 10
STARTUP_PERIOD = 5
PORT_NAME = "http"


def config_map_name(service_name: str) -> str:
    return f"{service_name}-env"


def config_map(stack: Stack, name: str, service: Service, env: ContainerEnv) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(stack, config_map_name(name), service.role),
        "data": dict(env.config),
    }


def _container_env(name: str, env: ContainerEnv) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if env.config:
        fields["envFrom"] = [{"configMapRef": {"name": config_map_name(name)}}]
    if env.env:
        fields["env"] = env.env
    return fields


def _http_probe(probe: Probe) -> dict[str, Any]:
    return {
        "httpGet": {"path": probe.path, "port": PORT_NAME},
        "periodSeconds": probe.period,
        "timeoutSeconds": probe.timeout,
        "failureThreshold": probe.failure_threshold,
    }


def _probes(service: Service) -> dict[str, Any]:
    """Liveness and readiness as given; a startup probe that allows `startup_delay` to start.

    Probes need the service's port; a worker without one is watched only by its restarts.
    """
    if service.port is None:
        return {}
    health = service.health
    probes: dict[str, Any] = {}
    if health.liveness:
        # The API server refuses a liveness successThreshold other than 1: none is written.
        probes["livenessProbe"] = _http_probe(health.liveness)
    if health.readiness:
        probes["readinessProbe"] = {
            **_http_probe(health.readiness),
            "successThreshold": health.readiness.success_threshold,
        }
    if health.startup_delay > 0:
        model = health.readiness or health.liveness
        action: dict[str, Any] = (
            {"httpGet": {"path": model.path, "port": PORT_NAME}}
            if model
            else {"tcpSocket": {"port": PORT_NAME}}
        )
        probes["startupProbe"] = {
            **action,
            "periodSeconds": STARTUP_PERIOD,
            "failureThreshold": max(1, math.ceil(health.startup_delay / STARTUP_PERIOD)),
        }
    return probes


def _pre_stop(drain: int, kube_version: tuple[int, int]) -> dict[str, Any]:
    # The sleep action (GA path since 1.30) needs no `sleep` binary in the image.
    if kube_version >= (1, 30):
        return {"sleep": {"seconds": drain}}
    return {"exec": {"command": ["sleep", str(drain)]}}


def volume_claim_name(service_name: str, volume_name: str) -> str:
    return f"{service_name}-{volume_name}"


def volume_claim_names(service_name: str, service: Service, volume_name: str) -> list[str]:
    """The PersistentVolumeClaims that hold a service's volume: the one claim a Deployment's pods
    share, or one per pod of a StatefulSet (`<template>-<statefulset>-<ordinal>`, Kubernetes' own
    naming)."""
    if service.workload == "statefulset":
        return [f"{volume_name}-{service_name}-{ordinal}" for ordinal in range(service.replicas)]
    return [volume_claim_name(service_name, volume_name)]


def workload_kind(service: Service) -> str:
    return "StatefulSet" if service.workload == "statefulset" else "Deployment"


def governing_service_name(service_name: str) -> str:
    return f"{service_name}-pods"


TMP = "/tmp"


def _writable(service: Service) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, mount) of each directory the service writes to: `/tmp` always, then the spec's.

    A volume is named after its path (`/app/.next/cache` -> `app-next-cache`; `/tmp` -> `tmp`), made
    unique against the service's own volumes and each other.
    """
    mounted = {volume.mount for volume in service.volumes.values()}
    # /tmp is writable already when a volume is mounted there.
    dirs = ({} if TMP in mounted else {TMP: None}) | {d.path: d.size_limit for d in service.writable}
    taken = set(service.volumes)
    pairs = []
    for path, size_limit in dirs.items():
        base = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")[:50].strip("-") or "writable"
        name, suffix = base, 2
        while name in taken:
            name, suffix = f"{base}-{suffix}", suffix + 1
        taken.add(name)
        source: dict[str, Any] = {"sizeLimit": size_limit} if size_limit is not None else {}
        pairs.append(({"name": name, "emptyDir": source}, {"name": name, "mountPath": path}))
    return pairs


def writable_mounts(service: Service) -> list[dict[str, Any]]:
    """The mounts of the service's writable directories, for each of its containers."""
    return [mount for _, mount in _writable(service)]


def service_pod_security(service: Service) -> dict[str, Any]:
    """The restricted settings, with the ids the spec gives (an image with a named USER needs
    `run_as_user`: the kubelet verifies runAsNonRoot only on a numeric user)."""
    context = pod_security()
    ids = (
        ("runAsUser", service.run_as_user),
        ("runAsGroup", service.run_as_group),
        ("fsGroup", service.fs_group),
    )
    context |= {key: value for key, value in ids if value is not None}
    return context


def _identity(name: str, service: Service) -> dict[str, Any]:
    """Who the pods run as: the service's account (its token only if asked) and its ids."""
    return {
        "serviceAccountName": name,
        "automountServiceAccountToken": service.service_account.token,
        "securityContext": service_pod_security(service),
    }


def _pod_template(
    stack: Stack, name: str, service: Service, env: ContainerEnv, kube_version: tuple[int, int]
) -> dict[str, Any]:
    """The pod template of the service's Deployment or StatefulSet (and of an Argo Rollout)."""
    assert service.image is not None  # services without an image are skipped before this
    container_resources = resources(service.resources)
    common = {
        "image": service.image,
        **_container_env(name, env),
        **({"resources": container_resources} if container_resources else {}),
        "securityContext": container_security(),
    }
    mounts = writable_mounts(service)
    mounts += [{"name": vol, "mountPath": spec.mount} for vol, spec in sorted(service.volumes.items())]
    container: dict[str, Any] = {"name": name, **common, "volumeMounts": mounts, **_probes(service)}
    if service.port is not None:
        container["ports"] = [{"name": PORT_NAME, "containerPort": service.port, "protocol": "TCP"}]
    if service.drain > 0:
        container["lifecycle"] = {"preStop": _pre_stop(service.drain, kube_version)}
    volumes = [volume for volume, _ in _writable(service)]
    if service.workload == "deployment":
        # A StatefulSet's pods get their claims from its volumeClaimTemplates, named like the volume.
        volumes += [
            {"name": vol, "persistentVolumeClaim": {"claimName": volume_claim_name(name, vol)}}
            for vol in sorted(service.volumes)
        ]
    pod: dict[str, Any] = {
        **_identity(name, service),
        "terminationGracePeriodSeconds": service.drain + SHUTDOWN_MARGIN,
        "containers": [container],
        "volumes": volumes,
    }
    if service.migration:
        pod["initContainers"] = [
            {
                "name": "migrate",
                **common,
                "command": list(service.migration),
                "volumeMounts": writable_mounts(service),
            }
        ]
    template_metadata: dict[str, Any] = {"labels": labels(stack, name, service.role)}
    if env.config:
        # A changed ConfigMap does not restart pods by itself; a changed template does.
        digest = hashlib.sha256(json.dumps(env.config, sort_keys=True).encode()).hexdigest()[:16]
        template_metadata["annotations"] = {CONFIG_HASH_ANNOTATION: digest}
    return {"metadata": template_metadata, "spec": pod}


def deployment(
    stack: Stack, name: str, service: Service, env: ContainerEnv, kube_version: tuple[int, int]
) -> Object:
    most = service.autoscaling.max if service.autoscaling else service.replicas
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(stack, name, service.role)},
        "strategy": {
            "type": "RollingUpdate",
            # Never below the wanted count while rolling; surge a quarter, at least one pod.
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%" if most >= 4 else 1},
        },
        "template": _pod_template(stack, name, service, env, kube_version),
    }
    if service.autoscaling is None:
        # With an HPA the replica count is the HPA's; writing it here would reset it on apply.
        spec["replicas"] = service.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(stack, name, service.role),
        "spec": spec,
    }


def stateful_set(
    stack: Stack, name: str, service: Service, env: ContainerEnv, kube_version: tuple[int, int]
) -> Object:
    """`workload: statefulset`: each pod gets its own claim of each volume, kept across restarts,
    rescheduling and updates (and kept when the set shrinks or is deleted: data is never dropped
    by a scale-down)."""
    claims = [
        {"metadata": {"name": vol}, "spec": _claim_spec(volume)}
        for vol, volume in sorted(service.volumes.items())
    ]
    spec: dict[str, Any] = {
        "serviceName": governing_service_name(name),
        # The pods are peers, none waits for another to start (as a database's replicas must);
        # updates still replace them one at a time, highest ordinal first.
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": selector(stack, name, service.role)},
        "template": _pod_template(stack, name, service, env, kube_version),
    }
    if claims:
        spec["volumeClaimTemplates"] = claims
    if service.autoscaling is None:
        spec["replicas"] = service.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(stack, name, service.role),
        "spec": spec,
    }


def governing_service(stack: Stack, name: str, service: Service) -> Object:
    """The headless Service a StatefulSet needs for its pods' stable DNS names
    (`<name>-0.<name>-pods`); clients keep the load-balanced Service named like the service."""
    spec: dict[str, Any] = {
        "clusterIP": "None",
        "selector": selector(stack, name, service.role),
    }
    if service.port is not None:
        spec["ports"] = [
            {"name": PORT_NAME, "port": service.port, "targetPort": PORT_NAME, "protocol": "TCP"}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(stack, governing_service_name(name), service.role),
        "spec": spec,
    }


def cluster_service(stack: Stack, name: str, service: Service) -> Object:
    assert service.port is not None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(stack, name, service.role),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(stack, name, service.role),
            "ports": [{"name": PORT_NAME, "port": service.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def autoscaler(stack: Stack, name: str, service: Service) -> Object:
    scaling = service.autoscaling
    assert scaling is not None
    metrics = [
        {
            "type": "Resource",
            "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}},
        }
        for resource, percent in (("cpu", scaling.cpu_percent), ("memory", scaling.memory_percent))
        if percent is not None
    ]
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": workload_kind(service), "name": name},
        "minReplicas": scaling.min,
        "maxReplicas": scaling.max,
        "metrics": metrics,
    }
    behavior: dict[str, Any] = {}
    for key, direction in (("scaleUp", scaling.scale_up), ("scaleDown", scaling.scale_down)):
        if direction is None:
            continue
        policies = [
            {"type": kind, "value": value, "periodSeconds": direction.period}
            for kind, value in (("Percent", direction.max_percent), ("Pods", direction.max_pods))
            if value is not None
        ]
        behavior[key] = {"stabilizationWindowSeconds": direction.stabilization, "policies": policies}
    if behavior:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(stack, name, service.role),
        "spec": spec,
    }


def disruption_budget(stack: Stack, name: str, service: Service) -> Object:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(stack, name, service.role),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(stack, name, service.role)}},
    }


CRON_COMPONENT = "cron"


def cron_jobs(stack: Stack, name: str, service: Service, env: ContainerEnv) -> list[Object]:
    """One CronJob per cron entry: the service's image and environment, its own command.

    Its pods carry the service's name label (so network rules that admit the service admit its
    jobs) but another component, so the service's selector never picks them.
    """
    assert service.image is not None
    container_resources = resources(service.resources)
    jobs = []
    for cron_name, cron in sorted(service.cron.items()):
        container: dict[str, Any] = {
            "name": cron_name,
            "image": service.image,
            "command": list(cron.command),
            **_container_env(name, env),
            **({"resources": container_resources} if container_resources else {}),
            "securityContext": container_security(),
            "volumeMounts": writable_mounts(service),
        }
        job_spec: dict[str, Any] = {
            "template": {
                "metadata": {"labels": labels(stack, name, CRON_COMPONENT)},
                "spec": {
                    **_identity(name, service),
                    "restartPolicy": "OnFailure",
                    "containers": [container],
                    "volumes": [volume for volume, _ in _writable(service)],
                },
            }
        }
        if cron.deadline is not None:
            job_spec["activeDeadlineSeconds"] = cron.deadline
        jobs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": metadata(stack, f"{name}-{cron_name}", CRON_COMPONENT),
                "spec": {
                    "schedule": cron.schedule,
                    "concurrencyPolicy": cron.concurrency,
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {"spec": job_spec},
                },
            }
        )
    return jobs


def _claim_spec(volume: Volume) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [volume.access_mode],
        "resources": {"requests": {"storage": volume.size}},
    }
    if volume.storage_class is not None:
        spec["storageClassName"] = volume.storage_class
    return spec


def volume_claim(stack: Stack, name: str, service: Service, volume_name: str, volume: Volume) -> Object:
    """The one claim every pod of a Deployment mounts; a StatefulSet's come from its templates."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(stack, volume_claim_name(name, volume_name), service.role),
        "spec": _claim_spec(volume),
    }


def service_account(stack: Stack, name: str, service: Service) -> Object:
    """The service's own identity: nothing is bound to it, and it carries no API token unless the
    spec asks (a pod that never calls the API server has no credentials to lose)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(stack, name, service.role),
        "automountServiceAccountToken": service.service_account.token,
    }


def workload_objects(
    stack: Stack, name: str, service: Service, env: ContainerEnv, kube_version: tuple[int, int]
) -> list[Object]:
    """The service's ServiceAccount and what runs its pods: a Deployment and the claims its pods
    share, or a StatefulSet (whose claims come from its templates) and its governing Service."""
    objects = [service_account(stack, name, service)]
    if service.workload == "statefulset":
        objects += [
            stateful_set(stack, name, service, env, kube_version),
            governing_service(stack, name, service),
        ]
        return objects
    for volume_name, volume in sorted(service.volumes.items()):
        objects.append(volume_claim(stack, name, service, volume_name, volume))
    objects.append(deployment(stack, name, service, env, kube_version))
    return objects
