"""Scheduled backups as CronJobs: one per schedule, never overlapping, secrets by reference only."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, get_args

import pytest
from pydantic import TypeAdapter

from shipyard.ops._backups import TakeBackup, TakePitrBackup, Verify
from shipyard.render import build_manifests, supported_versions, validate_objects
from shipyard.render._backups import (
    STARTING_DEADLINE_S,
    backup_cronjobs,
    backup_network_policies,
    backup_objects,
    scheduled_request,
)
from shipyard.render._env import SecretUses, runtime_secret
from shipyard.spec import Backup, Spec
from unit.render.render_helpers import by_kind, spec_from

SMALL = """
    name: shop
    services:
      web: {role: web, image: "shop/web:1", port: 8080, depends_on: [db]}
    datastores:
      db: {kind: postgresql, version: "15", storage: {size: 1Gi}}
      cache: {kind: redis, version: "7", password: {secretRef: cache-auth/password}}
    backup:
      repository: /var/backups/shop
      password: "${env:RESTIC_PASSWORD}"
      image: "shop/shipyard:2.0"
      schedules: {full: "0 2 * * *", incremental: "*/30 * * * *"}
      sources: {datastores: [db, cache]}
"""


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    [only] = containers
    return only


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var.get("valueFrom", var.get("value")) for var in container(job)["env"]}


def test_one_cronjob_per_schedule_running_its_request_through_the_job_entry_point(apricode: Spec) -> None:
    stack = apricode.stack("production")
    jobs = by_kind(backup_cronjobs(stack), "CronJob")
    assert sorted(jobs) == ["backup-database", "backup-full", "backup-verify"]
    assert jobs["backup-full"]["spec"]["schedule"] == "0 2 * * *"
    assert jobs["backup-verify"]["spec"]["schedule"] == "0 5 * * 0"
    run = ["python", "-m", "shipyard.jobs", "--request"]
    production = ["--env", "production"]
    assert container(jobs["backup-full"])["command"] == [*run, '{"kind":"backup","what":"full"}', *production]
    assert container(jobs["backup-database"])["command"] == [
        *run,
        '{"kind":"backup","what":"database"}',
        *production,
    ]
    # No set named: the newest restorable one, as `shipyard backup verify --latest`.
    assert container(jobs["backup-verify"])["command"] == [*run, '{"kind":"verify"}', *production]
    for job in jobs.values():
        spec = job["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] == STARTING_DEADLINE_S
        assert spec["timeZone"] == "Etc/UTC", "read in UTC, as `shipyard serve` reads schedules"
        assert container(job)["image"] == "shipyard/shipyard:latest"
        assert job["metadata"]["namespace"] == "production"


def test_secrets_reach_the_job_as_secret_key_refs_under_the_names_the_cli_reads(apricode: Spec) -> None:
    stack = apricode.stack("production")
    uses = SecretUses(stack)
    job = by_kind(backup_cronjobs(stack, uses), "CronJob")["backup-full"]
    env = env_of(job)
    # {secretRef: apricode-backup/restic-password} is read from APRICODE_BACKUP_RESTIC_PASSWORD.
    assert env["APRICODE_BACKUP_RESTIC_PASSWORD"] == {
        "secretKeyRef": {"name": "apricode-backup", "key": "restic-password"}
    }
    assert env["APRICODE_POSTGRES_PASSWORD"] == {
        "secretKeyRef": {"name": "apricode-postgres", "key": "password"}
    }
    assert uses.keys["apricode-backup"] == {"restic-password"}
    assert uses.stores["apricode-backup"] == "vault", "fetched by an ExternalSecret like the others"
    plain = {var["name"] for var in container(job)["env"] if "value" in var}
    assert plain == {"HOME", "XDG_CACHE_HOME"}


SCHEDULE_KEYS = get_args(Backup.model_fields["schedules"].annotation)[0]
REQUESTS: TypeAdapter[TakeBackup | TakePitrBackup | Verify] = TypeAdapter(
    TakeBackup | TakePitrBackup | Verify
)


@pytest.mark.parametrize("key", get_args(SCHEDULE_KEYS))
def test_every_schedule_key_runs_a_request_that_validates_as_its_ops_request(key: str) -> None:
    request = REQUESTS.validate_python(scheduled_request(key))
    expected = {"verify": Verify(), "incremental": TakePitrBackup(what="incr")}.get(key)
    assert request == (expected or TakeBackup(what=key))  # type: ignore[arg-type]
    # The JSON on the command line is the request itself: nothing added, nothing lost.
    assert REQUESTS.validate_json(json.dumps(scheduled_request(key))) == request


def test_env_references_come_from_the_runtime_secret() -> None:
    stack = spec_from(SMALL).stack(spec_from(SMALL).environments[0])
    jobs = by_kind(backup_cronjobs(stack), "CronJob")
    assert sorted(jobs) == ["backup-full", "backup-incremental"]
    assert container(jobs["backup-incremental"])["command"][4] == '{"kind":"pitr-backup","what":"incr"}'
    env = env_of(jobs["backup-incremental"])
    runtime = runtime_secret(stack)
    assert env["RESTIC_PASSWORD"] == {"secretKeyRef": {"name": runtime, "key": "RESTIC_PASSWORD"}}
    assert env["CACHE_AUTH_PASSWORD"] == {"secretKeyRef": {"name": "cache-auth", "key": "password"}}
    # The default PostgreSQL credentials Secret, under the name the CLI resolves it from.
    assert env["DB_CREDENTIALS_PASSWORD"] == {"secretKeyRef": {"name": "db-credentials", "key": "password"}}
    assert container(jobs["backup-full"])["image"] == "shop/shipyard:2.0"


def test_the_pods_meet_the_restricted_standard_with_a_writable_tmp(apricode: Spec) -> None:
    job = by_kind(backup_cronjobs(apricode.stack("production")), "CronJob")["backup-full"]
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container(job)["securityContext"]["readOnlyRootFilesystem"] is True
    assert container(job)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_no_backup_section_or_no_schedules_render_nothing(apricode: Spec) -> None:
    assert backup_objects(apricode.stack("dev")) == []  # `backup: ~` in dev
    text = SMALL.replace('schedules: {full: "0 2 * * *", incremental: "*/30 * * * *"}', "schedules: {}")
    spec = spec_from(text)
    assert backup_objects(spec.stack(spec.environments[0])) == []


def test_backup_pods_are_admitted_to_the_datastores_they_read(apricode: Spec) -> None:
    stack = apricode.stack("production")
    policies = by_kind(backup_network_policies(stack), "NetworkPolicy")
    assert sorted(policies) == ["allow-backup-to-postgres", "allow-backup-to-redis"]
    postgres = policies["allow-backup-to-postgres"]["spec"]
    assert postgres["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "postgres"
    [rule] = postgres["ingress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    backup_pod_labels = container_labels(by_kind(backup_cronjobs(stack), "CronJob")["backup-full"])
    selected = rule["from"][0]["podSelector"]["matchLabels"]
    assert selected.items() <= backup_pod_labels.items()


def container_labels(job: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("version", [supported_versions()[0], supported_versions()[-1]])
def test_the_objects_pass_the_strict_schemas(apricode: Spec, version: str) -> None:
    stack = apricode.stack("production")
    validate_objects(backup_objects(stack), kube_version=version)
    small = spec_from(SMALL)
    validate_objects(backup_objects(small.stack(small.environments[0])), kube_version=version)


def test_render_kubernetes_includes_them_beside_the_rest(apricode: Spec) -> None:
    stack = apricode.stack("production")
    objects = build_manifests(stack).objects
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names))
    assert {("CronJob", o["metadata"]["name"]) for o in backup_cronjobs(stack)} <= set(names)
    assert all(len(o["metadata"]["name"]) <= 52 for o in backup_cronjobs(stack))
    validate_objects(objects)


def test_rendering_loads_no_database_driver_and_no_backup_code() -> None:
    # A pure planner: `import shipyard.render` must not pull in psycopg or SQLAlchemy through
    # the backup package (the CronJobs' requests are plain data; their models live in ops).
    heavy = ("psycopg", "sqlalchemy", "shipyard.backup", "shipyard.ops")
    code = f"import sys, shipyard.render; print([m for m in sys.modules if m.startswith({heavy!r})])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
