"""Issue 13: exporters as rows of their own with a second total, platform storage per replica,
a StatefulSet service's claims per pod, and limits that are missing rather than 0."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shipyard.capacity import Amounts, CapacityTotals, capacity_totals, totals_data
from shipyard.cli import main
from shipyard.spec import GIB, load_spec_text

MIB = 2**20

NO_LIMITS = """
name: bare
services:
  web:
    role: web
    image: web:1
    port: 8080
    replicas: 2
    resources:
      requests: {cpu: 100m, memory: 128Mi}
  worker:
    role: worker
    image: worker:1
    resources:
      requests: {cpu: 100m}
      limits: {memory: 1Gi}
  idle:
    role: worker
    image: idle:1
    replicas: 0
  node:
    role: worker
    image: node:1
    workload: statefulset
    autoscaling: {min: 2, max: 4, cpu_percent: 70}
    resources:
      requests: {cpu: 100m, memory: 128Mi}
      limits: {cpu: 200m, memory: 256Mi}
    volumes:
      data: {size: 10Gi, mount: /data}
datastores:
  db:
    kind: postgresql
    storage: {size: 20Gi}
    resources:
      requests: {cpu: 500m, memory: 1Gi}
      limits: {cpu: "1", memory: 2Gi}
  cache:
    kind: redis
    resources:
      requests: {cpu: 100m, memory: 128Mi}
      limits: {cpu: 200m, memory: 256Mi}
    exporter: ~
platform:
  components:
    prometheus:
      replicas: 2
      storage: 50Gi
      resources:
        requests: {cpu: 500m, memory: 2Gi}
        limits: {cpu: "2", memory: 8Gi}
environments:
  staging: {}
"""


@pytest.fixture(scope="module")
def bare() -> CapacityTotals:
    return capacity_totals(load_spec_text(NO_LIMITS).stack("staging"))


def _row(totals: CapacityTotals, name: str) -> object:
    return next(row for row in (*totals.rows, *totals.exporters) if row.name == name)


# --- exporters ------------------------------------------------------------------------------


def test_apricode_exporters_are_rows_of_their_own(production: CapacityTotals) -> None:
    assert [row.name for row in production.rows][-1] == "system reserve"  # the seed's rows only
    assert [(row.name, row.kind) for row in production.exporters] == [
        ("postgres-exporter", "exporter"),
        ("redis-exporter", "exporter"),
    ]
    each = Amounts(50, 200, 64 * MIB, 128 * MIB, 0)
    assert [row.at_min for row in production.exporters] == [each, each]


def test_apricode_second_total_includes_the_exporters(production: CapacityTotals) -> None:
    # The first total stays seed 004's exactly; the second adds two exporters.
    assert production.at_min == Amounts(7350, 18500, 31 * GIB // 2, 36 * GIB, 360 * GIB)
    assert production.with_exporters_at_min == Amounts(
        7450, 18900, 31 * GIB // 2 + 128 * MIB, 36 * GIB + 256 * MIB, 360 * GIB
    )
    assert production.with_exporters_at_max == Amounts(
        10950, 32900, 45 * GIB // 2 + 128 * MIB, 57 * GIB + 256 * MIB, 360 * GIB
    )


def test_null_exporter_has_no_row(bare: CapacityTotals) -> None:
    assert [row.name for row in bare.exporters] == ["db-exporter"]


def test_cloudnative_pg_exports_its_own_metrics_and_external_gets_an_exporter() -> None:
    text = (
        NO_LIMITS.replace(
            "    storage: {size: 20Gi}\n", "    storage: {size: 20Gi}\n    mode: cloudnative-pg\n", 1
        )
        .replace(
            "  cache:\n    kind: redis\n",
            "  cache:\n    kind: redis\n    mode: external\n    external: {host: cache.example.com}\n",
        )
        .replace("    exporter: ~\n", "")
    )
    totals = capacity_totals(load_spec_text(text).stack("staging"))
    assert [row.name for row in totals.exporters] == ["cache-exporter"]


def test_exporter_resources_come_from_the_spec() -> None:
    text = NO_LIMITS.replace(
        '      limits: {cpu: "1", memory: 2Gi}\n',
        '      limits: {cpu: "1", memory: 2Gi}\n    exporter:\n'
        "      resources: {requests: {cpu: 20m, memory: 32Mi}, limits: {cpu: 100m, memory: 64Mi}}\n",
        1,
    )
    [row] = capacity_totals(load_spec_text(text).stack("staging")).exporters
    assert row.at_min == Amounts(20, 100, 32 * MIB, 64 * MIB, 0)


# --- storage per replica ----------------------------------------------------------------------


def test_platform_storage_is_counted_per_replica(bare: CapacityTotals) -> None:
    """Defect: a component with replicas: 2 and storage: 50Gi was counted 50Gi."""
    prometheus = _row(bare, "prometheus")
    assert prometheus.at_min.storage == 100 * GIB  # type: ignore[attr-defined]
    assert prometheus.at_max.storage == 100 * GIB  # type: ignore[attr-defined]


def test_statefulset_service_has_a_claim_per_pod(bare: CapacityTotals) -> None:
    """Defect: a StatefulSet's volumeClaimTemplates make a claim per pod; counted once, the
    storage was a quarter of what four pods claim (claims stay when it scales down)."""
    node = _row(bare, "node")
    assert node.storage == 40 * GIB  # type: ignore[attr-defined]
    assert node.at_min.storage == node.at_max.storage == 40 * GIB  # type: ignore[attr-defined]


# --- missing limits ---------------------------------------------------------------------------


def test_missing_limits_are_named(bare: CapacityTotals) -> None:
    """Defect: a missing limit counted as 0, and nothing said some rows had none."""
    missing = {row.name: row.pod.limits_missing for row in bare.limits_missing if row.pod}
    # `idle` runs no pod (0 replicas): it can use nothing, limit or not.
    assert missing == {"web": ("cpu", "memory"), "worker": ("cpu",)}
    assert _row(bare, "db (primary)").pod.limits_missing == ()  # type: ignore[attr-defined]


def test_apricode_has_every_limit(production: CapacityTotals) -> None:
    assert production.limits_missing == ()


def test_json_says_which_rows_have_no_limit(bare: CapacityTotals) -> None:
    data = totals_data(bare)
    assert data["limits_missing"] == [
        {"component": "web", "limits": ["cpu", "memory"]},
        {"component": "worker", "limits": ["cpu"]},
    ]
    web = next(row for row in data["components"] if row["component"] == "web")
    assert web["per_replica"]["cpu_limit"] is None
    assert web["per_replica"]["memory_limit"] is None
    assert web["at_min"]["cpu_limit"] is None
    assert web["at_min"]["cpu_request"]["millicores"] == 200
    worker = next(row for row in data["components"] if row["component"] == "worker")
    assert worker["per_replica"]["cpu_limit"] is None
    assert worker["per_replica"]["memory_limit"] == {"bytes": GIB, "gib": "1"}
    assert [row["component"] for row in data["exporters"]] == ["db-exporter"]
    assert data["total_with_exporters"]["at_min"]["cpu_request"]["millicores"] == (
        data["total"]["at_min"]["cpu_request"]["millicores"] + 50
    )


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, _ = capsys.readouterr()
    return (exited.value.code if isinstance(exited.value.code, int) else 1), out


def _total_labels(lines: list[str]) -> list[str]:
    """Each TOTAL row's label, its wrapped lines joined (the figures left out)."""
    labels = []
    for index, line in enumerate(lines):
        if not line.startswith("TOTAL"):
            continue
        words: list[str] = []
        for part in lines[index:]:
            if (
                not part.strip()
                or part.startswith("CPU in cores")
                or (part is not line and part.startswith("TOTAL"))
            ):
                break
            words += [w for w in part.split() if not re.fullmatch(r"[0-9.]+|-|none", w)]
        labels.append(" ".join(words))
    return labels


def test_table_total_says_rows_without_a_limit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(NO_LIMITS)
    code, out = _run(capsys, "capacity", "-f", str(spec), "-p", "gcp")
    assert code == 0
    labels = _total_labels(out.splitlines())
    assert labels[:2] == ["TOTAL (2 rows without a limit)", "TOTAL + exporters (2 rows without a limit)"]
    assert labels[0].split()[:1] == ["TOTAL"]
    web = next(line for line in out.splitlines() if line.startswith("web "))
    assert web.split() == ["web", "2", "0.2", "none", "0.25", "none", "-"]


def test_apricode_table_has_both_totals(capsys: pytest.CaptureFixture[str], apricode_spec: Path) -> None:
    code, out = _run(capsys, "capacity", "-f", str(apricode_spec), "-p", "gcp")
    assert code == 0
    lines = out.splitlines()
    totals = [line.split() for line in lines if line.startswith("TOTAL")]
    assert totals[0] == ["TOTAL", "7.35", "18.5", "15.5", "36", "360"]
    # The second total adds the two exporters (0.1 cores, 0.25 GiB) and shipyard's server
    # (`control_plane`, the backup job's defaults: 0.1/1 cores, 0.25/1 GiB).
    # The label wraps in the table's first column; its figures are on its first line.
    assert totals[1] == ["TOTAL", "+", "exporters", "7.55", "19.9", "15.88", "37.25", "360"]
    assert _total_labels(lines)[1] == "TOTAL + exporters and shipyard"
    exporter = next(line for line in lines if line.startswith("postgres-exporter"))
    assert exporter.split() == ["postgres-exporter", "1", "0.05", "0.2", "0.06", "0.13", "-"]
    server = next(line for line in lines if line.startswith("shipyard "))
    assert server.split() == ["shipyard", "1", "0.1", "1", "0.25", "1", "-"]


def test_json_output_of_the_cli(capsys: pytest.CaptureFixture[str], apricode_spec: Path) -> None:
    code, out = _run(capsys, "capacity", "-f", str(apricode_spec), "-p", "gcp", "-o", "json")
    assert code == 0
    [production] = json.loads(out)["environments"]
    assert production["limits_missing"] == []
    assert production["total_with_exporters"]["at_min"]["cpu_request"]["cores"] == "7.45"
