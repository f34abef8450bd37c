"""Monthly cost per provider: every figure is a line item with its quantity and unit price.

cost = nodes of each pool (from fitting) + per-node extras + the nodes' boot disks where they are
billed apart + control plane + block storage for the block volumes + file storage (EFS,
Filestore) for the ReadWriteMany ones + one load balancer when any service has an ingress +
egress beyond what is included + each external (managed) datastore that names its instance
class: the instance and its storage.

`Choices` says how: one pool, or the datastores on a pool of their own (`database`), or the
stateless services on a spot pool (`spot`); on-demand or committed rates; node types and counts
given by hand; a block storage size and its SSD class (seed 004's plan is written that way).
Each line's monthly figure is rounded to the cent once, and the total is the sum of the rounded
lines, so the lines always add up to the total shown. Providers are compared in US dollars.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from ..errors import NoNodeTypeFitsError
from ..spec import GIB
from ._catalog import Catalog, ManagedClass, Price, catalogs, load_catalog, managed_class
from ._fit import PoolPlan, Rate, default_min_nodes, fit_node_pool, pinned_pool
from ._format import format_gib
from ._totals import CapacityTotals, PoolRole

Layout = Literal["one", "database", "spot"]
_LAYOUT_ROLES: dict[Layout, tuple[PoolRole, ...]] = {
    "one": ("all",),
    "database": ("app", "database"),
    "spot": ("stateful", "stateless"),
}

CENT = Decimal("0.01")
DEFAULT_EGRESS_GB = 100
"""Seed 004 prices 100 GB of internet egress a month."""


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class LineItem:
    """One priced line: quantity × unit price (a month, in the catalog's currency)."""

    description: str
    quantity: int
    unit: str
    unit_price: Decimal
    """Per unit and month, exact (an hourly price × 730)."""
    monthly: Decimal
    """quantity × unit_price, rounded to the cent."""
    monthly_usd: Decimal
    price: Price
    """The catalog price this line comes from: its list amount, date and source."""
    note: str | None = None
    kind: str = ""
    """What the line prices: `nodes:<role>`, `node-extra`, `boot-disk`, `control-plane`,
    `block-storage`, `shared-storage`, `load-balancer`, `managed-database`, `egress`."""


@dataclass(frozen=True)
class Choices:
    """How to build the cluster that is priced (the defaults: as the spec says, fitted)."""

    layout: Layout | None = None
    """None: `database` when the spec asks for a database pool, else `one`."""
    rate: Rate = "on-demand"
    """The rate of the pools that are not spot: `committed` where the catalog lists one."""
    node_types: Mapping[PoolRole, tuple[str, int]] = field(default_factory=dict)
    """Pools given by hand: role -> (node type, count)."""
    storage_gb: int | None = None
    """Block storage to price instead of the spec's volumes."""
    ssd: bool = False
    """Price block storage at the catalog's SSD class where its default class is not SSD."""
    boot_disks: bool = True


@dataclass(frozen=True)
class RolePool:
    """One node pool of an estimate and the pods it holds."""

    role: PoolRole
    plan: PoolPlan


@dataclass(frozen=True)
class CostEstimate:
    """What one environment costs a month on one provider."""

    provider: str
    title: str
    region: str
    currency: str
    usd_rate: Decimal
    as_of: str
    pool: PoolPlan
    """The first pool (`pools[0].plan`): the one pool, or the app's when there are several."""
    egress_gb: int
    items: tuple[LineItem, ...]
    total: Decimal
    total_usd: Decimal
    total_at_max: Decimal
    """The same estimate with the node count at maximum replicas."""
    total_usd_at_max: Decimal
    notes: tuple[str, ...]
    pools: tuple[RolePool, ...] = ()
    """Every node pool, with the role of its pods; `pools[0].plan` is `pool`."""
    option: str = ""
    """What was priced, e.g. 'one pool, on-demand'."""
    managed: tuple[ManagedClass, ...] = ()
    """The managed class this provider runs for each external datastore with an instance class:
    the one its `managed-database` line prices, and the one `render opentofu` makes."""


@dataclass(frozen=True)
class CostComparison:
    """Estimates for several providers, cheapest first, and the providers that cannot host it."""

    stack: str
    environment: str
    estimates: tuple[CostEstimate, ...]
    unavailable: tuple[tuple[str, str], ...]
    """(provider, why) for each provider none of whose node types hold the pods."""


def _line(
    catalog: Catalog,
    description: str,
    quantity: int,
    *,
    unit: str,
    price: Price,
    unit_price: Decimal,
    kind: str,
    note: str | None = None,
) -> LineItem:
    monthly = cents(quantity * unit_price)
    return LineItem(
        description=description,
        quantity=quantity,
        unit=unit,
        unit_price=unit_price,
        monthly=monthly,
        monthly_usd=cents(monthly * catalog.usd_rate),
        price=price,
        note=note or price.note,
        kind=kind,
    )


_RATE_WORDS = {"on-demand": "", "committed": ", committed rate", "spot": ", spot"}


def _items(
    totals: CapacityTotals,
    catalog: Catalog,
    pools: tuple[RolePool, ...],
    at: Literal["min", "max"],
    egress_gb: int,
    choices: Choices,
) -> list[LineItem]:
    items: list[LineItem] = []
    total_nodes = 0
    included_per_node = 0
    for pool in pools:
        fit = pool.plan.chosen
        node = fit.node_type
        nodes = (fit.at_min if at == "min" else fit.at_max).nodes
        total_nodes += nodes
        named = "" if pool.role == "all" else f"{pool.role} pool: "
        price = fit.node_price
        items.append(
            _line(
                catalog,
                f"{named}{nodes} × {node.name} ({node.vcpu} vCPU, {node.memory_gib} GiB)"
                + _RATE_WORDS[fit.rate],
                nodes,
                unit="node",
                price=price,
                unit_price=price.monthly,
                kind=f"nodes:{pool.role}",
            )
        )
        per_node = node.egress_included_gb
        included_per_node += nodes * (catalog.egress.included_gb_per_node if per_node is None else per_node)
    for extra in catalog.node_extras:
        items.append(
            _line(
                catalog,
                f"{extra.description} × {total_nodes}",
                total_nodes,
                unit="node",
                price=extra.price,
                unit_price=extra.price.monthly,
                kind="node-extra",
            )
        )
    boot = catalog.boot_disk
    if choices.boot_disks and boot is not None and boot.price is not None:
        items.append(
            _line(
                catalog,
                f"Boot disks ({boot.product}, {boot.size_gb} GB × {total_nodes} nodes)",
                boot.size_gb * total_nodes,
                unit="GB-month",
                price=boot.price,
                unit_price=boot.price.amount,
                kind="boot-disk",
                note=f"default size: {boot.size_source}" + (f"; {boot.note}" if boot.note else ""),
            )
        )
    plane = catalog.control_plane
    items.append(
        _line(
            catalog,
            "Control plane",
            1,
            unit="cluster",
            price=plane.price,
            unit_price=plane.price.monthly,
            kind="control-plane",
            note=plane.note,
        )
    )
    # Volumes are provisioned, and billed, in whole GiB.
    shared_gib = -(-totals.shared_storage // GIB)
    block_gib = -(-(totals.at_min.storage - totals.shared_storage) // GIB)
    if choices.storage_gb is not None:
        block_gib = choices.storage_gb
    if block_gib:
        storage = catalog.ssd_storage if choices.ssd and catalog.ssd_storage else catalog.block_storage
        items.append(
            _line(
                catalog,
                f"Block storage ({storage.product})",
                block_gib,
                unit="GB-month",
                price=storage.price,
                unit_price=storage.price.amount,
                kind="block-storage",
            )
        )
    files = catalog.shared_storage
    if shared_gib and files is not None and files.price is not None:
        billed = max(shared_gib, files.min_gb)
        least = f", {files.min_gb} GB at least" if billed > shared_gib else ""
        items.append(
            _line(
                catalog,
                f"ReadWriteMany storage ({files.product}{least})",
                billed,
                unit="GB-month",
                price=files.price,
                unit_price=files.price.amount,
                kind="shared-storage",
                note=files.note + (f"; {files.price.note}" if files.price.note else ""),
            )
        )
    if totals.has_ingress:
        balancer = catalog.load_balancer
        items.append(
            _line(
                catalog,
                f"Load balancer ({balancer.product})",
                1,
                unit="LB",
                price=balancer.price,
                unit_price=balancer.price.monthly,
                kind="load-balancer",
            )
        )
    items += _managed_items(totals, catalog, managed_classes(totals, catalog))
    egress = catalog.egress
    included = egress.included_gb + included_per_node
    items.append(
        _line(
            catalog,
            f"Egress: {egress_gb} GB, {included} GB free",
            max(0, egress_gb - included),
            unit="GB",
            price=egress.price,
            unit_price=egress.price.amount,
            kind="egress",
        )
    )
    return items


def managed_classes(totals: CapacityTotals, catalog: Catalog) -> tuple[ManagedClass, ...]:
    """The class `catalog`'s provider runs for each external datastore that names one."""
    return tuple(
        managed_class(catalog, store.name, store.kind, store.instance_class, store.multi_az)
        for store in totals.managed
        if store.instance_class is not None
    )


def _managed_items(
    totals: CapacityTotals, catalog: Catalog, managed: tuple[ManagedClass, ...]
) -> list[LineItem]:
    """A line per external datastore the provider runs a class for (and one for its allocated
    storage, where the catalog prices it); the same at minimum and maximum replicas."""
    items: list[LineItem] = []
    stores = {store.name: store for store in totals.managed}
    for chosen in managed:
        database = chosen.database
        if database is None:
            continue  # said in the estimate's notes
        store = stores[chosen.store]
        price, zones = database.price, "Single-AZ"
        if chosen.multi_az and database.multi_az_price is not None:
            price, zones = database.multi_az_price, "Multi-AZ"
        notes = [store.host, chosen.note, price.note]
        items.append(
            _line(
                catalog,
                f"{database.service} {store.name!r}: {database.name}, {zones}",
                1,
                unit="instance",
                price=price,
                unit_price=price.monthly,
                kind="managed-database",
                note="; ".join(note for note in notes if note),
            )
        )
        storage = catalog.managed_database_storage
        if store.storage and storage is not None:
            storage_price = (storage.multi_az_price if chosen.multi_az else None) or storage.price
            items.append(
                _line(
                    catalog,
                    f"{database.service} {store.name!r}: storage ({storage.product}, {zones})",
                    -(-store.storage // GIB),
                    unit="GB-month",
                    price=storage_price,
                    unit_price=storage_price.amount,
                    kind="managed-database",
                    note=storage_price.note,
                )
            )
    return items


def _managed_notes(totals: CapacityTotals, managed: tuple[ManagedClass, ...]) -> list[str]:
    return [
        f"{store.name} is an external {store.kind} datastore ({store.host}) without"
        " external.instance_class: not priced, give the class to count it"
        for store in totals.managed
        if store.instance_class is None
    ] + [chosen.note for chosen in managed if chosen.database is None and chosen.note]


def _layout(totals: CapacityTotals, choices: Choices) -> Layout:
    if choices.layout is not None:
        return choices.layout
    return "database" if totals.database_pool else "one"


def _pool_floor(totals: CapacityTotals, role: PoolRole, min_nodes: int | None) -> int:
    """The fewest nodes of a pool: the environment's for the pool with the app; for the database
    pool, one per instance of its largest datastore (a primary and its replicas on different
    nodes); two for a spot pool, so one preemption leaves a node."""
    if role == "database":
        counts: dict[str, int] = {}
        for group in totals.demand("min", "database").pods:
            counts[group.spread or group.name] = counts.get(group.spread or group.name, 0) + group.count
        return max(counts.values(), default=1)
    if role == "stateless":
        return 2
    return default_min_nodes(totals.environment) if min_nodes is None else min_nodes


def _pools(
    totals: CapacityTotals,
    catalog: Catalog,
    layout: Layout,
    choices: Choices,
    headroom_percent: int,
    min_nodes: int | None,
) -> tuple[tuple[RolePool, ...], list[str]]:
    pools: list[RolePool] = []
    notes: list[str] = []
    for role in _LAYOUT_ROLES[layout]:
        demand = totals.demand("min", role)
        if not demand.pods and role in ("database", "stateless"):
            continue  # nothing to hold: the other pool is the one pool
        rate: Rate = "spot" if role == "stateless" else choices.rate
        given = choices.node_types.get(role)
        if given is not None:
            plan, unfit = pinned_pool(
                totals, catalog, given[0], given[1], role=role, rate=rate, headroom_percent=headroom_percent
            )
            if unfit is not None:
                notes.append(
                    f"{role} pool as given ({given[1]} × {given[0]}) does not hold its pods: {unfit}"
                )
        else:
            plan = fit_node_pool(
                totals,
                catalog,
                headroom_percent=headroom_percent,
                min_nodes=_pool_floor(totals, role, min_nodes),
                role=role,
                rate=rate,
            )
        pools.append(RolePool(role, plan))
    if layout != "one" and len(pools) == 1:
        held = "datastore" if layout == "database" else "stateless service"
        notes.append(f"no {held} pods in the cluster: one pool holds them all")
        pools = [
            RolePool(
                "all",
                fit_node_pool(
                    totals, catalog, headroom_percent=headroom_percent, min_nodes=min_nodes, rate=choices.rate
                ),
            )
        ]
    return tuple(pools), notes


def _pool_notes(catalog: Catalog, pools: tuple[RolePool, ...], totals: CapacityTotals) -> list[str]:
    notes: list[str] = []
    for pool in pools:
        node = pool.plan.chosen.node_type
        if node.cpu_credits:
            where = "" if pool.role == "all" else f" ({pool.role} pool)"
            notes.append(f"{node.name}{where} has limited sustained CPU: {node.cpu_credits}")
        fit = pool.plan.chosen
        if fit.rate == "committed" and node.committed_price is None:
            notes.append(f"{node.name}: no committed rate in the catalog, priced on-demand")
    boot = catalog.boot_disk
    if boot is not None and boot.price is None and boot.note:
        notes.append(f"boot disks: {boot.note}")
    files = catalog.shared_storage
    if totals.shared_storage and (files is None or files.price is None):
        why = files.note if files is not None else "no ReadWriteMany storage class in the catalog"
        notes.append(f"ReadWriteMany volumes ({format_gib(totals.shared_storage)} GiB) not priced: {why}")
    return notes


def estimate_cost(
    totals: CapacityTotals,
    catalog: Catalog,
    *,
    headroom_percent: int = 20,
    egress_gb: int = DEFAULT_EGRESS_GB,
    min_nodes: int | None = None,
    choices: Choices | None = None,
) -> CostEstimate:
    """The monthly cost of one environment on one provider, line by line."""
    if egress_gb < 0:
        raise ValueError("egress cannot be negative")
    choices = choices or Choices()
    layout = _layout(totals, choices)
    if layout == "spot" and not (catalog.spot and catalog.spot.sold):
        why = catalog.spot.note if catalog.spot else f"{catalog.provider} sells no spot capacity"
        raise NoNodeTypeFitsError(why)
    pools, pool_notes = _pools(totals, catalog, layout, choices, headroom_percent, min_nodes)
    items = _items(totals, catalog, pools, "min", egress_gb, choices)
    at_max = _items(totals, catalog, pools, "max", egress_gb, choices)
    managed = managed_classes(totals, catalog)
    notes = [
        catalog.note,
        *pool_notes,
        *_pool_notes(catalog, pools, totals),
        *_managed_notes(totals, managed),
    ]
    if not catalog.control_plane.managed:
        notes.append(catalog.control_plane.note)
    if catalog.exchange is not None:
        notes.append(
            f"{catalog.currency} converted at {catalog.exchange.usd_per_unit} USD per"
            f" {catalog.currency} ({catalog.exchange.as_of}, {catalog.exchange.source})"
        )
    return CostEstimate(
        provider=catalog.provider,
        title=catalog.title,
        region=catalog.region,
        currency=catalog.currency,
        usd_rate=catalog.usd_rate,
        as_of=catalog.as_of,
        pool=pools[0].plan,
        egress_gb=egress_gb,
        items=tuple(items),
        total=sum((item.monthly for item in items), Decimal(0)),
        total_usd=sum((item.monthly_usd for item in items), Decimal(0)),
        total_at_max=sum((item.monthly for item in at_max), Decimal(0)),
        total_usd_at_max=sum((item.monthly_usd for item in at_max), Decimal(0)),
        notes=tuple(notes),
        pools=pools,
        option=option_name(layout, choices.rate) if not choices.node_types else "as given",
        managed=managed,
    )


def option_name(layout: Layout, rate: Rate) -> str:
    pools = {
        "one": "one pool",
        "database": "app + database pools",
        "spot": "stateful pool + stateless services on spot",
    }[layout]
    return f"{pools}, {rate}"


def chosen_catalogs(providers: Iterable[str] | None) -> list[Catalog]:
    """The catalogs of `providers` (every one when None), each once, in the order given."""
    chosen: list[Catalog] = []
    for catalog in catalogs() if providers is None else [load_catalog(name) for name in providers]:
        if catalog not in chosen:
            chosen.append(catalog)
    return chosen


def estimate_costs(
    totals: CapacityTotals,
    providers: Iterable[str] | None = None,
    *,
    headroom_percent: int = 20,
    egress_gb: int = DEFAULT_EGRESS_GB,
    min_nodes: int | None = None,
) -> CostComparison:
    """Estimates for the named providers (every catalog when None), cheapest first.

    Raises UnknownProviderError for a provider without a catalog, and NoNodeTypeFitsError when
    no provider at all can hold the pods.
    """
    chosen = chosen_catalogs(providers)
    estimates: list[CostEstimate] = []
    unavailable: list[tuple[str, str]] = []
    for catalog in chosen:
        try:
            estimates.append(
                estimate_cost(
                    totals,
                    catalog,
                    headroom_percent=headroom_percent,
                    egress_gb=egress_gb,
                    min_nodes=min_nodes,
                )
            )
        except NoNodeTypeFitsError as exc:
            if len(chosen) == 1:
                raise
            unavailable.append((catalog.provider, exc.message))
    if not estimates:
        raise NoNodeTypeFitsError("; ".join(why for _, why in unavailable))
    estimates.sort(key=lambda estimate: (estimate.total_usd, estimate.provider))
    return CostComparison(
        stack=totals.stack,
        environment=totals.environment,
        estimates=tuple(estimates),
        unavailable=tuple(unavailable),
    )
