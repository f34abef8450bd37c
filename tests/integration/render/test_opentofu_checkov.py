"""checkov's `terraform` framework over every OpenTofu module shipyard renders: the three seed
examples, every environment, every provider. A failed check passes only if
`opentofu_checkov_allowlist.yaml` lists it with a reason; an entry that matches nothing fails
too. (OpenTofu itself cannot run here: no registry these machines reach packages it, so
`tofu validate`/`plan` are not run; python-hcl2 parses every file in the unit tests.)

Print a fresh allowlist (reasons of entries that still match kept, new ones empty):

    .venv/bin/python tests/integration/render/test_opentofu_checkov.py
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.render.test_checkov import CHECKOV, CHECKOV_ENV
from shipyard.spec import load_spec
from unit.render.test_opentofu import OPENTOFU_PROVIDERS, tofu

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ("normaldance", "salespot", "apricode")
ALLOWLIST = Path(__file__).with_name("opentofu_checkov_allowlist.yaml")

pytestmark = pytest.mark.integration


@dataclass(frozen=True, order=True)
class Failure:
    check: str
    resource: str  # `<type>.<name>`
    file: str  # `<example>/<provider>/<environment>/<file>.tf`
    name: str


@dataclass(frozen=True)
class Entry:
    check: str
    resource: str  # a glob over `<type>.<name>`
    file: str  # a glob over `<example>/<provider>/<environment>/<file>`
    reason: str

    def matches(self, failure: Failure) -> bool:
        return (
            self.check == failure.check
            and fnmatch.fnmatchcase(failure.resource, self.resource)
            and fnmatch.fnmatchcase(failure.file, self.file)
        )


def render_all(out: Path) -> list[str]:
    files = []
    for example in EXAMPLES:
        spec = load_spec(ROOT / "examples" / example / "shipyard.yaml")
        for provider in OPENTOFU_PROVIDERS:
            for name, text in tofu(spec, provider).files.items():
                path = out / example / provider / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                files.append(str(path.relative_to(out)))
    return sorted(files)


def scan() -> tuple[list[Failure], dict[str, Any], list[str]]:
    if not CHECKOV.exists():
        raise RuntimeError(f"{CHECKOV} is missing: run `make .venv-checkov/.installed` (make test does)")
    with tempfile.TemporaryDirectory(prefix="shipyard-tofu-checkov-") as scratch:
        files = render_all(Path(scratch))
        result = subprocess.run(
            [
                str(CHECKOV),
                "--directory",
                scratch,
                "--framework",
                "terraform",
                "--output",
                "json",
                "--quiet",
                "--compact",
                "--skip-download",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **CHECKOV_ENV},
            timeout=900,
            check=False,
        )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"checkov ended with {result.returncode}:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failures: set[Failure] = set()
    summary: dict[str, Any] = {}
    for each in reports:
        for key, value in each.get("summary", {}).items():
            if isinstance(value, int):
                summary[key] = summary.get(key, 0) + value
        for failed in each["results"].get("failed_checks", []):
            failures.add(
                Failure(
                    failed["check_id"],
                    failed["resource"],
                    failed["file_path"].lstrip("/"),
                    failed["check_name"],
                )
            )
    return sorted(failures), summary, files


def load_allowlist() -> list[Entry]:
    data = yaml.safe_load(ALLOWLIST.read_text()) if ALLOWLIST.exists() else None
    return [
        Entry(str(e["check"]), str(e["resource"]), str(e.get("file", "*")), str(e.get("reason") or ""))
        for e in data or []
    ]


@pytest.fixture(scope="module")
def scanned() -> tuple[list[Failure], dict[str, Any], list[str]]:
    return scan()


def test_checkov_read_every_module(scanned: tuple[list[Failure], dict[str, Any], list[str]]) -> None:
    _, summary, files = scanned
    assert {tuple(f.split("/")[:2]) for f in files} == {(e, p) for e in EXAMPLES for p in OPENTOFU_PROVIDERS}
    assert summary.get("parsing_errors") == 0, summary
    assert summary.get("passed", 0) > 100, summary


def test_every_failed_check_is_in_the_allowlist(
    scanned: tuple[list[Failure], dict[str, Any], list[str]],
) -> None:
    entries = load_allowlist()
    missing = [f for f in scanned[0] if not any(e.matches(f) for e in entries)]
    assert not missing, (
        "checkov failures not in the allowlist; fix them or add them with a reason:\n"
        + "\n".join(f"  {f.check} {f.resource} ({f.file}): {f.name}" for f in missing)
    )


def test_no_allowlist_entry_is_stale(scanned: tuple[list[Failure], dict[str, Any], list[str]]) -> None:
    old = [e for e in load_allowlist() if not any(e.matches(f) for f in scanned[0])]
    assert not old, "entries that match no failure any more; remove them:\n" + "\n".join(
        f"  {e.check} {e.resource} {e.file}" for e in old
    )


def test_every_allowlist_entry_has_a_reason() -> None:
    entries = load_allowlist()
    assert entries
    assert [e for e in entries if not e.reason.strip()] == []


if __name__ == "__main__":
    failures, _, _ = scan()
    entries = load_allowlist()
    for failure in failures:
        if not any(e.matches(failure) for e in entries):
            provider = failure.file.split("/")[1]
            print(f'- check: {failure.check}\n  resource: "{failure.resource}"\n  file: "*/{provider}/*"')
            print(f'  reason: ""  # {failure.name}')
    sys.exit(0)
