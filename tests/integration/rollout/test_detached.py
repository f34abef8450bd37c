"""`shipyard deploy --detach`: the release runs in a process of its own, on the real local target."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from shipyard.rollout._loadgen import LoadGenerator
from shipyard.state import JobRow
from support.releases import release_stack, wait_for

pytestmark = pytest.mark.integration


def test_a_detached_release_returns_once_recorded_and_runs_to_its_end(tmp_path: Path) -> None:
    with release_stack(tmp_path, "blue-green") as stack:
        # Load, so the release's analysis has requests to judge.
        with LoadGenerator(stack.url, 100, connections=4) as load:
            started = time.monotonic()
            result = stack.cli("deploy", "web", "--version", "v2", "--detach", timeout=60)
            returned_after = time.monotonic() - started
            assert result.returncode == 0, result.stdout + result.stderr
            # The CLI came back while the release goes on: recorded, not finished.
            row = stack.latest()
            assert (row.candidate, row.finished_at) == ("v2", None)
            found = re.search(
                r"release (\d+): web v2, running in the background as job (\d+) \(pid (\d+)\)", result.stdout
            )
            assert found, result.stdout
            assert int(found[1]) == row.id
            job_id, pid = int(found[2]), int(found[3])
            assert os.getsid(pid) == pid != os.getsid(0)  # a session of its own: our Ctrl-C misses it
            assert "shipyard rollout status web --watch" in result.stdout
            log = stack.directory / "state" / "jobs" / f"{job_id}.log"
            assert str(log) in result.stdout

            # Followed from another process, through the state store, to its end.
            watched = stack.cli("rollout", "status", "web", "--watch", timeout=60)
            assert watched.returncode == 0, watched.stdout + watched.stderr
            assert f"release {row.id}: succeeded" in watched.stdout
            assert "weights 0/100 (stable/new)" in watched.stdout  # where it ended: all on v2
        status = stack.cli("rollout", "status", "web", "-o", "json")
        assert status.returncode == 0, status.stderr
        (data,) = json.loads(status.stdout)
        assert (data["id"], data["outcome"], data["target"]) == (row.id, "succeeded", "local")
        assert data["finished_at"] is not None
        assert load.report.failed == 0
        assert stack.target().status("web").versions == {"v2": 100}
        # The background process is a job like the API's: listed, with its request, result and outcome.
        assert f"release {row.id} (web v2): succeeded" in log.read_text()
        with stack.sessions()() as session:
            job = session.get(JobRow, job_id)
            assert job is not None
            assert (job.kind, job.request["service"], job.request["version"]) == ("deploy", "web", "v2")
            assert wait_for(
                lambda: session.get(JobRow, job_id, populate_existing=True).state != "running", 30
            )
            assert job.state == "succeeded", job.summary
            assert job.result is not None
            assert job.result["rollout_id"] == row.id
        assert wait_for(lambda: not _alive(pid), timeout=30)
        print(f"\ndetached deploy returned after {returned_after:.1f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its new parent) counts as ended.
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[0] != "Z"
