"""`shipyard render kubernetes|kustomize|helm|argocd|prometheus|alertmanager|grafana`: the spec as
files Kubernetes, Argo CD and monitoring tools read.

One rule for where output goes: without `-o`, what is one stream (manifests, monitoring
configuration) is written to stdout; a tree of files (a Kustomize tree, a Helm chart, the Argo CD
repository layout) is written only into the directory `-o` names, never into a default one, and
the command says where it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..capacity import capacity_totals, catalogs, estimate_cost, load_catalog
from ..errors import UserError
from ..render import (
    DEFAULT_KUBE_VERSION,
    KIND_ORDER,
    MonitoringKind,
    Written,
    all_manifests,
    argocd_tree,
    github_workflow,
    kept_pins,
    manifests_text,
    monitoring_text,
    opentofu_tree,
    render_helm,
    render_kustomize,
    write_kubernetes,
    write_monitoring,
    write_tree,
)
from ._app import DEFAULT_SPEC, EnvOption, SpecOption, console, console_err, read_spec

OutDirOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="The output directory (replaced as a whole).", file_okay=False),
]
KubeVersionOption = Annotated[
    str, typer.Option("--kube-version", help="The Kubernetes version whose schemas objects must meet.")
]
BaseEnvOption = Annotated[
    str | None,
    typer.Option(
        "--env", "-e", help="The environment the base holds (default: the spec's last); all are rendered."
    ),
]


class ScrapeTarget(StrEnum):
    local = "local"
    kubernetes = "kubernetes"


TargetOption = Annotated[
    ScrapeTarget,
    typer.Option(
        "--target",
        help="Where the stack runs: local (processes behind HAProxy) or kubernetes (pods found by label).",
    ),
]


def _tree_out(out: Path | None, command: str, what: str) -> Path:
    """The directory a tree goes to: only ever the one -o names."""
    if out is None:
        raise UserError(
            f"`render {command}` writes {what}, a directory of files: name it with -o DIR"
            f" (e.g. -o rendered/{command}); nothing was written."
            " Without -o, only `render kubernetes|prometheus|alertmanager|grafana` write, to stdout"
        )
    return out


def register(app: typer.Typer) -> None:
    """Add the `render` command group to the app."""
    group = typer.Typer(
        name="render",
        help="Render the spec as Kubernetes manifests, a Kustomize tree, a Helm chart, or its monitoring.",
        no_args_is_help=True,
    )
    group.command("kubernetes")(kubernetes)
    group.command("kustomize")(kustomize)
    group.command("helm")(helm)
    group.command("argocd")(argocd)
    group.command("ci")(ci)
    group.command("opentofu")(opentofu)
    group.command("prometheus")(prometheus)
    group.command("alertmanager")(alertmanager)
    group.command("grafana")(grafana)
    app.add_typer(group, name="render")


def kubernetes(
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = None,
    out: OutDirOption = None,
    kube_version: KubeVersionOption = DEFAULT_KUBE_VERSION,
    argo: Annotated[
        bool,
        typer.Option("--argo", help="Argo Rollouts (Rollout + AnalysisTemplate) instead of Deployments."),
    ] = False,
) -> None:
    """Kubernetes manifests: to stdout, or one file per object under -o (per environment without -e)."""
    spec = read_spec(file)
    if out is None:
        manifests = all_manifests(spec, None if env is None else [env], kube_version=kube_version, argo=argo)
        for each in manifests:
            _note_skipped(each.environment, [s.name for s in each.skipped], [s.reason for s in each.skipped])
        typer.echo(manifests_text(manifests), nl=False)
        return
    _report(write_kubernetes(spec, out, env, kube_version=kube_version, argo=argo))


def kustomize(
    file: SpecOption = DEFAULT_SPEC,
    env: BaseEnvOption = None,
    out: OutDirOption = None,
    kube_version: KubeVersionOption = DEFAULT_KUBE_VERSION,
) -> None:
    """A Kustomize base and one overlay per environment."""
    directory = _tree_out(out, "kustomize", "a Kustomize base and overlays")
    spec = read_spec(file)
    written = render_kustomize(spec, directory, kube_version=kube_version, base_environment=env)
    _report(written)


def helm(
    file: SpecOption = DEFAULT_SPEC,
    env: BaseEnvOption = None,
    out: OutDirOption = None,
    kube_version: KubeVersionOption = DEFAULT_KUBE_VERSION,
) -> None:
    """A Helm chart: values.yaml for the base environment, values-<env>.yaml for each."""
    directory = _tree_out(out, "helm", "a Helm chart")
    spec = read_spec(file)
    written = render_helm(spec, directory, kube_version=kube_version, base_environment=env)
    _report(written)


def argocd(
    file: SpecOption = DEFAULT_SPEC,
    env: Annotated[
        str | None,
        typer.Option(
            "--env", "-e", help="Only this environment's Application (default: every one with gitops)."
        ),
    ] = None,
    out: OutDirOption = None,
    kube_version: KubeVersionOption = DEFAULT_KUBE_VERSION,
) -> None:
    """What the GitOps repository holds at gitops.path: the app-of-apps (root.yaml), AppProjects,
    one Application per environment, the platform add-ons (pinned Helm charts) and the stack."""
    directory = _tree_out(out, "argocd", "the Argo CD repository layout")
    spec = read_spec(file)
    tree = argocd_tree(spec, env, kube_version=kube_version)
    files, kept = kept_pins(tree.files, _previous(directory, tree.files))
    where = write_tree(files, directory)
    table = Table(title=f"Wrote {len(tree.files)} files to {where}", title_justify="left")
    table.add_column("Application", no_wrap=True)  # a name to copy whole (`argocd app sync NAME`)
    table.add_column("wave", justify="right")
    for column in ("source", "namespace", "sync"):
        table.add_column(column, overflow="fold")
    for app in sorted(tree.applications, key=lambda a: (a.wave, a.name)):
        table.add_row(app.name, str(app.wave), app.source, app.destination, app.sync)
    console.print(table)
    in_repo = "the repository's root" if tree.path == "." else tree.path
    console.print(
        f"Commit {where} as {in_repo} of {tree.repo}, then once: kubectl apply -n {tree.namespace}"
        f" -f {where / 'root.yaml'}"
    )
    for note in [*tree.notes, *kept]:
        console_err.print(f"[yellow]note:[/] {note}")


def _previous(directory: Path, files: Mapping[str, str]) -> dict[str, str]:
    """The texts the tree at `directory` holds now for the paths of `files` (those it has)."""
    return {name: (directory / name).read_text() for name in files if (directory / name).is_file()}


def opentofu(
    provider: Annotated[
        str, typer.Option("--provider", "-p", help="aws, gcp, digitalocean or hetzner.", show_default=False)
    ],
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = None,
    out: OutDirOption = None,
) -> None:
    """One OpenTofu root module per environment (of -e, else every one) under -o DIR/<env>/: the
    network, the cluster with the node pools `shipyard cost` prices, managed databases for
    external datastores, the backup bucket and DNS records."""
    directory = _tree_out(out, "opentofu", "OpenTofu root modules")
    spec = read_spec(file)
    catalog = load_catalog(provider)  # an unknown name fails here, with a did-you-mean
    # The node pools `shipyard cost` prices for each environment (its defaults).
    estimates = {
        each: estimate_cost(capacity_totals(spec.stack(each)), catalog)
        for each in (spec.environments if env is None else [env])
    }
    tree = opentofu_tree(spec, catalog.provider, estimates, catalogs())
    where = write_tree(tree.files, directory)
    title = f"Wrote {len(tree.files)} files to {where} ({tree.provider})"
    table = Table(title=title, title_justify="left")
    table.add_column("environment", no_wrap=True)
    for column in ("node pools (min..max)", "managed datastores", "backup bucket", "DNS records"):
        table.add_column(column, overflow="fold")
    for module in tree.modules:
        pools = ", ".join(f"{p.nodes}..{p.max_nodes} × {p.node_type}" for p in module.pools)
        stores, records = ", ".join(module.stores) or "-", ", ".join(module.records) or "-"
        table.add_row(module.environment, pools, stores, module.bucket or "-", records)
    console.print(table)
    console.print("Not validated by OpenTofu here: run `tofu init`, `tofu validate`, `tofu plan` in each.")
    for module in tree.modules:
        for note in module.notes:
            console_err.print(f"[yellow]note:[/] {module.environment}: {note}")


def prometheus(
    file: SpecOption = DEFAULT_SPEC,
    env: EnvOption = None,
    out: OutDirOption = None,
    target: TargetOption = ScrapeTarget.local,
) -> None:
    """prometheus.yml (scrape jobs, rule file, Alertmanager) and rules.yml (RED recording rules,
    SLO burn-rate alerts, the seeds' alerts, the spec's rules)."""
    _monitoring(file, "prometheus", env, out, target)


def alertmanager(file: SpecOption = DEFAULT_SPEC, env: EnvOption = None, out: OutDirOption = None) -> None:
    """alertmanager.yml: alerts routed by severity to the spec's notification channels."""
    _monitoring(file, "alertmanager", env, out, ScrapeTarget.local)


def grafana(file: SpecOption = DEFAULT_SPEC, env: EnvOption = None, out: OutDirOption = None) -> None:
    """dashboard.json: RED per service, releases, PostgreSQL, Redis, backups and DR."""
    _monitoring(file, "grafana", env, out, ScrapeTarget.local)


def _monitoring(
    file: Path, kind: MonitoringKind, env: str | None, out: Path | None, target: ScrapeTarget
) -> None:
    """To stdout (one environment), or files into -o: of -e, else of every environment under `<env>/`."""
    spec = read_spec(file)
    if out is None:
        typer.echo(monitoring_text(spec, kind, env, target=target.value), nl=False)
        return
    written = write_monitoring(spec, kind, out, env, target=target.value)
    table = Table(title=f"Wrote {written.files} files to {written.directory}", title_justify="left")
    table.add_column("")
    for each in written.environments:
        table.add_column(each.environment, justify="right")
    for key in written.environments[0].counts if written.environments else []:
        table.add_row(key, *(str(each.counts.get(key, 0)) for each in written.environments))
    table.add_section()
    table.add_row("where", *(each.location for each in written.environments))
    console.print(table)


class CiProvider(StrEnum):
    github = "github"


def ci(
    provider: Annotated[
        CiProvider, typer.Option("--provider", "-p", help="Where CI runs: github (GitHub Actions).")
    ] = CiProvider.github,
    file: SpecOption = DEFAULT_SPEC,
    spec_path: Annotated[
        str | None,
        typer.Option(
            "--spec-path",
            help="Where the spec is in the repository, from its root (default: -f as given).",
        ),
    ] = None,
    branch: Annotated[str, typer.Option("--branch", help="The branch that releases to staging.")] = "main",
    out: OutDirOption = None,
) -> None:
    """The repository's CI workflow: the services' tests, Buildx builds pushed by digest, Trivy,
    an SBOM and cosign signature, validate and render, staging, smoke tests, then production behind
    its GitHub environment. To stdout, or .github/workflows/shipyard.yml under -o DIR."""
    spec = read_spec(file)
    given = file.as_posix() if not file.is_absolute() else file.name
    workflow = github_workflow(spec, spec_path if spec_path is not None else given, branch=branch)
    for note in workflow.notes:
        console_err.print(f"[yellow]note:[/] {note}")
    if out is None:
        typer.echo(workflow.text, nl=False)
        return
    where = write_tree({workflow.path: workflow.text}, out)
    table = Table(title=f"Wrote {where / workflow.path} ({provider.value})", title_justify="left")
    for column in ("image", "built from", "platforms", "released as"):
        table.add_column(column, overflow="fold")
    for image in workflow.images:
        table.add_row(
            image.repository,
            image.build.dockerfile_path,
            ", ".join(image.build.platforms),
            ", ".join(image.services),
        )
    console.print(table)
    console.print(f"Copy {workflow.path} into the repository; its header lists the secrets it reads.")


def _note_skipped(environment: str, names: list[str], reasons: list[str]) -> None:
    for name, reason in zip(names, reasons, strict=True):
        console_err.print(f"[yellow]note:[/] {environment}: service {name!r} not rendered: {reason}")


def _report(written: Written) -> None:
    """A kinds-by-environments table of what was written, and where each environment went."""
    base = f" (base: {written.base_environment})" if written.base_environment else ""
    table = Table(title=f"Wrote {written.files} files to {written.directory}{base}", title_justify="left")
    table.add_column("kind")
    for each in written.environments:
        table.add_column(each.environment, justify="right")
    kinds = [kind for kind in KIND_ORDER if any(kind in each.counts for each in written.environments)]
    for kind in kinds:
        table.add_row(kind, *(str(each.counts.get(kind, 0)) for each in written.environments))
    table.add_section()
    table.add_row("objects", *(str(sum(each.counts.values())) for each in written.environments))
    table.add_row("namespace", *(each.namespace for each in written.environments))
    table.add_row("where", *(each.location for each in written.environments))
    console.print(table)
    for each in written.environments:
        _note_skipped(each.environment, [s.name for s in each.skipped], [s.reason for s in each.skipped])
