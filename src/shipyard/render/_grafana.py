"""Grafana: one dashboard per environment, from the same recording rules the alerts use.

Rows: RED per HTTP service (requests per second, error ratio, p50/p95/p99), releases,
PostgreSQL, Redis, backups (age against the RPO, size, last success) and DR (drill RTO/RPO against
the targets, standby readiness and lag): each only where the stack has what it shows. The
Prometheus data source is a dashboard variable, so the JSON imports into any Grafana.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..spec import Postgres, Redis, Stack
from ._prometheus import POSTGRES_JOB, REDIS_JOB, http_services

SCHEMA_VERSION = 39
"""Grafana 10.4/11's dashboard schema."""
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH = 24


@dataclass
class _Layout:
    """Places panels left to right in rows of 24 columns, and numbers them."""

    panels: list[dict[str, Any]] = field(default_factory=list)
    y: int = 0
    x: int = 0
    height: int = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": self._next_id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": _WIDTH, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        self.y += self.height
        self.x = 0
        self.height = 0

    def panel(self, panel: dict[str, Any], width: int = 8, height: int = 8) -> None:
        if self.x + width > _WIDTH:
            self._newline()
        panel = {
            "id": self._next_id(),
            **panel,
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
        }
        self.panels.append(panel)
        self.x += width
        self.height = max(self.height, height)


def _targets(*queries: tuple[str, str]) -> list[dict[str, Any]]:
    return [
        {"refId": chr(ord("A") + index), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
        for index, (expr, legend) in enumerate(queries)
    ]


def timeseries(title: str, unit: str, *queries: tuple[str, str], description: str = "") -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "targets": _targets(*queries),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }
    if description:
        panel["description"] = description
    return panel


def stat(
    title: str, unit: str, *queries: tuple[str, str], mappings: list[Any] | None = None
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if mappings:
        defaults["mappings"] = mappings
    return {
        "type": "stat",
        "title": title,
        "datasource": DATASOURCE,
        "targets": _targets(*queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


_YES_NO = [
    {
        "type": "value",
        "options": {"0": {"text": "no", "color": "red"}, "1": {"text": "yes", "color": "green"}},
    }
]


def _red(layout: _Layout, service: str) -> None:
    selector = f'{{service="{service}"}}'
    layout.row(f"{service}: rate, errors, duration")
    layout.panel(
        timeseries("Requests per second", "reqps", (f"service:http_requests:rate5m{selector}", "{{service}}"))
    )
    layout.panel(
        timeseries(
            "Error ratio (5xx)", "percentunit", (f"service:http_error_ratio:rate5m{selector}", "{{service}}")
        )
    )
    layout.panel(
        timeseries(
            "Latency p50 / p95 / p99",
            "s",
            *(
                (f"service:http_request_duration_seconds:{q}_rate5m{selector}", q)
                for q in ("p50", "p95", "p99")
            ),
        )
    )


def _datastores(layout: _Layout, stack: Stack) -> None:
    kinds = {type(store) for store in stack.datastores.values()}
    if Postgres in kinds:
        job = f'job="{POSTGRES_JOB}"'
        layout.row("PostgreSQL")
        layout.panel(stat("Up", "none", (f"pg_up{{{job}}}", "{{datastore}}"), mappings=_YES_NO))
        layout.panel(
            timeseries(
                "Connections in use",
                "percentunit",
                (
                    f"sum by (datastore) (pg_stat_database_numbackends{{{job}}})"
                    f" / max by (datastore) (pg_settings_max_connections{{{job}}})",
                    "{{datastore}}",
                ),
            )
        )
        layout.panel(
            timeseries(
                "Backends",
                "none",
                (f"sum by (datastore) (pg_stat_database_numbackends{{{job}}})", "{{datastore}}"),
            )
        )
    if Redis in kinds:
        job = f'job="{REDIS_JOB}"'
        layout.row("Redis")
        layout.panel(stat("Up", "none", (f"redis_up{{{job}}}", "{{datastore}}"), mappings=_YES_NO))
        layout.panel(
            timeseries("Memory used", "bytes", (f"redis_memory_used_bytes{{{job}}}", "{{datastore}}"))
        )
        layout.panel(
            timeseries("Connected clients", "none", (f"redis_connected_clients{{{job}}}", "{{datastore}}"))
        )


def _backups(layout: _Layout, stack: Stack) -> None:
    if stack.backup is None:
        return
    layout.row("Backups")
    age = [("shipyard_backup_age_seconds", "{{source}}")]
    if stack.dr is not None:
        age.append((f"vector({stack.dr.rpo})", "RPO"))
    layout.panel(timeseries("Age of the newest backup vs RPO", "s", *age))
    layout.panel(timeseries("Size", "bytes", ("shipyard_backup_size_bytes", "{{source}}")))
    layout.panel(timeseries("Duration", "s", ("shipyard_backup_duration_seconds", "{{source}}")))
    layout.panel(
        stat(
            "Last success",
            "dateTimeFromNow",
            ("shipyard_backup_last_success_timestamp_seconds * 1000", "{{source}}"),
        )
    )
    layout.panel(
        stat(
            "Last run succeeded", "none", ("shipyard_backup_last_run_success", "{{source}}"), mappings=_YES_NO
        )
    )
    layout.panel(
        stat(
            "Last verification passed",
            "none",
            ("shipyard_backup_last_verification_success", "verification"),
            mappings=_YES_NO,
        )
    )


def _dr(layout: _Layout, stack: Stack) -> None:
    if stack.dr is None:
        return
    layout.row("Disaster recovery")
    for what in ("rto", "rpo"):
        layout.panel(
            timeseries(
                f"Drill {what.upper()} vs target",
                "s",
                (f"shipyard_dr_drill_{what}_seconds", "{{mode}}"),
                (f"shipyard_dr_target_{what}_seconds", "target"),
            )
        )
    layout.panel(
        stat("Last drill passed", "none", ("shipyard_dr_drill_passed", "{{mode}}"), mappings=_YES_NO)
    )
    layout.panel(stat("Standby ready", "none", ("shipyard_dr_standby_ready", "standby"), mappings=_YES_NO))
    layout.panel(
        timeseries(
            "Replication lag vs RPO",
            "s",
            ("shipyard_dr_replication_lag_seconds", "lag"),
            (f"vector({stack.dr.rpo})", "RPO"),
        )
    )
    layout.panel(
        stat("Last drill", "dateTimeFromNow", ("shipyard_dr_drill_timestamp_seconds * 1000", "{{mode}}"))
    )


def dashboard_uid(stack: Stack) -> str:
    """A stable uid within Grafana's 40 characters."""
    readable = f"shipyard-{stack.name}-{stack.environment or 'default'}"
    if len(readable) <= 40:
        return readable
    return readable[:31] + "-" + hashlib.sha256(readable.encode()).hexdigest()[:8]


def dashboard(stack: Stack) -> dict[str, Any]:
    """The dashboard JSON model of one environment."""
    layout = _Layout()
    for service in http_services(stack):
        _red(layout, service)
    layout.row("Releases")
    layout.panel(
        timeseries(
            "Releases by outcome (per hour)",
            "none",
            ("sum by (service, outcome) (increase(shipyard_rollouts_total[1h]))", "{{service}} {{outcome}}"),
        ),
        width=12,
    )
    layout.panel(
        timeseries(
            "Release step duration p95",
            "s",
            (
                "histogram_quantile(0.95, sum by (le, action)"
                " (rate(shipyard_rollout_step_duration_seconds_bucket[1h])))",
                "{{action}}",
            ),
        ),
        width=12,
    )
    _datastores(layout, stack)
    _backups(layout, stack)
    _dr(layout, stack)
    environment = stack.environment or "default"
    return {
        "uid": dashboard_uid(stack),
        "title": f"{stack.name} ({environment})",
        "tags": ["shipyard", stack.name, environment],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": layout.panels,
    }
