"""A whole environment on a Kubernetes cluster: server-side apply of everything, and its status.

`StackApplier` sends every object `render.build_manifests` renders for one environment, in
`KIND_ORDER`, as a server-side apply (`PATCH`, `application/apply-patch+yaml`, field manager
`shipyard`, forced) through the official client's generic `ApiClient` (`param_serialize` and
`call_api`): the path of each object is built from its apiVersion and kind (`resource_of`), so
custom resources (CloudNativePG, Argo Rollouts, Traefik, the Prometheus Operator, External
Secrets) go through the same code as core objects.

Datastores come up before the workloads that connect to them: once every object up to the
StatefulSets (and CloudNativePG `Cluster`s) is applied, the applier reads their status until each
is ready (a StatefulSet's `readyReplicas` equals its `replicas`; a Cluster's `readyInstances`
equals its `instances`) or the wait runs out, and only then applies Deployments, Rollouts and the
rest. A service's own StatefulSet is not waited on: it may need a Pooler that is applied later.

`dry_run` sends the same requests with `dryRun=All`: the API server validates and defaults each
object (admission included) and stores nothing; there is nothing to wait for.

`read_status` reads back what a person asks after an apply: each workload's pods ready (Argo
Rollout, Deployment, StatefulSet, CloudNativePG Cluster), autoscalers' current and desired
replicas, Ingress addresses, and CronJobs' last schedule and last success.

Every API failure is one `TargetError` line naming the object, the API server and its answer.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from ...errors import TargetError
from ...render import KIND_ORDER, custom_resource
from .kubernetes import APPLY_PATCH, FIELD_MANAGER, names_an_object, parse_status, unreachable

NAME_LABEL = "app.kubernetes.io/name"


@dataclass(frozen=True)
class Resource:
    """Where the API server serves a kind: its plural and whether objects live in a namespace."""

    plural: str
    namespaced: bool = True


# The built-in kinds `render` can produce and the cluster-scoped ones a platform render may add;
# custom resources' plurals and scopes are their CRDs' (`render.custom_resource`). Tests check
# every kind of render.KIND_ORDER resolves. The API server's discovery would say the same; asking
# it would cost a round trip per group on every apply.
CORE_RESOURCES: dict[str, Resource] = {
    "Namespace": Resource("namespaces", namespaced=False),
    "ServiceAccount": Resource("serviceaccounts"),
    "Role": Resource("roles"),
    "RoleBinding": Resource("rolebindings"),
    "ClusterRole": Resource("clusterroles", namespaced=False),
    "ClusterRoleBinding": Resource("clusterrolebindings", namespaced=False),
    "NetworkPolicy": Resource("networkpolicies"),
    "ConfigMap": Resource("configmaps"),
    "Secret": Resource("secrets"),
    "PersistentVolumeClaim": Resource("persistentvolumeclaims"),
    "Service": Resource("services"),
    "StatefulSet": Resource("statefulsets"),
    "Deployment": Resource("deployments"),
    "CronJob": Resource("cronjobs"),
    "HorizontalPodAutoscaler": Resource("horizontalpodautoscalers"),
    "PodDisruptionBudget": Resource("poddisruptionbudgets"),
    "Ingress": Resource("ingresses"),
    "IngressClass": Resource("ingressclasses", namespaced=False),
}


def resource_of(kind: str, api_version: str) -> Resource | None:
    """Where the API server serves `kind` of `api_version`, if shipyard knows."""
    custom = custom_resource(kind, api_version)
    if custom is not None:
        return Resource(custom.plural, namespaced=custom.namespaced)
    return CORE_RESOURCES.get(kind)


DATASTORE_KINDS = ("Cluster", "StatefulSet")
"""What is waited on before the workloads: the last kinds of the first phase of an apply."""
WORKLOAD_KINDS = ("Rollout", "Deployment", "StatefulSet", "Cluster")
"""What `read_status` reports pods ready for (a Rollout replaces its service's Deployment)."""
_LAST_FIRST_PHASE_RANK = max(KIND_ORDER.index(kind) for kind in DATASTORE_KINDS)


def object_path(obj: Mapping[str, Any]) -> str:
    """The API server's path of `obj` (core `/api/v1/…`, else `/apis/<group>/<version>/…`)."""
    kind = str(obj.get("kind"))
    meta = obj.get("metadata") or {}
    name = str(meta.get("name"))
    api_version = str(obj.get("apiVersion"))
    resource = resource_of(kind, api_version)
    if resource is None:
        raise TargetError(f"cannot apply {kind} {name} ({api_version}): shipyard does not know its API path")
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if not resource.namespaced:
        return f"{prefix}/{resource.plural}/{name}"
    namespace = meta.get("namespace")
    if not namespace:
        raise TargetError(f"cannot apply {kind} {name}: it has no metadata.namespace")
    return f"{prefix}/namespaces/{namespace}/{resource.plural}/{name}"


def describe(obj: Mapping[str, Any]) -> str:
    """`Kind namespace/name` (`Kind name` for a cluster-scoped object): how errors name an object."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    resource = resource_of(str(obj.get("kind")), str(obj.get("apiVersion")))
    where = f"{namespace}/" if namespace and (resource is None or resource.namespaced) else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


# --- apply ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppliedObject:
    kind: str
    name: str
    namespace: str | None
    path: str


@dataclass(frozen=True)
class Readiness:
    """How far a datastore is from ready, as its status says."""

    kind: str
    name: str
    ready: int
    desired: int

    @property
    def done(self) -> bool:
        return self.ready >= self.desired


@dataclass(frozen=True)
class ApplyEvent:
    """Progress of an apply: `applied` after each object, `waiting`/`ready` for each datastore."""

    stage: Literal["applied", "waiting", "ready"]
    kind: str
    name: str
    index: int
    """Objects applied so far (`applied`), of `total`."""
    total: int
    ready: int | None = None
    desired: int | None = None


@dataclass(frozen=True)
class ApplyResult:
    api_server: str
    dry_run: bool
    applied: tuple[AppliedObject, ...]
    waited: tuple[Readiness, ...]
    """The datastores waited on, as they were when found ready (empty with a dry run)."""
    would_wait: tuple[str, ...] = ()
    """A dry run: the datastores a real apply would wait on (`Kind name`)."""


def readiness(obj: Mapping[str, Any]) -> Readiness:
    """A StatefulSet's ready replicas of its replicas, or a CNPG Cluster's ready instances of its
    instances, read from the object as the API server returns it."""
    kind = str(obj.get("kind"))
    name = str((obj.get("metadata") or {}).get("name"))
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if kind == "Cluster":
        return Readiness(kind, name, int(status.get("readyInstances") or 0), int(spec.get("instances") or 1))
    desired = _replicas(spec)
    ready = int(status.get("readyReplicas") or 0)
    # A status of an older generation says nothing about the pods of the spec just applied.
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and int(observed) < int(generation):
        ready = 0
    return Readiness(kind, name, ready, desired)


class KubeAPI:
    """The generic requests of the official client (`param_serialize`, `call_api`), errors as
    one-line `TargetError`s that name the object, the API server and its answer."""

    def __init__(self, api_client: ApiClient, *, timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.timeout = timeout

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: Iterable[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Send one request; `what` ("apply StatefulSet ns/db") is how a failure names it."""
        try:
            return self._send(method, path, what, query, body, content_type)
        except ApiException as error:
            raise TargetError(self._answered(what, error)) from None

    def get(self, path: str, what: str) -> dict[str, Any] | None:
        """The object at `path`; None when it does not exist (a 404 whose details name it; a 404
        without them means the kind itself is unknown, which is an error)."""
        try:
            return self._send("GET", path, what, (), None, None)
        except ApiException as error:
            if error.status == 404 and names_an_object(error):
                return None
            raise TargetError(self._answered(what, error)) from None

    def _send(
        self,
        method: str,
        path: str,
        what: str,
        query: Iterable[tuple[str, Any]],
        body: Any,
        content_type: str | None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        serialized = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api_client.call_api(*serialized, _request_timeout=self.timeout)
            response.read()  # type: ignore[no-untyped-call]
            data = self.api_client.response_deserialize(
                response_data=response, response_types_map={"200": "object", "201": "object"}
            ).data
        except urllib3.exceptions.HTTPError as error:
            raise unreachable(what, self.host, error) from None
        if not isinstance(data, dict):
            raise TargetError(f"cannot {what}: the Kubernetes API at {self.host} answered with no object")
        return data

    def _answered(self, what: str, error: ApiException) -> str:
        message = ""
        try:
            body = json.loads(error.body) if error.body else {}
            if isinstance(body, dict):
                message = str(body.get("message") or "")
        except ValueError:
            message = str(error.body or "")[:200]
        said = f": {_one_line(message)}" if message else ""
        reason = f" {error.reason}" if error.reason else ""
        text = f"cannot {what}: the Kubernetes API at {self.host} answered HTTP {error.status}{reason}{said}"
        if error.status == 404 and not names_an_object(error):
            text += " (is the operator that defines this kind installed, with its CRDs?)"
        return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


class StackApplier:
    """Server-side apply of one environment's objects, datastores waited on before workloads."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        timeout: float = 30.0,
        wait_s: float = 600.0,
        poll_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = KubeAPI(api_client, timeout=timeout)
        self.field_manager = field_manager
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._sleep = sleep
        self._clock = clock

    def apply(
        self,
        objects: Iterable[Mapping[str, Any]],
        *,
        services: Collection[str] = (),
        dry_run: bool = False,
        on_progress: Callable[[ApplyEvent], None] | None = None,
    ) -> ApplyResult:
        """Apply `objects` (in `KIND_ORDER`, as `build_manifests` gives them); `services` names the
        stack's services, whose own StatefulSets are workloads rather than datastores."""
        ordered = list(objects)
        paths = [object_path(obj) for obj in ordered]  # an unknown kind stops it before any request
        first = [i for i, obj in enumerate(ordered) if _in_first_phase(str(obj["kind"]))]
        split = max(first) + 1 if first else 0
        datastores = [i for i in range(split) if _is_datastore(ordered[i], services)]
        applied: list[AppliedObject] = []
        notify = on_progress or (lambda _event: None)

        def send(index: int) -> None:
            obj, path = ordered[index], paths[index]
            query: list[tuple[str, Any]] = [("fieldManager", self.field_manager), ("force", True)]
            if dry_run:
                query.append(("dryRun", "All"))
            self.api.request(
                "PATCH",
                path,
                f"apply {describe(obj)}" + (" (dry run)" if dry_run else ""),
                query=query,
                body=obj,
                content_type=APPLY_PATCH,
            )
            meta = obj.get("metadata") or {}
            kind, name = str(obj["kind"]), str(meta.get("name"))
            applied.append(AppliedObject(kind, name, meta.get("namespace"), path))
            notify(ApplyEvent("applied", kind, name, len(applied), len(ordered)))

        for index in range(split):
            send(index)
        waited: tuple[Readiness, ...] = ()
        if not dry_run:
            waited = tuple(self._wait(ordered[i], paths[i], notify, len(ordered)) for i in datastores)
        for index in range(split, len(ordered)):
            send(index)
        return ApplyResult(
            api_server=self.api.host,
            dry_run=dry_run,
            applied=tuple(applied),
            waited=waited,
            would_wait=tuple(describe(ordered[i]) for i in datastores) if dry_run else (),
        )

    def _wait(
        self, obj: Mapping[str, Any], path: str, notify: Callable[[ApplyEvent], None], total: int
    ) -> Readiness:
        what = describe(obj)
        deadline = self._clock() + self.wait_s
        while True:
            found = self.api.request("GET", path, f"read {what}")
            state = readiness(found)
            stage: Literal["waiting", "ready"] = "ready" if state.done else "waiting"
            notify(ApplyEvent(stage, state.kind, state.name, total, total, state.ready, state.desired))
            if state.done:
                return state
            if self._clock() >= deadline:
                raise TargetError(
                    f"{what} is not ready after {self.wait_s:g} s ({state.ready} of {state.desired}"
                    f" ready, as the Kubernetes API at {self.api.host} reports): the workloads were not"
                    " applied; see `kubectl describe` of its pods, then run apply again"
                )
            self._sleep(self.poll_s)


def _in_first_phase(kind: str) -> bool:
    # Everything in KIND_ORDER up to the datastores' kinds: Namespace … Service, Cluster, StatefulSet.
    return kind in KIND_ORDER and KIND_ORDER.index(kind) <= _LAST_FIRST_PHASE_RANK


def _is_datastore(obj: Mapping[str, Any], services: Collection[str]) -> bool:
    if obj["kind"] == "Cluster":
        return True
    if obj["kind"] != "StatefulSet":
        return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(NAME_LABEL, obj["metadata"]["name"]) not in services


# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadState:
    """Pods ready of pods wanted for one workload, and its phase in words."""

    kind: str
    name: str
    found: bool
    ready: int = 0
    desired: int = 0
    updated: int | None = None
    phase: str = "Missing"
    """Rollout: Argo's phase (Healthy, Progressing, Paused, Degraded); others: Healthy when every
    wanted pod is ready and updated, Progressing until then, Degraded past a deadline; Missing
    when the object does not exist."""
    message: str = ""


@dataclass(frozen=True)
class AutoscalerState:
    name: str
    found: bool
    current: int | None = None
    desired: int | None = None
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class IngressState:
    name: str
    found: bool
    hosts: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    """The load balancer's IPs or host names, as the ingress controller published them."""


@dataclass(frozen=True)
class CronJobState:
    name: str
    found: bool
    schedule: str = ""
    suspended: bool = False
    active: int = 0
    last_schedule_at: dt.datetime | None = None
    last_successful_at: dt.datetime | None = None


@dataclass(frozen=True)
class StackState:
    api_server: str
    namespace: str
    workloads: tuple[WorkloadState, ...]
    autoscalers: tuple[AutoscalerState, ...]
    ingresses: tuple[IngressState, ...]
    cron_jobs: tuple[CronJobState, ...]

    @property
    def healthy(self) -> bool:
        """Every workload exists and has all its pods ready."""
        return all(w.found and w.phase == "Healthy" for w in self.workloads)


def read_status(
    api_client: ApiClient, objects: Iterable[Mapping[str, Any]], *, namespace: str, timeout: float = 30.0
) -> StackState:
    """Read back the workloads, autoscalers, Ingresses and CronJobs among `objects` (one GET each)."""
    api = KubeAPI(api_client, timeout=timeout)
    workloads: list[WorkloadState] = []
    autoscalers: list[AutoscalerState] = []
    ingresses: list[IngressState] = []
    cron_jobs: list[CronJobState] = []
    kinds = (*WORKLOAD_KINDS, "HorizontalPodAutoscaler", "Ingress", "CronJob")
    read = [obj for obj in objects if obj["kind"] in kinds]
    if not read:
        # Nothing to read back (no service has an image): the server is still asked, so that a
        # dead one is said, not shown as an empty table "at" it.
        api.request("GET", "/version", "read the API server's version")
    for obj in read:
        kind = str(obj["kind"])
        name = str(obj["metadata"]["name"])
        found = api.get(object_path(obj), f"read {describe(obj)}")
        if kind in WORKLOAD_KINDS:
            workloads.append(workload_state(kind, name, found))
        elif kind == "HorizontalPodAutoscaler":
            autoscalers.append(autoscaler_state(name, found))
        elif kind == "Ingress":
            ingresses.append(ingress_state(name, found))
        else:
            cron_jobs.append(cron_job_state(name, found))
    return StackState(
        api_server=api.host,
        namespace=namespace,
        workloads=tuple(workloads),
        autoscalers=tuple(autoscalers),
        ingresses=tuple(ingresses),
        cron_jobs=tuple(cron_jobs),
    )


def workload_state(kind: str, name: str, found: Mapping[str, Any] | None) -> WorkloadState:
    """A Rollout, Deployment, StatefulSet or CNPG Cluster as the API server returned it."""
    if found is None:
        return WorkloadState(kind, name, found=False)
    spec: Mapping[str, Any] = found.get("spec") or {}
    status: Mapping[str, Any] = found.get("status") or {}
    if kind == "Rollout":
        rollout = parse_status(found, namespace=str(found["metadata"].get("namespace")), service=name)
        step = (
            f"step {rollout.step_index}/{rollout.step_count}, canary {rollout.canary_weight}%"
            if rollout.strategy == "canary" and rollout.step_index is not None and not rollout.promoted
            else ""
        )
        message = "; ".join(part for part in (step, rollout.message) if part)
        return WorkloadState(
            kind,
            name,
            found=True,
            ready=rollout.ready_replicas,
            # Argo defaults no spec.replicas to 1 without writing it; the count it runs is status's.
            desired=_replicas(spec) if spec.get("replicas") is not None else rollout.replicas or 1,
            updated=rollout.updated_replicas,
            phase=rollout.phase,
            message=message,
        )
    if kind == "Cluster":
        ready, desired = int(status.get("readyInstances") or 0), int(spec.get("instances") or 1)
        message = str(status.get("phase") or "")
        return WorkloadState(
            kind, name, True, ready, desired, None, "Healthy" if ready >= desired else "Progressing", message
        )
    desired = _replicas(spec)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    generation = (found.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    current = generation is None or observed is None or int(observed) >= int(generation)
    phase, message = "Progressing", ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("status") == "False":
            phase, message = "Degraded", str(condition.get("message") or condition.get("reason") or "")
    if phase != "Degraded" and current and ready >= desired and updated >= desired:
        phase = "Healthy"
    return WorkloadState(kind, name, True, ready, desired, updated, phase, message)


def autoscaler_state(name: str, found: Mapping[str, Any] | None) -> AutoscalerState:
    if found is None:
        return AutoscalerState(name, found=False)
    spec: Mapping[str, Any] = found.get("spec") or {}
    status: Mapping[str, Any] = found.get("status") or {}
    return AutoscalerState(
        name,
        True,
        current=_int_or_none(status.get("currentReplicas")),
        desired=_int_or_none(status.get("desiredReplicas")),
        minimum=_int_or_none(spec.get("minReplicas", 1)),
        maximum=_int_or_none(spec.get("maxReplicas")),
    )


def ingress_state(name: str, found: Mapping[str, Any] | None) -> IngressState:
    if found is None:
        return IngressState(name, found=False)
    rules = (found.get("spec") or {}).get("rules") or []
    hosts = tuple(str(rule["host"]) for rule in rules if rule.get("host"))
    balancer = ((found.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addresses = tuple(str(entry.get("ip") or entry.get("hostname")) for entry in balancer if entry)
    return IngressState(name, True, hosts, addresses)


def cron_job_state(name: str, found: Mapping[str, Any] | None) -> CronJobState:
    if found is None:
        return CronJobState(name, found=False)
    spec: Mapping[str, Any] = found.get("spec") or {}
    status: Mapping[str, Any] = found.get("status") or {}
    return CronJobState(
        name,
        True,
        schedule=str(spec.get("schedule") or ""),
        suspended=bool(spec.get("suspend")),
        active=len(status.get("active") or []),
        last_schedule_at=_time(status.get("lastScheduleTime")),
        last_successful_at=_time(status.get("lastSuccessfulTime")),
    )


def _replicas(spec: Mapping[str, Any]) -> int:
    """`spec.replicas`, 1 when absent (the API server's default)."""
    value = spec.get("replicas")
    return 1 if value is None else int(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time of the API server (`2025-06-03T14:02:11Z`) as an aware UTC datetime."""
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(dt.UTC)
