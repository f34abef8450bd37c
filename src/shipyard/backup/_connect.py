"""Where each source lives and how to reach it, from the spec; secret references resolved here.

On a plain host a secret reference is resolved from shipyard's environment:
`${env:NAME}` reads NAME; `{secretRef: db-credentials/password}` reads DB_CREDENTIALS_PASSWORD
(name and key upper-cased, every other character `_`), the variable a Kubernetes Secret mounted
as environment would be. Values never appear in a message, an argv or a manifest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackupError, UserError
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

    @property
    def artefact(self) -> str:
        return f"postgres:{self.name}"

    @property
    def env(self) -> dict[str, str]:
        """libpq's environment for the client tools (the password never goes on argv)."""
        env = {"PGCONNECT_TIMEOUT": "10"}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
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

    @property
    def artefact(self) -> str:
        return f"files:{self.path}"


Source = PostgresSource | RedisSource | FilesSource

KINDS = BACKUP_WHATS


def _covered(stack: Stack, kind: str) -> list[tuple[str, Postgres | Redis | Path]]:
    """What a backup of `kind` covers, in order: (datastore name, its spec) or (volume, its path)."""
    if kind not in KINDS:
        raise UserError(f"unknown backup kind {kind!r}; use one of {', '.join(KINDS)}")
    backup = stack.backup
    if backup is None:
        raise UserError(f"stack {stack.name} has no `backup:` section; add one to shipyard.yaml")
    covered: list[tuple[str, Postgres | Redis | Path]] = []
    for name in backup.sources.datastores:
        store = stack.datastores[name]
        if (isinstance(store, Postgres) and kind in ("full", "database")) or (
            isinstance(store, Redis) and kind in ("full", "redis")
        ):
            covered.append((name, store))
    if kind in ("full", "files"):
        for volume in backup.sources.volumes:
            if not volume.startswith("/"):
                raise UserError(
                    f"backup.sources.volumes: {volume!r} is a Kubernetes volume, which plain-host backups"
                    " cannot reach; give the absolute path of the directory instead"
                )
            covered.append((volume, Path(volume)))
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
        f"{'postgres' if isinstance(what, Postgres) else 'redis'}:{name}"
        if not isinstance(what, Path)
        else f"files:{what}"
        for name, what in _covered(stack, kind)
    ]


def sources_of(stack: Stack, kind: str, environ: Mapping[str, str] | None = None) -> list[Source]:
    """The sources a backup of `kind` covers, in the order they are backed up."""
    environ = os.environ if environ is None else environ
    sources: list[Source] = []
    for name, what in _covered(stack, kind):
        if isinstance(what, Postgres):
            sources.append(_postgres(name, what, environ))
        elif isinstance(what, Redis):
            sources.append(_redis(name, what, environ))
        else:
            sources.append(FilesSource(what))
    return sources


def _postgres(name: str, store: Postgres, environ: Mapping[str, str]) -> PostgresSource:
    # Without an explicit password the default reference is optional: libpq may still find one
    # in ~/.pgpass or the server may trust the host.
    reference = store.password or SecretRef.model_validate({"secretRef": f"{name}-credentials/password"})
    password = resolve_secret(
        reference,
        field_name=f"datastores.{name}.password",
        environ=environ,
        required=store.password is not None,
    )
    return PostgresSource(
        name=name,
        host=store.local.host,
        port=store.local.port or store.port,
        database=store.database,
        user=store.user,
        password=password,
        data_dir=store.local.data_dir,
    )


def _redis(name: str, store: Redis, environ: Mapping[str, str]) -> RedisSource:
    password = resolve_secret(
        store.password, field_name=f"datastores.{name}.password", environ=environ, required=True
    )
    return RedisSource(
        name=name,
        host=store.local.host,
        port=store.local.port or store.port,
        password=password,
        data_dir=store.local.data_dir,
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
