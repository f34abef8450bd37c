"""The Kubernetes target where Argo Rollouts is installed: releases run by Argo's controller.

`ArgoRolloutsDriver` talks to the API server through the official `kubernetes` client and decides
nothing: it applies what `shipyard.render` renders for a version, reads a Rollout's status, and
sends the same patches `kubectl argo rollouts promote|abort|retry` sends.

- `deploy` server-side applies the service's objects (field manager `shipyard`, forced): running
  it twice changes nothing, and the fields Argo's controller owns (the `rollouts-pod-template-hash`
  it adds to the Services' selectors, the Rollout's status) are left alone, which an update or a
  client-side merge would not do.
- `promote` clears the pause conditions on the status subresource, or moves the current step on
  when a canary is not paused (in the middle of an analysis), and unpauses `spec.paused`; `full`
  asks the controller to skip every remaining step, analysis and pause (`status.promoteFull`).
- `abort` sets `status.abort`; `retry` clears it.
- `pause` sets `spec.paused` (as `kubectl argo rollouts pause`); `resume` clears it, which goes on
  from a manual pause only: a pause step or an inconclusive analysis waits for `promote`.

`load_api_client` builds the client from a kubeconfig (or, inside a pod, the service account).

Every API failure is a `TargetError` saying what was asked, of which object, and what the server
(or the network) answered.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import urllib3
import yaml
from kubernetes import config as kube_config
from kubernetes.client import (
    ApiClient,
    AutoscalingV2Api,
    Configuration,
    CoreV1Api,
    CustomObjectsApi,
    NetworkingV1Api,
    PolicyV1Api,
)
from kubernetes.client.exceptions import ApiException

from ...errors import KubernetesUnreachable, TargetError
from ...render import (
    DEFAULT_KUBE_VERSION,
    argo_rollouts,
    canary_service_name,
    config_map_name,
    preview_service_name,
    render_kubernetes,
    volume_claim_name,
)
from ...spec import Stack

GROUP = "argoproj.io"
VERSION = "v1alpha1"
ROLLOUTS = "rollouts"
ANALYSIS_TEMPLATES = "analysistemplates"
FIELD_MANAGER = "shipyard"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"

# The objects a release applies, in this order: what the pods read, what routes to them, the
# analysis the Rollout names, the Rollout, then what scales and protects it. Cron jobs and the
# namespace-wide objects (NetworkPolicies, ExternalSecrets) are the environment's, not a release's.
RELEASE_KINDS = (
    "ConfigMap",
    "PersistentVolumeClaim",
    "Service",
    "Ingress",
    "AnalysisTemplate",
    "Rollout",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
)

Phase = Literal["Healthy", "Progressing", "Paused", "Degraded", "Unknown"]
_PHASES: tuple[Phase, ...] = ("Healthy", "Progressing", "Paused", "Degraded")
_T = TypeVar("_T")


@dataclass(frozen=True)
class RolloutStatus:
    """A Rollout's state as its controller reports it (`.status`), with the step it is at."""

    namespace: str
    service: str
    phase: Phase
    message: str
    strategy: Literal["canary", "blue-green"]
    step_index: int | None
    """The canary step being run (0-based); equal to `step_count` once every step is done."""
    step_count: int
    canary_weight: int
    """Percent of traffic (or, without traffic routing, of replicas) on the new version."""
    stable_hash: str | None
    """The pod-template hash of the stable ReplicaSet (`status.stableRS`)."""
    canary_hash: str | None
    """The pod-template hash of the version being rolled out (`status.currentPodHash`)."""
    paused: bool
    aborted: bool
    pause_reasons: tuple[str, ...]
    replicas: int
    ready_replicas: int
    updated_replicas: int
    image: str | None
    """The image of the pod template's first container: the version asked for."""
    observed: bool
    """Whether the controller has seen the latest spec (observedGeneration is current)."""

    @property
    def promoted(self) -> bool:
        """The new version is the stable one: nothing left to roll out."""
        return self.stable_hash is not None and self.stable_hash == self.canary_hash


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str


def image_with_tag(image: str, version: str) -> str:
    """`image` with its tag (or digest) replaced by `version` (`sha256:…` becomes a digest)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:  # a tag, not a registry's port (which is before a '/')
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    if re.fullmatch(r"sha256:[0-9a-f]{64}", version):
        return f"{name}@{version}"
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", version):
        raise TargetError(f"{version!r} is not an image tag (letters, digits, '_', '.', '-'; at most 128)")
    return f"{name}:{version}"


def image_version(image: str | None) -> str | None:
    """The tag (or `sha256:` digest) `image` names, as `image_with_tag` set it; None without one."""
    if not image:
        return None
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def load_api_client(config_file: str | None = None, context: str | None = None) -> ApiClient:
    """A client for the cluster a kubeconfig names (`$KUBECONFIG`, else `~/.kube/config`).

    Without a kubeconfig, inside a pod, the pod's service account is used. Whatever is wrong
    (no file, bad YAML, no such context, missing credentials) is a `TargetError` naming the file.
    """
    path = config_file or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    configuration = Configuration()
    explicit = config_file is not None or "KUBECONFIG" in os.environ
    if not explicit and not os.path.exists(path) and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kube_config.ConfigException as error:
            raise TargetError(
                f"cannot use the pod's service account for the Kubernetes API: {error}"
            ) from None
        return ApiClient(configuration)
    where = f"the kubeconfig {path}" + (f" (context {context!r})" if context else "")
    hint = "pass --kubeconfig PATH and --context NAME, or set $KUBECONFIG"
    if not all(os.path.isfile(os.path.expanduser(p)) for p in path.split(os.pathsep) if p):
        raise TargetError(f"cannot read {where}: no such file; {hint}")
    try:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration, persist_config=False
        )
    except kube_config.ConfigException as error:
        raise TargetError(f"cannot use {where}: {error}; {hint}") from None
    except yaml.YAMLError as error:
        raise TargetError(f"cannot use {where}: it is not valid YAML ({_first_line(error)})") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        # The client reads the file's fields without checking their shape.
        raise TargetError(f"cannot use {where}: {type(error).__name__}: {error}; {hint}") from None
    return ApiClient(configuration)


def release_manifests(
    stack: Stack,
    service: str,
    version: str,
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    prometheus: str | None = None,
) -> list[dict[str, Any]]:
    """The objects a release of `version` of `service` applies, validated, in apply order (no I/O)."""
    spec = stack.services.get(service)
    if spec is None:
        raise TargetError(f"no service {service!r} in stack {stack.name!r}")
    if spec.image is None:
        raise TargetError(f"service {service!r} has no image: it cannot run on Kubernetes")
    tagged = spec.model_copy(update={"image": image_with_tag(spec.image, version)})
    stack = stack.model_copy(update={"services": {**stack.services, service: tagged}})
    objects = argo_rollouts(
        stack,
        render_kubernetes(stack, kube_version=kube_version),
        kube_version=kube_version,
        prometheus=prometheus,
    )
    wanted = {(kind, service) for kind in RELEASE_KINDS}
    wanted |= {("ConfigMap", config_map_name(service)), ("Service", preview_service_name(service))}
    wanted |= {("Service", canary_service_name(service))}
    wanted |= {("PersistentVolumeClaim", volume_claim_name(service, volume)) for volume in spec.volumes}
    mine = [obj for obj in objects if (obj["kind"], obj["metadata"]["name"]) in wanted]
    return sorted(mine, key=lambda o: (RELEASE_KINDS.index(o["kind"]), o["metadata"]["name"]))


_API_PATHS = {
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps/{name}",
    "PersistentVolumeClaim": "/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}",
    "Service": "/api/v1/namespaces/{namespace}/services/{name}",
    "Ingress": "/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{name}",
    "AnalysisTemplate": f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{ANALYSIS_TEMPLATES}/{{name}}",
    "Rollout": f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{ROLLOUTS}/{{name}}",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}",
}


def api_path(kind: str, namespace: str, name: str) -> str:
    """The API server's path of an object of one of the RELEASE_KINDS (what the client requests)."""
    return _API_PATHS[kind].format(namespace=namespace, name=name)


def promote_patches(
    rollout: Mapping[str, Any], *, full: bool = False
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(status patch, spec patch) that promote a Rollout as it is now; None where nothing is sent.

    `full`: skip every remaining step (`status.promoteFull`). Otherwise go on past the current pause:
    clear the pause conditions, or move past the analysis step a canary is in, and unpause the spec.
    """
    spec = rollout.get("spec") or {}
    status = rollout.get("status") or {}
    status_patch: dict[str, Any] | None = None
    spec_patch: dict[str, Any] | None = None
    if full:
        if status.get("currentPodHash") != status.get("stableRS"):
            status_patch = {"status": {"promoteFull": True}}
        return status_patch, spec_patch
    if spec.get("paused"):
        spec_patch = {"spec": {"paused": False}}
    steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps")
    if status.get("pauseConditions"):
        status_patch = {"status": {"pauseConditions": None}}
    elif steps is not None:
        # Not paused: in the middle of an analysis step; promoting moves past it.
        index = int(status.get("currentStepIndex") or 0)
        status_patch = {"status": {"pauseConditions": None, "currentStepIndex": min(index + 1, len(steps))}}
    return status_patch, spec_patch


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def parse_status(obj: Mapping[str, Any], *, namespace: str, service: str) -> RolloutStatus:
    """A Rollout object, as the API server returns it, read into a RolloutStatus."""
    spec: Mapping[str, Any] = obj.get("spec") or {}
    status: Mapping[str, Any] = obj.get("status") or {}
    strategy = spec.get("strategy") or {}
    steps: list[Mapping[str, Any]] = list((strategy.get("canary") or {}).get("steps") or [])
    blue_green = "blueGreen" in strategy
    raw_phase = status.get("phase")
    phase: Phase = raw_phase if raw_phase in _PHASES else "Unknown"
    stable = status.get("stableRS") or None
    current = status.get("currentPodHash") or None
    index = status.get("currentStepIndex")
    step_index = int(index) if isinstance(index, int) else None
    reasons = tuple(str(c.get("reason", "")) for c in status.get("pauseConditions") or [])
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    return RolloutStatus(
        namespace=namespace,
        service=service,
        phase=phase,
        message=str(status.get("message") or ""),
        strategy="blue-green" if blue_green else "canary",
        step_index=None if blue_green else step_index,
        step_count=len(steps),
        canary_weight=_canary_weight(status, steps, step_index, blue_green, stable, current),
        stable_hash=stable,
        canary_hash=current,
        paused=bool(spec.get("paused")) or bool(reasons) or bool(status.get("controllerPause")),
        aborted=bool(status.get("abort")),
        pause_reasons=reasons,
        replicas=int(status.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        image=str(containers[0].get("image")) if containers else None,
        # Argo writes observedGeneration as a string (it did before 1.x) or an integer.
        observed=generation is not None and str(observed) == str(generation),
    )


def _canary_weight(
    status: Mapping[str, Any],
    steps: list[Mapping[str, Any]],
    step_index: int | None,
    blue_green: bool,
    stable: str | None,
    current: str | None,
) -> int:
    if stable is not None and stable == current:
        return 0  # nothing is being rolled out
    if status.get("abort"):
        return 0
    if blue_green:
        active = (status.get("blueGreen") or {}).get("activeSelector")
        return 100 if active is not None and active == current else 0
    # With traffic routing the controller reports the weight it set; without, it follows the steps.
    weights = (status.get("canary") or {}).get("weights")
    if weights and "canary" in weights:
        return int(weights["canary"].get("weight", 0))
    if step_index is None:
        return 0
    if step_index >= len(steps):
        return 100
    weight = 0
    for step in steps[: step_index + 1]:
        if "setWeight" in step:
            weight = int(step["setWeight"])
    return weight


class ArgoRolloutsDriver:
    """Releases on a cluster with Argo Rollouts, through the official client's `ApiClient`."""

    name = "kubernetes"

    def __init__(
        self,
        api_client: ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        kube_version: str = DEFAULT_KUBE_VERSION,
        prometheus: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self.kube_version = kube_version
        self.prometheus = prometheus
        self.timeout = timeout
        self._custom = CustomObjectsApi(api_client)
        self._core = CoreV1Api(api_client)
        self._appliers: dict[str, Callable[[str, str, dict[str, Any]], object]] = {
            "ConfigMap": self._typed(self._core.patch_namespaced_config_map),
            "PersistentVolumeClaim": self._typed(self._core.patch_namespaced_persistent_volume_claim),
            "Service": self._typed(self._core.patch_namespaced_service),
            "Ingress": self._typed(NetworkingV1Api(api_client).patch_namespaced_ingress),
            "HorizontalPodAutoscaler": self._typed(
                AutoscalingV2Api(api_client).patch_namespaced_horizontal_pod_autoscaler
            ),
            "PodDisruptionBudget": self._typed(
                PolicyV1Api(api_client).patch_namespaced_pod_disruption_budget
            ),
            "AnalysisTemplate": self._custom_apply(ANALYSIS_TEMPLATES),
            "Rollout": self._custom_apply(ROLLOUTS),
        }

    # --- rendering ---------------------------------------------------------------------------

    def manifests(self, stack: Stack, service: str, version: str) -> list[dict[str, Any]]:
        """The objects a release of `version` of `service` applies, validated, in apply order."""
        return release_manifests(
            stack, service, version, kube_version=self.kube_version, prometheus=self.prometheus
        )

    # --- commands ----------------------------------------------------------------------------

    def deploy(self, stack: Stack, service: str, version: str) -> list[Applied]:
        """Server-side apply the release's objects with `version` as the image tag (idempotent)."""
        applied = []
        for obj in self.manifests(stack, service, version):
            kind, name, namespace = obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"]
            self._call(
                f"apply {kind} {namespace}/{name}", partial(self._appliers[kind], namespace, name, obj)
            )
            applied.append(Applied(kind, name))
        return applied

    def status(self, namespace: str, service: str) -> RolloutStatus:
        """The Rollout of `service`, read from `.status`."""
        return parse_status(self._get(namespace, service), namespace=namespace, service=service)

    def find(self, namespace: str, service: str) -> RolloutStatus | None:
        """The Rollout of `service`, or None when there is none yet."""
        try:
            return self.status(namespace, service)
        except _MissingError:
            return None

    def promote(self, namespace: str, service: str, *, full: bool = False) -> RolloutStatus:
        """Go on past the current pause (or analysis); `full`: skip every remaining step."""
        rollout = self._get(namespace, service)
        status_patch, spec_patch = promote_patches(rollout, full=full)
        if status_patch is not None:
            rollout = self._patch_status(namespace, service, status_patch, "promote")
        if spec_patch is not None:
            patched = self._call(
                f"promote Rollout {namespace}/{service}",
                lambda: self._custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, ROLLOUTS, service, spec_patch, _request_timeout=self.timeout
                ),
            )
            rollout = _as_dict(patched)
        return parse_status(rollout, namespace=namespace, service=service)

    def abort(self, namespace: str, service: str) -> RolloutStatus:
        """Stop the release and send every request back to the stable version."""
        rollout = self._patch_status(namespace, service, {"status": {"abort": True}}, "abort")
        return parse_status(rollout, namespace=namespace, service=service)

    def retry(self, namespace: str, service: str) -> RolloutStatus:
        """Start an aborted release again from its first step."""
        rollout = self._patch_status(namespace, service, {"status": {"abort": False}}, "retry")
        return parse_status(rollout, namespace=namespace, service=service)

    def pause(self, namespace: str, service: str) -> RolloutStatus:
        """Hold the release where it is (`spec.paused`); the controller scales nothing further."""
        return self._patch_spec(namespace, service, {"spec": {"paused": True}}, "pause")

    def resume(self, namespace: str, service: str) -> RolloutStatus:
        """Go on after `pause` (clears `spec.paused`; a pause step still waits for `promote`)."""
        return self._patch_spec(namespace, service, {"spec": {"paused": False}}, "resume")

    # --- the API -----------------------------------------------------------------------------

    def _get(self, namespace: str, service: str) -> dict[str, Any]:
        found = self._call(
            f"read Rollout {namespace}/{service}",
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, ROLLOUTS, service, _request_timeout=self.timeout
            ),
        )
        return _as_dict(found)

    def _patch_status(self, namespace: str, service: str, body: dict[str, Any], verb: str) -> dict[str, Any]:
        patched = self._call(
            f"{verb} Rollout {namespace}/{service}",
            lambda: self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, ROLLOUTS, service, body, _request_timeout=self.timeout
            ),
        )
        return _as_dict(patched)

    def _patch_spec(self, namespace: str, service: str, body: dict[str, Any], verb: str) -> RolloutStatus:
        patched = self._call(
            f"{verb} Rollout {namespace}/{service}",
            lambda: self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, ROLLOUTS, service, body, _request_timeout=self.timeout
            ),
        )
        return parse_status(_as_dict(patched), namespace=namespace, service=service)

    def _typed(self, method: Callable[..., object]) -> Callable[[str, str, dict[str, Any]], object]:
        def apply(namespace: str, name: str, body: dict[str, Any]) -> object:
            return method(
                name,
                namespace,
                body,
                field_manager=self.field_manager,
                force=True,
                _content_type=APPLY_PATCH,
                _request_timeout=self.timeout,
            )

        return apply

    def _custom_apply(self, plural: str) -> Callable[[str, str, dict[str, Any]], object]:
        def apply(namespace: str, name: str, body: dict[str, Any]) -> object:
            return self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body,
                field_manager=self.field_manager,
                force=True,
                _content_type=APPLY_PATCH,
                _request_timeout=self.timeout,
            )

        return apply

    def _call(self, what: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except ApiException as error:
            if error.status == 404 and names_an_object(error):
                raise _MissingError(_api_error(what, error)) from None
            raise TargetError(_api_error(what, error)) from None
        except urllib3.exceptions.HTTPError as error:
            raise unreachable(what, str(self.api_client.configuration.host), error) from None


class _MissingError(TargetError):
    """The object asked for does not exist (its kind does: the 404 names the object)."""

    http_status = 404


def unreachable(what: str, host: str, error: urllib3.exceptions.HTTPError) -> KubernetesUnreachable:
    """One line for an API server that did not answer (refused, DNS, timeout, TLS): its URL, the
    reason without urllib3's object reprs, and what to check."""
    reason = " ".join(str(getattr(error, "reason", None) or error).split())
    # "HTTPSConnection(host=…, port=…): Failed to establish a new connection: [Errno 111] …"
    reason = reason.rpartition("Failed to establish a new connection: ")[2] or reason
    return KubernetesUnreachable(
        f"cannot {what}: the Kubernetes API at {host} is unreachable ({reason}); check that the API"
        " server runs there, and the kubeconfig's server URL and context (--kubeconfig, --context)"
    )


def names_an_object(error: ApiException) -> bool:
    # A missing object's 404 carries `details.name`; a missing kind (no CRD) says only
    # "the server could not find the requested resource".
    try:
        body = json.loads(error.body) if error.body else {}
    except ValueError:
        return False
    details = body.get("details") if isinstance(body, dict) else None
    return isinstance(details, dict) and bool(details.get("name"))


def _as_dict(found: object) -> dict[str, Any]:
    if not isinstance(found, dict):
        raise TargetError(f"the Kubernetes API answered with {type(found).__name__}, not an object")
    return found


def _api_error(what: str, error: ApiException) -> str:
    detail = ""
    try:
        body = json.loads(error.body) if error.body else {}
        if isinstance(body, dict):
            detail = str(body.get("message") or "")
    except ValueError:
        detail = str(error.body)[:200]
    said = f": {detail}" if detail else ""
    status = error.status
    if status == 404:
        hint = (
            "it does not exist (deploy the service first), the namespace is wrong, or Argo Rollouts"
            " (its CRDs) is not installed on the cluster"
        )
        return f"cannot {what}: not found — {hint}{said}"
    if status == 409:
        return f"cannot {what}: conflict — the object changed or another manager owns the field; retry{said}"
    if status in (401, 403):
        return f"cannot {what}: the cluster refused the credentials (HTTP {status}){said}"
    return f"cannot {what}: HTTP {status} {error.reason or ''}".rstrip() + said
