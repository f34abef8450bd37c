"""`shipyard flags …` against the local state store (a real SQLite file in a temp dir)."""

from __future__ import annotations

import json
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
