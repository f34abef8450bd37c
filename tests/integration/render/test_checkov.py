"""checkov (PyPI) over everything shipyard renders for a cluster: every example, every
environment, plain manifests and Argo Rollouts (`--argo`), and the Helm chart as the Helm engine
renders it. A failed check passes only if `checkov_allowlist.yaml` lists it with a reason; an
allowlist entry that matches nothing any more fails too, so the list only shrinks by being edited.

checkov lives in `.venv-checkov` (`make test` installs it there: its pins conflict with the
project's). Its `helm` framework shells out to a `helm` binary, which no registry we use packages;
the chart is rendered instead by Helm's own engine (PyPI `helm-python-sdk`, as in
test_engines.py) with each environment's values file, and checkov's `kubernetes` framework reads
that output. One checkov run covers one directory holding every render.

Re-generate the allowlist after renders change (reasons of entries that still match are kept;
new entries get an empty reason, which this test refuses until a person writes one; stale ones
are dropped):

    .venv/bin/python tests/integration/render/test_checkov.py --write
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from shipyard.render import all_manifests, dump_all, render_helm
from shipyard.spec import load_spec

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(ROOT.glob("examples/*/shipyard.yaml"))
ALLOWLIST = Path(__file__).with_name("checkov_allowlist.yaml")
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
# checkov asks PyPI for a newer version and the Prisma Cloud API for guidelines unless told not
# to; the proxy on a closed loopback port makes any request it still tries fail at once, locally.
CHECKOV_ENV = {
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
    "BC_SKIP_MAPPING": "TRUE",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
}

pytestmark = pytest.mark.integration


@dataclass(frozen=True, order=True)
class Failure:
    check: str
    resource: str  # checkov's `<kind>.<namespace>.<name>`
    file: str  # `<example>/<environment>/<plain|argo|helm>.yaml`
    name: str  # the check's title


@dataclass(frozen=True)
class Entry:
    check: str
    resource: str  # a glob over `<kind>.<namespace>.<name>`
    reason: str

    def matches(self, failure: Failure) -> bool:
        return self.check == failure.check and fnmatch.fnmatchcase(failure.resource, self.resource)


@dataclass(frozen=True)
class Scan:
    failures: list[Failure]
    summary: dict[str, Any]
    objects: int
    files: list[str]


def render_all(out: Path) -> tuple[int, list[str]]:
    """Every render into `out/<example>/<env>/<variant>.yaml`; the number of objects and files."""
    count, files = 0, []

    def write(path: Path, objects: list[dict[str, Any]]) -> None:
        nonlocal count
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_all(objects))
        count += len(objects)
        files.append(str(path.relative_to(out)))

    for spec_path in EXAMPLES:
        spec = load_spec(spec_path)
        example = spec_path.parent.name
        for argo in (False, True):
            for manifests in all_manifests(spec, argo=argo):
                variant = "argo" if argo else "plain"
                write(out / example / manifests.environment / f"{variant}.yaml", list(manifests.objects))
        with tempfile.TemporaryDirectory() as scratch:
            chart_dir = render_helm(spec, Path(scratch) / "chart").directory
            chart = helm_python.Chart.load(chart_dir)
            for env in spec.environments:
                stack = spec.stack(env)
                overrides = helm_python.values_from_yaml((chart_dir / f"values-{env}.yaml").read_text())
                rendered = chart.render(overrides, name=stack.name, namespace=stack.k8s_namespace)
                objects = [o for text in rendered.values() for o in yaml.safe_load_all(text) if o]
                write(out / example / env / "helm.yaml", objects)
    return count, sorted(files)


def scan() -> Scan:
    """Render everything into a scratch directory and run checkov over it once."""
    if not CHECKOV.exists():
        raise RuntimeError(f"{CHECKOV} is missing: run `make .venv-checkov/.installed` (make test does)")
    with tempfile.TemporaryDirectory(prefix="shipyard-checkov-") as scratch:
        out = Path(scratch)
        objects, files = render_all(out)
        result = subprocess.run(
            [
                str(CHECKOV),
                "--directory",
                str(out),
                "--framework",
                "kubernetes",
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
    if result.returncode not in (0, 1):  # 1: some check failed
        raise RuntimeError(f"checkov ended with {result.returncode}:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failures: list[Failure] = []
    summary: dict[str, Any] = {}
    for each in reports:
        for key, value in each.get("summary", {}).items():
            if isinstance(value, int):
                summary[key] = summary.get(key, 0) + value
        for failed in each["results"].get("failed_checks", []):
            failures.append(
                Failure(
                    check=failed["check_id"],
                    resource=failed["resource"],
                    file=failed["file_path"].lstrip("/"),
                    name=failed["check_name"],
                )
            )
    return Scan(sorted(set(failures)), summary, objects, files)


def load_allowlist(path: Path = ALLOWLIST) -> list[Entry]:
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    return [Entry(str(e["check"]), str(e["resource"]), str(e.get("reason") or "")) for e in data or []]


def unlisted(failures: Iterable[Failure], entries: list[Entry]) -> list[Failure]:
    return [f for f in failures if not any(e.matches(f) for e in entries)]


def stale(failures: list[Failure], entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if not any(e.matches(f) for f in failures)]


def regenerate(failures: list[Failure], entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """The allowlist for `failures`: the entries that still match (reasons kept), plus one entry
    per check and object (any namespace) not covered yet, with an empty reason; and the new ones."""
    kept = [e for e in entries if any(e.matches(f) for f in failures)]
    added: dict[tuple[str, str], Entry] = {}
    for failure in unlisted(failures, kept):
        kind, _, rest = failure.resource.partition(".")
        name = rest.partition(".")[2] or rest
        key = (failure.check, f"{kind}.*.{name}")
        added.setdefault(key, Entry(key[0], key[1], ""))
    new = sorted(added.values(), key=lambda e: (e.check, e.resource))
    return sorted([*kept, *new], key=lambda e: (_check_number(e.check), e.resource)), new


def _check_number(check: str) -> tuple[str, int]:
    prefix, _, number = check.rpartition("_")
    return (prefix, int(number)) if number.isdigit() else (check, 0)


def allowlist_text(entries: list[Entry], failures: list[Failure]) -> str:
    names = {f.check: f.name for f in failures}
    lines = [
        "# checkov failures accepted in what shipyard renders, each with one line of reason.",
        "# tests/integration/render/test_checkov.py fails on a failure not listed here and on an",
        "# entry that matches nothing. Re-generate (keeps the reasons of entries that still match):",
        "#   .venv/bin/python tests/integration/render/test_checkov.py --write",
        "# resource: a glob over checkov's <kind>.<namespace>.<name>.",
    ]
    current = None
    for entry in entries:
        if entry.check != current:
            current = entry.check
            lines.append(f"\n# {entry.check}: {names.get(entry.check, '')}".rstrip())
        lines.append(f"- check: {entry.check}")
        lines.append(f"  resource: {json.dumps(entry.resource)}")
        lines.append(f"  reason: {json.dumps(entry.reason)}")
    return "\n".join(lines) + "\n"


# --- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scanned() -> Scan:
    return scan()


def test_checkov_read_every_render(scanned: Scan) -> None:
    # Without this a run that scanned nothing would pass every other test.
    examples = {p.parent.name for p in EXAMPLES}
    assert {f.split("/")[0] for f in scanned.files} == examples
    assert {f.rsplit("/", 1)[1] for f in scanned.files} == {"plain.yaml", "argo.yaml", "helm.yaml"}
    assert scanned.summary.get("parsing_errors") == 0, scanned.summary
    assert scanned.summary.get("resource_count", 0) >= scanned.objects, (scanned.summary, scanned.objects)
    assert scanned.summary.get("passed", 0) > 0


def test_every_failed_check_is_in_the_allowlist(scanned: Scan) -> None:
    entries = load_allowlist()
    missing = unlisted(scanned.failures, entries)
    _, new = regenerate(missing, [])
    assert not missing, (
        f"{len(missing)} checkov failures are not in {ALLOWLIST.name}; fix them, or add (with a reason):\n"
        + allowlist_text(new, missing)
        + "\nfailures:\n"
        + "\n".join(f"  {f.check} {f.resource} ({f.file}): {f.name}" for f in missing)
    )


def test_no_allowlist_entry_is_stale(scanned: Scan) -> None:
    old = stale(scanned.failures, load_allowlist())
    assert not old, "entries that match no failure any more; remove them:\n" + "\n".join(
        f"  {e.check} {e.resource}" for e in old
    )


def test_every_allowlist_entry_has_a_reason() -> None:
    entries = load_allowlist()
    assert entries, f"{ALLOWLIST} is empty or missing"
    assert [e for e in entries if not e.reason.strip()] == []


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Run checkov over every render; print or re-write the allowlist."
    )
    parser.add_argument("--write", action="store_true", help=f"re-write {ALLOWLIST.name} in place")
    args = parser.parse_args(argv)
    result = scan()
    entries = load_allowlist()
    regenerated, new = regenerate(result.failures, entries)
    text = allowlist_text(regenerated, result.failures)
    gone = stale(result.failures, entries)
    if args.write:
        ALLOWLIST.write_text(text)
    else:
        sys.stdout.write(text)
    print(
        f"{len(result.failures)} failures over {result.objects} objects in {len(result.files)} files;"
        f" {len(regenerated) - len(new)} entries kept, {len(new)} new (give each a reason),"
        f" {len(gone)} stale{' dropped' if args.write else ''}",
        file=sys.stderr,
    )
    for entry in new:
        print(f"  new: {entry.check} {entry.resource}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
