from __future__ import annotations

from decimal import Decimal

import pytest

from shipyard.capacity import (
    CapacityTotals,
    NoNodeTypeFitsError,
    capacity_totals,
    comparison_data,
    estimate_cost,
    estimate_costs,
    load_catalog,
)
from shipyard.errors import UnknownProviderError
from shipyard.spec import Spec, load_spec_text


def test_apricode_production_providers_in_seed_order(production: CapacityTotals) -> None:
    # Seed 004: Hetzner $186 < DigitalOcean $374 < GCP $630 < AWS $694.
    comparison = estimate_costs(production)
    assert [estimate.provider for estimate in comparison.estimates] == [
        "hetzner",
        "digitalocean",
        "gcp",
        "aws",
    ]
    assert comparison.unavailable == ()


def test_apricode_production_figures(production: CapacityTotals) -> None:
    figures = {
        estimate.provider: (
            estimate.pool.chosen.node_type.name,
            estimate.pool.chosen.at_min.nodes,
            estimate.total,
            estimate.total_usd,
        )
        for estimate in estimate_costs(production).estimates
    }
    assert figures == {
        "hetzner": ("CX32", 4, Decimal("50.43"), Decimal("54.47")),
        "digitalocean": ("s-4vcpu-8gb", 4, Decimal("240.00"), Decimal("240.00")),
        # GKE and EKS bill each node's boot disk apart (3 × 100 GB pd-balanced, 3 × 20 GB gp3).
        "gcp": ("e2-standard-4", 3, Decimal("462.74"), Decimal("462.74")),
        "aws": ("t3.xlarge", 3, Decimal("487.45"), Decimal("487.45")),
    }


def test_aws_line_items(production: CapacityTotals) -> None:
    estimate = estimate_cost(production, load_catalog("aws"))
    lines = [(item.description, item.quantity, item.unit_price, item.monthly) for item in estimate.items]
    assert lines == [
        ("3 × t3.xlarge (4 vCPU, 16 GiB)", 3, Decimal("121.472"), Decimal("364.42")),
        ("Boot disks (EBS gp3 root volume, 20 GB × 3 nodes)", 60, Decimal("0.08"), Decimal("4.80")),
        ("Control plane", 1, Decimal("73.0"), Decimal("73.00")),
        ("Block storage (EBS gp3)", 360, Decimal("0.08"), Decimal("28.80")),
        ("Load balancer (Application Load Balancer)", 1, Decimal("16.425"), Decimal("16.43")),
        ("Egress: 100 GB, 100 GB free", 0, Decimal("0.09"), Decimal("0.00")),
    ]
    assert estimate.total == sum(item.monthly for item in estimate.items)
    assert estimate.items[0].price.source == "https://aws.amazon.com/ec2/pricing/on-demand/"
    assert (estimate.pool.chosen.at_max.nodes, estimate.total_at_max) == (4, Decimal("610.52"))


def test_hetzner_converts_euros_line_by_line(production: CapacityTotals) -> None:
    estimate = estimate_cost(production, load_catalog("hetzner"))
    assert estimate.currency == "EUR"
    for item in estimate.items:
        assert item.monthly_usd == (item.monthly * estimate.usd_rate).quantize(Decimal("0.01"))
    assert estimate.total_usd == sum(item.monthly_usd for item in estimate.items)
    descriptions = [item.description for item in estimate.items]
    assert "Primary IPv4 address × 4" in descriptions
    assert any("k3s" in note for note in estimate.notes)
    assert any("EUR converted at 1.08" in note for note in estimate.notes)


def test_egress_beyond_the_free_allowance(production: CapacityTotals) -> None:
    aws = estimate_cost(production, load_catalog("aws"), egress_gb=500)
    egress = aws.items[-1]
    assert (egress.quantity, egress.monthly) == (400, Decimal("36.00"))
    gcp = estimate_cost(production, load_catalog("gcp"))
    assert gcp.items[-1].monthly == Decimal("12.00")  # the seed's "Network egress (100GB): $12"
    with pytest.raises(ValueError, match="egress"):
        estimate_cost(production, load_catalog("gcp"), egress_gb=-1)


def test_no_load_balancer_without_an_ingress(apricode: Spec) -> None:
    dev = estimate_cost(capacity_totals(apricode.stack("dev")), load_catalog("digitalocean"))
    assert not any(item.description.startswith("Load balancer") for item in dev.items)
    assert dev.pool.min_nodes == 2


def test_headroom_changes_the_pool(production: CapacityTotals) -> None:
    relaxed = estimate_cost(production, load_catalog("gcp"), headroom_percent=0)
    strict = estimate_cost(production, load_catalog("gcp"), headroom_percent=100)
    assert relaxed.total <= strict.total
    assert strict.pool.chosen.at_min.nodes > relaxed.pool.chosen.at_min.nodes


def test_named_providers_only_and_deduplicated(production: CapacityTotals) -> None:
    comparison = estimate_costs(production, ["gke", "aws", "gcp"])
    assert [estimate.provider for estimate in comparison.estimates] == ["gcp", "aws"]


def test_unknown_provider(production: CapacityTotals) -> None:
    with pytest.raises(UnknownProviderError, match="did you mean 'digitalocean'"):
        estimate_costs(production, ["digitalocaen"])


BIG_MEMORY = """
name: big
services:
  cache:
    role: worker
    image: cache:1
    resources:
      requests: {cpu: "2", memory: 40Gi}
environments:
  production: {}
images: {environments: []}  # sizing, not which images production may run
"""


def test_a_provider_that_cannot_host_is_listed_apart() -> None:
    totals = capacity_totals(load_spec_text(BIG_MEMORY).stack("production"))
    comparison = estimate_costs(totals)
    assert [provider for provider, _ in comparison.unavailable] == ["digitalocean"]
    assert "digitalocean" not in [estimate.provider for estimate in comparison.estimates]
    assert "pod cache asks 2 cores / 40 GiB" in comparison.unavailable[0][1]
    with pytest.raises(NoNodeTypeFitsError):
        estimate_costs(totals, ["digitalocean"])


def test_plain_data_is_exact(production: CapacityTotals) -> None:
    data = comparison_data(estimate_costs(production, ["aws"]))
    aws = data["estimates"][0]
    assert aws["total_usd"] == "487.45"
    assert aws["items"][0]["unit_price"] == "121.4720"
    assert aws["items"][0]["list_price"] == {
        "amount": "0.1664",
        "per": "hour",
        "as_of": "2024-11",
        "source": "https://aws.amazon.com/ec2/pricing/on-demand/",
    }
    assert aws["node_pool"]["chosen"]["allocatable_per_node"]["cpu"] == {"millicores": 3920, "cores": "3.92"}
