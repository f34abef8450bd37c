"""shipyard's own control plane in the cluster (`control_plane:`): `shipyard serve` beside the stack.

Rendered only when the spec has a `control_plane` section:

- **Identity.** A ServiceAccount `shipyard` whose token is mounted: the server steers Argo Rollouts
  releases through the API server (`ArgoRolloutsDriver`) and reads the stack's status
  (`kubernetes_apply.read_status`), finding the API server and its token as `load_api_client`
  does inside a pod. A Role and RoleBinding in the stack's namespace grant exactly what those two
  send (`RULES`), nothing cluster-wide and no wildcard.
- **The server.** A Deployment running `shipyard serve` on `control_plane.port`, reading the spec
  from the one spec ConfigMap the backup CronJobs mount too (`_backups.SPEC_CONFIG_MAP`), its state
  store from `control_plane.state_store` (a Secret reference, never its value) as
  `$SHIPYARD_DATABASE_URL`, under the restricted security context as the image's user
  (`_backups.BACKUP_UID`, the Dockerfile's USER), with `/tmp` an emptyDir (the root filesystem is
  read-only). Readiness asks `/readyz` (the state store answers), liveness `/healthz` (the process
  does). `SHIPYARD_TARGET=kubernetes` makes its drills reach the datastores at their in-cluster
  addresses, and leaves the backup schedules to their CronJobs (server/_scheduler.py): each
  backup runs once.
- **Reaching it.** A ClusterIP Service `shipyard` (port `http`): what `render prometheus --target
  kubernetes` scrapes (`_prometheus.shipyard_address`) and, with the Prometheus Operator, a
  ServiceMonitor (`_operator.py`); an Ingress through the stack's ingress controller when
  `control_plane.ingress` is given; a PodDisruptionBudget from two replicas.
- **Network.** Ingress from Prometheus' namespace (`_exporters.prometheus_namespace`) and, with an
  ingress, from the controller's namespace. Egress only to DNS; the API server on 443 and 6443 at
  any address (its address is the cluster's `kubernetes` Service's endpoints, which differ per
  cluster and are not known when rendering; managed clusters serve on 443, kubeadm's on 6443); the
  state store's port at any address (its host is inside the secret URL); the backed-up datastores
  (`_egress.datastore_destinations`, which the drills read), which admit it in turn; the backup
  repository's endpoint (drills restore from it); and the notification channels' ports on public
  addresses (a NetworkPolicy cannot name a host, as for services' named hosts in `_egress.py`).
"""

from __future__ import annotations

from typing import Any

from ..spec import ENV_REFERENCE, ControlPlane, Postgres, SecretRef, Service, Stack
from ._backups import (
    BACKUP_UID,
    KUBERNETES_TARGET,
    SPEC_CONFIG_MAP,
    SPEC_DIR,
    SPEC_ENV,
    SPEC_FILE,
    STATE_DIR,
    TARGET_ENV,
    admit_to_datastore,
    has_scheduled_backups,
    repository_egress,
    spec_config_map,
)
from ._common import (
    COMPONENT_LABEL,
    Object,
    container_security,
    empty_dir,
    labels,
    metadata,
    pod_security,
    resources,
    selector,
)
from ._egress import ANYWHERE, PUBLIC, datastore_destinations, dns_egress
from ._env import SecretUses, postgres_password
from ._exporters import prometheus_namespace
from ._ingress import ingress_namespace, ingress_objects
from ._network import NAMESPACE_NAME_LABEL
from ._prometheus import SHIPYARD_SERVICE
from ._workloads import PORT_NAME

CONTROL_PLANE_NAME = SHIPYARD_SERVICE
"""Every object of the control plane is named so: its ServiceAccount, Role, RoleBinding,
Deployment, Service and PodDisruptionBudget."""
CONTROL_PLANE_COMPONENT = "control-plane"
METRICS_PATH = "/metrics"
API_SERVER_PORTS = (443, 6443)
"""Where an API server listens: 443 on managed clusters (EKS, GKE, AKS), 6443 on kubeadm's."""

RULES: tuple[dict[str, Any], ...] = (
    # ArgoRolloutsDriver.deploy server-side applies a release's objects (rollout.targets.kubernetes
    # RELEASE_KINDS). An apply is a PATCH; for an object that does not exist yet the API server
    # authorizes it as `create` too.
    {
        "apiGroups": [""],
        "resources": ["configmaps", "persistentvolumeclaims", "services"],
        "verbs": ["create", "patch"],
    },
    # get: read_status reads Ingresses and autoscalers back.
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["create", "get", "patch"]},
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": ["create", "get", "patch"],
    },
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["create", "patch"]},
    {"apiGroups": ["argoproj.io"], "resources": ["analysistemplates"], "verbs": ["create", "patch"]},
    # status/find read a Rollout; promote and pause/resume patch its spec (`spec.paused`).
    {"apiGroups": ["argoproj.io"], "resources": ["rollouts"], "verbs": ["create", "get", "patch"]},
    # promote, abort and retry patch the status subresource (pauseConditions, abort, promoteFull).
    {"apiGroups": ["argoproj.io"], "resources": ["rollouts/status"], "verbs": ["patch"]},
    # read_status: the other workloads' pods ready, CronJobs' last runs.
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get"]},
    {"apiGroups": ["postgresql.cnpg.io"], "resources": ["clusters"], "verbs": ["get"]},
)
"""The Role's rules: what ArgoRolloutsDriver and read_status send, and nothing more (tests hold
them equal to the driver's kinds)."""


def control_plane_selector(stack: Stack) -> dict[str, str]:
    """The control plane's pod selector (its Service's, its policies', its ServiceMonitor's)."""
    return selector(stack, CONTROL_PLANE_NAME, CONTROL_PLANE_COMPONENT)


def _meta(stack: Stack) -> dict[str, Any]:
    return metadata(stack, CONTROL_PLANE_NAME, CONTROL_PLANE_COMPONENT)


def _reference_env(name: str | None, reference: SecretRef | str, uses: SecretUses) -> dict[str, Any]:
    """One variable read from a Secret: `{secretRef}` as its env_name (or `name`), `${env:NAME}`
    as NAME from the runtime Secret; as the backup jobs get them (`_backups._secret_env`)."""
    if isinstance(reference, SecretRef):
        return {"name": name or reference.env_name, "valueFrom": uses.ref(reference)}
    match = ENV_REFERENCE.fullmatch(reference.strip())
    assert match is not None  # the spec's models admit only the two forms
    return {"name": name or match[1], "valueFrom": uses.runtime(match[1])}


def _secret_env(stack: Stack, plane: ControlPlane, uses: SecretUses) -> list[dict[str, Any]]:
    """The secrets the server reads, by reference: its state store, and what its drills and
    notifications resolve (the repository's password and keys, the datastores' passwords, the
    channels' URLs, tokens and SMTP passwords)."""
    env: list[dict[str, Any]] = []
    if plane.state_store is not None:
        env.append(_reference_env("SHIPYARD_DATABASE_URL", plane.state_store, uses))
    references: list[SecretRef | str] = []
    backup = stack.backup
    if backup is not None:
        references.append(backup.password)
        if backup.credentials is not None:
            references += [backup.credentials.access_key_id, backup.credentials.secret_access_key]
        for name in dict.fromkeys(backup.sources.datastores):
            store = stack.datastores.get(name)
            if isinstance(store, Postgres):
                references.append(postgres_password(name, store))
            elif store is not None and store.password is not None:
                references.append(store.password)
    for _, channel in sorted(stack.notifications.items()):
        references += [ref for ref in (channel.url, channel.token, channel.smtp_password) if ref is not None]
    seen = {variable["name"] for variable in env}
    for reference in references:
        variable = _reference_env(None, reference, uses)
        if variable["name"] not in seen:  # two references may name one Secret key
            seen.add(variable["name"])
            env.append(variable)
    return env


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _deployment(stack: Stack, plane: ControlPlane, uses: SecretUses) -> Object:
    command = ["shipyard", "serve", "--host", "0.0.0.0", "--port", str(plane.port), "--log-format", "json"]
    if stack.environment:
        command += ["--env", stack.environment]
    plain = {
        TARGET_ENV: KUBERNETES_TARGET,
        SPEC_ENV: f"{SPEC_DIR}/{SPEC_FILE}",
        "SHIPYARD_STATE_DIR": STATE_DIR,
        "HOME": "/tmp",
        "XDG_CACHE_HOME": "/tmp/cache",
    }
    container = {
        "name": CONTROL_PLANE_NAME,
        "image": plane.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [*_secret_env(stack, plane, uses), *({"name": k, "value": v} for k, v in plain.items())],
        "ports": [{"name": PORT_NAME, "containerPort": plane.port, "protocol": "TCP"}],
        "resources": resources(plane.filled_resources),
        "securityContext": container_security(),
        # The server starts in seconds; a slow state store shows as not ready, never as restarts.
        "startupProbe": _probe("/healthz", period=5, failures=24),
        "readinessProbe": _probe("/readyz", period=10, failures=3),
        "livenessProbe": _probe("/healthz", period=20, failures=3),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
        ],
    }
    pod = {
        "serviceAccountName": CONTROL_PLANE_NAME,
        # The token is the server's API credential (Argo Rollouts steering, status).
        "automountServiceAccountToken": True,
        "securityContext": {**pod_security(), "runAsUser": BACKUP_UID, "runAsGroup": BACKUP_UID},
        "containers": [container],
        "volumes": [empty_dir("tmp"), {"name": "spec", "configMap": {"name": SPEC_CONFIG_MAP}}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(stack),
        "spec": {
            "replicas": plane.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": control_plane_selector(stack)},
            "template": {
                "metadata": {"labels": labels(stack, CONTROL_PLANE_NAME, CONTROL_PLANE_COMPONENT)},
                "spec": pod,
            },
        },
    }


def _identity(stack: Stack) -> list[Object]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(stack),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(stack),
            "rules": [dict(rule) for rule in RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(stack),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROL_PLANE_NAME},
            "subjects": [
                {"kind": "ServiceAccount", "name": CONTROL_PLANE_NAME, "namespace": stack.k8s_namespace}
            ],
        },
    ]


def _service(stack: Stack, plane: ControlPlane) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(stack),
        "spec": {
            "type": "ClusterIP",
            "selector": control_plane_selector(stack),
            "ports": [{"name": PORT_NAME, "port": plane.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def _disruption_budget(stack: Stack) -> Object:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(stack),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": control_plane_selector(stack)}},
    }


def _ingress(stack: Stack, plane: ControlPlane) -> list[Object]:
    """The dashboard and API through the stack's ingress controller, as a service's would be."""
    if plane.ingress is None:
        return []
    # The controllers route a service; the control plane is routed as an API service on its port.
    routed = Service(role="api", image=plane.image, port=plane.port, ingress=plane.ingress)
    objects = ingress_objects(stack, CONTROL_PLANE_NAME, routed)
    for obj in objects:
        obj["metadata"]["labels"][COMPONENT_LABEL] = CONTROL_PLANE_COMPONENT
    return objects


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"port": port, "protocol": "TCP"} for port in ports]


def _backed_up(stack: Stack) -> list[str]:
    """The datastores the drills read: the backup's sources."""
    if stack.backup is None:
        return []
    return sorted(name for name in set(stack.backup.sources.datastores) if name in stack.datastores)


def _channel_ports(stack: Stack) -> list[int]:
    ports: set[int] = set()
    for channel in stack.notifications.values():
        if channel.kind == "email":
            ports.add(channel.smtp_port)
        elif channel.kind == "telegram" and channel.api_url is not None:
            ports.add(443 if channel.api_url.startswith("https:") else 80)
        else:
            ports.add(443)  # Slack, Telegram's Bot API, webhooks: HTTPS
    return sorted(ports)


def _policies(stack: Stack, plane: ControlPlane) -> list[Object]:
    pods = control_plane_selector(stack)
    scrapers = [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: prometheus_namespace(stack)}}}]
    admitted: list[dict[str, Any]] = [{"from": scrapers, "ports": _tcp(plane.port)}]
    if plane.ingress is not None:
        controller = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ingress_namespace(stack)}}}
        admitted.append({"from": [controller], "ports": _tcp(plane.port)})
    egress: list[dict[str, Any]] = [
        dns_egress(),
        # The API server's address is the cluster's own (the `kubernetes` Service's endpoints),
        # unknown when rendering: its ports at any address.
        {
            "to": [dict(peer) for peer in ANYWHERE],
            "ports": _tcp(*API_SERVER_PORTS),
        },
    ]
    if plane.state_store is not None:
        # The state store's host is inside its secret URL: its port at any address.
        egress.append({"to": [dict(peer) for peer in ANYWHERE], "ports": _tcp(plane.state_store_port)})
    policies: list[Object] = []
    server = {"podSelector": {"matchLabels": pods}}
    for name in _backed_up(stack):
        egress += datastore_destinations(stack, name)
        admission = admit_to_datastore(stack, name, CONTROL_PLANE_NAME, server)
        if admission is not None:
            policies.append(admission)
    if stack.backup is not None:
        egress.append(repository_egress(stack.backup.repository))
    channel_ports = _channel_ports(stack)
    if channel_ports:
        egress.append(
            {
                "to": [dict(peer) for peer in PUBLIC],
                "ports": _tcp(*channel_ports),
            }
        )
    for policy_name, types, rules in (
        (f"allow-{CONTROL_PLANE_NAME}", "Ingress", admitted),
        (f"{CONTROL_PLANE_NAME}-egress", "Egress", egress),
    ):
        policies.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": metadata(stack, policy_name, CONTROL_PLANE_COMPONENT),
                "spec": {
                    "podSelector": {"matchLabels": pods},
                    "policyTypes": [types],
                    types.lower(): rules,
                },
            }
        )
    return policies


def control_plane_objects(stack: Stack, uses: SecretUses | None = None) -> list[Object]:
    """Everything `shipyard serve` needs in the cluster; none without `control_plane`. The spec
    ConfigMap is rendered here only when no backup CronJob renders it (one object for both)."""
    plane = stack.control_plane
    if plane is None:
        return []
    uses = uses if uses is not None else SecretUses(stack)
    objects = [
        *_identity(stack),
        _deployment(stack, plane, uses),
        _service(stack, plane),
        *_ingress(stack, plane),
        *_policies(stack, plane),
    ]
    if plane.replicas >= 2:
        objects.append(_disruption_budget(stack))
    if not has_scheduled_backups(stack):
        objects.append(spec_config_map(stack))
    return objects
