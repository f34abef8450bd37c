"""Capacity planning: requests/limits totals, node-pool fitting and monthly cost per provider.

    totals = capacity_totals(spec.stack("production"))      # exact millicores and bytes
    plan = fit_node_pool(totals, load_catalog("gcp"))       # node type and count, min and max
    comparison = estimate_costs(totals)                     # every provider, cheapest first
    options = compare_options(totals)                       # each provider's options side by side
    why = reconcile_with_seed(totals, load_catalog("gcp"))  # seed 004's plan against shipyard's

Everything here is pure; the only thing read is the price catalogs shipped as data files in
`shipyard/capacity/catalogs/`.
"""

from ..errors import NoNodeTypeFitsError
from ._catalog import (
    HOURS_PER_MONTH,
    Catalog,
    ManagedClass,
    NodeType,
    Price,
    catalogs,
    known_providers,
    load_catalog,
    managed_class,
    parse_catalog,
)
from ._compare import OptionsComparison, ProviderOptions, compare_options, provider_options
from ._cost import (
    DEFAULT_EGRESS_GB,
    Choices,
    CostComparison,
    CostEstimate,
    LineItem,
    RolePool,
    estimate_cost,
    estimate_costs,
)
from ._fit import (
    NodePoolFit,
    PoolPlan,
    PoolSize,
    Rate,
    Rejected,
    default_min_nodes,
    fit_node_pool,
    node_allocatable,
    node_reservation,
    pinned_pool,
    size_pool,
)
from ._format import format_cores, format_gib, format_money, limits_note, second_total_label
from ._report import (
    amounts_data,
    comparison_data,
    estimate_data,
    options_data,
    pool_data,
    reconciliation_data,
    totals_data,
)
from ._seed import (
    SEED_004,
    LineDifference,
    Reconciliation,
    SeedPlan,
    Step,
    kind_name,
    reconcile_with_seed,
    seed_choices,
)
from ._totals import (
    Amounts,
    CapacityTotals,
    ComponentRow,
    Demand,
    Pod,
    PodGroup,
    PoolRole,
    Transient,
    capacity_totals,
)

__all__ = [
    "DEFAULT_EGRESS_GB",
    "HOURS_PER_MONTH",
    "SEED_004",
    "Amounts",
    "CapacityTotals",
    "Catalog",
    "Choices",
    "ComponentRow",
    "CostComparison",
    "CostEstimate",
    "Demand",
    "LineDifference",
    "LineItem",
    "ManagedClass",
    "NoNodeTypeFitsError",
    "NodePoolFit",
    "NodeType",
    "OptionsComparison",
    "Pod",
    "PodGroup",
    "PoolPlan",
    "PoolRole",
    "PoolSize",
    "Price",
    "ProviderOptions",
    "Rate",
    "Reconciliation",
    "Rejected",
    "RolePool",
    "SeedPlan",
    "Step",
    "Transient",
    "amounts_data",
    "capacity_totals",
    "catalogs",
    "compare_options",
    "comparison_data",
    "default_min_nodes",
    "estimate_cost",
    "estimate_costs",
    "estimate_data",
    "fit_node_pool",
    "format_cores",
    "format_gib",
    "format_money",
    "kind_name",
    "known_providers",
    "limits_note",
    "load_catalog",
    "managed_class",
    "node_allocatable",
    "node_reservation",
    "options_data",
    "parse_catalog",
    "pinned_pool",
    "pool_data",
    "provider_options",
    "reconcile_with_seed",
    "reconciliation_data",
    "second_total_label",
    "seed_choices",
    "size_pool",
    "totals_data",
]
