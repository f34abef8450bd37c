"""`ops.promote` on a real SQLite store, for what needs no process and no cluster: the Kubernetes
path without GitOps (the digest deployed to --to's cluster, as a dry run: planned from the spec
alone), and the refusals that come before anything runs. Releases in staging are recorded rows, as
`deploy --target kubernetes` and Argo Rollouts leave them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from shipyard.errors import PromotionRefused, UnknownEnvironmentError, UserError
from shipyard.ops import Promote, Promoted, Promotion, Workspace, promote, promotions
from shipyard.spec import load_spec
from shipyard.state import RolloutRow, open_engine, session_factory, utcnow
from support.kube_api import apricode_without_gitops

DIGEST = "sha256:" + "7a" * 32
REPOSITORY = "registry.example.com/apricode-exchange"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    spec = apricode_without_gitops()
    return Workspace(
        spec_path=spec,
        environment="production",
        opened_sessions=session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}")),
        actor="test",
        state_dir=tmp_path / "state",
    )


def _record(
    ws: Workspace, environment: str, version: str, *, outcome: str = "succeeded", image: str = ""
) -> int:
    stack = ws.spec.stack(environment)
    data = stack.model_dump(mode="json", by_alias=True)
    if image:
        data["services"]["app"]["image"] = image
    with ws.sessions() as session, session.begin():
        row = RolloutRow(
            service="app", environment=environment, target="kubernetes", strategy="canary", stable=None,
            candidate=version, phase="Healthy", outcome=outcome, actor="test", stack=data,
            state={"kubernetes": {}}, finished_at=utcnow(),
        )  # fmt: skip
        session.add(row)
        session.flush()
        return row.id


def _request(**fields: object) -> Promote:
    return Promote.model_validate(
        {"service": "app", "from_environment": "staging", "to_environment": "production", **fields}
    )


def test_the_digest_is_what_production_would_release(ws: Workspace) -> None:
    staging = _record(ws, "staging", DIGEST)
    planned = promote(ws, _request(dry_run=True))
    assert isinstance(planned, Promoted)
    assert (planned.path, planned.digest, planned.image) == ("kubernetes", DIGEST, f"{REPOSITORY}@{DIGEST}")
    assert planned.source == Promotion(environment="staging", release=staging, version=DIGEST)
    assert planned.plan is not None
    assert (planned.plan.environment, planned.plan.candidate) == ("production", DIGEST)
    rollout = next(r["body"] for r in planned.plan.requests if r["body"]["kind"] == "Rollout")
    images = {c["image"] for c in rollout["spec"]["template"]["spec"]["containers"]}
    assert images == {f"{REPOSITORY}@{DIGEST}"}
    assert planned.summary().startswith(
        f"dry run: promote app {DIGEST} (staging release {staging}) to production"
    )
    assert promotions(ws.sessions, "app") == {}  # a dry run audits nothing


def test_the_newest_success_is_promoted_not_a_later_failure(ws: Workspace) -> None:
    passed = _record(ws, "staging", DIGEST)
    _record(ws, "staging", "sha256:" + "00" * 32, outcome="rolled_back")
    assert promote(ws, _request(dry_run=True)).source.release == passed


def test_a_release_by_tag_has_no_digest_and_is_refused(ws: Workspace) -> None:
    _record(ws, "staging", "1.2.0")
    with pytest.raises(PromotionRefused, match="names no digest") as refused:
        promote(ws, _request(dry_run=True))
    assert (refused.value.exit_code, refused.value.http_status) == (2, 409)


def test_nothing_passed_in_the_source(ws: Workspace) -> None:
    _record(ws, "staging", DIGEST, outcome="failed")
    with pytest.raises(PromotionRefused, match="no successful release in 'staging'"):
        promote(ws, _request(dry_run=True))


def test_production_running_the_digest_already(ws: Workspace) -> None:
    _record(ws, "staging", DIGEST)
    production = _record(ws, "production", DIGEST)
    with pytest.raises(PromotionRefused, match=f"already runs 'app' {DIGEST} \\(release {production}\\)"):
        promote(ws, _request(dry_run=True))


def test_a_digest_from_another_repository_is_refused(ws: Workspace) -> None:
    _record(ws, "staging", DIGEST, image="ghcr.io/someone-else/app:1.0.0")
    with pytest.raises(PromotionRefused, match=re.escape("names an image in ghcr.io/someone-else/app")):
        promote(ws, _request(dry_run=True))


def test_gitops_dir_without_gitops_is_refused(ws: Workspace, tmp_path: Path) -> None:
    _record(ws, "staging", DIGEST)
    with pytest.raises(UserError, match="has no `gitops:`"):
        promote(ws, _request(dry_run=True, gitops_dir=str(tmp_path)))


@pytest.mark.parametrize(
    ("fields", "error", "said"),
    [
        ({"to_environment": "staging"}, UserError, "--from and --to both name 'staging'"),
        ({"from_environment": "stagin"}, UnknownEnvironmentError, "did you mean 'staging'"),
        ({"to_environment": "prod"}, UnknownEnvironmentError, "did you mean 'production'"),
        ({"service": "ap"}, UserError, "did you mean 'app'"),
    ],
)
def test_unknown_names(ws: Workspace, fields: dict[str, str], error: type[Exception], said: str) -> None:
    with pytest.raises(error, match=said):
        promote(ws, _request(**fields))


def test_a_helm_gitops_tree_is_refused(tmp_path: Path) -> None:
    spec = yaml.safe_load(Path(apricode_without_gitops()).read_text())
    spec["gitops"] = {"repo": "https://example.com/deploy.git", "path": "deploy", "source": "helm"}
    path = tmp_path / "shipyard.yaml"
    path.write_text(yaml.safe_dump(spec))
    ws = Workspace(
        spec_path=path,
        opened_sessions=session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}")),
        actor="test",
        state_dir=tmp_path / "state",
    )
    assert load_spec(path).stack("production").gitops is not None
    _record(ws, "staging", DIGEST)
    with pytest.raises(UserError, match=re.escape("gitops.source is helm")):
        promote(ws, _request(gitops_dir=str(tmp_path)))
