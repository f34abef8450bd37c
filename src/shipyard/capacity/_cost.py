"""Monthly cost per provider: every figure is a line item with its quantity and unit price.

cost = nodes (from fitting) + per-node extras + control plane + block storage for the total
storage + one load balancer when any service has an ingress + egress beyond what is included +
each external (managed) datastore that names its instance class: the instance and its storage.
Each line's monthly figure is rounded to the cent once, and the total is the sum of the rounded
lines, so the lines always add up to the total shown. Providers are compared in US dollars.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from ..errors import NoNodeTypeFitsError, UnknownInstanceClassError
from ..spec import GIB
from ._catalog import Catalog, ManagedDatabase, Price, catalogs, load_catalog
from ._fit import NodePoolFit, PoolPlan, fit_node_pool
from ._totals import CapacityTotals, ManagedDatastore

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
    egress_gb: int
    items: tuple[LineItem, ...]
    total: Decimal
    total_usd: Decimal
    total_at_max: Decimal
    """The same estimate with the node count at maximum replicas."""
    total_usd_at_max: Decimal
    notes: tuple[str, ...]


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
    )


def _items(
    totals: CapacityTotals, catalog: Catalog, fit: NodePoolFit, nodes: int, egress_gb: int
) -> list[LineItem]:
    node = fit.node_type
    node_name = f"{nodes} × {node.name} ({node.vcpu} vCPU, {node.memory_gib} GiB)"
    items = [_line(catalog, node_name, nodes, unit="node", price=node.price, unit_price=node.price.monthly)]
    for extra in catalog.node_extras:
        items.append(
            _line(
                catalog,
                f"{extra.description} × {nodes}",
                nodes,
                unit="node",
                price=extra.price,
                unit_price=extra.price.monthly,
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
            note=plane.note,
        )
    )
    # Volumes are provisioned, and billed, in whole GiB.
    storage_gib = -(-totals.at_min.storage // GIB)
    if storage_gib:
        storage = catalog.block_storage
        items.append(
            _line(
                catalog,
                f"Block storage ({storage.product})",
                storage_gib,
                unit="GB-month",
                price=storage.price,
                unit_price=storage.price.amount,
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
            )
        )
    items += _managed_items(totals, catalog)
    egress = catalog.egress
    per_node = node.egress_included_gb
    if per_node is None:
        per_node = egress.included_gb_per_node
    included = egress.included_gb + per_node * nodes
    items.append(
        _line(
            catalog,
            f"Egress: {egress_gb} GB, {included} GB free",
            max(0, egress_gb - included),
            unit="GB",
            price=egress.price,
            unit_price=egress.price.amount,
        )
    )
    return items


def _price_list(catalog: Catalog, store: ManagedDatastore) -> tuple[Catalog, ManagedDatabase]:
    """The catalog that prices `store`'s instance class: this provider's when it lists it, else
    the one that does (the database is where it is, whichever provider runs the cluster)."""
    assert store.instance_class is not None
    field = f"datastores.{store.name}.external.instance_class"
    for owner in (catalog, *(other for other in catalogs() if other != catalog)):
        database = owner.managed_database(store.instance_class)
        if database is None:
            continue
        if database.engine != store.kind:
            raise UnknownInstanceClassError(
                f"{field}: {store.instance_class!r} is a {database.engine} class ({database.service}),"
                f" but {store.name!r} is {store.kind}"
            )
        return owner, database
    listed = sorted(
        database.name
        for owner in catalogs()
        for database in owner.managed_databases
        if database.engine == store.kind
    )
    raise UnknownInstanceClassError(
        f"{field}: {store.instance_class!r} is in no price catalog; the {store.kind} classes"
        f" listed are: {', '.join(listed) or 'none'}"
    )


def _managed_items(totals: CapacityTotals, catalog: Catalog) -> list[LineItem]:
    """A line per external datastore that names its instance class (and one for its allocated
    storage), in this catalog's currency; the same at minimum and maximum replicas."""
    items: list[LineItem] = []
    for store in totals.managed:
        if store.instance_class is None:
            continue  # said in the estimate's notes
        owner, database = _price_list(catalog, store)
        # A price read from another provider's catalog, in this catalog's currency.
        rate = owner.usd_rate / catalog.usd_rate
        foreign = "" if owner == catalog else f"; priced from the {owner.provider} catalog"
        price = database.price
        zones = "Single-AZ"
        if store.multi_az:
            if database.multi_az_price is None:
                raise UnknownInstanceClassError(
                    f"datastores.{store.name}.external.multi_az: {database.name} has no Multi-AZ"
                    f" price in the {owner.provider} catalog; set multi_az: false or add the price"
                )
            price, zones = database.multi_az_price, "Multi-AZ"
        items.append(
            _line(
                catalog,
                f"{database.service} {store.name!r}: {database.name}, {zones}",
                1,
                unit="instance",
                price=price,
                unit_price=price.monthly * rate,
                note=f"{store.host}{foreign}" + (f"; {price.note}" if price.note else ""),
            )
        )
        storage = owner.managed_database_storage
        if store.storage and storage is not None:
            storage_price = storage.multi_az_price if store.multi_az else storage.price
            if storage_price is None:
                storage_price = storage.price
            items.append(
                _line(
                    catalog,
                    f"{database.service} {store.name!r}: storage ({storage.product}, {zones})",
                    -(-store.storage // GIB),
                    unit="GB-month",
                    price=storage_price,
                    unit_price=storage_price.amount * rate,
                    note=storage_price.note,
                )
            )
    return items


def _managed_notes(totals: CapacityTotals) -> list[str]:
    return [
        f"{store.name} is an external {store.kind} datastore ({store.host}) without"
        " external.instance_class: not priced, give the class to count it"
        for store in totals.managed
        if store.instance_class is None
    ]


def estimate_cost(
    totals: CapacityTotals,
    catalog: Catalog,
    *,
    headroom_percent: int = 20,
    egress_gb: int = DEFAULT_EGRESS_GB,
    min_nodes: int | None = None,
) -> CostEstimate:
    """The monthly cost of one environment on one provider, line by line."""
    if egress_gb < 0:
        raise ValueError("egress cannot be negative")
    pool = fit_node_pool(totals, catalog, headroom_percent=headroom_percent, min_nodes=min_nodes)
    fit = pool.chosen
    items = _items(totals, catalog, fit, fit.at_min.nodes, egress_gb)
    at_max = _items(totals, catalog, fit, fit.at_max.nodes, egress_gb)
    notes = [catalog.note, *_managed_notes(totals)]
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
        pool=pool,
        egress_gb=egress_gb,
        items=tuple(items),
        total=sum((item.monthly for item in items), Decimal(0)),
        total_usd=sum((item.monthly_usd for item in items), Decimal(0)),
        total_at_max=sum((item.monthly for item in at_max), Decimal(0)),
        total_usd_at_max=sum((item.monthly_usd for item in at_max), Decimal(0)),
        notes=tuple(notes),
    )


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
    chosen: list[Catalog] = []
    for catalog in catalogs() if providers is None else [load_catalog(name) for name in providers]:
        if catalog not in chosen:
            chosen.append(catalog)
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
