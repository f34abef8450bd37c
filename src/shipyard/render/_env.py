"""Container environments: plain values, secret references and datastore connections.

Plain values go to a ConfigMap the container loads whole. A `secretRef` becomes a
`secretKeyRef`; `${env:NAME}` becomes key NAME of the stack's runtime Secret, and a value that
embeds one is assembled by Kubernetes itself through `$(VAR)` expansion, so the secret's value is
never known to shipyard, let alone written. Every Secret key used is recorded in `SecretUses`, from
which the ExternalSecrets are rendered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import RenderError
from ..spec import ENV_REFERENCE, Postgres, Redis, SecretRef, Service, Stack
from ._common import cluster_host, env_name


def runtime_secret(stack: Stack) -> str:
    """The Secret that holds the values of every `${env:NAME}` reference of the stack."""
    return f"{stack.name}-runtime"


def postgres_password(name: str, store: Postgres) -> SecretRef:
    return store.password or SecretRef.model_validate({"secretRef": f"{name}-credentials/password"})


@dataclass
class SecretUses:
    """The Secret keys the rendered objects read, and which external store each Secret is from."""

    stack: Stack
    keys: dict[str, set[str]] = field(default_factory=dict)
    stores: dict[str, str] = field(default_factory=dict)
    basic_auth: dict[str, str] = field(default_factory=dict)
    """Secrets that must be `kubernetes.io/basic-auth` (a CloudNativePG owner Secret), each with the
    `username` it must hold: an ExternalSecret writes that type and adds the username."""

    def basic_auth_ref(self, ref: SecretRef, username: str) -> None:
        """Record that `ref`'s Secret is a basic-auth Secret: `username` is `username`, and
        `ref`'s key (which must be `password`) the password."""
        self.ref(ref)
        known = self.basic_auth.setdefault(ref.name, username)
        if known != username:
            raise RenderError(
                f"Secret {ref.name!r} is the credentials of two database owners ({known!r} and"
                f" {username!r}); a basic-auth Secret holds one username: give each its own Secret"
            )

    def key_ref(self, secret: str, key: str, store: str | None = None) -> dict[str, Any]:
        """Record a use of `secret/key` and return the `valueFrom` that reads it."""
        self.keys.setdefault(secret, set()).add(key)
        chosen = store or (self.stack.secrets.store.name if self.stack.secrets.store else None)
        if chosen is not None:
            known = self.stores.setdefault(secret, chosen)
            if known != chosen:
                raise RenderError(
                    f"Secret {secret!r} is referenced from two external stores ({known!r} and"
                    f" {chosen!r}); one Secret is fetched from one store: use another Secret name"
                )
        return {"secretKeyRef": {"name": secret, "key": key}}

    def ref(self, ref: SecretRef) -> dict[str, Any]:
        return self.key_ref(ref.name, ref.key, ref.store)

    def runtime(self, variable: str) -> dict[str, Any]:
        return self.key_ref(runtime_secret(self.stack), variable)


@dataclass(frozen=True)
class ContainerEnv:
    """What a service's containers get: a ConfigMap's data and an ordered `env` list."""

    config: dict[str, str]
    env: list[dict[str, Any]]


def plain_text(value: str | int | float | bool) -> str:
    """An env value as the process will see it; booleans as YAML and JSON write them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _escape_expansion(text: str) -> str:
    # In an `env` value Kubernetes expands $(VAR); `$$` is its escape for a literal `$`.
    return text.replace("$(", "$$(")


def service_env(stack: Stack, service: Service, uses: SecretUses) -> ContainerEnv:
    """The environment of a service's containers (the app, its migration, its cron jobs)."""
    config: dict[str, str] = {}
    secret_vars: list[dict[str, Any]] = []
    helpers: dict[str, dict[str, Any]] = {}
    expanded: list[dict[str, Any]] = []
    for key in sorted(service.env):
        value = service.env[key]
        if isinstance(value, SecretRef):
            secret_vars.append({"name": key, "valueFrom": uses.ref(value)})
            continue
        text = plain_text(value)
        whole = ENV_REFERENCE.fullmatch(text)
        if whole:
            secret_vars.append({"name": key, "valueFrom": uses.runtime(whole[1])})
            continue
        if not ENV_REFERENCE.search(text):
            config[key] = text
            continue

        # A value with a reference inside: the referenced variable is loaded first under a
        # helper name, then the value is assembled with $(helper).
        def helper_for(match: Any) -> str:
            variable: str = match[1]
            helper = variable if variable not in service.env else f"SHIPYARD_ENV_{variable}"
            helpers[helper] = {"name": helper, "valueFrom": uses.runtime(variable)}
            return f"$({helper})"

        expanded.append({"name": key, "value": ENV_REFERENCE.sub(helper_for, _escape_expansion(text))})
    connections = list(_connections(stack, service, uses))
    env = [*secret_vars, *(helpers[name] for name in sorted(helpers)), *connections, *expanded]
    return ContainerEnv(config=config, env=env)


def _connections(stack: Stack, service: Service, uses: SecretUses) -> Iterator[dict[str, Any]]:
    """Connection settings for each datastore the service depends on.

    With one datastore of a kind the variables have their usual names (PGHOST, DATABASE_URL,
    REDIS_URL); with several, each set is prefixed with the datastore's name.
    """
    stores = [(name, stack.datastores[name]) for name in service.depends_on if name in stack.datastores]
    kinds = [store.kind for _, store in stores]
    for name, store in stores:
        prefix = f"{env_name(name)}_" if kinds.count(store.kind) > 1 else ""
        variables = (
            _postgres_vars(stack, name, store, uses)
            if isinstance(store, Postgres)
            else _redis_vars(stack, name, store, uses)
        )
        for variable, source in variables:
            full = prefix + variable
            if full in service.env:  # the service's own setting wins
                continue
            if isinstance(source, str):
                yield {"name": full, "value": source.replace("$(", f"$({prefix}")}
            else:
                yield {"name": full, "valueFrom": source}


def _postgres_vars(
    stack: Stack, name: str, store: Postgres, uses: SecretUses
) -> list[tuple[str, str | dict[str, Any]]]:
    url = "postgresql://$(PGUSER):$(PGPASSWORD)@$(PGHOST):$(PGPORT)/$(PGDATABASE)"
    variables: list[tuple[str, str | dict[str, Any]]] = [
        ("PGHOST", cluster_host(stack, name)),
        ("PGPORT", str(store.port)),
        ("PGDATABASE", store.database),
        ("PGUSER", store.user),
        ("PGPASSWORD", uses.ref(postgres_password(name, store))),
    ]
    if store.mode == "external" and store.external is not None:
        # A managed database is reached over the network it shares with others: libpq (PGSSLMODE)
        # and URL-configured drivers alike are told the TLS policy.
        variables.append(("PGSSLMODE", store.external.sslmode))
        url += "?sslmode=$(PGSSLMODE)"
    return [*variables, ("DATABASE_URL", url)]


def _redis_vars(
    stack: Stack, name: str, store: Redis, uses: SecretUses
) -> list[tuple[str, str | dict[str, Any]]]:
    variables: list[tuple[str, str | dict[str, Any]]] = [
        ("REDIS_HOST", cluster_host(stack, name)),
        ("REDIS_PORT", str(store.port)),
    ]
    scheme = "redis"
    if store.mode == "external" and store.external is not None and store.external.tls:
        scheme = "rediss"  # ElastiCache's in-transit encryption: TLS on the same port
        variables.append(("REDIS_TLS", "true"))
    if store.mode == "statefulset" and store.replicas > 0:
        variables.append(("REDIS_REPLICA_HOST", replica_name(name)))
    if store.password is None:
        return [*variables, ("REDIS_URL", f"{scheme}://$(REDIS_HOST):$(REDIS_PORT)/0")]
    return [
        *variables,
        ("REDIS_PASSWORD", uses.ref(store.password)),
        ("REDIS_URL", f"{scheme}://:$(REDIS_PASSWORD)@$(REDIS_HOST):$(REDIS_PORT)/0"),
    ]


def replica_name(name: str) -> str:
    """The StatefulSet and Service of datastore `name`'s replicas (statefulset mode): reads that
    may lag behind the primary go there."""
    return f"{name}-replica"
