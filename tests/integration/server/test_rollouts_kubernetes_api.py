"""Steering a Kubernetes release from the API acts on the cluster: `POST /rollouts/{service}/promote`
and `/abort` patch the Rollout as `shipyard rollout promote|abort --target kubernetes` does.

The cluster is a loopback API server replaying the Kubernetes API's recorded answers
(`support.kube_api`); the official client, the driver, the state store (SQLite in a temp dir) and
the app are the real ones. The release is first applied through `ops.deploy` (as a deploy job's
child would), then steered over HTTP with an admin token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from shipyard.ops import Deploy, KubeConnection, Workspace, deploy
from shipyard.server import ServerConfig, create_app
from shipyard.state import (
    AuditRow,
    JobRow,
    RolloutCommandRow,
    RolloutRow,
    RolloutStepRow,
    open_engine,
    session_factory,
)
from shipyard.tokens import create_token
from support.kube_api import (
    APP_ROLLOUT,
    TOKEN,
    RecordedAPI,
    answer_app_deploy,
    apricode_without_gitops,
    recorded_api,
    write_kubeconfig,
)

ROOT = Path(__file__).resolve().parents[3]
APRICODE = apricode_without_gitops()  # deploy --target kubernetes is refused under GitOps
ROLLOUT = APP_ROLLOUT


@dataclass
class Cluster:
    """A Kubernetes release of `app` 1.2.0 recorded in the store and applied to the replayed API."""

    api: RecordedAPI
    kubeconfig: Path
    database_url: str
    rollout_id: int

    def sessions(self) -> Any:
        return session_factory(open_engine(self.database_url))

    def steps(self) -> list[RolloutStepRow]:
        with self.sessions()() as session:
            return list(
                session.scalars(
                    select(RolloutStepRow)
                    .where(RolloutStepRow.rollout_id == self.rollout_id)
                    .order_by(RolloutStepRow.seq)
                )
            )

    def release(self) -> RolloutRow:
        with self.sessions()() as session:
            row = session.get(RolloutRow, self.rollout_id)
            assert row is not None
            return row

    def audit(self, action: str) -> list[tuple[str, str, dict[str, Any] | None]]:
        with self.sessions()() as session:
            rows = session.scalars(select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id))
            return [(row.actor, row.outcome, row.after) for row in rows]

    def count(self, table: type[Any]) -> int:
        with self.sessions()() as session:
            return len(list(session.scalars(select(table))))


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(tmp_path / "state"))
    with recorded_api() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"recorded": api.url}, current="recorded")
        database_url = f"sqlite:///{tmp_path / 'state.db'}"
        answer_app_deploy(api)
        ws = Workspace.open(APRICODE, "production", database_url=database_url, actor="token:deployer")
        applied = deploy(
            ws,
            Deploy(service="app", version="1.2.0", target="kubernetes"),
            kube=KubeConnection(str(kubeconfig)),
        )
        assert applied.rollout_id is not None
        assert (applied.phase, applied.outcome) == ("applied", None)
        api.requests.clear()
        api.answers.clear()
        yield Cluster(api, kubeconfig, database_url, applied.rollout_id)


def _admin(sessions: Any) -> dict[str, str]:
    with sessions() as session:
        return {"Authorization": f"Bearer {create_token(session, 'ops', 'admin')}"}


@pytest.fixture
def served(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The real app serving the spec; the kube client from the server's environment ($KUBECONFIG)."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    app = create_app(
        ServerConfig(
            database_url=cluster.database_url,
            environment="production",
            spec=APRICODE,
            job_log_dir=cluster.kubeconfig.parent / "jobs",
        )
    )
    admin = _admin(app.state.sessions)
    with TestClient(app) as client:
        yield client, admin
    app.state.engine.dispose()


@pytest.fixture
def configured(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The real app, its cluster given in its config (`serve --kubeconfig`), no $KUBECONFIG at all."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    app = create_app(
        ServerConfig(
            database_url=cluster.database_url,
            environment="production",
            spec=APRICODE,
            job_log_dir=cluster.kubeconfig.parent / "jobs",
            kube=KubeConnection(str(cluster.kubeconfig)),
        )
    )
    admin = _admin(app.state.sessions)
    with TestClient(app) as client:
        yield client, admin
    app.state.engine.dispose()


def test_promote_from_the_api_patches_the_rollout_and_is_recorded(
    cluster: Cluster, served: tuple[TestClient, dict[str, str]]
) -> None:
    client, admin = served
    api = cluster.api
    api.answer("GET", ROLLOUT, "rollout-app-paused.json")
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-paused-promoted.json")

    answered = client.post("/rollouts/app/promote", headers=admin)

    assert answered.status_code == 202, answered.text
    body = answered.json()
    assert (body["rollout_id"], body["command"], body["target"]) == (
        cluster.rollout_id,
        "promote",
        "kubernetes",
    )
    assert (body["controller_running"], body["job_id"]) == (True, None)  # Argo's controller acts on it
    assert body["applied"].startswith("Paused")
    # Exactly what `kubectl argo rollouts promote` sends: read the Rollout, clear its pause conditions.
    assert api.sent() == [("GET", ROLLOUT), ("PATCH", f"{ROLLOUT}/status")]
    patch = api.requests[1]
    assert patch.headers["content-type"] == "application/merge-patch+json"
    assert patch.body == {"status": {"pauseConditions": None}}
    assert {r.headers["authorization"] for r in api.requests} == {f"Bearer {TOKEN}"}
    # Recorded as a step of the release, and audited with the token's actor.
    promote = cluster.steps()[-1]
    assert (promote.action["type"], promote.action["actor"], promote.status) == (
        "Promote",
        "token:ops",
        "done",
    )
    assert promote.outcome is not None
    assert promote.outcome["pause_reasons"] == []
    assert [(actor, outcome) for actor, outcome, _ in cluster.audit("rollout.promote")] == [
        ("token:ops", "ok")
    ]
    assert cluster.release().state["kubernetes"]["status"]["phase"] == "Paused"
    # Nothing was queued for a local controller, and no job was started.
    assert cluster.count(RolloutCommandRow) == 0
    assert cluster.count(JobRow) == 0


def test_abort_from_the_api_sets_abort_and_the_release_ends_aborted(
    cluster: Cluster, served: tuple[TestClient, dict[str, str]]
) -> None:
    client, admin = served
    api = cluster.api
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-abort-accepted.json")

    answered = client.post("/rollouts/app/abort", headers=admin)

    assert answered.status_code == 202, answered.text
    assert (answered.json()["target"], answered.json()["job_id"]) == ("kubernetes", None)
    assert api.sent() == [("PATCH", f"{ROLLOUT}/status")]
    assert api.requests[0].headers["content-type"] == "application/merge-patch+json"
    assert api.requests[0].body == {"status": {"abort": True}}
    abort = cluster.steps()[-1]
    assert (abort.action["type"], abort.action["actor"], abort.status) == ("Abort", "token:ops", "done")
    assert cluster.release().state["kubernetes"]["aborted_by"] == "token:ops"
    assert [(actor, outcome) for actor, outcome, _ in cluster.audit("rollout.abort")] == [("token:ops", "ok")]
    assert cluster.count(RolloutCommandRow) == 0
    # The API shows the new step; the release's end is recorded at the next read of the Rollout.
    detail = client.get("/rollouts/app", headers=admin).json()
    assert (detail["target"], detail["finished_at"]) == ("kubernetes", None)
    assert [s["action"] for s in detail["steps"]] == ["Apply", "Abort"]


def test_a_command_the_cluster_refuses_is_a_502_and_recorded_as_failed(
    cluster: Cluster, served: tuple[TestClient, dict[str, str]]
) -> None:
    client, admin = served
    cluster.api.answer("PATCH", f"{ROLLOUT}/status", "status-409-conflict.json", status=409)

    answered = client.post("/rollouts/app/abort", headers=admin)

    assert answered.status_code == 502, answered.text
    assert "cannot abort Rollout production/app: conflict" in answered.json()["detail"]
    abort = cluster.steps()[-1]
    assert (abort.action["type"], abort.status, abort.outcome["type"]) == ("Abort", "failed", "Failed")
    assert [(actor, outcome) for actor, outcome, _ in cluster.audit("rollout.abort")] == [
        ("token:ops", "failed")
    ]


def test_the_server_steers_on_the_cluster_its_config_names(
    cluster: Cluster, configured: tuple[TestClient, dict[str, str]]
) -> None:
    client, admin = configured
    cluster.api.answer("GET", ROLLOUT, "rollout-app-paused.json")
    cluster.api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-paused-promoted.json")
    cluster.api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-abort-accepted.json")

    promoted = client.post("/rollouts/app/promote", headers=admin)
    aborted = client.post("/rollouts/app/abort", headers=admin)

    assert (promoted.status_code, aborted.status_code) == (202, 202), promoted.text + aborted.text
    assert [(r.method, r.path.split("?")[0], r.body) for r in cluster.api.requests] == [
        ("GET", ROLLOUT, None),
        ("PATCH", f"{ROLLOUT}/status", {"status": {"pauseConditions": None}}),
        ("PATCH", f"{ROLLOUT}/status", {"status": {"abort": True}}),
    ]
    assert [s.action["type"] for s in cluster.steps()] == ["Apply", "Promote", "Abort"]
