"""NetworkPolicies: deny all ingress in the namespace, then admit exactly what the spec implies.

A pod is admitted traffic on its port from the services that `depends_on` it, from the ingress
controller's namespace when it has an ingress, from a service's own cron jobs (which call their
service, as the seed's do), and, for a PostgreSQL primary, from its replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..spec import Postgres, Stack
from ._common import NAME_LABEL, PART_OF_LABEL, Object, metadata, selector
from ._datastores import CACHE, PRIMARY, REPLICA, replica_name

DEFAULT_INGRESS_NAMESPACE = "ingress-nginx"
INGRESS_CONTROLLER = "ingress-nginx"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass
class _Target:
    """Pods that accept connections on one port, and who may connect."""

    name: str
    component: str
    port: int
    peers: dict[str, dict[str, str]] = field(default_factory=dict)
    from_ingress: bool = False


def ingress_namespace(stack: Stack) -> str:
    component = stack.platform.components.get(INGRESS_CONTROLLER)
    if component is not None and component.namespace:
        return component.namespace
    return DEFAULT_INGRESS_NAMESPACE


def network_policies(stack: Stack, rendered_services: list[str]) -> list[Object]:
    targets: dict[str, _Target] = {}
    for name in rendered_services:
        service = stack.services[name]
        if service.port is not None:
            targets[name] = _Target(
                name, service.role, service.port, from_ingress=service.ingress is not None
            )
    for name, store in stack.datastores.items():
        if isinstance(store, Postgres):
            targets[name] = _Target(name, PRIMARY, store.port)
            if store.replicas > 0:
                replica = replica_name(name)
                targets[replica] = _Target(replica, REPLICA, store.port)
                targets[name].peers[replica] = selector(stack, replica, REPLICA)
        else:
            targets[name] = _Target(name, CACHE, store.port)
    for name in rendered_services:
        service = stack.services[name]
        # Matches the service's pods and its cron jobs' pods alike (same name label).
        source = {NAME_LABEL: name, PART_OF_LABEL: stack.name}
        if service.cron and name in targets:
            targets[name].peers[name] = source
        for dependency in service.depends_on:
            if dependency in targets:
                targets[dependency].peers[name] = source
                if replica_name(dependency) in targets and dependency in stack.datastores:
                    targets[replica_name(dependency)].peers[name] = source
    policies = [_deny_all(stack)]
    controller_namespace = ingress_namespace(stack)
    for target in sorted(targets.values(), key=lambda t: t.name):
        rules: list[dict[str, Any]] = []
        ports = [{"port": target.port, "protocol": "TCP"}]
        if target.peers:
            peers = [{"podSelector": {"matchLabels": target.peers[p]}} for p in sorted(target.peers)]
            rules.append({"from": peers, "ports": ports})
        if target.from_ingress:
            namespace = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: controller_namespace}}}
            rules.append({"from": [namespace], "ports": ports})
        if not rules:
            continue  # nothing may connect: the default deny already says so
        policies.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": metadata(stack, f"allow-{target.name}", target.component),
                "spec": {
                    "podSelector": {"matchLabels": selector(stack, target.name, target.component)},
                    "policyTypes": ["Ingress"],
                    "ingress": rules,
                },
            }
        )
    return policies


def _deny_all(stack: Stack) -> Object:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(stack, "default-deny-ingress", "network"),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
