"""Issue 17 item 6: pools per role, boot disks, ReadWriteMany storage, burstable notes, the
options side by side and seed 004's plan reconciled line by line."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.capacity import (
    SEED_004,
    CapacityTotals,
    Choices,
    NodeType,
    NoNodeTypeFitsError,
    capacity_totals,
    catalogs,
    compare_options,
    estimate_cost,
    load_catalog,
    options_data,
    provider_options,
    reconcile_with_seed,
    reconciliation_data,
)
from shipyard.spec import Stack, load_spec_text

from .test_capacity_properties import stacks


@pytest.mark.parametrize("provider", sorted(SEED_004))
def test_seed_plan_within_ten_percent_of_the_seed(production: CapacityTotals, provider: str) -> None:
    """With the seed's own choices (its node types and counts, a database pool, 500 GB of SSD)
    shipyard comes within 10 % of the seed's figure, at the catalog's list prices."""
    reconciliation = reconcile_with_seed(production, load_catalog(provider))
    if provider == "hetzner":
        # Hetzner's list prices are about half the seed's (CPX31 €13.60 ≈ $14.69, not $30):
        # no honest price gets within 10 % of $186; the gap is all in the unit prices.
        pytest.xfail("seed 004's Hetzner unit prices are about twice Hetzner's list prices")
    assert abs(reconciliation.difference_percent) <= 10, reconciliation_data(reconciliation)


@pytest.mark.parametrize("provider", sorted(SEED_004))
def test_reconciliation_walks_from_shipyard_to_the_seed(production: CapacityTotals, provider: str) -> None:
    catalog = load_catalog(provider)
    reconciliation = reconcile_with_seed(production, catalog)
    steps = reconciliation.steps
    assert steps[0].total_usd == estimate_cost(production, catalog).total_usd
    for before, after in itertools.pairwise(steps):
        assert after.total_usd - before.total_usd == after.delta_usd
    assert steps[-1].total_usd == SEED_004[provider].total_usd
    assert steps[-2].total_usd == reconciliation.as_seed.total_usd
    # Every seed line is compared with the same line at list prices; the sums are the totals.
    assert sum(line.seed_usd for line in reconciliation.lines) == SEED_004[provider].total_usd
    assert sum(line.today_usd for line in reconciliation.lines) == reconciliation.as_seed.total_usd
    assert [pool.role for pool in reconciliation.as_seed.pools] == ["app", "database"]


def test_seed_database_nodes_cannot_hold_the_primary(production: CapacityTotals) -> None:
    # The seed's 2-vCPU database nodes offer 1.93 cores to pods; the primary asks 2.
    reconciliation = reconcile_with_seed(production, load_catalog("gcp"))
    assert any(
        "e2-highmem-2" in note and "postgres (primary) asks 2 cores" in note for note in reconciliation.notes
    )
    database = reconciliation.as_seed.pools[1].plan.chosen
    assert (database.node_type.name, database.at_min.nodes, database.proven) == ("e2-highmem-2", 2, False)
    storage = next(item for item in reconciliation.as_seed.items if item.kind == "block-storage")
    assert (storage.quantity, storage.monthly) == (500, Decimal("85.00"))  # the seed's 500 GB SSD: $85


def test_boot_disks_where_billed_apart(production: CapacityTotals) -> None:
    gcp = estimate_cost(production, load_catalog("gcp"))
    boot = next(item for item in gcp.items if item.kind == "boot-disk")
    assert (boot.quantity, boot.monthly) == (300, Decimal("30.00"))
    for provider in ("digitalocean", "hetzner"):
        estimate = estimate_cost(production, load_catalog(provider))
        assert not [item for item in estimate.items if item.kind == "boot-disk"]
        assert any(note.startswith("boot disks: included") for note in estimate.notes)


def test_database_pool_from_the_spec(production: CapacityTotals) -> None:
    asked = CapacityTotals(**{**production.__dict__, "database_pool": True})
    estimate = estimate_cost(asked, load_catalog("gcp"))
    assert [pool.role for pool in estimate.pools] == ["app", "database"]
    assert estimate.pool is estimate.pools[0].plan
    database = estimate.pools[1].plan.chosen
    assert database.at_min.nodes == 2  # primary and replica on different nodes
    names = {pod for node in database.at_min.placement for pod in node}
    assert names == {"postgres (primary)-1", "postgres (replica)-1", "redis-1"}
    assert estimate.total == sum(item.monthly for item in estimate.items)


RWX = """
name: files
services:
  web:
    role: web
    image: web:1
    port: 80
    resources: {requests: {cpu: 500m, memory: 512Mi}}
    replicas: 1
    volumes:
      uploads: {size: 50Gi, mount: /uploads, access_mode: ReadWriteMany}
      cache: {size: 10Gi, mount: /cache}
environments:
  production: {}
images: {environments: []}  # sizing, not which images production may run
"""


def test_read_write_many_at_its_real_class() -> None:
    totals = capacity_totals(load_spec_text(RWX).stack("production"))
    assert totals.shared_storage == 50 * 2**30
    aws = estimate_cost(totals, load_catalog("aws"))
    shared = next(item for item in aws.items if item.kind == "shared-storage")
    block = next(item for item in aws.items if item.kind == "block-storage")
    assert (shared.quantity, shared.unit_price, block.quantity) == (50, Decimal("0.30"), 10)
    assert shared.price.source == "https://aws.amazon.com/efs/pricing/"
    gcp = estimate_cost(totals, load_catalog("gcp"))
    filestore = next(item for item in gcp.items if item.kind == "shared-storage")
    assert filestore.quantity == 100  # Filestore bills 100 GiB at least on GKE
    do = estimate_cost(totals, load_catalog("digitalocean"))
    assert not [item for item in do.items if item.kind == "shared-storage"]
    assert any("DigitalOcean has no ReadWriteMany storage class" in note for note in do.notes)


def test_burstable_only_with_its_note(production: CapacityTotals) -> None:
    for catalog in catalogs():
        estimate = estimate_cost(production, catalog)
        for pool in estimate.pools:
            node = pool.plan.chosen.node_type
            if node.cpu_credits:
                assert any(node.cpu_credits in note for note in estimate.notes), catalog.provider
    aws = estimate_cost(production, load_catalog("aws"))
    assert any("t3.xlarge has limited sustained CPU: burstable: baseline 40 %" in n for n in aws.notes)


def test_compare_says_what_it_cannot_price(production: CapacityTotals) -> None:
    comparison = compare_options(production)
    by_provider = {item.provider: item for item in comparison.providers}
    # AWS's 1-year reserved rates put it just below GCP's 1-year commitments for this stack.
    assert [item.provider for item in comparison.providers] == ["hetzner", "digitalocean", "aws", "gcp"]
    for provider in ("digitalocean", "hetzner"):
        assert any(
            why.startswith("spot: ") and "sells no spot" in why for why in by_provider[provider].not_priced
        )
    # AWS sells spot but lists no spot price; GCP's catalog prices both its spot and committed rates.
    assert any(why.startswith("spot for the stateless services") for why in by_provider["aws"].not_priced)
    assert by_provider["gcp"].not_priced == ()
    options = {option.option for option in by_provider["gcp"].options}
    layouts = ("one pool", "app + database pools", "stateful pool + stateless services on spot")
    assert options == {f"{layout}, {rate}" for layout in layouts for rate in ("on-demand", "committed")}
    data = options_data(comparison)
    assert data["providers"][0]["cheapest"] == by_provider["hetzner"].cheapest.option


def test_a_listed_spot_or_committed_rate_is_an_option(production: CapacityTotals) -> None:
    catalog = load_catalog("gcp")
    rates = {
        "committed_price": {
            "amount": "0.09",
            "per": "hour",
            "as_of": "2026-12",
            "source": "https://example.org/c",
        },
        "spot_price": {
            "amount": "0.04",
            "per": "hour",
            "as_of": "2026-12",
            "source": "https://example.org/s",
        },
    }
    # model_copy does not validate: the node types are validated from plain data.
    priced = catalog.model_copy(
        update={
            "node_types": [
                NodeType.model_validate({**node.model_dump(), **rates}) for node in catalog.node_types
            ]
        }
    )
    options = provider_options(production, priced)
    names = {option.option for option in options.options}
    assert "one pool, committed" in names
    assert "stateful pool + stateless services on spot, on-demand" in names
    spot = next(
        option
        for option in options.options
        if option.option == "stateful pool + stateless services on spot, on-demand"
    )
    assert [(pool.role, pool.plan.chosen.rate) for pool in spot.pools] == [
        ("stateful", "on-demand"),
        ("stateless", "spot"),
    ]
    assert all(options.cheapest.total_usd <= option.total_usd for option in options.options)


@settings(max_examples=40, deadline=None)
@given(
    stack=stacks(),
    layout=st.sampled_from(["one", "database"]),
    provider=st.sampled_from(["aws", "gcp", "hetzner"]),
)
def test_lines_sum_to_the_total_and_cheapest_first(stack: Stack, layout: str, provider: str) -> None:
    totals = capacity_totals(stack)
    catalog = load_catalog(provider)
    try:
        estimate = estimate_cost(totals, catalog, choices=Choices(layout=layout))  # type: ignore[arg-type]
        options = provider_options(totals, catalog)
    except NoNodeTypeFitsError:
        return  # generated pods bigger than any node type
    assert estimate.total == sum(item.monthly for item in estimate.items)
    assert estimate.total_usd == sum(item.monthly_usd for item in estimate.items)
    assert estimate.pool is estimate.pools[0].plan
    assert all(options.cheapest.total_usd <= option.total_usd for option in options.options)
    nodes = sum(item.quantity for item in estimate.items if item.kind.startswith("nodes:"))
    assert nodes == sum(pool.plan.chosen.at_min.nodes for pool in estimate.pools)
