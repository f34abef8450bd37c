"""Each provider's options side by side (`cost --compare`): one pool or the datastores on a pool
of their own, on-demand or committed rates, the stateless services on spot where the provider
sells spot and the catalog prices it. The cheapest option comes first; none shown is cheaper."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..errors import NoNodeTypeFitsError
from ._catalog import Catalog
from ._cost import DEFAULT_EGRESS_GB, Choices, CostEstimate, Layout, chosen_catalogs, estimate_cost
from ._fit import Rate
from ._totals import CapacityTotals


@dataclass(frozen=True)
class ProviderOptions:
    """One provider's priced options, cheapest first, and what could not be priced and why."""

    provider: str
    title: str
    options: tuple[CostEstimate, ...]
    not_priced: tuple[str, ...]

    @property
    def cheapest(self) -> CostEstimate:
        return self.options[0]


@dataclass(frozen=True)
class OptionsComparison:
    stack: str
    environment: str
    providers: tuple[ProviderOptions, ...]
    """Cheapest provider (by its cheapest option) first."""
    unavailable: tuple[tuple[str, str], ...]


def provider_options(
    totals: CapacityTotals,
    catalog: Catalog,
    *,
    headroom_percent: int = 20,
    egress_gb: int = DEFAULT_EGRESS_GB,
    min_nodes: int | None = None,
) -> ProviderOptions:
    """Every option of one provider; raises NoNodeTypeFitsError when none can hold the pods."""
    layouts: list[Layout] = ["one"]
    if totals.demand("min", "database").pods:
        layouts.append("database")
    rates: list[Rate] = ["on-demand"]
    if any(node.committed_price for node in catalog.node_types):
        rates.append("committed")
    not_priced: list[str] = []
    if not any(node.committed_price for node in catalog.node_types):
        not_priced.append("committed/reserved rates: none in the catalog")
    spot = catalog.spot
    stateless = bool(totals.demand("min", "stateless").pods)
    if spot is not None and not spot.sold:
        not_priced.append(f"spot: {spot.note}")
    elif spot is not None and stateless and not any(node.spot_price for node in catalog.node_types):
        not_priced.append(f"spot for the stateless services: {spot.note}")
    elif spot is not None and stateless:
        layouts.append("spot")
    options: list[CostEstimate] = []
    for layout in layouts:
        for rate in rates:
            try:
                option = estimate_cost(
                    totals,
                    catalog,
                    headroom_percent=headroom_percent,
                    egress_gb=egress_gb,
                    min_nodes=min_nodes,
                    choices=Choices(layout=layout, rate=rate),
                )
                if layout == "spot" and spot is not None:
                    # A spot price is a dated snapshot, never a promise: say so beside the figures.
                    option = replace(option, notes=(*option.notes, f"spot: {spot.note}"))
                options.append(option)
            except NoNodeTypeFitsError as exc:
                if layout == "one" and rate == "on-demand":
                    raise
                not_priced.append(f"{layout} ({rate}): {exc.message}")
    options.sort(key=lambda option: (option.total_usd, option.total_usd_at_max, option.option))
    return ProviderOptions(catalog.provider, catalog.title, tuple(options), tuple(not_priced))


def compare_options(
    totals: CapacityTotals,
    providers: Iterable[str] | None = None,
    *,
    headroom_percent: int = 20,
    egress_gb: int = DEFAULT_EGRESS_GB,
    min_nodes: int | None = None,
) -> OptionsComparison:
    chosen = chosen_catalogs(providers)
    found: list[ProviderOptions] = []
    unavailable: list[tuple[str, str]] = []
    for catalog in chosen:
        try:
            found.append(
                provider_options(
                    totals,
                    catalog,
                    headroom_percent=headroom_percent,
                    egress_gb=egress_gb,
                    min_nodes=min_nodes,
                )
            )
        except NoNodeTypeFitsError as exc:
            unavailable.append((catalog.provider, exc.message))
    if not found:
        raise NoNodeTypeFitsError("; ".join(why for _, why in unavailable))
    found.sort(key=lambda item: (item.cheapest.total_usd, item.provider))
    return OptionsComparison(totals.stack, totals.environment, tuple(found), tuple(unavailable))
