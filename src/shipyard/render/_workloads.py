"""A service's objects: Deployment, Service, HPA, PodDisruptionBudget, Ingress, CronJobs, PVCs."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from ..spec import Ingress, Probe, Service, Stack, Volume, byte_count
from ._common import (
    CONFIG_HASH_ANNOTATION,
    Object,
    container_security,
    empty_dir,
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


def deployment(
    stack: Stack, name: str, service: Service, env: ContainerEnv, kube_version: tuple[int, int]
) -> Object:
    assert service.image is not None  # services without an image are skipped before this
    container_resources = resources(service.resources)
    common = {
        "image": service.image,
        **_container_env(name, env),
        **({"resources": container_resources} if container_resources else {}),
        "securityContext": container_security(),
    }
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    mounts += [{"name": vol, "mountPath": spec.mount} for vol, spec in sorted(service.volumes.items())]
    container: dict[str, Any] = {"name": name, **common, "volumeMounts": mounts, **_probes(service)}
    if service.port is not None:
        container["ports"] = [{"name": PORT_NAME, "containerPort": service.port, "protocol": "TCP"}]
    if service.drain > 0:
        container["lifecycle"] = {"preStop": _pre_stop(service.drain, kube_version)}
    volumes = [empty_dir("tmp")]
    volumes += [
        {"name": vol, "persistentVolumeClaim": {"claimName": volume_claim_name(name, vol)}}
        for vol in sorted(service.volumes)
    ]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
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
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ]
    template_metadata: dict[str, Any] = {"labels": labels(stack, name, service.role)}
    if env.config:
        # A changed ConfigMap does not restart pods by itself; a changed template does.
        digest = hashlib.sha256(json.dumps(env.config, sort_keys=True).encode()).hexdigest()[:16]
        template_metadata["annotations"] = {CONFIG_HASH_ANNOTATION: digest}
    most = service.autoscaling.max if service.autoscaling else service.replicas
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(stack, name, service.role)},
        "strategy": {
            "type": "RollingUpdate",
            # Never below the wanted count while rolling; surge a quarter, at least one pod.
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%" if most >= 4 else 1},
        },
        "template": {"metadata": template_metadata, "spec": pod},
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
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
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


def nginx_size(quantity: str) -> str:
    """A Kubernetes byte quantity in NGINX's units ('50Mi' -> '50m'; k and m are binary there)."""
    count = byte_count(quantity)
    for unit, size in (("m", 2**20), ("k", 2**10)):
        if count % size == 0:
            return f"{count // size}{unit}"
    return str(count)


def ingress(stack: Stack, name: str, service: Service, spec: Ingress) -> Object:
    annotations: dict[str, str] = {}
    if spec.tls:
        annotations["cert-manager.io/cluster-issuer"] = spec.cluster_issuer
        annotations["nginx.ingress.kubernetes.io/ssl-redirect"] = "true"
    if spec.rate_limit_rps is not None:
        annotations["nginx.ingress.kubernetes.io/limit-rps"] = str(spec.rate_limit_rps)
    if spec.rate_limit_rpm is not None:
        annotations["nginx.ingress.kubernetes.io/limit-rpm"] = str(spec.rate_limit_rpm)
    if spec.body_size is not None:
        annotations["nginx.ingress.kubernetes.io/proxy-body-size"] = nginx_size(spec.body_size)
    body: dict[str, Any] = {
        "ingressClassName": spec.class_name,
        "rules": [
            {
                "host": spec.host,
                "http": {
                    "paths": [
                        {
                            "path": spec.path,
                            "pathType": "Prefix",
                            "backend": {"service": {"name": name, "port": {"name": PORT_NAME}}},
                        }
                    ]
                },
            }
        ],
    }
    if spec.tls:
        body["tls"] = [{"hosts": [spec.host], "secretName": f"{name}-tls"}]
    meta = metadata(stack, name, service.role)
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": body}


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
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }
        job_spec: dict[str, Any] = {
            "template": {
                "metadata": {"labels": labels(stack, name, CRON_COMPONENT)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "restartPolicy": "OnFailure",
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": [empty_dir("tmp")],
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


def volume_claim(stack: Stack, name: str, service: Service, volume_name: str, volume: Volume) -> Object:
    spec: dict[str, Any] = {
        "accessModes": [volume.access_mode],
        "resources": {"requests": {"storage": volume.size}},
    }
    if volume.storage_class is not None:
        spec["storageClassName"] = volume.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(stack, volume_claim_name(name, volume_name), service.role),
        "spec": spec,
    }
