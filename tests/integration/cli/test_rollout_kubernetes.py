"""`shipyard deploy|rollout … --target kubernetes` through the real CLI, against recorded API answers.

The CLI runs in this process (`shipyard.cli.main`, so errors become messages exactly as for a
user) with a kubeconfig pointing at a loopback server that replays the Kubernetes API's recorded
responses (`support.kube_api`); the official client, the driver and the state store (SQLite in
a temp dir) are the real ones.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from shipyard.cli import _rollout, main
from shipyard.state import RolloutRow, RolloutStepRow, open_engine, session_factory
from support.kube_api import (
    TOKEN,
    RecordedAPI,
    apricode_without_gitops,
    recorded_api,
    recording,
    write_kubeconfig,
)

ROOT = Path(__file__).resolve().parents[3]
APRICODE = apricode_without_gitops()  # deploy --target kubernetes is refused under GitOps
ROLLOUT = "/apis/argoproj.io/v1alpha1/namespaces/production/rollouts/app"
APPLIED = [
    ("/api/v1/namespaces/production/configmaps/app-env", "apply-configmap-app-env.json"),
    ("/api/v1/namespaces/production/services/app", "apply-service-app.json"),
    ("/api/v1/namespaces/production/services/app-canary", "apply-service-app-canary.json"),
    ("/apis/networking.k8s.io/v1/namespaces/production/ingresses/app", "apply-ingress-app.json"),
    (
        "/apis/argoproj.io/v1alpha1/namespaces/production/analysistemplates/app",
        "apply-analysistemplate-app.json",
    ),
    (ROLLOUT, "apply-rollout-app.json"),
    (
        "/apis/autoscaling/v2/namespaces/production/horizontalpodautoscalers/app",
        "apply-horizontalpodautoscaler-app.json",
    ),
    ("/apis/policy/v1/namespaces/production/poddisruptionbudgets/app", "apply-poddisruptionbudget-app.json"),
]
OBJECTS = [
    "ConfigMap/app-env",
    "Service/app",
    "Service/app-canary",
    "Ingress/app",
    "AnalysisTemplate/app",
    "Rollout/app",
    "HorizontalPodAutoscaler/app",
    "PodDisruptionBudget/app",
]


class Shipyard:
    """Runs `shipyard ARGS` in this process against one state store and one kubeconfig."""

    def __init__(self, tmp: Path, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.database = f"sqlite:///{tmp / 'state.db'}"
        self.kubeconfig = kubeconfig
        self.capsys = capsys

    def __call__(self, *args: str, kube: bool = True) -> tuple[int, str, str]:
        """`shipyard ARGS`, with `--target kubernetes`, the kubeconfig and the spec when `kube`."""
        extra = ["--target", "kubernetes", "--kubeconfig", str(self.kubeconfig)] if kube else []
        spec = ["-f", str(APRICODE), "-e", "production"] if kube else []
        self.capsys.readouterr()
        try:
            main([*args, *extra, *spec, "--database-url", self.database])
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        out, err = self.capsys.readouterr()
        return code, out, err

    def releases(self) -> list[RolloutRow]:
        with session_factory(open_engine(self.database))() as session:
            return list(session.scalars(select(RolloutRow).order_by(RolloutRow.id)))

    def steps(self, rollout_id: int) -> list[RolloutStepRow]:
        with session_factory(open_engine(self.database))() as session:
            return list(
                session.scalars(
                    select(RolloutStepRow)
                    .where(RolloutStepRow.rollout_id == rollout_id)
                    .order_by(RolloutStepRow.seq)
                )
            )


@pytest.fixture
def api() -> Iterator[RecordedAPI]:
    with recorded_api() as recorded:
        yield recorded


@pytest.fixture
def shipyard(
    api: RecordedAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Shipyard:
    monkeypatch.setenv("SHIPYARD_ACTOR", "tester")
    monkeypatch.setattr(_rollout, "KUBE_POLL_S", 0.0)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"recorded": api.url}, current="recorded")
    return Shipyard(tmp_path, kubeconfig, capsys)


def _answer_deploy(api: RecordedAPI, *, live: str | dict[str, Any] | None = None) -> None:
    """The Rollout as it is before the release (None: there is none yet), then the applies."""
    if live is None:
        api.answer("GET", ROLLOUT, "status-404-rollout.json", status=404)
    else:
        api.answer("GET", ROLLOUT, live)
    for path, answer in APPLIED:
        api.answer("PATCH", path, answer)


def _deployed(api: RecordedAPI, shipyard: Shipyard) -> RolloutRow:
    _answer_deploy(api)
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0")
    assert code == 0, out + err
    api.requests.clear()
    api.answers.clear()
    (row,) = shipyard.releases()
    return row


# --- deploy --------------------------------------------------------------------------------------


def test_deploy_records_the_release_and_applies_its_objects(api: RecordedAPI, shipyard: Shipyard) -> None:
    _answer_deploy(api)
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0")
    assert code == 0, out + err
    assert api.sent() == [("GET", ROLLOUT)] + [("PATCH", path) for path, _ in APPLIED]
    assert {r.headers["authorization"] for r in api.requests} == {f"Bearer {TOKEN}"}  # the kubeconfig's
    rollout = api.requests[6].body
    assert rollout["kind"] == "Rollout"
    assert rollout["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/apricode-exchange:1.2.0"
    )
    (row,) = shipyard.releases()
    assert (row.target, row.service, row.environment, row.candidate, row.stable) == (
        "kubernetes",
        "app",
        "production",
        "1.2.0",
        None,
    )
    assert (row.strategy, row.phase, row.actor, row.finished_at) == ("canary", "applied", "cli:tester", None)
    assert row.state["kubernetes"]["namespace"] == "production"
    (step,) = shipyard.steps(row.id)
    assert step.action == {"type": "Apply", "version": "1.2.0", "namespace": "production", "objects": OBJECTS}
    assert (step.status, step.outcome) == ("done", {"type": "Applied", "objects": OBJECTS})
    assert step.finished_at is not None
    assert f"release {row.id}: app 1.2.0 applied to production" in out
    assert "rollout status app --target kubernetes --watch" in out


def test_deploy_over_a_live_version_records_it_as_the_stable_one(
    api: RecordedAPI, shipyard: Shipyard
) -> None:
    live = recording("rollout-app-healthy.json")
    live["spec"]["template"]["spec"]["containers"][0]["image"] = (
        "registry.example.com/apricode-exchange:1.1.0"
    )
    _answer_deploy(api, live=live)
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0")
    assert code == 0, out + err
    (row,) = shipyard.releases()
    assert (row.stable, row.candidate) == ("1.1.0", "1.2.0")


def test_deploy_of_the_live_version_is_refused_and_changes_nothing(
    api: RecordedAPI, shipyard: Shipyard
) -> None:
    _answer_deploy(api, live="rollout-app-healthy.json")  # 1.2.0 is live
    code, _out, err = shipyard("deploy", "app", "--version", "1.2.0")
    assert code == 2
    assert "version '1.2.0' of 'app' is already live in production" in err
    assert api.sent() == [("GET", ROLLOUT)]  # read, nothing applied
    assert shipyard.releases() == []


def test_an_apply_that_fails_is_recorded_as_failed(api: RecordedAPI, shipyard: Shipyard) -> None:
    _answer_deploy(api)
    template = "/apis/argoproj.io/v1alpha1/namespaces/production/analysistemplates/app"
    api.answers[("PATCH", template)] = []
    api.answer("PATCH", template, "status-404-no-crd.json", status=404)
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0")
    assert code == 1
    assert "cannot apply AnalysisTemplate production/app: not found" in err
    assert "Argo Rollouts (its CRDs) is not installed" in err
    assert "Traceback" not in out + err
    (row,) = shipyard.releases()
    assert (row.outcome, row.finished_at is not None) == ("failed", True)
    assert row.reason is not None
    assert "AnalysisTemplate" in row.reason
    (step,) = shipyard.steps(row.id)
    assert (step.action["type"], step.status, step.outcome["type"]) == ("Apply", "failed", "Failed")


def test_watch_ends_with_exit_0_once_healthy(api: RecordedAPI, shipyard: Shipyard) -> None:
    _answer_deploy(api)
    for answer in ("rollout-app-progressing.json", "rollout-app-paused.json", "rollout-app-healthy.json"):
        api.answer("GET", ROLLOUT, answer)
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0", "--watch")
    assert code == 0, out + err
    lines = [line.strip() for line in out.splitlines()]
    progressing = lines.index(
        "Progressing: step 3/7, weights 75/25 (stable/new), ready 5/5 — more replicas need to be updated"
    )
    paused = lines.index(
        "Paused: step 4/7, weights 75/25 (stable/new), ready 5/5 [paused] — InconclusiveAnalysisRun"
    )
    healthy = lines.index("Healthy: step 7/7, weights 100/0 (stable/new), ready 5/5")
    assert progressing < paused < healthy
    assert lines[-1] == "release 1: succeeded (1.2.0 is the stable version)"
    (row,) = shipyard.releases()
    assert (row.outcome, row.phase, row.finished_at is not None) == ("succeeded", "Healthy", True)
    steps = shipyard.steps(row.id)
    assert [(s.action["type"], s.status) for s in steps] == [("Apply", "done"), ("Finish", "done")]
    assert steps[1].action["outcome"] == "succeeded"
    assert api.sent().count(("GET", ROLLOUT)) == 4  # the look before, then three status reads


def test_watch_waits_for_argo_to_see_the_new_spec(api: RecordedAPI, shipyard: Shipyard) -> None:
    _answer_deploy(api)
    stale = recording("rollout-app-healthy.json")
    stale["status"]["observedGeneration"] = "2"  # the status is still the previous spec's
    api.answer("GET", ROLLOUT, stale)
    api.answer("GET", ROLLOUT, "rollout-app-healthy.json")
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0", "--watch")
    assert code == 0, out + err
    assert "Healthy: step 7/7, weights 100/0 (stable/new), ready 5/5 (Argo Rollouts has not seen" in out
    assert api.sent().count(("GET", ROLLOUT)) == 3  # the stale read did not end the release
    (row,) = shipyard.releases()
    assert row.outcome == "succeeded"
    # The release and its steps, as `rollout history` shows them.
    code, out, err = shipyard("rollout", "history", "app", "--steps", str(row.id), "-o", "json", kube=False)
    assert code == 0, out + err
    assert [(s["action"]["type"], s["status"]) for s in json.loads(out)] == [
        ("Apply", "done"),
        ("Finish", "done"),
    ]
    code, out, err = shipyard("rollout", "status", "-o", "json", kube=False)  # from the store alone
    assert code == 0, out + err
    (data,) = json.loads(out)
    assert (data["target"], data["candidate"], data["outcome"]) == ("kubernetes", "1.2.0", "succeeded")
    assert data["weights"] == {"stable": 100, "candidate": 0}
    assert data["kubernetes"]["objects"] == OBJECTS


def test_watch_ends_non_zero_when_argo_aborts_the_release(api: RecordedAPI, shipyard: Shipyard) -> None:
    _answer_deploy(api)
    for answer in ("rollout-app-progressing.json", "rollout-app-aborted.json"):
        api.answer("GET", ROLLOUT, answer)
    code, out, _err = shipyard("deploy", "app", "--version", "1.2.0", "--watch")
    assert code == 1
    assert "Degraded: step 1/7, weights 100/0 (stable/new), ready 5/5 [aborted]" in out
    assert 'Metric "error-rate" assessed Failed' in out
    (row,) = shipyard.releases()
    assert row.outcome == "rolled_back"  # Argo's analysis aborted it, not a person
    assert row.reason is not None
    assert row.reason.startswith("RolloutAborted")
    assert out.strip().splitlines()[-1].startswith("release 1: rolled_back (RolloutAborted")


# --- steering ------------------------------------------------------------------------------------


def test_promote_clears_the_pause_and_is_recorded(api: RecordedAPI, shipyard: Shipyard) -> None:
    row = _deployed(api, shipyard)
    api.answer("GET", ROLLOUT, "rollout-app-paused.json")
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-paused-promoted.json")
    code, out, err = shipyard("rollout", "promote", "app")
    assert code == 0, out + err
    assert api.sent() == [("GET", ROLLOUT), ("PATCH", f"{ROLLOUT}/status")]
    patch = api.requests[1]
    assert patch.headers["content-type"] == "application/merge-patch+json"
    assert patch.body == {"status": {"pauseConditions": None}}
    assert f"promote: release {row.id} of app:" in out
    promote = shipyard.steps(row.id)[-1]
    assert (promote.action["type"], promote.action["actor"], promote.status) == (
        "Promote",
        "cli:tester",
        "done",
    )
    assert promote.outcome is not None
    assert promote.outcome["pause_reasons"] == []


def test_abort_sets_abort_and_the_release_ends_aborted(api: RecordedAPI, shipyard: Shipyard) -> None:
    row = _deployed(api, shipyard)
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-abort-accepted.json")
    code, out, err = shipyard("rollout", "abort", "app")
    assert code == 0, out + err
    assert api.sent() == [("PATCH", f"{ROLLOUT}/status")]
    assert api.requests[0].body == {"status": {"abort": True}}
    assert shipyard.steps(row.id)[-1].action["type"] == "Abort"
    # The next status read sees Argo's controller done with it: a person aborted it.
    api.answer("GET", ROLLOUT, "rollout-app-aborted.json")
    code, out, err = shipyard("rollout", "status", "app", "-o", "json")
    assert code == 0, out + err
    (data,) = json.loads(out)
    assert (data["target"], data["outcome"], data["phase"]) == ("kubernetes", "aborted", "Degraded")
    assert data["weights"] == {"stable": 100, "candidate": 0}
    assert data["kubernetes"]["aborted"] is True


def test_retry_clears_abort(api: RecordedAPI, shipyard: Shipyard) -> None:
    row = _deployed(api, shipyard)
    api.answer("PATCH", f"{ROLLOUT}/status", "rollout-app-retried.json")
    code, out, err = shipyard("rollout", "retry", "app")
    assert code == 0, out + err
    assert api.requests[0].body == {"status": {"abort": False}}
    # Right after the retry the status still reads Degraded: the release is not ended by it.
    api.answer("GET", ROLLOUT, "rollout-app-retried.json")
    code, out, err = shipyard("rollout", "status", "app", "-o", "json")
    (data,) = json.loads(out)
    assert (data["id"], data["outcome"], data["finished_at"]) == (row.id, None, None)


def test_pause_and_resume_set_spec_paused(api: RecordedAPI, shipyard: Shipyard) -> None:
    row = _deployed(api, shipyard)
    api.answer("PATCH", ROLLOUT, "rollout-app-manually-paused.json")
    code, out, err = shipyard("rollout", "pause", "app")
    assert code == 0, out + err
    assert api.requests[-1].body == {"spec": {"paused": True}}
    assert api.requests[-1].headers["content-type"] == "application/merge-patch+json"
    assert "[paused]" in out
    api.answers.clear()
    api.answer("PATCH", ROLLOUT, "rollout-app-manually-paused-unpaused.json")
    code, out, err = shipyard("rollout", "resume", "app")
    assert code == 0, out + err
    assert api.requests[-1].body == {"spec": {"paused": False}}
    assert [s.action["type"] for s in shipyard.steps(row.id)] == ["Apply", "Pause", "Resume"]


def test_rollback_on_kubernetes_says_it_is_not_supported(api: RecordedAPI, shipyard: Shipyard) -> None:
    _deployed(api, shipyard)
    code, _out, err = shipyard("rollout", "rollback", "app")
    assert code == 2
    assert "rollback is not supported on kubernetes yet" in err
    assert "shipyard rollout abort app --target kubernetes" in err
    assert api.requests == []


def test_local_verbs_refuse_a_release_that_runs_on_kubernetes(api: RecordedAPI, shipyard: Shipyard) -> None:
    row = _deployed(api, shipyard)
    code, _out, err = shipyard("rollout", "abort", "app", "-f", str(APRICODE), kube=False)
    assert code == 2
    assert f"release {row.id} of 'app' runs on kubernetes: add `--target kubernetes`" in err
    assert [s.action["type"] for s in shipyard.steps(row.id)] == ["Apply"]


def test_a_failed_command_is_recorded_as_failed(api: RecordedAPI, shipyard: Shipyard) -> None:
    row = _deployed(api, shipyard)
    api.answer("PATCH", f"{ROLLOUT}/status", "status-409-conflict.json", status=409)
    code, _out, err = shipyard("rollout", "abort", "app")
    assert code == 1
    assert "cannot abort Rollout production/app: conflict" in err
    abort = shipyard.steps(row.id)[-1]
    assert (abort.action["type"], abort.status, abort.outcome["type"]) == ("Abort", "failed", "Failed")


# --- the cluster cannot be reached ---------------------------------------------------------------


def test_a_missing_kubeconfig(shipyard: Shipyard, tmp_path: Path) -> None:
    shipyard.kubeconfig = tmp_path / "nope" / "config"
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0")
    assert code == 1
    assert f"cannot read the kubeconfig {shipyard.kubeconfig}: no such file" in err
    assert "--kubeconfig" in err
    assert "Traceback" not in out + err
    assert shipyard.releases() == []


def test_a_kubeconfig_without_the_context_asked_for(
    api: RecordedAPI, shipyard: Shipyard, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = shipyard("rollout", "status", "app", "--context", "staging")
    assert code == 1
    assert f"cannot use the kubeconfig {shipyard.kubeconfig} (context 'staging')" in err
    assert "Traceback" not in out + err
    assert api.requests == []


def test_a_kubeconfig_that_is_not_yaml(shipyard: Shipyard, tmp_path: Path) -> None:
    shipyard.kubeconfig.write_text("clusters: [\n  token: secret-value\n")
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0")
    assert code == 1
    assert "is not valid YAML" in err
    assert "secret-value" not in out + err


def test_the_context_option_picks_the_cluster(api: RecordedAPI, shipyard: Shipyard, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    write_kubeconfig(shipyard.kubeconfig, {"down": closed, "recorded": api.url}, current="down")
    _answer_deploy(api)
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0")
    assert code == 3  # unavailable (errors.KubernetesUnreachable)
    assert f"cannot read Rollout production/app: the Kubernetes API at {closed} is unreachable" in err
    assert "Traceback" not in out + err
    assert shipyard.releases() == []  # nothing recorded, nothing applied
    assert api.requests == []
    code, out, err = shipyard("deploy", "app", "--version", "1.2.0", "--context", "recorded")
    assert code == 0, out + err
    assert len(api.requests) == 1 + len(APPLIED)


def test_a_cluster_without_argo_rollouts_gets_nothing_applied(api: RecordedAPI, shipyard: Shipyard) -> None:
    api.answer("GET", ROLLOUT, "status-404-no-crd.json", status=404)  # no such kind, not no such object
    code, _out, err = shipyard("deploy", "app", "--version", "1.2.0")
    assert code == 1
    assert "cannot read Rollout production/app: not found" in err
    assert "Argo Rollouts (its CRDs) is not installed" in err
    assert api.sent() == [("GET", ROLLOUT)]
    assert shipyard.releases() == []
