from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipyard.cli import main


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    return int(caught.value.code or 0)


def test_init_writes_a_valid_starter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "shipyard.yaml"
    assert run(["init", "-f", str(spec)]) == 0
    assert spec.read_text().startswith("# shipyard.yaml")
    assert run(["validate", "-f", str(spec), "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert report["valid"] is True
    assert set(report["environments"]) == {"dev", "staging", "production"}


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text("name: mine\n")
    assert run(["init", "-f", str(spec)]) == 2
    assert "--force" in capsys.readouterr().err
    assert spec.read_text() == "name: mine\n"


def test_validate_reports_problems_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text("name: shop\nservices:\n  api: {role: api, image: i, port: 80, replcas: 2}\n")
    assert run(["validate", "-f", str(spec)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"{spec}:3:40: services.api.replcas: unknown key 'replcas'" in captured.err.replace("\n", "")


def test_validate_json_lists_issues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text("name: shop\nservices:\n  api: {role: api, image: i}\n")
    assert run(["validate", "-f", str(spec), "-o", "json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert report["issues"] == [
        {
            "file": str(spec),
            "line": 3,
            "column": 3,
            "path": "services.api",
            "message": "a api service needs a port",
        }
    ]


def test_unknown_environment_exits_2(apricode_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["validate", "-f", str(apricode_spec), "-e", "prod"]) == 2
    assert "did you mean 'production'" in capsys.readouterr().err
