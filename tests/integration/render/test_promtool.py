"""The rendered Prometheus files, checked by Debian's real `promtool` (2.42).

Every environment of every example: `promtool check rules` and `promtool check config`. Then
`promtool test rules` with the unit tests in promtool/ (beside this file), run against the rules
rendered for examples/salespot (production): each seed alert fires on a bad series and stays quiet
on a healthy one, each burn-rate tier fires at its burn rate and not below, and BackupFailure
still fires while the state store is down (store_down.yml: the backup series frozen or absent).
Last, a real Prometheus loads a rendered prometheus.yml and rules.yml, scrapes a stand-in for shipyard's
/metrics and puts BackupFailure in pending once a backup fails.

Debian builds Prometheus without Kubernetes service discovery, so only the local target's
prometheus.yml is checked by promtool; the Kubernetes one is checked structurally in the unit tests.
A missing promtool fails these tests rather than skip them.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipyard.render import write_monitoring
from shipyard.spec import load_spec, load_spec_text
from support.prometheus import PROMETHEUS, metrics_exporter
from support.servers import free_port

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(ROOT.glob("examples/*/shipyard.yaml"))
PROMTOOL_TESTS = sorted((Path(__file__).parent / "promtool").glob("*.yml"))
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
def test_every_environment_passes_promtool_check(example: Path, tmp_path: Path) -> None:
    spec = load_spec(example)
    written = write_monitoring(spec, "prometheus", tmp_path / "prometheus")
    rules = [f"{env}/rules.yml" for env in spec.environments]
    checked = _promtool("check", "rules", *rules, cwd=written.directory)
    assert checked.count("SUCCESS") == len(rules)
    for env in spec.environments:
        output = _promtool("check", "config", f"{env}/prometheus.yml", cwd=written.directory)
        assert "1 rule files found" in output


def test_seed_alerts_and_burn_rates_under_promtool_test(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "examples" / "salespot" / "shipyard.yaml")
    written = write_monitoring(spec, "prometheus", tmp_path / "rules", "production")
    assert {path.name for path in PROMTOOL_TESTS} == {"seed_alerts.yml", "burn_rates.yml", "store_down.yml"}
    for test in PROMTOOL_TESTS:
        shutil.copy(test, written.directory / test.name)
    output = _promtool("test", "rules", *(test.name for test in PROMTOOL_TESTS), cwd=written.directory)
    assert output.count("SUCCESS") == len(PROMTOOL_TESTS)


def test_promtool_test_fails_when_an_alert_does_not_fire(tmp_path: Path) -> None:
    """The promtool tests can fail: with HighErrorRate's bound raised past the bad series' 10 %,
    the seed alerts' test must not pass."""
    spec = load_spec(ROOT / "examples" / "salespot" / "shipyard.yaml")
    written = write_monitoring(spec, "prometheus", tmp_path / "rules", "production")
    rules = written.directory / "rules.yml"
    text = rules.read_text()
    assert "service:http_error_ratio:rate5m > 0.05" in text
    rules.write_text(
        text.replace("service:http_error_ratio:rate5m > 0.05", "service:http_error_ratio:rate5m > 0.5")
    )
    shutil.copy(Path(__file__).parent / "promtool" / "seed_alerts.yml", written.directory)
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "seed_alerts.yml"],
        cwd=written.directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "HighErrorRate" in result.stdout + result.stderr


def _alerts(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/alerts", timeout=5)
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json()["data"]["alerts"]
    return alerts


def test_real_prometheus_loads_the_rendered_files_and_evaluates_them(tmp_path: Path) -> None:
    with metrics_exporter() as exporter:
        spec = load_spec_text(
            textwrap.dedent(
                f"""
                name: shop
                services:
                  web: {{role: web, run: "python app.py", port: 8080}}
                backup: {{repository: /var/backups/shop, password: "${{env:RESTIC_PASSWORD}}"}}
                alerts: {{scrape_interval: 1s, shipyard_target: "{exporter.address}"}}
                environments:
                  local: {{}}
                """
            ),
            "shop.yaml",
        )
        written = write_monitoring(spec, "prometheus", tmp_path / "prometheus", "local")
        exporter.set("shipyard_backup_last_run_success", {"source": "postgres"}, 1)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with (tmp_path / "log").open("wb") as log:
            process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={written.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 30
                while True:
                    # Until its rules are loaded Prometheus answers 503 with a plain-text body.
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        rules = httpx.get(f"{url}/api/v1/rules", timeout=1).json()["data"]["groups"]
                        if rules:
                            break
                    assert process.poll() is None, (tmp_path / "log").read_text()[-2000:]
                    assert time.monotonic() < deadline, "Prometheus did not load the rules in 30 s"
                    time.sleep(0.1)
                assert [group["name"] for group in rules] == ["shop"]
                # healthy first: scraped (the job is "shipyard"), and no BackupFailure
                while not httpx.get(
                    f"{url}/api/v1/query",
                    params={"query": 'shipyard_backup_last_run_success{job="shipyard"} == 1'},
                    timeout=5,
                ).json()["data"]["result"]:
                    assert time.monotonic() < deadline, "Prometheus never scraped the stand-in"
                    time.sleep(0.1)
                time.sleep(1.5)  # a rule evaluation or two on the healthy value
                assert not [a for a in _alerts(url) if a["labels"]["alertname"] == "BackupFailure"]
                exporter.set("shipyard_backup_last_run_success", {"source": "postgres"}, 0)
                deadline = time.monotonic() + 60
                while True:
                    failing = [a for a in _alerts(url) if a["labels"]["alertname"] == "BackupFailure"]
                    if failing:
                        break
                    assert time.monotonic() < deadline, "BackupFailure never became pending"
                    time.sleep(0.2)
                (alert,) = failing
                assert alert["state"] == "pending"  # for: 1m; pending proves the rule saw the failure
                assert alert["labels"] == {
                    "alertname": "BackupFailure",
                    "severity": "page",
                    "source": "postgres",
                    "job": "shipyard",
                    "instance": exporter.address,
                }
            finally:
                process.terminate()
                process.wait(10)
