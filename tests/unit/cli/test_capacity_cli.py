from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from shipyard.cli import main

GIB = 2**30


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_capacity_table_reproduces_seed_totals(
    capsys: pytest.CaptureFixture[str], apricode_spec: Path
) -> None:
    code, out, _ = _run(capsys, "capacity", "-f", str(apricode_spec))
    assert code == 0
    assert "apricode / production: resources at minimum replicas" in out
    total = next(line for line in out.splitlines() if line.startswith("TOTAL"))
    assert total.split() == ["TOTAL", "7.35", "18.5", "15.5", "36", "360"]
    app = next(line for line in out.splitlines() if line.startswith("app "))
    assert app.split() == ["app", "3", "1.5", "6", "3", "9", "-"]
    assert "resources at maximum replicas" in out
    assert "cron app/cleanup-sessions" in out
    for provider in ("aws", "digitalocean", "gcp", "hetzner"):
        assert any(line.startswith(provider) for line in out.splitlines())


def test_capacity_json_carries_exact_and_human_figures(
    capsys: pytest.CaptureFixture[str], apricode_spec: Path
) -> None:
    code, out, _ = _run(
        capsys, "capacity", "-f", str(apricode_spec), "-e", "production", "-p", "gcp", "-o", "json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["stack"] == "apricode"
    [production] = data["environments"]
    total = production["total"]["at_min"]
    assert total["cpu_request"] == {"millicores": 7350, "cores": "7.35"}
    assert total["cpu_limit"] == {"millicores": 18500, "cores": "18.5"}
    assert total["memory_request"] == {"bytes": 31 * GIB // 2, "gib": "15.5"}
    assert total["memory_limit"]["bytes"] == 36 * GIB
    assert total["storage"] == {"bytes": 360 * GIB, "gib": "360"}
    assert production["total"]["at_max"]["cpu_request"]["millicores"] == 10850
    [pool] = production["node_pools"]
    assert pool["provider"] == "gcp"
    assert pool["chosen"]["node_type"] == "e2-standard-4"
    assert (pool["chosen"]["at_min"]["nodes"], pool["chosen"]["at_max"]["nodes"]) == (3, 4)


def test_capacity_without_production_reports_every_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(
        "name: tiny\nservices:\n  web: {role: web, image: 'web:1', port: 80,"
        " resources: {requests: {cpu: 100m, memory: 128Mi}}}\n"
        "environments:\n  dev: {}\n  staging: {}\n"
    )
    code, out, _ = _run(capsys, "capacity", "-f", str(spec), "-o", "yaml")
    assert code == 0
    data = yaml.safe_load(out)
    assert [env["environment"] for env in data["environments"]] == ["dev", "staging"]
    assert data["environments"][0]["node_pools"][0]["min_nodes"] == 2


def test_cost_table_is_cheapest_first(capsys: pytest.CaptureFixture[str], apricode_spec: Path) -> None:
    code, out, _ = _run(capsys, "cost", "-f", str(apricode_spec))
    assert code == 0
    summary = out[out.index("Monthly cost, cheapest first") :]
    ranked = [line.split()[1] for line in summary.splitlines() if line[:1].isdigit()]
    assert ranked == ["hetzner", "digitalocean", "gcp", "aws"]
    assert "$487.45" in out
    assert "€50.43" in out
    assert "Control plane" in out


def test_cost_json_line_items(capsys: pytest.CaptureFixture[str], apricode_spec: Path) -> None:
    code, out, _ = _run(
        capsys, "cost", "-f", str(apricode_spec), "--provider", "aws", "--headroom", "20", "-o", "json"
    )
    assert code == 0
    [production] = json.loads(out)["environments"]
    [aws] = production["estimates"]
    assert aws["total_usd"] == "487.45"
    assert [item["monthly"] for item in aws["items"]] == ["364.42", "4.80", "73.00", "28.80", "16.43", "0.00"]
    assert aws["node_pool"]["headroom_percent"] == 20


def test_cost_headroom_option_changes_the_pool(
    capsys: pytest.CaptureFixture[str], apricode_spec: Path
) -> None:
    _, out, _ = _run(capsys, "cost", "-f", str(apricode_spec), "-p", "gcp", "--headroom", "100", "-o", "json")
    pool = json.loads(out)["environments"][0]["estimates"][0]["node_pool"]
    assert pool["headroom_percent"] == 100
    assert pool["chosen"]["at_min"]["nodes"] > 3


@pytest.mark.parametrize("command", ["cost", "capacity"])
def test_unknown_provider_exits_2(
    capsys: pytest.CaptureFixture[str], apricode_spec: Path, command: str
) -> None:
    code, out, err = _run(capsys, command, "-f", str(apricode_spec), "--provider", "hetzner-clod")
    assert code == 2
    assert out == ""
    assert "did you mean 'hetzner'?" in err
    assert "known providers: aws, digitalocean, gcp, hetzner" in err


@pytest.mark.parametrize("command", ["cost", "capacity"])
def test_unknown_environment_exits_2(
    capsys: pytest.CaptureFixture[str], apricode_spec: Path, command: str
) -> None:
    code, _, err = _run(capsys, command, "-f", str(apricode_spec), "-e", "prod")
    assert code == 2
    assert "no environment 'prod'" in err


def test_missing_spec_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "cost", "-f", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "no such file" in err
