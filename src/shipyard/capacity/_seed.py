"""Seed 004's priced plan ("Cloud Provider Comparison") and why shipyard's figures differ from it.

The seed prices a fixed plan per provider: 3 application nodes and 2 database nodes, 500 GB of
SSD, a load balancer, 100 GB of egress and the control plane. `seed_choices` expresses that plan
as `Choices`, and `reconcile_with_seed` walks from shipyard's own estimate to it one choice at a
time, then compares each of the seed's lines with the same line at the catalog's list prices.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ._catalog import Catalog
from ._cost import DEFAULT_EGRESS_GB, Choices, CostEstimate, estimate_cost
from ._totals import CapacityTotals


@dataclass(frozen=True)
class SeedLine:
    description: str
    kind: str
    """The kind of shipyard line it matches (`LineItem.kind`)."""
    usd: Decimal


@dataclass(frozen=True)
class SeedPlan:
    provider: str
    total_usd: Decimal
    app: tuple[str, int]
    database: tuple[str, int]
    storage_gb: int
    lines: tuple[SeedLine, ...]
    node_note: str = ""
    """How the seed's node names map to the catalog's, where they are not the catalog's own."""


def _lines(*lines: tuple[str, str, int]) -> tuple[SeedLine, ...]:
    return tuple(SeedLine(text, kind, Decimal(usd)) for text, kind, usd in lines)


SEED_004: dict[str, SeedPlan] = {
    plan.provider: plan
    for plan in (
        SeedPlan(
            "gcp",
            Decimal(630),
            ("e2-standard-4", 3),
            ("e2-highmem-2", 2),
            500,
            _lines(
                ("3x e2-standard-4 nodes", "nodes:app", 240),
                ("2x e2-highmem-2 nodes", "nodes:database", 200),
                ("Load Balancer", "load-balancer", 20),
                ("Persistent Disks (500GB SSD)", "block-storage", 85),
                ("Network egress (100GB)", "egress", 12),
                ("GKE management fee", "control-plane", 73),
            ),
        ),
        SeedPlan(
            "aws",
            Decimal(694),
            ("t3.xlarge", 3),
            ("r5.large", 2),
            500,
            _lines(
                ("EKS control plane", "control-plane", 73),
                ("3x t3.xlarge nodes", "nodes:app", 300),
                ("2x r5.large nodes", "nodes:database", 240),
                ("Application Load Balancer", "load-balancer", 22),
                ("EBS volumes (500GB SSD)", "block-storage", 50),
                ("Network egress (100GB)", "egress", 9),
            ),
        ),
        SeedPlan(
            "digitalocean",
            Decimal(374),
            ("c-2", 3),
            ("c-4", 2),
            500,
            _lines(
                ("DOKS control plane", "control-plane", 0),
                ("3x 4GB/2vCPU droplets", "nodes:app", 144),
                ("2x 8GB/4vCPU droplets", "nodes:database", 168),
                ("Load Balancer", "load-balancer", 12),
                ("Block Storage (500GB)", "block-storage", 50),
            ),
            node_note=(
                "the seed's 4GB/2vCPU at $48 and 8GB/4vCPU at $84 match the CPU-optimised c-2 and"
                " c-4 (c-4 is $84 exactly; basic 2 vCPU/4 GB Droplets are $24)"
            ),
        ),
        SeedPlan(
            "hetzner",
            Decimal(186),
            ("CPX31", 3),
            ("CPX21", 2),
            500,
            _lines(
                ("3x CPX31 (4vCPU, 8GB)", "nodes:app", 90),
                ("2x CPX21 (3vCPU, 4GB)", "nodes:database", 40),
                ("Load Balancer", "load-balancer", 6),
                ("Volumes (500GB SSD)", "block-storage", 50),
            ),
        ),
    )
}


def seed_choices(provider: str) -> Choices:
    """Seed 004's plan for `provider` as choices: its two pools as given, 500 GB of SSD."""
    plan = SEED_004[provider]
    return Choices(
        layout="database",
        node_types={"app": plan.app, "database": plan.database},
        storage_gb=plan.storage_gb,
        ssd=True,
    )


@dataclass(frozen=True)
class Step:
    """One choice of the seed's applied on top of the previous step."""

    description: str
    total_usd: Decimal
    delta_usd: Decimal


@dataclass(frozen=True)
class LineDifference:
    kind: str
    seed: str
    """The seed's line(s), or '' when the seed has none of this kind."""
    seed_usd: Decimal
    today_usd: Decimal
    """The same kind of line at the catalog's list prices (the seed's choices)."""

    @property
    def delta_usd(self) -> Decimal:
        return self.today_usd - self.seed_usd


@dataclass(frozen=True)
class Reconciliation:
    provider: str
    seed_total_usd: Decimal
    steps: tuple[Step, ...]
    """From shipyard's estimate to the seed's plan at today's list prices, one choice a step."""
    as_seed: CostEstimate
    lines: tuple[LineDifference, ...]
    notes: tuple[str, ...]

    @property
    def difference_percent(self) -> Decimal:
        """The seed's plan at the catalog's prices against the seed's own figure, in percent."""
        return (self.as_seed.total_usd - self.seed_total_usd) * 100 / self.seed_total_usd


_KIND_NAMES = {
    "nodes:app": "application nodes",
    "nodes:database": "database nodes",
    "node-extra": "per-node extras",
    "boot-disk": "boot disks",
    "control-plane": "control plane",
    "block-storage": "block storage",
    "shared-storage": "ReadWriteMany storage",
    "load-balancer": "load balancer",
    "managed-database": "managed databases",
    "egress": "egress",
}


def kind_name(kind: str) -> str:
    return _KIND_NAMES.get(kind, kind)


def reconcile_with_seed(
    totals: CapacityTotals,
    catalog: Catalog,
    *,
    headroom_percent: int = 20,
    egress_gb: int = DEFAULT_EGRESS_GB,
    min_nodes: int | None = None,
) -> Reconciliation:
    """Why shipyard's figure for `catalog`'s provider differs from seed 004's, line by line."""
    plan = SEED_004[catalog.provider]
    seeded = seed_choices(catalog.provider)
    storage = catalog.ssd_storage or catalog.block_storage

    def priced(choices: Choices) -> CostEstimate:
        return estimate_cost(
            totals,
            catalog,
            headroom_percent=headroom_percent,
            egress_gb=egress_gb,
            min_nodes=min_nodes,
            choices=choices,
        )

    walk = [
        (
            "shipyard's estimate: one pool fitted to the requests, the spec's volumes, boot disks",
            Choices(layout="one"),
        ),
        ("+ a database pool (the seed's two pools), fitted", Choices(layout="database")),
        (
            f"+ the seed's nodes: {plan.app[1]} × {plan.app[0]} and {plan.database[1]} × {plan.database[0]}",
            Choices(layout="database", node_types=seeded.node_types),
        ),
        (f"+ {plan.storage_gb} GB of SSD ({storage.product}) instead of the spec's volumes", seeded),
    ]
    steps: list[Step] = []
    previous: Decimal | None = None
    estimate: CostEstimate | None = None
    for description, choices in walk:
        estimate = priced(choices)
        delta = Decimal(0) if previous is None else estimate.total_usd - previous
        steps.append(Step(description, estimate.total_usd, delta))
        previous = estimate.total_usd
    assert estimate is not None
    steps.append(
        Step(
            "seed 004's figure (older or other unit prices, lines it leaves out)",
            plan.total_usd,
            plan.total_usd - estimate.total_usd,
        )
    )
    kinds = list(
        dict.fromkeys([*(line.kind for line in plan.lines), *(item.kind for item in estimate.items)])
    )
    lines = tuple(
        LineDifference(
            kind=kind,
            seed="; ".join(line.description for line in plan.lines if line.kind == kind),
            seed_usd=sum((line.usd for line in plan.lines if line.kind == kind), Decimal(0)),
            today_usd=sum((item.monthly_usd for item in estimate.items if item.kind == kind), Decimal(0)),
        )
        for kind in kinds
    )
    notes = [note for note in estimate.notes if "pool as given" in note]
    if plan.node_note:
        notes.append(plan.node_note)
    if catalog.exchange is not None:
        notes.append(f"{catalog.currency} prices converted at {catalog.exchange.usd_per_unit} USD")
    return Reconciliation(
        provider=catalog.provider,
        seed_total_usd=plan.total_usd,
        steps=tuple(steps),
        as_seed=estimate,
        lines=lines,
        notes=tuple(notes),
    )
