"""Scheduled backups as Kubernetes CronJobs: one per entry of the spec's `backup.schedules`.

Each runs the job entry point on the schedule's ops request, given inline:
`python -m shipyard.jobs --request '{"kind":"backup","what":"full"}' --env <environment>`, in
`backup.image` (which must hold the spec at `$SHIPYARD_SPEC`, or `shipyard.yaml` in its working
directory), never two at once (`concurrencyPolicy: Forbid`), on the schedule read in UTC as
`shipyard serve`'s scheduler reads it. Secrets reach the job as environment variables read from
Kubernetes Secrets, under the names shipyard resolves references from where it runs:
`${env:NAME}` as NAME (from the stack's runtime Secret), `{secretRef: name/key}` as NAME_KEY
(`SecretRef.env_name`). Values are never rendered.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import RenderError
from ..spec import BACKUP_WHATS, ENV_REFERENCE, Postgres, SecretRef, Stack
from ._common import (
    COMPONENT_LABEL,
    PART_OF_LABEL,
    Object,
    container_security,
    empty_dir,
    labels,
    metadata,
    pod_security,
    selector,
)
from ._datastores import CACHE, PRIMARY
from ._env import SecretUses, postgres_password

BACKUP_COMPONENT = "backup"
STARTING_DEADLINE_S = 600
"""A job that could not start within ten minutes of its time (controller down, no room) is
skipped, not started late on top of the next one."""
BACKOFF_LIMIT = 1
"""A failed backup is retried once; a second failure waits for the next schedule (and alerts)."""


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


def backup_cronjobs(stack: Stack, uses: SecretUses | None = None) -> list[Object]:
    """One CronJob per `backup.schedules` entry; the Secret keys they read are recorded in `uses`."""
    backup = stack.backup
    if backup is None or not backup.schedules:
        return []
    uses = uses if uses is not None else SecretUses(stack)
    env = _unique([*_secret_env(backup.password, uses), *_source_env(stack, uses)])
    env += [{"name": "HOME", "value": "/tmp"}, {"name": "XDG_CACHE_HOME", "value": "/tmp/cache"}]
    jobs = []
    for kind, schedule in sorted(backup.schedules.items()):
        name = f"backup-{kind}"
        container: dict[str, Any] = {
            "name": "backup",
            "image": backup.image,
            "command": job_command(scheduled_request(kind), stack.environment),
            "env": env,
            "securityContext": container_security(),
            # The root filesystem is read-only: restic's cache and temporary files go here.
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }
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
                            "template": {
                                "metadata": {"labels": labels(stack, name, BACKUP_COMPONENT)},
                                "spec": {
                                    "automountServiceAccountToken": False,
                                    "restartPolicy": "Never",
                                    "securityContext": pod_security(),
                                    "containers": [container],
                                    "volumes": [empty_dir("tmp")],
                                },
                            },
                        }
                    },
                },
            }
        )
    return jobs


def backup_network_policies(stack: Stack) -> list[Object]:
    """Admit the backup jobs' pods to the datastores they back up (ingress is denied by default)."""
    backup = stack.backup
    if backup is None or not backup.schedules:
        return []
    policies = []
    for name in sorted(set(backup.sources.datastores)):
        store = stack.datastores.get(name)
        if store is None:
            continue
        component = PRIMARY if isinstance(store, Postgres) else CACHE
        policies.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": metadata(stack, f"allow-backup-to-{name}", component),
                "spec": {
                    "podSelector": {"matchLabels": selector(stack, name, component)},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [
                                {
                                    "podSelector": {
                                        "matchLabels": {
                                            COMPONENT_LABEL: BACKUP_COMPONENT,
                                            PART_OF_LABEL: stack.name,
                                        }
                                    }
                                }
                            ],
                            "ports": [{"port": store.port, "protocol": "TCP"}],
                        }
                    ],
                },
            }
        )
    return policies


def backup_objects(stack: Stack, uses: SecretUses | None = None) -> list[Object]:
    """Everything scheduled backups need in the cluster: their CronJobs and network access."""
    return [*backup_cronjobs(stack, uses), *backup_network_policies(stack)]


def _secret_env(reference: SecretRef | str, uses: SecretUses) -> list[dict[str, Any]]:
    if isinstance(reference, SecretRef):
        return [{"name": reference.env_name, "valueFrom": uses.ref(reference)}]
    match = ENV_REFERENCE.fullmatch(reference.strip())
    if match is None:  # the spec's model admits only the two forms
        return []
    return [{"name": match[1], "valueFrom": uses.runtime(match[1])}]


def _source_env(stack: Stack, uses: SecretUses) -> list[dict[str, Any]]:
    """The passwords of the datastores the backups read, under the names shipyard resolves."""
    assert stack.backup is not None
    env: list[dict[str, Any]] = []
    for name in sorted(set(stack.backup.sources.datastores)):
        store = stack.datastores.get(name)
        if isinstance(store, Postgres):
            env += _secret_env(postgres_password(name, store), uses)
        elif store is not None and store.password is not None:
            env += _secret_env(store.password, uses)
    return env


def _unique(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variable once: two references may name one Secret key."""
    seen: set[str] = set()
    unique = []
    for variable in env:
        if variable["name"] not in seen:
            seen.add(variable["name"])
            unique.append(variable)
    return unique
