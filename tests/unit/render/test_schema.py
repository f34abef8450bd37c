"""Offline schema validation: invalid objects are refused with their name, field and problem."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from shipyard.errors import RenderError
from shipyard.render import render_kubernetes, supported_versions, validate_objects
from shipyard.render._schema import _schema_root, schema_version
from shipyard.spec import Spec


@pytest.fixture(scope="module")
def objects(apricode: Spec) -> list[dict[str, Any]]:
    return render_kubernetes(apricode.stack("production"))


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
    return copy.deepcopy(found)


def test_an_unknown_field_names_the_object_and_the_path(objects: list[dict[str, Any]]) -> None:
    deployment = _named(objects, "Deployment", "app")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    with pytest.raises(RenderError) as raised:
        validate_objects([deployment])
    message = raised.value.message
    assert message.startswith("Deployment/app is not a valid Deployment for Kubernetes 1.33")
    assert "spec.template.spec.containers[0]" in message
    assert "'imagee' was unexpected" in message


def test_a_wrong_type_is_refused(objects: list[dict[str, Any]]) -> None:
    service = _named(objects, "Service", "app")
    service["spec"]["ports"][0]["port"] = "3000"
    with pytest.raises(RenderError, match=r"Service/app .*spec\.ports\[0\]\.port: '3000' is not of type"):
        validate_objects([service])


def test_a_bad_enum_value_is_refused(objects: list[dict[str, Any]]) -> None:
    hpa = _named(objects, "HorizontalPodAutoscaler", "app")
    hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] = True
    with pytest.raises(RenderError, match="HorizontalPodAutoscaler/app"):
        validate_objects([hpa])


def test_the_external_secret_crd_refuses_an_unknown_field(objects: list[dict[str, Any]]) -> None:
    secret = _named(objects, "ExternalSecret", "apricode-app")
    secret["spec"]["dataFrom"] = []  # a field of the real CRD
    validate_objects([secret])
    secret["spec"]["dataFromm"] = []
    with pytest.raises(RenderError, match=r"ExternalSecret/apricode-app .*'dataFromm' was unexpected"):
        validate_objects([secret])


def test_a_kind_without_a_schema_is_refused() -> None:
    thing = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(RenderError, match=r"Widget/w: no schema for Widget example\.com/v1"):
        validate_objects([thing])


def test_kubernetes_versions() -> None:
    assert "1.33" in supported_versions()
    assert schema_version("v1.30.2") == "1.30"
    with pytest.raises(RenderError, match=r"no Kubernetes schemas for version 1\.99"):
        schema_version("1.99")
    with pytest.raises(RenderError, match="is not a Kubernetes version"):
        schema_version("latest")


def test_every_supported_version_accepts_what_is_rendered_for_it(apricode: Spec) -> None:
    for version in supported_versions():
        render_kubernetes(apricode.stack("production"), kube_version=version)


# The validator skips jsonschema's descent into leaves it can judge itself. That shortcut must
# never change a verdict: compare with an untouched Draft 2020-12 validator on mutated objects.

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["", "TCP", "Prefix", "RuntimeDefault", "Utilization", "1Gi", "x"]),
    st.just({}),
    st.just([]),
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def _plain_validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    folder = _schema_root().joinpath("v1.33.0-local-strict")
    group_version = api_version.replace(".authorization.k8s.io", "").replace(".k8s.io", "").replace("/", "-")
    schema = json.loads(folder.joinpath(f"{kind.lower()}-{group_version}.json").read_text())
    definitions = json.loads(folder.joinpath("_definitions.json").read_text())
    registry: Registry[Any] = Registry().with_resource(
        "https://kubernetes.io/api/_definitions.json", Resource.from_contents(definitions)
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_fast_path_never_changes_a_verdict(objects: list[dict[str, Any]], data: st.DataObject) -> None:
    candidates = [o for o in objects if o["kind"] != "ExternalSecret"]
    obj = copy.deepcopy(candidates[data.draw(st.integers(0, len(candidates) - 1))])
    path = data.draw(st.sampled_from([p for p in _paths(obj) if p not in {(), ("kind",), ("apiVersion",)}]))
    parent = obj
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = data.draw(_SCALARS)
    plain = _plain_validator(obj["kind"], obj["apiVersion"])
    expected_valid = plain.is_valid(obj)
    try:
        validate_objects([obj])
        valid = True
    except RenderError:
        valid = False
    assert valid == expected_valid, (obj["kind"], path, parent[path[-1]])


def test_remembered_valid_objects_do_not_hide_invalid_ones(objects: list[dict[str, Any]]) -> None:
    secret = _named(objects, "ExternalSecret", "apricode-app")
    validate_objects([secret])
    secret["metadata"]["namespace"] = "elsewhere"
    validate_objects([secret])
    secret["spec"]["refreshInterval"] = 3600
    with pytest.raises(RenderError, match=r"ExternalSecret/apricode-app .*spec\.refreshInterval"):
        validate_objects([secret])
    service = _named(objects, "Service", "app")
    validate_objects([service])
    service["metadata"]["namespace"] = "elsewhere"
    validate_objects([service])  # any string is a namespace to the Kubernetes schemas
    service["spec"]["ports"][0]["port"] = True
    with pytest.raises(RenderError, match="Service/app"):
        validate_objects([service])
