"""ArgoRolloutsDriver without an API server: status parsing of recorded Rollouts, the objects a
release applies, image tags. The driver against (recorded) API answers over HTTP is in
tests/integration/rollout/test_kubernetes.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes.client import ApiClient, Configuration

from shipyard.errors import TargetError
from shipyard.rollout.targets.kubernetes import ArgoRolloutsDriver, image_with_tag, parse_status
from shipyard.spec import Stack, load_spec
from support.kube_api import recording

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def driver() -> ArgoRolloutsDriver:
    """A driver whose API server is never asked (nothing here sends a request)."""
    return ArgoRolloutsDriver(ApiClient(Configuration(host="http://kubernetes.invalid")), timeout=5)


@pytest.fixture(scope="module")
def apricode() -> Stack:
    stack: Stack = load_spec(ROOT / "examples" / "apricode" / "shipyard.yaml").stack("production")
    return stack


def test_canary_weight_without_traffic_routing_follows_the_steps() -> None:
    rollout = recording("rollout-app-progressing.json")
    del rollout["status"]["canary"]["weights"]
    rollout["status"]["currentStepIndex"] = 3
    assert parse_status(rollout, namespace="production", service="app").canary_weight == 25
    rollout["status"]["currentStepIndex"] = 7
    assert parse_status(rollout, namespace="production", service="app").canary_weight == 100


def test_deploy_of_a_blue_green_service_applies_its_preview(driver: ArgoRolloutsDriver) -> None:
    stack = load_spec(ROOT / "examples" / "salespot" / "shipyard.yaml").stack("production")
    kinds = [(o["kind"], o["metadata"]["name"]) for o in driver.manifests(stack, "api", "2.4.0")]
    assert kinds == [
        ("ConfigMap", "api-env"),
        ("PersistentVolumeClaim", "api-uploads"),
        ("Service", "api"),
        ("Service", "api-preview"),
        ("Ingress", "api"),
        ("AnalysisTemplate", "api"),
        ("Rollout", "api"),
        ("HorizontalPodAutoscaler", "api"),
        ("PodDisruptionBudget", "api"),
    ]


def test_image_tags() -> None:
    assert image_with_tag("registry.example.com/apricode-exchange:1.1.0", "1.2.0") == (
        "registry.example.com/apricode-exchange:1.2.0"
    )
    assert image_with_tag("registry.local:5000/team/app", "v2") == "registry.local:5000/team/app:v2"
    digest = "sha256:" + "ab" * 32
    assert image_with_tag("ipfs/kubo:v0.29.0", digest) == f"ipfs/kubo@{digest}"
    assert image_with_tag(f"ipfs/kubo@{digest}", "v0.30.0") == "ipfs/kubo:v0.30.0"
    with pytest.raises(TargetError, match="is not an image tag"):
        image_with_tag("app:1", "1.2.0; rm -rf /")


def test_deploy_of_an_unknown_service(driver: ArgoRolloutsDriver, apricode: Stack) -> None:
    with pytest.raises(TargetError, match="no service 'api' in stack 'apricode'"):
        driver.deploy(apricode, "api", "1.2.0")
