"""`shipyard dr test`: argument handling and --dry-run, which need no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipyard.cli import main

SPEC = """\
name: shop
datastores:
  db: {kind: postgresql, storage: {size: 1Gi}}
  cache: {kind: redis}
backup:
  repository: ./repo
  password: ${env:RESTIC_PASSWORD}
  sources: {datastores: [db, cache], volumes: [/srv/uploads]}
dr: {rto: 15m, rpo: 5m}
"""


def _run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str, spec: str = SPEC
) -> tuple[int, str, str]:
    path = tmp_path / "shipyard.yaml"
    path.write_text(spec, encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["dr", "test", *args, "-f", str(path)])
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_dry_run_lists_the_phases_around_the_disaster(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, tmp_path, "full", "--dry-run")
    assert code == 0
    assert out.splitlines() == [
        " 1. take backup set",
        "   — simulated disaster —",
        " 2. select newest restorable set",
        " 3. restore postgres:db",
        " 4. restore redis:cache",
        " 5. restore files:/srv/uploads",
        " 6. health postgres:db",
        " 7. health redis:cache",
        " 8. health files:/srv/uploads",
        "dry run: nothing was run",
    ]
    assert list(tmp_path.iterdir()) == [tmp_path / "shipyard.yaml"]  # no state store, no report


def test_dry_run_for_machines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _run(capsys, tmp_path, "partial", "--dry-run", "-o", "json")
    assert code == 0
    assert json.loads(out) == {
        "mode": "partial",
        "phases": [
            {
                "phase": "select newest restorable set",
                "kind": "select",
                "after_disaster": True,
                "pitr": False,
            },
            {"phase": "restore postgres:db", "kind": "restore", "after_disaster": True, "pitr": False},
            {"phase": "health postgres:db", "kind": "health", "after_disaster": True, "pitr": False},
        ],
    }


def test_dry_run_says_which_sources_point_in_time_recovery_restores(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = SPEC.replace("  sources:", "  pitr: {repository: ./pgbackrest}\n  sources:")
    code, out, _ = _run(capsys, tmp_path, "restore", "--dry-run", spec=spec)
    assert code == 0
    assert " 2. restore postgres:db (point-in-time recovery)" in out.splitlines()
    assert " 3. restore redis:cache" in out.splitlines()
    code, out, _ = _run(capsys, tmp_path, "partial", "--dry-run", "-o", "json", spec=spec)
    assert [phase["pitr"] for phase in json.loads(out)["phases"]] == [False, True, True]


def test_an_unknown_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, tmp_path, "everything", "--dry-run")
    assert code == 2
    assert "everything" in err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("name: shop\n", "has no `backup:` section"),
        (
            SPEC.replace(
                "sources: {datastores: [db, cache], volumes: [/srv/uploads]}",
                "sources: {datastores: [cache]}",
            ),
            "a partial drill restores the PostgreSQL datastores, and backup.sources.datastores names none",
        ),
    ],
)
def test_a_spec_that_cannot_drill_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: str, message: str
) -> None:
    code, out, err = _run(capsys, tmp_path, "partial", "--dry-run", spec=spec)
    assert code == 2
    assert out == ""
    assert message in " ".join(err.split())  # the console wraps long messages
    assert "Traceback" not in err
