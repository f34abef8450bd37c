"""`shipyard dr test partial` over point-in-time recovery (issue 5, deliverable 8: "with PITR, the
seconds of committed writes lost"), against a real PostgreSQL 15 archiving into a real pgBackRest
repository, with and without WAL streamed by pg_receivewal.

A writer commits a row every 100 ms while the drill runs. At the disaster the drill freezes the
WAL that existed outside the primary, restores into scratch and replays exactly that WAL, then
reads from the primary's WAL which commits it does not hold. archive_timeout is 60 s, so without
the stream nothing after the base backup is archived and the drill must report those seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shipyard.backup import ResticRepository, ScratchPostgres, start_scratch_postgres
from shipyard.ops import RunDrill, Workspace, run_drill
from support.cli import exit_code, run_cli
from support.pitr import RowWriter, now_utc, wait_streamed
from support.servers import Postgres, pg_bin

pytestmark = pytest.mark.integration

SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    user: {user}
    database: postgres
    local: {{port: {port}, data_dir: {data_dir}}}
backup:
  repository: ./restic
  password: ${{env:PITR_DRILL_RESTIC_PASSWORD}}
  sources: {{datastores: [db]}}
  checks: ["SELECT count(*) FROM marks"]
  pitr: {{repository: ./pgbackrest, stanza: shop, archive_timeout: 60, stream: {stream}}}
dr: {{rto: 15m, rpo: {rpo}}}
environments:
  test: {{}}
"""


@dataclass
class Rig:
    base: Path
    server: ScratchPostgres
    stream: bool

    @property
    def pg(self) -> Postgres:
        return Postgres(port=self.server.port, datadir=self.server.data_dir, user=self.server.user)

    def shipyard(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        return run_cli(capsys, *args)


def _stop_leftovers(base: Path) -> None:
    pg_ctl = pg_bin("pg_ctl") or "pg_ctl"
    for pid_file in Path(tempfile.gettempdir()).glob("shipyard-drill-pitr-*/copy/data/postmaster.pid"):
        argv = [pg_ctl, "-D", str(pid_file.parent), "-m", "immediate", "-w", "stop"]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="module", params=[True, False], ids=["streamed", "archive-only"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    stream = bool(request.param)
    base = Path(tempfile.mkdtemp(prefix="shipyard-pitr-drill-"))
    if os.geteuid() == 0:  # pgBackRest, archive_command and pg_receivewal run as postgres
        shutil.chown(base, "postgres", "postgres")
    server = start_scratch_postgres()
    patch = pytest.MonkeyPatch()
    try:
        spec = SPEC.format(
            user=server.user,
            port=server.port,
            data_dir=server.data_dir,
            stream="true" if stream else "false",
            rpo="1s" if stream else "5m",
        )
        (base / "shipyard.yaml").write_text(spec)
        password = "pitr drill test password"
        ResticRepository(str(base / "restic"), password, cache_dir=base / "cache").init()
        for key, value in {
            "PITR_DRILL_RESTIC_PASSWORD": password,
            "SHIPYARD_DATABASE_URL": f"sqlite:///{base / 'state.db'}",
            "SHIPYARD_STATE_DIR": str(base / "state"),
            "SHIPYARD_ACTOR": "tester",
            "SHIPYARD_SPEC": str(base / "shipyard.yaml"),
            "XDG_CACHE_HOME": str(base / "cache"),
        }.items():
            patch.setenv(key, value)
        patch.chdir(base)
        rig = Rig(base, server, stream)
        rig.pg.psql("CREATE TABLE marks (seq int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        for args in (["backup", "pitr", "init", "--restart"], ["backup", "pitr", "full"]):
            assert exit_code(*args, "-e", "test") == 0, f"shipyard {' '.join(args)} failed"
        yield rig
    finally:
        if stream:
            exit_code("backup", "pitr", "stream", "stop", "-e", "test")
        patch.undo()
        _stop_leftovers(base)
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def _drill_while_writing(
    rig: Rig, capsys: pytest.CaptureFixture[str], seconds: float = 3.0
) -> tuple[int, dict[str, Any], RowWriter]:
    writer = RowWriter(rig.pg.url(), table="marks")
    with psycopg.connect(rig.pg.url(), autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM marks").fetchone()
    assert row is not None
    writer.start(first_seq=int(row[0]))
    try:
        time.sleep(seconds)
        code, out, err = rig.shipyard(
            capsys,
            "dr",
            "test",
            "partial",
            "-e",
            "test",
            "-o",
            "json",
            "--report-dir",
            str(rig.base / "reports"),
        )
    finally:
        writer.stop()
    assert out, err
    return code, json.loads(out), writer


def _point(report: dict[str, Any]) -> dict[str, Any]:
    (point,) = [p for p in report["restore_points"] if p["source"] == "postgres:db"]
    return point


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_pitr_drill_reports_the_committed_writes_a_real_loss_would_take(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    started = now_utc()
    code, report, writer = _drill_while_writing(rig, capsys)

    phases = {phase["name"]: phase for phase in report["phases"]}
    assert [p["status"] for p in report["phases"]] == ["passed"] * 3, [p["detail"] for p in report["phases"]]
    assert "point-in-time recovery from stanza shop" in phases["select newest restorable set"]["detail"]
    assert "pgBackRest restore and WAL replay" in phases["restore postgres:db"]["detail"]
    health = phases["health postgres:db"]["detail"]
    assert "1 checks passed" in health

    point = _point(report)
    assert point["label"].startswith("pitr:")
    disaster = _at(report["disaster_at"])
    # What the writer had committed (COMMIT returned) before the disaster and after the drill began.
    before = [c for c in writer.commits if started < c.returned < disaster]
    assert len(before) >= 20, "the writer did not keep writing through the drill"
    lost, rpo = point["lost_commits"], report["achieved"]["rpo_seconds"]
    assert rpo == point["loss_seconds"]
    if rig.stream:
        # pg_receivewal holds every commit as it is made: at most the one in flight is lost.
        assert lost <= 1, health
        # Against the 1 s target the verdict follows the seconds measured (that they stay under
        # 1 s on a loaded host is a benchmark's claim, not this test's).
        met = rpo <= 1.0
        assert {c["name"]: c["verdict"] for c in report["targets"]}["rpo"] == ("pass" if met else "fail")
        assert (code == 0) is met
    else:
        # Nothing after the base backup was archived (archive_timeout 60 s): every commit the writer
        # made before the disaster is lost, and the RPO spans them.
        assert lost >= len(before) - 1, (lost, len(before), health)
        assert lost <= len(before) + 3
        span = (max(c.returned for c in before) - min(c.sent for c in before)).total_seconds()
        assert span - 0.5 <= rpo <= span + 1.5, (rpo, span)
        assert f"{lost} committed transaction(s) lost" in health
        assert code == 0  # the spec's RPO here is 5 min


def test_the_drill_left_nothing_running_and_wrote_its_report(rig: Rig) -> None:
    reports = sorted((rig.base / "reports").glob("*.json"))
    assert reports
    data = json.loads(reports[-1].read_text())
    assert data["mode"] == "partial"
    assert not list(Path(tempfile.gettempdir()).glob("shipyard-drill-pitr-*"))
    assert not list(Path(tempfile.gettempdir()).glob("shipyard-drill-wal-*"))


def test_a_drill_before_pitr_init_fails_at_the_disaster_and_says_what_to_run(
    rig: Rig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(tmp_path / "never-initialised"))
    code, out, _ = rig.shipyard(
        capsys, "dr", "test", "partial", "-e", "test", "-o", "json", "--report-dir", str(tmp_path)
    )
    report = json.loads(out)
    assert code != 0
    assert report["failed_phase"]["name"] == "select newest restorable set"
    assert "run `shipyard backup pitr init` first" in report["failed_phase"]["reason"]
    assert [p["status"] for p in report["phases"]] == ["failed", "skipped", "skipped"]


def test_a_commit_made_after_the_disaster_is_declared_is_neither_in_the_copy_nor_lost(rig: Rig) -> None:
    """Defect 8: the drill reads its clock for the disaster, then freezes the WAL. A commit made
    in between (here deterministically: from the callback the drill calls once it has read the
    clock and before the phase that freezes) must not be in the copy, or counted lost, as made
    after the disaster: the disaster the report states is the instant the copy reflects."""
    committed: list[datetime] = []

    def commit_between_clock_and_freeze(phase: str) -> None:
        if phase != "select newest restorable set":
            return
        with psycopg.connect(rig.pg.url(), autocommit=True) as conn:
            row = conn.execute(
                "INSERT INTO marks (seq) SELECT coalesce(max(seq), 0) + 1 FROM marks RETURNING at"
            ).fetchone()
        assert row is not None
        committed.append(row[0])
        if rig.stream:
            wait_streamed(rig.pg.url())  # in the spool before the freeze copies it

    workspace = Workspace.open(rig.base / "shipyard.yaml", "test")
    request = RunDrill(mode="partial", report_dir=str(rig.base / "reports"))
    result = run_drill(workspace, request, on_phase=commit_between_clock_and_freeze).result
    assert result is not None
    assert [phase.status for phase in result.phases] == ["passed"] * 3, result.phases
    assert committed, "the commit between the clock and the freeze was not made"
    assert result.disaster_at is not None
    disaster = datetime.fromtimestamp(result.disaster_at, UTC)
    (point,) = [p for p in result.points if p.source == "postgres:db"]
    # The newest commit the copy replayed, and the newest it lost: both before the disaster.
    newest = max(point.time, point.last_write or point.time)
    assert newest <= disaster, (newest, disaster, committed)
    # The commit was made before the freeze: in the copy (streamed) or lost (archive only).
    assert committed[0] <= disaster
    if rig.stream:
        assert point.time >= committed[0], "the copy misses a commit the spool held"
