"""`shipyard promote SERVICE --from staging --to production`: release exactly what passed.

The verb is `ops.promote`; this module parses the options and shows its result: the target
environment's release as `deploy` shows it (progress lines, or the live panel with `--watch`), the
overlay written on the GitOps path, a dry run's plan, or `-o json|yaml`.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import ReleaseStopped
from ..ops import KubeConnection, Promote, Promoted, Workspace
from ..ops import promote as promote_release
from ._app import (
    DEFAULT_SPEC,
    ContextOption,
    DatabaseOption,
    KubeconfigOption,
    Output,
    OutputOption,
    SpecOption,
    actor,
    console,
    emit,
)
from ._rollout import DryRunOption, WatchOption, _Progress, _show_plan


def register(app: typer.Typer) -> None:
    app.command("promote")(promote)


def promote(
    service: Annotated[str, typer.Argument(help="The service to promote.")],
    from_env: Annotated[str, typer.Option("--from", help="The environment where it passed (e.g. staging).")],
    to_env: Annotated[
        str, typer.Option("--to", help="The environment to release it into (e.g. production).")
    ],
    gitops_dir: Annotated[
        Path | None,
        typer.Option(
            "--gitops-dir",
            help="GitOps: a checkout of gitops.repo; the digest is written into its overlay of --to"
            " (a file change, never a push).",
            file_okay=False,
        ),
    ] = None,
    watch: WatchOption = False,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    dry_run: DryRunOption = False,
    file: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Release into one environment exactly what passed in another: the version (local) or digest.

    What passed is the newest release of SERVICE in --from that succeeded and still runs there. On
    the local target the same version is released in --to; on Kubernetes its image digest (refused
    without one), deployed to --to's cluster, or, when Argo CD syncs --to (`gitops:`), written into
    --to's overlay in the checkout given with --gitops-dir, for you to commit. Refused when --to
    already runs it. The audit log and `rollout history` keep the chain.
    """
    ws = Workspace.open(file, to_env, database_url=database_url, actor=actor())
    kube = KubeConnection(str(kubeconfig) if kubeconfig else None, context) if context or kubeconfig else None
    request = Promote(
        service=service,
        from_environment=from_env,
        to_environment=to_env,
        gitops_dir=str(gitops_dir) if gitops_dir is not None else None,
        dry_run=dry_run,
    )
    people = output is Output.table
    view = _Progress(watch and people)

    def started(rollout_id: int) -> None:
        if people:
            console.print(f"release {rollout_id}: {service} into {to_env}")

    # SIGTERM stops a local release like Ctrl-C: it stays recorded for `shipyard rollout resume`.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with view:
            result = promote_release(
                ws, request, kube=kube, on_started=started, on_progress=view.update if people else None
            )
    except ReleaseStopped as stopped:
        console.print(escape(stopped.message))
        raise typer.Exit(130) from None
    if not emit(result.model_dump(mode="json"), output):
        _show(result)
    if not result.ok:
        raise typer.Exit(1)


def _show(result: Promoted) -> None:
    source = result.source
    what = result.image if result.path != "local" and result.image else f"{result.service} {source.version}"
    console.print(
        f"{escape(what)}: passed in {source.environment} (release {source.release}) →"
        f" {result.to_environment} ({result.path})"
    )
    if result.plan is not None:
        _show_plan(result.plan, Output.table)
    elif result.path == "gitops":
        verb = "would write" if result.dry_run else "wrote"
        console.print(f"  {verb} {escape(str(result.overlay))}: images: {escape(str(result.images_entry))}")
    console.print(escape(result.summary()))
