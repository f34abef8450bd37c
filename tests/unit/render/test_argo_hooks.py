"""Release hooks on Kubernetes: one Job-based AnalysisTemplate per hook, run by Argo Rollouts before
traffic moves (blue-green's prePromotionAnalysis, a canary's analysis steps before its first
setWeight), as test steps, and after the switch; validated against the real CRDs and as Jobs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from shipyard.errors import RenderError
from shipyard.render import render_kubernetes, validate_objects
from shipyard.render._argo import argo_rollouts, render_argo
from shipyard.render._argo_checks import check_argo_objects
from shipyard.spec import Stack, load_spec_text
from unit.render.render_helpers import ROOT, by_kind

HOOKS = {
    "pre": "./scripts/pre-release.sh",
    "smoke": {"command": 'curl -fsS "$SHIPYARD_CANDIDATE_URL/healthz"', "timeout": "30s"},
    "tests": {
        "checkout": {"command": "./e2e/checkout.sh", "timeout": "2m", "image": "registry.example.com/e2e:1"}
    },
    "post": "./scripts/post-release.sh",
}
VERSION_ARG = {"name": "candidate-version", "valueFrom": {"podTemplateHashValue": "Latest"}}


def _stack(example: str, environment: str, rollout: dict[str, Any]) -> Stack:
    spec = yaml.safe_load((ROOT / "examples" / example / "shipyard.yaml").read_text())
    spec["rollout"] = {**spec.get("rollout", {}), **rollout}
    stack: Stack = load_spec_text(yaml.safe_dump(spec), f"{example}.yaml").stack(environment)
    return stack


def _analysis(template: str, url: str | None) -> dict[str, Any]:
    args = ([{"name": "candidate-url", "value": url}] if url is not None else []) + [VERSION_ARG]
    return {"analysis": {"templates": [{"templateName": template}], "args": args}}


def test_a_canary_smoke_tests_its_scaled_up_canary_before_the_first_set_weight() -> None:
    steps = [{"weight": 10}, {"test": "checkout"}, {"analysis": "30s"}, {"weight": 100}]
    stack = _stack("apricode", "production", {"hooks": HOOKS, "steps": steps})
    objects = render_argo(stack, "app")
    validate_objects(objects)  # the real CRDs (also done by render_argo): said here, where it matters
    templates = by_kind(objects, "AnalysisTemplate")
    assert set(templates) == {"app", "app-pre", "app-smoke", "app-test-checkout", "app-post"}
    canary = by_kind(objects, "Rollout")["app"]["spec"]["strategy"]["canary"]
    url = "http://app-canary.production.svc:3000"
    assert canary["steps"][:4] == [
        _analysis("app-pre", None),
        {"setCanaryScale": {"weight": 100}},
        _analysis("app-smoke", url),
        {"setWeight": 10},
    ]
    assert canary["steps"][4] == _analysis("app-test-checkout", url)
    assert canary["steps"][-2:] == [{"setWeight": 100}, _analysis("app-post", url)]
    # Nothing before the smoke test's step gives the canary a share of the traffic.
    smoke_at = canary["steps"].index(_analysis("app-smoke", url))
    assert not any("setWeight" in step for step in canary["steps"][:smoke_at])


def test_a_hook_is_a_job_with_the_services_image_environment_and_hardening_and_its_timeout() -> None:
    stack = _stack("apricode", "production", {"hooks": HOOKS})
    objects = render_argo(stack, "app")
    rollout_pod = by_kind(objects, "Rollout")["app"]["spec"]["template"]["spec"]
    app = rollout_pod["containers"][0]
    smoke = by_kind(objects, "AnalysisTemplate")["app-smoke"]
    assert smoke["spec"]["args"] == [{"name": "candidate-url"}, {"name": "candidate-version"}]
    (metric,) = smoke["spec"]["metrics"]
    assert metric["name"] == "smoke"
    assert "count" not in metric  # one measurement: the Job's end
    job = metric["provider"]["job"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 30
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"] == rollout_pod["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == app["image"]
    assert container["command"] == ["/bin/sh", "-c", 'curl -fsS "$SHIPYARD_CANDIDATE_URL/healthz"']
    assert container["securityContext"] == app["securityContext"]
    assert container["envFrom"] == app["envFrom"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SHIPYARD_CANDIDATE_URL"] == "{{args.candidate-url}}"
    assert env["SHIPYARD_CANDIDATE_VERSION"] == "{{args.candidate-version}}"
    assert (env["SHIPYARD_SERVICE"], env["SHIPYARD_ENVIRONMENT"], env["SHIPYARD_HOOK"]) == (
        "app",
        "production",
        "smoke",
    )
    assert {item["name"] for item in app["env"]} <= set(env)  # the app's own environment too
    # /tmp stays writable under a read-only root filesystem; the app's claims are not mounted.
    assert {m["mountPath"] for m in container.get("volumeMounts", [])} <= {
        m["mountPath"] for m in app["volumeMounts"]
    }
    assert all("emptyDir" in volume for volume in pod.get("volumes", []))
    # Its pod is the service's by name (admitted by its NetworkPolicies), not by component: the
    # service's Services never select it.
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "app"
    assert labels["app.kubernetes.io/component"] == "release-hook"
    test = by_kind(objects, "AnalysisTemplate")["app-test-checkout"]
    test_container = test["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert test_container["image"] == "registry.example.com/e2e:1"
    pre = by_kind(objects, "AnalysisTemplate")["app-pre"]
    assert pre["spec"]["args"] == [{"name": "candidate-version"}]  # before anything runs: no address


def test_blue_green_runs_pre_and_smoke_against_the_preview_before_the_switch_and_post_after() -> None:
    stack = _stack("salespot", "production", {"hooks": HOOKS})
    objects = render_argo(stack, "api")
    blue_green = by_kind(objects, "Rollout")["api"]["spec"]["strategy"]["blueGreen"]
    preview = "http://api-preview.salespot-production.svc:4000"
    assert blue_green["prePromotionAnalysis"] == {
        "templates": [{"templateName": "api-pre"}, {"templateName": "api-smoke"}],
        "args": [VERSION_ARG, {"name": "candidate-url", "value": preview}],
    }
    post = blue_green["postPromotionAnalysis"]
    assert post["templates"] == [{"templateName": "api"}, {"templateName": "api-post"}]
    assert {arg["name"] for arg in post["args"]} == {
        "service", "count", "inconclusive-limit", "candidate-url", "candidate-version",
    }  # fmt: skip
    # Tests are canary steps: a blue-green release has none to run (as on the local target).
    assert "api-test-checkout" in by_kind(objects, "AnalysisTemplate")


def test_a_whole_environment_with_hooks_validates_against_the_crds_and_kubernetes() -> None:
    stack = _stack("apricode", "production", {"hooks": HOOKS})
    objects = argo_rollouts(stack, render_kubernetes(stack))
    validate_objects(objects)
    assert "app-smoke" in by_kind(objects, "AnalysisTemplate")


def test_a_canary_without_an_ingress_cannot_smoke_test_before_traffic_and_says_so() -> None:
    stack = _stack("apricode", "production", {"hooks": HOOKS})
    unrouted = stack.model_copy(
        update={
            "services": {**stack.services, "app": stack.services["app"].model_copy(update={"ingress": None})}
        }
    )
    with pytest.raises(RenderError) as caught:
        render_argo(unrouted, "app")
    assert caught.value.message.startswith(
        "rollout.hooks.smoke: service 'app' is a canary without an ingress"
    )
    # Without a smoke test the same canary renders its other hooks.
    no_smoke = unrouted.model_copy(
        update={
            "rollout": unrouted.rollout.model_copy(
                update={"hooks": unrouted.rollout.hooks.model_copy(update={"smoke": None})}
            )
        }
    )
    steps = by_kind(render_argo(no_smoke, "app"), "Rollout")["app"]["spec"]["strategy"]["canary"]["steps"]
    assert steps[0] == _analysis("app-pre", None)
    assert not any("setCanaryScale" in step for step in steps)


def test_a_bad_hook_job_is_refused_as_the_job_kubernetes_would_refuse() -> None:
    stack = _stack(
        "apricode", "production", {"hooks": {"smoke": {"command": "true", "timeout": "30s", "image": "x y"}}}
    )
    objects = render_argo(stack, "app")  # an image name is not checked by the schema
    template = copy.deepcopy(by_kind(objects, "AnalysisTemplate")["app-smoke"])
    job = template["spec"]["metrics"][0]["provider"]["job"]
    job["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    with pytest.raises(RenderError) as caught:
        validate_objects([template])
    assert "bogus" in caught.value.message


def test_argos_controller_refuses_set_canary_scale_without_traffic_routing() -> None:
    rollout = {
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {"strategy": {"canary": {"steps": [{"setCanaryScale": {"weight": 100}}, {"setWeight": 10}]}}},
    }
    with pytest.raises(RenderError) as caught:
        check_argo_objects([rollout])
    assert "steps[0].setCanaryScale: needs spec.strategy.canary.trafficRouting" in caught.value.message
    routed = copy.deepcopy(rollout)
    routed["spec"]["strategy"]["canary"] |= {
        "trafficRouting": {"nginx": {"stableIngress": "web"}},
        "canaryService": "web-canary",
        "stableService": "web",
    }
    check_argo_objects([routed])
