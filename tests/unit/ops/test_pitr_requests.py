"""The point-in-time recovery requests and results of `shipyard.ops`, as a job stores them: JSON
in and out, a bad restore target refused in the words the CLI has always used, and results whose
JSON keeps the keys `-o json` has always had."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydantic import ValidationError

from shipyard.errors import UserError
from shipyard.ops import (
    InitPitr,
    PitrInitialised,
    PitrRestored,
    PitrWindow,
    PitrWindowListed,
    RestorePitr,
    StopWalStream,
    WalStreamChecked,
    WalStreamStatus,
)

STREAM = {
    "running": False,
    "pid": None,
    "slot_exists": True,
    "slot_active": False,
    "restart_lsn": "0/FE98000",
    "newest_segment": "00000001000000000000000F",
    "wal_status": "reserved",
    "safe_wal_size": 8589934592,
    "spool": "/srv/pgbackrest.walstream/shop/wal",
    "slot": "shipyard_shop",
}


def _initialised(**changes: Any) -> dict[str, Any]:
    return {
        "datastore": "db",
        "config_path": "/state/pgbackrest/shop-test/pgbackrest.conf",
        "restart": False,
        "changed": ["archive_mode", "archive_command"],
        "restart_needed": True,
        "restarted": False,
        "checked": False,
        "stanza": "shop",
        "repository": "/srv/pgbackrest",
        "message": "PostgreSQL must restart for archive_mode to take effect",
        "server_log": None,
        **changes,
    }


@pytest.mark.parametrize(
    "request_",
    [
        InitPitr(datastore="db", restart=True),
        PitrWindow(),
        StopWalStream(drop_slot=True),
        WalStreamStatus(datastore="db"),
        RestorePitr(time="2026-12-01T02:00:00Z", target_dir="/srv/restored", port=5499),
        RestorePitr(lsn="0/3000060"),
        RestorePitr(latest=True),
    ],
)
def test_each_request_comes_back_from_its_json(request_: Any) -> None:
    document = json.loads(request_.model_dump_json())
    assert document["kind"] == request_.kind
    assert type(request_).model_validate(document) == request_


def test_requests_refuse_fields_they_do_not_have() -> None:
    with pytest.raises(ValidationError):
        StopWalStream.model_validate({"drop_slots": True})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"latest": True, "lsn": "0/1"}, "--latest restores to the end of the archive"),
        ({"latest": True, "time": "2026-12-01T02:00:00Z"}, "without --time/--lsn"),
        ({"time": "2026-12-01T02:00:00Z", "lsn": "0/1"}, "give --time or --lsn, not both"),
        ({}, "say where to restore to"),
    ],
)
def test_a_restore_has_exactly_one_target(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        RestorePitr(**fields)


def test_initialised_has_stream_pid_only_when_it_started_the_stream() -> None:
    waiting = PitrInitialised.model_validate(_initialised())
    assert "stream_pid" not in waiting.model_dump(mode="json")
    assert list(waiting.model_dump(mode="json"))[:4] == ["datastore", "config_path", "restart", "changed"]
    assert not waiting.ok
    assert waiting.summary().startswith("stanza shop set up but not ready: PostgreSQL must restart")

    ready = PitrInitialised.model_validate(
        _initialised(stream_pid=4475, restart_needed=False, restarted=True, checked=True, message="on")
    )
    assert list(ready.model_dump(mode="json"))[:4] == ["datastore", "config_path", "restart", "stream_pid"]
    assert ready.ok
    assert ready.summary() == "stanza shop ready in /srv/pgbackrest: WAL archived and checked"


def test_the_window_keeps_its_from_key_and_writes_times_in_utc_with_z() -> None:
    backup = {
        "label": "20261206-084534F",
        "kind": "full",
        "started_at": "2026-12-06T08:45:34+00:00",
        "stopped_at": "2026-12-06T08:45:40+00:00",
        "start_lsn": "0/5000028",
        "stop_lsn": "0/6000050",
        "wal_start": "000000010000000000000005",
        "wal_stop": "000000010000000000000006",
        "database_size": 23000796,
        "backup_size": 23000796,
        "repository_delta": 4523722,
        "prior": None,
        "error": False,
    }
    document = {
        "stanza": "shop",
        "datastore": "db",
        "status": {"code": 0, "message": "ok"},
        "window": {
            "from": "2026-12-06T08:45:40+00:00",
            "to": "2026-12-06T08:45:51.357353+00:00",
            "from_lsn": "0/6000050",
            "archive_min": "000000010000000000000002",
            "archive_max": "00000001000000000000000E",
            "streamed_at": None,
        },
        "backups": [backup],
    }
    listed = PitrWindowListed.model_validate(document)
    # Read with any offset; written as every `-o json` writes a time: RFC 3339, UTC, `Z`.
    written = json.loads(json.dumps(document).replace("+00:00", "Z"))
    assert listed.model_dump(mode="json") == written
    assert json.loads(listed.model_dump_json()) == written
    assert listed.window.from_ == dt.datetime(2026, 12, 6, 8, 45, 40, tzinfo=dt.UTC)
    assert listed.summary() == (
        "stanza shop: 1 backups, restorable from 2026-12-06T08:45:40Z to 2026-12-06T08:45:51.357353Z"
    )
    empty = PitrWindowListed.model_validate(
        {**document, "backups": [], "window": {**document["window"], "from": None}}
    )
    assert empty.summary() == "stanza shop: no backups yet"


def test_stream_status_is_ok_only_while_the_receiver_runs() -> None:
    stopped = WalStreamChecked.model_validate(STREAM)
    assert not stopped.ok
    assert stopped.model_dump(mode="json") == STREAM
    running = WalStreamChecked.model_validate({**STREAM, "running": True, "pid": 12})
    assert running.ok
    assert running.summary() == (
        "pg_receivewal running (pid 12) on slot shipyard_shop; newest WAL 00000001000000000000000F"
    )


def test_a_restored_copy_says_what_it_was_restored_to() -> None:
    restored = {
        "stanza": "shop",
        "data_dir": "/srv/restored/data",
        "host": "127.0.0.1",
        "port": 5499,
        "user": "postgres",
        "log_file": "/srv/restored/postgresql.log",
        "target": {"time": None, "lsn": "0/3000060"},
        "pgbackrest_arguments": ["--pg1-path=/srv/restored/data", "--type=lsn", "--target=0/3000060"],
        "stop_command": ["pg_ctl", "-D", "/srv/restored/data", "-m", "fast", "-w", "stop"],
    }
    by_lsn = PitrRestored.model_validate(restored)
    assert by_lsn.model_dump(mode="json") == restored
    assert by_lsn.summary() == "stanza shop restored to LSN 0/3000060 into /srv/restored/data: 127.0.0.1:5499"
    latest = PitrRestored.model_validate({**restored, "target": {"time": None, "lsn": None}})
    assert latest.point == "the latest"
