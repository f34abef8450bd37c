"""checkov's `github_actions` framework on the workflow `render ci` writes for every example that
builds an image, as test_checkov.py does for the manifests: a failed check passes only if
`ci_checkov_allowlist.yaml` lists it with a reason, and an entry that matches nothing fails too."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.render.test_checkov import CHECKOV, CHECKOV_ENV
from shipyard.render import WORKFLOW_PATH, github_workflow
from shipyard.spec import load_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
BUILDING = ["normaldance", "salespot", "apricode"]
ALLOWLIST = Path(__file__).with_name("ci_checkov_allowlist.yaml")
ARGS = ["--framework", "github_actions", "--output", "json", "--compact", "--skip-download"]


@dataclass(frozen=True)
class Failure:
    check: str
    resource: str
    file: str


@dataclass(frozen=True)
class Scan:
    failures: list[Failure]
    passed: set[str]
    summary: dict[str, Any]


def scan(root: Path) -> Scan:
    """checkov over every `<example>/.github/workflows/*.yml` under `root`, one run per example
    (checkov reads workflows only at `.github/workflows` of the directory it is given)."""
    failures: list[Failure] = []
    passed: set[str] = set()
    summary: dict[str, Any] = {}
    for repository in sorted(p for p in root.iterdir() if p.is_dir()):
        result = subprocess.run(
            [str(CHECKOV), "--directory", str(repository), *ARGS],
            capture_output=True,
            text=True,
            env={**os.environ, **CHECKOV_ENV},
            timeout=600,
            check=False,
        )
        assert result.returncode in (0, 1), result.stderr[-3000:]
        reports = json.loads(result.stdout)
        for report in reports if isinstance(reports, list) else [reports]:
            for key, value in report.get("summary", {}).items():
                if isinstance(value, int):
                    summary[key] = summary.get(key, 0) + value
            results = report.get("results", {})
            passed |= {c["check_id"] for c in results.get("passed_checks", [])}
            failures += [
                Failure(c["check_id"], c["resource"], f"{repository.name}{c['file_path']}")
                for c in results.get("failed_checks", [])
            ]
    return Scan(sorted(set(failures), key=lambda f: (f.check, f.file, f.resource)), passed, summary)


def _allowlist() -> list[dict[str, str]]:
    return yaml.safe_load(ALLOWLIST.read_text()) or []


def _allowed(failure: Failure, entries: list[dict[str, str]]) -> bool:
    return any(
        e["check"] == failure.check and fnmatch.fnmatchcase(failure.resource, e["resource"]) for e in entries
    )


def _render(root: Path, example: str, text: str | None = None) -> None:
    path = f"examples/{example}/shipyard.yaml"
    out = root / example / WORKFLOW_PATH
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text if text is not None else github_workflow(load_spec(ROOT / path), path).text)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Scan:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run `make .venv-checkov/.installed` (make test does)")
    root = tmp_path_factory.mktemp("ci-checkov")
    for example in BUILDING:
        _render(root, example)
    return scan(root)


def test_checkov_read_every_workflow(scanned: Scan) -> None:
    # Without this a run that parsed nothing (checkov skips a workflow its schema refuses) passes.
    assert scanned.summary.get("parsing_errors") == 0, scanned.summary
    assert {"CKV_GHA_2", "CKV_GHA_5", "CKV_GHA_6", "CKV2_GHA_1"} <= scanned.passed, scanned.passed
    assert scanned.summary.get("passed", 0) >= 3 * 7


def test_every_failed_check_is_in_the_allowlist(scanned: Scan) -> None:
    entries = _allowlist()
    missing = [f for f in scanned.failures if not _allowed(f, entries)]
    assert missing == [], "fix these, or list them with a reason in " + ALLOWLIST.name


def test_no_allowlist_entry_is_stale_and_each_has_a_reason(scanned: Scan) -> None:
    entries = _allowlist()
    assert [e for e in entries if not str(e.get("reason") or "").strip()] == []
    assert [e for e in entries if not any(_allowed(f, [e]) for f in scanned.failures)] == []


def test_checkov_does_find_what_it_should(tmp_path: Path) -> None:
    # The check can fail: write-all permissions and an expression pasted into a script are found.
    path = "examples/salespot/shipyard.yaml"
    text = github_workflow(load_spec(ROOT / path), path).text
    text = text.replace("permissions:\n  contents: read\n", "permissions: write-all\n", 1)
    text = text.replace('run: cosign sign --yes "$IMAGE"', "run: echo ${{ github.event.issue.title }}")
    _render(tmp_path, "salespot", text)
    found = {f.check for f in scan(tmp_path).failures}
    assert {"CKV2_GHA_1", "CKV_GHA_2"} <= found, found
