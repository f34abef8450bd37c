"""Argo Rollouts: a service's Deployment as a Rollout, with its analysis and the Services it switches.

The rollout policy of the spec (`rollout:`) is the one the local engine runs; here it becomes what
Argo Rollouts' controller runs:

    blue-green   activeService = the service's own Service, previewService = `<name>-preview`,
                 autoPromotionEnabled = auto_promote, scaleDownDelaySeconds = rollback_window,
                 postPromotionAnalysis from the service's AnalysisTemplate
    canary       steps: {weight} -> setWeight, {pause: d} -> pause {duration}, until-promoted ->
                 pause {}, {analysis: d} -> an analysis step of d; with an ingress, the ingress
                 controller splits traffic between stableService (the service's own Service) and
                 canaryService (`<name>-canary`): NGINX through stableIngress (the service's
                 Ingress), Traefik through a weighted TraefikService behind an IngressRoute that
                 takes the Ingress's place (`_ingress`)
    both         progressDeadlineSeconds = health_timeout, aborting when it passes

The pod template is the very one `deployment()` builds for the Deployment it replaces (an inline
template rather than a `workloadRef`: one object owns the pods, the HPA scales the Rollout, and
nothing is left to scale the old Deployment down). The bundled Rollout schema checks Argo's own
fields; the pod template is checked against Kubernetes' strict PodSpec of the target version, as a
`v1 PodTemplate`, with the same machinery as every other object.

Analysis reads the ingress controller's metrics (NGINX's or Traefik's) for the Service that carries
the candidate's traffic: the error rate (5xx / all), the p99 latency against `max_p99_ms` and, for
a canary, its p99 against the stable version's by the local engine's rule (`Analysis.p99_limit`:
at most `max_p99_ratio` x the stable's p99 + `p99_margin_ms`, both in the same window). The local
engine's default `max_p99_ms`, derived from the stable's p99 before the release, has no analogue
here (a query knows no "before the release"): without `max_p99_ms` there is no absolute check. A
check with fewer than `min_requests` requests in its window gives no value: the measurement is
inconclusive, and an analysis whose every measurement is inconclusive pauses the rollout (as the
local engine pauses instead of deciding). The Prometheus queried is
`rollout.analysis.prometheus_url` when given, else prometheus-operator's `prometheus-operated`.

With Traefik, the Argo Rollouts controller must use Traefik v3's API group `traefik.io`: its
default from Argo Rollouts 1.10; earlier controllers default to `traefik.containo.us` and need
`--traefik-api-group=traefik.io --traefik-api-version=traefik.io/v1alpha1`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import RenderError
from ..spec import CanaryStep, Service, Stack
from ._common import COMPONENT_LABEL, Object, labels, metadata, selector
from ._env import SecretUses, service_env
from ._exporters import prometheus_namespace
from ._ingress import CanaryRouting, ingress_controller
from ._schema import DEFAULT_KUBE_VERSION, schema_version, validate_objects
from ._workloads import PORT_NAME, deployment

ARGO_API_VERSION = "argoproj.io/v1alpha1"
PREVIEW_SUFFIX = "-preview"
CANARY_SUFFIX = "-canary"
MIN_RATE_WINDOW = 60
"""Seconds: Prometheus needs two scrapes (at a 15-30 s interval) in a window to compute a rate."""

ERROR_RATE = "error-rate"
P99_MS = "p99-ms"
P99_RATIO = "p99-ratio"
_OWN_METRICS = (ERROR_RATE, P99_MS, P99_RATIO)

# The AnalysisTemplate's arguments: which Service carries the candidate's (and the stable
# version's) traffic, and how many measurements one run takes.
ARG_SERVICE = "service"
ARG_STABLE_SERVICE = "stable-service"
ARG_COUNT = "count"
ARG_INCONCLUSIVE_LIMIT = "inconclusive-limit"


def preview_service_name(name: str) -> str:
    return f"{name}{PREVIEW_SUFFIX}"


def canary_service_name(name: str) -> str:
    return f"{name}{CANARY_SUFFIX}"


def default_prometheus(stack: Stack) -> str:
    """The Prometheus the analysis queries: `rollout.analysis.prometheus_url` when the spec gives
    it, else prometheus-operator's `prometheus-operated` Service in Prometheus' namespace."""
    if stack.rollout.analysis.prometheus_url:
        return stack.rollout.analysis.prometheus_url
    return f"http://prometheus-operated.{prometheus_namespace(stack)}.svc:9090"


def render_argo(
    stack: Stack,
    service: str,
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    prometheus: str | None = None,
) -> list[Object]:
    """The Argo Rollouts objects of one service, validated, in apply order.

    The Services the strategy switches besides the service's own (`<name>-preview` or
    `<name>-canary`), its AnalysisTemplate (when it has something to analyse) and the Rollout that
    replaces its Deployment. The service's other objects (its Service, Ingress, HPA…) are
    `render_kubernetes`'s; `argo_rollouts()` turns a whole rendered environment over to Argo.
    """
    spec = stack.services.get(service)
    if spec is None:
        known = ", ".join(sorted(stack.services)) or "none"
        raise RenderError(f"no service {service!r} in stack {stack.name!r} (services: {known})")
    if spec.image is None:
        raise RenderError(f"service {service!r} has no image: it runs only on plain hosts (`run`)")
    if spec.workload == "statefulset":
        # A Rollout manages ReplicaSets, which have no per-pod claims; `argo_rollouts` keeps it too.
        raise RenderError(
            f"service {service!r} is a StatefulSet (workload: statefulset): Argo Rollouts cannot roll"
            " it; its own RollingUpdate does"
        )
    version = schema_version(kube_version)
    major, minor = (int(part) for part in version.split("."))
    env = service_env(stack, spec, SecretUses(stack))
    base = deployment(stack, service, spec, env, (major, minor))
    objects, _ = _argo_objects(stack, service, spec, base, prometheus or default_prometheus(stack))
    _validate(objects, version)
    return sorted(objects, key=_apply_rank)


def argo_rollouts(
    stack: Stack,
    objects: Iterable[Object],
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    prometheus: str | None = None,
) -> list[Object]:
    """A rendered environment with every service's Deployment replaced by its Argo objects.

    HorizontalPodAutoscalers that scaled a replaced Deployment scale its Rollout instead; an object
    the canary's traffic routing takes the place of (Traefik's IngressRoute for the Ingress) is
    left out. The Argo objects are validated here (the Rollout's pod template with Kubernetes'
    PodSpec of `kube_version`); the rest is left to the caller's validation, as before.
    """
    address = prometheus or default_prometheus(stack)
    kept: list[Object] = []
    added: list[Object] = []
    replaced: set[str] = set()
    superseded: set[tuple[str, str]] = set()
    for obj in objects:
        name = str(obj.get("metadata", {}).get("name", ""))
        spec = stack.services.get(name)
        if (
            obj.get("kind") == "Deployment"
            and obj.get("apiVersion") == "apps/v1"
            and spec is not None
            and obj["metadata"].get("labels", {}).get(COMPONENT_LABEL) == spec.role
        ):
            argo_objects, routing = _argo_objects(stack, name, spec, obj, address)
            added += argo_objects
            replaced.add(name)
            if routing is not None:
                superseded |= set(routing.replaces)
        else:
            kept.append(obj)
    _validate(added, schema_version(kube_version))
    kept = [obj for obj in kept if (obj.get("kind"), obj.get("metadata", {}).get("name")) not in superseded]
    return [_retarget(obj, replaced) for obj in kept] + sorted(added, key=_apply_rank)


def _retarget(obj: Object, rollouts: set[str]) -> Object:
    """An HPA that scaled a Deployment now replaced by a Rollout, scaling the Rollout (a copy)."""
    target = (
        obj.get("spec", {}).get("scaleTargetRef") if obj.get("kind") == "HorizontalPodAutoscaler" else None
    )
    if not target or target.get("kind") != "Deployment" or target.get("name") not in rollouts:
        return obj
    ref = {"apiVersion": ARGO_API_VERSION, "kind": "Rollout", "name": target["name"]}
    return {**obj, "spec": {**obj["spec"], "scaleTargetRef": ref}}


_APPLY_ORDER = ("Service", "AnalysisTemplate", "Rollout", "TraefikService", "Certificate", "IngressRoute")


def _apply_rank(obj: Object) -> tuple[int, str]:
    kind = str(obj["kind"])
    rank = _APPLY_ORDER.index(kind) if kind in _APPLY_ORDER else len(_APPLY_ORDER)
    return rank, str(obj["metadata"]["name"])


def _validate(objects: list[Object], version: str) -> None:
    """Argo's fields against the bundled schemas; each pod template against Kubernetes' own."""
    for obj in objects:
        if obj["kind"] != "Rollout":
            continue
        meta = obj["metadata"]
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "template": obj["spec"]["template"],
        }
        try:
            validate_objects([template], kube_version=version)
        except RenderError as error:
            # Say it of the Rollout and its field, not of the PodTemplate it was checked as.
            problems = error.message.split(": ", 1)[-1]
            problems = re.sub(r"(^|; )template\b", r"\1spec.template", problems)
            raise RenderError(
                f"Rollout/{meta['name']} is not a valid Rollout: its pod template is not valid for"
                f" Kubernetes {version}: {problems}"
            ) from None
    validate_objects(objects, kube_version=version)


def _argo_objects(
    stack: Stack, name: str, service: Service, base: Object, prometheus: str
) -> tuple[list[Object], CanaryRouting | None]:
    """The service's Argo objects, and the canary's traffic routing when the ingress splits it."""
    policy = stack.rollout
    routing: CanaryRouting | None = None
    spec = base["spec"]
    rolling = spec.get("strategy", {}).get("rollingUpdate", {})
    objects: list[Object] = []
    analysis: Object | None
    blue_green = policy.strategy == "blue-green" and service.port is not None
    if blue_green:
        analysis = analysis_template(stack, name, service, prometheus, against_stable=False)
        strategy: dict[str, Any] = {
            "blueGreen": {
                "activeService": name,
                "previewService": preview_service_name(name),
                "autoPromotionEnabled": policy.auto_promote,
                "scaleDownDelaySeconds": policy.rollback_window,
                **(
                    {"postPromotionAnalysis": _run(analysis, name, None, policy.analysis.window, stack)}
                    if analysis
                    else {}
                ),
            }
        }
        objects.append(_copy_service(stack, name, service, preview_service_name(name)))
    elif policy.strategy == "blue-green":
        # A worker has no Service to switch: every new pod starts before an old one stops.
        analysis = None
        strategy = {"canary": {"maxSurge": "100%", "maxUnavailable": 0}}
    else:
        routed = service.ingress is not None and service.port is not None
        analysis = analysis_template(stack, name, service, prometheus, against_stable=routed)
        canary: dict[str, Any] = {
            "maxSurge": rolling.get("maxSurge", 1),
            "maxUnavailable": rolling.get("maxUnavailable", 0),
        }
        if routed:
            assert service.ingress is not None
            routing = ingress_controller(stack).canary_routing(
                stack, name, service, service.ingress, canary_service_name(name)
            )
            canary |= {
                "canaryService": canary_service_name(name),
                "stableService": name,
                "trafficRouting": routing.traffic_routing,
            }
            objects.append(_copy_service(stack, name, service, canary_service_name(name)))
            objects += routing.objects
        candidate = canary_service_name(name) if routed else name
        canary["steps"] = [_step(step_spec, analysis, candidate, name, stack) for step_spec in policy.steps]
        strategy = {"canary": canary}
    if analysis is not None:
        objects.append(analysis)
    rollout_spec: dict[str, Any] = {}
    if "replicas" in spec:
        rollout_spec["replicas"] = spec["replicas"]
    rollout_spec |= {
        "selector": copy.deepcopy(spec["selector"]),
        "template": copy.deepcopy(spec["template"]),
        "progressDeadlineSeconds": policy.health_timeout,
        "progressDeadlineAbort": True,
        "strategy": strategy,
    }
    objects.append(
        {
            "apiVersion": ARGO_API_VERSION,
            "kind": "Rollout",
            "metadata": copy.deepcopy(base["metadata"]),
            "spec": rollout_spec,
        }
    )
    return objects, routing


def _step(
    step: CanaryStep, analysis: Object | None, candidate: str, stable: str, stack: Stack
) -> dict[str, Any]:
    if step.weight is not None:
        return {"setWeight": step.weight}
    if step.pause == "until-promoted":
        return {"pause": {}}
    if step.pause is not None:
        return {"pause": {"duration": f"{step.pause}s"}}
    assert step.analysis is not None  # a step is exactly one of weight, pause, analysis
    if analysis is None:
        # Nothing to measure (no ingress metrics, no Prometheus checks): the step still takes its time.
        return {"pause": {"duration": f"{step.analysis}s"}}
    return {"analysis": _run(analysis, candidate, stable, step.analysis, stack)}


def _run(template: Object, candidate: str, stable: str | None, duration: int, stack: Stack) -> dict[str, Any]:
    """An analysis of `duration` seconds with the service's template: its arguments, in its order."""
    analysis = stack.rollout.analysis
    count = max(math.ceil(duration / _interval(stack)), analysis.failure_limit + 1, 1)
    values = {
        ARG_SERVICE: candidate,
        ARG_STABLE_SERVICE: stable or candidate,
        ARG_COUNT: str(count),
        # Inconclusive only when every measurement is: too little traffic for the whole run.
        ARG_INCONCLUSIVE_LIMIT: str(count - 1),
    }
    args = [{"name": arg["name"], "value": values[arg["name"]]} for arg in template["spec"]["args"]]
    return {"templates": [{"templateName": template["metadata"]["name"]}], "args": args}


def _interval(stack: Stack) -> int:
    """Seconds between measurements; at least one (Argo measures no faster)."""
    return max(stack.rollout.analysis.interval, 1)


def _copy_service(stack: Stack, name: str, service: Service, copy_name: str) -> Object:
    """A second Service over the same pods (Argo narrows each one's selector to one version)."""
    assert service.port is not None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": copy_name,
            "namespace": stack.k8s_namespace,
            "labels": labels(stack, name, service.role),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector(stack, name, service.role),
            "ports": [{"name": PORT_NAME, "port": service.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def _number(value: float) -> str:
    return f"{value:.12g}"


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")


def _argo_query(query: str, stack: Stack, name: str, window: str, field: str) -> str:
    """A policy query with shipyard's placeholders filled for Argo, which knows none of them.

    The service, environment and window are known when rendering. The versions are not: Argo
    tells canary from stable by Service, so a query that needs them cannot run there.
    """
    values = {"service": name, "environment": stack.environment, "window": window}

    def fill(match: re.Match[str]) -> str:
        placeholder = match.group(1)
        if placeholder in values:
            return values[placeholder]
        raise RenderError(
            f"{field}: {match.group(0)} cannot be filled on Kubernetes (Argo Rollouts tells the"
            " versions apart by Service, not by version); use {{service}}, {{environment}} or {{window}}"
        )

    return _PLACEHOLDER.sub(fill, query)


@dataclass(frozen=True)
class _PromQL:
    """A PromQL expression, to apply the latency rule (`Analysis.p99_limit`) to."""

    text: str

    def __rmul__(self, factor: float) -> _PromQL:
        return _PromQL(f"{_number(factor)} * ({self.text})")

    def __add__(self, term: float) -> _PromQL:
        return _PromQL(f"{self.text} + {_number(term)}")


def analysis_template(
    stack: Stack, name: str, service: Service, prometheus: str, *, against_stable: bool
) -> Object | None:
    """The service's AnalysisTemplate, or None when it has nothing to measure.

    Measured from the ingress controller's metrics when the service has an ingress: error rate,
    p99 (max_p99_ms) and, `against_stable`, how far the candidate's p99 exceeds its limit from the
    stable version's p99 (`Analysis.p99_limit`, in seconds: at most 0); then the policy's own
    Prometheus checks, each passing at most its `max`.
    """
    policy = stack.rollout.analysis
    window = f"{max(policy.window, MIN_RATE_WINDOW)}s"
    controller = ingress_controller(stack)
    server_errors = f',{controller.status_label}=~"5.."'

    def select(service_arg: str, extra: str = "") -> str:
        return f"{{{controller.traffic_selector(stack, f'{{{{args.{service_arg}}}}}')}{extra}}}"

    def requests(service_arg: str) -> str:
        return f"sum(increase({controller.requests_metric}{select(service_arg)}[{window}]))"

    def p99(service_arg: str) -> str:
        buckets = f"rate({controller.duration_buckets}{select(service_arg)}[{window}])"
        return f"histogram_quantile(0.99, sum by (le) ({buckets}))"

    enough = f"and on() {requests(ARG_SERVICE)} >= {policy.min_requests}"
    checks: list[tuple[str, str, float]] = []
    if service.ingress is not None:
        errors = f"sum(increase({controller.requests_metric}{select(ARG_SERVICE, server_errors)}[{window}]))"
        error_rate = f"({errors} or vector(0)) / {requests(ARG_SERVICE)} {enough}"
        checks.append((ERROR_RATE, error_rate, policy.max_error_rate))
        if policy.max_p99_ms is not None:
            checks.append((P99_MS, f"{p99(ARG_SERVICE)} {enough}", policy.max_p99_ms / 1000))
        if against_stable and policy.max_p99_ratio is not None:
            limit = policy.p99_limit(_PromQL(p99(ARG_STABLE_SERVICE)), per_ms=0.001)
            # Both versions need min_requests in the window, as in the local engine.
            stable_enough = f"and on() {requests(ARG_STABLE_SERVICE)} >= {policy.min_requests}"
            excess = f"{p99(ARG_SERVICE)} - ({limit.text}) {enough} {stable_enough}"
            checks.append((P99_RATIO, excess, 0))
    for index, check in enumerate(policy.prometheus):
        if check.name in _OWN_METRICS:
            raise RenderError(
                f"rollout.analysis.prometheus[{index}].name: {check.name!r} is the name of a check"
                f" shipyard adds itself ({', '.join(_OWN_METRICS)}); name it otherwise"
            )
        query = _argo_query(check.query, stack, name, window, f"rollout.analysis.prometheus[{index}].query")
        checks.append((check.name, query, check.max))
    if not checks:
        return None
    metrics = [
        {
            "name": metric,
            "interval": f"{_interval(stack)}s",
            "count": f"{{{{args.{ARG_COUNT}}}}}",
            "failureLimit": policy.failure_limit,
            "inconclusiveLimit": f"{{{{args.{ARG_INCONCLUSIVE_LIMIT}}}}}",
            # No value (too few requests) meets neither condition: the measurement is inconclusive.
            "successCondition": f"len(result) > 0 && result[0] <= {_number(limit)}",
            "failureCondition": f"len(result) > 0 && result[0] > {_number(limit)}",
            "provider": {"prometheus": {"address": prometheus, "query": query}},
        }
        for metric, query, limit in checks
    ]
    args = [ARG_SERVICE] if service.ingress is not None else []
    if any(metric == P99_RATIO for metric, _, _ in checks):
        args.append(ARG_STABLE_SERVICE)
    args += [ARG_COUNT, ARG_INCONCLUSIVE_LIMIT]
    return {
        "apiVersion": ARGO_API_VERSION,
        "kind": "AnalysisTemplate",
        "metadata": metadata(stack, name, service.role),
        "spec": {"args": [{"name": arg} for arg in args], "metrics": metrics},
    }
