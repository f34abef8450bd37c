"""Committed and spot rates from the AWS and GCP catalogs, priced by `cost --compare` for the
examples: each rate's line carries the catalog's date and source, the totals are the sum of
their lines, and a spot pool never holds a datastore pod."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from shipyard.capacity import (
    CapacityTotals,
    CostEstimate,
    capacity_totals,
    load_catalog,
    provider_options,
)
from shipyard.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
STACKS = ("normaldance", "salespot", "apricode")


def _totals(stack: str) -> CapacityTotals:
    return capacity_totals(load_spec(EXAMPLES / stack / "shipyard.yaml").stack("production"))


def _option(options: tuple[CostEstimate, ...], name: str) -> CostEstimate:
    [found] = [option for option in options if option.option == name]
    return found


def _datastore_pods(totals: CapacityTotals) -> set[str]:
    return {row.name for row in totals.rows if row.kind == "datastore" and row.pod is not None}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_committed_option_prices_each_node_at_the_catalogs_dated_rate(stack: str, provider: str) -> None:
    catalog = load_catalog(provider)
    found = provider_options(_totals(stack), catalog)
    assert not any(reason.startswith("committed") for reason in found.not_priced)
    committed = _option(found.options, "one pool, committed")
    on_demand = _option(found.options, "one pool, on-demand")
    [line] = [item for item in committed.items if item.kind == "nodes:all"]
    node = committed.pool.chosen.node_type
    assert node.committed_price is not None, f"{node.name} has no committed rate"
    assert line.price == node.committed_price
    assert line.price.source.startswith("https://")
    assert line.price.as_of
    assert "committed rate" in line.description
    assert committed.total_usd < on_demand.total_usd


@pytest.mark.parametrize("stack", STACKS)
def test_gcp_spot_option_moves_only_stateless_services(stack: str) -> None:
    totals = _totals(stack)
    found = provider_options(totals, load_catalog("gcp"))
    for name in (
        "stateful pool + stateless services on spot, on-demand",
        "stateful pool + stateless services on spot, committed",
    ):
        spot = _option(found.options, name)
        [stateless] = [pool for pool in spot.pools if pool.role == "stateless"]
        [stateful] = [pool for pool in spot.pools if pool.role == "stateful"]
        assert stateless.plan.chosen.rate == "spot"
        assert stateful.plan.chosen.rate != "spot"
        on_spot = {pod for node in stateless.plan.chosen.at_max.placement for pod in node}
        assert on_spot
        for datastore in _datastore_pods(totals):
            assert not any(pod.startswith(datastore) for pod in on_spot), (datastore, on_spot)
        [line] = [item for item in spot.items if item.kind == "nodes:stateless"]
        assert line.price == stateless.plan.chosen.node_type.spot_price
        assert line.price.as_of == "2025-03-06"
        assert line.price.source.startswith("https://")
        assert any("snapshot" in note and "not a promise" in note for note in spot.notes)


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_each_options_total_is_the_sum_of_its_lines(stack: str, provider: str) -> None:
    for option in provider_options(_totals(stack), load_catalog(provider)).options:
        assert option.total_usd == sum((item.monthly_usd for item in option.items), Decimal(0))
        nodes = [item for item in option.items if item.kind.startswith("nodes:")]
        for item in nodes:
            assert item.monthly == (item.quantity * item.price.monthly).quantize(Decimal("0.01"))


def test_aws_sells_spot_but_prices_none_and_says_why() -> None:
    found = provider_options(_totals("apricode"), load_catalog("aws"))
    assert not any("spot" in option.option for option in found.options)
    assert any(reason.startswith("spot for the stateless services") for reason in found.not_priced)
