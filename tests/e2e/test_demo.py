"""`make demo`'s script, end to end, as a user runs it: every step succeeds and says what it made."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_demo_validates_renders_and_prices_the_apricode_stack(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        ["bash", "scripts/demo.sh", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # Seed 004's totals table, reproduced exactly.
    total = next(line for line in text.splitlines() if line.startswith("TOTAL"))
    assert total.split() == ["TOTAL", "7.35", "18.5", "15.5", "36", "360"]
    # Providers cheapest first, in seed 004's order.
    summary = text[text.index("Monthly cost, cheapest first") :]
    ranking = [line.split()[1] for line in summary.splitlines() if line[:2] in ("1 ", "2 ", "3 ", "4 ")]
    assert ranking == ["hetzner", "digitalocean", "gcp", "aws"]
    for env in ("dev", "staging", "production"):
        manifests = list((out / "kubernetes" / env).glob("*.yaml"))
        assert manifests, env
        for manifest in manifests:
            assert yaml.safe_load(manifest.read_text())["metadata"]["name"]
        assert (out / "kustomize" / "overlays" / env / "kustomization.yaml").exists()
        assert (out / "helm" / f"values-{env}.yaml").exists()
    assert (out / "helm" / "Chart.yaml").exists()
