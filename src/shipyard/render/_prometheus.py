"""Prometheus: the scrape configuration and the rule file of one environment.

The rules follow shipyard's /metrics contract and two outside sources of service metrics:
HAProxy's built-in exporter (`haproxy_backend_*`, `proxy` = the service's backend, `be_<service>`
or `<service>`) and each service's own `http_request_duration_seconds` histogram (`job` = the
service). Requests and errors come from HAProxy where it runs and from the histogram's counts
elsewhere (`or`); latency always from the histogram.

    <stack>.red         recording: service:http_requests:rate<w>, service:http_errors:rate<w>,
                        service:http_error_ratio:rate<w>, service:http_request_duration_seconds:
                        p50|p95|p99_rate5m (w = 5m, plus the burn-rate windows of SLO'd services)
    <stack>.slo         recording slo:slow_requests:ratio_rate<w> (latency SLOs), and the
                        multi-window burn-rate alerts ErrorBudgetBurn (the SRE workbook's table)
    <stack>.alerts      the seeds' alerts, each only where the stack has what it watches
    <stack>.spec        the spec's own `alerts.rules` (one named like a seed alert replaces it)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from ..errors import RenderError
from ..spec import AlertRule, Postgres, Redis, Slo, Stack  # not (yet) exported by shipyard.spec
from ._exporters import (
    CLOUDNATIVE_PG,
    METRICS_PORT,
    POSTGRES_EXPORTER_PORT,
    REDIS_EXPORTER_PORT,
    datastore_mode,
    exporters,
    prometheus_namespace,
)

Target = Literal["local", "kubernetes"]

SHIPYARD_JOB = "shipyard"
HAPROXY_JOB = "haproxy"
POSTGRES_JOB = "postgres-exporter"
REDIS_JOB = "redis-exporter"
CNPG_JOB = "postgres-cloudnative-pg"
SHIPYARD_SERVICE = "shipyard"
"""The Service `shipyard serve` is reached through in the cluster."""
RULES_FILE = "rules.yml"
CONFIG_FILE = "prometheus.yml"
DEFAULT_P95_SECONDS = 2.0
"""APIResponseTimeDegradation's p95 bound without a latency SLO (seed 002: answers under 2 s)."""
CONNECTIONS_SHARE = 0.8
ERROR_RATIO = 0.05
"""HighErrorRate's bound (seed 000: more than 5 % of requests fail)."""


@dataclass(frozen=True)
class BurnTier:
    """One line of the SRE workbook's multi-window, multi-burn-rate table."""

    factor: str
    long: str
    short: str
    severity: Literal["page", "ticket"]
    for_: str


BURN_TIERS = (
    BurnTier("14.4", "1h", "5m", "page", "2m"),
    BurnTier("6", "6h", "30m", "page", "15m"),
    BurnTier("3", "1d", "2h", "ticket", "1h"),
    BurnTier("1", "3d", "6h", "ticket", "3h"),
)
BURN_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
QUANTILES = (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99"))


def duration(seconds: int) -> str:
    """Seconds as a Prometheus duration in the largest unit that divides them: 5400 -> '90m'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def number(value: Decimal | float) -> str:
    """A threshold written plainly: 0.0144, 2, 0.25 (never 1.44e-2 nor 0.014400000000000001)."""
    return format(Decimal(str(value)).normalize(), "f")


def http_services(stack: Stack) -> list[str]:
    """The services that answer HTTP (web and api): the ones with RED metrics."""
    return [name for name, service in stack.services.items() if service.role != "worker" and service.port]


def metrics_services(stack: Stack) -> list[str]:
    """The HTTP services Prometheus scrapes: those whose `metrics` is not null."""
    return [name for name in http_services(stack) if stack.services[name].metrics is not None]


def regex_literal(text: str) -> str:
    """`text` as an RE2 pattern that matches exactly it (only RE2's metacharacters escaped)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


def in_string(pattern: str) -> str:
    """A pattern inside a PromQL double-quoted string, where a backslash is itself escaped."""
    return pattern.replace("\\", "\\\\")


def _alternation(names: Iterable[str]) -> str:
    return in_string("|".join(regex_literal(name) for name in names))


def proxy_matcher(service: str) -> str:
    """HAProxy's `proxy` label of a service's backend: `be_<service>` (the local target) or the
    bare name (the contract's spelling)."""
    return f'proxy=~"(?:be_)?{in_string(regex_literal(service))}"'


def slo_id(slo: Slo) -> str:
    return f"{slo.service}-{slo.indicator}-{number(slo.objective)}"


def error_budget(slo: Slo) -> Decimal:
    """The share of requests that may be bad: 0.001 for 99.9."""
    return (Decimal(100) - Decimal(str(slo.objective))) / Decimal(100)


def le_matcher(threshold_ms: float) -> str:
    """A bucket bound as client libraries spell it: Go and Node write `2`, Python `2.0`."""
    seconds = Decimal(str(threshold_ms)) / Decimal(1000)
    plain = number(seconds)
    spellings = [plain, f"{plain}.0"] if "." not in plain else [plain]
    return 'le=~"' + in_string("|".join(regex_literal(each) for each in spellings)) + '"'


# --- scrape configuration ---------------------------------------------------------------------


def _kubernetes_job(stack: Stack, service: str, port: int, path: str) -> dict[str, Any]:
    meta = "__meta_kubernetes_pod_"
    return {
        "job_name": service,
        **_path(path),
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [stack.k8s_namespace]}}],
        "relabel_configs": [
            {
                "source_labels": [
                    f"{meta}label_app_kubernetes_io_name",
                    f"{meta}label_app_kubernetes_io_part_of",
                    f"{meta}container_port_number",
                ],
                "regex": f"{regex_literal(service)};{regex_literal(stack.name)};{port}",
                "action": "keep",
            },
            {"target_label": "service", "replacement": service},
            {"source_labels": [f"{meta}name"], "target_label": "pod"},
        ],
    }


def _path(path: str) -> dict[str, str]:
    return {} if path == "/metrics" else {"metrics_path": path}


def _local_job(service: str, path: str) -> dict[str, Any]:
    # A service's instances come and go with each release on their own ports: the local target
    # lists them in targets/<service>.json, which Prometheus re-reads when it changes.
    return {
        "job_name": service,
        **_path(path),
        "file_sd_configs": [{"files": [f"targets/{service}.json"]}],
        "relabel_configs": [{"target_label": "service", "replacement": service}],
    }


def _cnpg_job(stack: Stack, names: list[str]) -> dict[str, Any]:
    """CloudNativePG instances export their own metrics (port `metrics`): found as pods, and
    labelled like the exporters' series (`job` postgres-exporter) so the same rules read them."""
    meta = "__meta_kubernetes_pod_"
    return {
        "job_name": CNPG_JOB,
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [stack.k8s_namespace]}}],
        "relabel_configs": [
            {
                "source_labels": [
                    f"{meta}label_cnpg_io_cluster",
                    f"{meta}label_cnpg_io_podRole",
                    f"{meta}container_port_name",
                ],
                "regex": f"({'|'.join(regex_literal(name) for name in names)});instance;{METRICS_PORT}",
                "action": "keep",
            },
            {"source_labels": [f"{meta}label_cnpg_io_cluster"], "target_label": "datastore"},
            {"target_label": "job", "replacement": POSTGRES_JOB},
            {"source_labels": [f"{meta}name"], "target_label": "pod"},
        ],
    }


def _exporter_jobs(stack: Stack, target: Target) -> list[dict[str, Any]]:
    """On Kubernetes, each rendered exporter through its Service (and CloudNativePG's pods); on a
    plain host, one exporter per datastore, on consecutive ports."""
    jobs = []
    if target == "kubernetes":
        rendered = exporters(stack)
        cnpg = sorted(
            name for name, store in stack.datastores.items() if datastore_mode(store) == CLOUDNATIVE_PG
        )
        for job, kind in ((POSTGRES_JOB, "postgresql"), (REDIS_JOB, "redis")):
            static = [
                {
                    "targets": [f"{exporter.name}.{stack.k8s_namespace}.svc:{exporter.port}"],
                    "labels": {"datastore": exporter.datastore},
                }
                for exporter in rendered
                if exporter.kind == kind
            ]
            if static:
                jobs.append({"job_name": job, "static_configs": static})
            if kind == "postgresql" and cnpg:
                jobs.append(_cnpg_job(stack, cnpg))
        return jobs
    for job, store_kind, port in (
        (POSTGRES_JOB, Postgres, POSTGRES_EXPORTER_PORT),
        (REDIS_JOB, Redis, REDIS_EXPORTER_PORT),
    ):
        names = sorted(
            name
            for name, store in stack.datastores.items()
            if isinstance(store, store_kind) and store.exporter is not None
        )
        local = [
            {"targets": [f"127.0.0.1:{port + index}"], "labels": {"datastore": name}}
            for index, name in enumerate(names)
        ]
        if local:
            jobs.append({"job_name": job, "static_configs": local})
    return jobs


def shipyard_address(stack: Stack, target: Target) -> str:
    """Where Prometheus finds `shipyard serve`: on plain hosts `alerts.shipyard_target`; in the
    cluster the control plane's Service (render/_control_plane.py) when `control_plane` is set,
    else `alerts.shipyard_service`. Never a Service that is not rendered: neither set is refused."""
    alerts = stack.alerts
    if target != "kubernetes":
        return alerts.shipyard_target
    if stack.control_plane is not None:
        return f"{SHIPYARD_SERVICE}.{stack.k8s_namespace}.svc:{stack.control_plane.port}"
    if alerts.shipyard_service is not None:
        return alerts.shipyard_service
    raise RenderError(
        f"render prometheus --target kubernetes ({stack.environment or stack.name}): nothing says where"
        " shipyard runs, so its scrape job would point at nothing; set `control_plane:` to run shipyard"
        " in the cluster (its Service `shipyard` is rendered and scraped), or `alerts.shipyard_service:"
        " host:port` to say where it runs"
    )


def scrape_config(stack: Stack, target: Target = "local") -> dict[str, Any]:
    """prometheus.yml: every HTTP service, HAProxy (local target), the datastores' exporters,
    shipyard itself; the rule file; Alertmanager."""
    alerts = stack.alerts
    interval = duration(alerts.scrape_interval)
    jobs: list[dict[str, Any]] = []
    for name in metrics_services(stack):
        service = stack.services[name]
        assert service.port is not None  # metrics_services keeps only services with a port
        assert service.metrics is not None  # and with metrics
        path = service.metrics.path
        jobs.append(
            _kubernetes_job(stack, name, service.port, path)
            if target == "kubernetes"
            else _local_job(name, path)
        )
    if target == "local" and http_services(stack) and alerts.haproxy_target:
        jobs.append({"job_name": HAPROXY_JOB, "static_configs": [{"targets": [alerts.haproxy_target]}]})
    jobs += _exporter_jobs(stack, target)
    jobs.append(
        {"job_name": SHIPYARD_JOB, "static_configs": [{"targets": [shipyard_address(stack, target)]}]}
    )
    # prometheus-operator gives every Alertmanager it runs the `alertmanager-operated` Service.
    alertmanager = (
        f"alertmanager-operated.{prometheus_namespace(stack)}.svc:9093"
        if target == "kubernetes"
        else "127.0.0.1:9093"
    )
    return {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"stack": stack.name, "environment": stack.environment or "default"},
        },
        "rule_files": [RULES_FILE],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": jobs,
    }


# --- recording rules --------------------------------------------------------------------------


def _slo_windows(stack: Stack, indicator: str) -> dict[str, list[Slo]]:
    found: dict[str, list[Slo]] = {}
    for slo in stack.alerts.slos:
        if slo.indicator == indicator and slo.service in http_services(stack):
            found.setdefault(slo.service, []).append(slo)
    return found


def red_rules(stack: Stack) -> list[dict[str, Any]]:
    """Requests, errors and their ratio per service (over 5m, and every burn-rate window of a
    service with an availability SLO), and p50/p95/p99 latency over 5m."""
    with_slo = _slo_windows(stack, "availability")
    rules: list[dict[str, Any]] = []
    ratio_windows: set[str] = set()
    for service in http_services(stack):
        job = f'job="{service}"'
        windows = BURN_WINDOWS if service in with_slo else ("5m",)
        ratio_windows.update(windows)
        for window in windows:
            requests = f"sum(rate(http_request_duration_seconds_count{{{job}}}[{window}]))"
            rules.append(
                {
                    "record": f"service:http_requests:rate{window}",
                    "expr": f"sum(rate(haproxy_backend_http_requests_total{{{proxy_matcher(service)}}}"
                    f"[{window}])) or {requests}",
                    "labels": {"service": service},
                }
            )
            rules.append(
                {
                    "record": f"service:http_errors:rate{window}",
                    "expr": "sum(rate(haproxy_backend_http_responses_total"
                    f'{{{proxy_matcher(service)},code="5xx"}}[{window}]))'
                    f' or sum(rate(http_request_duration_seconds_count{{{job},status=~"5.."}}[{window}]))'
                    f" or 0 * {requests}",
                    "labels": {"service": service},
                }
            )
        for name, quantile in QUANTILES:
            rules.append(
                {
                    "record": f"service:http_request_duration_seconds:{name}_rate5m",
                    "expr": f"histogram_quantile({quantile}, sum by (le) "
                    f"(rate(http_request_duration_seconds_bucket{{{job}}}[5m])))",
                    "labels": {"service": service},
                }
            )
    for window in (w for w in BURN_WINDOWS if w in ratio_windows):
        rules.append(
            {
                "record": f"service:http_error_ratio:rate{window}",
                "expr": f"service:http_errors:rate{window} / service:http_requests:rate{window}",
            }
        )
    return rules


def _latency_recording(slo: Slo) -> list[dict[str, Any]]:
    assert slo.threshold_ms is not None  # the model requires it of a latency SLO
    job = f'job="{slo.service}"'
    return [
        {
            "record": f"slo:slow_requests:ratio_rate{window}",
            "expr": "1 - sum(rate(http_request_duration_seconds_bucket"
            f"{{{job},{le_matcher(slo.threshold_ms)}}}[{window}]))"
            f" / sum(rate(http_request_duration_seconds_count{{{job}}}[{window}]))",
            "labels": {"service": slo.service, "slo": slo_id(slo)},
        }
        for window in BURN_WINDOWS
    ]


def _bad_ratio(slo: Slo, window: str) -> str:
    if slo.indicator == "latency":
        return f'slo:slow_requests:ratio_rate{window}{{slo="{slo_id(slo)}"}}'
    return f'service:http_error_ratio:rate{window}{{service="{slo.service}"}}'


def burn_rate_alerts(slo: Slo, runbook_base: str) -> list[dict[str, Any]]:
    """The four tiers for one SLO: each fires when both its windows burn the budget that fast."""
    budget = error_budget(slo)
    days = Decimal(slo.window) / Decimal(86400)
    what = (
        "requests failing"
        if slo.indicator == "availability"
        else f"requests slower than {number(slo.threshold_ms or 0)} ms"
    )
    rules = []
    for tier in BURN_TIERS:
        bound = number(Decimal(tier.factor) * budget)
        rules.append(
            {
                "alert": "ErrorBudgetBurn",
                "expr": f"({_bad_ratio(slo, tier.long)} > {bound})"
                f" and ({_bad_ratio(slo, tier.short)} > {bound})",
                "for": tier.for_,
                "labels": {
                    "severity": tier.severity,
                    "service": slo.service,
                    "slo": slo_id(slo),
                    "burn_rate": tier.factor,
                    "long_window": tier.long,
                    "short_window": tier.short,
                },
                "annotations": {
                    "summary": f"{slo.service}: {slo.indicator} SLO ({number(slo.objective)} %)"
                    f" burning its error budget {tier.factor}x too fast",
                    "description": f"{what} over {tier.long} and {tier.short} is above {bound}"
                    f" ({tier.factor} times the {number(budget)} the objective allows);"
                    f" at this rate the {duration(slo.window)} budget is gone in"
                    f" {number((days / Decimal(tier.factor)).quantize(Decimal('0.1')))} days."
                    " Now: {{ $value | humanizePercentage }} over the long window.",
                    "runbook_url": f"{runbook_base}/ErrorBudgetBurn",
                },
            }
        )
    return rules


def slo_rules(stack: Stack) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for slo in stack.alerts.slos:
        if slo.indicator == "latency":
            rules += _latency_recording(slo)
    for slo in stack.alerts.slos:
        rules += burn_rate_alerts(slo, stack.alerts.runbook_base)
    return rules


# --- the seeds' alerts ------------------------------------------------------------------------


def _alert(
    name: str, expr: str, for_: str, severity: str, summary: str, description: str, runbook_base: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{runbook_base}/{name}",
        },
    }


def _latency_bounds(stack: Stack) -> dict[str, float]:
    """The p95 bound of each HTTP service: its tightest latency SLO's threshold, else 2 s."""
    bounds = {service: DEFAULT_P95_SECONDS for service in http_services(stack)}
    for service, slos in _slo_windows(stack, "latency").items():
        bounds[service] = min((slo.threshold_ms or 0) / 1000 for slo in slos)
    return bounds


def seed_alerts(stack: Stack) -> list[dict[str, Any]]:
    """HighErrorRate, DatabaseDown, APIResponseTimeDegradation, DatabaseConnectionIssues,
    BackupFailure, PrimaryDatacenterUnhealthy and DRFailoverReadiness, where they apply."""
    base = stack.alerts.runbook_base
    services = http_services(stack)
    postgres = any(isinstance(s, Postgres) for s in stack.datastores.values())
    redis = any(isinstance(s, Redis) for s in stack.datastores.values())
    rules = []
    if services:
        rules.append(
            _alert(
                "HighErrorRate",
                f"service:http_error_ratio:rate5m > {number(ERROR_RATIO)}",
                "5m",
                "page",
                "{{ $labels.service }}: more than 5 % of requests fail",
                "{{ $labels.service }} answered {{ $value | humanizePercentage }} of its requests with"
                " a 5xx over the last 5 minutes (bound: 5 %).",
                base,
            )
        )
    if postgres or redis:
        parts = []
        if postgres:
            parts += [f'pg_up{{job="{POSTGRES_JOB}"}} == 0', f'up{{job="{POSTGRES_JOB}"}} == 0']
        if redis:
            parts += [f'redis_up{{job="{REDIS_JOB}"}} == 0', f'up{{job="{REDIS_JOB}"}} == 0']
        rules.append(
            _alert(
                "DatabaseDown",
                " or ".join(parts),
                "1m",
                "page",
                "Datastore {{ $labels.datastore }} is down",
                "{{ $labels.datastore }} ({{ $labels.instance }}) has not answered its exporter, or its"
                " exporter has not answered Prometheus, for more than a minute.",
                base,
            )
        )
    if services:
        by_bound: dict[float, list[str]] = {}
        for service, bound in _latency_bounds(stack).items():
            by_bound.setdefault(bound, []).append(service)
        expr = " or ".join(
            "service:http_request_duration_seconds:p95_rate5m"
            f'{{service=~"{_alternation(names)}"}} > {number(bound)}'
            for bound, names in sorted(by_bound.items())
        )
        rules.append(
            _alert(
                "APIResponseTimeDegradation",
                expr,
                "10m",
                "ticket",
                "{{ $labels.service }}: p95 latency is {{ $value | humanizeDuration }}",
                "The 95th percentile of {{ $labels.service }}'s response time has been above its bound"
                " (its latency SLO's threshold, else 2 s) for 10 minutes.",
                base,
            )
        )
    if postgres:
        rules.append(
            _alert(
                "DatabaseConnectionIssues",
                f'sum by (datastore, instance) (pg_stat_database_numbackends{{job="{POSTGRES_JOB}"}})'
                f' / max by (datastore, instance) (pg_settings_max_connections{{job="{POSTGRES_JOB}"}})'
                f" > {number(CONNECTIONS_SHARE)}",
                "5m",
                "ticket",
                "{{ $labels.datastore }}: {{ $value | humanizePercentage }} of connections in use",
                "PostgreSQL {{ $labels.datastore }} has used more than 80 % of max_connections for 5"
                " minutes; new connections will soon be refused.",
                base,
            )
        )
    if stack.backup is not None:
        max_age = stack.alerts.backup_max_age
        window = duration(max_age)
        rules.append(
            _alert(
                "BackupFailure",
                "shipyard_backup_last_run_success == 0 or shipyard_backup_last_verification_success == 0"
                f" or shipyard_backup_age_seconds > {max_age}"
                # While the state store is down shipyard serves the last good values (or, restarted,
                # none): the newest success Prometheus saw still ages, and with none seen for the
                # whole window and the store down, no backup can be recorded either.
                f" or time() - last_over_time(shipyard_backup_last_success_timestamp_seconds[{window}])"
                f" > {max_age}"
                f" or (absent_over_time(shipyard_backup_last_success_timestamp_seconds[{window}])"
                " and on() (shipyard_state_store_up == 0))",
                "1m",
                "page",
                "Backups are failing{{ with $labels.source }} for {{ . }}{{ end }}",
                "The newest backup set failed, its verification failed, or the newest complete backup is"
                f" older than {duration(stack.alerts.backup_max_age)}. Run `shipyard backup list` and"
                " `shipyard backup verify --latest`.",
                base,
            )
        )
    if services:
        up = f'sum(up{{job=~"{_alternation(services)}"}}) or vector(0)'
        proxies = in_string("|".join(f"(?:be_)?{regex_literal(name)}" for name in services))
        active = f'sum(haproxy_backend_active_servers{{proxy=~"{proxies}"}}) or vector(0)'
        rules.append(
            _alert(
                "PrimaryDatacenterUnhealthy",
                f"({up}) + ({active}) == 0",
                "2m",
                "page",
                f"{stack.name}: no service instance is up in the primary site",
                "Not one instance of "
                + ", ".join(services)
                + " answers Prometheus or HAProxy's health checks: the primary site cannot serve."
                " Consider `shipyard dr failover`.",
                base,
            )
        )
    if stack.dr is not None:
        rules.append(
            _alert(
                "DRFailoverReadiness",
                "shipyard_dr_standby_ready == 0"
                f" or shipyard_dr_replication_lag_seconds > {stack.dr.rpo}"
                " or shipyard_dr_drill_passed == 0",
                "10m",
                "ticket",
                "{{ with $labels.mode }}The last {{ . }} DR drill failed{{ else }}The standby is not ready"
                " to take over{{ end }}",
                "A failover now would miss its targets (RTO "
                f"{duration(stack.dr.rto)}, RPO {duration(stack.dr.rpo)}): the standby is not ready,"
                " its replication lag is above the RPO, or the last drill failed. See the DR row of the"
                " dashboard and `shipyard dr test`.",
                base,
            )
        )
    return rules


def spec_alert(rule: AlertRule, runbook_base: str) -> dict[str, Any]:
    """One of the spec's own rules."""
    alert: dict[str, Any] = {"alert": rule.name, "expr": rule.expr}
    if rule.for_:
        alert["for"] = duration(rule.for_)
    alert["labels"] = {"severity": rule.severity}
    alert["annotations"] = {
        "summary": rule.summary,
        "description": f"{rule.summary} (value: {{{{ $value }}}}).",
        "runbook_url": rule.runbook or f"{runbook_base}/{rule.name}",
    }
    return alert


def rule_groups(stack: Stack) -> dict[str, Any]:
    """The rule file: recording rules, burn-rate alerts, the seeds' alerts and the spec's.

    One group, in that order: Prometheus evaluates the rules of a group one after another but
    separate groups concurrently, so an alert in another group than the series it reads would see
    them one interval late or not (and `promtool test rules` would vary from run to run).
    """
    own = {rule.name for rule in stack.alerts.rules}
    rules = [
        *red_rules(stack),
        *slo_rules(stack),
        *(a for a in seed_alerts(stack) if a["alert"] not in own),
        *(spec_alert(rule, stack.alerts.runbook_base) for rule in stack.alerts.rules),
    ]
    return {"groups": [{"name": stack.name, "rules": rules}] if rules else []}
