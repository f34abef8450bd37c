"""`shipyard cost --compare` and `--as-seed` on the Apricode example (seed 004)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipyard.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, _ = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out


def test_compare_table_names_each_option_and_what_is_not_priced(
    capsys: pytest.CaptureFixture[str], apricode_spec: Path
) -> None:
    code, out = _run(capsys, "cost", "-f", str(apricode_spec), "--compare")
    assert code == 0
    for title in ("Amazon Web Services (EKS)", "Google Cloud (GKE)", "DigitalOcean (DOKS)", "Hetzner Cloud"):
        assert f"{title}" in out
    assert "app + database" in out  # the option column may wrap, never cut
    assert "not priced: spot: DigitalOcean sells no spot or preemptible Droplets" in out
    assert "not priced: spot: Hetzner Cloud sells no spot or preemptible servers" in out
    assert "https://aws.amazon.com/ebs/pricing/" in out  # each cheapest line with its source
    assert "…" not in out


def test_compare_json_cheapest_first(capsys: pytest.CaptureFixture[str], apricode_spec: Path) -> None:
    code, out = _run(capsys, "cost", "-f", str(apricode_spec), "--compare", "-o", "json")
    assert code == 0
    [production] = json.loads(out)["environments"]
    providers = production["compare"]["providers"]
    assert [item["provider"] for item in providers] == ["hetzner", "digitalocean", "aws", "gcp"]
    for item in providers:
        totals = [float(option["total_usd"]) for option in item["options"]]
        assert totals == sorted(totals)
        assert item["cheapest"] == item["options"][0]["option"]


def test_as_seed_explains_each_provider(capsys: pytest.CaptureFixture[str], apricode_spec: Path) -> None:
    code, out = _run(capsys, "cost", "-f", str(apricode_spec), "--as-seed", "-o", "json")
    assert code == 0
    [production] = json.loads(out)["environments"]
    found = {item["provider"]: item for item in production["as_seed"]}
    assert {name: found[name]["seed_total_usd"] for name in found} == {
        "aws": "694",
        "digitalocean": "374",
        "gcp": "630",
        "hetzner": "186",
    }
    for name in ("aws", "digitalocean", "gcp"):
        assert abs(float(found[name]["difference_percent"])) <= 10
    gcp = found["gcp"]
    assert [step["description"][:30] for step in gcp["steps"]][1] == "+ a database pool (the seed's "
    _, table = _run(capsys, "cost", "-f", str(apricode_spec), "--as-seed", "-p", "gcp")
    assert "from shipyard's estimate to seed 004's plan" in table
    assert "(not in the seed's plan)" in table  # the boot disks the seed leaves out
