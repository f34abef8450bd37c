"""The backup CronJobs' own command lines, run on this machine as their pods would run them.

A small stack in the style of examples/salespot (PostgreSQL, Redis with a password, one file
volume, an S3 repository on moto's server) is rendered for Kubernetes. Each rendered CronJob's
container `command` is run exactly as rendered, with exactly its `env`, where:
- each `secretKeyRef` is filled from this test's Secrets (as the kubelet would);
- the in-cluster host names of the datastores (`db`, `cache`, from `cluster_host`) resolve to
  loopback through nss_wrapper (`LD_PRELOAD=libnss_wrapper.so`, `NSS_WRAPPER_HOSTS`): the real
  PostgreSQL and Redis listen there on the datastores' Service ports;
- the pod's mounts are directories of a temp dir: `/tmp` (the emptyDir), the spec ConfigMap's
  file at `$SHIPYARD_SPEC`, and the volume's claim under `$SHIPYARD_BACKUP_VOLUMES`.
The sets they take are then listed from the state store, complete with the right artefacts, and
the rendered `verify` CronJob's command restores the newest into scratch servers.

What this does not prove: the image (not built here), the kubelet, DNS and NetworkPolicies.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.backup import start_scratch_postgres
from shipyard.backup._manifest import FilesArtefact
from shipyard.backup._sets import list_sets
from shipyard.backup._sources import tree_digest
from shipyard.render._backups import SPEC_ENV, VOLUMES_ENV, backup_objects
from shipyard.render._common import cluster_host
from shipyard.spec import Stack, load_spec_text
from shipyard.state import open_engine, session_factory
from support.backup_stack import BackupStack, seed
from support.redis import redis_server
from support.s3 import S3Server, s3_server
from support.servers import Postgres, free_port

pytestmark = pytest.mark.integration

NSS_WRAPPER = "libnss_wrapper.so"
REDIS_PASSWORD = "redis-secret-4711"
RESTIC_PASSWORD = "correct horse battery staple"

SPEC = """\
name: shop
services:
  web:
    role: web
    image: shop/web:1.0.0
    port: {web_port}
    volumes:
      uploads: {{size: 1Gi, mount: /srv/uploads}}
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    database: app
    user: {pg_user}
    port: {pg_port}
    password: {{secretRef: db-credentials/password}}
    local: {{port: {dead_port}}}
  cache:
    kind: redis
    port: {redis_port}
    password: {{secretRef: cache-auth/password}}
    local: {{port: {dead_port}}}
backup:
  repository: {repository}
  password: {{secretRef: shop-backup/restic-password}}
  credentials:
    access_key_id: {{secretRef: shop-backup-s3/access-key-id}}
    secret_access_key: {{secretRef: shop-backup-s3/secret-access-key}}
    region: us-east-1
  state_store: {{secretRef: shipyard-state/url}}
  schedules:
    full: "0 2 * * *"
    database: "*/5 * * * *"
    files: "0 * * * *"
    redis: "*/30 * * * *"
    verify: "30 3 * * *"
  sources: {{datastores: [db, cache], volumes: [web/uploads]}}
  checks: ["SELECT count(*) FROM items WHERE price > 0"]
environments:
  production: {{}}
images: {{environments: []}}  # backups, not which images production may run
"""


@contextlib.contextmanager
def live_stack() -> Iterator[BackupStack]:
    """PostgreSQL and Redis (with a password) seeded with data, and a files directory."""
    base = Path(tempfile.mkdtemp(prefix="shipyard-cluster-cronjobs-"))
    server = start_scratch_postgres()
    try:
        with redis_server(password=REDIS_PASSWORD) as redis:
            pg = Postgres(port=server.port, datadir=server.data_dir, user=server.user)
            files = base / "files"
            files.mkdir()
            stack = BackupStack(base=base, postgres=pg, redis=redis, files=files)
            seed(stack)
            yield stack
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def cluster_stack(live: BackupStack, s3: S3Server) -> Stack:
    text = SPEC.format(
        web_port=free_port(),
        pg_user=live.postgres.user,
        pg_port=live.postgres.port,
        redis_port=live.redis.port,
        # Nothing listens at the plain-host addresses: a job that used them would fail.
        dead_port=free_port(),
        repository=s3.restic_url("shop/restic"),
    )
    return load_spec_text(text, "shipyard.yaml").stack("production")


class Pod:
    """What the kubelet would give a backup pod, on this machine."""

    def __init__(self, stack: Stack, base: Path, secrets: dict[tuple[str, str], str]) -> None:
        self.objects = backup_objects(stack)
        self.base = base
        self.secrets = secrets
        self.volumes = base / "volumes"  # where the claims are mounted
        [config_map] = [o for o in self.objects if o["kind"] == "ConfigMap"]
        self.spec = base / "config" / "shipyard.yaml"  # the ConfigMap's mount
        self.spec.parent.mkdir()
        self.spec.write_text(config_map["data"]["shipyard.yaml"])
        hosts = base / "hosts"
        names = " ".join(cluster_host(stack, name, direct=True) for name in stack.datastores)
        hosts.write_text(f"127.0.0.1 {names}\n")
        self.hosts = hosts

    def cronjob(self, kind: str) -> dict[str, Any]:
        [job] = [
            o for o in self.objects if o["kind"] == "CronJob" and o["metadata"]["name"] == f"backup-{kind}"
        ]
        return job

    def container(self, kind: str) -> dict[str, Any]:
        [container] = self.cronjob(kind)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        return container

    def environment(self, container: dict[str, Any], tmp: Path) -> dict[str, str]:
        env: dict[str, str] = {}
        for variable in container["env"]:
            if "valueFrom" in variable:
                ref = variable["valueFrom"]["secretKeyRef"]
                env[variable["name"]] = self.secrets[(ref["name"], ref["key"])]
                continue
            value = variable["value"]
            if variable["name"] == SPEC_ENV:
                value = str(self.spec)
            elif variable["name"] == VOLUMES_ENV:
                value = str(self.volumes)
            elif value == "/tmp" or value.startswith("/tmp/"):
                value = str(tmp) + value.removeprefix("/tmp")
            env[variable["name"]] = value
        # The image's PATH (its python has shipyard installed, as the venv's does here), and the
        # host names of the cluster mapped to loopback.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
        image = {"PATH": path, "LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_HOSTS": str(self.hosts)}
        if "PYTHONPATH" in os.environ:  # the code under test, when the test runs another tree's
            image["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return {**env, **image}

    def start(self, kind: str) -> subprocess.Popen[str]:
        """The CronJob's container, started as its pod would start it (each pod its own /tmp)."""
        container = self.container(kind)
        tmp = self.base / f"pod-{kind}" / "tmp"  # the pod's emptyDir at /tmp
        tmp.mkdir(parents=True)
        return subprocess.Popen(
            container["command"],
            env=self.environment(container, tmp),
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def finish(kind: str, process: subprocess.Popen[str]) -> None:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, f"backup-{kind} exited {process.returncode}:\n{stderr}{stdout}"


def test_each_rendered_backup_cronjob_command_takes_a_complete_restorable_set() -> None:
    assert list(Path("/usr/lib").glob(f"*/{NSS_WRAPPER}")), (
        "nss_wrapper is missing: install Debian's libnss-wrapper (scripts/install-system.sh)"
    )
    with s3_server() as s3, live_stack() as live:
        stack = cluster_stack(live, s3)
        state = live.base / "state.db"
        secrets = {
            ("db-credentials", "password"): "unused-under-trust",
            ("cache-auth", "password"): REDIS_PASSWORD,
            ("shop-backup", "restic-password"): RESTIC_PASSWORD,
            ("shop-backup-s3", "access-key-id"): s3.access_key_id,
            ("shop-backup-s3", "secret-access-key"): s3.secret_access_key,
            ("shipyard-state", "url"): f"sqlite:///{state}",
        }
        pod = Pod(stack, live.base, secrets)
        # The volume's claim, mounted where the CronJob mounts it (the seeded files, as they are).
        shutil.copytree(live.files, pod.volumes / "web" / "uploads", symlinks=True)

        # Each job's command exactly as rendered; the host names are the cluster's, not loopback's.
        assert pod.container("database")["command"][:4] == ["python", "-m", "shipyard.jobs", "--request"]
        assert {cluster_host(stack, "db"), cluster_host(stack, "cache")} == {"db", "cache"}
        # The state store exists already (the server made it). The full set goes last: it is the
        # newest, the one the verify job picks.
        open_engine(f"sqlite:///{state}").dispose()
        started = time.monotonic()
        for kind in ("database", "files", "redis", "full"):
            finish(kind, pod.start(kind))
        print(f"backup jobs: {time.monotonic() - started:.1f} s")

        listed = subprocess.run(
            [str(Path(sys.executable).with_name("shipyard")), "backup", "list", "-o", "json"],
            env={**os.environ, "SHIPYARD_DATABASE_URL": f"sqlite:///{state}"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        sets = {s["kind"]: s for s in json.loads(listed.stdout)}
        assert sorted(sets) == ["database", "files", "full", "redis"]
        assert {s["state"] for s in sets.values()} == {"complete"}
        expected = {
            "database": ["postgres:db"],
            "files": ["files:web/uploads"],
            "redis": ["redis:cache"],
            "full": ["files:web/uploads", "postgres:db", "redis:cache"],
        }
        recorded = {s.kind: s for s in list_sets(session_factory(open_engine(f"sqlite:///{state}")))}
        for kind, names in expected.items():
            assert sorted(a.name for a in recorded[kind].artefacts) == names, kind
            assert recorded[kind].actor == f"schedule:backup-{kind}"
        [files] = [a for a in recorded["full"].artefacts if isinstance(a, FilesArtefact)]
        assert files.path == str(pod.volumes / "web" / "uploads"), "read where the claim is mounted"
        assert files.sha256 == tree_digest(live.files).sha256, "the volume's files, as they are"
        assert s3.list_keys("shop/restic/snapshots/"), "the copies went to S3"

        # The verify CronJob restores the newest set (the full one) into scratch servers.
        started = time.monotonic()
        finish("verify", pod.start("verify"))
        print(f"backup-verify: {time.monotonic() - started:.1f} s")
        again = subprocess.run(
            [
                str(Path(sys.executable).with_name("shipyard")),
                "backup",
                "show",
                sets["full"]["id"],
                "-o",
                "json",
            ],
            env={**os.environ, "SHIPYARD_DATABASE_URL": f"sqlite:///{state}"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(again.stdout)["state"] == "verified"
        # No secret reached the rendered objects or the set's record.
        rendered = json.dumps(pod.objects) + again.stdout
        for value in (REDIS_PASSWORD, RESTIC_PASSWORD, s3.secret_access_key):
            assert value not in rendered
