"""The dashboard's flag pages: the list (search, filters, the archive), a flag with every environment
of the spec, the rule builder, and the change history as field-level diffs.

Every change goes through the flag verbs of `shipyard.ops` (the ones the API and the CLI call),
on the store the live flag set follows, so that SDKs see it at once and it is audited with the
signed-in token's actor. A refused change comes back as the form, as typed, with each error beside
the field it is about (`_dashboard_flag_forms` maps the model's field paths to form fields).

Archiving a flag deletes it (as `DELETE /feature-flags/{key}` does); its last document stays in the
audit log, from which the archive lists it and a revive creates it again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import (
    InvalidObjectError,
    NotFoundError,
    ShipyardError,
    UnknownEnvironmentError,
    UserError,
)
from ..flags import AuditEntry, LiveFlagSet, LocalBackend, new_key_problem
from ..jobs import JobRunner
from ..ops import (
    CreateFlag,
    DeleteFlag,
    FlagChanged,
    SetFlag,
    Workspace,
    create_flag,
    delete_flag,
    set_flag,
)
from ..spec import DEFAULT_ENVIRONMENTS, load_spec
from ._dashboard_auth import dashboard_actor, same_origin
from ._dashboard_flag_forms import (
    FLAG_KINDS,
    FLAG_TYPES,
    OPERATOR_LABELS,
    PAYLOAD_TYPES,
    FieldProblem,
    ListFilter,
    RuleForm,
    builder_drops,
    describe_rule,
    diff,
    flag_field_errors,
    format_value,
    ordered_environments,
    parse_value,
    rule_field_errors,
)

Actor = Annotated[str, Depends(dashboard_actor)]
Page = Callable[..., HTMLResponse]
Back = Callable[..., RedirectResponse]

HISTORY_LIMIT = 50
ARCHIVE_SCAN = 5000
"""How many of the newest flag audit entries the archive is found in."""
SETTINGS_FIELDS = ("description", "kind", "owner", "default_value")
CREATE_FIELDS = ("key", "type", *SETTINGS_FIELDS)
TEMPLATE_HELPERS = {
    "describe_rule": describe_rule,
    "format_value": format_value,
    "operators": OPERATOR_LABELS,
    "flag_types": FLAG_TYPES,
    "flag_kinds": FLAG_KINDS,
    "payload_types": PAYLOAD_TYPES,
}


# --- reading --------------------------------------------------------------------------------------


def _live(request: Request) -> LiveFlagSet:
    live: LiveFlagSet = request.app.state.live
    return live


def _jobs(request: Request) -> JobRunner:
    jobs: JobRunner = request.app.state.jobs
    return jobs


def _spec_environments(request: Request) -> list[str]:
    """The environments the served spec names, in its order: without a spec, shipyard's default
    ones (a flag change may name those, `ops.set_flag`); [] with a broken spec (the other pages say
    what is wrong with it)."""
    spec = _jobs(request).spec
    if spec is None:
        return list(DEFAULT_ENVIRONMENTS)
    try:
        return list(load_spec(spec).environments)
    except ShipyardError:
        return []


def _environments(request: Request, *documents: Mapping[str, Any]) -> list[str]:
    """Every environment to show a flag in: the spec's, the server's, and each the flags have."""
    return ordered_environments(
        _spec_environments(request),
        [_jobs(request).environment],
        *[sorted(document.get("environments") or {}) for document in documents],
    )


def _archived(live: LiveFlagSet) -> dict[str, AuditEntry]:
    """Flags deleted and not created again, by key: the delete entry (its `before` is the flag)."""
    current = {flag.key for flag in live.store.snapshot().flags}
    newest: dict[str, AuditEntry] = {}
    for entry in live.store.audit(limit=ARCHIVE_SCAN):  # newest first
        newest.setdefault(entry.target, entry)
    return {
        key: entry
        for key, entry in sorted(newest.items())
        if entry.action == "delete" and key not in current and entry.before is not None
    }


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    at: Any
    actor: str
    action: str
    changes: list[Any]


def _history(live: LiveFlagSet, key: str) -> list[HistoryEntry]:
    return [
        HistoryEntry(entry.at, entry.actor, entry.action, diff(entry.before, entry.after))
        for entry in live.store.audit(key, limit=HISTORY_LIMIT)
    ]


# --- writing --------------------------------------------------------------------------------------


def _workspace(request: Request, actor: str) -> Workspace:
    """The workspace a flag verb runs in for the dashboard: the server's spec and environment (as
    the CLI's `-f`/`-e`), the signed-in actor."""
    jobs = _jobs(request)
    return Workspace(spec_path=jobs.spec, environment=jobs.environment, actor=actor)


def _backend(request: Request, actor: str) -> LocalBackend:
    return LocalBackend(_live(request).store, actor)


def _patch(request: Request, actor: str, key: str, patch: dict[str, Any], version: int | None) -> FlagChanged:
    change = SetFlag(key=key, merge_patch=patch, if_match=version)
    return set_flag(_workspace(request, actor), change, backend=_backend(request, actor))


def _refusal(exc: ShipyardError) -> list[tuple[str, str]]:
    """A refused change as (field path, message) problems; an unknown environment is the
    environment field's."""
    if isinstance(exc, InvalidObjectError) and exc.problems:
        return list(exc.problems)
    if isinstance(exc, UnknownEnvironmentError):
        return [("environment", exc.message)]
    return [("", exc.message)]


# --- routes ---------------------------------------------------------------------------------------


def add_flag_routes(router: APIRouter, *, page: Page, back: Back) -> None:
    """Add the flag pages to the dashboard's router (before its catch-all route)."""
    Post = [Depends(same_origin)]

    def flag_page(
        request: Request, actor: str, key: str, state: dict[str, Any] | None = None, status: int = 200
    ) -> HTMLResponse:
        live = _live(request)
        stored = live.store.get(key)
        flag = stored.data
        configured = flag.get("environments") or {}
        return page(
            request,
            "flag.html",
            {
                "actor": actor,
                "flag": flag,
                "version": stored.version,
                "environments": [(name, configured.get(name) or {}) for name in _environments(request, flag)],
                "history": _history(live, key),
                "form": state or {},
                **TEMPLATE_HELPERS,
            },
            status=status,
        )

    def refused(
        request: Request, actor: str, key: str, form: str, errors: dict[str, str], values: dict[str, Any]
    ) -> HTMLResponse:
        state = {"name": form, "errors": errors, "values": values}
        return flag_page(request, actor, key, state, status=422)

    # --- the list -----------------------------------------------------------------------------

    @router.get("/flags", response_class=HTMLResponse)
    def flags(
        request: Request, actor: Actor, q: str = "", type: str = "", state: str = "", archived: str = ""
    ) -> HTMLResponse:
        live = _live(request)
        chosen = ListFilter(q=q.strip()[:200], type=type, state=state, archived=archived == "1")
        documents = [flag.model_dump(mode="json") for flag in live.store.snapshot().flags]
        environments = _environments(request, *documents)
        gone = _archived(live)
        if chosen.archived:
            shown = [entry.before for entry in gone.values() if entry.before and chosen.matches(entry.before)]
        else:
            shown = [d for d in documents if chosen.matches(d)]
        return page(
            request,
            "flags.html",
            {
                "actor": actor,
                "flags": shown,
                "total": len(gone) if chosen.archived else len(documents),
                "archived_count": len(gone),
                "archive": gone,
                "environments": environments,
                "filter": chosen,
                "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                **TEMPLATE_HELPERS,
            },
        )

    def new_page(
        request: Request, actor: str, values: dict[str, str], errors: dict[str, str]
    ) -> HTMLResponse:
        return page(
            request,
            "flag_new.html",
            {"actor": actor, "values": values, "errors": errors, **TEMPLATE_HELPERS},
            status=422 if errors else 200,
        )

    @router.get("/flags/new", response_class=HTMLResponse)
    def new_flag(request: Request, actor: Actor) -> HTMLResponse:
        return new_page(request, actor, {"type": "boolean", "kind": "release"}, {})

    @router.post("/flags", dependencies=Post, response_model=None)
    def create(
        request: Request,
        actor: Actor,
        key: Annotated[str, Form()] = "",
        type: Annotated[str, Form()] = "boolean",
        description: Annotated[str, Form()] = "",
        kind: Annotated[str, Form()] = "release",
        default_value: Annotated[str, Form()] = "",
    ) -> Response:
        values = {
            "key": key.strip(),
            "type": type,
            "description": description.strip(),
            "kind": kind,
            "default_value": default_value,
        }
        errors: dict[str, str] = {}
        if problem := new_key_problem(values["key"]):
            errors["key"] = problem
        document: dict[str, Any] = {"key": values["key"], "type": type, "kind": kind}
        if values["description"]:
            document["description"] = values["description"]
        try:
            document["default_value"] = _default(default_value, type)
        except FieldProblem as exc:
            errors["default_value"] = str(exc)
        if errors:
            return new_page(request, actor, values, errors)
        try:
            create_flag(
                _workspace(request, actor), CreateFlag(flag=document), backend=_backend(request, actor)
            )
        except InvalidObjectError as exc:
            return new_page(request, actor, values, flag_field_errors(_refusal(exc), CREATE_FIELDS))
        except ShipyardError as exc:  # a key that exists (409), the store unreachable
            field = "key" if "exists" in exc.message else ""
            return new_page(request, actor, values, {field: exc.message})
        return back(f"/ui/flags/{values['key']}", f"flag {values['key']} created (off in every environment)")

    @router.post("/flags/{key}/toggle", dependencies=Post)
    def toggle(
        request: Request,
        actor: Actor,
        key: str,
        environment: Annotated[str, Form()],
        enabled: Annotated[str, Form()],
        next: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        on = enabled == "true"
        # Back to the list as it was filtered, or to the flag's page; never elsewhere.
        to = next if next.startswith(("/ui/flags?", f"/ui/flags/{key}")) and "\\" not in next else "/ui/flags"
        try:
            _patch(request, actor, key, {"environments": {environment: {"enabled": on}}}, None)
        except ShipyardError as exc:
            return back(to, exc.message, "error")
        return back(to, f"{key} is now {'on' if on else 'off'} in {environment}")

    # --- one flag -----------------------------------------------------------------------------

    @router.get("/flags/{key}", response_class=HTMLResponse)
    def flag(request: Request, actor: Actor, key: str) -> HTMLResponse:
        try:
            return flag_page(request, actor, key)
        except NotFoundError as exc:
            gone = _archived(_live(request)).get(key)
            message = exc.message + (": it is archived; revive it from the archive" if gone else "")
            return page(request, "missing.html", {"actor": actor, "message": message}, status=404)

    @router.post("/flags/{key}/settings", dependencies=Post, response_model=None)
    def settings(
        request: Request,
        actor: Actor,
        key: str,
        description: Annotated[str, Form()] = "",
        kind: Annotated[str, Form()] = "release",
        owner: Annotated[str, Form()] = "",
        default_value: Annotated[str, Form()] = "",
        version: Annotated[int | None, Form()] = None,
    ) -> Response:
        values = {"description": description, "kind": kind, "owner": owner, "default_value": default_value}
        try:
            flag_type = _live(request).store.get(key).data.get("type", "boolean")
            patch: dict[str, Any] = {"description": description.strip(), "kind": kind}
            patch["owner"] = owner.strip() or None
            patch["default_value"] = parse_value(default_value, flag_type)
        except FieldProblem as exc:
            return refused(request, actor, key, "settings", {"default_value": str(exc)}, values)
        except NotFoundError as exc:
            return back("/ui/flags", exc.message, "error")
        try:
            _patch(request, actor, key, patch, version)
        except ShipyardError as exc:
            errors = flag_field_errors(_refusal(exc), SETTINGS_FIELDS)
            return refused(request, actor, key, "settings", errors, values)
        return back(f"/ui/flags/{key}", f"settings of {key} saved")

    @router.post("/flags/{key}/value", dependencies=Post, response_model=None)
    def environment_value(
        request: Request,
        actor: Actor,
        key: str,
        environment: Annotated[str, Form()],
        value: Annotated[str, Form()] = "",
        version: Annotated[int | None, Form()] = None,
    ) -> Response:
        """The value an environment serves when on and no rule matches (empty: the default)."""
        form = f"value:{environment}"
        try:
            flag_type = _live(request).store.get(key).data.get("type", "boolean")
            served = parse_value(value, flag_type) if value.strip() else None
        except FieldProblem as exc:
            return refused(request, actor, key, form, {"value": str(exc)}, {"value": value})
        except NotFoundError as exc:
            return back("/ui/flags", exc.message, "error")
        try:
            _patch(request, actor, key, {"environments": {environment: {"value": served}}}, version)
        except ShipyardError as exc:
            errors = rule_field_errors(_refusal(exc), environment, -1)
            if "" in errors and f"environments.{environment}.value" in errors[""]:
                errors["value"] = errors.pop("")
            return refused(request, actor, key, form, errors, {"value": value})
        return back(f"/ui/flags/{key}", f"value of {key} in {environment} saved")

    # --- rules --------------------------------------------------------------------------------

    def builder(
        request: Request,
        actor: str,
        key: str,
        rule: RuleForm,
        errors: dict[str, str],
        status: int = 200,
        drops: list[str] | None = None,
    ) -> HTMLResponse:
        stored = _live(request).store.get(key)
        return page(
            request,
            "flag_rule.html",
            {
                "actor": actor,
                "flag": stored.data,
                "version": stored.version,
                "rule": rule.with_blank_rows(),
                "drops": drops or [],
                "errors": errors,
                "environments": _environments(request, stored.data),
                **TEMPLATE_HELPERS,
            },
            status=status,
        )

    @router.get("/flags/{key}/rule", response_class=HTMLResponse)
    def rule_builder(
        request: Request, actor: Actor, key: str, environment: str = "", index: int | None = None
    ) -> HTMLResponse:
        try:
            flag = _live(request).store.get(key).data
        except NotFoundError as exc:
            return page(request, "missing.html", {"actor": actor, "message": exc.message}, status=404)
        flag_type = flag.get("type", "boolean")
        environment = environment or _environments(request, flag)[0]
        rules = ((flag.get("environments") or {}).get(environment) or {}).get("rules", [])
        if index is not None and 0 <= index < len(rules):
            form = RuleForm.of_rule(environment, index, rules[index], flag_type)
            return builder(request, actor, key, form, {}, drops=builder_drops(rules[index]))
        return builder(request, actor, key, RuleForm.blank(environment, flag_type), {})

    @router.post("/flags/{key}/rule", dependencies=Post, response_model=None)
    async def save_rule(request: Request, actor: Actor, key: str) -> Response:
        posted = await request.form()
        fields: dict[str, Sequence[str]] = {
            name: [v for v in posted.getlist(name) if isinstance(v, str)] for name in posted
        }
        version = (fields.get("version") or [""])[0]
        form = RuleForm.of_form(fields)
        return await run_in_threadpool(
            _save_rule, request, actor, key, form, int(version) if version.isdigit() else None
        )

    def _save_rule(request: Request, actor: str, key: str, form: RuleForm, version: int | None) -> Response:
        try:
            flag = _live(request).store.get(key).data
        except NotFoundError as exc:
            return back("/ui/flags", exc.message, "error")
        flag_type = flag.get("type", "boolean")
        rules = list(((flag.get("environments") or {}).get(form.environment) or {}).get("rules", []))
        document, errors = form.to_rule(flag_type)
        index = form.index if form.index is not None and form.index < len(rules) else len(rules)
        if not form.environment:
            errors["environment"] = "choose the environment the rule is for"
        if errors:
            return builder(request, actor, key, form, errors, status=422)
        rules[index : index + 1] = [document]
        try:
            _patch(request, actor, key, {"environments": {form.environment: {"rules": rules}}}, version)
        except ShipyardError as exc:
            errors = rule_field_errors(_refusal(exc), form.environment, index)
            return builder(request, actor, key, form, errors, status=422)
        said = "saved" if form.index is not None else "added"
        return back(f"/ui/flags/{key}", f"rule {index + 1} of {key} in {form.environment} {said}")

    @router.post("/flags/{key}/rules/delete", dependencies=Post)
    def delete_rule(
        request: Request,
        actor: Actor,
        key: str,
        environment: Annotated[str, Form()],
        index: Annotated[int, Form()],
        version: Annotated[int | None, Form()] = None,
    ) -> RedirectResponse:
        try:
            flag = _live(request).store.get(key).data
            rules = list(((flag.get("environments") or {}).get(environment) or {}).get("rules", []))
            if not 0 <= index < len(rules):
                raise UserError(f"{key} has no rule {index + 1} in {environment}")
            del rules[index]
            _patch(request, actor, key, {"environments": {environment: {"rules": rules}}}, version)
        except ShipyardError as exc:
            return back(f"/ui/flags/{key}", exc.message, "error")
        return back(f"/ui/flags/{key}", f"rule {index + 1} of {key} in {environment} deleted")

    @router.post("/flags/{key}/rules", dependencies=Post, response_model=None)
    def edit_rules(
        request: Request,
        actor: Actor,
        key: str,
        environment: Annotated[str, Form()],
        rules: Annotated[str, Form()],
        version: Annotated[int | None, Form()] = None,
    ) -> Response:
        """All of an environment's rules as JSON (the builder's escape hatch)."""
        messages: list[str]
        try:
            parsed = json.loads(rules or "[]")
            if not isinstance(parsed, list):
                raise InvalidObjectError("the rules must be a JSON list of rules: [{...}, ...]")
            _patch(request, actor, key, {"environments": {environment: {"rules": parsed}}}, version)
        except json.JSONDecodeError as exc:
            messages = [f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]
        except NotFoundError as exc:
            return back("/ui/flags", exc.message, "error")
        except ShipyardError as exc:
            messages = [f"{path}: {message}" if path else message for path, message in _refusal(exc)]
        else:
            return back(f"/ui/flags/{key}", f"rules of {key} in {environment} saved")
        state = {"name": f"json:{environment}", "errors": {"rules": messages}, "values": {"rules": rules}}
        return flag_page(request, actor, key, state, status=422)

    # --- archive ------------------------------------------------------------------------------

    @router.post("/flags/{key}/archive", dependencies=Post)
    def archive(
        request: Request, actor: Actor, key: str, version: Annotated[int | None, Form()] = None
    ) -> RedirectResponse:
        try:
            delete_flag(
                _workspace(request, actor),
                DeleteFlag(key=key, if_match=version),
                backend=_backend(request, actor),
            )
        except ShipyardError as exc:
            return back(f"/ui/flags/{key}", exc.message, "error")
        return back(
            "/ui/flags", f"{key} archived: SDKs get their defaults for it; revive it from the archive"
        )

    @router.post("/flags/{key}/revive", dependencies=Post)
    def revive(request: Request, actor: Actor, key: str) -> RedirectResponse:
        gone = _archived(_live(request)).get(key)
        if gone is None or gone.before is None:
            return back("/ui/flags?archived=1", f"no archived flag {key!r}", "error")
        try:
            create_flag(
                _workspace(request, actor), CreateFlag(flag=gone.before), backend=_backend(request, actor)
            )
        except ShipyardError as exc:
            return back("/ui/flags?archived=1", exc.message, "error")
        return back(f"/ui/flags/{key}", f"{key} revived as it was when archived")


def _default(text: str, flag_type: str) -> Any:
    """A new flag's default value; empty: the type's zero (false, "", 0, {})."""
    if not text.strip():
        return {"boolean": False, "string": "", "number": 0, "json": {}}.get(flag_type, False)
    return parse_value(text, flag_type)
