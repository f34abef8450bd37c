"""`render argocd`: the directory a GitOps repository holds at `gitops.path`, for Argo CD to sync.

    root.yaml        the app-of-apps: the one object applied by hand (`kubectl apply -n argocd -f`)
    apps/            what root.yaml syncs, in waves:
                       -3 the AppProjects: the stack's, and `<stack>-platform` for the add-ons
                       -2 add-ons whose CRDs others need (cert-manager, External Secrets, Argo
                          Rollouts, kube-prometheus-stack, CloudNativePG)
                       -1 the other add-ons, and `platform-config` (ClusterIssuers, secret store)
                        0 one Application per environment
    platform/        the ClusterIssuers and the External Secrets store
    stack/           the stack itself: the Kustomize tree (`overlays/<env>`) or the Helm chart
                     (`values-<env>.yaml`), exactly as `render kustomize|helm` writes it

Argo CD waits for one wave to be healthy before the next only if it can tell an Application's
health: Argo CD removed that check in 1.8, and the README says how to restore it.

The stack is rendered here too, so every Application's path exists in the same commit. The
stack's project may create only the stack's kinds in the stack's namespaces (and the Namespace
objects themselves); the platform's project only the add-ons' namespaces and the cluster-scoped
kinds their charts create.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import RenderError
from ..spec import GitOps, Spec, Stack
from ._common import MANAGED_BY_LABEL, PART_OF_LABEL, Object
from ._kubernetes import build_manifests
from ._outputs import helm_tree, kustomize_tree
from ._platform import CRD_PROVIDERS, Addon, cluster_issuers, plan_platform, secret_stores
from ._schema import DEFAULT_KUBE_VERSION, validate_objects
from ._yaml import dump

API_VERSION = "argoproj.io/v1alpha1"
WAVE_ANNOTATION = "argocd.argoproj.io/sync-wave"
IN_CLUSTER = "https://kubernetes.default.svc"
WAVE_PROJECTS, WAVE_CRDS, WAVE_PLATFORM, WAVE_STACK = -3, -2, -1, 0
SAME_FOR_ALL = ("repo", "path", "source", "namespace", "argo_rollouts")
"""gitops fields one tree can only have one of: environments may differ in the others."""

# Fields Argo Rollouts' controller writes on objects that are in Git. Argo CD must neither show
# them as drift nor, with RespectIgnoreDifferences, put them back on sync.
_ROLLOUT_OWNED = [
    {
        # The controller pins the stable/canary (active/preview) Services to one ReplicaSet.
        "group": "",
        "kind": "Service",
        "jsonPointers": [
            "/spec/selector/rollouts-pod-template-hash",
            "/metadata/annotations/argo-rollouts.argoproj.io~1managed-by-rollouts",
        ],
    },
    {
        # `shipyard rollout pause|resume|promote` (like `kubectl argo rollouts`) set these.
        "group": "argoproj.io",
        "kind": "Rollout",
        "jsonPointers": ["/spec/paused", "/spec/restartAt", "/status"],
    },
]
_TRAEFIK_OWNED = {
    # Canary weights of a Traefik-routed Rollout live in the TraefikService the controller edits.
    "group": "traefik.io",
    "kind": "TraefikService",
    "jsonPointers": ["/spec/weighted/services"],
}


@dataclass(frozen=True)
class ArgoApplication:
    """One Application of the tree, for the report."""

    name: str
    wave: int
    source: str
    destination: str
    sync: str


@dataclass(frozen=True)
class ArgoTree:
    files: dict[str, str]
    applications: tuple[ArgoApplication, ...]
    notes: tuple[str, ...]
    repo: str
    path: str
    namespace: str


def _in_repo(gitops: GitOps, relative: str) -> str:
    return relative if gitops.path == "." else f"{gitops.path}/{relative}"


def _meta(name: str, namespace: str, stack: Stack, wave: int) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {PART_OF_LABEL: stack.name, MANAGED_BY_LABEL: "shipyard"},
        "annotations": {WAVE_ANNOTATION: str(wave)},
    }


def _sync_policy(gitops: GitOps, options: list[str]) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "syncOptions": options,
        "retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "3m"}},
    }
    if gitops.automated.enabled:
        policy["automated"] = {"prune": gitops.automated.prune, "selfHeal": gitops.automated.self_heal}
    return policy


def _sync_text(gitops: GitOps) -> str:
    sync = gitops.automated
    if not sync.enabled:
        return "manual"
    return "auto" + (", prune" if sync.prune else "") + (", self-heal" if sync.self_heal else "")


# Every Application applies server-side: CRDs such as kube-prometheus-stack's exceed the 256 KiB a
# client-side apply's last-applied annotation may hold, and fields other managers own (Argo
# Rollouts' controller, an HPA) stay theirs instead of being overwritten.
# FailOnSharedResource: a resource another Application already manages is an error, never a tug
# of war between two Applications.
_STACK_OPTIONS = [
    "ServerSideApply=true",
    "RespectIgnoreDifferences=true",
    "FailOnSharedResource=true",
    # Delete what Git dropped only after the new objects are healthy (e.g. an old Service while
    # its replacement's pods become ready).
    "PruneLast=true",
]
# The stack renders its own Namespace object (labels included), so Argo CD must not create a bare
# one: CreateNamespace is left at its default, false. Add-on charts do not render theirs.
_ADDON_OPTIONS = ["CreateNamespace=true", "ServerSideApply=true", "FailOnSharedResource=true"]


def _stack_application(stack: Stack, gitops: GitOps, project: str) -> Object:
    source: dict[str, Any] = {"repoURL": gitops.repo, "targetRevision": gitops.revision}
    if gitops.source == "kustomize":
        source["path"] = _in_repo(gitops, f"stack/overlays/{stack.environment}")
    else:
        source["path"] = _in_repo(gitops, "stack")
        source["helm"] = {"releaseName": stack.name, "valueFiles": [f"values-{stack.environment}.yaml"]}
    ignore: list[dict[str, Any]] = []
    if gitops.argo_rollouts:
        ignore += _ROLLOUT_OWNED
        if stack.platform.ingress_controller == "traefik":
            ignore.append(_TRAEFIK_OWNED)
    spec: dict[str, Any] = {
        "project": project,
        "source": source,
        "destination": {"server": gitops.destination, "namespace": stack.k8s_namespace},
        "syncPolicy": _sync_policy(gitops, _STACK_OPTIONS),
        "revisionHistoryLimit": 10,
    }
    if ignore:
        spec["ignoreDifferences"] = ignore
    meta = _meta(f"{stack.name}-{stack.environment}", gitops.namespace, stack, WAVE_STACK)
    meta["labels"]["shipyard.dev/environment"] = stack.environment
    return {"apiVersion": API_VERSION, "kind": "Application", "metadata": meta, "spec": spec}


def _addon_application(addon: Addon, name: str, sizing: Stack, gitops: GitOps, project: str) -> Object:
    wave = WAVE_CRDS if addon.name in CRD_PROVIDERS else WAVE_PLATFORM
    source: dict[str, Any] = {
        "repoURL": addon.chart.repo,
        "chart": addon.chart.name,
        "targetRevision": addon.chart.version,
        "helm": {"releaseName": addon.name},
    }
    if addon.values:
        source["helm"]["valuesObject"] = addon.values
    return {
        "apiVersion": API_VERSION,
        "kind": "Application",
        "metadata": _meta(name, gitops.namespace, sizing, wave),
        "spec": {
            "project": project,
            "source": source,
            "destination": {"server": gitops.destination, "namespace": addon.namespace},
            "syncPolicy": _sync_policy(gitops, _ADDON_OPTIONS),
        },
    }


def _project(
    name: str,
    description: str,
    stack: Stack,
    gitops: GitOps,
    repos: list[str],
    destinations: list[tuple[str, str]],
    cluster_kinds: list[tuple[str, str]],
    namespace_kinds: list[tuple[str, str]] | None = None,
) -> Object:
    spec: dict[str, Any] = {
        "description": description,
        "sourceRepos": sorted(set(repos)),
        "destinations": [{"server": s, "namespace": n} for s, n in sorted(set(destinations))],
        "clusterResourceWhitelist": [{"group": g, "kind": k} for g, k in sorted(set(cluster_kinds))],
    }
    if namespace_kinds is not None:
        spec["namespaceResourceWhitelist"] = [
            {"group": g, "kind": k} for g, k in sorted(set(namespace_kinds))
        ]
    meta = _meta(name, gitops.namespace, stack, WAVE_PROJECTS)
    return {"apiVersion": API_VERSION, "kind": "AppProject", "metadata": meta, "spec": spec}


def _group_kind(obj: Object) -> tuple[str, str]:
    group, _, _ = str(obj["apiVersion"]).rpartition("/")
    return (group, str(obj["kind"]))


def _selected(spec: Spec, environment: str | None) -> list[Stack]:
    if environment is not None:
        stack = spec.stack(environment)  # an unknown name raises UnknownEnvironmentError
        if stack.gitops is None:
            raise RenderError(
                f"environment {environment!r} of {spec.file} has no `gitops:` (or its overlay removes"
                " it): add gitops.repo and gitops.path to render it for Argo CD"
            )
        return [stack]
    stacks = [stack for stack in spec.stacks() if stack.gitops is not None]
    if not stacks:
        raise RenderError(
            f"{spec.file} has no `gitops:` section: add one (gitops.repo: the Git repository Argo CD"
            " reads, gitops.path: where in it this tree is committed) to render for Argo CD"
        )
    return stacks


def _one_tree(stacks: Sequence[Stack]) -> GitOps:
    """The gitops settings the whole tree shares; RenderError if environments disagree."""
    first = stacks[-1].gitops
    assert first is not None
    for stack in stacks:
        assert stack.gitops is not None
        for key in SAME_FOR_ALL:
            if getattr(stack.gitops, key) != getattr(first, key):
                raise RenderError(
                    f"environments.{stack.environment}.gitops.{key}: {getattr(stack.gitops, key)!r}"
                    f" differs from {stacks[-1].environment}'s {getattr(first, key)!r}; one tree has one"
                    f" {key}: set it once for every environment"
                )
    return first


def argocd_tree(
    spec: Spec, environment: str | None = None, *, kube_version: str = DEFAULT_KUBE_VERSION
) -> ArgoTree:
    """The whole tree of `render argocd`: of every environment with `gitops:`, or of one."""
    stacks = _selected(spec, environment)
    gitops = _one_tree(stacks)
    base = stacks[-1]
    files: dict[str, str] = {}
    applications: list[ArgoApplication] = []
    notes: list[str] = []

    # The stack: the same tree `render kustomize|helm` writes, under stack/.
    render = kustomize_tree if gitops.source == "kustomize" else helm_tree
    stack_tree = render(spec, kube_version=kube_version, argo=gitops.argo_rollouts)
    files.update({f"stack/{path}": text for path, text in stack_tree.files.items()})
    stack_kinds = {
        _group_kind(obj)
        for stack in stacks
        for obj in _objects(spec, stack.environment, kube_version, gitops.argo_rollouts)
    }

    projects: dict[str, list[Stack]] = {}
    for stack in stacks:
        assert stack.gitops is not None
        projects.setdefault(stack.gitops.project or stack.name, []).append(stack)
    for project, members in projects.items():
        obj = _project(
            project,
            f"The {base.name} stack, rendered by shipyard: its environments' namespaces only.",
            base,
            gitops,
            [gitops.repo],
            [(s.gitops.destination, s.k8s_namespace) for s in members if s.gitops is not None],
            [kind for kind in stack_kinds if kind == ("", "Namespace")],
            [kind for kind in stack_kinds if kind != ("", "Namespace")],
        )
        files[f"apps/appproject-{project}.yaml"] = dump(obj)
        for stack in members:
            assert stack.gitops is not None
            app = _stack_application(stack, stack.gitops, project)
            files[f"apps/{app['metadata']['name']}.yaml"] = dump(app)
            applications.append(
                ArgoApplication(
                    app["metadata"]["name"],
                    WAVE_STACK,
                    app["spec"]["source"]["path"],
                    stack.k8s_namespace,
                    _sync_text(stack.gitops),
                )
            )

    if gitops.platform:
        _platform(files, applications, notes, stacks, base)
    files["root.yaml"] = dump(_root(base, gitops))
    # The tree's own objects (the stack's were validated as they were rendered) against their
    # CRDs, read back from the very text that is written.
    validate_objects(_argo_objects(files), kube_version=kube_version)
    return ArgoTree(
        files=files,
        applications=tuple(applications),
        notes=tuple(notes),
        repo=gitops.repo,
        path=gitops.path,
        namespace=gitops.namespace,
    )


def _objects(spec: Spec, environment: str, kube_version: str, argo: bool) -> tuple[Object, ...]:
    return build_manifests(spec.stack(environment), kube_version=kube_version, argo=argo).objects


def _platform(
    files: dict[str, str],
    applications: list[ArgoApplication],
    notes: list[str],
    stacks: list[Stack],
    base: Stack,
) -> None:
    """The add-on Applications of every destination cluster, the platform project and the
    platform-config Application (ClusterIssuers, secret store)."""
    clusters: dict[str, list[Stack]] = {}
    for stack in stacks:
        assert stack.gitops is not None
        clusters.setdefault(stack.gitops.destination, []).append(stack)
    project = f"{base.name}-platform"
    repos: list[str] = []
    destinations: list[tuple[str, str]] = []
    cluster_kinds: list[tuple[str, str]] = [("", "Namespace")]
    config: list[Object] = []
    for server, members in clusters.items():
        sizing = members[-1]
        assert sizing.gitops is not None
        plan = plan_platform(members, sizing)
        notes.extend(plan.notes)
        suffix = "" if len(clusters) == 1 else f"-{sizing.environment}"
        for addon in plan.addons:
            name = f"{addon.name}{suffix}"
            app = _addon_application(addon, name, sizing, sizing.gitops, project)
            files[f"apps/{name}.yaml"] = dump(app)
            repos.append(addon.chart.repo)
            destinations.append((server, addon.namespace))
            cluster_kinds.extend(addon.chart.cluster_kinds)
            applications.append(
                ArgoApplication(
                    name,
                    int(app["metadata"]["annotations"][WAVE_ANNOTATION]),
                    f"{addon.chart.name} {addon.chart.version}",
                    addon.namespace,
                    _sync_text(sizing.gitops),
                )
            )
        ingress_class = sizing.platform.ingress_controller
        issuers, issuer_notes = cluster_issuers(members, ingress_class)
        stores, store_notes = secret_stores(members)
        notes.extend(issuer_notes + store_notes)
        for obj in issuers + stores:
            if obj not in config:
                config.append(obj)
            namespace = obj["metadata"].get("namespace")
            if namespace:
                destinations.append((server, namespace))
            else:
                cluster_kinds.append(_group_kind(obj))
    if config:
        gitops = base.gitops
        assert gitops is not None
        for obj in config:
            namespace = obj["metadata"].get("namespace")
            prefix = f"{namespace}-" if namespace else ""
            files[f"platform/{obj['kind'].lower()}-{prefix}{obj['metadata']['name']}.yaml"] = dump(obj)
        repos.append(gitops.repo)
        for server in clusters:
            destinations.append((server, gitops.namespace))
        app = {
            "apiVersion": API_VERSION,
            "kind": "Application",
            "metadata": _meta(f"{base.name}-platform-config", gitops.namespace, base, WAVE_PLATFORM),
            "spec": {
                "project": project,
                "source": {
                    "repoURL": gitops.repo,
                    "targetRevision": gitops.revision,
                    "path": _in_repo(gitops, "platform"),
                },
                # Cluster-scoped objects (and SecretStores, which name their namespace): the
                # destination namespace only has to be one the project allows.
                "destination": {"server": gitops.destination, "namespace": gitops.namespace},
                # The CRDs come from the previous wave's charts: a dry run before they exist
                # would fail the whole sync, so it is skipped for kinds still unknown.
                "syncPolicy": _sync_policy(
                    gitops, ["ServerSideApply=true", "SkipDryRunOnMissingResource=true"]
                ),
            },
        }
        files[f"apps/{base.name}-platform-config.yaml"] = dump(app)
        applications.append(
            ArgoApplication(
                app["metadata"]["name"],
                WAVE_PLATFORM,
                app["spec"]["source"]["path"],
                "(cluster)",
                _sync_text(gitops),
            )
        )
    if repos:
        assert base.gitops is not None
        files[f"apps/appproject-{project}.yaml"] = dump(
            _project(
                project,
                f"The platform {base.name} runs on: pinned upstream charts and their cluster-wide kinds.",
                base,
                base.gitops,
                repos,
                destinations,
                cluster_kinds,
            )
        )


def _root(base: Stack, gitops: GitOps) -> Object:
    """The app-of-apps. It lives in Argo CD's `default` project because it creates the AppProjects
    themselves; the projects it creates do not allow Applications, so nothing synced from them
    can widen its own permissions."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Application",
        "metadata": {
            "name": f"{base.name}-gitops",
            "namespace": gitops.namespace,
            "labels": {PART_OF_LABEL: base.name, MANAGED_BY_LABEL: "shipyard"},
        },
        "spec": {
            "project": "default",
            "source": {
                "repoURL": gitops.repo,
                "targetRevision": gitops.revision,
                "path": _in_repo(gitops, "apps"),
            },
            "destination": {"server": IN_CLUSTER, "namespace": gitops.namespace},
            # Always automated: it only keeps the Applications and projects as Git says; each
            # environment's own sync policy decides when its workloads change.
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["ServerSideApply=true"],
            },
        },
    }


def _argo_objects(files: dict[str, str]) -> list[Object]:
    return [
        yaml.safe_load(text)
        for path, text in sorted(files.items())
        if path == "root.yaml" or path.startswith(("apps/", "platform/"))
    ]
