"""Custom resources are checked against the real CRDs of ../shared/crds/, as strictly as an API
server with strict field validation: unknown fields, types, int-or-string, nullable, list-map
keys, CEL rules, and the scope of the kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.errors import RenderError
from shipyard.render import validate_objects
from shipyard.render._crds import custom_resource, custom_resources, packaged_form

SHARED_CRDS = Path(__file__).resolve().parents[4] / "shared" / "crds"
PACKAGED = Path(__file__).resolve().parents[3] / "src" / "shipyard" / "render" / "crds"


def test_the_packaged_crds_are_the_shared_ones() -> None:
    shared = sorted(SHARED_CRDS.glob("*.yaml"))
    assert len(shared) == 22
    for path in shared:
        form = packaged_form(yaml.safe_load(path.read_text()), path.name)
        packaged = PACKAGED / f"{form['group']}_{form['plural']}.json"
        assert json.loads(packaged.read_text()) == form, f"{packaged} is stale: run scripts/vendor_crds.py"
    kinds = {kind for kind, _ in custom_resources()}
    assert {"Cluster", "Pooler", "ScheduledBackup", "Middleware", "TraefikService", "IngressRoute"} <= kinds
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Application", "AppProject"} <= kinds
    # Only served versions: ExternalSecret v1beta1 is in the CRD but no longer served.
    assert custom_resource("ExternalSecret", "external-secrets.io/v1beta1") is None
    cluster = custom_resource("Cluster", "postgresql.cnpg.io/v1")
    assert cluster is not None
    assert (cluster.plural, cluster.namespaced) == ("clusters", True)
    issuer = custom_resource("ClusterIssuer", "cert-manager.io/v1")
    assert issuer is not None
    assert not issuer.namespaced


def _cluster(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"instances": 3, "storage": {"size": "10Gi"}, **spec},
    }


def test_a_valid_cnpg_cluster_passes_and_an_unknown_field_anywhere_is_refused() -> None:
    validate_objects([_cluster()])
    with pytest.raises(RenderError, match=r"Cluster/db .*spec\.storage: .*'sise' was unexpected"):
        validate_objects([_cluster(storage={"size": "1Gi", "sise": "2Gi"})])
    with pytest.raises(RenderError, match=r"Cluster/db .*spec: .*'instance' was unexpected"):
        validate_objects([_cluster(instance=2)])
    with pytest.raises(RenderError, match=r"spec\.instances: 'three' is not of type 'integer'"):
        validate_objects([_cluster(instances="three")])


def test_metadata_is_kubernetes_object_meta_and_the_scope_is_checked() -> None:
    bad_meta = _cluster()
    bad_meta["metadata"]["labels"] = {"a": 1}
    with pytest.raises(RenderError, match=r"metadata\.labels\.a: 1 is not of type 'string'"):
        validate_objects([bad_meta])
    issuer = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": "letsencrypt"},
        "spec": {"selfSigned": {}},
    }
    validate_objects([issuer])
    issuer["metadata"]["namespace"] = "shop"  # a cluster-scoped kind has no namespace
    with pytest.raises(RenderError, match=r"ClusterIssuer/letsencrypt .*metadata"):
        validate_objects([issuer])


def test_int_or_string_and_cel_rules() -> None:
    middleware = {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "Middleware",
        "metadata": {"name": "m", "namespace": "shop"},
        "spec": {"rateLimit": {"average": 50, "burst": 100, "period": "1m"}},
    }
    validate_objects([middleware])
    middleware["spec"]["rateLimit"]["period"] = 60  # int-or-string
    validate_objects([middleware])
    middleware["spec"]["rateLimit"]["period"] = [60]
    with pytest.raises(RenderError, match=r"spec\.rateLimit\.period"):
        validate_objects([middleware])
    prefix = {**middleware, "spec": {"addPrefix": {"prefix": "api"}}}
    with pytest.raises(RenderError, match=r"Middleware/m .*spec\.addPrefix\.prefix: must start with a '/'"):
        validate_objects([prefix])
    validate_objects([{**middleware, "spec": {"addPrefix": {"prefix": "/api"}}}])
    # A transition rule (oldSelf) only runs on update: a create passes it.
    validate_objects(
        [
            {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "ScheduledBackup",
                "metadata": {"name": "b", "namespace": "shop"},
                "spec": {"schedule": "0 0 0 * * *", "cluster": {"name": "db"}},
            }
        ]
    )


def test_list_map_keys_are_unique() -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "metrics"}]},
    }
    validate_objects([monitor])
    cluster = _cluster(
        managed={
            "services": {
                "additional": [
                    {"selectorType": "rw", "serviceTemplate": {"metadata": {"name": "x"}}},
                ]
            }
        }
    )
    validate_objects([cluster])
    claims = _cluster(resources={"claims": [{"name": "gpu"}, {"name": "gpu"}]})
    with pytest.raises(RenderError, match=r"spec\.resources\.claims: duplicate item with \{'name': 'gpu'\}"):
        validate_objects([claims])


def test_a_property_named_description_is_kept() -> None:
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "shop", "namespace": "argocd"},
        "spec": {"description": "the shop's stack", "sourceRepos": ["https://git.example.com/shop"]},
    }
    validate_objects([project])
