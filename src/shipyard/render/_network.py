"""NetworkPolicies: deny all ingress in the namespace, then admit exactly what the spec implies.

A pod is admitted traffic on its port from the services that `depends_on` it, from the namespace
of the ingress controller (`platform.ingress_controller`; `_ingress.ingress_namespace`) when it
has an ingress, from its own pods and cron jobs (which call their service, as the seeds' do), and,
for a PostgreSQL primary, from its replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..spec import Stack
from ._common import NAME_LABEL, PART_OF_LABEL, Object, metadata, selector
from ._datastores import datastore_targets
from ._ingress import ingress_namespace

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass
class _Target:
    """Pods that accept connections on one port, and who may connect."""

    name: str
    component: str
    port: int
    peers: dict[str, dict[str, str]] = field(default_factory=dict)
    from_ingress: bool = False
    pods: dict[str, str] | None = None
    """The pod selector when not shipyard's own labels (pods an operator creates)."""
    rules: tuple[dict[str, Any], ...] = ()
    datastore: str | None = None
    """The datastore these pods serve; its dependents connect here when `dependents`."""
    dependents: bool = True


def network_policies(stack: Stack, rendered_services: list[str]) -> list[Object]:
    targets: dict[str, _Target] = {}
    for name in rendered_services:
        service = stack.services[name]
        if service.port is not None:
            targets[name] = _Target(
                name, service.role, service.port, from_ingress=service.ingress is not None
            )
    for name, store in stack.datastores.items():
        # By mode: StatefulSets' pods, CloudNativePG's instances and pooler; none when external.
        for found in datastore_targets(stack, name, store):
            targets[found.name] = _Target(
                found.name,
                found.component,
                found.port,
                dict(found.peers),
                pods=found.pods,
                rules=found.rules,
                datastore=name,
                dependents=found.dependents,
            )
    for name in rendered_services:
        service = stack.services[name]
        # Matches the service's pods and its cron jobs' pods alike (same name label): a service
        # may call itself through its Service (salespot's api reads its own /feature-flags) and
        # its cron jobs call it, and its egress policy allows the same (`_egress.py`).
        source = {NAME_LABEL: name, PART_OF_LABEL: stack.name}
        if name in targets:
            targets[name].peers[name] = source
        for dependency in service.depends_on:
            for target in targets.values():
                if (target.datastore is None and target.name == dependency) or (
                    target.datastore == dependency and target.dependents
                ):
                    target.peers[name] = source
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
        rules += target.rules
        if not rules:
            continue  # nothing may connect: the default deny already says so
        policies.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": metadata(stack, f"allow-{target.name}", target.component),
                "spec": {
                    "podSelector": {
                        "matchLabels": target.pods or selector(stack, target.name, target.component)
                    },
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
