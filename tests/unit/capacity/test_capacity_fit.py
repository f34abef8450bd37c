from __future__ import annotations

from decimal import Decimal

import pytest

from shipyard.capacity import (
    CapacityTotals,
    Demand,
    NodeType,
    NoNodeTypeFitsError,
    PodGroup,
    PoolSize,
    capacity_totals,
    fit_node_pool,
    load_catalog,
    node_allocatable,
    node_reservation,
    size_pool,
)
from shipyard.spec import GIB, Spec, load_spec_text

MIB = 2**20


def _node(vcpu: int, memory_gib: str, name: str = "n", price: str = "10") -> NodeType:
    return NodeType.model_validate(
        {
            "name": name,
            "vcpu": vcpu,
            "memory_gib": memory_gib,
            "price": {"amount": price, "per": "month", "as_of": "2024-11", "source": "https://example.com"},
        }
    )


@pytest.mark.parametrize(
    ("vcpu", "memory_gib", "cpu", "memory"),
    [
        # GKE's published examples: 4 vCPU keeps 80m; 16 GiB keeps 2.6 GiB (+100 MiB eviction).
        (4, "16", 80, int(Decimal("2.6") * GIB) + 100 * MIB),
        (2, "8", 70, int(Decimal("1.8") * GIB) + 100 * MIB),
        (1, "0.5", 60, 255 * MIB + 100 * MIB),
        (8, "32", 90, int(Decimal("3.56") * GIB) + 100 * MIB),
        (64, "256", 230, int(Decimal("11.88") * GIB) + 100 * MIB),
    ],
)
def test_kube_reserved_rule(vcpu: int, memory_gib: str, cpu: int, memory: int) -> None:
    reserved_cpu, reserved_memory = node_reservation(_node(vcpu, memory_gib))
    assert reserved_cpu == cpu
    assert abs(reserved_memory - memory) <= 1  # rounded up to the byte
    assert node_allocatable(_node(vcpu, memory_gib)) == (
        vcpu * 1000 - reserved_cpu,
        int(Decimal(memory_gib) * GIB) - reserved_memory,
    )


def _demand(*groups: tuple[str, int, int, int], reserve: tuple[int, int] = (0, 0)) -> Demand:
    return Demand(tuple(PodGroup(*group) for group in groups), *reserve)


def test_a_pod_bigger_than_the_node_is_rejected() -> None:
    reason = size_pool(_demand(("db", 1, 2000, GIB)), _node(2, "8"))
    assert isinstance(reason, str)
    assert "pod db asks 2 cores" in reason
    assert "1.93 cores" in reason


def test_headroom_adds_nodes() -> None:
    node = _node(4, "16")  # 3920m allocatable
    demand = _demand(("app", 7, 1000, GIB))  # 7 cores
    without = size_pool(demand, node, headroom_percent=0, min_nodes=1)
    with_headroom = size_pool(demand, node, headroom_percent=20, min_nodes=1)
    assert isinstance(without, PoolSize)
    assert isinstance(with_headroom, PoolSize)
    # Packing alone: 3 pods a node → 3 nodes. 8.4 cores of requests + headroom → 3 nodes too.
    assert without.nodes == 3
    assert with_headroom.nodes == 3
    bigger = size_pool(_demand(("app", 7, 1100, GIB)), node, headroom_percent=50, min_nodes=1)
    assert isinstance(bigger, PoolSize)
    assert bigger.nodes == 3  # ceil(7.7 × 1.5 / 3.92) = 3
    biggest = size_pool(_demand(("app", 7, 1100, GIB)), node, headroom_percent=60, min_nodes=1)
    assert isinstance(biggest, PoolSize)
    assert biggest.nodes == 4  # ceil(7.7 × 1.6 / 3.92) = 4


def test_min_nodes_is_a_floor() -> None:
    result = size_pool(_demand(("app", 1, 100, MIB)), _node(4, "16"), min_nodes=3)
    assert isinstance(result, PoolSize)
    assert result.nodes == 3
    assert sum(len(node) for node in result.placement) == 1


def test_packing_adds_nodes_that_the_sums_do_not_need() -> None:
    # Three pods of 2.5 cores: 7.5 cores fit in 2 × 3.92 by the sums, but not one pod a node less.
    result = size_pool(_demand(("big", 3, 2500, GIB)), _node(4, "16"), headroom_percent=0, min_nodes=1)
    assert isinstance(result, PoolSize)
    assert result.nodes == 3
    assert sorted(len(node) for node in result.placement) == [1, 1, 1]


def test_replicas_of_one_component_are_spread() -> None:
    result = size_pool(_demand(("app", 3, 100, MIB), ("db", 2, 100, MIB)), _node(8, "32"), min_nodes=3)
    assert isinstance(result, PoolSize)
    for node in result.placement:
        assert sum(name.startswith("app-") for name in node) == 1
        assert sum(name.startswith("db-") for name in node) <= 1


def test_reserve_is_shared_by_the_nodes() -> None:
    # Each of 2 nodes gives 1 core of a 2-core reserve: a 3-core pod no longer fits a 3.92 node.
    demand = _demand(("app", 1, 3000, GIB), reserve=(2000, 0))
    result = size_pool(demand, _node(4, "16"), headroom_percent=0, min_nodes=2)
    assert isinstance(result, PoolSize)
    assert result.nodes == 3
    assert result.cpu_requested == 5000


def test_apricode_production_pools(production: CapacityTotals) -> None:
    gcp = fit_node_pool(production, load_catalog("gcp"))
    assert gcp.min_nodes == 3
    assert gcp.chosen.node_type.name == "e2-standard-4"
    assert (gcp.chosen.at_min.nodes, gcp.chosen.at_max.nodes) == (3, 4)
    # The seed's r5.large / e2-highmem-2 cannot hold the 2-core PostgreSQL primary.
    rejected = {item.node_type: item.reason for item in gcp.rejected}
    assert "pod postgres (primary) asks 2 cores" in rejected["e2-highmem-2"]
    aws = fit_node_pool(production, load_catalog("aws"))
    assert aws.chosen.node_type.name == "t3.xlarge"
    assert "r5.large" in {item.node_type for item in aws.rejected}
    costs = [fit.monthly_at_min for fit in aws.candidates]
    assert costs == sorted(costs)


def test_primary_and_replica_land_on_different_nodes(production: CapacityTotals) -> None:
    plan = fit_node_pool(production, load_catalog("gcp"))
    placed = {name for node in plan.chosen.at_min.placement for name in node}
    assert {"postgres (primary)-1", "postgres (replica)-1", "postgres-exporter-1"} <= placed
    for node in plan.chosen.at_min.placement:
        # The exporter may share a node with either; the two instances may not.
        assert sum(name.startswith("postgres (") for name in node) <= 1


def test_outside_production_two_nodes_suffice(apricode: Spec) -> None:
    plan = fit_node_pool(capacity_totals(apricode.stack("dev")), load_catalog("gcp"))
    assert plan.min_nodes == 2
    assert plan.chosen.at_min.nodes == 2
    assert (
        fit_node_pool(
            capacity_totals(apricode.stack("dev")), load_catalog("gcp"), min_nodes=5
        ).chosen.at_min.nodes
        == 5
    )


def test_tie_break_is_deterministic(production: CapacityTotals) -> None:
    # m5.xlarge and m6i.xlarge cost the same: the name decides.
    plan = fit_node_pool(production, load_catalog("aws"))
    names = [fit.node_type.name for fit in plan.candidates]
    assert names.index("m5.xlarge") < names.index("m6i.xlarge")
    assert fit_node_pool(production, load_catalog("aws")) == plan


HUGE = """
name: huge
services:
  crunch:
    role: worker
    image: crunch:1
    resources:
      requests: {cpu: "100", memory: 8Gi}
environments:
  production: {}
images: {environments: []}  # sizing, not which images production may run
"""


def test_no_node_type_fits_is_a_user_error() -> None:
    totals = capacity_totals(load_spec_text(HUGE).stack("production"))
    with pytest.raises(NoNodeTypeFitsError, match="no gcp node type can hold") as caught:
        fit_node_pool(totals, load_catalog("gcp"))
    assert caught.value.exit_code == 2


def test_negative_headroom_is_refused() -> None:
    with pytest.raises(ValueError, match="headroom"):
        size_pool(_demand(("a", 1, 1, 1)), _node(2, "4"), headroom_percent=-1)
