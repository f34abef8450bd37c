"""`shipyard flags … --dry-run --url`: the CLI reads from a real server and sends it no change.

One server for the module: a dry run changes nothing, so each test starts from the same flags.
"No write" is checked twice: the server's state database holds the same rows, and its own
request metrics count no POST, PUT, PATCH or DELETE.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.cli import main
from support.flag_server import FlagServer, StateTemplate, running_flag_server

TABLES = ("flags", "flag_segments", "api_tokens", "audit_log", "counters")
WRITES = ("POST", "PUT", "PATCH", "DELETE")
ROUTE_METRIC = "shipyard_http_request_duration_seconds_count"


@pytest.fixture(scope="module")
def server(flag_state: StateTemplate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlagServer]:
    with running_flag_server(flag_state, tmp_path_factory.mktemp("dry-run-server")) as server:
        server.request("PUT", "/feature-segments/staff", json={"conditions": [
            {"attribute": "email", "op": "ends_with", "value": "@corp.io"}
        ]}).raise_for_status()  # fmt: skip
        server.create_flag({"key": "dark-mode", "default_value": False})
        server.create_flag(
            {"key": "dark-banner", "default_value": False, "prerequisites": [{"flag": "dark-mode"}]}
        )
        server.set_enabled("dark-mode", True)
        assert writes_served(server) == 4  # the metric does count writes: the seeding's four
        yield server


@pytest.fixture(autouse=True)
def no_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local state store the CLI must not open: with --url everything goes to the server."""
    database = tmp_path / "local.db"
    monkeypatch.setenv("SHIPYARD_DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setenv("SHIPYARD_ACTOR", "alice")
    return database


def server_rows(server: FlagServer) -> dict[str, list[tuple[object, ...]]]:
    with contextlib.closing(sqlite3.connect(server.database)) as db:
        return {t: db.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in TABLES}


def writes_served(server: FlagServer) -> int:
    return int(sum(server.metric(ROUTE_METRIC, method=method) for method in WRITES))


def dry_run(
    server: FlagServer, argv: list[str], capsys: pytest.CaptureFixture[str], output: str
) -> tuple[int, str, str]:
    """Run `argv --dry-run --url …` in-process; check that the server got no change."""
    rows, writes = server_rows(server), writes_served(server)
    assert rows["flags"], "the module's flags are there"
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--dry-run", "-o", output, "--url", server.url, "--token", server.admin_token])
    out, err = capsys.readouterr()
    assert server_rows(server) == rows
    assert writes_served(server) == writes
    return int(caught.value.code or 0), out, err


OUTPUTS = pytest.mark.parametrize("output", ["table", "json"])


@OUTPUTS
def test_create(
    server: FlagServer, output: str, capsys: pytest.CaptureFixture[str], no_local_store: Path
) -> None:
    code, out, err = dry_run(server, ["flags", "create", "beta", "--description", "Beta"], capsys, output)
    assert (code, err) == (0, "")
    if output == "json":
        assert json.loads(out)["after"] == {"key": "beta", "description": "Beta", "default_value": False}
    else:
        assert out.startswith("dry run: would create flag beta (version 1); nothing was changed\n")
    assert not no_local_store.exists()
    code, _, err = dry_run(server, ["flags", "create", "dark-mode"], capsys, output)
    assert (code, "exists" in err) == (2, True)


@OUTPUTS
def test_set(server: FlagServer, output: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["flags", "set", "dark-mode", "-e", "production", "--value", "true"]
    code, out, err = dry_run(server, argv, capsys, output)
    assert (code, err) == (0, "")
    if output == "json":
        result = json.loads(out)
        assert (result["before_version"], result["version"]) == (2, 3)
        assert result["after"]["environments"] == {"production": {"enabled": True, "value": True}}
    else:
        assert (
            out.splitlines()[0] == "dry run: would update flag dark-mode (version 2 → 3); nothing was changed"
        )
        assert "+    value: true" in out
    code, _, err = dry_run(server, [*argv, "--if-match", "1"], capsys, output)
    assert (code, "version 2, not 1" in err) == (2, True)


@OUTPUTS
def test_delete(server: FlagServer, output: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = dry_run(server, ["flags", "delete", "dark-banner"], capsys, output)
    assert (code, err) == (0, "")
    if output == "json":
        assert (json.loads(out)["action"], json.loads(out)["before"]["key"]) == ("delete", "dark-banner")
    else:
        assert "-key: dark-banner" in out
    code, _, err = dry_run(server, ["flags", "delete", "dark-mode"], capsys, output)
    assert (code, "unknown flag 'dark-mode'" in err) == (2, True)  # dark-banner requires it


@OUTPUTS
def test_import(server: FlagServer, output: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    file = tmp_path / "flags.yaml"
    file.write_text("flags:\n  dark-mode: {default_value: true}\n  checkout: {default_value: false}\n")
    code, out, err = dry_run(server, ["flags", "import", str(file), "--replace"], capsys, output)
    assert (code, err) == (0, "")
    planned = [
        ("delete", "segment", "staff"),
        ("update", "flag", "dark-mode"),
        ("create", "flag", "checkout"),
        ("delete", "flag", "dark-banner"),
    ]
    if output == "json":
        changes = json.loads(out)["changes"]
        assert [(c["action"], c["target_kind"], c["key"]) for c in changes] == planned
    else:
        assert [tuple(line.split()[:3]) for line in out.splitlines()[1:]] == [
            (a, k, f"{t}:" if a == "update" else t) for a, k, t in planned
        ]
