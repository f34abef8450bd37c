"""Finding and running the external tools backups need, with messages that say how to install them.

Client tools (pg_dump, pg_restore, redis-cli, restic) are looked up on PATH only, so a PATH
without them is reported rather than silently worked around. PostgreSQL's server programs
(initdb, pg_ctl) are not on PATH on Debian: they are looked up in /usr/lib/postgresql/*/bin too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import BackupError

PACKAGES = {
    "pg_dump": "postgresql-client",
    "pg_restore": "postgresql-client",
    "psql": "postgresql-client",
    "initdb": "postgresql",
    "pg_ctl": "postgresql",
    "redis-cli": "redis-tools",
    "redis-server": "redis-server",
    "restic": "restic",
    "runuser": "util-linux",
}
_SERVER_PROGRAMS = {"initdb", "pg_ctl", "postgres"}


def find_tool(name: str) -> str:
    """The path of `name`, or BackupError naming the Debian package that provides it."""
    found = shutil.which(name)
    if found is None and name in _SERVER_PROGRAMS:
        for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (directory / name).exists():
                return str(directory / name)
    if found is None and name == "runuser":
        found = next((p for p in ("/usr/sbin/runuser", "/sbin/runuser") if Path(p).exists()), None)
    if found is None:
        package = PACKAGES.get(name, name)
        raise BackupError(
            f"{name} is not installed (not found on PATH); install the Debian package {package}"
        )
    return found


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    input_text: str | None = None,
) -> str:
    """Run a tool to completion and return its stdout; BackupError with its stderr if it fails.

    `env` is added to the current environment: passwords travel there, never on argv.
    """
    full_env = {**os.environ, **(env or {})}
    try:
        result = subprocess.run(
            list(argv),
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            input=input_text,
            check=False,
        )
    except FileNotFoundError:
        raise BackupError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BackupError(f"{what}: {Path(argv[0]).name} did not finish within {timeout_s:.0f} s") from None
    if result.returncode != 0:
        detail = _last_lines(result.stderr or result.stdout)
        raise BackupError(f"{what}: {Path(argv[0]).name} exited with {result.returncode}: {detail}")
    return result.stdout


def tool_version(name: str) -> str:
    """The first line of `<tool> --version` (restic: `restic version`), or "unknown"."""
    try:
        path = find_tool(name)
        argv = [path, "version"] if name == "restic" else [path, "--version"]
        return run_tool(argv, what=f"{name} version", timeout_s=30).strip().splitlines()[0]
    except (BackupError, IndexError):
        return "unknown"


def as_postgres_user(argv: Sequence[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run server programs as `postgres` when we are root."""
    if os.geteuid() == 0:
        return [find_tool("runuser"), "-u", "postgres", "--", *argv]
    return list(argv)


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:]) or "no message"
