"""`render argocd`: the GitOps tree (app-of-apps, AppProjects, Applications, platform add-ons and
the stack), checked against Argo CD's, cert-manager's and External Secrets' own CRDs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.cli import main
from shipyard.errors import RenderError, SpecError
from shipyard.render import argocd_tree, validate_objects, write_tree
from shipyard.render._platform import CHARTS, CRD_PROVIDERS, plan_platform
from shipyard.spec import Spec, load_spec, load_spec_text
from unit.render.render_helpers import ROOT

EXAMPLES = ROOT / "examples"
GITOPS = """
gitops:
  repo: https://git.example.com/ops/deploy.git
  path: clusters/main
"""


def _docs(tree_files: dict[str, str], prefix: str) -> dict[str, dict[str, Any]]:
    return {path: yaml.safe_load(text) for path, text in tree_files.items() if path.startswith(prefix)}


def _apps(tree_files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for doc in _docs(tree_files, "apps/").values()
        if doc["kind"] == "Application"
    }


def _projects(tree_files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for doc in _docs(tree_files, "apps/").values()
        if doc["kind"] == "AppProject"
    }


def _example(name: str, extra: str = "") -> Spec:
    path = EXAMPLES / name / "shipyard.yaml"
    return load_spec_text(path.read_text(encoding="utf-8") + extra, str(path))


def _wave(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])


def test_apricode_has_an_application_per_environment_over_its_overlay(apricode: Spec) -> None:
    tree = argocd_tree(apricode)
    apps = _apps(tree.files)
    assert tree.path == "deploy/apricode"
    for env in ("dev", "staging", "production"):
        app = apps[f"apricode-{env}"]
        source = app["spec"]["source"]
        assert source["repoURL"] == "https://github.com/apricode/deploy.git"
        assert source["targetRevision"] == "main"
        assert source["path"] == f"deploy/apricode/stack/overlays/{env}"
        # The path the Application reads is in the very tree written beside it.
        assert f"stack/overlays/{env}/kustomization.yaml" in tree.files
        assert app["spec"]["destination"] == {
            "server": "https://kubernetes.default.svc",
            "namespace": apricode.stack(env).k8s_namespace,
        }
        assert app["spec"]["project"] == "apricode"
        options = app["spec"]["syncPolicy"]["syncOptions"]
        assert "ServerSideApply=true" in options
        assert "RespectIgnoreDifferences=true" in options
        assert not any(o.startswith("CreateNamespace") for o in options)  # the stack renders its Namespace
    # The production overlay syncs by hand; the others prune and heal.
    assert "automated" not in apps["apricode-production"]["spec"]["syncPolicy"]
    assert apps["apricode-dev"]["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_every_object_of_the_tree_meets_its_crd(apricode: Spec) -> None:
    tree = argocd_tree(apricode)
    own = [yaml.safe_load(t) for p, t in tree.files.items() if not p.startswith("stack/")]
    kinds = {(o["apiVersion"], o["kind"]) for o in own}
    assert kinds == {
        ("argoproj.io/v1alpha1", "Application"),
        ("argoproj.io/v1alpha1", "AppProject"),
        ("cert-manager.io/v1", "ClusterIssuer"),
        ("external-secrets.io/v1", "ClusterSecretStore"),
    }
    validate_objects(own)


def test_a_field_the_crd_refuses_is_caught(apricode: Spec) -> None:
    app = _apps(argocd_tree(apricode).files)["apricode-dev"]
    app["spec"]["syncPolicy"]["automated"]["selfHealing"] = True
    with pytest.raises(RenderError, match="selfHealing"):
        validate_objects([app])


def test_argo_rollouts_fields_are_left_to_its_controller(apricode: Spec) -> None:
    tree = argocd_tree(apricode)
    ignored = {
        (rule["group"], rule["kind"]): rule["jsonPointers"]
        for rule in _apps(tree.files)["apricode-staging"]["spec"]["ignoreDifferences"]
    }
    assert "/spec/selector/rollouts-pod-template-hash" in ignored[("", "Service")]
    assert "/status" in ignored[("argoproj.io", "Rollout")]
    assert "/spec/paused" in ignored[("argoproj.io", "Rollout")]
    # The stack is rendered as Rollouts, so these rules have something to apply to.
    assert any(
        yaml.safe_load(t)["kind"] == "Rollout" for p, t in tree.files.items() if p.startswith("stack/")
    )


def test_waves_put_projects_then_crd_providers_before_the_stack(apricode: Spec) -> None:
    tree = argocd_tree(apricode)
    apps, projects = _apps(tree.files), _projects(tree.files)
    assert {_wave(p) for p in projects.values()} == {-3}
    for name in CRD_PROVIDERS:
        if name in apps:
            assert _wave(apps[name]) == -2
    assert _wave(apps["apricode-platform-config"]) == -1
    assert _wave(apps["ingress-nginx"]) == -1
    assert {_wave(apps[f"apricode-{env}"]) for env in ("dev", "staging", "production")} == {0}
    root = yaml.safe_load(tree.files["root.yaml"])
    assert root["spec"]["source"]["path"] == "deploy/apricode/apps"
    assert root["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_addons_are_pinned_upstream_charts_sized_from_the_components(apricode: Spec) -> None:
    apps = _apps(argocd_tree(apricode).files)
    addons = {n: a for n, a in apps.items() if "chart" in a["spec"]["source"]}
    assert set(addons) == {
        "ingress-nginx",
        "kube-prometheus-stack",
        "loki",
        "cert-manager",
        "external-secrets",
        "argo-rollouts",
    }
    for name, app in addons.items():
        source = app["spec"]["source"]
        assert (source["repoURL"], source["chart"], source["targetRevision"]) == (
            CHARTS[name].repo,
            CHARTS[name].name,
            CHARTS[name].version,
        )
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", source["targetRevision"]), "a version, never a range"
        assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
    nginx = addons["ingress-nginx"]["spec"]["source"]["helm"]["valuesObject"]["controller"]
    assert nginx["replicaCount"] == 2  # production's component (dev overlays 1)
    assert nginx["resources"] == {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    kps = addons["kube-prometheus-stack"]["spec"]["source"]["helm"]["valuesObject"]
    prometheus = kps["prometheus"]["prometheusSpec"]
    assert (
        prometheus["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    )
    assert prometheus["retentionSize"] == "42GB"  # 85% of 50Gi: room for the WAL and compaction
    assert prometheus["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert kps["grafana"]["enabled"] is True  # the grafana component, as the chart's subchart
    assert kps["grafana"]["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi"}
    loki = addons["loki"]["spec"]["source"]["helm"]["valuesObject"]
    assert loki["singleBinary"]["persistence"]["size"] == "100Gi"
    assert addons["loki"]["spec"]["destination"]["namespace"] == "monitoring"
    # cert-manager installs its CRDs and keeps them when the chart is removed.
    assert addons["cert-manager"]["spec"]["source"]["helm"]["valuesObject"]["crds"] == {
        "enabled": True,
        "keep": True,
    }


def test_retention_and_a_loki_that_cannot_scale() -> None:
    extra = (
        GITOPS
        + """
platform:
  components:
    prometheus: {namespace: metrics, storage: 20Gi, retention: 15d}
    loki: {namespace: logs, storage: 10Gi, retention: 744h}
"""
    )
    spec = load_spec_text("name: shop\nservices: {}\n" + extra, "shop.yaml")
    apps = _apps(argocd_tree(spec).files)
    prometheus = apps["kube-prometheus-stack"]["spec"]["source"]["helm"]["valuesObject"]["prometheus"]
    assert prometheus["prometheusSpec"]["retention"] == "15d"
    loki = apps["loki"]["spec"]["source"]["helm"]["valuesObject"]["loki"]
    assert loki["limits_config"] == {"retention_period": "31d"}
    assert apps["loki"]["spec"]["destination"]["namespace"] == "logs"
    scaled = load_spec_text(
        "name: shop\nservices: {}\n" + extra.replace("storage: 10Gi,", "storage: 10Gi, replicas: 2,"),
        "shop.yaml",
    )
    with pytest.raises(RenderError, match=r"platform\.components\.loki\.replicas"):
        argocd_tree(scaled)


def test_projects_allow_only_what_their_applications_create(apricode: Spec) -> None:
    projects = _projects(argocd_tree(apricode).files)
    stack = projects["apricode"]["spec"]
    assert stack["clusterResourceWhitelist"] == [{"group": "", "kind": "Namespace"}]
    assert stack["sourceRepos"] == ["https://github.com/apricode/deploy.git"]
    assert {d["namespace"] for d in stack["destinations"]} == {
        "apricode-dev",
        "apricode-staging",
        "production",
    }
    assert {"group": "argoproj.io", "kind": "Rollout"} in stack["namespaceResourceWhitelist"]
    assert {"group": "argoproj.io", "kind": "Application"} not in stack["namespaceResourceWhitelist"]
    platform = projects["apricode-platform"]["spec"]
    cluster = {(k["group"], k["kind"]) for k in platform["clusterResourceWhitelist"]}
    assert ("apiextensions.k8s.io", "CustomResourceDefinition") in cluster
    assert ("cert-manager.io", "ClusterIssuer") in cluster
    assert "https://charts.jetstack.io" in platform["sourceRepos"]
    assert {d["namespace"] for d in platform["destinations"]} >= {
        "cert-manager",
        "monitoring",
        "ingress-nginx",
    }


def test_cluster_issuer_and_secret_store_from_the_spec(apricode: Spec) -> None:
    tree = argocd_tree(apricode)
    issuer = yaml.safe_load(tree.files["platform/clusterissuer-letsencrypt-prod.yaml"])
    acme = issuer["spec"]["acme"]
    assert acme["email"] == "ops@apricode.exchange"
    assert acme["server"] == "https://acme-v02.api.letsencrypt.org/directory"
    assert acme["solvers"] == [{"http01": {"ingress": {"ingressClassName": "nginx"}}}]
    store = yaml.safe_load(tree.files["platform/clustersecretstore-vault.yaml"])
    assert store["spec"]["provider"]["vault"]["server"] == "https://vault.apricode.internal:8200"
    assert store["spec"]["refreshInterval"] == 3600


def test_traefik_stack_and_unknown_components() -> None:
    spec = _example("normaldance", GITOPS)
    tree = argocd_tree(spec)
    apps = _apps(tree.files)
    assert "traefik" in apps
    assert "ingress-nginx" not in apps
    ignored = {(r["group"], r["kind"]) for r in apps["normaldance-production"]["spec"]["ignoreDifferences"]}
    assert ("traefik.io", "TraefikService") in ignored
    assert any("platform.components.argocd: not installed" in note for note in tree.notes)
    assert any("ClusterIssuer" in note and "gitops.issuers" in note for note in tree.notes)


def test_helm_source_reads_the_chart_with_the_environment_values() -> None:
    text = (EXAMPLES / "apricode" / "shipyard.yaml").read_text(encoding="utf-8")
    helm = load_spec_text(text.replace("  source: kustomize\n", "  source: helm\n"), "apricode.yaml")
    tree = argocd_tree(helm, "staging")
    apps = _apps(tree.files)
    assert set(a for a in apps if a.startswith("apricode-")) == {
        "apricode-staging",
        "apricode-platform-config",
    }
    source = apps["apricode-staging"]["spec"]["source"]
    assert source["path"] == "deploy/apricode/stack"
    assert source["helm"] == {"releaseName": "apricode", "valueFiles": ["values-staging.yaml"]}
    assert "stack/values-staging.yaml" in tree.files
    assert "stack/Chart.yaml" in tree.files


def test_no_gitops_is_refused_with_how_to_add_it() -> None:
    spec = load_spec_text("name: shop\nservices: {}\n", "shop.yaml")
    with pytest.raises(RenderError, match=r"no `gitops:` section.*gitops\.repo"):
        argocd_tree(spec)
    overlaid = load_spec_text(
        "name: shop\nservices: {}\n" + GITOPS + "environments: {dev: {gitops: ~}, production: {}}\n",
        "shop.yaml",
    )
    with pytest.raises(RenderError, match="environment 'dev'"):
        argocd_tree(overlaid, "dev")
    assert set(_apps(argocd_tree(overlaid).files)) == {"shop-production"}


def test_one_tree_has_one_path() -> None:
    spec = load_spec_text(
        "name: shop\nservices: {}\n"
        + GITOPS
        + "environments: {dev: {gitops: {path: other}}, production: {}}\n",
        "shop.yaml",
    )
    with pytest.raises(RenderError, match=r"environments\.dev\.gitops\.path"):
        argocd_tree(spec)


def test_a_repository_path_cannot_leave_the_repository() -> None:
    with pytest.raises(SpecError, match=r"gitops\.path"):
        load_spec_text("name: shop\ngitops: {repo: 'https://g.example/x.git', path: ../up}\n", "shop.yaml")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_builds_the_overlay_an_application_reads(apricode: Spec, tmp_path: Path) -> None:
    tree = argocd_tree(apricode, "production")
    out = write_tree(tree.files, tmp_path / "deploy")
    path = _apps(tree.files)["apricode-production"]["spec"]["source"]["path"].removeprefix("deploy/apricode/")
    built = subprocess.run(
        ["kubectl", "kustomize", str(out / path)], capture_output=True, text=True, check=True, timeout=60
    )
    kinds = {doc["kind"] for doc in yaml.safe_load_all(built.stdout) if doc}
    assert {"Namespace", "Rollout", "Service"} <= kinds


def test_deploy_to_kubernetes_is_refused_where_argo_cd_syncs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "deploy", "app", "--version", "1.2.0", "--target", "kubernetes", "--dry-run",
        "-f", str(EXAMPLES / "apricode" / "shipyard.yaml"), "-e", "staging",
        "--database-url", f"sqlite:///{tmp_path / 'state.db'}",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "synced by Argo CD" in err
    assert "shipyard render argocd" in err


def test_argo_rollouts_looks_for_traefik_services_where_traefik_3_serves_them() -> None:
    spec = load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml")
    stacks = [spec.stack(env) for env in spec.environments]
    rollouts = next(a for a in plan_platform(stacks, stacks[-1]).addons if a.name == "argo-rollouts")
    assert rollouts.values["controller"]["extraArgs"] == [
        "--traefik-api-group=traefik.io",
        "--traefik-api-version=traefik.io/v1alpha1",
    ]
