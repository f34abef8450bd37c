"""`shipyard flags …` against the local state store (a real SQLite file in a temp dir)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from shipyard.cli import main

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    database = tmp_path / "state.db"
    monkeypatch.setenv("SHIPYARD_DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setenv("SHIPYARD_ACTOR", "alice")
    monkeypatch.setenv("COLUMNS", "200")
    return database


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    out, err = capsys.readouterr()
    return int(caught.value.code or 0), out, err


def test_create_toggle_evaluate_audit(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["flags", "create", "dark-mode", "--description", "Dark UI"], capsys)[0] == 0
    code, out, _ = run(["flags", "set", "dark-mode", "-e", "production", "--on", "--value", "true"], capsys)
    assert (code, out.strip()) == (0, "dark-mode is on in production (version 2)")
    code, out, _ = run(
        ["flags", "eval", "dark-mode", "-e", "production", "-c", "userId=1", "-o", "json"], capsys
    )
    assert json.loads(out)["value"] is True
    code, out, _ = run(["flags", "eval", "dark-mode", "-e", "staging", "-o", "json"], capsys)
    assert (json.loads(out)["value"], json.loads(out)["reason"]) == (False, "DISABLED")
    code, out, _ = run(["flags", "audit", "dark-mode", "-o", "json"], capsys)
    assert [(e["action"], e["actor"]) for e in json.loads(out)] == [
        ("update", "cli:alice"),
        ("create", "cli:alice"),
    ]


def test_stale_version_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    run(["flags", "create", "x"], capsys)
    run(["flags", "set", "x", "-e", "dev", "--on"], capsys)
    code, _, err = run(["flags", "set", "x", "-e", "dev", "--off", "--if-match", "1"], capsys)
    assert code == 2
    assert "version 2, not 1" in err


def test_bad_input_exits_2_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["flags", "set", "ghost", "-e", "dev", "--on"],
        ["flags", "create", "bad", "--default", '"text"'],
        ["flags", "get", "ghost"],
        ["flags", "set", "ghost", "-e", "dev"],
    ):
        code, _, err = run(argv, capsys)
        assert code == 2, argv
        assert "Traceback" not in err


def test_export_import_round_trip_and_import_from_a_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = ROOT / "examples" / "salespot" / "shipyard.yaml"
    assert run(["flags", "import", str(spec)], capsys)[0] == 0
    exported = tmp_path / "flags.json"
    assert run(["flags", "export", str(exported)], capsys)[0] == 0
    data = json.loads(exported.read_text())
    assert [f["key"] for f in data["flags"]] == [
        "checkout-copy",
        "listing-page-size",
        "new-feature",
        "payments-kill-switch",
    ]
    code, out, _ = run(["flags", "eval", "listing-page-size", "-o", "json"], capsys)
    assert (code, json.loads(out)["value"]) == (0, 40)
    assert run(["flags", "import", str(exported), "--replace"], capsys)[0] == 0
    code, out, _ = run(["flags", "list", "-o", "json"], capsys)
    assert (code, len(json.loads(out)["flags"])) == (0, 4)


def test_tokens_are_shown_once_and_stored_hashed(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["flags", "token", "create", "ci", "--scope", "admin"], capsys)
    token = out.strip().splitlines()[-1]
    assert code == 0
    assert token.startswith("shy_admin_")
    stored = b"".join(p.read_bytes() for p in state.parent.glob(state.name + "*"))  # db, -wal, -shm
    assert b"shy_admin_" in stored  # the prefix is kept to tell tokens apart
    assert token.encode() not in stored
    code, out, _ = run(["flags", "token", "list", "-o", "json"], capsys)
    assert json.loads(out)[0]["name"] == "ci"
    assert token not in out


# --- --dry-run: what a change would do, and nothing changed --------------------------------------


def store_rows(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the state store (flags, segments, tokens, audit, counters …)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: db.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in sorted(tables)}


@pytest.fixture
def seeded(state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A store with a flag, a flag that requires it, a segment and a token: what dry runs act on."""
    flags = tmp_path / "seed.yaml"
    flags.write_text(
        """
segments:
  staff: {conditions: [{attribute: email, op: ends_with, value: "@corp.io"}]}
flags:
  dark-mode: {default_value: false, environments: {production: {enabled: true}}}
  dark-banner: {default_value: false, prerequisites: [{flag: dark-mode}]}
"""
    )
    assert run(["flags", "import", str(flags)], capsys)[0] == 0
    assert run(["flags", "token", "create", "ci", "--scope", "admin"], capsys)[0] == 0
    assert {"flags", "flag_segments", "api_tokens", "audit_log", "counters"} <= set(store_rows(state))
    return state


def dry_run(argv: list[str], database: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """Run a --dry-run command twice (table, then -o json): exit 0 both times, no row changed."""
    before = store_rows(database)
    code, text, err = run([*argv, "--dry-run"], capsys)
    assert (code, err) == (0, ""), err
    assert store_rows(database) == before
    code, as_json, err = run([*argv, "--dry-run", "-o", "json"], capsys)
    assert (code, err) == (0, ""), err
    assert store_rows(database) == before
    return text, as_json


def test_create_dry_run_shows_the_new_flag(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, as_json = dry_run(["flags", "create", "beta", "--description", "Beta UI"], seeded, capsys)
    assert text.splitlines()[0] == "dry run: would create flag beta (version 1); nothing was changed"
    assert "+description: Beta UI" in text
    result = json.loads(as_json)
    assert (result["action"], result["dry_run"], result["before"]) == ("create", True, None)
    assert result["after"] == {"key": "beta", "description": "Beta UI", "default_value": False}
    # The checks of a real create run: an existing key is refused, and still nothing changes.
    before = store_rows(seeded)
    code, _, err = run(["flags", "create", "dark-mode", "--dry-run"], capsys)
    assert (code, "exists" in err) == (2, True)
    assert store_rows(seeded) == before


def test_set_dry_run_shows_before_and_after(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["flags", "set", "dark-mode", "-e", "production", "--off", "--value", "true"]
    text, as_json = dry_run(argv, seeded, capsys)
    assert text.splitlines()[0] == "dry run: would update flag dark-mode (version 1 → 2); nothing was changed"
    assert "-    enabled: true" in text
    assert "+    value: true" in text  # off is the default, so it is left out
    result = json.loads(as_json)
    assert (result["before_version"], result["version"]) == (1, 2)
    assert result["before"]["environments"] == {"production": {"enabled": True}}
    assert result["after"]["environments"] == {"production": {"value": True}}
    before = store_rows(seeded)
    code, _, err = run([*argv, "--if-match", "7", "--dry-run"], capsys)
    assert (code, "version 1, not 7" in err) == (2, True)
    assert store_rows(seeded) == before


def test_delete_dry_run_shows_what_goes_and_refuses_a_required_flag(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, as_json = dry_run(["flags", "delete", "dark-banner"], seeded, capsys)
    assert (
        text.splitlines()[0] == "dry run: would delete flag dark-banner (at version 1); nothing was changed"
    )
    assert "-key: dark-banner" in text
    result = json.loads(as_json)
    assert (result["action"], result["after"], result["before"]["key"]) == ("delete", None, "dark-banner")
    before = store_rows(seeded)
    code, _, err = run(["flags", "delete", "dark-mode", "--dry-run"], capsys)
    assert (code, "unknown flag 'dark-mode'" in err) == (2, True)  # dark-banner requires it
    assert store_rows(seeded) == before


def test_import_dry_run_lists_each_change(
    seeded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "next.yaml"
    file.write_text(
        """
flags:
  dark-mode: {default_value: true, environments: {production: {enabled: true}}}
  checkout: {type: string, default_value: one-page}
"""
    )
    text, as_json = dry_run(["flags", "import", str(file), "--replace"], seeded, capsys)
    assert text.splitlines()[1:] == [  # segments first, as the import writes them
        "  delete segment staff",
        "  update flag dark-mode: default_value",
        "  create flag checkout",
        "  delete flag dark-banner",
    ]
    result = json.loads(as_json)
    assert (result["flags"], result["segments"], result["dry_run"]) == (2, 0, True)
    assert [(c["action"], c["key"]) for c in result["changes"]] == [
        ("delete", "staff"),
        ("update", "dark-mode"),
        ("create", "checkout"),
        ("delete", "dark-banner"),
    ]


def test_token_create_dry_run_shows_no_token(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, as_json = dry_run(["flags", "token", "create", "deploy-bot", "--scope", "client"], seeded, capsys)
    assert text.strip() == "dry run: would create token 'deploy-bot' with scope client; nothing was changed"
    assert "shy_" not in text + as_json
    assert json.loads(as_json) == {
        "name": "deploy-bot",
        "scope": "client",
        "prefix": None,
        "token": None,
        "dry_run": True,
    }
    before = store_rows(seeded)
    code, _, err = run(["flags", "token", "create", "ci", "--dry-run"], capsys)
    assert (code, "a token named 'ci' exists" in err) == (2, True)
    assert store_rows(seeded) == before


def test_token_revoke_dry_run_names_the_token(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, as_json = dry_run(["flags", "token", "revoke", "ci"], seeded, capsys)
    assert text.strip() == "dry run: would revoke token 'ci' with scope admin; nothing was changed"
    assert json.loads(as_json) == {"name": "ci", "scope": "admin", "revoked_before": None, "dry_run": True}
    code, _, err = run(["flags", "token", "revoke", "ghost", "--dry-run"], capsys)
    assert (code, "no token named 'ghost'" in err) == (2, True)
    # Still live: a real revoke afterwards is the first one.
    assert run(["flags", "token", "revoke", "ci"], capsys)[1].strip() == "revoked ci"
