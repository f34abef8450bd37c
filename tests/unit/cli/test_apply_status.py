"""How `shipyard status` shows an environment to people (`status_tables`) and to machines (JSON)."""

from __future__ import annotations

import datetime as dt
import json

from rich.console import Console

from shipyard.cli._apply import status_tables
from shipyard.ops import AutoscalerView, CronJobView, IngressView, StackStatusView, WorkloadView

VIEW = StackStatusView(
    environment="production",
    namespace="production",
    api_server="https://k8s.example.com:6443",
    healthy=False,
    workloads=(
        WorkloadView(kind="StatefulSet", name="postgres", found=True, ready=1, desired=1, updated=1,
                     phase="Healthy", message=""),
        WorkloadView(kind="Rollout", name="app", found=True, ready=4, desired=5, updated=1,
                     phase="Paused", message="step 3/7, canary 25%; CanaryPauseStep"),
        WorkloadView(kind="Deployment", name="worker", found=False, ready=0, desired=0, updated=None,
                     phase="Missing", message=""),
    ),
    autoscalers=(AutoscalerView(name="app", found=True, current=4, desired=5, minimum=3, maximum=10),),
    ingresses=(
        IngressView(name="app", found=True, hosts=("exchange.example.com",), addresses=("203.0.113.17",)),
        IngressView(name="admin", found=True, hosts=("admin.example.com",), addresses=()),
    ),
    cron_jobs=(
        CronJobView(name="app-cleanup-sessions", found=True, schedule="0 * * * *", suspended=False, active=0,
                    last_schedule_at=dt.datetime(2025, 6, 3, 14, 0, tzinfo=dt.UTC),
                    last_successful_at=dt.datetime(2025, 6, 3, 14, 0, 9, tzinfo=dt.UTC)),
        CronJobView(name="backup-full", found=True, schedule="0 3 * * *", suspended=True, active=0,
                    last_schedule_at=None, last_successful_at=None),
        CronJobView(name="backup-verify", found=False, schedule="", suspended=False, active=0,
                    last_schedule_at=None, last_successful_at=None),
    ),
)  # fmt: skip


def _text() -> list[str]:
    console = Console(width=200, record=True, color_system=None)
    console.print(status_tables(VIEW))
    return [" ".join(line.replace("│", " ").split()) for line in console.export_text().splitlines()]


def test_workloads_show_pods_ready_and_phase() -> None:
    lines = _text()
    assert "StatefulSet postgres 1/1 1 Healthy" in lines
    assert "Rollout app 4/5 1 Paused step 3/7, canary 25%; CanaryPauseStep" in lines
    assert "Deployment worker - - Missing" in lines


def test_autoscalers_ingress_and_cron_jobs() -> None:
    lines = _text()
    assert "app 4 5 3 10" in lines
    assert "app exchange.example.com 203.0.113.17" in lines
    assert "admin admin.example.com none yet" in lines
    assert "app-cleanup-sessions 0 * * * * 2025-06-03T14:00:00Z 2025-06-03T14:00:09Z 0" in lines
    assert "backup-full 0 3 * * * (suspended) never never 0" in lines
    assert "backup-verify missing - - -" in lines


def test_empty_sections_are_left_out() -> None:
    console = Console(width=200, record=True, color_system=None)
    console.print(
        status_tables(VIEW.model_copy(update={"autoscalers": (), "ingresses": (), "cron_jobs": ()}))
    )
    text = console.export_text()
    assert "workloads" in text
    assert "autoscalers" not in text
    assert "cron jobs" not in text


def test_json_has_utc_times_with_z_and_the_summary_counts() -> None:
    dumped = json.loads(json.dumps(VIEW.model_dump(mode="json")))
    assert dumped["cron_jobs"][0]["last_schedule_at"] == "2025-06-03T14:00:00Z"
    assert dumped["cron_jobs"][1]["last_successful_at"] is None
    assert VIEW.summary() == (
        "production (namespace production) at https://k8s.example.com:6443:"
        " 1 of 3 workloads healthy, 1 missing"
    )
