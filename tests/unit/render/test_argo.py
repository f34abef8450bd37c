"""Argo Rollouts objects: the rollout policy as a Rollout, its Services and its AnalysisTemplate."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from shipyard.errors import RenderError
from shipyard.render import render_kubernetes, supported_versions, validate_objects
from shipyard.render._argo import argo_rollouts, render_argo
from shipyard.spec import Spec, Stack, load_spec
from unit.render.render_helpers import ROOT, by_kind, spec_from

EXAMPLES = ("apricode", "normaldance", "salespot")


@pytest.fixture(scope="module")
def specs() -> dict[str, Spec]:
    return {name: load_spec(ROOT / "examples" / name / "shipyard.yaml") for name in EXAMPLES}


def _argo_environment(stack: Stack) -> list[dict[str, Any]]:
    """What `render_kubernetes` gives with the Argo hook: every object, validated."""
    objects = argo_rollouts(stack, render_kubernetes(stack))
    validate_objects(objects)
    return objects


def _kinds(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def _args(run: dict[str, Any]) -> dict[str, str]:
    return {arg["name"]: arg["value"] for arg in run["args"]}


# --- canary: apricode (one web service, NGINX ingress in production) -----------------------------


def test_apricode_canary_steps_traffic_routing_and_services(specs: dict[str, Spec]) -> None:
    stack = specs["apricode"].stack("production")
    objects = render_argo(stack, "app")
    assert _kinds(objects) == [("Service", "app-canary"), ("AnalysisTemplate", "app"), ("Rollout", "app")]
    rollout = objects[-1]
    assert rollout["apiVersion"] == "argoproj.io/v1alpha1"
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["canaryService"] == "app-canary"
    assert canary["stableService"] == "app"
    assert canary["trafficRouting"] == {"nginx": {"stableIngress": "app"}}
    assert canary["maxUnavailable"] == 0
    # 30 s of analysis measured every 2 s: 15 measurements, inconclusive only if all are.
    run = {
        "templates": [{"templateName": "app"}],
        "args": [
            {"name": "service", "value": "app-canary"},
            {"name": "stable-service", "value": "app"},
            {"name": "count", "value": "15"},
            {"name": "inconclusive-limit", "value": "14"},
        ],
    }
    assert canary["steps"] == [
        {"setWeight": 5},
        {"analysis": run},
        {"setWeight": 25},
        {"analysis": run},
        {"setWeight": 50},
        {"analysis": run},
        {"setWeight": 100},
    ]
    assert rollout["spec"]["progressDeadlineSeconds"] == 60
    assert rollout["spec"]["progressDeadlineAbort"] is True
    assert "replicas" not in rollout["spec"]  # the HPA's
    preview = objects[0]
    service = by_kind(render_kubernetes(stack), "Service")["app"]
    assert preview["spec"] == service["spec"]
    assert preview["metadata"]["labels"] == service["metadata"]["labels"]


def test_the_rollout_has_the_deployments_pod_template(specs: dict[str, Spec]) -> None:
    stack = specs["apricode"].stack("production")
    plain = render_kubernetes(stack)
    deployment = by_kind(plain, "Deployment")["app"]
    rollout = by_kind(render_argo(stack, "app"), "Rollout")["app"]
    assert rollout["spec"]["template"] == deployment["spec"]["template"]
    assert rollout["spec"]["selector"] == deployment["spec"]["selector"]
    assert rollout["metadata"] == deployment["metadata"]


def test_apricode_analysis_template_reads_nginx_metrics(specs: dict[str, Spec]) -> None:
    stack = specs["apricode"].stack("production")
    template = by_kind(render_argo(stack, "app"), "AnalysisTemplate")["app"]
    spec = template["spec"]
    assert [a["name"] for a in spec["args"]] == ["service", "stable-service", "count", "inconclusive-limit"]
    metrics = {m["name"]: m for m in spec["metrics"]}
    assert list(metrics) == ["error-rate", "p99-ratio"]  # no max_p99_ms in apricode's policy
    error_rate = metrics["error-rate"]
    assert error_rate["interval"] == "2s"
    assert error_rate["count"] == "{{args.count}}"
    assert error_rate["failureLimit"] == 0
    assert error_rate["successCondition"] == "len(result) > 0 && result[0] <= 0.02"
    assert error_rate["failureCondition"] == "len(result) > 0 && result[0] > 0.02"
    prometheus = error_rate["provider"]["prometheus"]
    assert prometheus["address"] == "http://prometheus-operated.monitoring.svc:9090"
    selector = 'namespace="production",service="{{args.service}}"'
    requests = f"sum(increase(nginx_ingress_controller_requests{{{selector}}}[60s]))"
    errors = f'sum(increase(nginx_ingress_controller_requests{{{selector},status=~"5.."}}[60s]))'
    assert prometheus["query"] == f"({errors} or vector(0)) / {requests} and on() {requests} >= 20"
    # The local engine's rule (Analysis.p99_limit): the canary's p99 at most max_p99_ratio x the
    # stable's + p99_margin_ms, in the same window; the query gives how far it exceeds that.
    ratio = metrics["p99-ratio"]["provider"]["prometheus"]["query"]
    duration = "nginx_ingress_controller_request_duration_seconds_bucket"
    stable_selector = 'namespace="production",service="{{args.stable-service}}"'
    stable_requests = f"sum(increase(nginx_ingress_controller_requests{{{stable_selector}}}[60s]))"
    assert ratio == (
        f"histogram_quantile(0.99, sum by (le) (rate({duration}{{{selector}}}[60s])))"
        f" - (2 * (histogram_quantile(0.99, sum by (le) (rate({duration}{{{stable_selector}}}[60s]))))"
        f" + 0.025) and on() {requests} >= 20 and on() {stable_requests} >= 20"
    )
    assert metrics["p99-ratio"]["successCondition"] == "len(result) > 0 && result[0] <= 0"
    assert metrics["p99-ratio"]["failureCondition"] == "len(result) > 0 && result[0] > 0"


def test_without_an_ingress_a_canary_is_replica_weighted_and_analysis_waits(specs: dict[str, Spec]) -> None:
    # apricode's dev environment has no ingress: no NGINX to split traffic or to measure it.
    objects = render_argo(specs["apricode"].stack("dev"), "app")
    assert _kinds(objects) == [("Rollout", "app")]
    canary = objects[0]["spec"]["strategy"]["canary"]
    assert "trafficRouting" not in canary
    assert "canaryService" not in canary
    assert canary["steps"][:2] == [{"setWeight": 5}, {"pause": {"duration": "30s"}}]
    assert objects[0]["spec"]["replicas"] == 1


# --- canary: normaldance (several services; workers; stricter thresholds) -------------------------


def test_normaldance_every_service_becomes_a_rollout(specs: dict[str, Spec]) -> None:
    objects = _argo_environment(specs["normaldance"].stack("production"))
    # No service is left a Deployment (the datastores' exporters are Deployments of their own).
    assert not set(by_kind(objects, "Deployment")) & set(specs["normaldance"].stack("production").services)
    rollouts = by_kind(objects, "Rollout")
    # ipfs is a StatefulSet (`workload: statefulset`): Argo Rollouts replaces Deployments only.
    assert sorted(rollouts) == ["api", "frontend", "solana-rpc-proxy", "worker"]
    assert "ipfs" in by_kind(objects, "StatefulSet")
    assert sorted(by_kind(objects, "AnalysisTemplate")) == ["api", "frontend"]
    services = by_kind(objects, "Service")
    assert {"api-canary", "frontend-canary"} <= set(services)
    assert "worker-canary" not in services
    for hpa in by_kind(objects, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Rollout"
        assert hpa["spec"]["scaleTargetRef"]["apiVersion"] == "argoproj.io/v1alpha1"
    # The PodDisruptionBudgets and NetworkPolicies select pods by label: they are unchanged.
    plain = render_kubernetes(specs["normaldance"].stack("production"))
    assert by_kind(objects, "PodDisruptionBudget") == by_kind(plain, "PodDisruptionBudget")


def test_normaldance_thresholds_and_step_lengths(specs: dict[str, Spec]) -> None:
    objects = render_argo(specs["normaldance"].stack("production"), "api")
    template = by_kind(objects, "AnalysisTemplate")["api"]
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    assert metrics["error-rate"]["successCondition"].endswith("result[0] <= 0.01")
    assert " - (1.5 * (histogram_quantile(0.99" in metrics["p99-ratio"]["provider"]["prometheus"]["query"]
    assert metrics["error-rate"]["provider"]["prometheus"]["query"].endswith(">= 50")
    steps = by_kind(objects, "Rollout")["api"]["spec"]["strategy"]["canary"]["steps"]
    assert [next(iter(step)) for step in steps] == ["setWeight", "analysis"] * 3 + ["setWeight"]
    assert _args(steps[1]["analysis"])["count"] == "30"  # 1 min every 2 s


def test_normaldance_canary_routes_through_a_weighted_traefik_service(specs: dict[str, Spec]) -> None:
    objects = render_argo(specs["normaldance"].stack("production"), "api")
    assert _kinds(objects) == [
        ("Service", "api-canary"),
        ("AnalysisTemplate", "api"),
        ("Rollout", "api"),
        ("TraefikService", "api"),
        ("Certificate", "api"),
        ("IngressRoute", "api"),
    ]
    canary = by_kind(objects, "Rollout")["api"]["spec"]["strategy"]["canary"]
    assert canary["trafficRouting"] == {"traefik": {"weightedTraefikServiceName": "api"}}
    assert (canary["stableService"], canary["canaryService"]) == ("api", "api-canary")
    weighted = by_kind(objects, "TraefikService")["api"]
    assert weighted["apiVersion"] == "traefik.io/v1alpha1"
    # Argo Rollouts writes both weights at every step; none is written here (an apply or an
    # Argo CD sync would reset them mid-canary).
    assert weighted["spec"] == {
        "weighted": {"services": [{"name": "api", "port": "http"}, {"name": "api-canary", "port": "http"}]}
    }
    route = by_kind(objects, "IngressRoute")["api"]
    assert route["metadata"]["annotations"] == {"kubernetes.io/ingress.class": "traefik"}
    assert route["spec"] == {
        "entryPoints": ["websecure"],
        "routes": [
            {
                "kind": "Rule",
                "match": "Host(`api.normaldance.com`) && PathPrefix(`/`)",
                "middlewares": [{"name": "api-rps"}, {"name": "api-body-size"}],
                "services": [{"name": "api", "kind": "TraefikService"}],
            }
        ],
        "tls": {"secretName": "api-tls"},
    }
    # cert-manager's ingress-shim watches Ingresses, not IngressRoutes: the certificate is asked for.
    certificate = by_kind(objects, "Certificate")["api"]
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"] == {
        "secretName": "api-tls",
        "dnsNames": ["api.normaldance.com"],
        "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "letsencrypt-prod"},
    }


def test_with_the_hook_the_ingress_route_takes_the_ingress_place(specs: dict[str, Spec]) -> None:
    for environment in specs["normaldance"].environments:
        objects = _argo_environment(specs["normaldance"].stack(environment))
        routes = by_kind(objects, "IngressRoute")
        assert sorted(routes) == ["api", "frontend"]
        # The HTTPS Ingresses are gone (two routers on one host would race); the plain-HTTP
        # redirects stay, and every Middleware a route names is rendered.
        assert sorted(by_kind(objects, "Ingress")) == ["api-http", "frontend-http"]
        middlewares = by_kind(objects, "Middleware")
        certificates = by_kind(objects, "Certificate")
        services = by_kind(objects, "Service")
        for name, route in routes.items():
            for middleware in route["spec"]["routes"][0].get("middlewares", []):
                assert middleware["name"] in middlewares
            assert certificates[name]["spec"]["secretName"] == route["spec"]["tls"]["secretName"]
            for backend in by_kind(objects, "TraefikService")[name]["spec"]["weighted"]["services"]:
                assert backend["name"] in services


def test_traefik_analysis_reads_traefik_metrics(specs: dict[str, Spec]) -> None:
    objects = render_argo(specs["normaldance"].stack("production"), "api")
    template = by_kind(objects, "AnalysisTemplate")["api"]
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    # Traefik names a Service `<namespace>-<service>-<port>@<provider>`: `kubernetes` behind the
    # Ingress, `kubernetescrd` behind the TraefikService; its status label is `code`.
    selector = 'service=~"production-{{args.service}}-http@kubernetes(crd)?"'
    requests = f"sum(increase(traefik_service_requests_total{{{selector}}}[60s]))"
    errors = f'sum(increase(traefik_service_requests_total{{{selector},code=~"5.."}}[60s]))'
    query = metrics["error-rate"]["provider"]["prometheus"]["query"]
    assert query == f"({errors} or vector(0)) / {requests} and on() {requests} >= 50"
    ratio = metrics["p99-ratio"]["provider"]["prometheus"]["query"]
    assert ratio.startswith(
        "histogram_quantile(0.99, sum by (le) (rate(traefik_service_request_duration_seconds_bucket"
        f"{{{selector}}}[60s]))) - (1.5 * (histogram_quantile(0.99"
    )
    assert 'service=~"production-{{args.stable-service}}-http@kubernetes(crd)?"' in ratio
    assert "nginx" not in json.dumps(template)


def test_a_worker_without_port_rolls_without_services(specs: dict[str, Spec]) -> None:
    objects = render_argo(specs["normaldance"].stack("production"), "worker")
    assert _kinds(objects) == [("Rollout", "worker")]
    canary = objects[0]["spec"]["strategy"]["canary"]
    assert canary["steps"][1] == {"pause": {"duration": "60s"}}


# --- blue-green: salespot ----------------------------------------------------------------------


def test_salespot_blue_green(specs: dict[str, Spec]) -> None:
    stack = specs["salespot"].stack("production")
    objects = render_argo(stack, "api")
    assert _kinds(objects) == [("Service", "api-preview"), ("AnalysisTemplate", "api"), ("Rollout", "api")]
    rollout = objects[-1]
    assert rollout["spec"]["strategy"] == {
        "blueGreen": {
            "activeService": "api",
            "previewService": "api-preview",
            "autoPromotionEnabled": True,
            "scaleDownDelaySeconds": 900,
            "postPromotionAnalysis": {
                "templates": [{"templateName": "api"}],
                # The analysis window (30 s) every 2 s, on the active Service once it is switched.
                "args": [
                    {"name": "service", "value": "api"},
                    {"name": "count", "value": "15"},
                    {"name": "inconclusive-limit", "value": "14"},
                ],
            },
        }
    }
    assert rollout["spec"]["progressDeadlineSeconds"] == 120
    template = objects[1]
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    # No stable version serves alongside after a switch: p99 is checked against its bound only.
    assert list(metrics) == ["error-rate", "p99-ms"]
    assert metrics["p99-ms"]["successCondition"] == "len(result) > 0 && result[0] <= 2"
    assert metrics["error-rate"]["successCondition"] == "len(result) > 0 && result[0] <= 0.01"
    preview = objects[0]
    assert preview["spec"]["ports"] == [
        {"name": "http", "port": 4000, "targetPort": "http", "protocol": "TCP"}
    ]


def test_salespot_environment_with_the_hook(specs: dict[str, Spec]) -> None:
    for environment in ("dev", "staging", "production"):
        objects = _argo_environment(specs["salespot"].stack(environment))
        assert sorted(by_kind(objects, "Rollout")) == ["api", "web"]
        assert {"api-preview", "web-preview"} <= set(by_kind(objects, "Service"))
        assert not set(by_kind(objects, "Deployment")) & set(specs["salespot"].stack(environment).services)
        # Cron jobs stay CronJobs, with the service's image.
        assert "api-expire-listings" in by_kind(objects, "CronJob")


# --- the policy's own knobs --------------------------------------------------------------------

POLICY = """
    name: shop
    services:
      web:
        role: web
        image: shop/web:1.0.0
        port: 8080
        replicas: 4
        ingress: {host: shop.example}
    rollout:
      strategy: {strategy}
      auto_promote: false
      rollback_window: 5m
      steps:
        - weight: 10
        - pause: 45s
        - weight: 50
        - pause: until-promoted
        - analysis: 5s
        - weight: 100
      analysis:
        interval: 10s
        failure_limit: 2
        max_p99_ratio: ~
        max_p99_ms: 250
        prometheus:
          - {name: queue-depth, query: 'sum(queue_depth{app="shop"})', max: 100}
"""


def _policy_stack(strategy: str, *, check: str = "queue-depth") -> Stack:
    text = POLICY.replace("{strategy}", strategy).replace("queue-depth", check)
    stack: Stack = spec_from(text).stack("production")
    return stack


def test_pauses_and_policy_checks() -> None:
    objects = render_argo(_policy_stack("canary"), "web", prometheus="http://prom.example:9090")
    rollout = by_kind(objects, "Rollout")["web"]
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    assert steps[:4] == [{"setWeight": 10}, {"pause": {"duration": "45s"}}, {"setWeight": 50}, {"pause": {}}]
    # 5 s every 10 s is one measurement, but at least failure_limit + 1 so a failure can count.
    assert _args(steps[4]["analysis"])["count"] == "3"
    assert rollout["spec"]["replicas"] == 4
    template = by_kind(objects, "AnalysisTemplate")["web"]
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    assert list(metrics) == ["error-rate", "p99-ms", "queue-depth"]
    queue = metrics["queue-depth"]
    assert queue["provider"] == {
        "prometheus": {"address": "http://prom.example:9090", "query": 'sum(queue_depth{app="shop"})'}
    }
    assert queue["successCondition"] == "len(result) > 0 && result[0] <= 100"
    assert queue["failureLimit"] == 2
    assert queue["interval"] == "10s"
    assert metrics["p99-ms"]["successCondition"].endswith("result[0] <= 0.25")


def test_the_policys_prometheus_url_is_the_address_the_analysis_queries(specs: dict[str, Spec]) -> None:
    text = POLICY.replace("{strategy}", "canary").replace(
        "failure_limit: 2", "failure_limit: 2\n        prometheus_url: http://prometheus.observability:9090"
    )
    stack = spec_from(text).stack("production")
    for objects in (render_argo(stack, "web"), argo_rollouts(stack, render_kubernetes(stack))):
        template = by_kind(objects, "AnalysisTemplate")["web"]
        addresses = {m["provider"]["prometheus"]["address"] for m in template["spec"]["metrics"]}
        assert addresses == {"http://prometheus.observability:9090"}
    # An address the caller gives still wins, and without either it is prometheus-operated.
    given = render_argo(stack, "web", prometheus="http://prom.example:9090")
    template = by_kind(given, "AnalysisTemplate")["web"]
    assert template["spec"]["metrics"][0]["provider"]["prometheus"]["address"] == "http://prom.example:9090"
    template = by_kind(render_argo(_policy_stack("canary"), "web"), "AnalysisTemplate")["web"]
    address = template["spec"]["metrics"][0]["provider"]["prometheus"]["address"]
    assert address == "http://prometheus-operated.monitoring.svc:9090"


def test_blue_green_without_auto_promotion() -> None:
    rollout = by_kind(render_argo(_policy_stack("blue-green"), "web"), "Rollout")["web"]
    blue_green = rollout["spec"]["strategy"]
    assert blue_green["blueGreen"]["autoPromotionEnabled"] is False
    assert blue_green["blueGreen"]["scaleDownDelaySeconds"] == 300


def test_a_blue_green_worker_surges_instead() -> None:
    stack = spec_from(
        """
        name: shop
        services:
          jobs: {role: worker, image: shop/jobs:1.0.0, replicas: 2}
        rollout: {strategy: blue-green, analysis: {interval: 0s}}
        """
    ).stack("production")
    objects = render_argo(stack, "jobs")
    assert _kinds(objects) == [("Rollout", "jobs")]
    assert objects[0]["spec"]["strategy"] == {"canary": {"maxSurge": "100%", "maxUnavailable": 0}}


def test_a_check_named_like_shipyards_own_is_refused() -> None:
    stack = _policy_stack("canary", check="error-rate")
    with pytest.raises(RenderError, match=r"rollout\.analysis\.prometheus\[0\]\.name: 'error-rate'"):
        render_argo(stack, "web")


def test_unknown_service_or_no_image() -> None:
    stack = spec_from(
        """
        name: shop
        services:
          local: {role: worker, run: ./work}
        """
    ).stack("production")
    with pytest.raises(RenderError, match="no service 'web'"):
        render_argo(stack, "web")
    with pytest.raises(RenderError, match="has no image"):
        render_argo(stack, "local")


# --- schemas ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def salespot_api(specs: dict[str, Spec]) -> list[dict[str, Any]]:
    return render_argo(specs["salespot"].stack("production"), "api")


@pytest.fixture(scope="module")
def apricode_app(specs: dict[str, Spec]) -> list[dict[str, Any]]:
    return render_argo(specs["apricode"].stack("production"), "app")


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in objects if o["kind"] == kind))


def test_schema_refuses_an_unknown_blue_green_field(salespot_api: list[dict[str, Any]]) -> None:
    rollout = _one(salespot_api, "Rollout")
    rollout["spec"]["strategy"]["blueGreen"]["autoPromote"] = True
    with pytest.raises(RenderError) as raised:
        validate_objects([rollout])
    assert raised.value.message.startswith("Rollout/api is not a valid Rollout")
    unexpected = "Additional properties are not allowed ('autoPromote' was unexpected)"
    assert f"spec.strategy.blueGreen: {unexpected}" in raised.value.message


def test_schema_refuses_a_missing_active_service(salespot_api: list[dict[str, Any]]) -> None:
    rollout = _one(salespot_api, "Rollout")
    del rollout["spec"]["strategy"]["blueGreen"]["activeService"]
    with pytest.raises(
        RenderError, match=r"Rollout/api .*spec\.strategy\.blueGreen: 'activeService' is a required"
    ):
        validate_objects([rollout])


def test_schema_refuses_a_bad_step(apricode_app: list[dict[str, Any]]) -> None:
    rollout = _one(apricode_app, "Rollout")
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    steps[0]["setWeight"] = 150
    steps[1] = {"setWeight": 10, "pause": {}}
    with pytest.raises(RenderError) as raised:
        validate_objects([rollout])
    message = raised.value.message
    # The CRD admits both; Argo's controller would mark the Rollout InvalidSpec (_argo_checks.py).
    assert message.startswith("Rollout/app would be refused by Argo Rollouts' controller")
    assert "spec.strategy.canary.steps[0].setWeight: 150 is not between 0 and 100" in message
    assert "spec.strategy.canary.steps[1]: a step has exactly one action" in message


def test_schema_refuses_two_strategies(apricode_app: list[dict[str, Any]]) -> None:
    rollout = _one(apricode_app, "Rollout")
    rollout["spec"]["strategy"]["blueGreen"] = {"activeService": "app"}
    with pytest.raises(
        RenderError, match=r"Rollout/app .*spec\.strategy: exactly one of canary and blueGreen"
    ):
        validate_objects([rollout])


def test_schema_refuses_traffic_routing_without_services(apricode_app: list[dict[str, Any]]) -> None:
    rollout = _one(apricode_app, "Rollout")
    del rollout["spec"]["strategy"]["canary"]["canaryService"]
    with pytest.raises(RenderError, match=r"spec\.strategy\.canary: trafficRouting needs canaryService"):
        validate_objects([rollout])


def test_schema_refuses_a_malformed_analysis_template(apricode_app: list[dict[str, Any]]) -> None:
    template = _one(apricode_app, "AnalysisTemplate")
    metric = template["spec"]["metrics"][0]
    metric["provider"]["prometheus"]["adress"] = "http://typo"
    with pytest.raises(RenderError) as raised:
        validate_objects([template])
    message = raised.value.message
    assert message.startswith("AnalysisTemplate/app is not a valid AnalysisTemplate")
    assert "spec.metrics[0].provider.prometheus: Additional properties are not allowed ('adress'" in message
    # count is int-or-string in the CRD (an argument may fill it); Argo's controller refuses words.
    del metric["provider"]["prometheus"]["adress"]
    metric["count"] = "fifteen"
    with pytest.raises(RenderError, match=r"spec\.metrics\[0\]\.count: 'fifteen' is neither a number"):
        validate_objects([template])


def test_schema_refuses_a_second_provider(apricode_app: list[dict[str, Any]]) -> None:
    template = _one(apricode_app, "AnalysisTemplate")
    template["spec"]["metrics"][0]["provider"]["web"] = {"url": "http://x"}
    with pytest.raises(RenderError, match=r"spec\.metrics\[0\]\.provider: .*"):
        validate_objects([template])


def test_the_pod_template_is_checked_with_kubernetes_podspec(specs: dict[str, Spec]) -> None:
    stack = specs["apricode"].stack("production")
    objects = copy.deepcopy(render_kubernetes(stack))
    by_kind(objects, "Deployment")["app"]["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    with pytest.raises(RenderError) as raised:
        argo_rollouts(stack, objects)
    message = raised.value.message
    assert message.startswith("Rollout/app is not a valid Rollout: its pod template is not valid for")
    assert "spec.template.spec.containers[0]" in message
    assert "'imagee' was unexpected" in message


def test_every_example_and_environment_validates(specs: dict[str, Spec]) -> None:
    for spec in specs.values():
        for environment in spec.environments:
            _argo_environment(spec.stack(environment))


def test_every_supported_kubernetes_version(specs: dict[str, Spec]) -> None:
    stack = specs["apricode"].stack("production")
    for version in supported_versions():
        render_argo(stack, "app", kube_version=version)


# --- determinism ------------------------------------------------------------------------------


def test_rendering_is_deterministic(specs: dict[str, Spec]) -> None:
    for name, service in (("apricode", "app"), ("normaldance", "api"), ("salespot", "web")):
        stack = specs[name].stack("production")
        assert render_argo(stack, service) == render_argo(stack, service)
        first = json.dumps(argo_rollouts(stack, render_kubernetes(stack)))
        assert json.dumps(argo_rollouts(stack, render_kubernetes(stack))) == first


_PRINT = """
import json, sys
from shipyard.spec import load_spec
from shipyard.render import render_kubernetes
from shipyard.render._argo import argo_rollouts
stack = load_spec(sys.argv[1]).stack("production")
print(json.dumps(argo_rollouts(stack, render_kubernetes(stack))))
"""


def test_output_does_not_depend_on_hash_seeds() -> None:
    path = str(ROOT / "examples" / "normaldance" / "shipyard.yaml")
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _PRINT, path], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_policy_query_placeholders_are_filled_for_argo() -> None:
    query = 'sum(queue_depth{app="{{service}}", env="{{ environment }}"}[{{window}}])'
    stack = spec_from(POLICY.replace("{strategy}", "canary").replace('sum(queue_depth{app="shop"})', query))
    template = by_kind(render_argo(stack.stack("production"), "web"), "AnalysisTemplate")["web"]
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    rendered = metrics["queue-depth"]["provider"]["prometheus"]["query"]
    # The window is the one shipyard's own Argo queries use: at least MIN_RATE_WINDOW (60 s).
    assert rendered == 'sum(queue_depth{app="web", env="production"}[60s])'


def test_a_version_placeholder_cannot_run_on_argo() -> None:
    query = 'sum(errors{version="{{version}}"})'
    stack = spec_from(POLICY.replace("{strategy}", "canary").replace('sum(queue_depth{app="shop"})', query))
    with pytest.raises(RenderError, match=r"prometheus\[0\]\.query: \{\{version\}\} cannot be filled"):
        render_argo(stack.stack("production"), "web")
