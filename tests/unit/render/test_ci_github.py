"""`render ci --provider github` on every example that builds images: the workflow's structure
(pins, permissions, job order, digests) read back from its text. actionlint and checkov read the
same text in tests/integration/render/test_ci_actionlint.py and test_ci_checkov.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.errors import RenderError
from shipyard.render import ACTIONS, github_workflow
from shipyard.spec import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parents[3]
BUILDING = ["normaldance", "salespot", "apricode"]
USES = re.compile(r"^\s*(?:- )?uses: (\S+)(.*)$")


def _render(example: str) -> tuple[str, dict[str, Any]]:
    path = f"examples/{example}/shipyard.yaml"
    text = github_workflow(load_spec(ROOT / path), path).text
    return text, yaml.safe_load(text)


@pytest.fixture(params=BUILDING)
def rendered(request: pytest.FixtureRequest) -> tuple[str, str, dict[str, Any]]:
    text, workflow = _render(request.param)
    return request.param, text, workflow


def _steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, spec in workflow["jobs"].items() for step in spec["steps"]]


def test_every_action_is_pinned_by_a_full_commit_sha_with_its_release_tag(
    rendered: tuple[str, str, dict[str, Any]],
) -> None:
    _, text, workflow = rendered
    uses = [USES.match(line) for line in text.splitlines() if USES.match(line)]
    assert len(uses) == sum(1 for _, step in _steps(workflow) if "uses" in step) > 0
    known = {a.uses: a.version for a in ACTIONS.values()}
    for match in uses:
        assert match is not None
        reference, comment = match.group(1), match.group(2)
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", reference), reference
        assert comment == f" # {known[reference]}", (reference, comment)
        assert re.fullmatch(r"v\d+\.\d+\.\d+", known[reference])


def test_the_pin_table_names_each_action_once_at_one_commit() -> None:
    repositories = [a.repository for a in ACTIONS.values()]
    assert len(set(repositories)) == len(repositories)
    assert len({a.sha for a in ACTIONS.values()}) == len(ACTIONS)


def test_permissions_are_read_only_but_where_a_job_needs_more(
    rendered: tuple[str, str, dict[str, Any]],
) -> None:
    _, _, workflow = rendered
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        granted = job["permissions"]
        assert granted["contents"] == "read", name
        if name.startswith("sign-"):
            assert granted["id-token"] == "write"  # cosign keyless: the job's OIDC token
        else:
            assert "id-token" not in granted, name
        assert set(granted) - {"contents", "id-token", "packages"} == set(), name


def test_the_jobs_run_in_the_pipelines_order(rendered: tuple[str, str, dict[str, Any]]) -> None:
    example, _, workflow = rendered
    jobs = workflow["jobs"]
    images = [name.removeprefix("build-") for name in jobs if name.startswith("build-")]
    assert images
    for image in images:
        assert set(jobs[f"build-{image}"]["needs"]) == {"validate", f"test-{image}"}
        assert jobs[f"sign-{image}"]["needs"] == [f"build-{image}"]
        assert f"sign-{image}" in jobs["staging"]["needs"]
        assert f"build-{image}" in jobs["production"]["needs"]
    assert jobs["smoke-staging"]["needs"] == ["staging"]
    assert "smoke-staging" in jobs["production"]["needs"]
    assert jobs["smoke-production"]["needs"] == ["production"]
    assert jobs["production"]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert jobs["production"]["environment"]["name"] == "production"
    assert jobs["staging"]["environment"]["name"] == "staging"
    assert "needs" not in jobs["validate"]
    # Every job reachable from the first: nothing runs on its own.
    for name, job in jobs.items():
        for need in job.get("needs", []):
            assert need in jobs, (example, name, need)


def test_the_build_tags_by_commit_and_semver_and_everything_after_uses_the_digest(
    rendered: tuple[str, str, dict[str, Any]],
) -> None:
    _, _, workflow = rendered
    jobs = workflow["jobs"]
    for name in [n for n in jobs if n.startswith("build-")]:
        steps = {step["uses"].split("@")[0]: step for step in jobs[name]["steps"] if "uses" in step}
        tags = steps["docker/metadata-action"]["with"]["tags"]
        assert "type=sha,format=long" in tags
        assert "type=semver,pattern={{version}}" in tags
        trivy = steps["aquasecurity/trivy-action"]["with"]
        assert trivy["severity"] == "HIGH,CRITICAL"
        assert trivy["exit-code"] == "1"
        assert trivy["image-ref"].endswith("@${{ steps.push.outputs.digest }}")
        assert jobs[name]["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"
        image = name.removeprefix("build-")
        sign = jobs[f"sign-{image}"]
        assert sign["env"]["IMAGE"].endswith(f"@${{{{ needs.build-{image}.outputs.digest }}}}")
        scripts = "\n".join(step.get("run", "") for step in sign["steps"])
        assert 'cosign sign --yes "$IMAGE"' in scripts
        assert "cosign attest --yes --type spdxjson" in scripts


def test_no_expression_is_pasted_into_a_script(rendered: tuple[str, str, dict[str, Any]]) -> None:
    _, _, workflow = rendered
    for job, step in _steps(workflow):
        assert "${{" not in step.get("run", ""), (job, step["name"])


def test_staging_deploys_each_digest_or_commits_it_to_the_gitops_overlay() -> None:
    _, normaldance = _render("normaldance")
    staging = normaldance["jobs"]["staging"]
    releases = [step for step in staging["steps"] if step["name"].startswith("Release ")]
    assert [s["name"] for s in releases] == [
        "Release api",
        "Release worker",  # runs the api's image: released from the same build
        "Release frontend",
        "Release solana-rpc-proxy",
    ]
    for step in releases:
        assert '--version "$DIGEST" --target kubernetes' in step["run"]
        assert "-e staging" in step["run"]
        assert step["env"]["DIGEST"].startswith("${{ needs.build-")
    _, apricode = _render("apricode")
    steps = apricode["jobs"]["production"]["steps"]
    pin = next(s for s in steps if s["name"].startswith("Pin the digests"))
    assert pin["working-directory"] == "gitops/deploy/apricode/stack/overlays/production"
    assert "kustomize edit set image" in pin["run"]
    assert apricode["jobs"]["staging"]["steps"][0]["with"]["repository"] == "apricode/deploy"


def test_contexts_are_read_from_the_spec_directory_in_the_repository() -> None:
    _, workflow = _render("normaldance")
    build = next(s for s in workflow["jobs"]["build-frontend"]["steps"] if s["name"] == "Build and push")
    assert build["with"]["context"] == "examples/normaldance/frontend"
    assert build["with"]["file"] == "examples/normaldance/frontend/Dockerfile"
    assert (
        workflow["jobs"]["test-frontend"]["steps"][1]["working-directory"] == "examples/normaldance/frontend"
    )
    _, apricode = _render("apricode")
    build = next(s for s in apricode["jobs"]["build-app"]["steps"] if s["name"] == "Build and push")
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert any("setup-qemu-action" in s.get("uses", "") for s in apricode["jobs"]["build-app"]["steps"])


def test_a_spec_without_builds_or_a_path_outside_the_repository_is_refused() -> None:
    with pytest.raises(RenderError, match="no service has a `build:` section"):
        github_workflow(load_spec(ROOT / "examples/demo/shipyard.yaml"))
    with pytest.raises(RenderError, match="inside the repository"):
        github_workflow(load_spec(ROOT / "examples/salespot/shipyard.yaml"), "../shipyard.yaml")


def test_services_sharing_an_image_must_share_its_build() -> None:
    text = """\
name: shop
services:
  api: {role: api, image: ghcr.io/acme/app:1.0.0, port: 80, build: {test: make test}}
  worker: {role: worker, image: ghcr.io/acme/app:1.0.0, build: {test: make other}}
environments: {staging: {}}
"""
    with pytest.raises(RenderError, match="different `build:`"):
        github_workflow(load_spec_text(text))


def test_ghcr_images_push_with_the_jobs_own_token() -> None:
    text = """\
name: shop
services:
  api: {role: api, image: ghcr.io/acme/app:1.0.0, port: 80, build: {test: make test}}
environments: {staging: {}}
"""
    workflow = yaml.safe_load(github_workflow(load_spec_text(text)).text)
    build = workflow["jobs"]["build-api"]
    assert build["permissions"] == {"contents": "read", "packages": "write"}
    login = next(s for s in build["steps"] if s["name"].startswith("Log in"))
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert "production" not in workflow["jobs"]
