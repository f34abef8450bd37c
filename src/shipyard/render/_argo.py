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

Release hooks (`rollout.hooks`) become one AnalysisTemplate each, `<name>-<hook>`, whose one metric
is a Kubernetes Job (`provider: job`: it passes when the Job completes, i.e. the command exits 0;
`activeDeadlineSeconds` is the hook's timeout, `backoffLimit` 0: a test is not retried):

    blue-green   prePromotionAnalysis: pre and smoke (against `<name>-preview`, which only the new
                 pods are behind until the switch); postPromotionAnalysis: the window's metrics
                 and post, after the switch, while the old pods are kept (scaleDownDelaySeconds)
    canary       steps: analysis(pre), setCanaryScale {weight: 100}, analysis(smoke) against
                 `<name>-canary`, all before the first setWeight; {test: NAME} -> analysis(test);
                 after the last setWeight, analysis(post)

A canary's smoke test needs traffic routing (an ingress): Argo's basic canary cannot start new pods
without sending them traffic (setCanaryScale is for traffic-routed canaries only). A worker (no
port) has no address to smoke-test; with blue-green it rolls as a step-less canary, with no gates.

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
from ..spec import CanaryStep, HookCommand, Service, Stack
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
ARG_CANDIDATE_URL = "candidate-url"
ARG_CANDIDATE_VERSION = "candidate-version"

HOOK_COMPONENT = "release-hook"
"""The component label of a hook's Job pod: its name label lets the NetworkPolicies admit it where
the service's own pods are admitted, and its component keeps it out of the service's Services."""
HOOK_CONTAINER = "hook"
# The variables a hook gets, as on the local target (rollout/_hooks.py, README "Release gates").
HOOK_ENV = {
    "service": "SHIPYARD_SERVICE",
    "environment": "SHIPYARD_ENVIRONMENT",
    "hook": "SHIPYARD_HOOK",
    "url": "SHIPYARD_CANDIDATE_URL",
    "version": "SHIPYARD_CANDIDATE_VERSION",
}


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
    """Argo's fields against the bundled schemas; each pod template and each hook's Job against
    Kubernetes' own."""
    for obj in objects:
        if obj["kind"] == "AnalysisTemplate":
            _validate_jobs(obj, version)
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


def _validate_jobs(template: Object, version: str) -> None:
    """Each Job a template's metrics run, as Kubernetes' strict `batch/v1` Job of `version`."""
    meta = template["metadata"]
    for metric in template["spec"]["metrics"]:
        job = metric["provider"].get("job")
        if job is None:
            continue
        checked = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], **job.get("metadata", {})},
            "spec": job["spec"],
        }
        try:
            validate_objects([checked], kube_version=version)
        except RenderError as error:
            problems = error.message.split(": ", 1)[-1]
            raise RenderError(
                f"AnalysisTemplate/{meta['name']} is not valid: the Job of its metric {metric['name']!r}"
                f" is not valid for Kubernetes {version}: {problems}"
            ) from None


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
    hooks = hook_templates(stack, name, service, base)
    if blue_green:
        analysis = analysis_template(stack, name, service, prometheus, against_stable=False)
        preview = _service_url(stack, preview_service_name(name), service)
        post = _run(analysis, name, None, policy.analysis.window, stack) if analysis else None
        post = _with_hooks(post, [hooks.get("post")], preview)
        pre = _with_hooks(None, [hooks.get("pre"), hooks.get("smoke")], preview)
        strategy: dict[str, Any] = {
            "blueGreen": {
                "activeService": name,
                "previewService": preview_service_name(name),
                "autoPromotionEnabled": policy.auto_promote,
                "scaleDownDelaySeconds": policy.rollback_window,
                **({"prePromotionAnalysis": pre} if pre else {}),
                **({"postPromotionAnalysis": post} if post else {}),
            }
        }
        objects.append(_copy_service(stack, name, service, preview_service_name(name)))
    elif policy.strategy == "blue-green":
        # A worker has no Service to switch: every new pod starts before an old one stops.
        analysis = None
        hooks = {}  # no steps to run them in
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
        url = _service_url(stack, candidate, service) if service.port is not None else ""
        steps = [_step(step_spec, analysis, candidate, name, stack, hooks, url) for step_spec in policy.steps]
        canary["steps"] = (
            _gated_steps(stack, name, routed, hooks, url) + steps + _hook_steps([hooks.get("post")], url)
        )
        strategy = {"canary": canary}
    if analysis is not None:
        objects.append(analysis)
    objects += [template for key, template in hooks.items() if key != "smoke" or _runs_smoke(strategy)]
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
    step: CanaryStep,
    analysis: Object | None,
    candidate: str,
    stable: str,
    stack: Stack,
    hooks: dict[str, Object],
    url: str,
) -> dict[str, Any]:
    if step.test is not None:
        return _hook_steps([hooks[f"test-{step.test}"]], url)[0]
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


# --- release hooks -------------------------------------------------------------------------------------


def _service_url(stack: Stack, service_name: str, service: Service) -> str:
    """The in-cluster address of a Service of `service`."""
    return f"http://{service_name}.{stack.k8s_namespace}.svc:{service.port}"


def _hook_args(template: Object, url: str) -> list[dict[str, Any]]:
    """The values of a hook template's arguments: the candidate's address, its pod template hash."""
    values: dict[str, dict[str, Any]] = {
        ARG_CANDIDATE_URL: {"value": url},
        ARG_CANDIDATE_VERSION: {"valueFrom": {"podTemplateHashValue": "Latest"}},
    }
    return [{"name": arg["name"], **values[arg["name"]]} for arg in template["spec"]["args"]]


def _with_hooks(
    run: dict[str, Any] | None, templates: list[Object | None], url: str
) -> dict[str, Any] | None:
    """An analysis run (`run`, or a new one) that also runs the hook `templates` given (their
    metrics run alongside the run's own: Argo merges the templates of one run)."""
    given = [template for template in templates if template is not None]
    if not given:
        return run
    merged: dict[str, Any] = copy.deepcopy(run) if run else {"templates": [], "args": []}
    names = {arg["name"] for arg in merged["args"]}
    for template in given:
        merged["templates"].append({"templateName": template["metadata"]["name"]})
        for arg in _hook_args(template, url):
            if arg["name"] not in names:
                merged["args"].append(arg)
                names.add(arg["name"])
    return merged


def _runs_smoke(strategy: dict[str, Any]) -> bool:
    """Whether a rendered strategy runs a smoke test (a worker's canary has nothing to test)."""
    return "blueGreen" in strategy or any(
        "setCanaryScale" in step for step in strategy["canary"].get("steps", [])
    )


def _hook_steps(templates: list[Object | None], url: str) -> list[dict[str, Any]]:
    """One analysis step per hook template given."""
    return [
        {"analysis": {"templates": [{"templateName": t["metadata"]["name"]}], "args": _hook_args(t, url)}}
        for t in templates
        if t is not None
    ]


def _gated_steps(
    stack: Stack, name: str, routed: bool, hooks: dict[str, Object], url: str
) -> list[dict[str, Any]]:
    """A canary's steps before its first: the pre hook, then the smoke test against the canary's
    own Service with the canary scaled up but no traffic (a traffic-routed canary only)."""
    steps = _hook_steps([hooks.get("pre")], url)
    if "smoke" in hooks and url:  # a worker has no address to test
        if not routed:
            raise RenderError(
                f"rollout.hooks.smoke: service {name!r} is a canary without an ingress: Argo Rollouts'"
                " basic canary cannot start its new pods without sending them traffic (setCanaryScale"
                " needs traffic routing), so no smoke test can run before traffic moves; give it an"
                " ingress, or use strategy: blue-green"
            )
        # The canary at full scale from here on: later setWeight steps move traffic only, never
        # onto fewer pods than the share they get.
        steps += [{"setCanaryScale": {"weight": 100}}, *_hook_steps([hooks["smoke"]], url)]
    return steps


def hook_templates(stack: Stack, name: str, service: Service, base: Object) -> dict[str, Object]:
    """The service's hook AnalysisTemplates by hook ('pre', 'smoke', 'post', 'test-<name>'), each
    one metric: a Job that runs the command with the service's image and environment."""
    hooks = stack.rollout.hooks
    commands: list[tuple[str, str, HookCommand]] = [
        (kind, kind, command)
        for kind, command in (("pre", hooks.pre), ("smoke", hooks.smoke), ("post", hooks.post))
        if command is not None
    ]
    commands += [(f"test-{test}", "test", command) for test, command in sorted(hooks.tests.items())]
    return {
        key: _hook_template(stack, name, service, base, key, kind, command) for key, kind, command in commands
    }


def _hook_template(
    stack: Stack, name: str, service: Service, base: Object, key: str, kind: str, command: HookCommand
) -> Object:
    pod = base["spec"]["template"]["spec"]
    app = pod["containers"][0]
    scratch = {volume["name"] for volume in pod.get("volumes", []) if "emptyDir" in volume}
    addressed = kind != "pre"
    env = [
        {"name": HOOK_ENV["service"], "value": name},
        {"name": HOOK_ENV["environment"], "value": stack.environment},
        {"name": HOOK_ENV["hook"], "value": kind},
        {"name": HOOK_ENV["url"], "value": f"{{{{args.{ARG_CANDIDATE_URL}}}}}" if addressed else ""},
        {"name": HOOK_ENV["version"], "value": f"{{{{args.{ARG_CANDIDATE_VERSION}}}}}"},
    ]
    container: dict[str, Any] = {
        "name": HOOK_CONTAINER,
        "image": command.image or app["image"],
        "command": ["/bin/sh", "-c", command.command],
        **{
            field: copy.deepcopy(app[field])
            for field in ("envFrom", "resources", "securityContext")
            if field in app
        },
        "env": [*env, *copy.deepcopy(app.get("env", []))],
    }
    mounts = [mount for mount in app.get("volumeMounts", []) if mount["name"] in scratch]
    if mounts:
        container["volumeMounts"] = copy.deepcopy(mounts)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        **{
            field: copy.deepcopy(pod[field])
            for field in (
                "serviceAccountName",
                "automountServiceAccountToken",
                "securityContext",
                "imagePullSecrets",
            )
            if field in pod
        },
        "containers": [container],
    }
    if mounts:
        pod_spec["volumes"] = [
            copy.deepcopy(v) for v in pod["volumes"] if v["name"] in {m["name"] for m in mounts}
        ]
    pod_labels = {**labels(stack, name, HOOK_COMPONENT), "shipyard.dev/hook": key}
    job = {
        "metadata": {"labels": pod_labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": command.timeout,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }
    args = ([ARG_CANDIDATE_URL] if addressed else []) + [ARG_CANDIDATE_VERSION]
    return {
        "apiVersion": ARGO_API_VERSION,
        "kind": "AnalysisTemplate",
        "metadata": metadata(stack, f"{name}-{key}", service.role),
        "spec": {
            "args": [{"name": arg} for arg in args],
            "metrics": [{"name": key, "provider": {"job": job}}],
        },
    }


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
