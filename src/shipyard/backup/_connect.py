"""Where each source lives and how to reach it, from the spec; secret references resolved here.

On a plain host a secret reference is resolved from shipyard's environment:
`${env:NAME}` reads NAME; `{secretRef: db-credentials/password}` reads DB_CREDENTIALS_PASSWORD
(name and key upper-cased, every other character `_`), the variable a Kubernetes Secret mounted
as environment would be. Values never appear in a message, an argv or a manifest.

Where the sources are depends on where shipyard runs, told by `$SHIPYARD_TARGET` (a backup
CronJob sets it to `kubernetes`; see render/_backups.py, which defines these variables):
- on a plain host (unset), a datastore is at its `local.host` and `local.port`, and a volume is the
  absolute path the spec gives; `service/volume` names are refused (no pod's claim is mounted);
- in the cluster, a datastore is at `render.cluster_host(stack, name, direct=True)` on its Service
  `port` (direct: pg_dump must reach PostgreSQL itself, not a pooler), and `service/volume` is read
  where the CronJob mounts its claim, `volume_path($SHIPYARD_BACKUP_VOLUMES, volume)`.
A files artefact is named after the volume as the spec writes it (`files:api/uploads`,
`files:/srv/uploads`), wherever it is read from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackupError, UserError
from ..render import KUBERNETES_TARGET, TARGET_ENV, VOLUMES_ENV, VOLUMES_ROOT, cluster_host, volume_path
from ..spec import BACKUP_WHATS, ENV_REFERENCE, Postgres, Redis, SecretRef, Stack


def secret_env_name(reference: SecretRef) -> str:
    """The environment variable a `secretRef` is read from on a plain host (the spec's rule)."""
    return reference.env_name


def resolve_secret(
    reference: SecretRef | str | None, *, field_name: str, environ: Mapping[str, str], required: bool
) -> str | None:
    """The value behind a reference; UserError naming the field and variable when it is unset."""
    if reference is None:
        return None
    if isinstance(reference, SecretRef):
        variable = secret_env_name(reference)
    else:
        match = ENV_REFERENCE.fullmatch(reference.strip())
        if match is None:
            raise UserError(f"{field_name}: expected '${{env:NAME}}' or {{secretRef: name/key}}")
        variable = match[1]
    value = environ.get(variable)
    if value is None and required:
        raise UserError(
            f"{field_name} refers to the environment variable {variable}, which is not set where"
            f" shipyard runs; set {variable} (the value is never written anywhere)"
        )
    return value


@dataclass(frozen=True)
class PostgresSource:
    """A PostgreSQL database to dump: libpq parameters, the password kept out of repr."""

    name: str
    host: str
    port: int
    database: str
    user: str
    password: str | None = field(default=None, repr=False)
    data_dir: str | None = None
    sslmode: str | None = None
    """libpq's sslmode (a managed database's `external.sslmode` in the cluster); libpq's default when None."""

    @property
    def artefact(self) -> str:
        return f"postgres:{self.name}"

    @property
    def env(self) -> dict[str, str]:
        """libpq's environment for the client tools (the password never goes on argv)."""
        env = {"PGCONNECT_TIMEOUT": "10"}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        if self.sslmode is not None:
            env["PGSSLMODE"] = self.sslmode
        return env

    def conninfo(self, database: str | None = None) -> dict[str, object]:
        params: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "dbname": database or self.database,
            "user": self.user,
            "connect_timeout": 10,
        }
        if self.password is not None:
            params["password"] = self.password
        if self.sslmode is not None:
            params["sslmode"] = self.sslmode
        return params

    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.database} as {self.user}"


@dataclass(frozen=True)
class RedisSource:
    name: str
    host: str
    port: int
    password: str | None = field(default=None, repr=False)
    data_dir: str | None = None

    @property
    def artefact(self) -> str:
        return f"redis:{self.name}"

    @property
    def env(self) -> dict[str, str]:
        return {"REDISCLI_AUTH": self.password} if self.password is not None else {}

    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class FilesSource:
    path: Path
    """Where the files are read."""
    volume: str | None = None
    """The volume as the spec names it (`api/uploads`); the path itself when not given."""

    @property
    def artefact(self) -> str:
        return f"files:{self.volume or self.path}"


Source = PostgresSource | RedisSource | FilesSource

KINDS = BACKUP_WHATS


def in_cluster(environ: Mapping[str, str]) -> bool:
    """Whether shipyard runs in the stack's cluster (a backup CronJob's pod)."""
    return environ.get(TARGET_ENV) == KUBERNETES_TARGET


def _covered(stack: Stack, kind: str) -> list[tuple[str, Postgres | Redis | str]]:
    """What a backup of `kind` covers, in order: (datastore name, its spec) or (volume, as written)."""
    if kind not in KINDS:
        raise UserError(f"unknown backup kind {kind!r}; use one of {', '.join(KINDS)}")
    backup = stack.backup
    if backup is None:
        raise UserError(f"stack {stack.name} has no `backup:` section; add one to shipyard.yaml")
    covered: list[tuple[str, Postgres | Redis | str]] = []
    for name in backup.sources.datastores:
        store = stack.datastores[name]
        if (isinstance(store, Postgres) and kind in ("full", "database")) or (
            isinstance(store, Redis) and kind in ("full", "redis")
        ):
            covered.append((name, store))
    if kind in ("full", "files"):
        covered += [(volume, volume) for volume in backup.sources.volumes]
    if not covered:
        wanted = {"database": "PostgreSQL datastore", "redis": "Redis datastore", "files": "volume"}
        raise UserError(
            f"backup.sources names no {wanted.get(kind, 'source')} to back up; add it to"
            " backup.sources.datastores or backup.sources.volumes"
        )
    return covered


def artefact_names(stack: Stack, kind: str) -> list[str]:
    """The artefacts a set of `kind` holds by the spec (without resolving any secret)."""
    return [
        f"files:{name}"
        if isinstance(what, str)
        else f"{'postgres' if isinstance(what, Postgres) else 'redis'}:{name}"
        for name, what in _covered(stack, kind)
    ]


def sources_of(stack: Stack, kind: str, environ: Mapping[str, str] | None = None) -> list[Source]:
    """The sources a backup of `kind` covers, in the order they are backed up."""
    environ = os.environ if environ is None else environ
    sources: list[Source] = []
    for name, what in _covered(stack, kind):
        if isinstance(what, Postgres):
            sources.append(_postgres(stack, name, what, environ))
        elif isinstance(what, Redis):
            sources.append(_redis(stack, name, what, environ))
        else:
            sources.append(_files(what, environ))
    return sources


def _files(volume: str, environ: Mapping[str, str]) -> FilesSource:
    if in_cluster(environ):
        if volume.startswith("/"):
            raise UserError(
                f"backup.sources.volumes: {volume!r} is a path on a plain host, which a backup in the"
                " cluster cannot reach; name the service's volume as `service/volume`"
            )
        root = environ.get(VOLUMES_ENV) or VOLUMES_ROOT
        return FilesSource(Path(volume_path(root, volume)), volume=volume)
    if not volume.startswith("/"):
        raise UserError(
            f"backup.sources.volumes: {volume!r} is a Kubernetes volume, which plain-host backups"
            " cannot reach (the backup CronJobs rendered for the cluster mount it); give the"
            " absolute path of the directory instead"
        )
    return FilesSource(Path(volume))


def _address(stack: Stack, name: str, store: Postgres | Redis, environ: Mapping[str, str]) -> tuple[str, int]:
    """(host, port) of datastore `name` from where shipyard runs."""
    if in_cluster(environ):
        return cluster_host(stack, name, direct=True), store.port
    return store.local.host, store.local.port or store.port


def _postgres(stack: Stack, name: str, store: Postgres, environ: Mapping[str, str]) -> PostgresSource:
    # Without an explicit password the default reference is optional: libpq may still find one
    # in ~/.pgpass or the server may trust the host.
    reference = store.password or SecretRef.model_validate({"secretRef": f"{name}-credentials/password"})
    password = resolve_secret(
        reference,
        field_name=f"datastores.{name}.password",
        environ=environ,
        required=store.password is not None,
    )
    host, port = _address(stack, name, store, environ)
    return PostgresSource(
        name=name,
        host=host,
        port=port,
        database=store.database,
        user=store.user,
        password=password,
        data_dir=None if in_cluster(environ) else store.local.data_dir,
        sslmode=_external_sslmode(store, environ),
    )


def _external_sslmode(store: Postgres, environ: Mapping[str, str]) -> str | None:
    if in_cluster(environ) and store.mode == "external" and store.external is not None:
        return store.external.sslmode
    return None


def _redis(stack: Stack, name: str, store: Redis, environ: Mapping[str, str]) -> RedisSource:
    password = resolve_secret(
        store.password, field_name=f"datastores.{name}.password", environ=environ, required=True
    )
    host, port = _address(stack, name, store, environ)
    return RedisSource(
        name=name,
        host=host,
        port=port,
        password=password,
        data_dir=None if in_cluster(environ) else store.local.data_dir,
    )


def repository_location(stack: Stack, base_dir: Path) -> str:
    """The restic repository: an S3 URL as written, a local path relative to the spec's directory."""
    if stack.backup is None:
        raise UserError(f"stack {stack.name} has no `backup:` section; add one to shipyard.yaml")
    url = stack.backup.repository
    if ":" in url.split("/", 1)[0] and not url.startswith("/"):
        return url  # s3:..., sftp:..., rest:...
    return str((base_dir / url).resolve())


def repository_password(stack: Stack, environ: Mapping[str, str] | None = None) -> str:
    if stack.backup is None:
        raise UserError(f"stack {stack.name} has no `backup:` section; add one to shipyard.yaml")
    value = resolve_secret(
        stack.backup.password,
        field_name="backup.password",
        environ=os.environ if environ is None else environ,
        required=True,
    )
    if not value:
        raise BackupError("backup.password resolves to an empty value; restic needs a password")
    return value


def repository_env(stack: Stack, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """restic's backend variables: the S3 keys from `backup.credentials` (resolved from their
    references) over those of shipyard's environment (AWS_*, B2_*, AZURE_*, GOOGLE_*)."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k.startswith(("AWS_", "B2_", "AZURE_", "GOOGLE_"))}
    credentials = stack.backup.credentials if stack.backup is not None else None
    if credentials is None:
        return env
    for variable, reference, field_name in (
        ("AWS_ACCESS_KEY_ID", credentials.access_key_id, "backup.credentials.access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key, "backup.credentials.secret_access_key"),
    ):
        value = resolve_secret(reference, field_name=field_name, environ=environ, required=True)
        assert value is not None  # required
        env[variable] = value
    if credentials.region is not None:
        env["AWS_DEFAULT_REGION"] = credentials.region
    return env
