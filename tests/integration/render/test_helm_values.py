"""The Helm chart's per-service values and version, rendered by Helm's own engine (helm-python-sdk).

By default the chart gives exactly `render kubernetes`'s objects (tests/integration/render/
test_engines.py); here, `shipyard.services.<name>.image.tag` and `.replicaCount` change what they
say and nothing else, and Chart.yaml carries the spec's SemVer `version`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from shipyard.errors import SpecError
from shipyard.render import helm_tree, render_helm, render_kubernetes
from shipyard.render._outputs import split_image
from shipyard.spec import load_spec

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
APRICODE = ROOT / "examples" / "apricode" / "shipyard.yaml"


def _render(chart: Path, env: str, extra: str = "") -> list[dict[str, Any]]:
    text = (chart / f"values-{env}.yaml").read_text()
    overrides = helm_python.values_from_yaml(text)
    if extra:  # as a second `-f`: merged over the environment's file
        overrides = _merge(overrides, helm_python.values_from_yaml(extra))
    manifests = helm_python.Chart.load(chart).render(overrides, name="apricode", namespace=env)
    return [obj for text in manifests.values() for obj in yaml.safe_load_all(text) if obj]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(merged.get(key), dict) and isinstance(value, dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else spec["template"]
    pod: dict[str, Any] = template["spec"]
    return pod


def _images(obj: dict[str, Any]) -> list[str]:
    pod = _pod(obj)
    return [c["image"] for c in [*pod.get("initContainers", []), *pod["containers"]]]


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_helm(load_spec(APRICODE), tmp_path_factory.mktemp("helm") / "chart").directory


def test_values_say_each_service_image_and_replicas(chart: Path) -> None:
    values = yaml.safe_load((chart / "values.yaml").read_text())
    (app,) = values["shipyard"]["services"].items()
    assert app == ("app", {"image": {"repository": "registry.example.com/apricode-exchange", "tag": "1.1.0"}})
    staging = yaml.safe_load((chart / "values-staging.yaml").read_text())
    stack = load_spec(APRICODE).stack("staging")
    if stack.services["app"].autoscaling is None:
        assert staging["shipyard"]["services"]["app"]["replicaCount"] == stack.services["app"].replicas


def test_image_tag_changes_the_service_pods_only(chart: Path) -> None:
    default = _render(chart, "production")
    changed = _render(
        chart, "production", "shipyard:\n  services:\n    app:\n      image:\n        tag: 1.4.2\n"
    )
    assert len(changed) == len(default)
    touched = 0
    for before, after in zip(sorted(default, key=_key), sorted(changed, key=_key), strict=True):
        if before == after:
            continue
        touched += 1
        assert after["kind"] in {"Deployment", "CronJob"}
        assert _pod(after)["containers"][0]["image"] == "registry.example.com/apricode-exchange:1.4.2"
        for image in _images(after):  # sidecars and other images are left alone
            assert image == "registry.example.com/apricode-exchange:1.4.2" or "apricode-exchange" not in image
    app = next(o for o in changed if o["kind"] == "Deployment" and o["metadata"]["name"] == "app")
    assert _images(app) == ["registry.example.com/apricode-exchange:1.4.2"] * len(_images(app))
    backups = [o for o in changed if o["kind"] == "CronJob" and o["metadata"]["name"].startswith("backup-")]
    assert backups
    assert all("apricode-exchange" not in image for o in backups for image in _images(o))
    assert touched >= 2  # the Deployment and the service's own CronJobs


def test_replica_count_sets_the_service_replicas(chart: Path) -> None:
    changed = _render(chart, "staging", "shipyard:\n  services:\n    app:\n      replicaCount: 4\n")
    app = next(o for o in changed if o["kind"] == "Deployment" and o["metadata"]["name"] == "app")
    assert app["spec"]["replicas"] == 4
    postgres = next(o for o in changed if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "postgres")
    assert postgres["spec"]["replicas"] == 1  # a datastore is not a service


def test_default_values_render_the_same_objects(chart: Path) -> None:
    for env in load_spec(APRICODE).environments:
        assert sorted(map(_canonical, _render(chart, env))) == sorted(
            map(_canonical, render_kubernetes(load_spec(APRICODE).stack(env)))
        )


def test_chart_version_is_the_spec_version(tmp_path: Path) -> None:
    text = APRICODE.read_text()
    assert "\nversion:" not in text
    chart = yaml.safe_load(helm_tree(load_spec(APRICODE)).files["Chart.yaml"])
    assert (chart["version"], chart["appVersion"]) == ("0.1.0", "0.1.0")
    versioned = tmp_path / "shipyard.yaml"
    versioned.write_text(text.replace("\nname: apricode", "\nversion: 2.3.0-rc.1\nname: apricode", 1))
    chart = yaml.safe_load(helm_tree(load_spec(versioned)).files["Chart.yaml"])
    assert (chart["version"], chart["appVersion"]) == ("2.3.0-rc.1", "2.3.0-rc.1")


def test_a_version_that_is_not_semver_is_refused_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "shipyard.yaml"
    bad.write_text(APRICODE.read_text().replace("\nname: apricode", "\nversion: '1.2'\nname: apricode", 1))
    with pytest.raises(SpecError) as raised:
        load_spec(bad)
    assert "'1.2' is not a SemVer 2.0 version" in str(raised.value)
    assert f"{bad}:" in str(raised.value)


@pytest.mark.parametrize(
    ("image", "values"),
    [
        ("nginx", {"repository": "nginx"}),
        ("registry:5000/team/app:1.2", {"repository": "registry:5000/team/app", "tag": "1.2"}),
        ("app@sha256:" + "a" * 64, {"repository": "app", "digest": "sha256:" + "a" * 64}),
    ],
)
def test_split_image(image: str, values: dict[str, str]) -> None:
    assert split_image(image) == values


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return (obj["kind"], obj["metadata"]["name"])


def _canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True)
