"""Which share of the repository a verification reads back (issue 12): all of it with `full`, else
the next 1/N of the stack's rotation, so N verifications in a row read every pack once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shipyard.backup import FULL, Manifest, Verification, read_data_subset, rotation_period
from shipyard.backup._sets import SetRecorder, record_verification
from shipyard.spec import Stack, load_spec_text
from shipyard.state import open_engine, session_factory

SPEC = """name: shop
datastores:
  db: {{kind: postgresql, storage: {{size: 1Gi}}}}
backup:
  repository: ./repo
  password: ${{env:RESTIC_PASSWORD}}
  sources: {{datastores: [db]}}
{extra}environments:
  production: {{}}
"""


def _stack(extra: str = "") -> Stack:
    return load_spec_text(SPEC.format(extra=extra), "shipyard.yaml").stack("production")


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _verified_with(sessions: sessionmaker[Session], subset: str, at: str) -> None:
    recorder = SetRecorder(sessions, stack="shop", environment="production", kind="database", actor="t")
    manifest = Manifest(
        id=recorder.id, spec="shop", environment="production", kind="database", repository="./repo",
        restic_host="shop-production", sources=[], tools={}, started_at=at,
    )  # fmt: skip
    recorder.start(manifest)
    recorder.finish("complete", manifest)
    record_verification(sessions, recorder.id, Verification(started_at=at, read_data_subset=subset, ok=True))


def test_the_rotation_walks_every_subset_in_turn_and_wraps(sessions: sessionmaker[Session]) -> None:
    stack = _stack("  read_data_subsets: 3\n")
    seen = []
    for day in range(1, 8):
        subset = read_data_subset(sessions, stack, None)
        seen.append(subset)
        _verified_with(sessions, subset, f"2026-12-0{day}T05:00:00+00:00")
    assert seen == ["1/3", "2/3", "3/3", "1/3", "2/3", "3/3", "1/3"]


def test_full_and_explicit_subsets_do_not_move_the_rotation(sessions: sessionmaker[Session]) -> None:
    stack = _stack("  read_data_subsets: 4\n")
    assert read_data_subset(sessions, stack, FULL) == "100%"
    assert read_data_subset(sessions, stack, "25%") == "25%"
    _verified_with(sessions, "1/4", "2026-12-01T05:00:00+00:00")
    _verified_with(sessions, "100%", "2026-12-02T05:00:00+00:00")
    assert read_data_subset(sessions, stack, None) == "2/4"
    # A changed N starts its own rotation: a subset of another N says nothing about this one.
    assert read_data_subset(sessions, _stack("  read_data_subsets: 5\n"), None) == "1/5"


def test_the_period_is_stated_in_verifications_and_in_days_of_the_verify_schedule() -> None:
    now = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)
    assert rotation_period(_stack(), now=now) == "10 verifications"
    weekly = _stack('  read_data_subsets: 4\n  schedules: {verify: "0 5 * * 0"}\n')
    assert rotation_period(weekly, now=now) == (
        "4 verifications of `0 5 * * 0`: by 2027-01-03 05:00 UTC, 27.8 days"
    )
