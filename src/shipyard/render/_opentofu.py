"""`render opentofu`: one OpenTofu root module per environment, on aws, gcp, digitalocean or hetzner.

The planner here is pure: it reads the spec and the price catalogs, and returns file texts. It
decides what every provider makes alike; the `_opentofu_<provider>.py` modules turn that into
the provider's resources:

- the node pools are the ones `shipyard cost` prices: the caller hands in each environment's
  `capacity.estimate_cost` for the provider (render may not import capacity: they are sibling
  planners), read here through `EstimateLike`: each pool's node type, its count at minimum
  replicas (the cost line) and at maximum replicas (the autoscaler's ceiling);
- a managed PostgreSQL or Redis for each `mode: external` datastore that names its
  `instance_class`, of the class on `cost`'s line (`capacity.managed_class`, read through
  `EstimateLike.managed`: the spec's class where the provider lists it, else its cheapest class
  at least as large; none, with a note, where it runs none); its password a sensitive variable,
  or the provider's generated one, and an output named after the datastore's secretRef
  (`salespot-db/password` -> `salespot_db_password`);
- the backup bucket that `backup.repository` names (versioned, encrypted, tiered), made by one
  environment's module only when several environments share it (`production`, else the first);
- DNS records for every ingress host, in the zone that holds it;
- a remote state backend, `required_version` and pinned providers.

Region, GKE zones, DNS zone and state bucket come from the spec's `infrastructure` section, with
defaults (`Infrastructure`). Files are written in a stable order with stable contents: the same
spec always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType
from typing import Literal, Protocol

from ..errors import UnknownProviderError, UserError
from ..spec import GIB, Postgres, Redis, SecretRef, Spec, Stack, byte_count
from . import _opentofu_aws, _opentofu_digitalocean, _opentofu_gcp, _opentofu_hetzner
from ._opentofu_hcl import Block, Nested, ProviderModule, write_hcl

REQUIRED_VERSION = ">= 1.10.0"
"""OpenTofu 1.10 (and Terraform 1.10) lock S3 state with a lock file (`use_lockfile`)."""

_PROVIDERS: dict[str, ModuleType] = {
    "aws": _opentofu_aws,
    "gcp": _opentofu_gcp,
    "digitalocean": _opentofu_digitalocean,
    "hetzner": _opentofu_hetzner,
}
OPENTOFU_PROVIDERS: tuple[str, ...] = tuple(_PROVIDERS)


class _NodeTypeLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def vcpu(self) -> int: ...
    @property
    def memory_gib(self) -> Decimal: ...


class _SizeLike(Protocol):
    @property
    def nodes(self) -> int: ...


class _FitLike(Protocol):
    @property
    def node_type(self) -> _NodeTypeLike: ...
    @property
    def at_min(self) -> _SizeLike: ...
    @property
    def at_max(self) -> _SizeLike: ...


class _PoolPlanLike(Protocol):
    @property
    def chosen(self) -> _FitLike: ...


class _RolePoolLike(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def plan(self) -> _PoolPlanLike: ...


class _DatabaseLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def vcpu(self) -> int | None: ...
    @property
    def memory_gib(self) -> Decimal | None: ...


class _ManagedClassLike(Protocol):
    """What is read of a `capacity.ManagedClass`: the class the provider runs for a datastore."""

    @property
    def store(self) -> str: ...
    @property
    def asked(self) -> str: ...
    @property
    def database(self) -> _DatabaseLike | None: ...
    @property
    def note(self) -> str | None: ...


class EstimateLike(Protocol):
    """What is read of a `capacity.CostEstimate`."""

    @property
    def provider(self) -> str: ...
    @property
    def pools(self) -> Sequence[_RolePoolLike]: ...
    @property
    def managed(self) -> Sequence[_ManagedClassLike]: ...


class CatalogLike(Protocol):
    """What is read of a `capacity.Catalog`: its region."""

    @property
    def provider(self) -> str: ...
    @property
    def region(self) -> str: ...


@dataclass(frozen=True)
class NodePool:
    """One node pool as `cost` prices it."""

    name: str
    node_type: str
    """The catalog's name of the node type (`m6i.xlarge`, `CX32`)."""
    nodes: int
    """At minimum replicas: the count on `cost`'s line."""
    max_nodes: int
    """At maximum replicas: the ceiling given to the autoscaler."""
    vcpu: int
    memory_gib: Decimal


def node_pools(estimate: EstimateLike) -> tuple[NodePool, ...]:
    """The pools of an estimate, in its order (one `all` pool, or `cost`'s app and database pools
    when the spec asks for a database pool): the one place that reads them."""
    pools: list[NodePool] = []
    for pool in estimate.pools:
        fit = pool.plan.chosen
        pools.append(
            NodePool(
                name="general" if pool.role == "all" else pool.role,
                node_type=fit.node_type.name,
                nodes=fit.at_min.nodes,
                max_nodes=max(fit.at_max.nodes, fit.at_min.nodes),
                vcpu=fit.node_type.vcpu,
                memory_gib=fit.node_type.memory_gib,
            )
        )
    return tuple(pools)


@dataclass(frozen=True)
class ManagedStore:
    """A `mode: external` datastore with an instance class: the provider's managed service."""

    name: str
    kind: Literal["postgresql", "redis"]
    version: str
    instance_class: str
    """The class the provider runs: the one on `cost`'s line (`capacity.managed_class`)."""
    asked: str
    """The spec's `external.instance_class` (another provider's class, or this one)."""
    vcpu: int | None
    memory_gib: Decimal | None
    multi_az: bool
    storage_gib: int
    port: int
    database: str | None
    user: str | None
    password: SecretRef | None

    @property
    def password_output(self) -> str | None:
        """The output (and variable) named after the password's secretRef."""
        return secret_name(self.password) if self.password is not None else None


def secret_name(reference: SecretRef) -> str:
    """`salespot-db/password` is `salespot_db_password`: the secret's environment name, lower-cased."""
    return reference.env_name.lower()


@dataclass(frozen=True)
class BackupBucket:
    name: str
    prefix: str
    repository: str
    owner: str
    """The environment whose module creates it; the others only refer to it."""
    created_here: bool


@dataclass(frozen=True)
class DnsRecord:
    host: str
    zone: str
    name: str
    """Relative to the zone: `@` for the apex, `api` for api.example.com in example.com."""


@dataclass(frozen=True)
class InfraPlan:
    """Everything an environment's module is made of, the same for every provider."""

    stack: str
    environment: str
    provider: str
    name: str
    """`<stack>-<environment>`: the prefix of every resource's name."""
    region: str
    zones: tuple[str, ...]
    state_bucket: str
    state_key: str
    pools: tuple[NodePool, ...]
    stores: tuple[ManagedStore, ...]
    bucket: BackupBucket | None
    records: tuple[DnsRecord, ...]
    labels: Mapping[str, str]
    notes: tuple[str, ...]

    @property
    def zone_names(self) -> tuple[str, ...]:
        return tuple(sorted({record.zone for record in self.records}))


@dataclass(frozen=True)
class OpenTofuModule:
    environment: str
    provider: str
    files: Mapping[str, str]
    """File name -> text, for the module's own directory."""
    pools: tuple[NodePool, ...]
    stores: tuple[str, ...]
    bucket: str | None
    records: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class OpenTofuTree:
    provider: str
    modules: tuple[OpenTofuModule, ...]

    @property
    def files(self) -> dict[str, str]:
        """`<environment>/<file>` -> text: what `write_tree` writes."""
        return {
            f"{module.environment}/{name}": text
            for module in self.modules
            for name, text in module.files.items()
        }


def _provider(name: str) -> str:
    if name not in _PROVIDERS:
        raise UnknownProviderError(
            f"--provider {name!r}: `render opentofu` knows {', '.join(OPENTOFU_PROVIDERS)}"
        )
    return name


def repository_bucket(repository: str) -> tuple[str, str] | None:
    """(bucket, prefix) of a restic repository in S3 (`s3:https://host/bucket/prefix`) or GCS
    (`gs:bucket:/prefix`); None for a local directory or another backend."""
    if repository.startswith("s3:"):
        rest = repository[3:].split("://", 1)[-1]
        _, _, path = rest.partition("/")
        bucket, _, prefix = path.partition("/")
        return (bucket, prefix.strip("/")) if bucket else None
    if repository.startswith("gs:"):
        bucket, _, prefix = repository[3:].partition(":")
        return (bucket, prefix.strip("/")) if bucket else None
    return None


def _bucket(spec: Spec, stack: Stack) -> tuple[BackupBucket | None, list[str]]:
    if stack.backup is None:
        return None, []
    found = repository_bucket(stack.backup.repository)
    if found is None:
        return None, [f"backup.repository {stack.backup.repository!r} is not in S3 or GCS: no bucket is made"]
    name, prefix = found
    sharing = [
        other.environment
        for other in spec.stacks()
        if other.backup is not None
        and (found_there := repository_bucket(other.backup.repository)) is not None
        and found_there[0] == name
    ]
    owner = "production" if "production" in sharing else sharing[0]
    bucket = BackupBucket(name, prefix, stack.backup.repository, owner, owner == stack.environment)
    notes = []
    if not bucket.created_here:
        notes.append(f"the backup bucket {name!r} is shared with {owner}: its module creates it")
    return bucket, notes


def _records(stack: Stack) -> tuple[DnsRecord, ...]:
    hosts = {service.ingress.host for service in stack.services.values() if service.ingress is not None}
    if stack.control_plane is not None and stack.control_plane.ingress is not None:
        hosts.add(stack.control_plane.ingress.host)
    wanted = stack.infrastructure.dns_zone if stack.infrastructure is not None else None
    records: list[DnsRecord] = []
    for host in sorted(hosts):
        if wanted is not None and (host == wanted or host.endswith(f".{wanted}")):
            zone = wanted
        else:
            zone = ".".join(host.split(".")[-2:])
        name = "@" if host == zone else host[: -len(zone) - 1]
        records.append(DnsRecord(host, zone, name))
    return tuple(records)


def _stores(stack: Stack, estimate: EstimateLike) -> tuple[tuple[ManagedStore, ...], list[str]]:
    stores: list[ManagedStore] = []
    notes: list[str] = []
    runs = {chosen.store: chosen for chosen in estimate.managed}
    for name in sorted(stack.datastores):
        store: Postgres | Redis = stack.datastores[name]
        if store.mode != "external" or store.external is None:
            continue
        instance_class = store.external.instance_class
        if instance_class is None:
            notes.append(
                f"datastores.{name}: external without instance_class: no managed {store.kind} is made"
                " (give external.instance_class to have one)"
            )
            continue
        chosen = runs.get(name)
        database = chosen.database if chosen is not None else None
        if chosen is None or database is None:
            notes.append(
                chosen.note
                if chosen is not None and chosen.note
                else f"datastores.{name}: no managed {store.kind} is made"
            )
            continue
        if chosen.note:
            notes.append(f"datastores.{name}: {chosen.note}")
        password = store.password
        if password is None and isinstance(store, Postgres):
            password = SecretRef(secret_ref=f"{name}-credentials/password")
        postgres = store if isinstance(store, Postgres) else None
        storage = store.storage.size if postgres is not None and store.storage is not None else None
        stores.append(
            ManagedStore(
                name=name,
                kind=store.kind,
                version=store.version,
                instance_class=database.name,
                asked=instance_class,
                vcpu=database.vcpu,
                memory_gib=database.memory_gib,
                multi_az=store.external.multi_az,
                storage_gib=_gib(storage) if storage is not None else 20,
                port=store.port,
                database=postgres.database if postgres is not None else None,
                user=postgres.user if postgres is not None else None,
                password=password,
            )
        )
    return tuple(stores), notes


def _gib(size: str) -> int:
    return max(1, -(-byte_count(size) // GIB))


def infra_plan(
    spec: Spec, environment: str, estimate: EstimateLike, catalogs: Sequence[CatalogLike]
) -> InfraPlan:
    """What one environment's module makes on the estimate's provider (pure: no I/O)."""
    provider = _provider(estimate.provider)
    stack = spec.stack(environment)
    catalog = next(c for c in catalogs if c.provider == provider)
    infrastructure = stack.infrastructure
    planner = _PROVIDERS[provider]
    region = (infrastructure.region if infrastructure else None) or planner.default_region(catalog.region)
    zones = tuple(infrastructure.zones if infrastructure else ()) or planner.default_zones(region)
    bucket, bucket_notes = _bucket(spec, stack)
    stores, store_notes = _stores(stack, estimate)
    state_bucket = (infrastructure.state_bucket if infrastructure else None) or f"{stack.name}-tofu-state"
    return InfraPlan(
        stack=stack.name,
        environment=stack.environment,
        provider=provider,
        name=f"{stack.name}-{stack.environment}",
        region=region,
        zones=zones,
        state_bucket=state_bucket,
        state_key=f"{stack.name}/{stack.environment}/terraform.tfstate",
        pools=node_pools(estimate),
        stores=stores,
        bucket=bucket,
        records=_records(stack),
        labels={"stack": stack.name, "environment": stack.environment, "managed-by": "shipyard"},
        notes=(*store_notes, *bucket_notes),
    )


def _versions(plan: InfraPlan, made: ProviderModule) -> Block:
    providers = {
        local: {"source": source, "version": version}
        for local, (source, version) in sorted(made.providers.items())
    }
    return Block(
        "terraform",
        (),
        {
            "required_version": REQUIRED_VERSION,
            "required_providers": Nested(providers),
            "backend": made.backend,
        },
        comment=(
            f"{plan.stack}, environment {plan.environment}, on {plan.provider}: written by"
            " `shipyard render opentofu`.\nThe state bucket must exist before `tofu init`."
        ),
    )


def _sorted(file: str, blocks: Sequence[Block]) -> list[Block]:
    # Variables and outputs are looked up by name: keep them in name order.
    if file in ("variables.tf", "outputs.tf"):
        return sorted(blocks, key=lambda block: block.labels)
    return list(blocks)


def opentofu_module(
    spec: Spec, environment: str, estimate: EstimateLike, catalogs: Sequence[CatalogLike]
) -> OpenTofuModule:
    plan = infra_plan(spec, environment, estimate, catalogs)
    made: ProviderModule = _PROVIDERS[plan.provider].module(plan)
    files = {"versions.tf": write_hcl([_versions(plan, made)])}
    for name in sorted(made.files):
        blocks = made.files[name]
        if blocks:
            files[name] = write_hcl(_sorted(name, blocks))
    notes = (*plan.notes, *made.notes)
    return OpenTofuModule(
        environment=plan.environment,
        provider=plan.provider,
        files=dict(sorted(files.items())),
        pools=plan.pools,
        stores=tuple(store.name for store in plan.stores),
        bucket=plan.bucket.name if plan.bucket is not None else None,
        records=tuple(record.host for record in plan.records),
        notes=notes,
    )


def opentofu_tree(
    spec: Spec, provider: str, estimates: Mapping[str, EstimateLike], catalogs: Sequence[CatalogLike]
) -> OpenTofuTree:
    """One root module per environment of `estimates` (environment -> `capacity.estimate_cost`
    of that environment on `provider`, as `shipyard cost` computes it), under `<environment>/`.
    `catalogs`: every price catalog (`capacity.catalogs()`), for the provider's default region."""
    provider = _provider(provider)
    if not estimates:
        raise UserError("the spec has no environments: nothing to render")
    modules = []
    for environment, estimate in estimates.items():
        if estimate.provider != provider:
            raise ValueError(f"{environment}: an estimate for {estimate.provider}, not {provider}")
        modules.append(opentofu_module(spec, environment, estimate, catalogs))
    return OpenTofuTree(provider, tuple(modules))
