"""Price catalogs: one YAML data file per provider, validated into pydantic models.

Prices live only in `catalogs/*.yaml`, never in code. Every price carries its amount, what it is
per (hour, month, GB-month or GB), the date it was read and the public page it was read from.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import CatalogError, UnknownInstanceClassError, UnknownProviderError

HOURS_PER_MONTH = Decimal(730)
"""The month every provider bills by: 365 days × 24 hours / 12."""

AsOf = Annotated[str, Field(pattern=r"^\d{4}-\d{2}(-\d{2})?$")]
Url = Annotated[str, Field(pattern=r"^https://\S+$")]
Amount = Annotated[Decimal, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Model):
    """One list price, with when and where it was read."""

    amount: Amount
    per: Literal["hour", "month", "gb-month", "gb"]
    as_of: AsOf
    source: Url
    note: str | None = None

    @property
    def monthly(self) -> Decimal:
        """The price of a month (730 hours) of something billed per hour or per month."""
        if self.per == "hour":
            return self.amount * HOURS_PER_MONTH
        if self.per == "month":
            return self.amount
        raise ValueError(f"a price per {self.per} has no monthly figure on its own")


class _TimedPrice(Price):
    @model_validator(mode="after")
    def _timed(self) -> _TimedPrice:
        if self.per not in ("hour", "month"):
            raise ValueError(f"expected a price per hour or per month, not per {self.per}")
        return self


class NodeType(_Model):
    """A machine a node pool can be made of."""

    name: str = Field(min_length=1)
    vcpu: Annotated[int, Field(ge=1)]
    memory_gib: Annotated[Decimal, Field(gt=0)]
    price: _TimedPrice
    family: str | None = None
    """e.g. 'general purpose', 'burstable', 'memory optimised': shown to people, not used."""
    egress_included_gb: Annotated[int, Field(ge=0)] | None = None
    """Transfer included with each such node, where the provider pools it per machine."""
    cpu_credits: str | None = None
    """For a burstable or shared-CPU type: the limit on its sustained CPU (baseline, credits,
    neighbours), said beside any estimate that chooses it."""
    committed_price: _TimedPrice | None = None
    """A reserved or committed-use rate (its note names the term), where the catalog has one."""
    spot_price: _TimedPrice | None = None
    """A published spot/preemptible rate, where the catalog has one."""


class Storage(_Model):
    product: str
    price: Price

    @model_validator(mode="after")
    def _per_gb_month(self) -> Storage:
        if self.price.per != "gb-month":
            raise ValueError("block storage is priced per gb-month")
        return self


class BootDisk(_Model):
    """Each node's boot disk: billed apart (GKE, EKS) or part of the node's price (None)."""

    product: str
    size_gb: Annotated[int, Field(ge=1)]
    size_source: Url
    """The page that gives the default size."""
    price: Price | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _per_gb_month(self) -> BootDisk:
        if self.price is not None and self.price.per != "gb-month":
            raise ValueError("a boot disk is priced per gb-month")
        if self.price is None and not self.note:
            raise ValueError("say in `note` why the boot disk has no price (e.g. included)")
        return self


class SharedStorage(_Model):
    """The provider's ReadWriteMany file storage (EFS, Filestore), or a note that it has none."""

    product: str | None = None
    price: Price | None = None
    min_gb: Annotated[int, Field(ge=0)] = 0
    """The smallest instance billed (Filestore's basic tier bills 1 TiB at least)."""
    note: str

    @model_validator(mode="after")
    def _per_gb_month(self) -> SharedStorage:
        if (self.price is None) != (self.product is None):
            raise ValueError("give both product and price, or neither (none offered)")
        if self.price is not None and self.price.per != "gb-month":
            raise ValueError("shared storage is priced per gb-month")
        return self


class Spot(_Model):
    """Whether the provider sells spot/preemptible capacity, and what to know about it."""

    sold: bool
    note: str


class LoadBalancer(_Model):
    product: str
    price: _TimedPrice


class ControlPlane(_Model):
    managed: bool
    """False when the provider has no managed Kubernetes (the control plane runs on the nodes)."""
    price: _TimedPrice
    note: str


class Egress(_Model):
    price: Price
    included_gb: Annotated[int, Field(ge=0)] = 0
    """Free transfer per account and month."""
    included_gb_per_node: Annotated[int, Field(ge=0)] = 0
    """Free transfer per node, for node types that do not say their own."""

    @model_validator(mode="after")
    def _per_gb(self) -> Egress:
        if self.price.per != "gb":
            raise ValueError("egress is priced per gb")
        return self


class NodeExtra(_Model):
    """A fee every node pays besides its own price (e.g. Hetzner's primary IPv4 address)."""

    description: str
    price: _TimedPrice


class ManagedDatabase(_Model):
    """One instance class of the provider's managed database service (RDS, ElastiCache, …),
    which prices a datastore of `mode: external` that names it."""

    name: str = Field(min_length=1)
    engine: Literal["postgresql", "redis"]
    service: str
    """The product, e.g. 'RDS for PostgreSQL'."""
    vcpu: Annotated[int, Field(ge=1)] | None = None
    memory_gib: Annotated[Decimal, Field(gt=0)] | None = None
    price: _TimedPrice
    """One instance (Single-AZ)."""
    multi_az_price: _TimedPrice | None = None
    """With a standby in a second zone, when the provider offers it."""


class ManagedStorage(_Model):
    """The managed databases' allocated storage, per GB-month."""

    product: str
    price: Price
    multi_az_price: Price | None = None

    @model_validator(mode="after")
    def _per_gb_month(self) -> ManagedStorage:
        for price in (self.price, self.multi_az_price):
            if price is not None and price.per != "gb-month":
                raise ValueError("managed database storage is priced per gb-month")
        return self


class Exchange(_Model):
    """How many US dollars one unit of the catalog's currency was worth, and when."""

    usd_per_unit: Annotated[Decimal, Field(gt=0)]
    as_of: AsOf
    source: Url
    note: str | None = None


class Catalog(_Model):
    """The prices of one provider's managed Kubernetes (or the nearest thing to it)."""

    provider: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
    title: str
    aliases: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]] = []
    region: str
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    exchange: Exchange | None = None
    """Required when the currency is not USD: estimates are compared in USD."""
    as_of: AsOf
    note: str
    control_plane: ControlPlane
    node_types: list[NodeType] = Field(min_length=1)
    node_extras: list[NodeExtra] = []
    block_storage: Storage
    ssd_storage: Storage | None = None
    """The SSD class, where the default block class is not one (GKE's pd-balanced)."""
    boot_disk: BootDisk | None = None
    shared_storage: SharedStorage | None = None
    spot: Spot | None = None
    load_balancer: LoadBalancer
    egress: Egress
    managed_databases: list[ManagedDatabase] = []
    managed_database_storage: ManagedStorage | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        if self.currency != "USD" and self.exchange is None:
            raise ValueError(f"prices in {self.currency} need `exchange` (USD per {self.currency})")
        if self.currency == "USD" and self.exchange is not None:
            raise ValueError("a USD catalog needs no `exchange`")
        names = [node.name for node in self.node_types]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"node types listed twice: {', '.join(duplicates)}")
        classes = [database.name for database in self.managed_databases]
        duplicates = sorted({name for name in classes if classes.count(name) > 1})
        if duplicates:
            raise ValueError(f"managed database classes listed twice: {', '.join(duplicates)}")
        return self

    def managed_database(self, name: str) -> ManagedDatabase | None:
        return next((database for database in self.managed_databases if database.name == name), None)

    @property
    def usd_rate(self) -> Decimal:
        return self.exchange.usd_per_unit if self.exchange else Decimal(1)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith(("function-", "_")):  # validators' names are not fields
            text += f".{part}" if text else part
    return text or "(document)"


def parse_catalog(text: str, file: str) -> Catalog:
    """Validate one catalog given as YAML text; `file` is the name errors use."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{file}: not valid YAML: {exc}") from None
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        problems = [f"{file}: {_location(tuple(error['loc']))}: {error['msg']}" for error in exc.errors()]
        raise CatalogError("malformed price catalog:\n  " + "\n  ".join(problems)) from None


@functools.cache
def catalogs() -> tuple[Catalog, ...]:
    """Every catalog shipped in `shipyard/capacity/catalogs/`, by provider name."""
    folder = resources.files(__package__).joinpath("catalogs")
    found: list[Catalog] = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".yaml"):
            catalog = parse_catalog(entry.read_text(encoding="utf-8"), f"catalogs/{entry.name}")
            if f"{catalog.provider}.yaml" != entry.name:
                raise CatalogError(
                    f"catalogs/{entry.name}: provider: {catalog.provider!r} must match the file name"
                )
            found.append(catalog)
    return tuple(sorted(found, key=lambda catalog: catalog.provider))


def known_providers() -> tuple[str, ...]:
    return tuple(catalog.provider for catalog in catalogs())


def load_catalog(provider: str) -> Catalog:
    """The catalog of one provider, by name or alias (`aws`, `eks`, `gke`, `do`, …)."""
    wanted = provider.strip().lower()
    names: dict[str, Catalog] = {}
    for catalog in catalogs():
        for name in (catalog.provider, *catalog.aliases):
            names[name] = catalog
    if wanted in names:
        return names[wanted]
    close = difflib.get_close_matches(wanted, list(names), n=1, cutoff=0.6)
    hint = f" (did you mean {names[close[0]].provider!r}?)" if close else ""
    known = ", ".join(known_providers())
    raise UnknownProviderError(f"no price catalog for provider {provider!r}{hint}; known providers: {known}")


@dataclass(frozen=True)
class ManagedClass:
    """The managed database class one provider runs for an external datastore: what `cost`
    prices on its line and what `render opentofu` makes (one answer for both)."""

    store: str
    kind: Literal["postgresql", "redis"]
    asked: str
    """The spec's `external.instance_class`."""
    multi_az: bool
    database: ManagedDatabase | None
    """The provider's class; None when it runs none that fits (nothing is priced or made)."""
    note: str | None = None
    """Why the class is not the one asked for, or why there is none."""


def _describe(database: ManagedDatabase) -> str:
    return f"{database.name} ({database.vcpu} vCPU, {database.memory_gib} GiB)"


def managed_class(
    catalog: Catalog, store: str, kind: Literal["postgresql", "redis"], instance_class: str, multi_az: bool
) -> ManagedClass:
    """The class `catalog`'s provider runs for datastore `store`: `instance_class` itself when the
    catalog lists it, else the provider's cheapest class of the engine with at least its vCPUs and
    memory (and a standby price when `multi_az`). Raises UnknownInstanceClassError for a class no
    catalog lists, one of the other engine, or a listed class without the Multi-AZ price asked."""
    field = f"datastores.{store}.external.instance_class"
    asked = catalog.managed_database(instance_class) or next(
        (found for other in catalogs() if (found := other.managed_database(instance_class)) is not None), None
    )
    if asked is None:
        listed = sorted(d.name for c in catalogs() for d in c.managed_databases if d.engine == kind)
        raise UnknownInstanceClassError(
            f"{field}: {instance_class!r} is in no price catalog; the {kind} classes listed are:"
            f" {', '.join(listed) or 'none'}"
        )
    if asked.engine != kind:
        raise UnknownInstanceClassError(
            f"{field}: {instance_class!r} is a {asked.engine} class ({asked.service}),"
            f" but {store!r} is {kind}"
        )
    if catalog.managed_database(instance_class) is asked:
        if multi_az and asked.multi_az_price is None:
            raise UnknownInstanceClassError(
                f"datastores.{store}.external.multi_az: {asked.name} has no Multi-AZ price in the"
                f" {catalog.provider} catalog; set multi_az: false or add the price"
            )
        return ManagedClass(store, kind, instance_class, multi_az, asked)
    own = [d for d in catalog.managed_databases if d.engine == kind]
    if not own:
        what = "no managed databases" if not catalog.managed_databases else f"no managed {kind} class"
        return ManagedClass(
            store,
            kind,
            instance_class,
            multi_az,
            None,
            f"{store} ({instance_class}): {catalog.title} has {what} in its catalog: not priced or made"
            f" on {catalog.provider} (run it in the cluster: mode statefulset or cloudnative-pg)",
        )
    fitting = [
        d
        for d in own
        if (d.vcpu or 0) >= (asked.vcpu or 0)
        and (d.memory_gib or 0) >= (asked.memory_gib or 0)
        and (not multi_az or d.multi_az_price is not None)
    ]
    if not fitting:
        return ManagedClass(
            store,
            kind,
            instance_class,
            multi_az,
            None,
            f"{store}: no {catalog.provider} class has at least {_describe(asked)}'s vCPUs and memory"
            f"{' with a standby' if multi_az else ''}: not priced or made on {catalog.provider}",
        )

    def monthly(database: ManagedDatabase) -> Decimal:
        price = database.multi_az_price if multi_az and database.multi_az_price else database.price
        return price.monthly

    chosen = min(fitting, key=lambda d: (monthly(d), d.vcpu or 0, d.memory_gib or 0, d.name))
    return ManagedClass(
        store,
        kind,
        instance_class,
        multi_az,
        chosen,
        f"{_describe(asked)} priced as {catalog.title.split(' (')[0]} {_describe(chosen)},"
        f" the cheapest {chosen.service} class with at least its vCPUs and memory",
    )
