"""ArgoRolloutsDriver against recorded Kubernetes API answers, through the official client's HTTP stack.
(What needs no API server is in tests/unit/rollout/test_kubernetes.py.)

A small HTTP server on loopback plays the API server: it answers each request with a recorded
response (`tests/unit/rollout/recorded/*.json`) and keeps what it was sent, so these tests see
the requests exactly as the `kubernetes` client builds them (path, query, headers, body) and the
client decodes real JSON. Nothing in the client is replaced.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, Configuration

from shipyard.errors import TargetError
from shipyard.rollout.targets.kubernetes import (
    Applied,
    ArgoRolloutsDriver,
    RolloutStatus,
)
from shipyard.spec import Stack, load_spec
from support.kube_api import TOKEN, RecordedAPI, recorded_api

ROOT = Path(__file__).resolve().parents[3]
ROLLOUT = "/apis/argoproj.io/v1alpha1/namespaces/production/rollouts/app"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
SSA_QUERY = "?fieldManager=shipyard&force=true"


@pytest.fixture
def api() -> Iterator[RecordedAPI]:
    with recorded_api() as recorded:
        yield recorded


def _sent(api: RecordedAPI) -> list[tuple[str, str]]:
    """(method, path with its query) of every request so far: the query carries the apply options."""
    return [(r.method, r.path) for r in api.requests]


def _client(url: str) -> ApiClient:
    configuration = Configuration(
        host=url, api_key={"BearerToken": TOKEN}, api_key_prefix={"BearerToken": "Bearer"}
    )
    return ApiClient(configuration)


@pytest.fixture
def driver(api: RecordedAPI) -> ArgoRolloutsDriver:
    return ArgoRolloutsDriver(_client(api.url), timeout=5)


@pytest.fixture(scope="module")
def apricode() -> Stack:
    stack: Stack = load_spec(ROOT / "examples" / "apricode" / "shipyard.yaml").stack("production")
    return stack


# --- status --------------------------------------------------------------------------------------


def test_status_progressing_at_step_two(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("GET", ROLLOUT, "rollout-app-progressing.json")
    status = driver.status("production", "app")
    assert status == RolloutStatus(
        namespace="production",
        service="app",
        phase="Progressing",
        message="more replicas need to be updated",
        strategy="canary",
        step_index=2,
        step_count=7,
        canary_weight=25,
        stable_hash="7b9c6d5f84",
        canary_hash="5d4f8b6c9a",
        paused=False,
        aborted=False,
        pause_reasons=(),
        replicas=5,
        ready_replicas=5,
        updated_replicas=1,
        image="registry.example.com/apricode-exchange:1.2.0",
        observed=True,
    )
    assert not status.promoted
    (request,) = api.requests
    assert (request.method, request.path) == ("GET", ROLLOUT)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"
    assert request.body is None


def test_status_paused_on_an_inconclusive_analysis(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("GET", ROLLOUT, "rollout-app-paused.json")
    status = driver.status("production", "app")
    assert (status.phase, status.message) == ("Paused", "InconclusiveAnalysisRun")
    assert status.paused
    assert status.pause_reasons == ("InconclusiveAnalysisRun",)
    assert (status.step_index, status.canary_weight) == (3, 25)


def test_status_degraded_after_an_abort(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("GET", ROLLOUT, "rollout-app-aborted.json")
    status = driver.status("production", "app")
    assert status.phase == "Degraded"
    assert status.aborted
    assert status.message.startswith("RolloutAborted: Rollout aborted update to revision 2")
    assert 'Metric "error-rate" assessed Failed' in status.message
    assert (status.step_index, status.canary_weight) == (0, 0)


def test_status_healthy_once_promoted(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("GET", ROLLOUT, "rollout-app-healthy.json")
    status = driver.status("production", "app")
    assert status.phase == "Healthy"
    assert status.promoted
    assert status.stable_hash == status.canary_hash == "5d4f8b6c9a"
    assert (status.step_index, status.step_count, status.canary_weight) == (7, 7, 0)
    assert status.message == ""


def test_status_of_a_blue_green_waiting_for_promotion(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    path = "/apis/argoproj.io/v1alpha1/namespaces/salespot-production/rollouts/api"
    api.answer("GET", path, "rollout-api-bluegreen-paused.json")
    status = driver.status("salespot-production", "api")
    assert status.strategy == "blue-green"
    assert (status.phase, status.pause_reasons) == ("Paused", ("BlueGreenPause",))
    assert status.step_index is None
    assert status.canary_weight == 0  # the preview takes no traffic until promoted
    assert (status.stable_hash, status.canary_hash) == ("6f7b8d9c4e", "84c9d7b6f5")
    assert status.image == "salespot/api:2.4.0"


# --- promote, abort, retry -------------------------------------------------------------------------


def test_promote_clears_the_pause_conditions(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("GET", ROLLOUT, "rollout-app-paused.json")
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-paused-promoted.json")
    status = driver.promote("production", "app")
    assert _sent(api) == [("GET", ROLLOUT), ("PATCH", f"{ROLLOUT}/status")]
    patch = api.requests[1]
    assert patch.headers["content-type"] == MERGE
    assert patch.headers["authorization"] == f"Bearer {TOKEN}"
    assert patch.body == {"status": {"pauseConditions": None}}
    assert status.pause_reasons == ()


def test_promote_during_an_analysis_moves_to_the_next_step(
    api: RecordedAPI, driver: ArgoRolloutsDriver
) -> None:
    api.answer("GET", ROLLOUT, "rollout-app-progressing.json")
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-step-skipped.json")
    status = driver.promote("production", "app")
    assert api.requests[1].body == {"status": {"pauseConditions": None, "currentStepIndex": 3}}
    assert api.requests[1].headers["content-type"] == MERGE
    assert status.step_index == 3


def test_promote_a_manually_paused_rollout_unpauses_its_spec(
    api: RecordedAPI, driver: ArgoRolloutsDriver
) -> None:
    api.answer("GET", ROLLOUT, "rollout-app-manually-paused.json")
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-step-skipped.json")
    api.answer("PATCH", ROLLOUT, "rollout-app-manually-paused-unpaused.json")
    driver.promote("production", "app")
    # As `kubectl argo rollouts promote`: the status subresource first, then the spec.
    assert _sent(api) == [("GET", ROLLOUT), ("PATCH", f"{ROLLOUT}/status"), ("PATCH", ROLLOUT)]
    assert api.requests[1].body == {"status": {"pauseConditions": None, "currentStepIndex": 3}}
    assert api.requests[2].body == {"spec": {"paused": False}}
    assert api.requests[2].headers["content-type"] == MERGE


def test_promote_full(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("GET", ROLLOUT, "rollout-app-progressing.json")
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-promote-full.json")
    driver.promote("production", "app", full=True)
    assert _sent(api) == [("GET", ROLLOUT), ("PATCH", f"{ROLLOUT}/status")]
    assert api.requests[1].body == {"status": {"promoteFull": True}}


def test_promote_full_of_a_promoted_rollout_sends_nothing(
    api: RecordedAPI, driver: ArgoRolloutsDriver
) -> None:
    api.answer("GET", ROLLOUT, "rollout-app-healthy.json")
    status = driver.promote("production", "app", full=True)
    assert _sent(api) == [("GET", ROLLOUT)]
    assert status.phase == "Healthy"


def test_promote_a_blue_green_preview(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    path = "/apis/argoproj.io/v1alpha1/namespaces/salespot-production/rollouts/api"
    api.answer("GET", path, "rollout-api-bluegreen-paused.json")
    api.answer("PATCH", f"{path}/status", "rollout-api-bluegreen-paused.json")
    driver.promote("salespot-production", "api")
    assert api.requests[1].body == {"status": {"pauseConditions": None}}  # no step index: no steps


def test_abort(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-abort-accepted.json")
    status = driver.abort("production", "app")
    (request,) = api.requests
    assert (request.method, request.path) == ("PATCH", f"{ROLLOUT}/status")
    assert request.headers["content-type"] == MERGE
    assert request.body == {"status": {"abort": True}}
    assert status.aborted


def test_retry(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-retried.json")
    status = driver.retry("production", "app")
    assert api.requests[0].body == {"status": {"abort": False}}
    assert not status.aborted


# --- deploy --------------------------------------------------------------------------------------

_DEPLOY = [
    ("/api/v1/namespaces/production/configmaps/app-env", "apply-configmap-app-env.json"),
    ("/api/v1/namespaces/production/services/app", "apply-service-app.json"),
    ("/api/v1/namespaces/production/services/app-canary", "apply-service-app-canary.json"),
    ("/apis/networking.k8s.io/v1/namespaces/production/ingresses/app", "apply-ingress-app.json"),
    (
        "/apis/argoproj.io/v1alpha1/namespaces/production/analysistemplates/app",
        "apply-analysistemplate-app.json",
    ),
    (ROLLOUT, "apply-rollout-app.json"),
    (
        "/apis/autoscaling/v2/namespaces/production/horizontalpodautoscalers/app",
        "apply-horizontalpodautoscaler-app.json",
    ),
    ("/apis/policy/v1/namespaces/production/poddisruptionbudgets/app", "apply-poddisruptionbudget-app.json"),
]


def _answer_deploy(api: RecordedAPI) -> None:
    for path, name in _DEPLOY:
        api.answer("PATCH", path, name)


def test_deploy_server_side_applies_the_release(
    api: RecordedAPI, driver: ArgoRolloutsDriver, apricode: Stack
) -> None:
    _answer_deploy(api)
    applied = driver.deploy(apricode, "app", "1.2.0")
    assert applied == [
        Applied("ConfigMap", "app-env"),
        Applied("Service", "app"),
        Applied("Service", "app-canary"),
        Applied("Ingress", "app"),
        Applied("AnalysisTemplate", "app"),
        Applied("Rollout", "app"),
        Applied("HorizontalPodAutoscaler", "app"),
        Applied("PodDisruptionBudget", "app"),
    ]
    assert [(r.method, r.path) for r in api.requests] == [("PATCH", path + SSA_QUERY) for path, _ in _DEPLOY]
    expected = driver.manifests(apricode, "app", "1.2.0")
    for request, body in zip(api.requests, expected, strict=True):
        assert request.headers["content-type"] == APPLY
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.body == body  # the rendered object, whole: what it sets is what it owns
    rollout = api.requests[5].body
    containers = rollout["spec"]["template"]["spec"]
    assert containers["containers"][0]["image"] == "registry.example.com/apricode-exchange:1.2.0"
    assert containers["initContainers"][0]["image"] == "registry.example.com/apricode-exchange:1.2.0"
    hpa = api.requests[6].body
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": "app",
    }


def test_deploy_is_idempotent(api: RecordedAPI, driver: ArgoRolloutsDriver, apricode: Stack) -> None:
    _answer_deploy(api)
    driver.deploy(apricode, "app", "1.2.0")
    first = [(r.method, r.path, r.body) for r in api.requests]
    api.requests.clear()
    driver.deploy(apricode, "app", "1.2.0")
    assert [(r.method, r.path, r.body) for r in api.requests] == first


# --- failures ------------------------------------------------------------------------------------


def test_a_missing_rollout(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("GET", ROLLOUT, "status-404-rollout.json", status=404)
    with pytest.raises(TargetError) as raised:
        driver.status("production", "app")
    message = raised.value.message
    assert message.startswith("cannot read Rollout production/app: not found")
    assert 'rollouts.argoproj.io "app" not found' in message


def test_argo_rollouts_not_installed(api: RecordedAPI, driver: ArgoRolloutsDriver, apricode: Stack) -> None:
    _answer_deploy(api)
    templates = "/apis/argoproj.io/v1alpha1/namespaces/production/analysistemplates/app"
    api.answers.pop(("PATCH", templates))  # replace the deploy's answer with the 404
    api.answer("PATCH", templates, "status-404-no-crd.json", status=404)
    with pytest.raises(TargetError) as raised:
        driver.deploy(apricode, "app", "1.2.0")
    message = raised.value.message
    assert message.startswith("cannot apply AnalysisTemplate production/app: not found")
    assert "Argo Rollouts (its CRDs) is not installed" in message
    assert "the server could not find the requested resource" in message
    assert len(api.requests) == 5  # stopped at the first failure


def test_a_conflict(api: RecordedAPI, driver: ArgoRolloutsDriver) -> None:
    api.answer("PATCH", f"{ROLLOUT}/status", "status-409-conflict.json", status=409)
    with pytest.raises(TargetError) as raised:
        driver.abort("production", "app")
    message = raised.value.message
    assert message.startswith("cannot abort Rollout production/app: conflict")
    assert "the object has been modified" in message


def test_connection_refused() -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configuration = Configuration(host=f"http://127.0.0.1:{port}", api_key={"BearerToken": TOKEN})
    configuration.retries = 0
    driver = ArgoRolloutsDriver(ApiClient(configuration), timeout=2)
    with pytest.raises(TargetError) as raised:
        driver.status("production", "app")
    message = raised.value.message
    assert message.startswith(
        f"cannot read Rollout production/app: the Kubernetes API at http://127.0.0.1:{port}"
    )
    assert "unreachable" in message
    assert "refused" in message.lower()  # at once, from the port: not waited out as a timeout
