"""The point-in-time recovery verbs called as a job or the API would call them (no CLI): a typed
request and a workspace in, a typed result out, against a real PostgreSQL 15 archiving into a real
pgBackRest repository and streaming to a real pg_receivewal."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select

from shipyard.backup import start_scratch_postgres
from shipyard.errors import UserError
from shipyard.ops import (
    InitPitr,
    PitrWindow,
    RestorePitr,
    StopWalStream,
    TakePitrBackup,
    WalStreamStatus,
    Workspace,
    init_pitr,
    pitr_window,
    plan_init_pitr,
    plan_restore_pitr,
    plan_take_pitr_backup,
    restore_pitr,
    stop_wal_stream,
    take_pitr_backup,
    wal_stream_status,
)
from shipyard.state import AuditRow, open_engine, rfc3339, session_factory
from support.pitr import STREAM_SPEC, wait_streamed


def test_init_back_up_list_restore_and_stop_the_stream_as_a_job_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = Path(tempfile.mkdtemp(prefix="shipyard-pitr-ops-"))
    if os.geteuid() == 0:  # pgBackRest and pg_receivewal run as postgres: they must reach the state dir
        shutil.chown(base, "postgres", "postgres")
    server = start_scratch_postgres()
    stop_restored: list[str] = []
    state_url = f"sqlite:///{base / 'state.db'}"
    try:
        spec = base / "shipyard.yaml"
        spec.write_text(STREAM_SPEC.format(user=server.user, port=server.port, data_dir=server.data_dir))
        monkeypatch.setenv("PITR_RESTIC_PASSWORD", "unused")
        monkeypatch.setenv("SHIPYARD_STATE_DIR", str(base / "state"))
        ws = Workspace.open(spec, database_url=state_url, actor="token:ops")
        url = f"postgresql://{server.user}@127.0.0.1:{server.port}/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE marks (seq int PRIMARY KEY)")

        plan = plan_init_pitr(ws, InitPitr())
        assert plan["dry_run"]
        assert not Path(plan["config_path"]).exists()

        waiting = init_pitr(ws, InitPitr())
        assert waiting.restart_needed
        assert not waiting.ok  # a job that ran it fails: nothing is archived yet
        assert "stream_pid" not in waiting.model_dump(mode="json")
        assert waiting.summary().startswith("stanza shop set up but not ready:")

        ready = init_pitr(ws, InitPitr(restart=True))
        assert ready.ok
        assert ready.checked
        assert ready.stream_pid is not None
        assert ready.summary() == f"stanza shop ready in {base / 'pgbackrest'}: WAL archived and checked"

        streaming = wal_stream_status(ws, WalStreamStatus())
        assert streaming.ok
        assert streaming.slot_active
        assert streaming.pid == ready.stream_pid

        assert plan_take_pitr_backup(ws, TakePitrBackup(what="incr"))["would_take"] == "full"
        taken = take_pitr_backup(ws, TakePitrBackup(what="full"))
        assert plan_take_pitr_backup(ws, TakePitrBackup(what="incr"))["would_take"] == "incr"

        with psycopg.connect(url, autocommit=True) as conn:
            for seq in range(1, 6):
                conn.execute("INSERT INTO marks (seq) VALUES (%s)", (seq,))
        wait_streamed(url)  # archive_timeout is 60 s: only the stream holds these rows

        listed = pitr_window(ws, PitrWindow())
        assert [b.label for b in listed.backups] == [taken.label]
        assert listed.window.from_ == taken.stopped_at
        assert listed.window.streamed_at is not None
        assert listed.summary().startswith(
            f"stanza shop: 1 backups, restorable from {rfc3339(taken.stopped_at)}"
        )

        with pytest.raises(UserError, match="the oldest restorable time is"):
            restore_pitr(ws, RestorePitr(time="2000-01-01T00:00:00Z"))
        target = base / "latest"
        planned = plan_restore_pitr(ws, RestorePitr(latest=True, target_dir=str(target)))
        assert planned["data_dir"] == str(target / "data")
        assert not target.exists()

        restored = restore_pitr(ws, RestorePitr(latest=True, target_dir=str(target)))
        stop_restored = restored.stop_command
        assert restored.point == "the latest"
        assert restored.summary() == (
            f"stanza shop restored to the latest into {target / 'data'}: 127.0.0.1:{restored.port}"
        )
        copy = f"postgresql://{restored.user}@127.0.0.1:{restored.port}/postgres"
        with psycopg.connect(copy, autocommit=True) as conn:
            assert [r[0] for r in conn.execute("SELECT seq FROM marks ORDER BY seq")] == [1, 2, 3, 4, 5]

        stopped = stop_wal_stream(ws, StopWalStream(drop_slot=True))
        assert stopped.stopped
        assert not stopped.slot_exists
        assert stopped.summary() == "stopped pg_receivewal; slot shipyard_shop dropped"
        assert not wal_stream_status(ws, WalStreamStatus()).ok

        with session_factory(open_engine(state_url))() as session:
            rows = session.scalars(select(AuditRow).where(AuditRow.action.like("backup.pitr.%")))
            audited = [(r.action, r.outcome, r.actor) for r in rows]
        assert {actor for _, _, actor in audited} == {"token:ops"}
        assert [action for action, outcome, _ in audited if outcome == "ok"] == [
            "backup.pitr.init",
            "backup.pitr.init",
            "backup.pitr.full",
            "backup.pitr.restore",
            "backup.pitr.stream.stop",
        ]
    finally:
        if stop_restored:
            subprocess.run(stop_restored, check=False, capture_output=True, timeout=60)
        with contextlib.suppress(Exception):
            stop_wal_stream(Workspace.open(base / "shipyard.yaml", database_url=state_url), StopWalStream())
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
