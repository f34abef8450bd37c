"""`render ci --provider github`: the repository's one GitHub Actions workflow, from the spec.

    validate            shipyard validate, and render (every environment)      every event
    test-<image>        the services' own test commands (`build.test`)         every event
    build-<image>       Buildx, tagged by commit SHA and SemVer, pushed; Trivy  pushes
                        scans the pushed digest and fails on HIGH/CRITICAL
    sign-<image>        an SBOM of the digest, cosign keyless signature and    pushes
                        SBOM attestation (the only job with id-token: write)
    staging             shipyard deploy of each digest (or, with gitops:, the  pushes
                        digests pinned in the staging overlay and pushed)
    smoke-staging       health through the ingress, and `build.smoke`          pushes
    production          the same digests, behind the `production` GitHub       v* tags
                        environment (its required reviewers), with the spec's
                        rollout (a canary: analysis rolls back by itself)

One image is built per repository that a service's `build:` names, so services that share an
image (an API and its worker) are released from one build. Everything after the build refers to
the image by its digest, so what is scanned, signed and deployed is exactly what was built.

Every action is pinned by the full commit SHA of a release tag (`# vX.Y.Z` says which); the
workflow's permissions are `contents: read`, and each job adds only what it needs. Expressions
reach `run:` scripts only through `env:`, never pasted into the script (shell injection).
Pure: the spec in, text out.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import RenderError
from ..spec import Build, ControlPlane, Spec, Stack, parse_image
from ._yaml import _Dumper

WORKFLOW_PATH = ".github/workflows/shipyard.yml"
"""Where the workflow goes in the repository: one per repository."""
RUNNER = "ubuntu-24.04"
"""A fixed runner image, so a new `ubuntu-latest` does not change the build under the workflow."""


@dataclass(frozen=True)
class PinnedAction:
    """A third-party action at the commit its release tag points at."""

    repository: str
    sha: str
    version: str

    @property
    def uses(self) -> str:
        return f"{self.repository}@{self.sha}"


# Each SHA is the commit of the release tag named beside it (see README, "The CI workflow").
ACTIONS = {
    "checkout": PinnedAction("actions/checkout", "11bd71901bbe5b1630ceea73d27597364c9af683", "v4.2.2"),
    "qemu": PinnedAction("docker/setup-qemu-action", "29109295f81e9208d7d86ff1c6c12d2833863392", "v3.6.0"),
    "buildx": PinnedAction(
        "docker/setup-buildx-action", "e468171a9de216ec08956ac3ada2f0791b6bd435", "v3.11.1"
    ),
    "login": PinnedAction("docker/login-action", "74a5d142397b4f367a81961eba4e8cd7edddf772", "v3.4.0"),
    "metadata": PinnedAction("docker/metadata-action", "902fa8ec7d6ecbf8d84d538b9b233a880e428804", "v5.7.0"),
    "build-push": PinnedAction(
        "docker/build-push-action", "263435318d21b8e681c14492fe198d362a7d2c83", "v6.18.0"
    ),
    # 0.35.0 or later: every earlier tag was force-pushed to a credential stealer in March 2026
    # (GHSA-69fq-xp46-6x23); a SHA pin is what keeps a moved tag out.
    "trivy": PinnedAction("aquasecurity/trivy-action", "57a97c7e7821a5776cebc9bb87c984fa69cba8f1", "v0.35.0"),
    "sbom": PinnedAction("anchore/sbom-action", "17ae1740179002c89186b61233e0f892c3118b11", "v0.23.0"),
    "cosign": PinnedAction("sigstore/cosign-installer", "d58896d6a1865668819e1d91763c7751a165e159", "v3.9.2"),
}


@dataclass(frozen=True)
class BuiltImage:
    """One image the workflow builds: its repository, the build, and the services that run it."""

    key: str
    """The job-name suffix: the first service (by name) whose `build:` builds it."""
    repository: str
    registry: str
    build: Build
    services: tuple[str, ...]


@dataclass(frozen=True)
class CiWorkflow:
    """The rendered workflow: where it goes in the repository, its text, and what it builds."""

    path: str
    text: str
    images: tuple[BuiltImage, ...]
    notes: tuple[str, ...]


def github_workflow(spec: Spec, spec_path: str = "shipyard.yaml", branch: str = "main") -> CiWorkflow:
    """The workflow for the repository holding the spec at `spec_path` (POSIX, from its root)."""
    spec_path = _repo_path(spec_path)
    spec_dir = posixpath.dirname(spec_path)
    stacks = {name: spec.stack(name) for name in spec.environments}
    source = stacks.get("production") or stacks.get("staging") or stacks[spec.environments[-1]]
    images = built_images(source)
    if not images:
        raise RenderError(
            f"{spec.file}: no service has a `build:` section, so there is nothing for CI to build;"
            " add one to each service whose image this repository builds, e.g. build: {context: .,"
            " test: npm test}"
        )
    deployed = [stacks[env] for env in ("staging", "production") if env in stacks]
    for stack in deployed:
        _same_repositories(stack, images)
    notes: list[str] = []
    for env in ("staging", "production"):
        if env not in stacks:
            notes.append(f"the spec has no {env!r} environment: the workflow has no {env} job")
    shipyard_image = (source.control_plane or ControlPlane()).image
    jobs: dict[str, Any] = {"validate": _validate_job(source)}
    for image in images:
        jobs[f"test-{image.key}"] = _test_job(image, spec_dir)
    for image in images:
        jobs[f"build-{image.key}"] = _build_job(image, spec_dir)
        jobs[f"sign-{image.key}"] = _sign_job(image)
    gate = [f"sign-{i.key}" for i in images]
    if "staging" in stacks:
        jobs["staging"] = _deploy_job(stacks["staging"], images, [*gate], "github.event_name == 'push'")
        jobs["smoke-staging"] = _smoke_job(stacks["staging"], images, spec_dir)
        gate = ["smoke-staging"]
    if "production" in stacks:
        jobs["production"] = _deploy_job(
            stacks["production"], images, gate, "startsWith(github.ref, 'refs/tags/v')"
        )
        jobs["smoke-production"] = _smoke_job(stacks["production"], images, spec_dir)
    workflow: dict[str, Any] = {
        "name": f"{spec.stack(spec.environments[0]).name}: test, build, sign, release",
        "on": {
            "push": {"branches": [branch], "tags": ["v*.*.*"]},
            "pull_request": {"branches": [branch]},
        },
        "permissions": {"contents": "read"},
        # A new push to a pull request cancels its older run; a push to the branch or a tag is a
        # group of its own (its commit), so nothing cancels a release half-way.
        "concurrency": {
            "group": "${{ github.workflow }}-${{ github.event.pull_request.number || github.sha }}",
            "cancel-in-progress": True,
        },
        "env": {"SHIPYARD_IMAGE": shipyard_image, "SHIPYARD_SPEC": spec_path},
        "jobs": jobs,
    }
    return CiWorkflow(WORKFLOW_PATH, _text(workflow, spec_path), tuple(images), tuple(notes))


def built_images(stack: Stack) -> list[BuiltImage]:
    """The images `stack`'s `build:` sections build, one per repository, in service order."""
    by_repository: dict[str, tuple[str, Build]] = {}
    for name in sorted(stack.services):
        service = stack.services[name]
        if service.build is None or service.image is None:
            continue
        repository = parse_image(service.image).repository
        first = by_repository.get(repository)
        if first is None:
            by_repository[repository] = (name, service.build)
        elif first[1] != service.build:
            raise RenderError(
                f"services {first[0]!r} and {name!r} run {repository} but give different `build:`"
                " sections; one image is built once: keep the build on one of them"
            )
    images = []
    for repository, (key, build) in by_repository.items():
        users = tuple(
            n
            for n in sorted(stack.services)
            if parse_image(stack.services[n].image or "").repository == repository
        )
        images.append(BuiltImage(key, repository, parse_image(repository).registry, build, users))
    return images


def _same_repositories(stack: Stack, images: list[BuiltImage]) -> None:
    for image in images:
        for name in image.services:
            service = stack.services.get(name)
            if service is None or service.image is None:
                continue
            if parse_image(service.image).repository != image.repository:
                raise RenderError(
                    f"services.{name}.image is {service.image!r} in {stack.environment} but CI builds"
                    f" {image.repository}: a digest is only the same image in the repository it was"
                    " pushed to; use one repository in every environment"
                )


def _repo_path(path: str) -> str:
    normal = posixpath.normpath(path.replace("\\", "/"))
    if normal.startswith(("/", "../")) or normal == "..":
        raise RenderError(
            f"--spec-path {path!r}: give the spec's path inside the repository, from its root"
            " (e.g. deploy/shipyard.yaml)"
        )
    return normal


def _in_repo(spec_dir: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(spec_dir, path)) if spec_dir else posixpath.normpath(path)


# --- steps ---------------------------------------------------------------------------------------


def _uses(action: str, name: str, with_: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "uses": ACTIONS[action].uses}
    step.update(extra)
    if with_:
        step["with"] = with_
    return step


def _checkout() -> dict[str, Any]:
    # No token left in .git/config for later steps to find.
    return _uses("checkout", "Check out", {"persist-credentials": False})


def _run(
    name: str, script: str, env: dict[str, str] | None = None, *, directory: str | None = None
) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name}
    if directory is not None:
        step["working-directory"] = directory
    if env:
        step["env"] = env
    step["run"] = script
    return step


def _shipyard(arguments: str, *, kube: bool = False) -> str:
    """shipyard itself, from its image (the repository's Dockerfile), over the checkout."""
    volumes = ' --volume "$RUNNER_TEMP/kubeconfig:/tmp/kubeconfig:ro"' if kube else ""
    env = " --env SHIPYARD_DATABASE_URL" if kube else ""
    return (
        'docker run --rm --user "$(id -u):$(id -g)" --volume "$GITHUB_WORKSPACE:/work" --workdir /work'
        f'{volumes}{env} "$SHIPYARD_IMAGE" {arguments}'
    )


def _login(image: BuiltImage) -> dict[str, Any]:
    if image.registry == "ghcr.io":
        credentials = {"username": "${{ github.actor }}", "password": "${{ secrets.GITHUB_TOKEN }}"}
    else:
        credentials = {
            "username": "${{ secrets.REGISTRY_USERNAME }}",
            "password": "${{ secrets.REGISTRY_PASSWORD }}",
        }
    return _uses("login", f"Log in to {image.registry}", {"registry": image.registry, **credentials})


def _write_permissions(image: BuiltImage) -> dict[str, str]:
    # GHCR takes the job's own token: pushing the image and its signature needs packages: write.
    return {"packages": "write"} if image.registry == "ghcr.io" else {}


# --- jobs ----------------------------------------------------------------------------------------


def _validate_job(stack: Stack) -> dict[str, Any]:
    render = [_shipyard('render kubernetes -f "$SHIPYARD_SPEC" -o rendered/kubernetes')]
    if stack.gitops is not None:
        render.append(_shipyard('render argocd -f "$SHIPYARD_SPEC" -o rendered/argocd'))
    return {
        "name": "shipyard validate and render",
        "runs-on": RUNNER,
        "timeout-minutes": 15,
        "permissions": {"contents": "read"},
        "steps": [
            _checkout(),
            _run("shipyard validate", _shipyard('validate -f "$SHIPYARD_SPEC"')),
            _run("shipyard render (every environment)", "\n".join(render)),
        ],
    }


def _test_job(image: BuiltImage, spec_dir: str) -> dict[str, Any]:
    return {
        "name": f"test {image.key}",
        "runs-on": RUNNER,
        "timeout-minutes": 30,
        "permissions": {"contents": "read"},
        "steps": [
            _checkout(),
            _run("Tests", image.build.test, directory=_in_repo(spec_dir, image.build.context)),
        ],
    }


def _build_job(image: BuiltImage, spec_dir: str) -> dict[str, Any]:
    build = image.build
    steps = [_checkout()]
    if any(platform != "linux/amd64" for platform in build.platforms):
        steps.append(_uses("qemu", "Set up QEMU (other architectures)"))
    tags = "\n".join(
        [
            "type=sha,format=long",
            "type=semver,pattern={{version}}",
            "type=semver,pattern={{major}}.{{minor}}",
        ]
    )
    steps += [
        _uses("buildx", "Set up Buildx"),
        _login(image),
        _uses(
            "metadata", "Tags: commit SHA and SemVer", {"images": image.repository, "tags": tags}, id="meta"
        ),
        _uses(
            "build-push",
            "Build and push",
            {
                "context": _in_repo(spec_dir, build.context),
                "file": _in_repo(spec_dir, build.dockerfile_path),
                "platforms": ",".join(build.platforms),
                "push": True,
                "tags": "${{ steps.meta.outputs.tags }}",
                "labels": "${{ steps.meta.outputs.labels }}",
            },
            id="push",
        ),
        _uses(
            "trivy",
            "Scan the pushed digest (fails on HIGH or CRITICAL)",
            {
                "image-ref": f"{image.repository}@${{{{ steps.push.outputs.digest }}}}",
                "severity": "HIGH,CRITICAL",
                "exit-code": "1",
                "vuln-type": "os,library",
                "format": "table",
            },
        ),
    ]
    return {
        "name": f"build {image.repository}",
        "needs": ["validate", f"test-{image.key}"],
        "if": "github.event_name == 'push'",
        "runs-on": RUNNER,
        "timeout-minutes": 60,
        "permissions": {"contents": "read", **_write_permissions(image)},
        "outputs": {"digest": "${{ steps.push.outputs.digest }}"},
        "steps": steps,
    }


def _sign_job(image: BuiltImage) -> dict[str, Any]:
    reference = f"{image.repository}@${{{{ needs.build-{image.key}.outputs.digest }}}}"
    return {
        "name": f"SBOM and signature of {image.repository}",
        "needs": [f"build-{image.key}"],
        "runs-on": RUNNER,
        "timeout-minutes": 15,
        # id-token: write here only: cosign exchanges the job's OIDC token for a Fulcio certificate.
        "permissions": {"contents": "read", "id-token": "write", **_write_permissions(image)},
        "env": {"IMAGE": reference},
        "steps": [
            _uses("cosign", "Install cosign"),
            _login(image),
            _uses(
                "sbom",
                "SBOM of the digest (SPDX)",
                {
                    "image": reference,
                    "format": "spdx-json",
                    "output-file": "sbom.spdx.json",
                    "upload-release-assets": False,
                },
            ),
            _run("Sign the digest (keyless)", 'cosign sign --yes "$IMAGE"'),
            _run(
                "Attest the SBOM",
                'cosign attest --yes --type spdxjson --predicate sbom.spdx.json "$IMAGE"',
            ),
        ],
    }


def _deploy_job(stack: Stack, images: list[BuiltImage], needs: list[str], condition: str) -> dict[str, Any]:
    env_name = stack.environment
    needs = [*needs, *(f"build-{i.key}" for i in images if f"build-{i.key}" not in needs)]
    digests = {f"DIGEST_{_env_key(i.key)}": f"${{{{ needs.build-{i.key}.outputs.digest }}}}" for i in images}
    job: dict[str, Any] = {
        "name": f"{env_name}: {_release_kind(stack)}",
        "needs": needs,
        "if": condition,
        "runs-on": RUNNER,
        "timeout-minutes": 45,
        "permissions": {"contents": "read"},
        # The environment's own secrets (KUBECONFIG, SHIPYARD_DATABASE_URL or GITOPS_TOKEN) are
        # released only to this job; production's required reviewers approve it first.
        "environment": _environment(stack),
        "concurrency": {"group": f"{stack.name}-{env_name}", "cancel-in-progress": False},
    }
    if stack.gitops is not None:
        job["steps"] = _gitops_steps(stack, images, digests)
        return job
    steps: list[dict[str, Any]] = [
        _checkout(),
        _run(
            "Kubeconfig",
            'install -m 600 /dev/null "$RUNNER_TEMP/kubeconfig"\n'
            'printf \'%s\' "$KUBECONFIG_DATA" > "$RUNNER_TEMP/kubeconfig"',
            {"KUBECONFIG_DATA": "${{ secrets.KUBECONFIG }}"},
        ),
    ]
    for image in images:
        for service in image.services:
            if service not in stack.services:
                continue
            steps.append(
                _run(
                    f"Release {service}",
                    _shipyard(
                        f'deploy {service} --version "$DIGEST" --target kubernetes --kubeconfig'
                        f' /tmp/kubeconfig -e {env_name} -f "$SHIPYARD_SPEC" --watch',
                        kube=True,
                    ),
                    {
                        "DIGEST": digests[f"DIGEST_{_env_key(image.key)}"],
                        "SHIPYARD_DATABASE_URL": "${{ secrets.SHIPYARD_DATABASE_URL }}",
                    },
                )
            )
    job["steps"] = steps
    return job


_GITHUB_REPO = re.compile(
    r"^(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)([^/]+/[^/]+?)(?:\.git)?/?$"
)


def _gitops_steps(stack: Stack, images: list[BuiltImage], digests: dict[str, str]) -> list[dict[str, Any]]:
    """With `gitops:`, a release is a commit: the digests pinned in the environment's overlay of
    the `render argocd` tree (a Kustomize `images:` entry, as `shipyard promote` writes), pushed."""
    gitops = stack.gitops
    assert gitops is not None
    repository = _GITHUB_REPO.match(gitops.repo)
    if repository is None:
        raise RenderError(
            f"gitops.repo {gitops.repo!r}: the GitHub workflow pushes the GitOps commit with"
            " actions/checkout, so the repository must be on github.com (https://github.com/OWNER/NAME.git)"
        )
    if gitops.source != "kustomize":
        raise RenderError(
            "gitops.source: helm: the workflow pins each digest in a Kustomize overlay (`images:`);"
            " use gitops.source: kustomize to release from CI"
        )
    overlay = posixpath.normpath(
        posixpath.join("gitops", gitops.path, "stack", "overlays", stack.environment)
    )
    checkout: dict[str, Any] = {
        "repository": repository.group(1),
        "token": "${{ secrets.GITOPS_TOKEN }}",
        "path": "gitops",
    }
    if gitops.revision != "HEAD":
        checkout["ref"] = gitops.revision
    pins = "\n".join(
        f'kustomize edit set image "{i.repository}={i.repository}@${_env_name(i.key)}"' for i in images
    )
    commit = "\n".join(
        [
            'git config user.name "github-actions[bot]"',
            'git config user.email "41898282+github-actions[bot]@users.noreply.github.com"',
            "git add -A",
            f'git diff --cached --quiet || git commit -m "{stack.environment}: {stack.name} at $GITHUB_SHA"',
            "git push",
        ]
    )
    return [
        _uses("checkout", f"Check out {repository.group(1)}", checkout),
        _run(
            f"Pin the digests in the {stack.environment} overlay",
            pins,
            digests,
            directory=overlay,
        ),
        _run("Commit and push (Argo CD syncs it)", commit, directory="gitops"),
    ]


def _smoke_job(stack: Stack, images: list[BuiltImage], spec_dir: str) -> dict[str, Any]:
    env_name = stack.environment
    steps: list[dict[str, Any]] = [_checkout()]
    for image in images:
        for name in image.services:
            service = stack.services.get(name)
            if service is None or service.ingress is None or service.ingress.host.startswith("*"):
                continue
            url = _ingress_url(stack, name)
            probe = service.health.readiness or service.health.liveness
            if probe is not None and service.ingress.path == "/":
                # Retries ride out Argo CD's sync and the pods' start after a GitOps commit.
                steps.append(
                    _run(
                        f"{name} answers through its ingress",
                        "curl --fail --silent --show-error --retry 20 --retry-delay 15 --retry-all-errors"
                        f' --max-time 10 "$URL{probe.path}"',
                        {"URL": url},
                    )
                )
            if image.build.smoke is not None and name == image.key:
                steps.append(
                    _run(
                        f"{name}: smoke tests",
                        image.build.smoke,
                        {"SMOKE_URL": url},
                        directory=_in_repo(spec_dir, image.build.context),
                    )
                )
    if len(steps) == 1:
        steps.append(_run("No ingress to test", f'echo "no service has an ingress in {env_name}"'))
    return {
        "name": f"smoke tests ({env_name})",
        "needs": [env_name],
        "runs-on": RUNNER,
        "timeout-minutes": 15,
        "permissions": {"contents": "read"},
        "steps": steps,
    }


def _environment(stack: Stack) -> dict[str, str] | str:
    for name in sorted(stack.services):
        ingress = stack.services[name].ingress
        if ingress is not None and not ingress.host.startswith("*"):
            return {"name": stack.environment, "url": _ingress_url(stack, name)}
    return stack.environment


def _ingress_url(stack: Stack, service: str) -> str:
    ingress = stack.services[service].ingress
    assert ingress is not None
    return f"{'https' if ingress.tls else 'http'}://{ingress.host}"


def _release_kind(stack: Stack) -> str:
    how = "the GitOps commit" if stack.gitops is not None else "shipyard deploy"
    return f"release by {how} ({stack.rollout.strategy})"


def _env_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def _env_name(key: str) -> str:
    return f"DIGEST_{_env_key(key)}"


# --- text ----------------------------------------------------------------------------------------


class _WorkflowDumper(_Dumper):
    """Block scalars for multi-line scripts, keys in the order a person reads a workflow."""


def _block_strings(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_WorkflowDumper.add_representer(str, _block_strings)
_PINNED_LINE = re.compile(r"^(\s*(?:- )?uses: )(\S+)@([0-9a-f]{40})$")


def _text(workflow: dict[str, Any], spec_path: str) -> str:
    body = yaml.dump(
        workflow,
        Dumper=_WorkflowDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=2**31 - 1,
    )
    versions = {a.sha: a.version for a in ACTIONS.values()}
    lines = []
    for line in body.splitlines():
        match = _PINNED_LINE.match(line)
        pinned = match is not None and match.group(3) in versions
        lines.append(f"{line} # {versions[match.group(3)]}" if match and pinned else line)
    header = [
        f"# Rendered by `shipyard render ci --provider github` from {spec_path}; render it again after",
        "# changing the spec. Repository settings it relies on: the GitHub environments `staging` and",
        "# `production` (production with required reviewers), each with its secrets: KUBECONFIG and",
        "# SHIPYARD_DATABASE_URL (or GITOPS_TOKEN with gitops:); and REGISTRY_USERNAME and",
        "# REGISTRY_PASSWORD for a registry other than ghcr.io.",
    ]
    return "\n".join([*header, *lines]) + "\n"
