"""The vocabulary of a release: what a strategy asks for, what a target reports, what was decided.

Everything here is a plain, frozen value with no I/O and no clock (times are passed in), so the
strategies and the analysis are pure and the controller can persist every value as JSON.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

StrategyName = Literal["blue-green", "canary"]

# Upper bounds (ms) of the latency histogram every target reports; the last bucket is open.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000,
    float("inf"),
)  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """Cumulative traffic counters of one version, read from a target at one moment.

    A window is the difference of two samples (`later - earlier`); counters never go down
    within one version's life (a target resets nothing while a release runs).
    """

    requests: int = 0
    """Requests answered, as the proxy counted them (exact)."""
    errors: int = 0
    """Responses with a 5xx status (or the proxy's own errors attributed to this version)."""
    latency_buckets: tuple[int, ...] = (0,) * len(LATENCY_BUCKETS_MS)
    """Requests per LATENCY_BUCKETS_MS bucket (not cumulative across buckets). They come from a
    request log that may lose lines, so they may add up to fewer than `requests`: the analysis
    compares the two (`_analysis.log_loss`) and does not judge latency on a window missing many."""

    def __sub__(self, earlier: Sample) -> Sample:
        return Sample(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            tuple(a - b for a, b in zip(self.latency_buckets, earlier.latency_buckets, strict=True)),
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float | None:
        """The q-quantile of latency from the histogram (upper bound of its bucket); None if empty."""
        total = sum(self.latency_buckets)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for bound, count in zip(LATENCY_BUCKETS_MS, self.latency_buckets, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return LATENCY_BUCKETS_MS[-1]  # pragma: no cover - the loop always reaches total


def bucket_index(latency_ms: float) -> int:
    """The histogram bucket a latency falls in."""
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


@dataclass(frozen=True)
class Health:
    """How many instances of a version pass their health check."""

    healthy: int
    total: int
    detail: str = ""

    @property
    def ready(self) -> bool:
        return self.total > 0 and self.healthy == self.total


@dataclass(frozen=True)
class MigrationResult:
    ok: bool
    exit_code: int
    output_tail: str = ""
    """The last lines of its output (secrets are the command's business: shown as printed)."""


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    """Too few requests to decide: the strategy pauses instead of deciding."""


@dataclass(frozen=True)
class Check:
    """One analysis check, with the values it compared (recorded with every rollback)."""

    name: str  # "error_rate", "p99_ms", "p99_ratio", or a Prometheus check's name
    verdict: Verdict
    candidate: float | None
    stable: float | None
    threshold: float
    detail: str = ""


@dataclass(frozen=True)
class Analysis:
    verdict: Verdict
    checks: tuple[Check, ...] = ()
    candidate_requests: int = 0
    stable_requests: int = 0

    def reason(self) -> str:
        failed = [c for c in self.checks if c.verdict is Verdict.FAIL]
        return "; ".join(c.detail or c.name for c in failed) or self.verdict.value


@dataclass(frozen=True)
class Weights:
    """Traffic split between the stable and the candidate version, in percent (sums to 100)."""

    stable: int
    candidate: int

    def __post_init__(self) -> None:
        if self.stable + self.candidate != 100 or min(self.stable, self.candidate) < 0:
            raise ValueError(f"weights must be two non-negative percentages summing to 100: {self}")


@dataclass(frozen=True)
class TargetStatus:
    """What a target runs for a service now: versions, their weights and health."""

    service: str
    versions: dict[str, int] = field(default_factory=dict)
    """version -> weight in percent (only versions with instances are listed)."""
    health: dict[str, Health] = field(default_factory=dict)


# --- what a strategy asks the controller to do (one at a time) -----------------------------------


@dataclass(frozen=True)
class Prepare:
    """Start `instances` instances of `version`, taking no traffic yet (idempotent)."""

    version: str
    instances: int


@dataclass(frozen=True)
class WaitHealthy:
    """Wait until every instance of `version` passes its health check, at most `timeout_s`."""

    version: str
    timeout_s: float


@dataclass(frozen=True)
class Migrate:
    """Run the service's migration command with `version`, before it takes any traffic."""

    version: str


@dataclass(frozen=True)
class SetWeights:
    """Route traffic as `weights` say (idempotent)."""

    weights: Weights


@dataclass(frozen=True)
class Observe:
    """Analyse the candidate against the stable version for `duration_s`.

    The controller samples both every `interval_s` and reports an `Observed` each time, so a bad
    release is caught at the first interval that proves it bad, not at the end of the window.
    """

    duration_s: float
    interval_s: float


@dataclass(frozen=True)
class Hold:
    """Pause: until `until` (a time on the controller's clock), or until promoted when None.

    While holding, the controller keeps analysing (reporting `Observed`), so a canary that goes
    bad during a pause is still rolled back.
    """

    until: float | None
    interval_s: float


@dataclass(frozen=True)
class Retire:
    """Drain and stop every instance of `version` (idempotent)."""

    version: str


@dataclass(frozen=True)
class Finish:
    """The release is over; nothing more to do."""

    outcome: Literal["succeeded", "rolled_back", "aborted", "failed"]
    reason: str


Action = Prepare | WaitHealthy | Migrate | SetWeights | Observe | Hold | Retire | Finish


# --- what the controller reports back ------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """The action completed (Prepare, SetWeights, Retire, a Hold that reached its time)."""


@dataclass(frozen=True)
class HealthChecked:
    health: Health
    timed_out: bool


@dataclass(frozen=True)
class Migrated:
    result: MigrationResult


@dataclass(frozen=True)
class Observed:
    """One analysis during Observe or Hold; `complete` when the Observe window has elapsed."""

    analysis: Analysis
    complete: bool


@dataclass(frozen=True)
class Failed:
    """The action could not be carried out (the target refused, a process would not start…)."""

    error: str


Outcome = Done | HealthChecked | Migrated | Observed | Failed

Command = Literal["promote", "promote-full", "abort", "pause", "resume", "retry", "rollback"]
"""`promote` goes on to the next step; `promote-full` skips every remaining step to 100 % (as
`kubectl argo rollouts promote` and `promote --full`)."""


def audited_command(command: str) -> str:
    """The audit action's name of a command (`rollout.<name>`): a full promote is a promote, its
    entry says `"command": "promote-full"`."""
    return "promote" if command == "promote-full" else command
