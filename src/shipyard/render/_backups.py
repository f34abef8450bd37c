"""Scheduled backups as Kubernetes CronJobs: one per entry of the spec's `backup.schedules`.

Each runs the job entry point on the schedule's ops request, given inline:
`python -m shipyard.jobs --request '{"kind":"backup","what":"full"}' --env <environment>`, in
`backup.image` (shipyard's own image, built from the repository's Dockerfile, at this shipyard's
version unless the spec pins another), never two at once (`concurrencyPolicy: Forbid`), on the
schedule read in UTC as `shipyard serve`'s scheduler reads it.

What the job needs, and where it comes from:

- **The spec.** A ConfigMap rendered here (`shipyard-spec`, shared with the control plane's
  `shipyard serve`, render/_control_plane.py) holds the environment's stack
  as a one-environment spec file (feature flags left out: backups do not read them), mounted
  read-only at `/etc/shipyard/shipyard.yaml` and named by `$SHIPYARD_SPEC`. The image then stays
  the same for every stack, and the spec the job runs is the one rendered beside it.
- **Where the sources are.** `SHIPYARD_TARGET=kubernetes` tells `backup/_connect.py` to connect
  to each datastore's in-cluster address (`_common.cluster_host`, the one place that says it, on
  the datastore's Service `port`) instead of `local.host`, and to read each `service/volume`
  from `volume_path($SHIPYARD_BACKUP_VOLUMES, volume)`, where its PersistentVolumeClaim is
  mounted read-only. Both are defined here, read there.
- **Secrets.** As environment variables read from Kubernetes Secrets, under the names shipyard
  resolves references from where it runs: `${env:NAME}` as NAME (from the stack's runtime
  Secret), `{secretRef: name/key}` as NAME_KEY (`SecretRef.env_name`). Values are never rendered.
  Each job gets only what its kind reads: the restic password and S3 keys
  (`backup.credentials`), and the passwords of the datastores it dumps.
- **The state store.** `backup.state_store` (a reference to the URL `shipyard serve` uses), else
  `control_plane.state_store` (`Stack.backup_state_store`), as `$SHIPYARD_DATABASE_URL`: the
  server then lists the sets, checks their freshness and alerts.
  Without it each run records in a throwaway SQLite file under `/tmp`; the set's manifest is
  still written into the repository, where `shipyard backup list --from-repository` finds it,
  and a `verify` job first imports the repository's sets into its own throwaway store (an init
  container running `shipyard backup import`).

Volumes: a ReadWriteMany claim mounts anywhere. A ReadWriteOnce claim is attached to one node at
a time, that of the service's pod: a backup pod elsewhere would wait forever for the attach. So a
job that mounts one is given a required pod affinity to the service's pods (same node);
`validate` refuses ReadWriteOncePod volumes (no second pod may mount them at all) and
ReadWriteOnce volumes of two services in one set (no node need hold both). The files are read
as the image's user (10001) with the services' `fs_group`s as supplementary groups: files the
app keeps private to its own user cannot be read, and the backup says which.

Not rendered for the cluster: `incremental` (pgBackRest). It needs PostgreSQL's data directory
and WAL archive on the database's own disk, which a CronJob's pod cannot reach; point-in-time
recovery in a cluster is CloudNativePG's (`mode: cloudnative-pg` with its barman backups). A
stack that schedules it is refused here rather than rendered to fail on every run; an overlay
removes the schedule from the environments that run on Kubernetes. Refused too: a local
repository directory (a pod has no lasting disk), plain-host volume paths, and a managed Redis
over TLS (the Redis copy speaks the replication protocol in clear).

Network: the backup pods run under their own ServiceAccount (no API token, no Role: they call no
Kubernetes API) and may connect only to DNS, the datastores they back up, and the repository's
S3 endpoint (a NetworkPolicy cannot name a host: its port on public addresses).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from ..errors import RenderError
from ..spec import (
    BACKUP_WHATS,
    ENV_REFERENCE,
    Amounts,
    Postgres,
    Resources,
    SecretRef,
    Stack,
    default_backup_resources,
)
from ._common import (
    COMPONENT_LABEL,
    PART_OF_LABEL,
    Object,
    container_security,
    empty_dir,
    labels,
    metadata,
    pod_security,
    resources,
    selector,
)
from ._datastores import CACHE, PRIMARY
from ._egress import datastore_destinations, dns_egress
from ._env import SecretUses, postgres_password
from ._workloads import volume_claim_names
from ._yaml import dump

BACKUP_COMPONENT = "backup"
STARTING_DEADLINE_S = 600
"""A job that could not start within ten minutes of its time (controller down, no room) is
skipped, not started late on top of the next one."""
BACKOFF_LIMIT = 1
"""A failed backup is retried once; a second failure waits for the next schedule (and alerts)."""
FINISHED_TTL_S = 3 * 86400
"""Finished Jobs (and their pods' logs) are kept three days: a failure on Friday night is still
there on Monday."""

TARGET_ENV = "SHIPYARD_TARGET"
"""Set to KUBERNETES_TARGET in the backup pods: sources are reached at their in-cluster addresses."""
KUBERNETES_TARGET = "kubernetes"
VOLUMES_ENV = "SHIPYARD_BACKUP_VOLUMES"
"""The directory under which the backed-up volumes are mounted (VOLUMES_ROOT in the pods)."""
VOLUMES_ROOT = "/var/lib/shipyard/volumes"
SPEC_ENV = "SHIPYARD_SPEC"
"""The job entry point's spec path variable (jobs/_runner.SPEC_ENV; a test holds them equal)."""
SPEC_DIR = "/etc/shipyard"
SPEC_FILE = "shipyard.yaml"
SPEC_CONFIG_MAP = "shipyard-spec"
"""The one ConfigMap holding the spec, for the backup jobs and the control plane alike."""
SPEC_COMPONENT = "shipyard"
STATE_DIR = "/tmp/shipyard"
"""shipyard's state directory in the pod (restic's cache, the throwaway state store)."""
BACKUP_UID = 10001
"""The image's numeric user (the Dockerfile's USER; a test holds them equal)."""
SERVICE_ACCOUNT = "shipyard-backup"
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"
CNPG_CLUSTER_LABEL = "cnpg.io/cluster"


def volume_path(root: str, volume: str) -> str:
    """Where the backup pod reads the volume `service/volume`: its claim's mount under `root`."""
    return f"{root.rstrip('/')}/{volume}"


def scheduled_request(kind: str) -> dict[str, Any]:
    """The ops request (as JSON) that the `backup.schedules` entry `kind` runs: a backup set of
    that kind, a pgBackRest incremental backup, or a verification of the newest set.

    Written as plain data, since a planner imports no ops: tests/unit/render checks that each
    validates as its request model (`TakeBackup`, `TakePitrBackup`, `Verify`)."""
    if kind == "verify":
        return {"kind": "verify"}
    if kind == "incremental":
        return {"kind": "pitr-backup", "what": "incr"}
    if kind in BACKUP_WHATS:
        return {"kind": "backup", "what": kind}
    known = ", ".join([*BACKUP_WHATS, "incremental", "verify"])
    raise RenderError(f"backup.schedules: {kind!r} is not a schedule shipyard runs; use one of {known}")


def job_command(request: dict[str, Any], environment: str | None) -> list[str]:
    """The container command that runs `request` once through the job entry point."""
    command = ["python", "-m", "shipyard.jobs", "--request", json.dumps(request, separators=(",", ":"))]
    return command + (["--env", environment] if environment else [])


def spec_document(stack: Stack) -> str:
    """The stack as a spec file of one environment, which loads back as the same stack (flags
    aside): what the backup jobs read at `$SHIPYARD_SPEC`."""
    data = stack.model_dump(mode="json", by_alias=True, exclude={"environment", "flags"})
    data["environments"] = {stack.environment: {}}
    return dump(data)


def backup_resources(stack: Stack) -> Resources:
    """`backup.resources`, each amount not given taken from the defaults (checkov wants all four)."""
    assert stack.backup is not None
    given, default = stack.backup.resources, default_backup_resources()

    def filled(mine: Amounts, fallback: Amounts) -> Amounts:
        return Amounts(cpu=mine.cpu or fallback.cpu, memory=mine.memory or fallback.memory)

    return Resources(
        requests=filled(given.requests, default.requests), limits=filled(given.limits, default.limits)
    )


def _check_runnable(stack: Stack) -> None:
    """Refuse what no CronJob in the cluster can do, naming the field and what to do instead."""
    backup = stack.backup
    assert backup is not None
    if "incremental" in backup.schedules:
        raise RenderError(
            f"backup.schedules.incremental ({stack.environment}): pgBackRest needs PostgreSQL's data"
            " directory, which a CronJob in the cluster cannot reach; for point-in-time recovery on"
            " Kubernetes use the datastore's `mode: cloudnative-pg` (barman backups), and remove the"
            " schedule from this environment (`backup: {schedules: ...}` in its overlay)"
        )
    if not _is_remote(backup.repository):
        raise RenderError(
            f"backup.repository ({stack.environment}): {backup.repository!r} is a directory, and a"
            " CronJob's pod has no lasting disk: give an S3 URL (s3:https://host/bucket/path) so the"
            " copies leave the cluster"
        )
    for name in backup.sources.datastores:
        store = stack.datastores.get(name)
        if store is not None and store.kind == "redis" and store.mode == "external":
            assert store.external is not None  # the model requires it in this mode
            if store.external.tls:
                raise RenderError(
                    f"backup.sources.datastores ({stack.environment}): {name!r} is a managed Redis over"
                    " TLS, which shipyard's Redis backup (the replication protocol, in clear) cannot"
                    " read yet; use the provider's snapshots for it and remove it from the sources"
                )
    for volume in backup.sources.volumes:
        if volume.startswith("/"):
            raise RenderError(
                f"backup.sources.volumes ({stack.environment}): {volume!r} is a path on a plain host,"
                " which a pod cannot reach; name the service's volume as `service/volume`"
            )


def _is_remote(repository: str) -> bool:
    # The same reading as backup/_connect.repository_location: `scheme:` before the first slash.
    return ":" in repository.split("/", 1)[0] and not repository.startswith("/")


def _covered(stack: Stack, kind: str) -> tuple[list[str], list[str]]:
    """The datastores and volumes the job of schedule `kind` reads (verify reads the repository only)."""
    assert stack.backup is not None
    sources = stack.backup.sources
    if kind not in BACKUP_WHATS:
        return [], []
    stores = [
        name
        for name in dict.fromkeys(sources.datastores)
        if name in stack.datastores
        and (
            kind == "full"
            or (kind == "database" and isinstance(stack.datastores[name], Postgres))
            or (kind == "redis" and not isinstance(stack.datastores[name], Postgres))
        )
    ]
    volumes = list(dict.fromkeys(sources.volumes)) if kind in ("full", "files") else []
    return stores, volumes


def _volume_mounts(stack: Stack, volumes: list[str]) -> tuple[list[Object], list[Object], Object | None]:
    """(pod volumes, container mounts, pod affinity) for the claims of `volumes`, read-only."""
    pod_volumes: list[Object] = []
    mounts: list[Object] = []
    near: str | None = None
    for index, volume in enumerate(volumes):
        service_name, _, volume_name = volume.partition("/")
        service = stack.services[service_name]
        claims = volume_claim_names(service_name, service, volume_name)
        if len(claims) != 1:
            raise RenderError(
                f"backup.sources.volumes ({stack.environment}): {volume!r} is one claim per pod of a"
                f" StatefulSet ({len(claims)} pods); a backup reads one directory per volume: back up"
                " a volume the pods share, or run the StatefulSet with one replica"
            )
        name = f"source-{index}"
        pod_volumes.append(
            {"name": name, "persistentVolumeClaim": {"claimName": claims[0], "readOnly": True}}
        )
        mounts.append({"name": name, "mountPath": volume_path(VOLUMES_ROOT, volume), "readOnly": True})
        if service.volumes[volume_name].access_mode == "ReadWriteOnce":
            near = service_name  # validate allows one service's ReadWriteOnce volumes per set
    affinity = None
    if near is not None:
        # Attached to the node of the service's pod: run there, or wait for an attach that never comes.
        service = stack.services[near]
        term = {
            "labelSelector": {"matchLabels": selector(stack, near, service.role)},
            "topologyKey": HOSTNAME_TOPOLOGY,
        }
        affinity = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return pod_volumes, mounts, affinity


def _env(stack: Stack, kind: str, uses: SecretUses) -> list[dict[str, Any]]:
    backup = stack.backup
    assert backup is not None
    stores, volumes = _covered(stack, kind)
    env = [*_secret_env(backup.password, uses)]
    if backup.credentials is not None:
        env += _secret_env(backup.credentials.access_key_id, uses)
        env += _secret_env(backup.credentials.secret_access_key, uses)
    state_store = stack.backup_state_store
    if state_store is not None:
        env += [
            {
                "name": "SHIPYARD_DATABASE_URL",
                "valueFrom": _secret_env(state_store, uses)[0]["valueFrom"],
            }
        ]
    for name in stores:
        store = stack.datastores[name]
        if isinstance(store, Postgres):
            env += _secret_env(postgres_password(name, store), uses)
        elif store.password is not None:
            env += _secret_env(store.password, uses)
    plain = {
        TARGET_ENV: KUBERNETES_TARGET,
        SPEC_ENV: f"{SPEC_DIR}/{SPEC_FILE}",
        "SHIPYARD_STATE_DIR": STATE_DIR,
        "SHIPYARD_ACTOR": f"schedule:backup-{kind}",
        "HOME": "/tmp",
        "XDG_CACHE_HOME": "/tmp/cache",
    }
    if volumes:
        plain[VOLUMES_ENV] = VOLUMES_ROOT
    return _unique(env) + [{"name": key, "value": value} for key, value in plain.items()]


def backup_cronjobs(stack: Stack, uses: SecretUses | None = None) -> list[Object]:
    """One CronJob per `backup.schedules` entry; the Secret keys they read are recorded in `uses`."""
    backup = stack.backup
    if backup is None or not backup.schedules:
        return []
    _check_runnable(stack)
    uses = uses if uses is not None else SecretUses(stack)
    jobs = []
    for kind, schedule in sorted(backup.schedules.items()):
        name = f"backup-{kind}"
        _, volumes = _covered(stack, kind)
        pod_volumes, source_mounts, affinity = _volume_mounts(stack, volumes)
        env = _env(stack, kind, uses)
        mounts = [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            *source_mounts,
        ]
        common = {
            "image": backup.image,
            "imagePullPolicy": "IfNotPresent",
            "env": env,
            "resources": resources(backup_resources(stack)),
            "securityContext": container_security(),
            # The root filesystem is read-only: restic's cache and temporary files go to /tmp.
            "volumeMounts": mounts,
        }
        container = {"name": "backup", "command": job_command(scheduled_request(kind), stack.environment)}
        groups = sorted(
            {
                group
                for volume in volumes
                if (group := stack.services[volume.partition("/")[0]].fs_group) is not None
            }
        )
        pod: dict[str, Any] = {
            "serviceAccountName": SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": {
                **pod_security(),
                "runAsUser": BACKUP_UID,
                "runAsGroup": BACKUP_UID,
                **({"supplementalGroups": groups} if groups else {}),
            },
            "containers": [{**container, **common}],
            "volumes": [
                empty_dir("tmp"),
                {"name": "spec", "configMap": {"name": SPEC_CONFIG_MAP}},
                *pod_volumes,
            ],
        }
        if kind == "verify" and stack.backup_state_store is None:
            # A throwaway state store knows no set: record the repository's first (from their
            # manifests), then verify the newest as the server would.
            command = [
                "shipyard",
                "backup",
                "import",
                "-f",
                f"{SPEC_DIR}/{SPEC_FILE}",
                "-e",
                stack.environment,
            ]
            pod["initContainers"] = [{"name": "import-sets", "command": command, **common}]
        if affinity is not None:
            pod["affinity"] = affinity
        jobs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": metadata(stack, name, BACKUP_COMPONENT),
                "spec": {
                    "schedule": schedule,
                    "timeZone": "Etc/UTC",
                    "concurrencyPolicy": "Forbid",
                    "startingDeadlineSeconds": STARTING_DEADLINE_S,
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {
                        "spec": {
                            "backoffLimit": BACKOFF_LIMIT,
                            "ttlSecondsAfterFinished": FINISHED_TTL_S,
                            "template": {
                                "metadata": {"labels": labels(stack, name, BACKUP_COMPONENT)},
                                "spec": pod,
                            },
                        }
                    },
                },
            }
        )
    return jobs


def has_scheduled_backups(stack: Stack) -> bool:
    """Whether backup CronJobs are rendered (and with them the spec ConfigMap, in `backup_objects`)."""
    return stack.backup is not None and bool(stack.backup.schedules)


def spec_config_map(stack: Stack) -> Object:
    """The spec ConfigMap (`SPEC_CONFIG_MAP`): one object, read by the backup jobs and the control plane."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(stack, SPEC_CONFIG_MAP, SPEC_COMPONENT),
        "data": {SPEC_FILE: spec_document(stack)},
    }


def backup_service_account(stack: Stack) -> Object:
    """The backup pods' identity: no token mounted, and no Role, since they call no Kubernetes API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(stack, SERVICE_ACCOUNT, BACKUP_COMPONENT),
        "automountServiceAccountToken": False,
    }


def _backup_pods(stack: Stack) -> dict[str, str]:
    return {COMPONENT_LABEL: BACKUP_COMPONENT, PART_OF_LABEL: stack.name}


def store_pods(stack: Stack, name: str) -> dict[str, str] | None:
    """The labels of datastore `name`'s writable pods, or None when it runs outside the cluster."""
    store = stack.datastores[name]
    if store.mode == "external":
        return None
    if store.mode == "cloudnative-pg":
        return {CNPG_CLUSTER_LABEL: name}
    return selector(stack, name, PRIMARY if isinstance(store, Postgres) else CACHE)


def admit_to_datastore(stack: Stack, name: str, client: str, peer: dict[str, Any]) -> Object | None:
    """`allow-<client>-to-<name>`: datastore `name`'s writable pods admit `peer` on its port
    (ingress is denied by default); None when it runs outside the cluster."""
    store = stack.datastores[name]
    pods = store_pods(stack, name)
    if pods is None:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            stack, f"allow-{client}-to-{name}", PRIMARY if isinstance(store, Postgres) else CACHE
        ),
        "spec": {
            "podSelector": {"matchLabels": pods},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [peer], "ports": [{"port": store.port, "protocol": "TCP"}]}],
        },
    }


def backup_network_policies(stack: Stack) -> list[Object]:
    """Admit the backup jobs' pods to the datastores they back up (ingress is denied by default),
    and let them out only to DNS, those datastores and the repository's endpoint."""
    backup = stack.backup
    if backup is None or not backup.schedules:
        return []
    policies = []
    egress: list[dict[str, Any]] = [dns_egress()]
    clients = {"podSelector": {"matchLabels": _backup_pods(stack)}}
    for name in sorted(set(backup.sources.datastores) & set(stack.datastores)):
        egress += datastore_destinations(stack, name)  # the one place that says where it is
        admission = admit_to_datastore(stack, name, "backup", clients)
        if admission is not None:
            policies.append(admission)
    egress.append(repository_egress(backup.repository))
    policies.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(stack, "backup-egress", BACKUP_COMPONENT),
            "spec": {
                "podSelector": {"matchLabels": _backup_pods(stack)},
                "policyTypes": ["Egress"],
                "egress": egress,
            },
        }
    )
    return policies


def repository_egress(repository: str) -> dict[str, Any]:
    """The repository's endpoint: its port on every public address, or the address it names.

    A NetworkPolicy cannot name a host; S3's addresses change. The private ranges stay closed (the
    cluster, the cloud's metadata service) unless the URL names a private address itself."""
    url = urlsplit(repository.split(":", 1)[1]) if repository.startswith("s3:") else urlsplit(repository)
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        address = ipaddress.ip_address(url.hostname or "")
    except ValueError:
        block: dict[str, Any] = {
            "cidr": "0.0.0.0/0",
            "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"],
        }
    else:
        block = {"cidr": f"{address}/{address.max_prefixlen}"}
    return {"to": [{"ipBlock": block}], "ports": [{"port": port, "protocol": "TCP"}]}


def backup_objects(stack: Stack, uses: SecretUses | None = None) -> list[Object]:
    """Everything scheduled backups need in the cluster: their CronJobs, the spec they read, their
    ServiceAccount and network access."""
    jobs = backup_cronjobs(stack, uses)
    if not jobs:
        return []
    return [
        *jobs,
        spec_config_map(stack),
        backup_service_account(stack),
        *backup_network_policies(stack),
    ]


def _secret_env(reference: SecretRef | str, uses: SecretUses) -> list[dict[str, Any]]:
    if isinstance(reference, SecretRef):
        return [{"name": reference.env_name, "valueFrom": uses.ref(reference)}]
    match = ENV_REFERENCE.fullmatch(reference.strip())
    if match is None:  # the spec's model admits only the two forms
        return []
    return [{"name": match[1], "valueFrom": uses.runtime(match[1])}]


def _unique(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variable once: two references may name one Secret key."""
    seen: set[str] = set()
    unique = []
    for variable in env:
        if variable["name"] not in seen:
            seen.add(variable["name"])
            unique.append(variable)
    return unique
