"""What a DR drill found, and its two written forms: Markdown for people, JSON for machines.

The model is plain data measured by the drill runner (`_drills.py`): per-phase outcomes and
durations, the simulated disaster's moment, the restore points reached, the achieved RTO, RPO and
MTTR, and each compared with the spec's target (`target_met`: the one meaning of "RTO met").
Rendering is pure; only `write_report` touches files.

Times are seconds since the epoch (floats) as read from the drill's clock; the JSON carries them
as ISO-8601 UTC strings next to plain numbers of seconds, under keys that do not change
(`REPORT_SCHEMA` names the version).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..monitor import Event
from ..spec import DrillMode

REPORT_SCHEMA = "shipyard.dr.drill/v1"

PhaseKind = Literal["backup", "verify", "select", "restore", "health", "setup", "kill", "failover", "rejoin"]
"""What a drill phase does; `setup` to `rejoin` are the failover drill's (see `_failover_drill`)."""
PhaseStatus = Literal["passed", "failed", "skipped"]
TargetName = Literal["rto", "rpo", "mttr"]
Verdict = Literal["pass", "fail", "not set"]


def target_met(achieved: float | None, target: float | None) -> bool | None:
    """Whether an achieved RTO, RPO or MTTR (seconds) meets its objective: at most the target.

    None when there is nothing to compare: no target set, or nothing achieved (the drill or the
    failover did not recover). Every verdict on a target (drill reports, failover reports, the
    API, the dashboard) is this one.
    """
    if achieved is None or target is None:
        return None
    return achieved <= target


@dataclass(frozen=True)
class RestorePoint:
    """The moment the restored data of one source reflects.

    Without PITR it is the backup's time, and the data lost is everything after it up to the
    disaster. With PITR (`last_write` given) the restore replays WAL up to `time`, and the data lost
    is the committed writes between `time` and the last write committed before the disaster.
    """

    source: str
    """What was restored (`postgres`, `redis`, `files:/srv/uploads`), or `set` for a whole set."""
    label: str
    """The backup set's or snapshot's id, or the PITR target."""
    time: dt.datetime
    last_write: dt.datetime | None = None
    lost_commits: int | None = None
    """With PITR, how many committed transactions the restore does not hold."""

    def loss_seconds(self, disaster_at: float) -> float:
        """Seconds of data this point loses: never negative."""
        until = self.last_write.timestamp() if self.last_write is not None else disaster_at
        return max(0.0, until - self.time.timestamp())


@dataclass(frozen=True)
class PhaseRecord:
    name: str
    kind: PhaseKind
    source: str | None
    status: PhaseStatus
    seconds: float | None
    """None when the phase was skipped."""
    detail: str = ""
    """What the phase did (e.g. the set it picked) or, when it failed, why."""


@dataclass(frozen=True)
class TargetCheck:
    name: TargetName
    target: int | None
    """The spec's objective in whole seconds; None when the spec sets none."""
    achieved: float | None
    """None when the drill did not achieve it (a phase failed, nothing was restorable)."""

    @property
    def verdict(self) -> Verdict:
        if self.target is None:
            return "not set"
        # Not achieved (None) is a miss: the drill did not recover.
        return "pass" if target_met(self.achieved, self.target) else "fail"


@dataclass(frozen=True)
class DrillResult:
    mode: DrillMode
    stack: str
    environment: str
    started_at: float
    finished_at: float
    disaster_at: float | None
    """When the simulated disaster was declared; None when the drill stopped before it."""
    phases: tuple[PhaseRecord, ...]
    points: tuple[RestorePoint, ...]
    """The restore point of each source, as last reported by a phase."""
    rto: float | None
    """Disaster to the last health check passed; None when not achieved."""
    rpo: float | None
    """The largest data loss over the restore points; None when nothing was restorable."""
    mttr: float | None
    """The mean RTO of this drill and the earlier drills counted in `mttr_drills`."""
    mttr_drills: int
    checks: tuple[TargetCheck, ...]

    @property
    def failed_phase(self) -> PhaseRecord | None:
        return next((phase for phase in self.phases if phase.status == "failed"), None)

    @property
    def passed(self) -> bool:
        """Every phase passed and no target that is set was missed."""
        return self.failed_phase is None and all(check.verdict != "fail" for check in self.checks)


def format_seconds(seconds: float) -> str:
    """A duration for people: '0.25 s', '59.99 s', '4m 12s', '1h 0m 5s'."""
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"


def iso(epoch: float) -> str:
    """An epoch time as ISO-8601 UTC with milliseconds, e.g. '2026-12-01T02:00:00.000Z'."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _verdict_text(verdict: Verdict) -> str:
    return {"pass": "PASS", "fail": "FAIL", "not set": "not set"}[verdict]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def drill_data(result: DrillResult) -> dict[str, Any]:
    """The machine form: stable keys, seconds as numbers (milliseconds precision), times as ISO UTC."""
    failed = result.failed_phase
    return {
        "schema": REPORT_SCHEMA,
        "stack": result.stack,
        "environment": result.environment,
        "mode": result.mode,
        "passed": result.passed,
        "started_at": iso(result.started_at),
        "finished_at": iso(result.finished_at),
        "disaster_at": None if result.disaster_at is None else iso(result.disaster_at),
        "failed_phase": None if failed is None else {"name": failed.name, "reason": failed.detail},
        "phases": [
            {
                "name": phase.name,
                "kind": phase.kind,
                "source": phase.source,
                "status": phase.status,
                "seconds": _round(phase.seconds),
                "detail": phase.detail,
            }
            for phase in result.phases
        ],
        "restore_points": [
            {
                "source": point.source,
                "label": point.label,
                "time": iso(point.time.timestamp()),
                "last_write": None if point.last_write is None else iso(point.last_write.timestamp()),
                "lost_commits": point.lost_commits,
                "loss_seconds": (
                    None if result.disaster_at is None else _round(point.loss_seconds(result.disaster_at))
                ),
            }
            for point in result.points
        ],
        "achieved": {
            "rto_seconds": _round(result.rto),
            "rpo_seconds": _round(result.rpo),
            "mttr_seconds": _round(result.mttr),
            "mttr_drills": result.mttr_drills,
        },
        "targets": [
            {
                "name": check.name,
                "target_seconds": check.target,
                "achieved_seconds": _round(check.achieved),
                "verdict": check.verdict,
            }
            for check in result.checks
        ],
    }


def _cell(text: str) -> str:
    # A pipe or a line break (any of them: \r, \x85, \u2028, ...) would end the table cell early.
    return " ".join(text.replace("|", "\\|").splitlines()).strip()


_TARGET_TITLES: dict[TargetName, str] = {
    "rto": "RTO (disaster → healthy restored stack)",
    "rpo": "RPO (data lost)",
    "mttr": "MTTR (mean recovery time)",
}


def drill_markdown(result: DrillResult) -> str:
    """The human form: a heading with the verdict, the phases table and the targets table."""
    verdict = "PASS" if result.passed else "FAIL"
    lines = [
        f"# DR drill `{result.mode}` of {result.stack}/{result.environment}: {verdict}",
        "",
        f"- started: {iso(result.started_at)}",
        f"- finished: {iso(result.finished_at)}",
        "- disaster declared: " + ("not reached" if result.disaster_at is None else iso(result.disaster_at)),
    ]
    failed = result.failed_phase
    if failed is not None:
        lines.append(
            f"- stopped at phase `{_cell(failed.name)}`: {_cell(failed.detail) or 'no reason given'}"
        )
    lines += [
        "",
        "## Phases",
        "",
        "| # | phase | duration | outcome | detail |",
        "| ---: | --- | ---: | --- | --- |",
    ]
    for number, phase in enumerate(result.phases, start=1):
        duration = "—" if phase.seconds is None else format_seconds(phase.seconds)
        lines.append(
            f"| {number} | {_cell(phase.name)} | {duration} | {phase.status} | {_cell(phase.detail)} |"
        )
    lines += [
        "",
        "## Targets",
        "",
        "| target | objective | achieved | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    for check in result.checks:
        objective = "—" if check.target is None else format_seconds(check.target)
        achieved = "not achieved" if check.achieved is None else format_seconds(check.achieved)
        if check.name == "mttr" and check.achieved is not None:
            achieved += f" (over {result.mttr_drills} drill{'s' if result.mttr_drills != 1 else ''})"
        lines.append(
            f"| {_TARGET_TITLES[check.name]} | {objective} | {achieved} | {_verdict_text(check.verdict)} |"
        )
    if result.points:
        lines += [
            "",
            "## Restore points",
            "",
            "| source | point | time | last write | data lost |",
            "| --- | --- | --- | --- | ---: |",
        ]
        for point in result.points:
            last_write = "—" if point.last_write is None else iso(point.last_write.timestamp())
            lost = (
                "—" if result.disaster_at is None else format_seconds(point.loss_seconds(result.disaster_at))
            )
            lines.append(
                f"| {_cell(point.source)} | {_cell(point.label)} | {iso(point.time.timestamp())}"
                f" | {last_write} | {lost} |"
            )
    return "\n".join(lines) + "\n"


def report_stem(result: DrillResult) -> str:
    """`<UTC start, to the second>-<mode>`, e.g. `20261201T020000Z-restore`: sorts by time."""
    started = dt.datetime.fromtimestamp(result.started_at, dt.UTC)
    return f"{started.strftime('%Y%m%dT%H%M%SZ')}-{result.mode}"


def write_report(result: DrillResult, directory: Path) -> tuple[Path, Path]:
    """Write `<stem>.md` and `<stem>.json` into `directory` (created); return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = report_stem(result)
    markdown, machine = directory / f"{stem}.md", directory / f"{stem}.json"
    markdown.write_text(drill_markdown(result), encoding="utf-8")
    machine.write_text(json.dumps(drill_data(result), indent=2) + "\n", encoding="utf-8")
    return markdown, machine


def drill_event(result: DrillResult) -> Event:
    """The notification of a drill's result: `dr.drill.passed` (info) or `dr.drill.failed` (ticket)."""
    where = f"{result.stack}/{result.environment}"
    if result.passed:
        summary = f"DR drill {result.mode} of {where} passed"
    else:
        failed = result.failed_phase
        missed = [check.name.upper() for check in result.checks if check.verdict == "fail"]
        reasons = ([f"phase {failed.name} failed: {failed.detail}"] if failed is not None else []) + (
            [f"missed {', '.join(missed)}"] if missed else []
        )
        summary = f"DR drill {result.mode} of {where} FAILED: " + "; ".join(reasons)
    achieved = [
        f"{check.name.upper()} {format_seconds(check.achieved)}"
        for check in result.checks
        if check.achieved is not None
    ]
    if achieved:
        summary += " (" + ", ".join(achieved) + ")"
    data = drill_data(result)
    details = {key: data[key] for key in ("stack", "environment", "mode", "passed", "failed_phase")}
    details |= {"achieved": data["achieved"], "targets": data["targets"]}
    return Event(
        kind="dr.drill.passed" if result.passed else "dr.drill.failed",
        summary=summary,
        severity="info" if result.passed else "ticket",
        details=details,
    )
