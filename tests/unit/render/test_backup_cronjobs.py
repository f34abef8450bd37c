"""Scheduled backups as CronJobs: one per schedule, never overlapping, secrets by reference only,
reaching the in-cluster datastores and the volumes' claims, in a pinned image with its own
ServiceAccount, resources and egress; and `validate` refusing a schedule that cannot run."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, get_args

import pytest
from pydantic import TypeAdapter

import shipyard
from shipyard.errors import RenderError, SpecError
from shipyard.jobs._runner import SPEC_ENV
from shipyard.ops._backups import TakeBackup, TakePitrBackup, Verify
from shipyard.render import build_manifests, supported_versions, validate_objects
from shipyard.render._backups import (
    BACKUP_UID,
    SERVICE_ACCOUNT,
    STARTING_DEADLINE_S,
    VOLUMES_ROOT,
    backup_cronjobs,
    backup_network_policies,
    backup_objects,
    scheduled_request,
    spec_document,
    volume_path,
)
from shipyard.render._env import SecretUses, runtime_secret
from shipyard.spec import Backup, Spec, load_spec, load_spec_text
from unit.render.render_helpers import ROOT, by_kind, spec_from

SMALL = """
    name: shop
    services:
      web: {role: web, image: "shop/web:1", port: 8080, depends_on: [db]}
    datastores:
      db: {kind: postgresql, version: "15", storage: {size: 1Gi}}
      cache: {kind: redis, version: "7", password: {secretRef: cache-auth/password}}
    backup:
      repository: s3:https://s3.example.com/shop-backups
      password: "${env:RESTIC_PASSWORD}"
      image: "shop/shipyard:2.0"
      schedules: {full: "0 2 * * *", redis: "*/30 * * * *"}
      sources: {datastores: [db, cache]}
"""

WITH_VOLUMES = """
    name: shop
    services:
      web:
        role: web
        image: "shop/web:1"
        port: 8080
        fs_group: 2000
        volumes:
          uploads: {size: 1Gi, mount: /srv/uploads}
          shared: {size: 1Gi, mount: /srv/shared, access_mode: ReadWriteMany}
    datastores:
      db: {kind: postgresql, storage: {size: 1Gi}}
    backup:
      repository: s3:http://10.1.2.3:9000/backups
      password: "${env:RESTIC_PASSWORD}"
      credentials:
        access_key_id: {secretRef: backup-s3/access-key-id}
        secret_access_key: {secretRef: backup-s3/secret-access-key}
      state_store: {secretRef: shipyard-state/url}
      resources: {limits: {memory: 2Gi}}
      schedules: {files: "0 * * * *", database: "*/5 * * * *", verify: "0 4 * * *"}
      sources: {datastores: [db], volumes: [web/uploads, web/shared]}
    environments:
      production: {}
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
        # Pinned to the running shipyard's version: never `latest` (checkov CKV_K8S_14).
        assert container(job)["image"] == f"shipyard/shipyard:{shipyard.__version__}"
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
    plain = {var["name"]: var["value"] for var in container(job)["env"] if "value" in var}
    assert plain == {
        "SHIPYARD_TARGET": "kubernetes",
        SPEC_ENV: "/etc/shipyard/shipyard.yaml",
        "SHIPYARD_STATE_DIR": "/tmp/shipyard",
        "SHIPYARD_ACTOR": "schedule:backup-full",
        "HOME": "/tmp",
        "XDG_CACHE_HOME": "/tmp/cache",
    }
    # No volume is backed up: no volume root, and no claim mounted.
    assert "SHIPYARD_BACKUP_VOLUMES" not in plain


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
    assert sorted(jobs) == ["backup-full", "backup-redis"]
    env = env_of(jobs["backup-full"])
    runtime = runtime_secret(stack)
    assert env["RESTIC_PASSWORD"] == {"secretKeyRef": {"name": runtime, "key": "RESTIC_PASSWORD"}}
    assert env["CACHE_AUTH_PASSWORD"] == {"secretKeyRef": {"name": "cache-auth", "key": "password"}}
    # The default PostgreSQL credentials Secret, under the name the CLI resolves it from.
    assert env["DB_CREDENTIALS_PASSWORD"] == {"secretKeyRef": {"name": "db-credentials", "key": "password"}}
    assert container(jobs["backup-full"])["image"] == "shop/shipyard:2.0"
    # Each job reads only the secrets of what it backs up: the Redis job no PostgreSQL password.
    assert "DB_CREDENTIALS_PASSWORD" not in env_of(jobs["backup-redis"])
    assert "CACHE_AUTH_PASSWORD" in env_of(jobs["backup-redis"])


def test_the_pods_meet_the_restricted_standard_with_a_writable_tmp(apricode: Spec) -> None:
    job = by_kind(backup_cronjobs(apricode.stack("production")), "CronJob")["backup-full"]
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container(job)["securityContext"]["readOnlyRootFilesystem"] is True
    assert container(job)["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "spec", "mountPath": "/etc/shipyard", "readOnly": True},
    ]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    # The image's numeric user (the Dockerfile's USER), so runAsNonRoot can be checked.
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        BACKUP_UID,
        BACKUP_UID,
    )


def test_no_backup_section_or_no_schedules_render_nothing(apricode: Spec) -> None:
    assert backup_objects(apricode.stack("dev")) == []  # `backup: ~` in dev
    text = SMALL.replace('schedules: {full: "0 2 * * *", redis: "*/30 * * * *"}', "schedules: {}")
    spec = spec_from(text)
    assert backup_objects(spec.stack(spec.environments[0])) == []


def test_backup_pods_are_admitted_to_the_datastores_they_read(apricode: Spec) -> None:
    stack = apricode.stack("production")
    policies = by_kind(backup_network_policies(stack), "NetworkPolicy")
    assert sorted(policies) == ["allow-backup-to-postgres", "allow-backup-to-redis", "backup-egress"]
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


# --- issue 13: backups that run in the cluster ------------------------------------------------------


def stack_of(text: str, environment: str | None = None) -> Any:
    spec = spec_from(text)
    return spec.stack(environment or spec.environments[0])


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def test_the_jobs_have_resources_a_ttl_and_their_own_service_account_without_a_token(apricode: Spec) -> None:
    stack = apricode.stack("production")
    objects = backup_objects(stack)
    [account] = by_kind(objects, "ServiceAccount").values()
    assert account["metadata"]["name"] == SERVICE_ACCOUNT
    assert account["automountServiceAccountToken"] is False
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding", "ClusterRoleBinding")]
    for job in by_kind(objects, "CronJob").values():
        assert pod_of(job)["serviceAccountName"] == SERVICE_ACCOUNT
        assert job["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] > 0
        # checkov CKV_K8S_10..13: every request and limit.
        assert container(job)["resources"] == {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        }
    # An amount the spec gives wins; the others stay the defaults.
    job = by_kind(backup_cronjobs(stack_of(WITH_VOLUMES)), "CronJob")["backup-files"]
    assert container(job)["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}


def test_the_spec_reaches_the_job_as_a_config_map_that_loads_back_as_the_same_stack(apricode: Spec) -> None:
    for spec in (apricode, load_spec(ROOT / "examples" / "salespot" / "shipyard.yaml")):
        for environment in spec.environments:
            stack = spec.stack(environment)
            if stack.backup is None or not stack.backup.schedules:
                continue
            [config] = [o for o in backup_objects(stack) if o["kind"] == "ConfigMap"]
            text = config["data"]["shipyard.yaml"]
            assert text == spec_document(stack)
            loaded = load_spec_text(text, "configmap.yaml")
            assert loaded.environments == (environment,)
            assert loaded.stack(environment) == stack.model_copy(update={"flags": []})
            job = by_kind(backup_cronjobs(stack), "CronJob")["backup-full"]
            assert {"name": "spec", "configMap": {"name": config["metadata"]["name"]}} in pod_of(job)[
                "volumes"
            ]


def test_file_volumes_are_mounted_read_only_and_a_read_write_once_claim_pins_the_pod_to_its_node() -> None:
    stack = stack_of(WITH_VOLUMES)
    jobs = by_kind(backup_cronjobs(stack), "CronJob")
    files = jobs["backup-files"]
    pod = pod_of(files)
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    assert sorted(claims) == ["web-shared", "web-uploads"]
    assert all(v["persistentVolumeClaim"]["readOnly"] is True for v in claims.values())
    mounts = {m["mountPath"]: m for m in container(files)["volumeMounts"]}
    for volume in ("web/uploads", "web/shared"):
        assert mounts[volume_path(VOLUMES_ROOT, volume)]["readOnly"] is True
    assert env_of(files)["SHIPYARD_BACKUP_VOLUMES"] == VOLUMES_ROOT
    # web/uploads is ReadWriteOnce: attached to the node of web's pod, so the backup runs there.
    [term] = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == "web"
    # The app's files are group-readable through its fs_group.
    assert pod["securityContext"]["supplementalGroups"] == [2000]
    # A database job mounts no claim and goes anywhere.
    assert "affinity" not in pod_of(jobs["backup-database"])
    assert not [v for v in pod_of(jobs["backup-database"])["volumes"] if "persistentVolumeClaim" in v]


def test_the_state_store_and_s3_keys_come_from_their_secret_references() -> None:
    stack = stack_of(WITH_VOLUMES)
    jobs = by_kind(backup_cronjobs(stack), "CronJob")
    env = env_of(jobs["backup-database"])
    assert env["SHIPYARD_DATABASE_URL"] == {"secretKeyRef": {"name": "shipyard-state", "key": "url"}}
    assert env["BACKUP_S3_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "backup-s3", "key": "access-key-id"}}
    assert env["BACKUP_S3_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "backup-s3", "key": "secret-access-key"}
    }
    # With a state store the verify job finds the sets there: no import first.
    assert "initContainers" not in pod_of(jobs["backup-verify"])


def test_without_a_state_store_verify_first_imports_the_repositorys_sets(apricode: Spec) -> None:
    # Without the control plane, whose state store the jobs would share.
    stack = apricode.stack("production").model_copy(update={"control_plane": None})
    pod = pod_of(by_kind(backup_cronjobs(stack), "CronJob")["backup-verify"])
    [init] = pod["initContainers"]
    assert init["command"] == [
        "shipyard",
        "backup",
        "import",
        "-f",
        "/etc/shipyard/shipyard.yaml",
        "-e",
        "production",
    ]
    assert init["env"] == container(by_kind(backup_cronjobs(stack), "CronJob")["backup-verify"])["env"]


def test_backup_pods_may_reach_only_dns_their_datastores_and_the_repository() -> None:
    stack = stack_of(WITH_VOLUMES)
    policies = by_kind(backup_network_policies(stack), "NetworkPolicy")
    egress = policies["backup-egress"]["spec"]
    assert egress["policyTypes"] == ["Egress"]
    assert egress["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/component": "backup",
        "app.kubernetes.io/part-of": "shop",
    }
    dns, database, repository = egress["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert database["ports"] == [{"port": 5432, "protocol": "TCP"}]
    assert database["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "db"
    # The repository's endpoint names a private address: that address only, on its port.
    assert repository == {
        "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
        "ports": [{"port": 9000, "protocol": "TCP"}],
    }
    public = stack_of(SMALL)
    [rule] = [
        r
        for r in by_kind(backup_network_policies(public), "NetworkPolicy")["backup-egress"]["spec"]["egress"]
        if "ipBlock" in r["to"][0]
    ]
    assert rule["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert "169.254.0.0/16" in rule["to"][0]["ipBlock"]["except"], "never the cloud's metadata service"


def test_what_no_cronjob_can_run_is_refused_when_rendering_for_the_cluster() -> None:
    incremental = WITH_VOLUMES.replace(
        'verify: "0 4 * * *"}', 'verify: "0 4 * * *", incremental: "*/15 * * * *"}'
    ).replace("    environments:", "      pitr: {repository: /var/lib/pgbackrest}\n    environments:")
    incremental = incremental.replace(
        "db: {kind: postgresql, storage: {size: 1Gi}}",
        "db: {kind: postgresql, storage: {size: 1Gi}, local: {data_dir: /var/lib/postgresql/15/main}}",
    )
    with pytest.raises(RenderError, match=r"backup.schedules.incremental.*data\s+directory.*cloudnative-pg"):
        backup_cronjobs(stack_of(incremental))
    local = SMALL.replace("s3:https://s3.example.com/shop-backups", "/var/backups/shop")
    with pytest.raises(RenderError, match=r"backup.repository.*S3 URL"):
        backup_cronjobs(stack_of(local))


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as raised:
        spec_from(text)
    return [f"{i.file}:{i.line}: {i.path}: {i.message}" for i in raised.value.issues]


def test_validate_refuses_an_unpinned_backup_image_naming_the_field() -> None:
    for image in ('"shop/shipyard:latest"', '"shop/shipyard"', '"registry:5000/shipyard"'):
        [problem] = problems(SMALL.replace('"shop/shipyard:2.0"', image))
        assert problem.startswith("test.yaml:11: backup.image: ")
        assert "pin" in problem
    pinned = SMALL.replace('"shop/shipyard:2.0"', '"registry:5000/shipyard@sha256:' + "a" * 64 + '"')
    assert stack_of(pinned).backup.image.endswith("a" * 64)


@pytest.mark.parametrize(
    ("schedules", "sources", "message"),
    [
        ('{incremental: "*/15 * * * *"}', "{datastores: [db]}", "needs backup.pitr"),
        ('{files: "0 * * * *"}', "{datastores: [db]}", "needs a volume in backup.sources.volumes"),
        ('{redis: "0 * * * *"}', "{datastores: [db]}", "needs a Redis datastore"),
        ('{database: "0 * * * *"}', "{datastores: [cache]}", "needs a PostgreSQL datastore"),
        ('{full: "0 * * * *"}', "{}", "needs a datastore or volume"),
    ],
)
def test_validate_refuses_a_schedule_that_would_fail_every_run_at_its_line(
    schedules: str, sources: str, message: str
) -> None:
    text = SMALL.replace('{full: "0 2 * * *", redis: "*/30 * * * *"}', schedules).replace(
        "{datastores: [db, cache]}", sources
    )
    [problem] = problems(text)
    kind = schedules.split(":", maxsplit=1)[0].strip("{")
    assert problem.startswith(f"test.yaml:12: backup.schedules.{kind}: ")
    assert message in problem


def test_validate_refuses_an_incremental_without_the_data_directory_and_volumes_no_pod_can_mount() -> None:
    text = SMALL.replace('{full: "0 2 * * *", redis: "*/30 * * * *"}', '{incremental: "*/15 * * * *"}')
    text = text.replace("      sources:", "      pitr: {repository: /var/lib/pgbackrest}\n      sources:")
    [problem] = problems(text)
    assert "backup.schedules.incremental" in problem
    assert "datastores.db.local.data_dir" in problem
    two_services = WITH_VOLUMES.replace(
        "    datastores:",
        "      api:\n        role: api\n        image: shop/api:1\n        port: 8081\n"
        "        volumes: {cache: {size: 1Gi, mount: /c}}\n    datastores:",
    ).replace("volumes: [web/uploads, web/shared]", "volumes: [web/uploads, api/cache]")
    [problem] = problems(two_services)
    assert "backup.sources.volumes[1]" in problem
    assert "ReadWriteOnce" in problem
    once_pod = WITH_VOLUMES.replace("access_mode: ReadWriteMany", "access_mode: ReadWriteOncePod")
    [problem] = problems(once_pod)
    assert "backup.sources.volumes[1]" in problem
    assert "ReadWriteOncePod" in problem


def test_the_spec_path_variable_is_the_job_entry_points() -> None:
    from shipyard.render._backups import SPEC_ENV as rendered  # noqa: PLC0415

    assert rendered == SPEC_ENV


@pytest.mark.parametrize("example", ["apricode", "normaldance", "salespot"])
def test_every_example_renders_its_backups_for_every_environment(example: str) -> None:
    spec = load_spec(ROOT / "examples" / example / "shipyard.yaml")
    for environment in spec.environments:
        objects = backup_objects(spec.stack(environment))
        validate_objects(objects)
        for job in by_kind(objects, "CronJob").values():
            assert not container(job)["image"].endswith(":latest")
