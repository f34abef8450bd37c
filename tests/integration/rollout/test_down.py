"""`shipyard down`: the local stack's processes and HAProxy stopped, the releases kept on record."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shipyard.locks import Lease
from shipyard.rollout import lock_name
from shipyard.state import AuditRow
from support.releases import release_stack

pytestmark = pytest.mark.integration


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def test_down_stops_everything_unless_a_release_runs(tmp_path: Path) -> None:
    with release_stack(tmp_path, "blue-green") as stack:
        spec = ("-f", str(stack.spec), "-e", "test")
        running = [i for i in stack.target().supervisor.list() if i.alive]
        assert running
        assert _answers(stack.url)

        dry = stack.cli("down", "--dry-run", *spec)
        assert dry.returncode == 0, dry.stderr
        assert "would stop HAProxy" in dry.stdout
        assert _answers(stack.url)

        lease = Lease(stack.sessions(), lock_name("web"), ttl_s=60)
        lease.acquire()
        try:
            refused = stack.cli("down", *spec)
            assert refused.returncode == 2
            assert "release of web is running" in refused.stderr
            assert _answers(stack.url)
        finally:
            lease.release()

        done = stack.cli("down", *spec)
        assert done.returncode == 0, done.stderr
        assert not _answers(stack.url)
        assert not [i for i in stack.target().supervisor.list() if i.alive]
        assert stack.latest().outcome == "succeeded"  # the release history is kept
        with stack.sessions()() as session:
            outcomes = [r.outcome for r in session.query(AuditRow).filter(AuditRow.action == "down")]
        assert outcomes == ["started", "ok"]
