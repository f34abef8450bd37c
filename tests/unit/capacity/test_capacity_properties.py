"""Properties of totals, fitting and cost on generated stacks and node types."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.capacity import (
    HOURS_PER_MONTH,
    Amounts,
    Demand,
    NodeType,
    PodGroup,
    PoolSize,
    capacity_totals,
    catalogs,
    estimate_costs,
    node_allocatable,
    size_pool,
)
from shipyard.spec import Stack

cpu = st.integers(min_value=1, max_value=4000).map(lambda m: f"{m}m")
memory = st.integers(min_value=1, max_value=8192).map(lambda m: f"{m}Mi")


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for part in ("requests", "limits"):
        amounts = {key: draw(kind) for key, kind in (("cpu", cpu), ("memory", memory)) if draw(st.booleans())}
        if amounts:
            result[part] = amounts
    return result


@st.composite
def stacks(draw: st.DrawFn) -> Stack:
    services: dict[str, Any] = {}
    for index in range(draw(st.integers(0, 4))):
        service: dict[str, Any] = {
            "role": "worker",
            "image": "img:1",
            "resources": draw(resources()),
            "replicas": draw(st.integers(0, 5)),
        }
        if draw(st.booleans()):
            low = draw(st.integers(1, 5))
            service["autoscaling"] = {"min": low, "max": draw(st.integers(low, 12)), "cpu_percent": 70}
        if draw(st.booleans()):
            service["volumes"] = {"data": {"size": f"{draw(st.integers(1, 500))}Gi", "mount": "/data"}}
        services[f"svc{index}"] = service
    datastores: dict[str, Any] = {}
    if draw(st.booleans()):
        datastores["db"] = {
            "kind": "postgresql",
            "replicas": draw(st.integers(0, 3)),
            "resources": draw(resources()),
            "storage": {"size": f"{draw(st.integers(1, 500))}Gi"},
        }
    if draw(st.booleans()):
        datastores["cache"] = {"kind": "redis", "resources": draw(resources())}
    components = {
        f"comp{index}": {"replicas": draw(st.integers(1, 3)), "resources": draw(resources())}
        for index in range(draw(st.integers(0, 3)))
    }
    reserve = {"cpu": f"{draw(st.integers(0, 2000))}m", "memory": f"{draw(st.integers(0, 4096))}Mi"}
    return Stack.model_validate(
        {
            "name": "gen",
            "environment": draw(st.sampled_from(["production", "staging"])),
            "services": services,
            "datastores": datastores,
            "platform": {"components": components, "reserve": reserve},
        }
    )


def _at_least(high: Amounts, low: Amounts) -> bool:
    return all(getattr(high, field) >= getattr(low, field) for field in vars(low))


@given(stacks())
def test_totals_at_max_are_at_least_totals_at_min(stack: Stack) -> None:
    totals = capacity_totals(stack)
    assert _at_least(totals.at_max, totals.at_min)
    for row in totals.rows:
        assert _at_least(row.at_max, row.at_min)
        assert row.replicas_max >= row.replicas_min
    assert totals.at_min == sum((row.at_min for row in totals.rows), Amounts())
    assert totals.at_max == sum((row.at_max for row in totals.rows), Amounts())
    assert totals.at_min.storage == totals.at_max.storage
    assert totals.with_exporters_at_min == sum((row.at_min for row in totals.exporters), totals.at_min)
    assert totals.with_exporters_at_max == sum((row.at_max for row in totals.exporters), totals.at_max)
    for at in ("min", "max"):
        # The node pool holds every pod: the components' and the exporters'.
        demand = totals.demand(at)  # type: ignore[arg-type]
        expected = totals.with_exporters_at_min if at == "min" else totals.with_exporters_at_max
        assert (demand.cpu, demand.memory) == (expected.cpu_request, expected.memory_request)


node_types = st.builds(
    lambda vcpu, memory_gib: NodeType.model_validate(
        {
            "name": f"n{vcpu}-{memory_gib}",
            "vcpu": vcpu,
            "memory_gib": memory_gib,
            "price": {"amount": 1, "per": "hour", "as_of": "2024-11", "source": "https://example.com"},
        }
    ),
    st.integers(1, 32),
    st.sampled_from(["0.5", "1", "2", "4", "8", "16", "32", "64", "128"]),
)
groups = st.lists(
    st.builds(
        PodGroup,
        name=st.sampled_from(["a", "b", "c", "d"]),
        count=st.integers(0, 8),
        cpu=st.integers(0, 8000),
        memory=st.integers(0, 32 * 2**30),
    ),
    max_size=4,
    unique_by=lambda group: group.name,
)
demands = st.builds(
    Demand,
    pods=groups.map(tuple),
    reserve_cpu=st.integers(0, 2000),
    reserve_memory=st.integers(0, 4 * 2**30),
)


@settings(max_examples=300, deadline=None)
@given(demands, node_types, st.integers(0, 100), st.integers(1, 4))
def test_fitting_places_every_pod_within_allocatable_and_headroom(
    demand: Demand, node: NodeType, headroom: int, min_nodes: int
) -> None:
    result = size_pool(demand, node, headroom_percent=headroom, min_nodes=min_nodes)
    cpu, memory = node_allocatable(node)
    if isinstance(result, str):
        # Only refused when some pod (or the node's own reservation) cannot fit on a node.
        assert (
            cpu <= 0
            or memory <= 0
            or any(group.count and (group.cpu > cpu or group.memory > memory) for group in demand.pods)
            or "reserve" in result
        )
        return
    assert isinstance(result, PoolSize)
    assert result.nodes >= min_nodes
    assert len(result.placement) == result.nodes
    # Requests plus headroom are within the pool's allocatable.
    assert demand.cpu * (100 + headroom) <= result.nodes * cpu * 100
    assert demand.memory * (100 + headroom) <= result.nodes * memory * 100
    # Every pod is placed exactly once, and each node holds what it was given plus its reserve share.
    size = {f"{group.name}-{i}": group for group in demand.pods for i in range(1, group.count + 1)}
    placed = [name for node_pods in result.placement for name in node_pods]
    assert sorted(placed) == sorted(size)
    for node_pods in result.placement:
        assert sum(size[name].cpu for name in node_pods) + math.ceil(demand.reserve_cpu / result.nodes) <= cpu
        assert (
            sum(size[name].memory for name in node_pods) + math.ceil(demand.reserve_memory / result.nodes)
            <= memory
        )


def test_every_hourly_price_is_730_hours_a_month() -> None:
    for catalog in catalogs():
        for node in catalog.node_types:
            if node.price.per == "hour":
                assert node.price.monthly == node.price.amount * HOURS_PER_MONTH == node.price.amount * 730
            else:
                assert node.price.monthly == node.price.amount


@settings(max_examples=60, deadline=None)
@given(stacks(), st.integers(0, 100), st.integers(0, 5000))
def test_cost_line_items_sum_to_the_total(stack: Stack, headroom: int, egress: int) -> None:
    totals = capacity_totals(stack)
    comparison = estimate_costs(totals, headroom_percent=headroom, egress_gb=egress)
    usd = [estimate.total_usd for estimate in comparison.estimates]
    assert usd == sorted(usd)
    for estimate in comparison.estimates:
        assert estimate.total == sum(item.monthly for item in estimate.items)
        assert estimate.total_usd == sum(item.monthly_usd for item in estimate.items)
        assert estimate.total_at_max >= estimate.total
        nodes = estimate.items[0]
        fit = estimate.pool.chosen
        assert nodes.quantity == fit.at_min.nodes
        assert nodes.monthly == (fit.node_type.price.monthly * fit.at_min.nodes).quantize(Decimal("0.01"))
        assert nodes.unit_price == fit.node_type.price.monthly
        for item in estimate.items:
            assert item.monthly >= 0
            assert item.price.source.startswith("https://")
