"""Which backup sets to keep and which to prune: restic's `forget --keep-*` rules plus safety rules.

Pure: no I/O, no clock. The GFS rules follow restic's `forget` (0.14): sets are walked newest
first; a rule with count N keeps a set when the set falls in a different bucket (hour, day, ISO
week, month, in UTC) from the last set that rule kept, until it has kept N sets. So each rule keeps
the newest set of each of the N most recent buckets that hold a set, and empty buckets cost nothing.
`keep_last` puts every set in a bucket of its own. As in restic, a policy whose rules are all zero
keeps everything rather than pruning the whole repository.

Only restorable sets (`complete`, `verified`, `partial`) take part; `running` and `failed` sets are
reported as ignored and never counted. On top of the rules, three safety rules protect restores: the
newest verified set is always kept, and so are the newest `min_verified` verified sets, and, for
each artefact (`postgres:db`, `files:/srv/uploads`, …), the newest set holding an intact copy of it
(so a damaged copy in a newer set, or newer sets of other kinds, never leave a source with none).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import BackupError
from ..spec import Retention
from ..state import BACKUP_SET_STATES, RESTORABLE_SET_STATES

SetState = Literal["running", "complete", "failed", "verified", "partial"]
RESTORABLE: frozenset[str] = frozenset(RESTORABLE_SET_STATES)

REASON_NEWEST_VERIFIED = "newest verified"
REASON_MIN_VERIFIED = "min verified"
REASON_EMPTY_POLICY = "empty policy"
REASON_NEWEST_INTACT = "newest intact"


@dataclass(frozen=True)
class SetFacts:
    """What retention needs to know about one backup set."""

    id: str
    finished_at: dt.datetime
    """When the set finished (aware); for a running set, when it started."""
    state: SetState
    intact: frozenset[str] = frozenset()
    """The artefacts of the set that can be restored (none found damaged)."""


@dataclass(frozen=True)
class RetentionPlan:
    keep: Mapping[str, tuple[str, ...]]
    """Set id -> every reason it is kept, e.g. ("last 1", "daily 2026-11-30"); newest set first."""
    drop: tuple[str, ...]
    """Complete and verified sets to delete, oldest first."""
    ignored: tuple[str, ...]
    """Running and failed sets: never counted, never kept as restorable; oldest first."""


def _hour(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H")


def _day(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%d")


def _week(at: dt.datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def _month(at: dt.datetime) -> str:
    return at.strftime("%Y-%m")


_BUCKETS: tuple[tuple[str, Callable[[dt.datetime], str]], ...] = (
    ("hourly", _hour),
    ("daily", _day),
    ("weekly", _week),
    ("monthly", _month),
)


def _newest_first(sets: Sequence[SetFacts]) -> list[SetFacts]:
    # Ties in time are broken by id so that a plan never depends on the order sets were listed in.
    return sorted(sets, key=lambda s: (s.finished_at, s.id), reverse=True)


def _check(sets: Sequence[SetFacts]) -> None:
    seen: set[str] = set()
    for facts in sets:
        if facts.finished_at.tzinfo is None or facts.finished_at.utcoffset() is None:
            raise BackupError(f"backup set {facts.id}: finished_at has no time zone")
        if facts.state not in BACKUP_SET_STATES:
            raise BackupError(f"backup set {facts.id}: unknown state {facts.state!r}")
        if facts.id in seen:
            raise BackupError(f"backup set {facts.id} is listed twice")
        seen.add(facts.id)


def plan_retention(sets: Sequence[SetFacts], policy: Retention) -> RetentionPlan:
    """Decide, for each restorable set, whether `policy` keeps it (and why) or drops it."""
    _check(sets)
    restorable = _newest_first([s for s in sets if s.state in RESTORABLE])
    ignored = [s for s in sets if s.state not in RESTORABLE]
    reasons: dict[str, list[str]] = {s.id: [] for s in restorable}

    for position, facts in enumerate(restorable[: policy.keep_last], start=1):
        reasons[facts.id].append(f"last {position}")
    for rule, bucket_of in _BUCKETS:
        remaining: int = getattr(policy, rule)
        last_bucket: str | None = None
        for facts in restorable:
            if remaining <= 0:
                break
            bucket = bucket_of(facts.finished_at.astimezone(dt.UTC))
            if bucket != last_bucket:
                reasons[facts.id].append(f"{rule} {bucket}")
                last_bucket = bucket
                remaining -= 1
    if not any(getattr(policy, rule) for rule in ("keep_last", *(name for name, _ in _BUCKETS))):
        for facts in restorable:
            reasons[facts.id].append(REASON_EMPTY_POLICY)

    verified = [s for s in restorable if s.state == "verified"]
    if verified:
        reasons[verified[0].id].append(REASON_NEWEST_VERIFIED)
    for facts in verified[: policy.min_verified]:
        reasons[facts.id].append(REASON_MIN_VERIFIED)
    covered: set[str] = set()
    for facts in restorable:
        for name in sorted(facts.intact - covered):
            reasons[facts.id].append(f"{REASON_NEWEST_INTACT} {name}")
        covered |= facts.intact

    keep = {s.id: tuple(reasons[s.id]) for s in restorable if reasons[s.id]}
    drop = tuple(s.id for s in reversed(restorable) if not reasons[s.id])
    return RetentionPlan(
        keep=keep,
        drop=drop,
        ignored=tuple(s.id for s in reversed(_newest_first(ignored))),
    )
