"""Human figures and plain data (for `-o json|yaml` and the API) of totals, pools and costs.

Plain data carries the exact integers (millicores, bytes) next to the human figures (cores,
GiB), and money as decimal strings, so nothing is lost to floating point on the way out. A limit
the spec does not give is null in a component's figures, never 0, and `limits_missing` lists the
components without one, so the limits totals cannot hide them.
"""

from __future__ import annotations

from typing import Any

from ._compare import OptionsComparison
from ._cost import CostComparison, CostEstimate, LineItem
from ._fit import NodePoolFit, PoolPlan, PoolSize
from ._format import format_cores, format_gib
from ._seed import Reconciliation
from ._totals import Amounts, CapacityTotals, ComponentRow, Pod, Transient


def _cpu(millicores: int) -> dict[str, Any]:
    return {"millicores": millicores, "cores": format_cores(millicores)}


def _bytes(count: int) -> dict[str, Any]:
    return {"bytes": count, "gib": format_gib(count)}


def amounts_data(amounts: Amounts, limits_missing: tuple[str, ...] = ()) -> dict[str, Any]:
    """Amounts as data; a limit named in `limits_missing` is null (there is none), not 0."""
    return {
        "cpu_request": _cpu(amounts.cpu_request),
        "cpu_limit": None if "cpu" in limits_missing else _cpu(amounts.cpu_limit),
        "memory_request": _bytes(amounts.memory_request),
        "memory_limit": None if "memory" in limits_missing else _bytes(amounts.memory_limit),
        "storage": _bytes(amounts.storage),
    }


def _pod_data(pod: Pod) -> dict[str, Any]:
    return {
        "cpu_request": _cpu(pod.cpu_request),
        "cpu_limit": None if "cpu" in pod.limits_missing else _cpu(pod.cpu_limit),
        "memory_request": _bytes(pod.memory_request),
        "memory_limit": None if "memory" in pod.limits_missing else _bytes(pod.memory_limit),
    }


def _row_data(row: ComponentRow) -> dict[str, Any]:
    missing = row.pod.limits_missing if row.pod else ()
    return {
        "component": row.name,
        "of": row.component,
        "kind": row.kind,
        "replicas": {"min": row.replicas_min, "max": row.replicas_max},
        "per_replica": _pod_data(row.pod) if row.pod else None,
        "at_min": amounts_data(row.at_min, missing),
        "at_max": amounts_data(row.at_max, missing),
    }


def _transient_data(item: Transient) -> dict[str, Any]:
    return {
        "name": item.name,
        "kind": item.kind,
        "service": item.service,
        "schedule": item.schedule,
        "per_run": _pod_data(item.pod),
        "note": item.note,
    }


def totals_data(totals: CapacityTotals) -> dict[str, Any]:
    return {
        "stack": totals.stack,
        "environment": totals.environment,
        "components": [_row_data(row) for row in totals.rows],
        "total": {"at_min": amounts_data(totals.at_min), "at_max": amounts_data(totals.at_max)},
        "exporters": [_row_data(row) for row in totals.exporters],
        "total_with_exporters": {
            "at_min": amounts_data(totals.with_exporters_at_min),
            "at_max": amounts_data(totals.with_exporters_at_max),
        },
        "control_plane": [_row_data(row) for row in totals.control_plane],
        "total_with_exporters_and_shipyard": {
            "at_min": amounts_data(totals.second_at_min),
            "at_max": amounts_data(totals.second_at_max),
        },
        "limits_missing": [
            {"component": row.name, "limits": list(row.pod.limits_missing)}
            for row in totals.limits_missing
            if row.pod is not None
        ],
        "transient": [_transient_data(item) for item in totals.transient],
    }


def _size_data(size: PoolSize) -> dict[str, Any]:
    return {
        "nodes": size.nodes,
        "cpu_requested": _cpu(size.cpu_requested),
        "memory_requested": _bytes(size.memory_requested),
        "placement": [list(node) for node in size.placement],
    }


def _fit_data(fit: NodePoolFit) -> dict[str, Any]:
    node = fit.node_type
    return {
        "node_type": node.name,
        "vcpu": node.vcpu,
        "memory_gib": str(node.memory_gib),
        "family": node.family,
        "reserved_per_node": {"cpu": _cpu(fit.reserved_cpu), "memory": _bytes(fit.reserved_memory)},
        "allocatable_per_node": {
            "cpu": _cpu(fit.allocatable_cpu),
            "memory": _bytes(fit.allocatable_memory),
        },
        "monthly_per_node": str(fit.monthly_per_node),
        "at_min": _size_data(fit.at_min),
        "at_max": _size_data(fit.at_max),
    }


def pool_data(plan: PoolPlan) -> dict[str, Any]:
    return {
        "provider": plan.provider,
        "headroom_percent": plan.headroom_percent,
        "min_nodes": plan.min_nodes,
        "chosen": _fit_data(plan.chosen),
        "other_fits": [
            {
                "node_type": fit.node_type.name,
                "nodes": {"min": fit.at_min.nodes, "max": fit.at_max.nodes},
                "monthly_at_min": str(fit.monthly_at_min),
            }
            for fit in plan.candidates[1:]
        ],
        "rejected": [{"node_type": item.node_type, "reason": item.reason} for item in plan.rejected],
    }


def _item_data(item: LineItem) -> dict[str, Any]:
    return {
        "description": item.description,
        "quantity": item.quantity,
        "unit": item.unit,
        "unit_price": str(item.unit_price),
        "monthly": str(item.monthly),
        "monthly_usd": str(item.monthly_usd),
        "list_price": {
            "amount": str(item.price.amount),
            "per": item.price.per,
            "as_of": item.price.as_of,
            "source": item.price.source,
        },
        "note": item.note,
        "kind": item.kind,
    }


def estimate_data(estimate: CostEstimate) -> dict[str, Any]:
    return {
        "provider": estimate.provider,
        "title": estimate.title,
        "region": estimate.region,
        "currency": estimate.currency,
        "usd_rate": str(estimate.usd_rate),
        "as_of": estimate.as_of,
        "option": estimate.option,
        "node_pool": pool_data(estimate.pool),
        "node_pools": [
            {
                "role": pool.role,
                "rate": pool.plan.chosen.rate,
                "proven": pool.plan.chosen.proven,
                **pool_data(pool.plan),
            }
            for pool in estimate.pools
        ],
        "egress_gb": estimate.egress_gb,
        "items": [_item_data(item) for item in estimate.items],
        "total": str(estimate.total),
        "total_usd": str(estimate.total_usd),
        "total_at_max": str(estimate.total_at_max),
        "total_usd_at_max": str(estimate.total_usd_at_max),
        "notes": list(estimate.notes),
    }


def comparison_data(comparison: CostComparison) -> dict[str, Any]:
    return {
        "stack": comparison.stack,
        "environment": comparison.environment,
        "estimates": [estimate_data(estimate) for estimate in comparison.estimates],
        "unavailable": [{"provider": provider, "reason": why} for provider, why in comparison.unavailable],
    }


def options_data(comparison: OptionsComparison) -> dict[str, Any]:
    return {
        "stack": comparison.stack,
        "environment": comparison.environment,
        "providers": [
            {
                "provider": item.provider,
                "title": item.title,
                "cheapest": item.cheapest.option,
                "options": [estimate_data(option) for option in item.options],
                "not_priced": list(item.not_priced),
            }
            for item in comparison.providers
        ],
        "unavailable": [{"provider": provider, "reason": why} for provider, why in comparison.unavailable],
    }


def reconciliation_data(reconciliation: Reconciliation) -> dict[str, Any]:
    return {
        "provider": reconciliation.provider,
        "seed_total_usd": str(reconciliation.seed_total_usd),
        "as_seed_total_usd": str(reconciliation.as_seed.total_usd),
        "difference_percent": str(round(reconciliation.difference_percent, 1)),
        "steps": [
            {
                "description": step.description,
                "total_usd": str(step.total_usd),
                "delta_usd": str(step.delta_usd),
            }
            for step in reconciliation.steps
        ],
        "lines": [
            {
                "kind": line.kind,
                "seed": line.seed,
                "seed_usd": str(line.seed_usd),
                "today_usd": str(line.today_usd),
                "delta_usd": str(line.delta_usd),
            }
            for line in reconciliation.lines
        ],
        "as_seed": estimate_data(reconciliation.as_seed),
        "notes": list(reconciliation.notes),
    }
