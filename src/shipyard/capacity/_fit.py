"""Node-pool fitting: which node type, and how many nodes, hold the requests with room to spare.

The rules, in the order they are applied to each node type of a catalog:

1. **Allocatable.** Each node loses what the provider keeps for the kubelet, the OS and the
   eviction threshold. shipyard uses GKE's published kube-reserved rule for every provider, as a
   documented, slightly conservative stand-in for each provider's own (EKS and DOKS keep a
   similar share): CPU 6 % of the first core, 1 % of the second, 0.5 % of the next two and
   0.25 % of every core above four; memory 25 % of the first 4 GiB, 20 % of the next 4 GiB,
   10 % of the next 8 GiB, 6 % of the next 112 GiB and 2 % above 128 GiB (255 MiB on machines
   under 1 GiB), plus a 100 MiB eviction threshold.
2. **Every pod fits on one node**: the largest pod request is at most a node's allocatable.
3. **Headroom**: (all pod requests + the spec's system reserve) × (1 + headroom) is at most the
   pool's total allocatable, for CPU and for memory alike.
4. **Placement**: the pods are placed first-fit-decreasing (largest share of a node first),
   spreading the pods of one component over different nodes where they fit, onto nodes that
   each hold an equal share of the system reserve; a node is added until every pod is placed.
   The placement found is kept, so every count comes with a proof that the pods fit.
5. **Spare nodes**: at least 2 nodes, 3 in an environment named `production`, so that a node can
   fail or be drained.

The cheapest node type whose pool holds the pods at minimum replicas wins; ties go to the one
cheaper at maximum replicas, then fewer nodes, then the name. The count at maximum replicas is
the ceiling to give the cluster autoscaler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from ..errors import NoNodeTypeFitsError
from ..spec import GIB
from ._catalog import Catalog, NodeType, Price
from ._format import format_cores, format_gib
from ._totals import CapacityTotals, Demand, PoolRole

Rate = Literal["on-demand", "committed", "spot"]
"""How a pool's nodes are bought: list price, a reserved/committed rate, or spot."""

MIB = 2**20
EVICTION_THRESHOLD = 100 * MIB

_CPU_STEPS: tuple[tuple[int, Fraction], ...] = (
    (1, Fraction(6, 100)),
    (1, Fraction(1, 100)),
    (2, Fraction(5, 1000)),
)
_CPU_ABOVE = Fraction(25, 10000)
_MEMORY_STEPS: tuple[tuple[int, Fraction], ...] = (
    (4 * GIB, Fraction(25, 100)),
    (4 * GIB, Fraction(20, 100)),
    (8 * GIB, Fraction(10, 100)),
    (112 * GIB, Fraction(6, 100)),
)
_MEMORY_ABOVE = Fraction(2, 100)
_SMALL_MACHINE_MEMORY = 255 * MIB


def _tiered(amount: int, steps: tuple[tuple[int, Fraction], ...], above: Fraction) -> Fraction:
    reserved = Fraction(0)
    left = amount
    for size, share in steps:
        taken = min(left, size)
        reserved += taken * share
        left -= taken
    return reserved + left * above


def node_reservation(node: NodeType) -> tuple[int, int]:
    """What a node keeps for itself: (millicores, bytes), rounded up."""
    cpu = math.ceil(_tiered(node.vcpu, _CPU_STEPS, _CPU_ABOVE) * 1000)
    memory = node_memory(node)
    tiered = math.ceil(_tiered(memory, _MEMORY_STEPS, _MEMORY_ABOVE))
    kept = _SMALL_MACHINE_MEMORY if memory < GIB else tiered
    return cpu, kept + EVICTION_THRESHOLD


def node_memory(node: NodeType) -> int:
    return int(node.memory_gib * GIB)


def node_allocatable(node: NodeType) -> tuple[int, int]:
    """What pods may request on one node: (millicores, bytes)."""
    cpu, memory = node_reservation(node)
    return node.vcpu * 1000 - cpu, node_memory(node) - memory


def default_min_nodes(environment: str) -> int:
    """Enough nodes that one can fail: 3 in production, 2 elsewhere."""
    return 3 if environment == "production" else 2


@dataclass(frozen=True)
class PoolSize:
    """A node count and the placement that proves the pods fit on that many nodes."""

    nodes: int
    cpu_requested: int
    """All pod requests plus the system reserve, millicores."""
    memory_requested: int
    placement: tuple[tuple[str, ...], ...]
    """The pods on each node, e.g. ('app-1', 'postgres (primary)-1')."""


@dataclass(frozen=True)
class NodePoolFit:
    """One node type sized for a stack, at minimum and at maximum replicas."""

    node_type: NodeType
    reserved_cpu: int
    reserved_memory: int
    allocatable_cpu: int
    allocatable_memory: int
    at_min: PoolSize
    at_max: PoolSize
    monthly_per_node: Decimal
    """The node's price plus every per-node extra, a month, in the catalog's currency."""
    rate: Rate = "on-demand"
    proven: bool = True
    """False for a pool given as type and count (`pinned`) that the pods do not fit."""

    @property
    def node_price(self) -> Price:
        """The catalog price the node is bought at (its rate's, else on-demand)."""
        node = self.node_type
        chosen = {"committed": node.committed_price, "spot": node.spot_price}.get(self.rate)
        return chosen or node.price

    @property
    def monthly_at_min(self) -> Decimal:
        return self.monthly_per_node * self.at_min.nodes

    @property
    def monthly_at_max(self) -> Decimal:
        return self.monthly_per_node * self.at_max.nodes


@dataclass(frozen=True)
class Rejected:
    node_type: str
    reason: str


@dataclass(frozen=True)
class PoolPlan:
    """The node-pool choice for one provider: the winner and why the others lost."""

    provider: str
    headroom_percent: int
    min_nodes: int
    chosen: NodePoolFit
    candidates: tuple[NodePoolFit, ...]
    """Every node type that fits, cheapest first (the first is `chosen`)."""
    rejected: tuple[Rejected, ...]


def _describe(millicores: int, memory: int) -> str:
    return f"{format_cores(millicores)} cores / {format_gib(memory)} GiB"


def _pods(demand: Demand) -> list[tuple[str, str, int, int]]:
    """(group, pod name, cpu, memory) for every pod."""
    return [
        (group.spread or group.name, f"{group.name}-{index}", group.cpu, group.memory)
        for group in demand.pods
        for index in range(1, group.count + 1)
    ]


def _place(
    pods: list[tuple[str, str, int, int]], nodes: int, cpu: int, memory: int
) -> tuple[tuple[str, ...], ...] | None:
    """First-fit-decreasing with spreading; None when some pod finds no room."""
    if cpu < 0 or memory < 0:
        return None

    def share(pod: tuple[str, str, int, int]) -> Fraction:
        return max(Fraction(pod[2], max(cpu, 1)), Fraction(pod[3], max(memory, 1)))

    order = sorted(pods, key=lambda pod: (-share(pod), pod[1]))
    free = [[cpu, memory] for _ in range(nodes)]
    groups: list[set[str]] = [set() for _ in range(nodes)]
    names: list[list[str]] = [[] for _ in range(nodes)]
    for group, name, pod_cpu, pod_memory in order:
        fitting = [i for i in range(nodes) if free[i][0] >= pod_cpu and free[i][1] >= pod_memory]
        if not fitting:
            return None
        spread = [i for i in fitting if group not in groups[i]]
        chosen = (spread or fitting)[0]
        free[chosen][0] -= pod_cpu
        free[chosen][1] -= pod_memory
        groups[chosen].add(group)
        names[chosen].append(name)
    return tuple(tuple(sorted(node)) for node in names)


def size_pool(
    demand: Demand, node: NodeType, *, headroom_percent: int = 20, min_nodes: int = 2
) -> PoolSize | str:
    """The fewest nodes of one type that hold `demand`; a reason (str) when none can."""
    if headroom_percent < 0:
        raise ValueError("headroom cannot be negative")
    cpu, memory = node_allocatable(node)
    if cpu <= 0 or memory <= 0:
        return f"a {node.name} node keeps everything for the system"
    for group in demand.pods:
        if group.count and (group.cpu > cpu or group.memory > memory):
            return (
                f"pod {group.name} asks {_describe(group.cpu, group.memory)}; a {node.name} node"
                f" offers {_describe(cpu, memory)} to pods"
            )
    scale = 100 + headroom_percent
    needed = max(
        min_nodes,
        1,
        math.ceil(demand.cpu * scale / (cpu * 100)),
        math.ceil(demand.memory * scale / (memory * 100)),
    )
    pods = _pods(demand)
    for nodes in range(needed, needed + len(pods) + 1):
        placement = _place(
            pods,
            nodes,
            cpu - math.ceil(demand.reserve_cpu / nodes),
            memory - math.ceil(demand.reserve_memory / nodes),
        )
        if placement is not None:
            return PoolSize(nodes, demand.cpu, demand.memory, placement)
    return f"the pods do not fit next to each {node.name} node's share of the system reserve"


def _rate_price(node: NodeType, rate: Rate) -> Price | None:
    if rate == "spot":
        return node.spot_price
    if rate == "committed":
        return node.committed_price or node.price  # on-demand where no commitment is listed
    return node.price


def fit_node_pool(
    totals: CapacityTotals,
    catalog: Catalog,
    *,
    headroom_percent: int = 20,
    min_nodes: int | None = None,
    role: PoolRole = "all",
    rate: Rate = "on-demand",
    node_type: str | None = None,
) -> PoolPlan:
    """Choose the cheapest node type (and count) of `catalog` for the stack's requests: of the
    pods `role` names, bought at `rate` (spot: only types with a spot price), of the one type
    `node_type` when given."""
    floor = default_min_nodes(totals.environment) if min_nodes is None else min_nodes
    at_min, at_max = totals.demand("min", role), totals.demand("max", role)
    extras = sum((extra.price.monthly for extra in catalog.node_extras), Decimal(0))
    fits: list[NodePoolFit] = []
    rejected: list[Rejected] = []
    for node in catalog.node_types:
        if node_type is not None and node.name != node_type:
            continue
        price = _rate_price(node, rate)
        if price is None:
            rejected.append(Rejected(node.name, f"no {rate} price in the catalog"))
            continue
        low = size_pool(at_min, node, headroom_percent=headroom_percent, min_nodes=floor)
        high = size_pool(at_max, node, headroom_percent=headroom_percent, min_nodes=floor)
        if isinstance(low, str) or isinstance(high, str):
            reason = low if isinstance(low, str) else f"at maximum replicas: {high}"
            rejected.append(Rejected(node.name, reason))
            continue
        reserved_cpu, reserved_memory = node_reservation(node)
        allocatable_cpu, allocatable_memory = node_allocatable(node)
        fits.append(
            NodePoolFit(
                node_type=node,
                reserved_cpu=reserved_cpu,
                reserved_memory=reserved_memory,
                allocatable_cpu=allocatable_cpu,
                allocatable_memory=allocatable_memory,
                at_min=low,
                at_max=high,
                monthly_per_node=price.monthly + extras,
                rate=rate,
            )
        )
    if node_type is not None and not fits and not rejected:
        raise NoNodeTypeFitsError(f"{catalog.provider} has no node type {node_type!r} in its catalog")
    if not fits:
        reasons = "; ".join(f"{item.node_type}: {item.reason}" for item in rejected[:3])
        raise NoNodeTypeFitsError(
            f"no {catalog.provider} node type can hold the {totals.environment} pods ({reasons})"
        )
    fits.sort(key=lambda fit: (fit.monthly_at_min, fit.monthly_at_max, fit.at_min.nodes, fit.node_type.name))
    return PoolPlan(
        provider=catalog.provider,
        headroom_percent=headroom_percent,
        min_nodes=floor,
        chosen=fits[0],
        candidates=tuple(fits),
        rejected=tuple(rejected),
    )


def pinned_pool(
    totals: CapacityTotals,
    catalog: Catalog,
    node_type: str,
    nodes: int,
    *,
    role: PoolRole = "all",
    rate: Rate = "on-demand",
    headroom_percent: int = 20,
) -> tuple[PoolPlan, str | None]:
    """A pool given as type and count (e.g. a plan written by hand): fitted when exactly that
    many hold the pods, else the count as given, marked unproven, with the reason (None when it
    fits)."""
    try:
        plan = fit_node_pool(
            totals,
            catalog,
            headroom_percent=headroom_percent,
            min_nodes=nodes,
            role=role,
            rate=rate,
            node_type=node_type,
        )
        needed = plan.chosen.at_min.nodes
        if needed == nodes:
            return plan, None
        reason = f"too few: the pods and the headroom need {needed} × {node_type}"
    except NoNodeTypeFitsError as exc:
        reason = exc.message
    node = next((n for n in catalog.node_types if n.name == node_type), None)
    if node is None:
        raise NoNodeTypeFitsError(reason)
    price = _rate_price(node, rate) or node.price
    extras = sum((extra.price.monthly for extra in catalog.node_extras), Decimal(0))
    sizes = [
        PoolSize(nodes, demand.cpu, demand.memory, ())
        for demand in (totals.demand("min", role), totals.demand("max", role))
    ]
    reserved_cpu, reserved_memory = node_reservation(node)
    allocatable_cpu, allocatable_memory = node_allocatable(node)
    fit = NodePoolFit(
        node_type=node,
        reserved_cpu=reserved_cpu,
        reserved_memory=reserved_memory,
        allocatable_cpu=allocatable_cpu,
        allocatable_memory=allocatable_memory,
        at_min=sizes[0],
        at_max=sizes[1],
        monthly_per_node=price.monthly + extras,
        rate=rate,
        proven=False,
    )
    plan = PoolPlan(
        provider=catalog.provider,
        headroom_percent=headroom_percent,
        min_nodes=nodes,
        chosen=fit,
        candidates=(fit,),
        rejected=(Rejected(node_type, reason),),
    )
    return plan, reason
