"""The Kubernetes target's prometheus.yml and the PrometheusRule, checked by Debian's `promtool`.

Debian builds Prometheus without Kubernetes service discovery, so its promtool refuses any job with
`kubernetes_sd_configs` (the services' per-pod jobs, CloudNativePG's). Those jobs are set aside
(and asserted to be exactly the ones that use it); everything else of the config, the exporters'
and shipyard's jobs through their Services included, goes through `promtool check config` as
written. The PrometheusRule's groups are written as a rule file and go through
`promtool check rules` (unit/render/test_operator.py asserts they are rules.yml's groups).
A missing promtool fails these tests rather than skip them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shipyard.render import build_manifests, dump, scrape_config
from shipyard.spec import load_spec

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(ROOT.glob("examples/*/shipyard.yaml"))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

pytestmark = pytest.mark.integration


def _promtool(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.parent.name)
def test_kubernetes_scrape_config_passes_promtool(example: Path, tmp_path: Path) -> None:
    spec = load_spec(example)
    for env in spec.environments:
        stack = spec.stack(env)
        config = scrape_config(stack, "kubernetes")
        checked = [job for job in config["scrape_configs"] if "kubernetes_sd_configs" not in job]
        discovered = [job for job in config["scrape_configs"] if "kubernetes_sd_configs" in job]
        assert all("static_configs" not in job for job in discovered)
        assert {job["job_name"] for job in checked} >= {"shipyard"}
        (tmp_path / "rules.yml").write_text("groups: []\n")
        path = tmp_path / f"{env}.yml"
        path.write_text(dump({**config, "scrape_configs": checked}))
        output = _promtool("check", "config", path.name, cwd=tmp_path)
        assert "SUCCESS" in output


def test_prometheus_rule_groups_pass_promtool(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml")
    checked = 0
    for env in spec.environments:
        objects = build_manifests(spec.stack(env)).objects
        for rule in (obj for obj in objects if obj["kind"] == "PrometheusRule"):
            path = tmp_path / f"{env}-{rule['metadata']['name']}.yml"
            path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=True))
            assert "SUCCESS" in _promtool("check", "rules", path.name, cwd=tmp_path)
            checked += 1
    assert checked == len(spec.environments)
