"""`capacity` and `cost` per datastore mode: CloudNativePG instances and pooler counted as pods,
Redis replicas too, and an external (managed) database priced from a catalog as a line item."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.capacity import (
    CapacityTotals,
    capacity_totals,
    catalogs,
    estimate_cost,
    known_providers,
    load_catalog,
    managed_class,
)
from shipyard.errors import UnknownInstanceClassError
from shipyard.spec import GIB, load_spec, load_spec_text
from unit.render.render_helpers import ROOT

SPEC = """
name: shop
services:
  api:
    role: api
    image: shop/api:1.0
    port: 8080
    resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: "1", memory: 2Gi}}
    depends_on: [db, cache]
datastores:
  db:
    kind: postgresql
    resources: {requests: {cpu: "1", memory: 2Gi}, limits: {cpu: "2", memory: 4Gi}}
    storage: {size: 50Gi}
    exporter: ~
DB
  cache:
    kind: redis
    resources: {requests: {cpu: 100m, memory: 512Mi}, limits: {cpu: 500m, memory: 512Mi}}
    storage: {size: 4Gi}
    exporter: ~
CACHE
images: {environments: []}  # sizing, not which images production may run
"""


TWO_REPLICAS = "    replicas: 2\n"
CNPG = TWO_REPLICAS + "    mode: cloudnative-pg\n"


def totals(db: str = TWO_REPLICAS, cache: str = "") -> CapacityTotals:
    spec = load_spec_text(SPEC.replace("DB", db).replace("CACHE", cache), "test.yaml")
    return capacity_totals(spec.stack(spec.environments[0]))


def rows(result: CapacityTotals) -> dict[str, tuple[int, int, int, int]]:
    """name -> (replicas, cpu request, memory request, storage), at minimum replicas."""
    return {
        row.name: (row.replicas_min, row.at_min.cpu_request, row.at_min.memory_request, row.storage)
        for row in result.rows
    }


def test_cloudnative_pg_instances_count_as_a_primary_and_replicas_each_with_a_volume() -> None:
    statefulset = rows(totals())
    cnpg = rows(totals(CNPG))
    assert cnpg["db (primary)"] == statefulset["db (primary)"] == (1, 1000, 2 * GIB, 50 * GIB)
    assert cnpg["db (replica)"] == statefulset["db (replica)"] == (2, 2000, 4 * GIB, 100 * GIB)


def test_a_pooler_adds_its_pgbouncer_pods() -> None:
    db = CNPG + (
        "    cloudnative_pg:\n"
        "      pooler: {instances: 3, resources: {requests: {cpu: 100m, memory: 64Mi},"
        " limits: {cpu: 500m, memory: 128Mi}}}\n"
    )
    result = totals(db)
    assert rows(result)["db (pooler)"] == (3, 300, 3 * 64 * 2**20, 0)
    pooler = next(row for row in result.rows if row.name == "db (pooler)")
    assert pooler.component != "db"  # not spread as if it were an instance of the database
    assert result.at_min.cpu_request == totals(CNPG).at_min.cpu_request + 300


def test_redis_replicas_are_rows_of_their_own_with_their_volumes() -> None:
    result = rows(totals(cache="    replicas: 2\n"))
    assert result["cache"] == (1, 100, 512 * 2**20, 4 * GIB)
    assert result["cache (replica)"] == (2, 200, 1024 * 2**20, 8 * GIB)


EXTERNAL = """    mode: external
    external: {host: db.abc.us-east-1.rds.amazonaws.com, instance_class: db.r6g.large, multi_az: true}
"""


def test_an_external_database_has_no_pod_rows_and_is_listed_as_managed() -> None:
    result = totals(EXTERNAL)
    assert not any(row.component == "db" for row in result.rows)
    assert result.at_min.cpu_request == 500 + 100  # api and cache only
    assert result.at_min.storage == 4 * GIB  # the RDS volume is not a cluster volume
    [managed] = result.managed
    assert (managed.name, managed.kind, managed.instance_class, managed.multi_az) == (
        "db",
        "postgresql",
        "db.r6g.large",
        True,
    )
    assert managed.storage == 50 * GIB


def test_cost_prices_the_managed_database_from_the_catalog_as_line_items() -> None:
    estimate = estimate_cost(totals(EXTERNAL), load_catalog("aws"))
    lines = {item.description: item for item in estimate.items}
    instance = lines["RDS for PostgreSQL 'db': db.r6g.large, Multi-AZ"]
    assert instance.quantity == 1
    assert instance.price.amount == Decimal("0.45")
    assert instance.price.per == "hour"
    assert instance.price.source == "https://aws.amazon.com/rds/postgresql/pricing/"
    assert instance.monthly == Decimal("328.50")  # 0.45 × 730 hours
    storage = lines["RDS for PostgreSQL 'db': storage (RDS General Purpose SSD (gp3), Multi-AZ)"]
    assert (storage.quantity, storage.unit_price, storage.monthly) == (50, Decimal("0.23"), Decimal("11.50"))
    assert estimate.total == sum((item.monthly for item in estimate.items), Decimal(0))
    in_cluster = estimate_cost(totals(), load_catalog("aws"))
    assert not any("RDS" in item.description for item in in_cluster.items)


def test_each_provider_prices_the_class_it_runs_and_hetzner_none() -> None:
    # db.r6g.large (2 vCPU, 16 GiB) Multi-AZ: the cheapest class of each provider at least as
    # large, with a standby; Hetzner sells no managed databases and prices nothing for it.
    described = {}
    for provider in ("digitalocean", "gcp"):
        estimate = estimate_cost(totals(EXTERNAL), load_catalog(provider))
        [line] = [item for item in estimate.items if item.kind == "managed-database"]
        assert "db.r6g.large (2 vCPU, 16 GiB) priced as" in (line.note or "")
        described[provider] = line.description
    assert described == {
        "digitalocean": "DigitalOcean Managed PostgreSQL 'db': db-s-6vcpu-16gb, Multi-AZ",
        "gcp": "Cloud SQL for PostgreSQL 'db': db-custom-4-26624, Multi-AZ",
    }
    hetzner = estimate_cost(totals(EXTERNAL), load_catalog("hetzner"))
    assert not any(item.kind == "managed-database" for item in hetzner.items)
    assert any("has no managed databases" in note for note in hetzner.notes)
    assert hetzner.managed[0].database is None


_ALL_CLASSES = sorted({(d.name, d.engine) for c in catalogs() for d in c.managed_databases})


@settings(max_examples=200, deadline=None)
@given(
    asked=st.sampled_from(_ALL_CLASSES), provider=st.sampled_from(known_providers()), multi_az=st.booleans()
)
def test_the_class_a_provider_runs_is_never_smaller_and_its_own_maps_to_itself(
    asked: tuple[str, Literal["postgresql", "redis"]], provider: str, multi_az: bool
) -> None:
    name, engine = asked
    catalog = load_catalog(provider)
    listed = next(d for c in catalogs() for d in c.managed_databases if d.name == name)
    if catalog.managed_database(name) is not None:
        if multi_az and listed.multi_az_price is None:
            with pytest.raises(UnknownInstanceClassError, match="no Multi-AZ price"):
                managed_class(catalog, "db", engine, name, multi_az)
            return
        assert managed_class(catalog, "db", engine, name, multi_az).database is listed  # itself
        return
    chosen = managed_class(catalog, "db", engine, name, multi_az)
    assert chosen.note  # a mapped class, or none, is always said
    if chosen.database is None:
        return
    database = chosen.database
    assert catalog.managed_database(database.name) is database
    assert database.engine == engine
    assert (database.vcpu or 0) >= (listed.vcpu or 0)
    assert (database.memory_gib or 0) >= (listed.memory_gib or 0)
    assert not multi_az or database.multi_az_price is not None
    assert f"{name} ({listed.vcpu} vCPU, {listed.memory_gib} GiB) priced as" in chosen.note


def test_a_single_az_external_redis_is_priced_per_node() -> None:
    cache = "    mode: external\n    external: {host: c.example.com, instance_class: cache.t4g.small}\n"
    estimate = estimate_cost(totals(cache=cache), load_catalog("aws"))
    [line] = [item for item in estimate.items if "ElastiCache" in item.description]
    assert line.description == "ElastiCache for Redis 'cache': cache.t4g.small, Single-AZ"
    assert line.monthly == Decimal("23.36")  # 0.032 × 730


def test_an_unpriced_external_database_is_said_in_the_notes() -> None:
    db = "    mode: external\n    external: {host: db.example.internal}\n"
    estimate = estimate_cost(totals(db), load_catalog("aws"))
    assert not any("'db'" in item.description for item in estimate.items)
    assert any("db is an external postgresql datastore" in note for note in estimate.notes)


@pytest.mark.parametrize(
    ("external", "words"),
    [
        ("{host: h.example.com, instance_class: db.x9.huge}", "is in no price catalog"),
        ("{host: h.example.com, instance_class: cache.t4g.small}", "is a redis class"),
    ],
)
def test_an_instance_class_no_catalog_lists_is_refused_naming_the_field(external: str, words: str) -> None:
    db = f"    mode: external\n    external: {external}\n"
    with pytest.raises(UnknownInstanceClassError) as caught:
        estimate_cost(totals(db), load_catalog("aws"))
    assert "datastores.db.external.instance_class" in str(caught.value)
    assert words in str(caught.value)


def test_the_examples_count_their_modes() -> None:
    normaldance = capacity_totals(load_spec(ROOT / "examples/normaldance/shipyard.yaml").stack("production"))
    names = {row.name: row.replicas_min for row in normaldance.rows}
    assert (names["postgres (primary)"], names["postgres (replica)"], names["postgres (pooler)"]) == (1, 2, 2)
    assert names["redis (replica)"] == 1
    salespot = capacity_totals(load_spec(ROOT / "examples/salespot/shipyard.yaml").stack("production"))
    assert not any(row.component == "postgres" for row in salespot.rows)
    estimate = estimate_cost(salespot, load_catalog("aws"))
    assert any(item.description.startswith("RDS for PostgreSQL 'postgres'") for item in estimate.items)
