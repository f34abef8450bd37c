"""Flag and token changes: create, set, delete and import flags, put and delete segments, and
create and revoke API tokens.

The CLI (`shipyard flags …`, locally or against `--url`) and the flag REST routes call these and
only these. Each flag verb works through a `FlagBackend`: by default the workspace's state store,
while the server hands in the store its live flag set follows (so that its evaluations see the
change at once) and the CLI hands in a server's API for `--url`.

A dry run (`dry_run=True`) plans the change against what is there now, with the same checks the
write makes (`FlagDocuments`), and returns it without writing: against a server it only reads.

A change may name only environments that exist (`-e prodution` is refused with a suggestion, not
stored as a new environment no one evaluates): those of the workspace's spec when it has one (the
dashboard of a `serve -f` server), else (the CLI, the API) those the flag set names anywhere,
shipyard's default environments (dev, staging, production, as for a spec without `environments:`)
and the workspace's own (`serve -e`). The flag's own environments are always accepted, so that a
stale one can still be changed or removed. A new environment enters through the spec, or by
creating or importing a flag that names it. Only a change to a local store is checked here: a
server checks the changes sent to it (`--url`) itself.
"""

from __future__ import annotations

import datetime as dt
import difflib
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from .. import tokens
from ..errors import InvalidObjectError, NotFoundError, UserError
from ..flags import FlagBackend, FlagChange, FlagDocuments, FlagStore, LocalBackend, Stored
from ..flags._conversion import merge_import
from ..flags._formats import FormatName, flag_format
from ..spec import DEFAULT_ENVIRONMENTS
from ..state import as_utc
from ..tokens import Scope
from ._base import Request, Result
from ._workspace import Workspace

__all__ = [
    "CreateFlag",
    "CreateToken",
    "DeleteFlag",
    "DeleteSegment",
    "FlagChanged",
    "FlagsImported",
    "ImportFlags",
    "ObjectChange",
    "PutSegment",
    "RevokeToken",
    "SetFlag",
    "TokenCreated",
    "TokenRevoked",
    "create_flag",
    "create_token",
    "delete_flag",
    "delete_segment",
    "flag_backend",
    "import_flags",
    "put_segment",
    "revoke_token",
    "set_flag",
]

Document = dict[str, Any]


# --- requests -------------------------------------------------------------------------------------


class CreateFlag(Request):
    """Create a flag from its definition (the export format: key, type, default_value, …)."""

    kind: Literal["flag-create"] = "flag-create"
    flag: Document
    dry_run: bool = False


class SetFlag(Request):
    """Change a flag: replace its whole `definition` (PUT), or apply an RFC 7396 `merge_patch`."""

    kind: Literal["flag-set"] = "flag-set"
    key: str
    definition: Document | None = None
    merge_patch: Document | None = None
    if_match: int | None = None
    """Refuse (ConflictError) unless the flag is at this version."""
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_change(self) -> SetFlag:
        if (self.definition is None) == (self.merge_patch is None):
            raise ValueError("give exactly one of definition (the whole flag) and merge_patch")
        return self


class DeleteFlag(Request):
    kind: Literal["flag-delete"] = "flag-delete"
    key: str
    if_match: int | None = None
    dry_run: bool = False


class ImportFlags(Request):
    """Write a flag set in one transaction: shipyard's own (the export format, or a bare list of
    flags), or another format's document (`source`), converted all or nothing."""

    kind: Literal["flags-import"] = "flags-import"
    flags: Document | list[Any]
    source: FormatName = FormatName.shipyard
    """The document's format; a format of one environment (unleash, flagd) is read into
    `environment`, and the flags there keep their other environments."""
    environment: str = "production"
    replace: bool = False
    """Delete the flags and segments the set does not hold."""
    dry_run: bool = False


class PutSegment(Request):
    """Create a segment, or replace it."""

    kind: Literal["segment-put"] = "segment-put"
    name: str
    segment: Document
    if_match: int | None = None
    dry_run: bool = False


class DeleteSegment(Request):
    kind: Literal["segment-delete"] = "segment-delete"
    name: str
    if_match: int | None = None
    dry_run: bool = False


class CreateToken(Request):
    kind: Literal["token-create"] = "token-create"
    name: str
    scope: Scope = "client"
    dry_run: bool = False


class RevokeToken(Request):
    kind: Literal["token-revoke"] = "token-revoke"
    name: str
    dry_run: bool = False


# --- results --------------------------------------------------------------------------------------


class FlagChanged(Result):
    """A flag or segment created, changed or deleted (or, in a dry run, what would be)."""

    action: Literal["create", "update", "delete"]
    target_kind: Literal["flag", "segment"] = "flag"
    key: str
    """The flag's key (the segment's name)."""
    version: int | None
    """Its version after the change (in a dry run, the version it would get); None once deleted."""
    before_version: int | None = None
    """Its version before the change: known in a dry run (None for a create)."""
    before: Document | None = None
    """What it was: known in a dry run (a write reports what it wrote)."""
    after: Document | None
    """What it is now (would be, in a dry run); None once deleted."""
    dry_run: bool = False

    @classmethod
    def planned(cls, change: FlagChange, current: int | None) -> FlagChanged:
        """The dry-run result of `change` to an object now at version `current`."""
        return cls(
            action=change.action,
            target_kind=change.kind,
            key=change.target,
            version=None if change.action == "delete" else (current or 0) + 1,
            before_version=current,
            before=change.before,
            after=change.after,
            dry_run=True,
        )

    def summary(self) -> str:
        what = f"{self.target_kind} {self.key}"
        if not self.dry_run:
            done = {"create": "created", "update": "updated", "delete": "deleted"}[self.action]
            return f"{done} {what}" + (f" (version {self.version})" if self.version is not None else "")
        versions = {
            "create": f"version {self.version}",
            "update": f"version {self.before_version} → {self.version}",
            "delete": f"at version {self.before_version}",
        }
        return f"dry run: would {self.action} {what} ({versions[self.action]})"


class ObjectChange(Result):
    """One object an import creates, updates or deletes."""

    action: Literal["create", "update", "delete"]
    target_kind: Literal["flag", "segment"]
    key: str
    before: Document | None
    after: Document | None

    def summary(self) -> str:
        return f"{self.action} {self.target_kind} {self.key}"


class FlagsImported(Result):
    flags: int
    """Flags in the imported set."""
    segments: int
    """Segments in the imported set."""
    replace: bool
    source: FormatName = FormatName.shipyard
    warnings: list[str] = Field(default_factory=list)
    """What the source holds that shipyard does not import (nothing an evaluation depends on)."""
    version: int
    """The flag set's version after the import (in a dry run, the version now)."""
    changes: list[ObjectChange] | None = None
    """What the import creates, updates and deletes: planned in a dry run (a write reports its version)."""
    dry_run: bool = False

    def summary(self) -> str:
        held = f"{_count(self.flags, 'flag')} and {_count(self.segments, 'segment')}"
        if not self.dry_run:
            return f"imported {held}; flag set version {self.version}"
        changes = self.changes or []
        counts = {a: sum(c.action == a for c in changes) for a in ("create", "update", "delete")}
        return (
            f"dry run: importing {held} would create {counts['create']}, update {counts['update']} "
            f"and delete {counts['delete']} flags and segments (flag set version {self.version} now)"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class TokenCreated(Result):
    name: str
    scope: Scope
    prefix: str | None
    """The token's first characters (kept to tell tokens apart); None in a dry run."""
    token: SecretStr | None
    """The token itself, shown once (None in a dry run); masked in every dump and repr."""
    dry_run: bool = False

    def summary(self) -> str:
        if self.dry_run:
            return f"dry run: would create token {self.name!r} with scope {self.scope}"
        return f"created token {self.name!r} with scope {self.scope}"


class TokenRevoked(Result):
    name: str
    scope: str
    revoked_before: dt.datetime | None = None
    """When it had been revoked already (revoking again moves that time to now)."""
    dry_run: bool = False

    def summary(self) -> str:
        would = "dry run: would revoke" if self.dry_run else "revoked"
        return f"{would} token {self.name!r} with scope {self.scope}"


# --- flag verbs -----------------------------------------------------------------------------------


def flag_backend(ws: Workspace) -> FlagBackend:
    """The workspace's flag store, written to as the workspace's actor."""
    return LocalBackend(FlagStore(ws.sessions), ws.actor)


def _documents(flags: FlagBackend, current: Stored | None = None, kind: str = "flag") -> FlagDocuments:
    """What a dry run plans against: the flag set now, with `current` as read (exact, versioned)."""
    documents = FlagDocuments.of(flags.snapshot())
    if current is None:
        return documents
    if kind == "flag":
        return FlagDocuments({**documents.flags, current.data["key"]: current.data}, documents.segments)
    return FlagDocuments(documents.flags, {**documents.segments, current.data["name"]: current.data})


def _changed(
    action: Literal["create", "update"], stored: Stored, kind: Literal["flag", "segment"]
) -> FlagChanged:
    key = stored.data["key" if kind == "flag" else "name"]
    return FlagChanged(action=action, target_kind=kind, key=key, version=stored.version, after=stored.data)


def create_flag(ws: Workspace, request: CreateFlag, *, backend: FlagBackend | None = None) -> FlagChanged:
    flags = backend or flag_backend(ws)
    if request.dry_run:
        return FlagChanged.planned(_documents(flags).plan_create(request.flag), None)
    return _changed("create", flags.create(request.flag), "flag")


def _has_spec(ws: Workspace) -> bool:
    # Flag verbs need no spec: a workspace may name a default path where there is no file.
    return ws.spec_path is not None and ws.spec_path.is_file()


def _known_environments(ws: Workspace, flags: FlagBackend) -> list[str]:
    """The environments a flag change may name (see the module's docstring), sorted."""
    if _has_spec(ws):
        return sorted(ws.spec.environments)
    named = {name for flag in flags.snapshot().flags for name in flag.environments}
    return sorted(named | set(DEFAULT_ENVIRONMENTS) | {ws.environment})


def _check_environments(ws: Workspace, flags: FlagBackend, request: SetFlag) -> None:
    """InvalidObjectError (field `environment`) when the change names an environment that neither
    the flag nor the known environments have, with the closest known name."""
    if not isinstance(flags, LocalBackend):  # a server checks the change itself (422)
        return
    named = (request.definition or request.merge_patch or {}).get("environments")
    if not isinstance(named, dict) or not named:
        return
    own = flags.get(request.key).data.get("environments") or {}
    new = [name for name in named if name not in own]
    if not new:
        return
    known = _known_environments(ws, flags)
    for name in new:
        if name in known:
            continue
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if _has_spec(ws):
            source, new_one = f"the spec {ws.spec_path} defines", "add it to the spec's `environments:`"
        else:
            source, new_one = "known", "create or import a flag that names it"
        message = (
            f"flag {request.key}: no environment {name!r}{hint} ({source}: {', '.join(known)});"
            f" a new environment? {new_one}"
        )
        raise InvalidObjectError(message, [("environment", message)])


def set_flag(ws: Workspace, request: SetFlag, *, backend: FlagBackend | None = None) -> FlagChanged:
    flags = backend or flag_backend(ws)
    _check_environments(ws, flags, request)
    if request.dry_run:
        current = flags.get(request.key)
        change = _documents(flags, current).plan_update(
            request.key,
            current.version,
            definition=request.definition,
            merge_patch=request.merge_patch,
            if_match=request.if_match,
        )
        return FlagChanged.planned(change, current.version)
    if request.definition is not None:
        stored = flags.replace(request.key, request.definition, request.if_match)
    else:
        stored = flags.patch(request.key, request.merge_patch or {}, request.if_match)
    return _changed("update", stored, "flag")


def delete_flag(ws: Workspace, request: DeleteFlag, *, backend: FlagBackend | None = None) -> FlagChanged:
    flags = backend or flag_backend(ws)
    if request.dry_run:
        current = flags.get(request.key)
        change = _documents(flags, current).plan_delete(request.key, current.version, request.if_match)
        return FlagChanged.planned(change, current.version)
    flags.delete(request.key, request.if_match)
    return FlagChanged(action="delete", key=request.key, version=None, after=None)


def import_flags(ws: Workspace, request: ImportFlags, *, backend: FlagBackend | None = None) -> FlagsImported:
    imported = flag_format(request.source).read(request.flags, request.environment)
    flags = backend or flag_backend(ws)
    partial = imported.environments is not None or imported.fields is not None
    current = flags.snapshot() if request.dry_run or partial else None
    # A source that describes part of each flag (one environment) is merged into the flags there.
    flagset = merge_import(current, imported) if current is not None else imported.flagset
    result = FlagsImported(
        flags=len(imported.flagset.flags),
        segments=len(imported.flagset.segments),
        replace=request.replace,
        source=request.source,
        warnings=imported.warnings,
        version=0,
    )
    if current is not None and request.dry_run:
        planned = FlagDocuments.of(current).plan_import(flagset, replace_all=request.replace)
        changes = [
            ObjectChange(action=c.action, target_kind=c.kind, key=c.target, before=c.before, after=c.after)
            for c in planned
        ]
        return result.model_copy(update={"version": current.version, "changes": changes, "dry_run": True})
    return result.model_copy(update={"version": flags.import_set(flagset, replace_all=request.replace)})


def put_segment(ws: Workspace, request: PutSegment, *, backend: FlagBackend | None = None) -> FlagChanged:
    flags = backend or flag_backend(ws)
    if request.dry_run:
        try:
            current: Stored | None = flags.get_segment(request.name)
        except NotFoundError:
            current = None
        version = None if current is None else current.version
        change = _documents(flags, current, "segment").plan_put_segment(
            request.name, request.segment, version, request.if_match
        )
        return FlagChanged.planned(change, version)
    stored = flags.put_segment(request.name, request.segment, request.if_match)
    # A segment starts at version 1 and every write moves it on: version 1 is a new one.
    return _changed("create" if stored.version == 1 else "update", stored, "segment")


def delete_segment(
    ws: Workspace, request: DeleteSegment, *, backend: FlagBackend | None = None
) -> FlagChanged:
    flags = backend or flag_backend(ws)
    if request.dry_run:
        current = flags.get_segment(request.name)
        change = _documents(flags, current, "segment").plan_delete_segment(
            request.name, current.version, request.if_match
        )
        return FlagChanged.planned(change, current.version)
    flags.delete_segment(request.name, request.if_match)
    return FlagChanged(action="delete", target_kind="segment", key=request.name, version=None, after=None)


# --- token verbs ----------------------------------------------------------------------------------


def create_token(ws: Workspace, request: CreateToken) -> TokenCreated:
    """Create an API token in the workspace's state store; the result holds it, once."""
    with ws.sessions() as session:
        if request.dry_run:
            # The check `tokens.create_token` makes, without writing (the request's type has
            # already refused an unknown scope); a dry run has no token value to show.
            if any(row.name == request.name for row in tokens.list_tokens(session)):
                raise UserError(
                    f"a token named {request.name!r} exists; revoke it first or pick another name"
                )
            return TokenCreated(name=request.name, scope=request.scope, prefix=None, token=None, dry_run=True)
        token = tokens.create_token(session, request.name, request.scope, created_by=ws.actor)
    return TokenCreated(name=request.name, scope=request.scope, prefix=token[:14], token=SecretStr(token))


def revoke_token(ws: Workspace, request: RevokeToken) -> TokenRevoked:
    """Revoke an API token (servers stop accepting it within a few seconds)."""
    with ws.sessions() as session:
        row = next((r for r in tokens.list_tokens(session) if r.name == request.name), None)
        if row is None:
            raise UserError(f"no token named {request.name!r}; `shipyard flags token list` shows them")
        revoked_at = None if row.revoked_at is None else as_utc(row.revoked_at)
        result = TokenRevoked(
            name=row.name, scope=row.scope, revoked_before=revoked_at, dry_run=request.dry_run
        )
        if not request.dry_run:
            tokens.revoke_token(session, request.name, revoked_by=ws.actor)
    return result
