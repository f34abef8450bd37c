"""Drill reports: exact Markdown and JSON for a fixed result, files written; what "met" means."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.dr._report import (
    REPORT_SCHEMA,
    DrillResult,
    PhaseRecord,
    RestorePoint,
    TargetCheck,
    drill_data,
    drill_event,
    drill_markdown,
    format_seconds,
    report_stem,
    target_met,
    write_report,
)

T0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC).timestamp()


def passed_result() -> DrillResult:
    return DrillResult(
        mode="partial",
        stack="shop",
        environment="production",
        started_at=T0,
        finished_at=T0 + 22.25,
        disaster_at=T0,
        phases=(
            PhaseRecord(
                "select newest restorable set", "select", None, "passed", 0.25, "set a1b2 (complete)"
            ),
            PhaseRecord("restore db", "restore", "db", "passed", 20.5, "pg_restore into 127.0.0.1:5433"),
            PhaseRecord("health db", "health", "db", "passed", 1.5, "2 checks passed"),
        ),
        points=(RestorePoint("db", "a1b2", dt.datetime(2026, 12, 1, 1, 55, tzinfo=dt.UTC)),),
        rto=22.25,
        rpo=300.0,
        mttr=22.25,
        mttr_drills=1,
        checks=(
            TargetCheck("rto", 900, 22.25),
            TargetCheck("rpo", 300, 300.0),
            TargetCheck("mttr", None, 22.25),
        ),
    )


def failed_result() -> DrillResult:
    return DrillResult(
        mode="restore",
        stack="shop",
        environment="staging",
        started_at=T0,
        finished_at=T0 + 3.5,
        disaster_at=T0,
        phases=(
            PhaseRecord("select newest restorable set", "select", None, "passed", 0.5, "set a1b2"),
            PhaseRecord(
                "restore db", "restore", "db", "failed", 3.0, "pg_restore exited 1 | see log\nline 2"
            ),
            PhaseRecord("health db", "health", "db", "skipped", None),
        ),
        points=(
            RestorePoint(
                "db",
                "pitr",
                dt.datetime(2026, 12, 1, 1, 59, 58, tzinfo=dt.UTC),
                last_write=dt.datetime(2026, 12, 1, 1, 59, 59, 500000, tzinfo=dt.UTC),
            ),
        ),
        rto=None,
        rpo=1.5,
        mttr=None,
        mttr_drills=0,
        checks=(TargetCheck("rto", 900, None), TargetCheck("rpo", 60, 1.5), TargetCheck("mttr", 1800, None)),
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.00 s"),
        (0.254, "0.25 s"),
        (59.994, "59.99 s"),
        (60, "1m 0s"),
        (252.4, "4m 12s"),
        (3605, "1h 0m 5s"),
    ],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_markdown_of_a_passed_drill() -> None:
    assert drill_markdown(passed_result()) == (
        "# DR drill `partial` of shop/production: PASS\n"
        "\n"
        "- started: 2026-12-01T02:00:00.000Z\n"
        "- finished: 2026-12-01T02:00:22.250Z\n"
        "- disaster declared: 2026-12-01T02:00:00.000Z\n"
        "\n"
        "## Phases\n"
        "\n"
        "| # | phase | duration | outcome | detail |\n"
        "| ---: | --- | ---: | --- | --- |\n"
        "| 1 | select newest restorable set | 0.25 s | passed | set a1b2 (complete) |\n"
        "| 2 | restore db | 20.50 s | passed | pg_restore into 127.0.0.1:5433 |\n"
        "| 3 | health db | 1.50 s | passed | 2 checks passed |\n"
        "\n"
        "## Targets\n"
        "\n"
        "| target | objective | achieved | verdict |\n"
        "| --- | ---: | ---: | --- |\n"
        "| RTO (disaster → healthy restored stack) | 15m 0s | 22.25 s | PASS |\n"
        "| RPO (data lost) | 5m 0s | 5m 0s | PASS |\n"
        "| MTTR (mean recovery time) | — | 22.25 s (over 1 drill) | not set |\n"
        "\n"
        "## Restore points\n"
        "\n"
        "| source | point | time | last write | data lost |\n"
        "| --- | --- | --- | --- | ---: |\n"
        "| db | a1b2 | 2026-12-01T01:55:00.000Z | — | 5m 0s |\n"
    )


def test_markdown_of_a_failed_drill_names_the_phase_and_why() -> None:
    text = drill_markdown(failed_result())
    lines = text.splitlines()
    assert lines[0] == "# DR drill `restore` of shop/staging: FAIL"
    assert "- stopped at phase `restore db`: pg_restore exited 1 \\| see log line 2" in lines
    assert "| 2 | restore db | 3.00 s | failed | pg_restore exited 1 \\| see log line 2 |" in lines
    assert "| 3 | health db | — | skipped |  |" in lines
    assert "| RTO (disaster → healthy restored stack) | 15m 0s | not achieved | FAIL |" in lines
    assert "| RPO (data lost) | 1m 0s | 1.50 s | PASS |" in lines
    assert "| MTTR (mean recovery time) | 30m 0s | not achieved | FAIL |" in lines
    assert "| db | pitr | 2026-12-01T01:59:58.000Z | 2026-12-01T01:59:59.500Z | 1.50 s |" in lines


def test_json_has_stable_keys_and_plain_numbers() -> None:
    data = drill_data(failed_result())
    assert list(data) == [
        "schema",
        "stack",
        "environment",
        "mode",
        "passed",
        "started_at",
        "finished_at",
        "disaster_at",
        "failed_phase",
        "phases",
        "restore_points",
        "achieved",
        "targets",
    ]
    assert data["schema"] == REPORT_SCHEMA
    assert data["passed"] is False
    assert data["disaster_at"] == "2026-12-01T02:00:00.000Z"
    assert data["failed_phase"] == {"name": "restore db", "reason": "pg_restore exited 1 | see log\nline 2"}
    assert data["phases"][2] == {
        "name": "health db",
        "kind": "health",
        "source": "db",
        "status": "skipped",
        "seconds": None,
        "detail": "",
    }
    assert data["restore_points"] == [
        {
            "source": "db",
            "label": "pitr",
            "time": "2026-12-01T01:59:58.000Z",
            "last_write": "2026-12-01T01:59:59.500Z",
            "lost_commits": None,
            "loss_seconds": 1.5,
        }
    ]
    assert data["achieved"] == {
        "rto_seconds": None,
        "rpo_seconds": 1.5,
        "mttr_seconds": None,
        "mttr_drills": 0,
    }
    assert data["targets"] == [
        {"name": "rto", "target_seconds": 900, "achieved_seconds": None, "verdict": "fail"},
        {"name": "rpo", "target_seconds": 60, "achieved_seconds": 1.5, "verdict": "pass"},
        {"name": "mttr", "target_seconds": 1800, "achieved_seconds": None, "verdict": "fail"},
    ]
    assert json.loads(json.dumps(data)) == data


def test_reports_are_written(tmp_path: Path) -> None:
    directory = tmp_path / "drills"
    markdown, machine = write_report(passed_result(), directory)
    assert report_stem(passed_result()) == "20261201T020000Z-partial"
    assert markdown == directory / "20261201T020000Z-partial.md"
    assert machine == directory / "20261201T020000Z-partial.json"
    assert markdown.read_text(encoding="utf-8") == drill_markdown(passed_result())
    assert json.loads(machine.read_text(encoding="utf-8")) == drill_data(passed_result())
    later = dataclasses.replace(failed_result(), started_at=T0 + 60)
    assert write_report(later, directory)[1] == directory / "20261201T020100Z-restore.json"
    assert sorted(path.name for path in directory.iterdir()) == [
        "20261201T020000Z-partial.json",
        "20261201T020000Z-partial.md",
        "20261201T020100Z-restore.json",
        "20261201T020100Z-restore.md",
    ]


@pytest.mark.parametrize(
    ("achieved", "target", "met"),
    [(900.0, 900, True), (900.001, 900, False), (0.0, 0, True), (None, 900, None), (12.0, None, None)],
)
def test_a_target_is_met_at_most_at_the_objective(
    achieved: float | None, target: int | None, met: bool | None
) -> None:
    assert target_met(achieved, target) is met


@given(achieved=st.floats(0, 1e6) | st.none(), target=st.integers(0, 10**6) | st.none())
def test_a_checks_verdict_is_target_met(achieved: float | None, target: int | None) -> None:
    verdict = TargetCheck("rto", target, achieved).verdict
    met = target_met(achieved, target)
    assert verdict == ("not set" if target is None else "pass" if met else "fail")


def test_notification_events() -> None:
    passed = drill_event(passed_result())
    assert passed.kind == "dr.drill.passed"
    assert passed.severity == "info"
    assert (
        passed.summary == "DR drill partial of shop/production passed (RTO 22.25 s, RPO 5m 0s, MTTR 22.25 s)"
    )
    assert passed.details["achieved"]["rto_seconds"] == 22.25
    failed = drill_event(failed_result())
    assert failed.kind == "dr.drill.failed"
    assert failed.severity == "ticket"
    assert failed.summary == (
        "DR drill restore of shop/staging FAILED:"
        " phase restore db failed: pg_restore exited 1 | see log\nline 2; missed RTO, MTTR (RPO 1.50 s)"
    )
    assert failed.details["failed_phase"] == {
        "name": "restore db",
        "reason": "pg_restore exited 1 | see log\nline 2",
    }


@given(
    texts=st.lists(st.tuples(st.text(max_size=30), st.text(max_size=60)), min_size=1, max_size=6),
    seconds=st.floats(min_value=0, max_value=10**6, allow_nan=False),
)
def test_any_phase_text_keeps_the_markdown_table_whole(texts: list[tuple[str, str]], seconds: float) -> None:
    phases = tuple(PhaseRecord(name, "restore", None, "passed", seconds, detail) for name, detail in texts)
    result = dataclasses.replace(passed_result(), phases=phases)
    lines = drill_markdown(result).splitlines()
    start = lines.index("| # | phase | duration | outcome | detail |") + 2
    rows = lines[start : start + len(phases)]
    assert lines[start + len(phases)] == ""  # the table ends after one line per phase
    for number, row in enumerate(rows, start=1):
        cells = re.split(r"(?<!\\)\|", row)
        assert len(cells) == 7  # five cells between six unescaped pipes
        assert cells[1].strip() == str(number)
        assert cells[4].strip() == "passed"
