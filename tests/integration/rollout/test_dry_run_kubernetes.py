"""`--dry-run` on a Kubernetes release: each verb says what it would send, and sends nothing.

The CLI runs in this process against a loopback API server replaying the Kubernetes API's recorded
answers (`support.kube_api`); a release of `app` 1.2.0 is applied first (through `ops.deploy`). A
dry run must leave the state store exactly as it was and reach the API server not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shipyard.cli import main
from shipyard.ops import Workspace
from shipyard.ops._releases import Deploy, KubeConnection, deploy, refresh_releases
from support.kube_api import (
    APP_ROLLOUT,
    RecordedAPI,
    answer_app_deploy,
    apricode_without_gitops,
    recorded_api,
    write_kubeconfig,
)

ROOT = Path(__file__).resolve().parents[3]
APRICODE = apricode_without_gitops()  # deploy --target kubernetes is refused under GitOps
TABLES = ("rollouts", "rollout_steps", "rollout_commands", "audit_log", "locks", "jobs")


@dataclass
class Cluster:
    api: RecordedAPI
    kubeconfig: Path
    database_url: str
    rollout_id: int

    def store(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of the tables a verb may write."""
        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return {
                    table: [
                        dict(row) for row in connection.execute(sa.text(f"SELECT * FROM {table}")).mappings()
                    ]
                    for table in TABLES
                }
        finally:
            engine.dispose()


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    database_url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SHIPYARD_DATABASE_URL", database_url)
    monkeypatch.setenv("SHIPYARD_ACTOR", "tester")
    with recorded_api() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"recorded": api.url}, current="recorded")
        answer_app_deploy(api)
        ws = Workspace.open(APRICODE, "production", database_url=database_url)
        applied = deploy(
            ws,
            Deploy(service="app", version="1.2.0", target="kubernetes"),
            kube=KubeConnection(str(kubeconfig)),
        )
        assert applied.rollout_id is not None
        # Argo's controller has paused the release on an inconclusive analysis; shipyard read that.
        api.answers.clear()
        api.answer("GET", APP_ROLLOUT, "rollout-app-paused.json")
        (read,) = refresh_releases(ws, service="app", kube=KubeConnection(str(kubeconfig)))
        assert read.kubernetes is not None
        assert read.kubernetes.phase == "Paused"
        api.requests.clear()
        api.answers.clear()
        # Every request would get an answer: a dry run that sent one would not fail for lack of it.
        api.answer("GET", APP_ROLLOUT, "rollout-app-paused.json")
        api.answer("PATCH", APP_ROLLOUT, "rollout-app-manually-paused.json")
        api.answer("PATCH", f"{APP_ROLLOUT}/status", "rollout-app-paused-promoted.json")
        yield Cluster(api, kubeconfig, database_url, applied.rollout_id)


def _shipyard(cluster: Cluster, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    kube = ["--target", "kubernetes", "--kubeconfig", str(cluster.kubeconfig), "-f", str(APRICODE)]
    capsys.readouterr()
    try:
        main([*args, *kube, "-e", "production"])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_deploy_dry_run_lists_the_objects_and_steps_and_sends_nothing(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    before = cluster.store()
    code, out, err = _shipyard(cluster, capsys, "deploy", "app", "--version", "1.3.0", "--dry-run")
    assert code == 0, out + err
    assert "dry run: deploy app (a new release, kubernetes, production); nothing is changed" in out
    assert "1.2.0 → 1.3.0 (canary)" not in out  # 1.2.0 never succeeded: no stable version is known
    assert "server-side apply Rollout/app" in out
    assert "then Argo Rollouts: set weight" in out
    assert cluster.api.requests == []
    assert cluster.store() == before

    code, out, err = _shipyard(
        cluster, capsys, "deploy", "app", "--version", "1.3.0", "--dry-run", "-o", "json"
    )
    assert code == 0, out + err
    plan = json.loads(out)
    assert (plan["verb"], plan["target"], plan["rollout_id"], plan["candidate"]) == (
        "deploy",
        "kubernetes",
        None,
        "1.3.0",
    )
    rollout = next(r for r in plan["requests"] if r["path"] == APP_ROLLOUT)
    assert rollout["method"] == "PATCH"
    assert rollout["content_type"] == "application/apply-patch+yaml"
    assert rollout["body"]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.3.0")
    assert cluster.api.requests == []
    assert cluster.store() == before


PATCHES = {
    # As the real promote of this paused Rollout (tests/unit/cli/test_rollout_kubernetes.py).
    "promote": (f"{APP_ROLLOUT}/status", {"status": {"pauseConditions": None}}),
    "abort": (f"{APP_ROLLOUT}/status", {"status": {"abort": True}}),
    "retry": (f"{APP_ROLLOUT}/status", {"status": {"abort": False}}),
    "pause": (APP_ROLLOUT, {"spec": {"paused": True}}),
    "resume": (APP_ROLLOUT, {"spec": {"paused": False}}),
}


@pytest.mark.parametrize("verb", ["promote", "abort", "pause", "resume", "retry"])
def test_a_steering_dry_run_names_its_patch_and_sends_nothing(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    before = cluster.store()
    code, out, err = _shipyard(cluster, capsys, "rollout", verb, "app", "--dry-run", "-o", "json")
    assert code == 0, out + err
    plan = json.loads(out)
    assert (plan["verb"], plan["target"], plan["rollout_id"], plan["refused"]) == (
        verb,
        "kubernetes",
        cluster.rollout_id,
        None,
    )
    path, body = PATCHES[verb]
    assert [(r["method"], r["path"], r["body"]) for r in plan["requests"]] == [("PATCH", path, body)]
    assert all(r["content_type"] == "application/merge-patch+json" for r in plan["requests"])
    code, out, err = _shipyard(cluster, capsys, "rollout", verb, "app", "--dry-run")
    assert code == 0, out + err
    assert f"dry run: {verb} app (release {cluster.rollout_id}, kubernetes, production)" in out
    assert f"PATCH {path}" in out
    assert cluster.api.requests == []
    assert cluster.store() == before


def test_a_rollback_dry_run_is_refused_as_the_rollback_is(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    before = cluster.store()
    code, _out, err = _shipyard(cluster, capsys, "rollout", "rollback", "app", "--dry-run")
    assert code == 2
    assert "rollback is not supported on kubernetes yet" in err
    assert cluster.api.requests == []
    assert cluster.store() == before
