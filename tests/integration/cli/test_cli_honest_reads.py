"""The CLI gives no silent wrong answer and no traceback (issue 16).

- A command that only reads creates no state store: in a directory without one it fails, naming
  where it looked, instead of answering "nothing yet" from an empty store it made.
- `flags set -e prodution` is refused with "did you mean 'production'?", in the CLI and the API,
  and nothing is written.
- A state store that is down is one line naming it and its host:port, exit 3, no traceback.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.errors import InvalidObjectError
from shipyard.ops import CreateFlag, SetFlag, Workspace, create_flag, set_flag
from support.cli import exit_code, run_cli
from support.flag_server import FlagServer
from support.replication import as_postgres
from support.servers import Postgres, free_port, pg_bin, postgres_server

SHIPYARD = str(Path(sys.executable).with_name("shipyard"))

READ_COMMANDS = [
    ["backup", "list"],
    ["backup", "show", "20260101T000000Z"],
    ["flags", "list"],
    ["flags", "get", "checkout"],
    ["flags", "eval", "checkout"],
    ["flags", "audit", "checkout"],
    ["flags", "export"],
    ["flags", "stale"],
    ["flags", "token", "list"],
    ["rollout", "status"],
    ["rollout", "history", "api"],
    ["audit"],
    ["notify", "queue"],
]


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory, with no store in it and no store named by the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("SHIPYARD_DATABASE_URL", "SHIPYARD_STATE_DIR", "SHIPYARD_SPEC", "SHIPYARD_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_read_commands_create_no_store_and_say_where_they_looked(
    empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    looked_at = str(empty_dir / ".shipyard" / "state.db")
    for argv in READ_COMMANDS:
        result = run_cli(capsys, *argv)

        assert result.code == 2, (argv, result)
        assert f"no state store at {looked_at}" in result.err, (argv, result.err)
        assert "--database-url" in result.err, argv  # how to point at the store
        assert list(empty_dir.iterdir()) == [], f"{argv} left {list(empty_dir.iterdir())}"


def test_a_read_still_finds_the_store_a_write_made(
    empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "flags", "create", "checkout").code == 0

    listed = run_cli(capsys, "flags", "list", "-o", "json")

    assert listed.code == 0, listed
    assert [flag["key"] for flag in listed.json()["flags"]] == ["checkout"]


def test_flags_set_refuses_a_misspelt_environment_in_the_cli(
    empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "flags", "create", "checkout").code == 0

    refused = run_cli(capsys, "flags", "set", "checkout", "-e", "prodution", "--on")
    dry_run = run_cli(capsys, "flags", "set", "checkout", "-e", "prodution", "--on", "--dry-run")

    for result in (refused, dry_run):
        assert result.code == 2, result
        assert "no environment 'prodution'; did you mean 'production'?" in result.err, result.err
    stored = run_cli(capsys, "flags", "get", "checkout", "-o", "json").json()
    assert stored["version"] == 1
    assert "prodution" not in stored["flag"].get("environments", {})
    # The real names still work: the spec's defaults, and those the flag set names.
    assert run_cli(capsys, "flags", "set", "checkout", "-e", "production", "--on").code == 0
    assert run_cli(capsys, "flags", "set", "checkout", "-e", "staging", "--off").code == 0


def test_with_a_spec_only_its_environments_are_known(tmp_path: Path) -> None:
    """The dashboard's workspace carries the server's spec (`serve -f`): its environments rule."""
    spec = tmp_path / "shipyard.yaml"
    spec.write_text("name: shop\nenvironments:\n  staging: {}\n  prod: {}\n", encoding="utf-8")
    ws = Workspace(spec_path=spec, database_url=f"sqlite:///{tmp_path / 'state.db'}", actor="test:ops")
    create_flag(ws, CreateFlag(flag={"key": "checkout", "type": "boolean", "default_value": False}))

    def turn_on(environment: str) -> None:
        patch = {"environments": {environment: {"enabled": True}}}
        set_flag(ws, SetFlag(key="checkout", merge_patch=patch))

    with pytest.raises(InvalidObjectError) as misspelt:
        turn_on("stagign")
    assert misspelt.value.problems[0][0] == "environment"
    assert "no environment 'stagign'; did you mean 'staging'?" in misspelt.value.message
    with pytest.raises(InvalidObjectError) as not_this_specs:
        turn_on("production")  # one of shipyard's defaults, but not this spec's
    assert f"the spec {spec} defines: prod, staging" in not_this_specs.value.message
    turn_on("prod")


@pytest.fixture(scope="module")
def flag_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlagServer]:
    database = tmp_path_factory.mktemp("honest-api") / "state.db"
    url = f"sqlite:///{database}"
    admin, client = (_token(url, name, scope) for name, scope in (("ops", "admin"), ("app", "client")))
    server = FlagServer(database, admin, client)
    server.start()
    try:
        server.create_flag({"key": "checkout", "type": "boolean", "defaultValue": False})
        yield server
    finally:
        server.stop()


def test_the_api_refuses_a_misspelt_environment_naming_the_field(flag_server: FlagServer) -> None:
    before = flag_server.version()

    response = flag_server.request(
        "PATCH", "/feature-flags/checkout", json={"environments": {"prodution": {"enabled": True}}}
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert [error["field"] for error in errors] == ["environment"]
    assert "did you mean 'production'?" in errors[0]["message"]
    assert flag_server.version() == before  # nothing was written
    accepted = flag_server.request(
        "PATCH", "/feature-flags/checkout", json={"environments": {"production": {"enabled": True}}}
    )
    assert accepted.status_code == 200, accepted.text


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def _token(database_url: str, name: str, scope: str) -> str:
    """A new token, made in this process (`prepare_state` costs two interpreter starts)."""
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert (
            exit_code("flags", "token", "create", name, "--scope", scope, "--database-url", database_url) == 0
        )
    return capture.getvalue().strip().splitlines()[-1]


def _shipyard(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command in its own process: what an operator's terminal shows, tracebacks too."""
    return subprocess.run(
        [SHIPYARD, *argv], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_an_empty_postgresql_database_is_no_store_for_a_read(
    postgres: Postgres, empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    postgres.psql("CREATE DATABASE empty_store")
    url = postgres.url("empty_store")

    result = run_cli(capsys, "backup", "list", "--database-url", url)

    assert result.code == 2, result
    assert f"no state store in {url} " in result.err, result.err
    assert postgres.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", "empty_store") == "0"


def test_a_stopped_postgresql_store_is_one_line_exit_3(
    postgres: Postgres, empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    postgres.psql("CREATE DATABASE store")
    url = postgres.url("store")
    assert run_cli(capsys, "flags", "create", "checkout", "--database-url", url).code == 0
    pg_ctl = pg_bin("pg_ctl") or "pg_ctl"
    subprocess.run(
        as_postgres([pg_ctl, "-D", str(postgres.datadir), "-m", "fast", "-w", "stop"]),
        check=True,
        capture_output=True,
    )
    # A read in its own process, as a terminal shows it (a traceback included, if any) ...
    result = _shipyard("flags", "list", "--database-url", url, cwd=empty_dir)
    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr
    # ... and a write, which would migrate the store first (in this process: an exception that
    # escaped `main` would fail the test).
    written = run_cli(capsys, "flags", "set", "checkout", "-e", "production", "--on", "--database-url", url)
    assert written.code == 3, written

    for stderr in (result.stderr, written.err):
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "state store unreachable" in lines[0]
        assert f"127.0.0.1:{postgres.port}" in lines[0]
        assert "check that the database server runs" in lines[0]
    assert list(empty_dir.iterdir()) == []


def test_an_unreachable_store_never_shows_its_password(
    empty_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there: the connection is refused at once
    url = f"postgresql://app:s3cret-pw@127.0.0.1:{port}/shop"

    result = run_cli(capsys, "audit", "--database-url", url)

    assert result.code == 3, result
    assert "s3cret-pw" not in result.out + result.err
    assert f"postgresql://app:***@127.0.0.1:{port}/shop" in result.err
