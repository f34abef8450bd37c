"""Promotion: release into one environment exactly what passed in another.

    promote(ws, Promote(service="web", from_environment="staging", to_environment="production"))
        → Promoted "promoted web v2 (staging release 12) to production: release 14 succeeded"

What passed is the newest release of the service in the source environment whose outcome is
`succeeded` and that is still live there (on the local target: its processes still run). The
promotion follows where that release ran:

- local: the same version string is released in the target environment, by `deploy` (the target
  environment's strategy, run to its end here);
- kubernetes, target environment without `gitops:`: the image digest is deployed there, as
  `deploy --target kubernetes --version sha256:…` would;
- kubernetes, target environment with `gitops:` (Argo CD syncs it): the digest is written into the
  environment's overlay of the `render argocd` tree in a checkout (`gitops_dir`), as a Kustomize
  `images:` entry; committing and pushing it stays the operator's (or CI's) step.

It refuses (PromotionRefused, 409) when nothing passed in the source (no successful release, or it
no longer runs), when a Kubernetes release has no digest (a tag may point at another image by the
time it reaches production), and when the target already runs it. Every promotion is audited as
`promote`, with the chain: source environment, release and version (digest), target release or
overlay. `rollout history` shows the chain from those entries (`promotions`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import PromotionRefused, ShipyardError, UserError
from ..host import write_atomic
from ..rollout import KubeConnection, OnProgress
from ..spec import Stack
from ..state import AuditRow, RolloutRow, record_audit
from ._base import Request, Result
from ._releases import Deploy, ReleaseOutcome, ReleasePlan, deploy
from ._workspace import Workspace

__all__ = ["Promote", "Promoted", "Promotion", "promote", "promotions"]

PromotionPath = Literal["local", "kubernetes", "gitops"]
DIGEST_PREFIX = "sha256:"


class Promote(Request):
    """Release into `to_environment` exactly what passed in `from_environment`."""

    kind: Literal["promote"] = "promote"
    service: str
    from_environment: str
    to_environment: str
    gitops_dir: str | None = None
    """A checkout of the GitOps repository (its root): the overlay written is
    `<gitops_dir>/<gitops.path>/stack/overlays/<to_environment>/kustomization.yaml`."""
    dry_run: bool = False


class Promotion(BaseModel):
    """Where a release came from: the source environment's release it promoted."""

    model_config = ConfigDict(frozen=True)

    environment: str
    release: int
    version: str

    def text(self) -> str:
        return f"{self.environment} #{self.release}"


class Promoted(Result):
    """What a promotion did, or (dry run) would do."""

    service: str
    source: Promotion
    to_environment: str
    path: PromotionPath
    """local or kubernetes: a release in the target environment; gitops: a file in a checkout."""
    image: str | None = None
    """kubernetes and gitops: the image that passed, by digest."""
    digest: str | None = None
    release: ReleaseOutcome | None = None
    """local and kubernetes: the target environment's release (None on a dry run)."""
    plan: ReleasePlan | None = None
    """local and kubernetes, dry run: the release that would be made."""
    overlay: str | None = None
    """gitops: the kustomization.yaml written (or that would be)."""
    images_entry: dict[str, str] | None = None
    """gitops: the Kustomize `images:` entry written (or that would be)."""
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.release is None or self.release.ok

    def summary(self) -> str:
        what = f"{self.service} {self.digest or self.source.version}"
        chain = f"{what} ({self.source.environment} release {self.source.release}) to {self.to_environment}"
        if self.dry_run:
            done = f"would write {self.overlay}" if self.path == "gitops" else "would release it"
            return f"dry run: promote {chain}: {done}; nothing changed"
        if self.path == "gitops":
            return f"promoted {chain}: pinned in {self.overlay}; commit and push it for Argo CD to sync"
        assert self.release is not None
        return f"promoted {chain}: {self.release.summary()}"


@dataclasses.dataclass(frozen=True)
class _Passed:
    """The release that passed in the source environment."""

    row_id: int
    environment: str
    target: str
    version: str
    image: str | None
    """kubernetes: the image the release ran (its tag or digest set by the version)."""

    @property
    def digest(self) -> str | None:
        if self.version.startswith(DIGEST_PREFIX):
            return self.version
        return None

    @property
    def promotion(self) -> Promotion:
        return Promotion(environment=self.environment, release=self.row_id, version=self.version)


# --- the verb ------------------------------------------------------------------------------------


def promote(
    ws: Workspace,
    request: Promote,
    *,
    kube: KubeConnection | None = None,
    on_started: Callable[[int], None] | None = None,
    on_progress: OnProgress | None = None,
) -> Promoted:
    """Release into the target environment what passed in the source one (see the module's doc).

    `ws` gives the spec, the state store and the actor; its own environment does not matter.
    `on_started` gets the target release's id once it is recorded (local and kubernetes).
    """
    if request.from_environment == request.to_environment:
        raise UserError(
            f"--from and --to both name {request.from_environment!r}: promote from one environment to another"
        )
    source_ws = _in_environment(ws, request.from_environment)
    target_ws = _in_environment(ws, request.to_environment)
    _check_service(source_ws.stack, request.service)
    _check_service(target_ws.stack, request.service)
    passed = _passed(source_ws, request.service)
    if passed.target == "local":
        if request.gitops_dir is not None:
            raise UserError(
                f"--gitops-dir: release {passed.row_id} ran on the local target, whose versions are no"
                " image digests to write into an overlay; drop --gitops-dir"
            )
        _refuse_if_running(target_ws, request.service, passed, "local")
        deploying = Deploy(
            service=request.service, version=passed.version, target="local", dry_run=request.dry_run
        )
        return _release(target_ws, request, passed, deploying, "local", kube, on_started, on_progress)

    digest = passed.digest
    if digest is None:
        raise PromotionRefused(
            f"release {passed.row_id} of {request.service!r} in {passed.environment!r} ran image"
            f" {passed.image or passed.version}, which names no digest: a tag may name another image by"
            f" the time it reaches {request.to_environment!r}. Release {passed.environment!r} by digest"
            f" (`shipyard deploy {request.service} --target kubernetes --version sha256:…`), then promote"
        )
    source_repository = _repository(passed.image or "")
    target_repository = _repository(_image_of(target_ws.stack, request.service))
    gitops = target_ws.stack.gitops
    if gitops is not None:
        return _pin_in_overlay(target_ws, request, passed, digest, source_repository, target_repository)
    if request.gitops_dir is not None:
        raise UserError(
            f"--gitops-dir: environment {request.to_environment!r} has no `gitops:` (Argo CD does not sync"
            " it), so the promotion deploys to its cluster; drop --gitops-dir"
        )
    if source_repository != target_repository:
        raise PromotionRefused(
            f"the digest that passed names an image in {source_repository}, but {request.to_environment!r}"
            f" runs {request.service!r} from {target_repository}: a deploy there would pull another image."
            f" Set services.{request.service}.image of {request.to_environment!r} to {source_repository}"
        )
    _refuse_if_running(target_ws, request.service, passed, "kubernetes")
    deploying = Deploy(service=request.service, version=digest, target="kubernetes", dry_run=request.dry_run)
    return _release(target_ws, request, passed, deploying, "kubernetes", kube, on_started, on_progress)


def promotions(sessions: sessionmaker[Session], service: str) -> dict[int, Promotion]:
    """The releases of `service` that were promotions, by release id: where each came from (read
    from the audit log's `promote` entries)."""
    with sessions() as session:
        entries = session.scalars(
            select(AuditRow.after).where(
                AuditRow.action == "promote",
                AuditRow.target_kind == "service",
                AuditRow.target == service,
                AuditRow.outcome == "started",
            )
        )
        chain: dict[int, Promotion] = {}
        for after in entries:
            data = after or {}
            try:
                chain[int(data["rollout"])] = Promotion(
                    environment=str(data["from_environment"]),
                    release=int(data["from_release"]),
                    version=str(data["version"]),
                )
            except (KeyError, TypeError, ValueError):
                continue  # an entry written by another version of shipyard: shown without its chain
        return chain


# --- the source ----------------------------------------------------------------------------------


def _in_environment(ws: Workspace, environment: str) -> Workspace:
    """`ws` in another environment of the same spec, over the same store, as the same actor."""
    ws.spec.stack(environment)  # UnknownEnvironmentError (with the closest name) for an unknown one
    other = dataclasses.replace(ws, environment=environment, opened_sessions=ws.sessions)
    other.__dict__["spec"] = ws.spec  # the cached_property, already read
    return other


def _check_service(stack: Stack, service: str) -> None:
    if service in stack.services:
        return
    known = sorted(stack.services)
    close = difflib.get_close_matches(service, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(
        f"no service {service!r} in environment {stack.environment!r}{hint};"
        f" services: {', '.join(known) or 'none'}"
    )


def _last_success(sessions: sessionmaker[Session], service: str, environment: str) -> RolloutRow | None:
    with sessions() as session:
        return session.scalar(
            select(RolloutRow)
            .where(
                RolloutRow.service == service,
                RolloutRow.environment == environment,
                RolloutRow.outcome == "succeeded",
            )
            .order_by(RolloutRow.id.desc())
            .limit(1)
        )


def _passed(ws: Workspace, service: str) -> _Passed:
    """The newest successful release of `service` in `ws`'s environment that still runs there."""
    environment = ws.environment
    row = _last_success(ws.sessions, service, environment)
    if row is None:
        raise PromotionRefused(
            f"{service!r} has no successful release in {environment!r}: nothing passed there to promote;"
            f" release it there first (`shipyard deploy {service} --version V -e {environment}`)"
        )
    if row.target == "local":
        alive = _alive_versions(ws.local_state(), service)
        if row.candidate not in alive:
            running = ", ".join(sorted(alive)) or "nothing"
            raise PromotionRefused(
                f"release {row.id} of {service!r} ({row.candidate}) succeeded in {environment!r} but no"
                f" longer runs there ({running} runs): promote only what is live; deploy it there again first"
            )
        return _Passed(row.id, environment, row.target, row.candidate, None)
    base = ((row.stack or {}).get("services") or {}).get(service, {}).get("image") or ""
    image = _with_version(base, row.candidate) if base else None
    return _Passed(row.id, environment, row.target, row.candidate, image)


def _alive_versions(state_dir: Path, service: str) -> set[str]:
    """The versions of `service` whose processes run on this host's target of one environment, from
    the process supervisor's records (HAProxy is not asked, nor started)."""
    processes = state_dir / "processes"
    if not processes.is_dir():
        return set()
    from ..rollout.targets import Supervisor  # noqa: PLC0415 - only the local path reads processes
    from ..rollout.targets.haproxy import parse_server_name  # noqa: PLC0415

    alive = set()
    for instance in Supervisor(processes).list():
        name, _, server = instance.name.partition(".")
        parsed = parse_server_name(server)
        if name == service and instance.alive and parsed:
            alive.add(parsed[0])
    return alive


def _refuse_if_running(ws: Workspace, service: str, passed: _Passed, target: str) -> None:
    """PromotionRefused when the target environment's newest success is this very version and (on the
    local target) it still runs there."""
    version = passed.digest or passed.version
    row = _last_success(ws.sessions, service, ws.environment)
    if row is None or row.target != target or row.candidate != version:
        return
    if target == "local" and version not in _alive_versions(ws.local_state(), service):
        return  # it ran there once, but was taken down since: releasing it again is a real change
    raise PromotionRefused(
        f"{ws.environment!r} already runs {service!r} {version} (release {row.id}): nothing to promote"
    )


# --- the three paths -----------------------------------------------------------------------------


def _release(
    ws: Workspace,
    request: Promote,
    passed: _Passed,
    deploying: Deploy,
    path: PromotionPath,
    kube: KubeConnection | None,
    on_started: Callable[[int], None] | None,
    on_progress: OnProgress | None,
) -> Promoted:
    """Release the version (local) or digest (kubernetes) in the target environment through `deploy`,
    audited as `promote` with the chain once the release is recorded, and again when it ends."""
    promoted = Promoted(
        service=request.service,
        source=passed.promotion,
        to_environment=ws.environment,
        path=path,
        image=passed.image,
        digest=passed.digest,
        dry_run=request.dry_run,
    )
    if request.dry_run:
        return promoted.model_copy(update={"plan": deploy(ws, deploying, kube=kube).plan})
    chain = _chain(passed, request, path)
    recorded: list[int] = []

    def started(rollout_id: int) -> None:
        recorded.append(rollout_id)
        record_audit(
            ws.sessions, actor=ws.actor, action="promote", target_kind="service", target=request.service,
            after={**chain, "rollout": rollout_id}, outcome="started",
        )  # fmt: skip
        if on_started is not None:
            on_started(rollout_id)

    try:
        outcome = deploy(ws, deploying, kube=kube, on_started=started, on_progress=on_progress)
    except (ShipyardError, KeyboardInterrupt) as exc:
        if recorded:  # refused before it was recorded: nothing was promoted, nothing to audit
            reason = exc.message if isinstance(exc, ShipyardError) else "interrupted"
            record_audit(
                ws.sessions, actor=ws.actor, action="promote", target_kind="service", target=request.service,
                after={**chain, "rollout": recorded[0], "error": reason}, outcome="failed",
            )  # fmt: skip
        raise
    record_audit(
        ws.sessions, actor=ws.actor, action="promote", target_kind="service", target=request.service,
        after={**chain, "rollout": outcome.rollout_id, "release_outcome": outcome.outcome},
        outcome="ok" if outcome.ok else "failed",
    )  # fmt: skip
    return promoted.model_copy(update={"release": outcome})


def _pin_in_overlay(
    ws: Workspace,
    request: Promote,
    passed: _Passed,
    digest: str,
    source_repository: str,
    target_repository: str,
) -> Promoted:
    """Write the digest into the target environment's overlay in the checkout (never a push)."""
    from ..render import ImagePin, pin_image, pinned  # noqa: PLC0415 - the renderers only for this path

    gitops = ws.stack.gitops
    assert gitops is not None
    environment = ws.environment
    if request.gitops_dir is None:
        raise UserError(
            f"environment {environment!r} is synced by Argo CD from {gitops.repo}: a promotion there is a"
            f" commit. Give the checkout of that repository with --gitops-dir DIR: the digest is written"
            f" into DIR/{gitops.path}/stack/overlays/{environment}/kustomization.yaml, for you to commit"
        )
    if gitops.source != "kustomize":
        raise UserError(
            f"environment {environment!r}: gitops.source is {gitops.source}; promotion writes a Kustomize"
            " overlay's `images:`. Use gitops.source: kustomize, or set the digest in the chart's values"
        )
    tree = Path(request.gitops_dir) / gitops.path
    overlay = tree / "stack" / "overlays" / environment / "kustomization.yaml"
    if not overlay.is_file():
        raise UserError(
            f"--gitops-dir {request.gitops_dir}: no {overlay}; write the tree there first with"
            f" `shipyard render argocd -o {tree}`"
        )
    text = overlay.read_text(encoding="utf-8")
    pin = ImagePin(name=target_repository, digest=digest, new_name=source_repository)
    current = pinned(text, target_repository, str(overlay))
    if current is not None and current.entry() == pin.entry():
        raise PromotionRefused(
            f"{overlay} already pins {request.service!r} to {source_repository}@{digest}: nothing to promote"
        )
    written = pin_image(text, pin, str(overlay))
    promoted = Promoted(
        service=request.service,
        source=passed.promotion,
        to_environment=environment,
        path="gitops",
        image=passed.image,
        digest=digest,
        overlay=str(overlay),
        images_entry=pin.entry(),
        dry_run=request.dry_run,
    )
    if request.dry_run:
        return promoted
    write_atomic(overlay, written)
    record_audit(
        ws.sessions, actor=ws.actor, action="promote", target_kind="service", target=request.service,
        after={**_chain(passed, request, "gitops"), "overlay": str(overlay), "images": pin.entry()},
    )  # fmt: skip
    return promoted


def _chain(passed: _Passed, request: Promote, path: PromotionPath) -> dict[str, Any]:
    """The audit entry's record of what was promoted from where to where."""
    chain: dict[str, Any] = {
        "from_environment": passed.environment,
        "from_release": passed.row_id,
        "version": passed.version,
        "to_environment": request.to_environment,
        "path": path,
    }
    if passed.image is not None:
        chain["image"] = passed.image
    return chain


# --- image references ----------------------------------------------------------------------------


def _image_of(stack: Stack, service: str) -> str:
    image = stack.services[service].image
    if not image:
        raise UserError(
            f"service {service!r} has no `image` in {stack.environment!r}, so it cannot run on Kubernetes"
        )
    return image


def _with_version(image: str, version: str) -> str:
    from ..rollout.targets.kubernetes import image_with_tag  # noqa: PLC0415 - the Kubernetes client is slow to load

    return image_with_tag(image, version)


def _repository(image: str) -> str:
    """The image's repository: its name without tag or digest (what Kustomize's `images:` matches)."""
    return _with_version(image, "latest").rsplit(":", 1)[0]
