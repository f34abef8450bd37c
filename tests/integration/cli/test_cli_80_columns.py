"""At 80 columns no table cuts an id, a key or a version (issue 16: `backup list` showed `20261…`,
`flags list` `checkout…`): the real `shipyard` CLI in subprocesses, on a real SQLite store with a
real restic backup set, long flag keys and a release with long versions."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipyard.state import RolloutRow, open_engine, session_factory

SHIPYARD = str(Path(sys.executable).with_name("shipyard"))
WIDTH = 80
FLAG_KEYS = (
    "checkout-copy-experiment-for-the-new-onboarding-flow",
    "checkout-copy-experiment-for-the-new-onboarding-page",  # differs only at its end
    "search-ranking-v2",
)
STABLE, CANDIDATE = "2026.12.05-build.4710+sha.1a2b3c4", "2026.12.06-build.4711+sha.9f8e7d6"
SPEC = """\
name: storefront-with-a-long-name
backup:
  repository: ./repo
  password: ${{env:SHIPYARD_TEST_80_PASSWORD}}
  sources:
    volumes: [{files}]
environments:
  production: {{}}
"""


@dataclass
class Stack:
    base: Path
    env: dict[str, str]
    set_id: str
    release_id: int

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [SHIPYARD, *args],
            cwd=self.base,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    base = tmp_path_factory.mktemp("columns")
    files = base / "volume"
    files.mkdir()
    (files / "a.txt").write_text("kept\n")
    (base / "shipyard.yaml").write_text(SPEC.format(files=files))
    env = {
        **os.environ,
        "COLUMNS": str(WIDTH),
        "SHIPYARD_DATABASE_URL": f"sqlite:///{base / 'state.db'}",
        "SHIPYARD_STATE_DIR": str(base / ".shipyard"),
        "SHIPYARD_TEST_80_PASSWORD": "correct horse battery staple",
        "SHIPYARD_ACTOR": "ops",
    }
    env.pop("SHIPYARD_SPEC", None)
    stack = Stack(base, env, set_id="", release_id=0)
    described = "a description long enough to need wrapping at 80 columns"
    flags = base / "flags.yaml"
    flags.write_text(
        "".join(
            f"{key}: {{type: boolean, default_value: false, description: {described}}}\n" for key in FLAG_KEYS
        )
    )
    stack.run("flags", "import", str(flags))
    stack.run("backup", "files", "-f", "shipyard.yaml", "-o", "json")
    stack.set_id = stack.run("backup", "list", "-o", "json").split('"id": "')[1].split('"')[0]
    with session_factory(open_engine(env["SHIPYARD_DATABASE_URL"]))() as session, session.begin():
        release = RolloutRow(
            service="checkout-api", environment="production", target="kubernetes", strategy="canary",
            stable=STABLE, candidate=CANDIDATE, phase="succeeded", outcome="succeeded", actor="cli:ops",
            stack={}, state={}, reason="every analysis passed: error rate and p99 under their limits",
        )  # fmt: skip
        session.add(release)
        session.flush()
        stack.release_id = release.id
    return stack


def _fits(out: str) -> None:
    """Every line of the tables within the terminal (wrapping or leaving out other columns did it)."""
    too_wide = [line for line in out.splitlines() if line[:1] in "┏┃┡│└" and len(line) > WIDTH]
    assert too_wide == [], out


def _whole(out: str, *values: str) -> None:
    """Each value on one line, whole: bordered by a space on both sides, as a table cell is."""
    for value in values:
        assert any(f" {value} " in line for line in out.splitlines()), (value, out)
    assert "…" not in out, out


def test_backup_list_and_show_keep_the_set_id_whole(stack: Stack) -> None:
    assert len(stack.set_id) >= 20  # 20261206-195141-49cf: what 80 columns cut to `20261…`
    listed = stack.run("backup", "list", "-f", "shipyard.yaml")
    _whole(listed, stack.set_id)
    _fits(listed)
    shown = stack.run("backup", "show", stack.set_id, "-f", "shipyard.yaml")
    _whole(shown, stack.set_id)
    _fits(shown)


def test_flags_list_keeps_every_key_whole(stack: Stack) -> None:
    listed = stack.run("flags", "list", "-f", "shipyard.yaml")
    _whole(listed, *FLAG_KEYS)
    _fits(listed)
    audited = stack.run("flags", "audit", FLAG_KEYS[0])
    _fits(audited)


def test_releases_keep_their_id_and_versions_whole(stack: Stack) -> None:
    history = stack.run("rollout", "history", "checkout-api", "-f", "shipyard.yaml")
    _whole(history, str(stack.release_id), STABLE, CANDIDATE)  # each whole, on its own line if need be
    _fits(history)
    status = stack.run("rollout", "status", "-f", "shipyard.yaml")
    _whole(status, "checkout-api", STABLE, CANDIDATE)


def test_the_audit_log_keeps_targets_whole(stack: Stack) -> None:
    audit = stack.run("audit", "-f", "shipyard.yaml")
    # A 52-character key, a time, an actor and an action do not fit 80 columns side by side: each
    # entry is a record then (a line per field), within the terminal, and no key is cut.
    _whole(audit, stack.set_id, FLAG_KEYS[1])
    assert max(len(line) for line in audit.splitlines()) <= WIDTH, audit
