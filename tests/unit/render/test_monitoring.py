"""The monitoring renderers: Prometheus scrape config and rules, Alertmanager, Grafana (pure)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from shipyard.cli import main
from shipyard.errors import RenderError, SpecError, UserError
from shipyard.render import (
    BURN_TIERS,
    MonitoringKind,
    alertmanager_config,
    dashboard,
    monitoring_text,
    monitoring_tree,
    rule_groups,
    scrape_config,
    write_monitoring,
)
from shipyard.render._prometheus import duration, le_matcher, number, regex_literal
from shipyard.spec import Spec, load_spec
from unit.render.render_helpers import ROOT, spec_from

SALESPOT = ROOT / "examples" / "salespot" / "shipyard.yaml"
SEED_ALERTS = {
    "HighErrorRate",
    "DatabaseDown",
    "APIResponseTimeDegradation",
    "DatabaseConnectionIssues",
    "BackupFailure",
    "PrimaryDatacenterUnhealthy",
    "DRFailoverReadiness",
}

FULL = """
name: shop
services:
  api: {role: api, image: "shop/api:1", port: 8000}
  web: {role: web, image: "shop/web:1", port: 3000}
  worker: {role: worker, image: "shop/api:1"}
datastores:
  db: {kind: postgresql, storage: {size: 10Gi}}
  cache: {kind: redis}
backup:
  repository: /var/backups/shop
  password: {secretRef: backup/password}
dr: {rto: 15m, rpo: 5m}
alerts:
  haproxy_target: 127.0.0.1:8405
  slos:
    - {service: api, objective: 99.9}
    - {service: api, objective: 99.5, indicator: latency, threshold_ms: 250}
  rules:
    - {name: QueueTooLong, expr: "queue_depth > 100", for: 10m, severity: ticket, summary: Queue too long}
notifications:
  hook: {kind: webhook, url: "${env:HOOK_URL}", min_severity: ticket}
  chat: {kind: slack, url: {secretRef: alerts/slack-url}}
  bot: {kind: telegram, token: {secretRef: alerts/bot-token}, chat_id: "-100123", min_severity: page}
  mail: {kind: email, to: [a@shop.example, b@shop.example], smtp_host: smtp.shop.example, smtp_port: 2525,
         smtp_user: alerts, smtp_password: "${env:SMTP_PASSWORD}", sender: alerts@shop.example}
control_plane: {}  # shipyard in the cluster: what `--target kubernetes` scrapes
environments:
  production: {}
"""

BARE = """
name: tiny
services:
  web: {role: web, run: "python app.py", port: 8080}
environments:
  local: {}
"""


@pytest.fixture(scope="module")
def full() -> Spec:
    return spec_from(FULL)


def _rules(spec: Spec, env: str = "production") -> list[dict[str, Any]]:
    return [rule for group in rule_groups(spec.stack(env))["groups"] for rule in group["rules"]]


def _alerts(spec: Spec, env: str = "production") -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for rule in _rules(spec, env):
        if "alert" in rule:
            found.setdefault(rule["alert"], []).append(rule)
    return found


# --- small helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (60, "1m"), (5400, "90m"), (7200, "2h"), (93600, "26h"), (86400, "1d")],
)
def test_duration(seconds: int, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"), [(0.05, "0.05"), (2.0, "2"), (Decimal("0.0144"), "0.0144"), (1e-05, "0.00001")]
)
def test_number_is_plain(value: float | Decimal, text: str) -> None:
    assert number(value) == text


@given(st.text(alphabet="abc-._|()[]{}*+?^$\\0123", min_size=1, max_size=12))
def test_regex_literal_matches_exactly_itself(text: str) -> None:
    pattern = re.compile(regex_literal(text))
    assert pattern.fullmatch(text)
    assert not pattern.fullmatch(text + "x")


def test_le_matcher_accepts_every_client_spelling() -> None:
    assert le_matcher(2000) == 'le=~"2|2\\\\.0"'
    assert le_matcher(250) == 'le=~"0\\\\.25"'


@given(
    st.decimals(min_value=Decimal("90"), max_value=Decimal("99.999"), places=3),
)
def test_burn_thresholds_are_factor_times_budget(objective: Decimal) -> None:
    spec = spec_from(FULL.replace("objective: 99.9}", f"objective: {objective}}}"))
    burns = [a for a in _alerts(spec)["ErrorBudgetBurn"] if a["labels"]["slo"].startswith("api-availability")]
    budget = (Decimal(100) - objective) / 100
    for tier, alert in zip(BURN_TIERS, burns, strict=True):
        bound = Decimal(tier.factor) * budget
        assert alert["expr"].count(f"> {number(bound)})") == 2


# --- rules ------------------------------------------------------------------------------------


def test_every_seed_alert_when_the_stack_has_everything(full: Spec) -> None:
    alerts = _alerts(full)
    assert alerts.keys() >= SEED_ALERTS
    for name in SEED_ALERTS:
        (alert,) = alerts[name]
        assert alert["labels"]["severity"] in {"page", "ticket"}
        assert re.fullmatch(r"\d+[smhd]", alert["for"])
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}
        assert alert["annotations"]["runbook_url"] == f"https://runbooks.example.com/shipyard/{name}"


def test_seed_alerts_only_for_what_the_stack_has() -> None:
    alerts = _alerts(spec_from(BARE), "local")
    assert alerts.keys() == {"HighErrorRate", "APIResponseTimeDegradation", "PrimaryDatacenterUnhealthy"}


def test_metric_names_of_the_contract(full: Spec) -> None:
    exprs = " ".join(rule["expr"] for rule in _rules(full))
    for metric in (
        "haproxy_backend_http_requests_total",
        "haproxy_backend_http_responses_total",
        "haproxy_backend_active_servers",
        "http_request_duration_seconds_bucket",
        "http_request_duration_seconds_count",
        "pg_up",
        "pg_stat_database_numbackends",
        "pg_settings_max_connections",
        "redis_up",
        "shipyard_backup_last_run_success",
        "shipyard_backup_last_verification_success",
        "shipyard_backup_age_seconds",
        "shipyard_dr_standby_ready",
        "shipyard_dr_replication_lag_seconds",
        "shipyard_dr_drill_passed",
    ):
        assert re.search(rf"\b{metric}\b", exprs), metric


def test_red_recording_rules_per_http_service(full: Spec) -> None:
    records = {
        (rule["record"], rule.get("labels", {}).get("service")) for rule in _rules(full) if "record" in rule
    }
    for service in ("api", "web"):
        for name in ("http_requests:rate5m", "http_errors:rate5m"):
            assert (f"service:{name}", service) in records
        for quantile in ("p50", "p95", "p99"):
            assert (f"service:http_request_duration_seconds:{quantile}_rate5m", service) in records
    assert not any(service == "worker" for _, service in records)
    # only api has an availability SLO: only it is recorded over the long windows
    assert ("service:http_requests:rate3d", "api") in records
    assert ("service:http_requests:rate3d", "web") not in records


def test_burn_rate_tiers(full: Spec) -> None:
    burns = _alerts(full)["ErrorBudgetBurn"]
    assert len(burns) == 8  # four tiers for each of two SLOs
    availability = [b for b in burns if b["labels"]["slo"] == "api-availability-99.9"]
    assert [
        (
            b["labels"]["burn_rate"],
            b["labels"]["long_window"],
            b["labels"]["short_window"],
            b["labels"]["severity"],
        )
        for b in availability
    ] == [
        ("14.4", "1h", "5m", "page"),
        ("6", "6h", "30m", "page"),
        ("3", "1d", "2h", "ticket"),
        ("1", "3d", "6h", "ticket"),
    ]
    first = availability[0]["expr"]
    assert first == (
        '(service:http_error_ratio:rate1h{service="api"} > 0.0144)'
        ' and (service:http_error_ratio:rate5m{service="api"} > 0.0144)'
    )
    latency = [b for b in burns if b["labels"]["slo"] == "api-latency-99.5"]
    assert latency[0]["expr"].startswith('(slo:slow_requests:ratio_rate1h{slo="api-latency-99.5"} > 0.072)')
    recorded = [r for r in _rules(full) if r.get("record") == "slo:slow_requests:ratio_rate5m"]
    assert 'le=~"0\\\\.25"' in recorded[0]["expr"]


def test_latency_bound_follows_the_slo(full: Spec) -> None:
    (alert,) = _alerts(full)["APIResponseTimeDegradation"]
    assert 'p95_rate5m{service=~"api"} > 0.25' in alert["expr"]
    assert 'p95_rate5m{service=~"web"} > 2' in alert["expr"]


def test_spec_rules_with_runbooks_and_overrides() -> None:
    text = FULL.replace(
        "  rules:\n",
        "  runbook_base: https://wiki.shop.example/runbooks\n  rules:\n"
        "    - {name: HighErrorRate, expr: 'my_errors > 1', summary: Mine, runbook: https://wiki.shop.example/mine}\n",
    )
    alerts = _alerts(spec_from(text))
    (own,) = alerts["HighErrorRate"]
    assert own["expr"] == "my_errors > 1"
    assert own["annotations"]["runbook_url"] == "https://wiki.shop.example/mine"
    assert "for" not in own
    (queue,) = alerts["QueueTooLong"]
    assert queue["for"] == "10m"
    assert queue["labels"] == {"severity": "ticket"}
    assert queue["annotations"]["runbook_url"] == "https://wiki.shop.example/runbooks/QueueTooLong"
    assert alerts["DatabaseDown"][0]["annotations"]["runbook_url"].startswith(
        "https://wiki.shop.example/runbooks/"
    )


def test_a_latency_slo_needs_a_threshold() -> None:
    with pytest.raises(SpecError, match="threshold_ms"):
        spec_from(FULL.replace(", threshold_ms: 250", ""))


# --- scrape configuration ---------------------------------------------------------------------


def _jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_scrape_config_local(full: Spec) -> None:
    config = scrape_config(full.stack("production"), "local")
    jobs = _jobs(config)
    assert list(jobs) == ["api", "web", "haproxy", "postgres-exporter", "redis-exporter", "shipyard"]
    assert jobs["api"]["file_sd_configs"] == [{"files": ["targets/api.json"]}]
    assert jobs["haproxy"]["static_configs"] == [{"targets": ["127.0.0.1:8405"]}]
    assert jobs["postgres-exporter"]["static_configs"] == [
        {"targets": ["127.0.0.1:9187"], "labels": {"datastore": "db"}}
    ]
    assert jobs["shipyard"]["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]
    assert config["rule_files"] == ["rules.yml"]
    assert config["global"]["external_labels"] == {"stack": "shop", "environment": "production"}


def test_scrape_config_local_without_an_haproxy_exporter(full: Spec) -> None:
    stack = full.stack("production")
    stack = stack.model_copy(update={"alerts": stack.alerts.model_copy(update={"haproxy_target": None})})
    assert "haproxy" not in _jobs(scrape_config(stack, "local"))


def test_scrape_config_kubernetes(full: Spec) -> None:
    jobs = _jobs(scrape_config(full.stack("production"), "kubernetes"))
    assert "haproxy" not in jobs
    api = jobs["api"]
    assert api["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["shop-production"]}}]
    keep = api["relabel_configs"][0]
    assert keep["action"] == "keep"
    assert re.fullmatch(keep["regex"], "api;shop;8000")
    assert not re.fullmatch(keep["regex"], "web;shop;3000")
    assert jobs["redis-exporter"]["static_configs"][0]["targets"] == [
        "cache-exporter.shop-production.svc:9121"
    ]


# --- Alertmanager -----------------------------------------------------------------------------


def test_alertmanager_routes_by_severity(full: Spec) -> None:
    config = alertmanager_config(full.stack("production"))
    receivers = {r["name"]: r for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert {route["receiver"] for route in config["route"]["routes"]} <= receivers.keys()
    assert [route["matchers"] for route in config["route"]["routes"]] == [
        ['severity="page"'],
        ['severity="ticket"'],
    ]
    kinds = {name: sorted(k for k in r if k.endswith("_configs")) for name, r in receivers.items()}
    assert kinds == {
        "page": ["email_configs", "slack_configs", "telegram_configs", "webhook_configs"],
        "ticket": ["email_configs", "slack_configs", "webhook_configs"],
        "info": ["email_configs", "slack_configs"],
    }
    assert config["inhibit_rules"] == [
        {
            "source_matchers": ['severity="page"'],
            "target_matchers": ['severity="ticket"'],
            "equal": ["alertname", "service", "slo"],
        }
    ]


def test_alertmanager_reads_secrets_from_files(full: Spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("HOOK_URL", "https://user:pw@hooks.example/x")
    receivers = {r["name"]: r for r in alertmanager_config(full.stack("production"))["receivers"]}
    page = receivers["page"]
    assert page["webhook_configs"] == [
        {"url_file": "/etc/alertmanager/secrets/env/HOOK_URL", "send_resolved": True}
    ]
    assert page["slack_configs"][0]["api_url_file"] == "/etc/alertmanager/secrets/alerts/slack-url"
    telegram = page["telegram_configs"][0]
    assert telegram["bot_token_file"] == "/etc/alertmanager/secrets/alerts/bot-token"
    assert telegram["chat_id"] == -100123
    email = page["email_configs"][0]
    assert email == {
        "to": "a@shop.example, b@shop.example",
        "from": "alerts@shop.example",
        "smarthost": "smtp.shop.example:2525",
        "require_tls": True,
        "send_resolved": True,
        "auth_username": "alerts",
        "auth_password_file": "/etc/alertmanager/secrets/env/SMTP_PASSWORD",
    }
    text = monitoring_text(full, "alertmanager", "production")
    assert "hunter2" not in text
    assert "user:pw" not in text
    assert "#   /etc/alertmanager/secrets/alerts/bot-token" in text


def test_telegram_chat_id_must_be_numeric() -> None:
    spec = spec_from(FULL.replace('chat_id: "-100123"', 'chat_id: "@ops"'))
    with pytest.raises(RenderError, match="numeric chat id"):
        alertmanager_config(spec.stack("production"))


# --- Grafana ----------------------------------------------------------------------------------


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_dashboard_rows_and_layout(full: Spec) -> None:
    model = dashboard(full.stack("production"))
    assert model["schemaVersion"] == 39
    assert len(model["uid"]) <= 40
    panels = model["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == [
        "api: rate, errors, duration",
        "web: rate, errors, duration",
        "Releases",
        "PostgreSQL",
        "Redis",
        "Backups",
        "Disaster recovery",
    ]
    assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
    places = [p["gridPos"] for p in panels]
    assert all(g["x"] >= 0 and g["x"] + g["w"] <= 24 for g in places)
    assert not any(_overlap(a, b) for i, a in enumerate(places) for b in places[i + 1 :])
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert 'service:http_request_duration_seconds:p99_rate5m{service="api"}' in exprs
    assert "shipyard_dr_target_rto_seconds" in exprs
    assert "vector(300)" in exprs  # the RPO line on the backup age


def test_dashboard_panels_use_recorded_series(full: Spec) -> None:
    recorded = {rule["record"] for rule in _rules(full) if "record" in rule}
    exprs = [t["expr"] for p in dashboard(full.stack("production"))["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bservice:[a-z_:0-9]+", e)}
    assert used
    assert used <= recorded


def test_bare_dashboard_has_no_datastore_rows() -> None:
    rows = [p["title"] for p in dashboard(spec_from(BARE).stack("local"))["panels"] if p["type"] == "row"]
    assert rows == ["web: rate, errors, duration", "Releases"]


# --- files, stdout and the CLI ----------------------------------------------------------------


def test_same_input_same_bytes(full: Spec) -> None:
    kinds: tuple[MonitoringKind, ...] = ("prometheus", "alertmanager", "grafana")
    for kind in kinds:
        first = monitoring_tree(full, kind).files
        again = monitoring_tree(spec_from(FULL), kind).files
        assert first == again


def test_tree_per_environment() -> None:
    spec = load_spec(SALESPOT)
    files = monitoring_tree(spec, "prometheus").files
    assert sorted(files) == [
        f"{env}/{name}"
        for env in ("dev", "production", "staging")
        for name in ("prometheus.yml", "rules.yml")
    ]
    for text in files.values():
        yaml.safe_load(text)


def test_stdout_needs_an_environment_when_there_are_several() -> None:
    with pytest.raises(UserError, match="name one with -e"):
        monitoring_text(load_spec(SALESPOT), "grafana")
    single = monitoring_text(spec_from(BARE), "grafana")
    assert json.loads(single)["title"] == "tiny (local)"


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as ended:
        main(argv)
    code = ended.value.code
    return code if isinstance(code, int) else 1


def test_cli_stdout_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["render", "prometheus", "-f", str(SALESPOT), "-e", "production"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [sorted(d) for d in documents] == [
        ["alerting", "global", "rule_files", "scrape_configs"],
        ["groups"],
    ]
    assert _run(["render", "grafana", "-f", str(SALESPOT), "-e", "production"]) == 0
    assert json.loads(capsys.readouterr().out)["schemaVersion"] == 39
    assert _run(["render", "alertmanager", "-f", str(SALESPOT), "-o", str(tmp_path / "am")]) == 0
    assert "receivers" in capsys.readouterr().out
    assert (tmp_path / "am" / "production" / "alertmanager.yml").is_file()
    assert (
        _run(
            [
                "render",
                "prometheus",
                "-f",
                str(SALESPOT),
                "-e",
                "dev",
                "--target",
                "kubernetes",
                "-o",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    config = yaml.safe_load((tmp_path / "p" / "prometheus.yml").read_text())
    assert "kubernetes_sd_configs" in config["scrape_configs"][0]
    assert _run(["render", "grafana", "-f", str(SALESPOT)]) == 2
    assert "-e" in capsys.readouterr().err


def test_written_twice_is_identical(tmp_path: Path) -> None:
    spec = load_spec(SALESPOT)
    write_monitoring(spec, "grafana", tmp_path / "a")
    write_monitoring(spec, "grafana", tmp_path / "b")
    for path in sorted((tmp_path / "a").rglob("*.json")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def test_the_cluster_scrape_config_sends_alerts_to_the_operators_alertmanager() -> None:
    # `alertmanager.monitoring.svc` was never rendered by anything; prometheus-operator names the
    # Service of every Alertmanager it runs `alertmanager-operated`, in Prometheus' namespace.
    spec = spec_from(
        """
        name: tiny
        services: {web: {role: web, image: "tiny:1", port: 80}}
        platform: {components: {prometheus: {namespace: observability}}}
        alerts: {shipyard_service: "shipyard.ops.svc:8080"}
        environments: {a: {}}
        """
    )
    config = scrape_config(spec.stack("a"), "kubernetes")
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager-operated.observability.svc:9093"]
