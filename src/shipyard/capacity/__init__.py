"""Capacity planning: requests/limits totals, node-pool fitting and monthly cost per provider.

    totals = capacity_totals(spec.stack("production"))      # exact millicores and bytes
    plan = fit_node_pool(totals, load_catalog("gcp"))       # node type and count, min and max
    comparison = estimate_costs(totals)                     # every provider, cheapest first

Everything here is pure; the only thing read is the price catalogs shipped as data files in
`shipyard/capacity/catalogs/`.
"""

from ..errors import NoNodeTypeFitsError
from ._catalog import (
    HOURS_PER_MONTH,
    Catalog,
    NodeType,
    Price,
    catalogs,
    known_providers,
    load_catalog,
    parse_catalog,
)
from ._cost import (
    DEFAULT_EGRESS_GB,
    CostComparison,
    CostEstimate,
    LineItem,
    estimate_cost,
    estimate_costs,
)
from ._fit import (
    NodePoolFit,
    PoolPlan,
    PoolSize,
    Rejected,
    default_min_nodes,
    fit_node_pool,
    node_allocatable,
    node_reservation,
    size_pool,
)
from ._format import format_cores, format_gib, format_money, limits_note, second_total_label
from ._report import (
    amounts_data,
    comparison_data,
    estimate_data,
    pool_data,
    totals_data,
)
from ._totals import (
    Amounts,
    CapacityTotals,
    ComponentRow,
    Demand,
    Pod,
    PodGroup,
    Transient,
    capacity_totals,
)

__all__ = [
    "DEFAULT_EGRESS_GB",
    "HOURS_PER_MONTH",
    "Amounts",
    "CapacityTotals",
    "Catalog",
    "ComponentRow",
    "CostComparison",
    "CostEstimate",
    "Demand",
    "LineItem",
    "NoNodeTypeFitsError",
    "NodePoolFit",
    "NodeType",
    "Pod",
    "PodGroup",
    "PoolPlan",
    "PoolSize",
    "Price",
    "Rejected",
    "Transient",
    "amounts_data",
    "capacity_totals",
    "catalogs",
    "comparison_data",
    "default_min_nodes",
    "estimate_cost",
    "estimate_costs",
    "estimate_data",
    "fit_node_pool",
    "format_cores",
    "format_gib",
    "format_money",
    "known_providers",
    "limits_note",
    "load_catalog",
    "node_allocatable",
    "node_reservation",
    "parse_catalog",
    "pool_data",
    "second_total_label",
    "size_pool",
    "totals_data",
]
