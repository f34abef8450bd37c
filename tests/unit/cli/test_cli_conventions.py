"""What every command shares (issue 16): `--version`, shell completion, `-f` accepted everywhere,
one `-o json` convention for times and their keys, and tables that never cut an id."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

import shipyard
from shipyard.cli import _COMMANDS, _module_commands
from shipyard.cli._tables import fitted, whole, wrapped
from shipyard.state import (
    ApiTokenRow,
    AuditRow,
    NotificationRow,
    RolloutRow,
    RolloutStepRow,
    open_engine,
    rfc3339,
    session_factory,
)
from support.cli import run_cli

ROOT = Path(__file__).resolve().parents[3]
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_version_prints_the_one_version_the_package_has(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "--version")
    assert (result.code, result.out) == (0, f"shipyard {shipyard.__version__}\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # pyproject reads the version from the package rather than keeping a second copy.
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shipyard.__version__"}


def test_show_completion_prints_a_bash_completion_script(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "--show-completion", "bash")
    assert result.code == 0, result.err
    assert "_SHIPYARD_COMPLETE=complete_bash" in result.out
    assert "complete -o default -F _shipyard_completion shipyard" in result.out


def _leaves(command: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    if hasattr(command, "commands"):
        return [leaf for name, sub in command.commands.items() for leaf in _leaves(sub, (*path, name))]
    return [(path, command)]


def _every_command() -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for name, lazy in _COMMANDS.items():
        found += _leaves(_module_commands(lazy.module)[name], (name,))
    return found


def test_every_command_takes_the_spec_with_dash_f() -> None:
    lacking = []
    for path, command in _every_command():
        spec = [p for p in command.params if "-f" in getattr(p, "opts", ())]
        if not spec or "--file" not in spec[0].opts or spec[0].envvar != "SHIPYARD_SPEC":
            lacking.append(" ".join(path))
    assert lacking == []
    assert len(_every_command()) > 60  # the walk saw the whole tree, groups' commands included


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real SQLite store holding a release with a step, a token, an audit entry and a queued
    message, every time stored naive (as SQLite hands them back)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("SHIPYARD_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")
    at = dt.datetime(2026, 12, 6, 19, 0, 0)
    with session_factory(open_engine(url))() as session, session.begin():
        release = RolloutRow(
            service="web", environment="production", target="kubernetes", strategy="canary",
            stable="v1", candidate="v2", phase="succeeded", outcome="succeeded", actor="cli:ops",
            stack={}, state={}, created_at=at, updated_at=at, finished_at=at + dt.timedelta(minutes=5),
        )  # fmt: skip
        session.add(release)
        session.flush()
        session.add(RolloutStepRow(rollout_id=release.id, seq=1, action={"type": "Apply"}, status="done",
                                   started_at=at, finished_at=at))  # fmt: skip
        session.add(AuditRow(at=at, actor="cli:ops", action="deploy", target_kind="service", target="web",
                             outcome="succeeded"))  # fmt: skip
        session.add(ApiTokenRow(name="ops", scope="admin", prefix="shy_admin_abcd", token_hash="x" * 64,
                                created_at=at))  # fmt: skip
        session.add(NotificationRow(channel="hook", channel_config={"kind": "webhook"}, event="rollout.done",
                                    severity="info", body={"summary": "web v2"}, state="pending", attempts=0,
                                    next_attempt_at=at, created_at=at))  # fmt: skip
    return url


def _times(document: Any) -> dict[str, str]:
    """Every key of `document` (nested) whose value is a time, with its value."""
    found: dict[str, str] = {}
    if isinstance(document, dict):
        for key, value in document.items():
            if isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT", value):
                found[key] = value
            found |= _times(value)
    elif isinstance(document, list):
        for item in document:
            found |= _times(item)
    return found


@pytest.mark.parametrize(
    ("argv", "keys"),
    [
        (["rollout", "history", "web"], {"started_at", "finished_at"}),
        (["rollout", "history", "web", "--steps", "1"], {"started_at", "finished_at"}),
        (["rollout", "status"], {"started_at", "finished_at"}),
        (["audit"], {"at"}),
        (["flags", "token", "list"], {"created_at"}),
        (["notify", "queue"], {"next_attempt_at", "created_at"}),
    ],
)
def test_json_times_are_rfc3339_utc_with_z_under_at_keys(
    store: str, capsys: pytest.CaptureFixture[str], argv: list[str], keys: set[str]
) -> None:
    result = run_cli(capsys, *argv, "-o", "json")
    assert result.code == 0, result.err
    times = _times(result.json())
    assert set(times) == keys
    assert all(RFC3339_Z.match(value) for value in times.values()), times
    assert times[sorted(keys)[-1]].startswith("2026-12-06T19:0")


def test_release_json_has_the_api_keys(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    from shipyard.server.routes.rollouts import RolloutOut  # noqa: PLC0415 - FastAPI only here

    (release,) = run_cli(capsys, "rollout", "history", "web", "-o", "json").json()
    assert set(RolloutOut.model_fields) <= set(release)
    assert release["finished_at"] == "2026-12-06T19:05:00Z"


def test_the_time_serialiser_is_pydantics_for_utc() -> None:
    from pydantic import TypeAdapter  # noqa: PLC0415

    adapter = TypeAdapter(dt.datetime)
    for moment in (
        dt.datetime(2026, 12, 6, 19, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 6, 19, 0, 0, 123456, tzinfo=dt.UTC),
    ):
        assert rfc3339(moment) == adapter.dump_python(moment, mode="json")
    assert rfc3339(dt.datetime(2026, 12, 6, 19, 0)) == "2026-12-06T19:00:00Z"  # naive: stored UTC
    offset = dt.datetime(2026, 12, 6, 21, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert rfc3339(offset) == "2026-12-06T19:00:00Z"


_ID = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=40)
_PROSE = st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=14), max_size=8).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(_ID, _PROSE, _ID, _PROSE, _PROSE), min_size=1, max_size=4),
    width=st.integers(min_value=30, max_value=140),
)
def test_a_fitted_table_never_cuts_a_whole_cell(rows: list[tuple[str, ...]], width: int) -> None:
    console = Console(width=width, record=True, soft_wrap=True, color_system=None)
    columns = (
        whole("id"),
        wrapped("note", drop=2),
        whole("version"),
        wrapped("detail"),
        wrapped("x", drop=1),
    )
    console.print(fitted(columns, rows, console=console))
    lines = console.export_text().splitlines()
    for row in rows:
        for cell in (row[0], row[2]):
            assert any(f" {cell} " in line for line in lines), (cell, lines)
    # Within the terminal whenever the widest whole value fits beside the longest column name: side
    # by side, or else as records (a line per field). A caption naming the columns left out is a
    # line of its own, which the terminal wraps.
    longest = max(len(cell) for row in rows for cell in (row[0], row[2]))
    if longest + len("│ version │  │") <= width:
        assert max(len(line) for line in lines if line[:1] in "┏┃┡│└┌├") <= width, "\n".join(lines)


def test_a_table_too_narrow_leaves_out_optional_columns_and_says_which() -> None:
    console = Console(width=50, record=True, color_system=None)
    columns = (whole("id"), wrapped("stack", drop=1), wrapped("error", drop=2))
    console.print(
        fitted(columns, [("20261206-195141-49cf", "shop-with-a-long-name", "x" * 30)], console=console)
    )
    out = console.export_text()
    assert "20261206-195141-49cf" in out
    assert "too narrow for stack" in out
    assert all(len(line) <= 50 for line in out.splitlines())
