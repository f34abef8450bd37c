from __future__ import annotations

from decimal import Decimal
from importlib import resources

import pytest
import yaml

from shipyard.capacity import HOURS_PER_MONTH, Catalog, catalogs, known_providers, load_catalog, parse_catalog
from shipyard.errors import CatalogError, UnknownProviderError


def _shipped() -> list[str]:
    folder = resources.files("shipyard.capacity").joinpath("catalogs")
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def test_every_shipped_catalog_loads() -> None:
    assert _shipped() == ["aws.yaml", "digitalocean.yaml", "gcp.yaml", "hetzner.yaml"]
    assert known_providers() == ("aws", "digitalocean", "gcp", "hetzner")
    for catalog in catalogs():
        assert catalog.node_types
        assert "not fetched live" in catalog.note


def _prices(catalog: Catalog) -> list[tuple[str, str, str]]:
    found = [(node.name, node.price.as_of, node.price.source) for node in catalog.node_types]
    found += [(extra.description, extra.price.as_of, extra.price.source) for extra in catalog.node_extras]
    for name, price in [
        ("control plane", catalog.control_plane.price),
        ("storage", catalog.block_storage.price),
        ("load balancer", catalog.load_balancer.price),
        ("egress", catalog.egress.price),
    ]:
        found.append((name, price.as_of, price.source))
    return found


@pytest.mark.parametrize("provider", ["aws", "digitalocean", "gcp", "hetzner"])
def test_every_price_has_a_date_and_a_public_source(provider: str) -> None:
    for name, as_of, source in _prices(load_catalog(provider)):
        assert as_of.startswith("20"), name
        assert source.startswith("https://"), name


@pytest.mark.parametrize(
    ("provider", "monthly", "managed"),
    [
        ("aws", Decimal(73), True),
        ("gcp", Decimal(73), True),
        ("digitalocean", 0, True),
        ("hetzner", 0, False),
    ],
)
def test_control_plane_fees(provider: str, monthly: Decimal, managed: bool) -> None:
    plane = load_catalog(provider).control_plane
    assert plane.price.monthly == monthly
    assert plane.managed is managed


def test_hetzner_is_priced_in_euros_with_a_dated_rate() -> None:
    hetzner = load_catalog("hetzner")
    assert hetzner.currency == "EUR"
    assert hetzner.exchange is not None
    assert hetzner.exchange.as_of
    assert hetzner.usd_rate == hetzner.exchange.usd_per_unit > 1
    assert "k3s" in hetzner.control_plane.note


def test_hourly_prices_are_730_hours_a_month() -> None:
    node = next(node for node in load_catalog("aws").node_types if node.name == "t3.xlarge")
    assert node.price.per == "hour"
    assert node.price.monthly == node.price.amount * 730 == Decimal("121.472")
    assert HOURS_PER_MONTH == 730


@pytest.mark.parametrize(
    ("alias", "provider"), [("eks", "aws"), ("GKE", "gcp"), ("do", "digitalocean"), ("hcloud", "hetzner")]
)
def test_aliases(alias: str, provider: str) -> None:
    assert load_catalog(alias).provider == provider


def test_unknown_provider_suggests_and_lists() -> None:
    with pytest.raises(UnknownProviderError) as caught:
        load_catalog("hetzer")
    message = caught.value.message
    assert "did you mean 'hetzner'?" in message
    assert "aws, digitalocean, gcp, hetzner" in message
    assert caught.value.exit_code == 2


def test_unknown_provider_without_a_close_match() -> None:
    with pytest.raises(UnknownProviderError, match="known providers: aws") as caught:
        load_catalog("azure")
    assert "did you mean" not in caught.value.message


def _aws_data() -> dict[str, object]:
    text = resources.files("shipyard.capacity").joinpath("catalogs", "aws.yaml").read_text()
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_malformed_catalog_names_file_and_field() -> None:
    data = _aws_data()
    data["node_types"][1]["price"]["amount"] = -1  # type: ignore[index]
    with pytest.raises(CatalogError, match=r"aws\.yaml: node_types\[1\]\.price\.amount: ") as caught:
        parse_catalog(yaml.safe_dump(data), "aws.yaml")
    assert caught.value.exit_code == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda d: d["block_storage"]["price"].pop("source"),
            r"block_storage\.price\.source: Field required",
        ),
        (lambda d: d["egress"]["price"].update(as_of="last year"), r"egress\.price\.as_of"),
        (
            lambda d: d["load_balancer"]["price"].update(per="gb"),
            r"load_balancer\.price: .*per hour or per month",
        ),
        (lambda d: d.update(currency="EUR"), r"\(document\): .*exchange"),
        (lambda d: d["node_types"].append(dict(d["node_types"][0])), "listed twice: t3.large"),
        (lambda d: d.update(colour="blue"), "colour: Extra inputs"),
    ],
)
def test_malformed_catalog_errors(change: object, field: str) -> None:
    data = _aws_data()
    change(data)  # type: ignore[operator]
    with pytest.raises(CatalogError, match=field):
        parse_catalog(yaml.safe_dump(data), "aws.yaml")


def test_catalog_that_is_not_yaml() -> None:
    with pytest.raises(CatalogError, match=r"^broken\.yaml: not valid YAML"):
        parse_catalog("provider: [", "broken.yaml")
