"""The ingress controller as a spec choice: NGINX (annotations) or Traefik (Middlewares).

examples/normaldance runs Traefik in namespace `ingress`; apricode and salespot keep NGINX.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shipyard.errors import SpecError
from shipyard.render import build_manifests, render_kubernetes
from shipyard.render._ingress import ingress_namespace
from shipyard.spec import Spec, Stack, load_spec
from unit.render.render_helpers import ROOT, by_kind, spec_from

TRAEFIK = "traefik.ingress.kubernetes.io"


@pytest.fixture(scope="module")
def normaldance() -> Spec:
    return load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml")


@pytest.fixture(scope="module")
def production(normaldance: Spec) -> list[dict[str, Any]]:
    return render_kubernetes(normaldance.stack("production"))


def _admitted_namespaces(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Per NetworkPolicy, the namespaces it admits traffic from."""
    found: dict[str, set[str]] = {}
    for name, policy in by_kind(objects, "NetworkPolicy").items():
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                labels = peer.get("namespaceSelector", {}).get("matchLabels", {})
                if "kubernetes.io/metadata.name" in labels:
                    found.setdefault(name, set()).add(labels["kubernetes.io/metadata.name"])
    return found


# --- normaldance: Traefik everywhere ----------------------------------------------------------


@pytest.mark.parametrize("argo", [False, True], ids=["deployments", "argo"])
def test_normaldance_renders_no_nginx_in_any_environment(normaldance: Spec, argo: bool) -> None:
    for environment in normaldance.environments:
        objects = list(build_manifests(normaldance.stack(environment), argo=argo).objects)
        assert "nginx" not in json.dumps(objects).lower(), environment
        ingresses = by_kind(objects, "Ingress")
        assert ingresses, environment
        assert {i["spec"]["ingressClassName"] for i in ingresses.values()} == {"traefik"}


@pytest.mark.parametrize("argo", [False, True], ids=["deployments", "argo"])
def test_normaldance_network_policies_admit_the_traefik_namespace(normaldance: Spec, argo: bool) -> None:
    stack = normaldance.stack("production")
    objects = list(build_manifests(stack, argo=argo).objects)
    admitted = _admitted_namespaces(objects)
    # The two services with an ingress take outside traffic, from Traefik's namespace.
    assert "ingress" in admitted["allow-api"]
    assert "ingress" in admitted["allow-frontend"]
    assert "ingress-nginx" not in json.dumps(by_kind(objects, "NetworkPolicy"))
    for name, namespaces in admitted.items():
        # Anything else admitted from another namespace is not outside traffic.
        assert "ingress" not in namespaces or name in {"allow-api", "allow-frontend"}


def test_traefik_middlewares_carry_the_limits_in_exact_units(production: list[dict[str, Any]]) -> None:
    middlewares = by_kind(production, "Middleware")
    for middleware in middlewares.values():
        assert middleware["apiVersion"] == "traefik.io/v1alpha1"
        assert middleware["metadata"]["namespace"] == "production"
    # api: rate_limit_rps 50, body_size 100Mi. ingress-nginx bursts to 5x limit-rps per client.
    assert middlewares["api-rps"]["spec"] == {"rateLimit": {"average": 50, "period": "1s", "burst": 250}}
    assert middlewares["api-body-size"]["spec"] == {"buffering": {"maxRequestBodyBytes": 100 * 2**20}}
    assert middlewares["frontend-body-size"]["spec"] == {"buffering": {"maxRequestBodyBytes": 10 * 2**20}}
    redirect = {"redirectScheme": {"scheme": "https", "permanent": True}}
    assert middlewares["api-https-redirect"]["spec"] == redirect
    assert middlewares["frontend-https-redirect"]["spec"] == redirect
    assert sorted(middlewares) == [
        "api-body-size",
        "api-https-redirect",
        "api-rps",
        "frontend-body-size",
        "frontend-https-redirect",
    ]
    assert middlewares["api-rps"]["metadata"]["labels"]["app.kubernetes.io/name"] == "api"


def test_the_https_router_uses_the_middlewares_by_their_crd_names(production: list[dict[str, Any]]) -> None:
    ingress = by_kind(production, "Ingress")["api"]
    assert ingress["metadata"]["annotations"] == {
        f"{TRAEFIK}/router.entrypoints": "websecure",
        f"{TRAEFIK}/router.middlewares": (
            "production-api-rps@kubernetescrd,production-api-body-size@kubernetescrd"
        ),
        f"{TRAEFIK}/router.tls": "true",
        "cert-manager.io/cluster-issuer": "letsencrypt-prod",
    }
    assert ingress["spec"]["ingressClassName"] == "traefik"
    assert ingress["spec"]["tls"] == [{"hosts": ["api.normaldance.com"], "secretName": "api-tls"}]
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"] == {"service": {"name": "api", "port": {"name": "http"}}}
    # Every reference names a Middleware rendered in the Ingress's own namespace.
    middlewares = by_kind(production, "Middleware")
    for ingress in by_kind(production, "Ingress").values():
        namespace = ingress["metadata"]["namespace"]
        for reference in ingress["metadata"]["annotations"][f"{TRAEFIK}/router.middlewares"].split(","):
            qualified, provider = reference.split("@")
            assert provider == "kubernetescrd"
            assert qualified.startswith(f"{namespace}-")
            assert qualified.removeprefix(f"{namespace}-") in middlewares


def test_plain_http_is_redirected_by_a_router_of_its_own(production: list[dict[str, Any]]) -> None:
    # A TLS router never sees a plain-HTTP request: the redirect sits on the `web` entry point.
    ingresses = by_kind(production, "Ingress")
    assert sorted(ingresses) == ["api", "api-http", "frontend", "frontend-http"]
    plain = ingresses["frontend-http"]
    assert plain["metadata"]["annotations"] == {
        f"{TRAEFIK}/router.entrypoints": "web",
        f"{TRAEFIK}/router.middlewares": "production-frontend-https-redirect@kubernetescrd",
    }
    assert "tls" not in plain["spec"]
    assert plain["spec"]["rules"] == ingresses["frontend"]["spec"]["rules"]
    assert plain["metadata"]["labels"] == ingresses["frontend"]["metadata"]["labels"]


# --- Traefik's knobs ----------------------------------------------------------------------------

KNOBS = """
    name: shop
    platform:
      ingress_controller: traefik
    services:
      web:
        role: web
        image: shop/web:1.0.0
        port: 8080
        ingress:
          host: shop.example.com
          tls: false
          class_name: traefik-internal
          rate_limit_rps: 3
          rate_limit_rpm: 100
          body_size: 1500k
"""


def test_per_minute_limits_plain_http_and_a_named_class() -> None:
    objects = render_kubernetes(spec_from(KNOBS).stack("production"))
    middlewares = by_kind(objects, "Middleware")
    assert middlewares["web-rps"]["spec"] == {"rateLimit": {"average": 3, "period": "1s", "burst": 15}}
    # 100 requests a minute: Traefik's rate is average / period.
    assert middlewares["web-rpm"]["spec"] == {"rateLimit": {"average": 100, "period": "1m", "burst": 500}}
    # `k` is decimal in Kubernetes quantities: 1500k is 1.5 MB, not 1.5 MiB.
    assert middlewares["web-body-size"]["spec"] == {"buffering": {"maxRequestBodyBytes": 1_500_000}}
    assert "web-https-redirect" not in middlewares
    (ingress,) = by_kind(objects, "Ingress").values()
    assert ingress["spec"]["ingressClassName"] == "traefik-internal"
    assert "tls" not in ingress["spec"]
    assert ingress["metadata"]["annotations"] == {
        f"{TRAEFIK}/router.entrypoints": "web",
        f"{TRAEFIK}/router.middlewares": (
            "shop-production-web-rps@kubernetescrd,shop-production-web-rpm@kubernetescrd,"
            "shop-production-web-body-size@kubernetescrd"
        ),
    }
    # No traefik component listed: the controller runs in the namespace named after it.
    policy = by_kind(objects, "NetworkPolicy")["allow-web"]
    selector = next(
        peer["namespaceSelector"]["matchLabels"]
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        if "namespaceSelector" in peer
    )
    assert selector == {"kubernetes.io/metadata.name": "traefik"}


def test_an_ingress_without_limits_has_no_middlewares_but_the_redirect() -> None:
    text = KNOBS.replace(
        "tls: false\n          class_name: traefik-internal\n          rate_limit_rps: 3\n"
        "          rate_limit_rpm: 100\n          body_size: 1500k",
        "tls: true",
    )
    objects = render_kubernetes(spec_from(text).stack("production"))
    assert sorted(by_kind(objects, "Middleware")) == ["web-https-redirect"]
    ingress = by_kind(objects, "Ingress")["web"]
    assert f"{TRAEFIK}/router.middlewares" not in ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "traefik"


def test_the_controller_namespace_is_its_components() -> None:
    def stack(platform: str) -> Stack:
        text = f"""
            name: shop
            platform: {platform}
            services:
              web: {{role: web, image: "shop/web:1", port: 80, ingress: {{host: shop.example.com}}}}
        """
        result: Stack = spec_from(text).stack("production")
        return result

    assert ingress_namespace(stack("{}")) == "ingress-nginx"
    assert ingress_namespace(stack("{components: {ingress-nginx: {namespace: edge}}}")) == "edge"
    assert ingress_namespace(stack("{ingress_controller: traefik}")) == "traefik"
    traefik_in_edge = "{ingress_controller: traefik, components: {traefik: {namespace: edge}}}"
    assert ingress_namespace(stack(traefik_in_edge)) == "edge"


# --- NGINX stays as it was ---------------------------------------------------------------------


def test_apricode_and_salespot_keep_nginx() -> None:
    for example in ("apricode", "salespot"):
        spec = load_spec(ROOT / "examples" / example / "shipyard.yaml")
        objects = render_kubernetes(spec.stack("production"))
        assert not by_kind(objects, "Middleware")
        ingresses = by_kind(objects, "Ingress")
        assert ingresses
        for ingress in ingresses.values():
            assert ingress["spec"]["ingressClassName"] == "nginx"
            annotations = ingress["metadata"].get("annotations", {})
            assert not any(key.startswith(TRAEFIK) for key in annotations)
        admitted = _admitted_namespaces(objects)
        for name in ingresses:
            assert "ingress-nginx" in admitted[f"allow-{name}"]
        assert not set().union(*admitted.values()) & {"ingress", "traefik"}


# --- the spec refuses a platform that runs the other controller -------------------------------


@pytest.mark.parametrize(
    ("controller", "component"),
    [("", "traefik"), ("  ingress_controller: traefik\n", "ingress-nginx")],
    ids=["nginx-with-traefik", "traefik-with-ingress-nginx"],
)
def test_a_component_of_the_other_controller_is_refused(controller: str, component: str) -> None:
    text = (
        "name: shop\n"
        "services:\n"
        "  web: {role: web, image: 'shop/web:1', port: 80}\n"
        "platform:\n"
        f"{controller}"
        "  components:\n"
        f"    {component}: {{namespace: edge}}\n"
    )
    with pytest.raises(SpecError) as caught:
        spec_from(text)
    issues = caught.value.issues
    assert issues
    line = text.splitlines().index(f"    {component}: {{namespace: edge}}") + 1
    for issue in issues:
        assert issue.path == f"platform.components.{component}"
        assert "platform.ingress_controller" in issue.message
        assert str(issue).startswith(f"test.yaml:{line}:")
