from __future__ import annotations

from decimal import Decimal

import pytest

from shipyard.capacity import Amounts, CapacityTotals, capacity_totals, format_cores, format_gib
from shipyard.spec import GIB, Spec, load_spec_text

MIB = 2**20


def _cores(value: str) -> int:
    return int(Decimal(value) * 1000)


def _gib(value: str) -> int:
    return int(Decimal(value) * GIB)


# Seed 004, "Итоговый расчет ресурсов": component, replicas, CPU req/lim (cores),
# RAM req/lim (GB, meaning GiB), storage (GB, meaning GiB).
SEED_TABLE = [
    ("app", 3, "1.5", "6", "3", "9", "0"),
    ("postgres (primary)", 1, "2", "4", "4", "8", "100"),
    ("postgres (replica)", 1, "1", "2", "2", "4", "100"),
    ("redis", 1, "0.25", "1", "0.5", "2", "10"),
    ("ingress-nginx", 2, "0.4", "2", "0.5", "2", "0"),
    ("prometheus", 1, "0.5", "2", "2", "8", "50"),
    ("grafana", 1, "0.2", "0.5", "0.5", "1", "0"),
    ("loki", 1, "0.5", "1", "1", "2", "100"),
    ("system reserve", 0, "1", "0", "2", "0", "0"),
]


def test_apricode_production_matches_seed_totals(production: CapacityTotals) -> None:
    total = production.at_min
    assert total == Amounts(
        cpu_request=7350,
        cpu_limit=18500,
        memory_request=_gib("15.5"),
        memory_limit=36 * GIB,
        storage=360 * GIB,
    )
    assert (format_cores(total.cpu_request), format_cores(total.cpu_limit)) == ("7.35", "18.5")
    assert (format_gib(total.memory_request), format_gib(total.memory_limit)) == ("15.5", "36")
    assert format_gib(total.storage) == "360"


@pytest.mark.parametrize("expected", SEED_TABLE, ids=[row[0] for row in SEED_TABLE])
def test_apricode_production_rows_match_seed(
    production: CapacityTotals, expected: tuple[str, int, str, str, str, str, str]
) -> None:
    name, replicas, cpu_req, cpu_lim, mem_req, mem_lim, storage = expected
    row = next(row for row in production.rows if row.name == name)
    assert row.replicas_min == replicas
    assert row.at_min == Amounts(
        _cores(cpu_req), _cores(cpu_lim), _gib(mem_req), _gib(mem_lim), _gib(storage)
    )


def test_rows_are_the_seed_rows_in_order(production: CapacityTotals) -> None:
    assert [row.name for row in production.rows] == [row[0] for row in SEED_TABLE]
    assert [row.kind for row in production.rows] == [
        "service",
        "datastore",
        "datastore",
        "datastore",
        "platform",
        "platform",
        "platform",
        "platform",
        "reserve",
    ]


def test_apricode_production_at_max_counts_ten_app_replicas(production: CapacityTotals) -> None:
    app = production.rows[0]
    assert (app.replicas_min, app.replicas_max) == (3, 10)
    assert app.at_max == Amounts(
        5000, 20000, 10 * GIB, 30 * GIB, 0
    )  # the seed's "Max: 20 CPU, 30 GB" is limits
    assert production.at_max == Amounts(10850, 32500, _gib("22.5"), 57 * GIB, 360 * GIB)


def test_cron_jobs_and_migration_are_transient(production: CapacityTotals) -> None:
    assert [(item.kind, item.name) for item in production.transient] == [
        ("cron", "app/cleanup-sessions"),
        ("cron", "app/process-notifications"),
        ("migration", "app/migration"),
    ]
    assert production.transient[0].schedule == "0 * * * *"
    assert production.transient[0].pod.cpu_request == 500


def test_dev_environment_has_no_replica_and_smaller_app(apricode: Spec) -> None:
    dev = capacity_totals(apricode.stack("dev"))
    names = [row.name for row in dev.rows]
    assert "postgres (replica)" not in names
    app = dev.rows[0]
    assert (app.replicas_min, app.replicas_max) == (1, 1)
    assert app.at_min.cpu_request == 250
    assert dev.at_min == dev.at_max
    assert not dev.has_ingress
    assert capacity_totals(apricode.stack("production")).has_ingress


SMALL = """
name: small
services:
  web:
    role: web
    image: web:1
    port: 8080
    replicas: 2
    resources:
      limits: {cpu: "1", memory: 512Mi}
    volumes:
      uploads: {size: 5Gi, mount: /data, access_mode: ReadWriteMany}
      cache: {size: 1Gi, mount: /cache, access_mode: ReadWriteMany}
  worker:
    role: worker
    image: worker:1
    replicas: 0
    resources:
      requests: {cpu: 100m}
datastores:
  db:
    kind: postgresql
    replicas: 2
    resources:
      requests: {cpu: 500m, memory: 1Gi}
      limits: {cpu: "1", memory: 2Gi}
    storage: {size: 20Gi}
  cache:
    kind: redis
    resources:
      requests: {cpu: 100m, memory: 128Mi}
environments:
  staging: {}
"""


@pytest.fixture(scope="module")
def small() -> CapacityTotals:
    return capacity_totals(load_spec_text(SMALL).stack("staging"))


def test_missing_request_defaults_to_the_limit(small: CapacityTotals) -> None:
    web = small.rows[0]
    assert web.pod is not None
    assert (web.pod.cpu_request, web.pod.memory_request) == (1000, 512 * MIB)


def test_service_volumes_count_once_not_per_replica(small: CapacityTotals) -> None:
    assert small.rows[0].at_min.storage == 6 * GIB


def test_zero_replicas_count_nothing(small: CapacityTotals) -> None:
    worker = small.rows[1]
    assert worker.at_min == Amounts()


def test_postgres_replicas_reuse_primary_resources_and_hold_a_copy_each(
    small: CapacityTotals,
) -> None:
    replica = next(row for row in small.rows if row.name == "db (replica)")
    assert replica.replicas_min == 2
    assert replica.at_min == Amounts(1000, 2000, 2 * GIB, 4 * GIB, 40 * GIB)
    assert replica.component == "db"


def test_redis_without_storage_and_no_reserve_row(small: CapacityTotals) -> None:
    redis = next(row for row in small.rows if row.name == "cache")
    assert redis.at_min == Amounts(100, 0, 128 * MIB, 0, 0)
    assert all(row.kind != "reserve" for row in small.rows)


def test_demand_lists_pods_and_reserve(production: CapacityTotals) -> None:
    """The node pool holds the seed's pods, the two exporters' (50m / 64Mi each) and shipyard's
    server's (`control_plane`: 100m / 256Mi)."""
    low, high = production.demand("min"), production.demand("max")
    assert (low.reserve_cpu, low.reserve_memory) == (1000, 2 * GIB)
    assert (low.cpu, low.memory) == (7350 + 100 + 100, _gib("15.5") + 128 * MIB + 256 * MIB)
    assert (high.cpu, high.memory) == (10850 + 100 + 100, _gib("22.5") + 128 * MIB + 256 * MIB)
    assert sum(group.count for group in low.pods) == 11 + 2 + 1
    assert sum(group.count for group in high.pods) == 18 + 2 + 1
    postgres = {group.name: group.spread for group in low.pods if group.name.startswith("postgres")}
    assert postgres == {
        "postgres (primary)": "postgres",
        "postgres (replica)": "postgres",
        "postgres-exporter": "postgres-exporter",
    }


@pytest.mark.parametrize(
    ("millicores", "text"), [(7350, "7.35"), (6000, "6"), (250, "0.25"), (125, "0.13"), (0, "0")]
)
def test_format_cores(millicores: int, text: str) -> None:
    assert format_cores(millicores) == text


@pytest.mark.parametrize(
    ("count", "text"), [(_gib("15.5"), "15.5"), (512 * MIB, "0.5"), (256 * MIB, "0.25"), (GIB, "1")]
)
def test_format_gib(count: int, text: str) -> None:
    assert format_gib(count) == text
