"""Kustomize and Helm trees: their shape, and that they are byte-identical across runs.

That they render to exactly `render_kubernetes`'s objects is proven with the real engines in
tests/integration/render.
"""

from __future__ import annotations

import yaml

from shipyard.render import helm_tree, kustomize_tree
from shipyard.render._diff import json_patch, same, values_patch
from shipyard.spec import Spec, load_spec
from unit.render.render_helpers import spec_from


def test_trees_are_deterministic(apricode: Spec) -> None:
    again = load_spec(apricode.file)
    assert kustomize_tree(apricode).files == kustomize_tree(again).files
    assert helm_tree(apricode).files == helm_tree(again).files


def test_kustomize_layout(apricode: Spec) -> None:
    rendered = kustomize_tree(apricode, base_environment="dev")
    assert rendered.base_environment == "dev"
    base = yaml.safe_load(rendered.files["base/kustomization.yaml"])
    assert all(f"base/{name}" in rendered.files for name in base["resources"])
    production = yaml.safe_load(rendered.files["overlays/production/kustomization.yaml"])
    assert production["namespace"] == "production"
    assert production["resources"][0] == "../../base"
    # production has what dev lacks: added as resources of its overlay
    assert "resources/horizontalpodautoscaler-app.yaml" in production["resources"]
    dev = yaml.safe_load(rendered.files["overlays/dev/kustomization.yaml"])
    assert "patches" not in dev


def test_helm_layout(apricode: Spec) -> None:
    files = helm_tree(apricode).files
    chart = yaml.safe_load(files["Chart.yaml"])
    assert chart == {
        "apiVersion": "v2",
        "name": "apricode",
        "description": "The apricode stack, rendered by shipyard from shipyard.yaml.",
        "type": "application",
        "version": "0.1.0",  # the spec's `version` (default 0.1.0)
        "appVersion": "0.1.0",
    }
    values = yaml.safe_load(files["values.yaml"])
    assert values["deployments"]["app"]["kind"] == "Deployment"
    assert yaml.safe_load(files["values-production.yaml"]) == {}
    dev = yaml.safe_load(files["values-dev.yaml"])
    assert dev["horizontalPodAutoscalers"] is None  # null deletes in Helm's merge
    assert "templates/deployments.yaml" in files


def test_strings_go_yaml_would_misread_are_quoted() -> None:
    spec = spec_from(
        """
        name: quoting
        services:
          web:
            role: worker
            image: quoting/web:1
            env: {A: "n", B: "y", C: "0o17", D: "1e3", E: "yes", F: "0755"}
        environments: {dev: {}}
        """
    )
    text = next(v for k, v in kustomize_tree(spec).files.items() if k.endswith("configmap-web-env.yaml"))
    for value in ("'n'", "'y'", "'0o17'", "'1e3'", "'yes'", "'0755'"):
        assert value in text


def test_diffs() -> None:
    base = {"a": 1, "b": {"c": [1, 2], "d": True}, "e/f": "x"}
    target = {"a": 1, "b": {"c": [1, 2, 3], "d": 1}, "g": {}}
    assert json_patch(base, target) == [
        {"op": "remove", "path": "/e~1f"},
        {"op": "replace", "path": "/b/c", "value": [1, 2, 3]},
        {"op": "replace", "path": "/b/d", "value": 1},
        {"op": "add", "path": "/g", "value": {}},
    ]
    assert values_patch(base, target) == {"b": {"c": [1, 2, 3], "d": 1}, "e/f": None, "g": {}}
    assert json_patch(base, base) == []
    assert values_patch(base, base) == {}
    assert not same(True, 1)
    assert not same(1, 1.0)
