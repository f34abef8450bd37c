"""Egress NetworkPolicies: where each service's pods may connect to, and nowhere else.

One policy per rendered service, selecting its pods (and its cron jobs' pods, which run the same
image with the same needs: they share the service's name label). Once a pod is selected by an
Egress policy, Kubernetes drops every connection no policy allows, so each lists all the service
needs:

- DNS: the cluster's resolver (kube-dns in kube-system, UDP and TCP 53);
- its own pods on its port (its cron jobs call it; an app may call its own Service);
- the datastores it `depends_on`, wherever they run (`datastore_destinations`);
- the services it `depends_on`, on their ports;
- the spec's `egress`: named hosts, or CIDR blocks.

A NetworkPolicy cannot name a host, and a host's addresses change (a CDN, a cloud API): a named
host is allowed as every public address on its ports, the private ranges excepted (the cluster's
own network and other tenants, the cloud's metadata service at 169.254.169.254), and its name is
kept in the `shipyard.dev/egress-hosts` annotation for the reader and for a CNI that can enforce
names (Cilium's toFQDNs, Calico's domains).
"""

from __future__ import annotations

from typing import Any

from ..spec import EgressTarget, Postgres, Stack
from ._common import NAME_LABEL, PART_OF_LABEL, Object, cnpg_pooler_name, metadata
from ._datastores import replica_name

EGRESS_HOSTS_ANNOTATION = "shipyard.dev/egress-hosts"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}  # CoreDNS keeps kube-dns's label
DNS_PORT = 53
# Every address but those a public host cannot have: RFC 1918, carrier-grade NAT (some CNIs' pod
# ranges), link-local (the metadata service), loopback; IPv6 unique-local and link-local.
PRIVATE_V4 = (
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
)
PRIVATE_V6 = ("fc00::/7", "fe80::/10")
PUBLIC = (
    {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_V4)}},
    {"ipBlock": {"cidr": "::/0", "except": list(PRIVATE_V6)}},
)
ANYWHERE = ({"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}})
CNPG_CLUSTER_LABEL = "cnpg.io/cluster"
CNPG_POOLER_LABEL = "cnpg.io/poolerName"


def _pods(stack: Stack, name: str) -> dict[str, Any]:
    # Name and stack only: every component a datastore or service is made of answers to them.
    return {"podSelector": {"matchLabels": {NAME_LABEL: name, PART_OF_LABEL: stack.name}}}


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"port": port, "protocol": "TCP"}]


def datastore_destinations(stack: Stack, name: str) -> list[dict[str, Any]]:
    """The egress rules that reach datastore `name`, by how it runs on Kubernetes (`mode`):

    - `statefulset`: its pods, and its replicas' pods;
    - `cloudnative-pg`: the Cluster's instances (the `-rw` Service's pods) and its Pooler's pods;
    - `external`: the managed service's `external.cidr` on its port; without a cidr, any address
      on that port (its host name resolves to addresses shipyard cannot know).
    """
    store = stack.datastores[name]
    port = _tcp(store.port)
    if store.mode == "external":
        assert store.external is not None  # the model requires it in this mode
        if store.external.cidr is None:
            return [{"to": list(ANYWHERE), "ports": port}]
        return [{"to": [{"ipBlock": {"cidr": store.external.cidr}}], "ports": port}]
    if store.mode == "cloudnative-pg":
        peers: list[dict[str, Any]] = [{"podSelector": {"matchLabels": {CNPG_CLUSTER_LABEL: name}}}]
        settings = store.cloudnative_pg if isinstance(store, Postgres) else None
        if settings is not None and settings.pooler is not None:
            peers.append({"podSelector": {"matchLabels": {CNPG_POOLER_LABEL: cnpg_pooler_name(name)}}})
        return [{"to": peers, "ports": port}]
    peers = [_pods(stack, name)]
    if store.replicas > 0:
        peers.append(_pods(stack, replica_name(name)))
    return [{"to": peers, "ports": port}]


def dns_egress() -> dict[str, Any]:
    """The egress rule every pod with an egress policy needs: the cluster's DNS."""
    resolver = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: DNS_NAMESPACE}},
        "podSelector": {"matchLabels": DNS_POD_LABELS},
    }
    return {
        "to": [resolver],
        "ports": [{"port": DNS_PORT, "protocol": "UDP"}, {"port": DNS_PORT, "protocol": "TCP"}],
    }


def _external(target: EgressTarget) -> dict[str, Any]:
    ports = [{"port": port, "protocol": target.protocol} for port in target.ports]
    if target.cidr is None:
        return {"to": [dict(peer) for peer in PUBLIC], "ports": ports}
    block: dict[str, Any] = {"cidr": target.cidr}
    if target.except_:
        block["except"] = list(target.except_)
    return {"to": [{"ipBlock": block}], "ports": ports}


def _host_label(target: EgressTarget) -> str:
    ports = ",".join(str(port) for port in target.ports)
    return f"{target.host}:{ports}" + ("/UDP" if target.protocol == "UDP" else "")


def egress_policies(stack: Stack, rendered_services: list[str]) -> list[Object]:
    """One egress NetworkPolicy per rendered service."""
    policies = []
    for name in sorted(rendered_services):
        service = stack.services[name]
        rules: list[dict[str, Any]] = [dns_egress()]
        if service.port is not None:
            rules.append({"to": [_pods(stack, name)], "ports": _tcp(service.port)})
        for dependency in sorted(set(service.depends_on)):
            if dependency in stack.datastores:
                rules += datastore_destinations(stack, dependency)
            elif dependency in stack.services:
                port = stack.services[dependency].port
                if port is not None:  # a worker has nothing to connect to
                    rules.append({"to": [_pods(stack, dependency)], "ports": _tcp(port)})
        rules += [_external(target) for target in service.egress]
        meta = metadata(stack, f"egress-{name}", service.role)
        hosts = [_host_label(target) for target in service.egress if target.host is not None]
        if hosts:
            meta["annotations"] = {EGRESS_HOSTS_ANNOTATION: " ".join(hosts)}
        policies.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": meta,
                "spec": {
                    "podSelector": {"matchLabels": {NAME_LABEL: name, PART_OF_LABEL: stack.name}},
                    "policyTypes": ["Egress"],
                    "egress": rules,
                },
            }
        )
    return policies
