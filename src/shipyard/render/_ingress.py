"""The ingress controller outside traffic goes through: one small interface, two controllers.

`platform.ingress_controller` picks one (`nginx`, the default, or `traefik`). Each controller says,
for a service's `ingress:`:

- `objects`: what routes the service's traffic, with its TLS redirect, rate limits and body size:
    nginx     one Ingress (class `nginx`) with ingress-nginx's annotations;
    traefik   an Ingress (class `traefik`) on the `websecure` entry point whose router uses
              Middlewares (rateLimit, buffering) by `<namespace>-<name>@kubernetescrd`, and, with
              TLS, a second Ingress on the `web` entry point whose only Middleware redirects to
              HTTPS (a TLS router never sees a plain-HTTP request, so the redirect cannot sit on it);
- `canary_routing`: how Argo Rollouts moves a canary's share of the traffic:
    nginx     `trafficRouting.nginx.stableIngress` (Argo clones the Ingress with canary annotations);
    traefik   `trafficRouting.traefik.weightedTraefikServiceName`: a TraefikService weighing the
              stable and canary Services, reached from an IngressRoute (an Ingress cannot have a
              TraefikService as its backend) that carries the same Middlewares and TLS, the TLS
              certificate from a cert-manager Certificate (cert-manager's ingress-shim watches
              Ingresses only); the IngressRoute replaces the service's Ingress;
- the Prometheus metrics the rollout analysis reads: a request counter with a status label and a
  duration histogram, and the label matchers that select one Service's traffic.

The controller's namespace, which NetworkPolicies admit, is the namespace of the platform component
named after it (`ingress-nginx` or `traefik`), by default the component's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..spec import Ingress, Service, Stack, byte_count
from ._common import Object, labels, metadata
from ._workloads import PORT_NAME

NGINX_PREFIX = "nginx.ingress.kubernetes.io"
TRAEFIK_PREFIX = "traefik.ingress.kubernetes.io"
TRAEFIK_API_VERSION = "traefik.io/v1alpha1"
CERT_MANAGER_API_VERSION = "cert-manager.io/v1"
CLUSTER_ISSUER_ANNOTATION = "cert-manager.io/cluster-issuer"

BURST_MULTIPLIER = 5
"""ingress-nginx lets a client burst to five times its rate (`limit-burst-multiplier`'s default);
Traefik's Middlewares are given the same burst so a limit means the same on either controller."""


def tls_secret_name(name: str) -> str:
    return f"{name}-tls"


@dataclass(frozen=True)
class CanaryRouting:
    """What a canary Rollout needs to split one service's traffic."""

    traffic_routing: dict[str, Any]
    """The Rollout's `spec.strategy.canary.trafficRouting`."""
    objects: list[Object] = field(default_factory=list)
    """Objects Argo Rollouts works through besides the Rollout and its Services."""
    replaces: tuple[tuple[str, str], ...] = ()
    """(kind, name) of the rendered objects these take the place of."""


class IngressController(ABC):
    """One ingress controller: its routing objects, its canary routing, its metrics."""

    name: ClassVar[str]
    """As `platform.ingress_controller` says it."""
    default_class: ClassVar[str]
    requests_metric: ClassVar[str]
    """A counter of requests per Service, with a status label."""
    duration_buckets: ClassVar[str]
    """The request duration histogram's buckets (seconds), per Service."""
    status_label: ClassVar[str]

    def class_name(self, spec: Ingress) -> str:
        return spec.class_name or self.default_class

    @abstractmethod
    def objects(self, stack: Stack, name: str, service: Service, spec: Ingress) -> list[Object]:
        """The objects that route outside traffic to service `name`."""

    @abstractmethod
    def canary_routing(
        self, stack: Stack, name: str, service: Service, spec: Ingress, canary_service: str
    ) -> CanaryRouting:
        """How Argo Rollouts splits traffic between Service `name` and `canary_service`."""

    @abstractmethod
    def traffic_selector(self, stack: Stack, service: str) -> str:
        """PromQL label matchers (without braces) for the traffic of Service `service` (a name or
        an Argo argument placeholder such as `{{args.service}}`)."""


def _rules(name: str, spec: Ingress) -> list[dict[str, Any]]:
    return [
        {
            "host": spec.host,
            "http": {
                "paths": [
                    {
                        "path": spec.path,
                        "pathType": "Prefix",
                        "backend": {"service": {"name": name, "port": {"name": PORT_NAME}}},
                    }
                ]
            },
        }
    ]


def _ingress(
    stack: Stack,
    object_name: str,
    name: str,
    service: Service,
    class_name: str,
    rules: list[dict[str, Any]],
    annotations: dict[str, str],
    tls: list[dict[str, Any]] | None,
) -> Object:
    body: dict[str, Any] = {"ingressClassName": class_name, "rules": rules}
    if tls:
        body["tls"] = tls
    meta = metadata(stack, name, service.role) | {"name": object_name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": body}


def nginx_size(quantity: str) -> str:
    """A Kubernetes byte quantity in NGINX's units ('50Mi' -> '50m'; k and m are binary there)."""
    count = byte_count(quantity)
    for unit, size in (("m", 2**20), ("k", 2**10)):
        if count % size == 0:
            return f"{count // size}{unit}"
    return str(count)


class Nginx(IngressController):
    """ingress-nginx: everything is an annotation of the one Ingress."""

    name = "nginx"
    default_class = "nginx"
    requests_metric = "nginx_ingress_controller_requests"
    duration_buckets = "nginx_ingress_controller_request_duration_seconds_bucket"
    status_label = "status"

    def objects(self, stack: Stack, name: str, service: Service, spec: Ingress) -> list[Object]:
        annotations: dict[str, str] = {}
        if spec.tls:
            annotations[CLUSTER_ISSUER_ANNOTATION] = spec.cluster_issuer
            annotations[f"{NGINX_PREFIX}/ssl-redirect"] = "true"
        if spec.rate_limit_rps is not None:
            annotations[f"{NGINX_PREFIX}/limit-rps"] = str(spec.rate_limit_rps)
        if spec.rate_limit_rpm is not None:
            annotations[f"{NGINX_PREFIX}/limit-rpm"] = str(spec.rate_limit_rpm)
        if spec.body_size is not None:
            annotations[f"{NGINX_PREFIX}/proxy-body-size"] = nginx_size(spec.body_size)
        tls = [{"hosts": [spec.host], "secretName": tls_secret_name(name)}] if spec.tls else None
        rules = _rules(name, spec)
        return [_ingress(stack, name, name, service, self.class_name(spec), rules, annotations, tls)]

    def canary_routing(
        self, stack: Stack, name: str, service: Service, spec: Ingress, canary_service: str
    ) -> CanaryRouting:
        # Argo clones the stable Ingress into `<ingress>-<rollout>-canary` with canary-weight.
        return CanaryRouting({"nginx": {"stableIngress": name}})

    def traffic_selector(self, stack: Stack, service: str) -> str:
        # The controller labels a request with the Ingress's namespace and its backend Service.
        return f'namespace="{stack.k8s_namespace}",service="{service}"'


class Traefik(IngressController):
    """Traefik: the router is configured by annotations, what it does to requests by Middlewares."""

    name = "traefik"
    default_class = "traefik"
    requests_metric = "traefik_service_requests_total"
    duration_buckets = "traefik_service_request_duration_seconds_bucket"
    status_label = "code"
    secure_entry_point = "websecure"
    plain_entry_point = "web"

    def middlewares(self, stack: Stack, name: str, service: Service, spec: Ingress) -> list[Object]:
        """The Middlewares of the service's router (first to last), then the HTTPS redirect's."""
        found: list[Object] = []
        # Per client address (the default source), like ingress-nginx's limit-rps and limit-rpm.
        for purpose, rate, period in (("rps", spec.rate_limit_rps, "1s"), ("rpm", spec.rate_limit_rpm, "1m")):
            if rate is not None:
                found.append(
                    self._middleware(stack, name, service, purpose, {"rateLimit": _limit(rate, period)})
                )
        if spec.body_size is not None:
            # Bytes, exactly: Traefik answers 413 to a larger request body, as NGINX does.
            buffering = {"buffering": {"maxRequestBodyBytes": byte_count(spec.body_size)}}
            found.append(self._middleware(stack, name, service, "body-size", buffering))
        if spec.tls:
            redirect = {"redirectScheme": {"scheme": "https", "permanent": True}}
            found.append(self._middleware(stack, name, service, "https-redirect", redirect))
        return found

    def objects(self, stack: Stack, name: str, service: Service, spec: Ingress) -> list[Object]:
        middlewares = self.middlewares(stack, name, service, spec)
        router, redirect = self._split(middlewares, spec)
        rules = _rules(name, spec)
        class_name = self.class_name(spec)
        annotations = {f"{TRAEFIK_PREFIX}/router.entrypoints": self._entry_point(spec)}
        if router:
            annotations[f"{TRAEFIK_PREFIX}/router.middlewares"] = ",".join(
                self._reference(stack, m) for m in router
            )
        tls = None
        if spec.tls:
            annotations[f"{TRAEFIK_PREFIX}/router.tls"] = "true"
            annotations[CLUSTER_ISSUER_ANNOTATION] = spec.cluster_issuer
            tls = [{"hosts": [spec.host], "secretName": tls_secret_name(name)}]
        objects = [*middlewares, _ingress(stack, name, name, service, class_name, rules, annotations, tls)]
        if redirect is not None:
            plain = {
                f"{TRAEFIK_PREFIX}/router.entrypoints": self.plain_entry_point,
                f"{TRAEFIK_PREFIX}/router.middlewares": self._reference(stack, redirect),
            }
            objects.append(
                _ingress(stack, redirect_ingress_name(name), name, service, class_name, rules, plain, None)
            )
        return objects

    def canary_routing(
        self, stack: Stack, name: str, service: Service, spec: Ingress, canary_service: str
    ) -> CanaryRouting:
        meta = {"name": name, "namespace": stack.k8s_namespace, "labels": labels(stack, name, service.role)}
        # No weights: Argo Rollouts writes both on every step; weights written here would be
        # reset by each apply or Argo CD sync in the middle of a canary (Argo's Traefik guide
        # leaves them out for that reason). Until Argo first sets them both Services select the
        # same pods, so Traefik's default (1 and 1) sends nothing anywhere it should not.
        weighted = {
            "apiVersion": TRAEFIK_API_VERSION,
            "kind": "TraefikService",
            "metadata": meta,
            "spec": {
                "weighted": {
                    "services": [
                        {"name": name, "port": PORT_NAME},
                        {"name": canary_service, "port": PORT_NAME},
                    ]
                }
            },
        }
        router, _ = self._split(self.middlewares(stack, name, service, spec), spec)
        route: dict[str, Any] = {"kind": "Rule", "match": _match(spec)}
        if router:
            route["middlewares"] = [{"name": m["metadata"]["name"]} for m in router]
        route["services"] = [{"name": name, "kind": "TraefikService"}]
        body: dict[str, Any] = {"entryPoints": [self._entry_point(spec)], "routes": [route]}
        if spec.tls:
            body["tls"] = {"secretName": tls_secret_name(name)}
        # Traefik's CRD provider reads an IngressRoute's class from this annotation: "traefik"
        # is taken by a provider with no class set, and a named class by the provider that has it.
        class_annotation = {"kubernetes.io/ingress.class": self.class_name(spec)}
        ingress_route = {
            "apiVersion": TRAEFIK_API_VERSION,
            "kind": "IngressRoute",
            "metadata": meta | {"annotations": class_annotation},
            "spec": body,
        }
        objects = [weighted, ingress_route]
        if spec.tls:
            objects.append(_certificate(stack, name, service, spec))
        return CanaryRouting({"traefik": {"weightedTraefikServiceName": name}}, objects, (("Ingress", name),))

    def traffic_selector(self, stack: Stack, service: str) -> str:
        # Traefik names a Kubernetes Service `<namespace>-<service>-<port>` and qualifies it with
        # its provider: `@kubernetes` behind an Ingress, `@kubernetescrd` behind a TraefikService.
        return f'service=~"{stack.k8s_namespace}-{service}-{PORT_NAME}@kubernetes(crd)?"'

    def _entry_point(self, spec: Ingress) -> str:
        return self.secure_entry_point if spec.tls else self.plain_entry_point

    @staticmethod
    def _split(middlewares: list[Object], spec: Ingress) -> tuple[list[Object], Object | None]:
        """The router's Middlewares, and the HTTPS redirect (the last one, with TLS)."""
        if spec.tls:
            return middlewares[:-1], middlewares[-1]
        return middlewares, None

    @staticmethod
    def _middleware(stack: Stack, name: str, service: Service, purpose: str, spec: dict[str, Any]) -> Object:
        return {
            "apiVersion": TRAEFIK_API_VERSION,
            "kind": "Middleware",
            "metadata": {
                "name": f"{name}-{purpose}",
                "namespace": stack.k8s_namespace,
                "labels": labels(stack, name, service.role),
            },
            "spec": spec,
        }

    @staticmethod
    def _reference(stack: Stack, middleware: Object) -> str:
        """How an Ingress annotation names a Middleware of the CRD provider."""
        return f"{stack.k8s_namespace}-{middleware['metadata']['name']}@kubernetescrd"


def redirect_ingress_name(name: str) -> str:
    """The Traefik Ingress that answers plain HTTP for service `name` with a redirect to HTTPS."""
    return f"{name}-http"


def _limit(rate: int, period: str) -> dict[str, Any]:
    return {"average": rate, "period": period, "burst": rate * BURST_MULTIPLIER}


def _match(spec: Ingress) -> str:
    """The IngressRoute rule for the host and path prefix, as Traefik's Ingress provider writes it."""
    host = spec.host
    if host.startswith("*."):
        pattern = host.replace(".", r"\.").replace(r"*\.", r"[a-zA-Z0-9-]+\.", 1)
        host_rule = f"HostRegexp(`{pattern}`)"
    else:
        host_rule = f"Host(`{host}`)"
    return f"{host_rule} && PathPrefix(`{spec.path}`)"


def _certificate(stack: Stack, name: str, service: Service, spec: Ingress) -> Object:
    return {
        "apiVersion": CERT_MANAGER_API_VERSION,
        "kind": "Certificate",
        "metadata": metadata(stack, name, service.role),
        "spec": {
            "secretName": tls_secret_name(name),
            "dnsNames": [spec.host],
            "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": spec.cluster_issuer},
        },
    }


_CONTROLLERS: dict[str, IngressController] = {c.name: c for c in (Nginx(), Traefik())}


def ingress_controller(stack: Stack) -> IngressController:
    """The controller `platform.ingress_controller` names."""
    return _CONTROLLERS[stack.platform.ingress_controller]


def ingress_namespace(stack: Stack) -> str:
    """The namespace the ingress controller runs in: its component's, else the component's name."""
    component_name = stack.platform.ingress_component
    component = stack.platform.components.get(component_name)
    if component is not None and component.namespace:
        return component.namespace
    return component_name


def ingress_objects(stack: Stack, name: str, service: Service) -> list[Object]:
    """The objects that route outside traffic to service `name` (none without an ingress)."""
    if service.ingress is None:
        return []
    return ingress_controller(stack).objects(stack, name, service, service.ingress)
