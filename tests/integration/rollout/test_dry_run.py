"""`--dry-run` on the local target: each verb says what it would do and changes nothing.

Real HAProxy and real demo-app processes on loopback, the real CLI (in this process). Two stacks:
one with v1 live (for `deploy`), and one whose release of v2 waits for a decision (its analysis
was inconclusive) and whose controller was then killed (for the steering verbs). A dry run must
leave the state store (releases, steps, commands, audit, leases, jobs) and the world (the
processes, HAProxy's servers and weights, the state directory's files) exactly as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from shipyard.cli import main
from shipyard.rollout.targets._processes import Supervisor
from shipyard.rollout.targets.haproxy import HAProxyClient, ProxyPaths, backend_name, read_pid
from support.releases import ReleaseStack, kill_group, release_stack, wait_for

pytestmark = pytest.mark.integration

TABLES = ("rollouts", "rollout_steps", "rollout_commands", "audit_log", "locks", "jobs")


def store(stack: ReleaseStack) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables a verb may write."""
    engine = sa.create_engine(stack.env["SHIPYARD_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return {
                table: [dict(row) for row in connection.execute(sa.text(f"SELECT * FROM {table}")).mappings()]
                for table in TABLES
            }
    finally:
        engine.dispose()


def world(stack: ReleaseStack) -> dict[str, Any]:
    """The processes, HAProxy (its pid, servers and their weights) and the state directory's files."""
    state = stack.directory / "state"
    local = state / "local" / "releases-test"
    paths = ProxyPaths(local / "proxy")
    servers = HAProxyClient(paths.admin_socket).servers_state(backend_name("web"))
    return {
        "processes": sorted(
            (i.name, i.port, i.app_pid, i.supervisor_pid, i.alive)
            for i in Supervisor(local / "processes").list()
        ),
        "haproxy": read_pid(paths),
        "servers": sorted((s.server, s.address, s.port, s.weight, s.admin_state) for s in servers),
        "weights": (local / "weights.json").read_text(),
        "files": sorted(str(p.relative_to(state)) for p in state.rglob("*")),
    }


def shipyard(
    stack: ReleaseStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """`shipyard ARGS -f SPEC -e test`, in this process, with the stack's store and state directory."""
    for name in ("SHIPYARD_STATE_DIR", "SHIPYARD_DATABASE_URL", "SHIPYARD_ACTOR"):
        monkeypatch.setenv(name, stack.env[name])
    capsys.readouterr()
    try:
        main([*args, "-f", str(stack.spec), "-e", "test"])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseStack]:
    """v1 live, nothing going on."""
    with release_stack(tmp_path_factory.mktemp("live"), "canary") as stack:
        yield stack


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseStack]:
    """A blue-green release of v2 at full weight, paused on an inconclusive analysis (no traffic),
    whose controller was then killed: v1 and v2 both run, and nothing runs the release."""
    with release_stack(tmp_path_factory.mktemp("stopped"), "blue-green") as stack:
        controller = stack.start_cli("deploy", "web", "--version", "v2")
        try:
            assert wait_for(lambda: stack.latest().candidate == "v2" and stack.latest().phase == "paused", 60)
        finally:
            kill_group(controller)
        yield stack


def test_deploy_dry_run_shows_the_plan_and_changes_nothing(
    live: ReleaseStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (store(live), world(live))
    code, out, err = shipyard(live, monkeypatch, capsys, "deploy", "web", "--version", "v2", "--dry-run")
    assert code == 0, out + err
    assert "dry run: deploy web (a new release, local, test); nothing is changed" in out
    assert "v1 → v2 (canary)" in out
    lines = [line.strip() for line in out.splitlines()]
    steps = [line.split(". ", 1)[1] for line in lines if line[:1].isdigit()]
    assert steps == [
        "record a new release of web: v1 → v2 (canary), holding the rollout:web lease",
        "run the migration with v2",
        "start 2 instances of v2, taking no traffic yet",
        "wait until v2 is healthy (at most 15s)",
        "set weights v1 90% / v2 10%",
        "analyse for 3s (rolls back on a failed check)",
        "set weights v1 50% / v2 50%",
        "analyse for 2s (rolls back on a failed check)",
        "set weights v1 0% / v2 100%",
        "keep v1 running for 1s for an instant rollback",
        "retire v1",
    ]
    blue_green = ("--version", "v2", "--strategy", "blue-green", "--dry-run", "-o", "json")
    code, out, err = shipyard(live, monkeypatch, capsys, "deploy", "web", *blue_green)
    assert code == 0, out + err
    plan = json.loads(out)
    assert (plan["verb"], plan["target"], plan["rollout_id"], plan["stable"], plan["candidate"]) == (
        "deploy",
        "local",
        None,
        "v1",
        "v2",
    )
    assert plan["strategy"] == "blue-green"
    assert "set weights v1 0% / v2 100%" in plan["actions"]
    assert (store(live), world(live)) == before


def test_deploy_dry_run_refuses_what_the_deploy_would_refuse(
    live: ReleaseStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (store(live), world(live))
    code, _out, err = shipyard(live, monkeypatch, capsys, "deploy", "web", "--version", "v1", "--dry-run")
    assert code == 2
    assert "version 'v1' of 'web' is already live" in err
    assert (store(live), world(live)) == before


# What each verb's plan says for the paused release (the dry run of pause is refused, as pause is).
STEERING = {
    "promote": ("queue promote for release {id}", 0),
    "abort": ("queue abort for release {id}", 0),
    "pause": ("queue pause for release {id}", 2),
    "retry": ("queue retry for release {id}", 0),
    "rollback": ("queue rollback for release {id}", 0),
    "resume": ("take over release {id}", 0),
}


@pytest.mark.parametrize("verb", list(STEERING))
def test_a_steering_dry_run_shows_the_plan_and_changes_nothing(
    stopped: ReleaseStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    release = stopped.latest()
    before = (store(stopped), world(stopped))
    code, out, err = shipyard(stopped, monkeypatch, capsys, "rollout", verb, "web", "--dry-run")
    expected, exit_code = STEERING[verb]
    assert code == exit_code, out + err
    assert f"dry run: {verb} web (release {release.id}, local, test); nothing is changed" in out
    assert expected.format(id=release.id) in out
    if verb == "pause":
        assert "would be refused: cannot pause the release of web while paused" in out
    if verb in ("abort", "rollback"):
        assert "set weights v1 100% / v2 0%" in out  # what the controller would do next
    code, out, err = shipyard(stopped, monkeypatch, capsys, "rollout", verb, "web", "--dry-run", "-o", "json")
    assert code == exit_code, out + err
    plan = json.loads(out)
    assert (plan["verb"], plan["target"], plan["rollout_id"]) == (verb, "local", release.id)
    assert (plan["refused"] is not None) == (verb == "pause")
    assert (store(stopped), world(stopped)) == before
