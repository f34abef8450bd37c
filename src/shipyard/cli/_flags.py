"""`shipyard flags …` (against `--url` or the local state store) and `shipyard serve`."""

from __future__ import annotations

import datetime as dt
import difflib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from .. import ops
from ..errors import InvalidObjectError, UserError
from ..flags import FlagBackend, FlagStore, LocalBackend, RemoteBackend, new_key_problem, stale_flags
from ..flags._formats import FormatName, flag_format
from ..ops import Workspace
from ..spec import load_spec
from ..state import open_existing, rfc3339, session_factory
from ..tokens import SCOPES, list_tokens
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
    console_err,
    emit,
)
from ._tables import fitted, shown_time, whole, wrapped

flags_app = typer.Typer(
    help="Feature flags: list, change, evaluate, audit, export and import.", no_args_is_help=True
)
token_app = typer.Typer(help="API tokens for the server (admin writes, client reads).", no_args_is_help=True)
flags_app.add_typer(token_app, name="token")

UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="SHIPYARD_URL", help="A shipyard server; default: the local store."),
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="SHIPYARD_TOKEN", help="API token for --url.")
]
IfMatchOption = Annotated[
    int | None, typer.Option("--if-match", help="Fail unless the flag is at this version.")
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Show what would change (checked as the change would be); change nothing."
    ),
]
ChangeOutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="table (a line, a diff for a dry run) or json|yaml.")
]


def register(app: typer.Typer) -> None:
    app.add_typer(flags_app, name="flags")
    app.command("serve")(serve)


def backend(url: str | None, token: str | None, database_url: str | None) -> FlagBackend:
    """Where a flag verb that only reads looks: a server's API with `--url`, else the state store,
    which must exist already (a read creates none)."""
    if url:
        return RemoteBackend(url, token)
    return LocalBackend(FlagStore(session_factory(open_existing(database_url))), actor())


def workspace(database_url: str | None) -> Workspace:
    """The workspace the flag and token verbs run in: the state store and who acts.

    Flag commands take no spec: the workspace has none.
    """
    return Workspace(database_url=database_url, actor=actor())


def change_backend(url: str | None, token: str | None, ws: Workspace) -> FlagBackend:
    """Where a flag verb writes: a server's API with `--url`, else the workspace's state store."""
    return RemoteBackend(url, token) if url else ops.flag_backend(ws)


def _yaml_lines(document: dict[str, Any] | None) -> list[str]:
    if document is None:
        return []
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).splitlines()


def show_change(result: ops.FlagChanged, output: Output, done: str) -> None:
    """A flag verb's result: `done` for a write, the planned before/after (a diff) for a dry run."""
    if emit(result.model_dump(mode="json"), output):
        return
    if not result.dry_run:
        console.print(done, markup=False)
        return
    console.print(f"{result.summary()}; nothing was changed", markup=False)
    diff = difflib.unified_diff(
        _yaml_lines(result.before),
        _yaml_lines(result.after),
        fromfile=f"{result.key} (version {result.before_version})" if result.before is not None else "(none)",
        tofile=f"{result.key} (after)" if result.after is not None else "(deleted)",
        lineterm="",
    )
    for line in diff:
        typer.echo(line)


def _parse_value(text: str) -> Any:
    """A value as JSON when it parses (true, 3, "x", {...}), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@flags_app.command("list")
def list_(
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Every flag, its type and where it is on."""
    flagset = backend(url, token, database_url).snapshot()
    if emit({"version": flagset.version, **flagset.to_data()}, output):
        return
    columns = (
        whole("key"),
        wrapped("type", drop=3),
        wrapped("kind", drop=2),
        wrapped("on in"),
        wrapped("rules", drop=1),
        wrapped("owner", drop=4),
        wrapped("description", drop=5),
    )
    rows = []
    for flag in flagset.flags:
        on = [name for name, env in flag.environments.items() if env.enabled]
        rules = sum(len(env.rules) for env in flag.environments.values())
        rows.append(
            (
                escape(flag.key),
                flag.type,
                flag.kind,
                escape(", ".join(on)) or "-",
                str(rules),
                escape(flag.owner or "-"),
                escape(flag.description),
            )
        )
    console.print(fitted(columns, rows, title=f"flag set version {flagset.version}"))


@flags_app.command("get")
def get(
    key: str,
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.yaml,
) -> None:
    """One flag's definition and version."""
    stored = backend(url, token, database_url).get(key)
    data = {"version": stored.version, "flag": stored.data}
    if not emit(
        data, Output.yaml if output is Output.table else output
    ):  # pragma: no cover - emit handles yaml
        console.print(data)


@flags_app.command("create")
def create(
    key: Annotated[str | None, typer.Argument(help="The flag key (or give --definition).")] = None,
    flag_type: Annotated[str, typer.Option("--type", help="boolean|string|number|json")] = "boolean",
    default: Annotated[str, typer.Option("--default", help="The default value (JSON).")] = "false",
    description: Annotated[str, typer.Option("--description")] = "",
    kind: Annotated[
        str, typer.Option("--kind", help="release|experiment|operational|kill-switch|permission")
    ] = "release",
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    definition: Annotated[
        Path | None,
        typer.Option("--definition", help="A YAML/JSON file with the whole flag.", dir_okay=False),
    ] = None,
    dry_run: DryRunOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: ChangeOutputOption = Output.table,
) -> None:
    """Create a flag from options or from a file."""
    if definition is not None:
        data = yaml.safe_load(definition.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise UserError(f"{definition}: expected one flag as a mapping")
    elif key:
        data = {
            "key": key,
            "type": flag_type,
            "default_value": _parse_value(default),
            "description": description,
            "kind": kind,
        }
        if owner:
            data["owner"] = owner
    else:
        raise UserError("give the flag's key, or --definition with a file of the whole flag")
    if problem := new_key_problem(data.get("key")):  # imported flags may keep Unleash's names
        raise InvalidObjectError(problem, [("key", problem)])
    ws = workspace(database_url)
    request = ops.CreateFlag(flag=data, dry_run=dry_run)
    result = ops.create_flag(ws, request, backend=change_backend(url, token, ws))
    show_change(result, output, f"created {result.key} (version {result.version})")


@flags_app.command("set")
def set_(
    key: str,
    environment: Annotated[str, typer.Option("--env", "-e", help="The environment to change.")],
    on: Annotated[bool | None, typer.Option("--on/--off", help="Turn the flag on or off there.")] = None,
    value: Annotated[
        str | None, typer.Option("--value", help="The value served there when no rule matches (JSON).")
    ] = None,
    if_match: IfMatchOption = None,
    dry_run: DryRunOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: ChangeOutputOption = Output.table,
) -> None:
    """Turn a flag on or off in one environment, or set the value it serves there."""
    change: dict[str, Any] = {}
    if on is not None:
        change["enabled"] = on
    if value is not None:
        change["value"] = _parse_value(value)
    if not change:
        raise UserError("nothing to change: give --on, --off or --value")
    ws = workspace(database_url)
    request = ops.SetFlag(
        key=key, merge_patch={"environments": {environment: change}}, if_match=if_match, dry_run=dry_run
    )
    result = ops.set_flag(ws, request, backend=change_backend(url, token, ws))
    after = result.after or {}
    state = "on" if after.get("environments", {}).get(environment, {}).get("enabled") else "off"
    show_change(result, output, f"{key} is {state} in {environment} (version {result.version})")


@flags_app.command("delete")
def delete(
    key: str,
    if_match: IfMatchOption = None,
    dry_run: DryRunOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: ChangeOutputOption = Output.table,
) -> None:
    """Delete a flag (refused while another flag requires it)."""
    ws = workspace(database_url)
    request = ops.DeleteFlag(key=key, if_match=if_match, dry_run=dry_run)
    result = ops.delete_flag(ws, request, backend=change_backend(url, token, ws))
    show_change(result, output, f"deleted {key}")


@flags_app.command("eval")
def eval_(
    key: str,
    environment: Annotated[str, typer.Option("--env", "-e")] = "production",
    context: Annotated[
        list[str] | None, typer.Option("--context", "-c", help="attribute=value, repeatable (userId=42).")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Evaluate a flag for a context, as an SDK would."""
    attributes: dict[str, Any] = {"environment": environment}
    for item in context or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise UserError(f"--context {item!r}: write attribute=value")
        attributes[name] = raw
    result = backend(url, token, database_url).evaluate(key, attributes, environment)
    if emit(result, output):
        return
    error = f"  error {result['errorCode']}: {result['errorMessage']}" if result.get("errorCode") else ""
    variant = result["variant"] or "-"
    console.print(
        f"{key} = {json.dumps(result['value'])}  (variant {variant}, reason {result['reason']}){error}"
    )


@flags_app.command("audit")
def audit(
    key: str,
    limit: int = 50,
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Who changed a flag, when, and what it was before and after."""
    entries = backend(url, token, database_url).audit(key, limit)
    if emit(entries, output):
        return
    rows = [
        (
            shown_time(entry["at"]),
            escape(entry["actor"]),
            entry["action"],
            escape(_changed_fields(entry["before"], entry["after"])),
        )
        for entry in entries
    ]
    columns = (whole("when"), wrapped("who"), wrapped("action"), wrapped("changed"))
    console.print(fitted(columns, rows, title=f"audit of {escape(key)}"))


def _changed_fields(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    before, after = before or {}, after or {}
    return ", ".join(sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))) or "-"


FormatEnvironmentOption = Annotated[
    str,
    typer.Option(
        "--env",
        "-e",
        "--environment",
        help="The environment a one-environment format (unleash, flagd) holds.",
    ),
]


def _invalid(where: str, exc: InvalidObjectError) -> UserError:
    """An InvalidObjectError as the CLI shows it: the message, then each problem on its own line."""
    lines = [f"  {field}: {message}" if field else f"  {message}" for field, message in exc.problems]
    return UserError("\n".join([f"{where}: {exc.message}" + (":" if lines else ""), *lines]))


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        console_err.print(f"warning: {warning}", markup=False)


@flags_app.command("export")
def export(
    file: Annotated[
        Path | None, typer.Argument(help="Write here (default: stdout); .json writes JSON.")
    ] = None,
    to: Annotated[
        FormatName,
        typer.Option(
            "--to",
            help="shipyard (YAML, or JSON for a .json file), unleash (Unleash's admin export), flagd, "
            "or openfeature-json (the OpenFeature CLI's flag manifest); the others are JSON.",
        ),
    ] = FormatName.shipyard,
    environment: FormatEnvironmentOption = "production",
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
) -> None:
    """The whole flag set in the import format, or in another tool's (--to), all or nothing."""
    flagset = backend(url, token, database_url).snapshot()
    try:
        exported = flag_format(to).write(flagset, environment)
    except InvalidObjectError as exc:
        raise _invalid(f"--to {to.value}", exc) from None
    if to is not FormatName.shipyard:
        text = json.dumps(exported.document, indent=2, ensure_ascii=False)
    elif file and file.suffix == ".json":
        text = json.dumps(exported.document, indent=2)
    else:
        text = flagset.to_yaml()
    _warn(exported.warnings)
    if file is None:
        typer.echo(text.rstrip())
    else:
        file.write_text(text, encoding="utf-8")
        console.print(f"wrote {len(flagset.flags)} flags and {len(flagset.segments)} segments to {file}")


def _read_document(file: Path) -> Any:
    """A YAML or JSON file's content (JSON is YAML)."""
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{file}: no such file") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{file}: not valid YAML or JSON: {exc}") from None


@flags_app.command("import")
def import_(
    file: Path,
    source: Annotated[
        FormatName,
        typer.Option(
            "--from",
            help="shipyard (a flag set, or a shipyard.yaml's flags), unleash (an admin export or the "
            "client API's state), flagd, or openfeature-json (a flag manifest: types and defaults).",
        ),
    ] = FormatName.shipyard,
    environment: FormatEnvironmentOption = "production",
    replace: Annotated[bool, typer.Option("--replace", help="Delete flags the file does not hold.")] = False,
    dry_run: DryRunOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: ChangeOutputOption = Output.table,
) -> None:
    """Import a flag file, all or nothing: a construct with no equivalent fails the whole import.

    A one-environment format (unleash, flagd) is read into --env; the flags there keep their other
    environments.
    """
    data = _read_document(file)
    if source is FormatName.shipyard:
        if isinstance(data, dict) and "name" in data and "flags" in data:
            # A stack spec: validated whole (its flags included), then its flags section imported.
            stack_spec = load_spec(file)
            data = stack_spec.stack(stack_spec.environments[0]).flags
        if not isinstance(data, dict | list | None):
            raise UserError(f"{file}: not a valid flag set: expected a mapping or a list of flags")
    elif not isinstance(data, dict):
        raise UserError(f"{file}: not a {source.value} document: expected a JSON object")
    ws = workspace(database_url)
    request = ops.ImportFlags(
        flags=data or {}, source=source, environment=environment, replace=replace, dry_run=dry_run
    )
    try:
        result = ops.import_flags(ws, request, backend=change_backend(url, token, ws))
    except InvalidObjectError as exc:
        raise _invalid(str(file), exc) from None
    if emit(result.model_dump(mode="json"), output):
        return
    _warn(result.warnings)
    if not result.dry_run:
        console.print(
            f"imported {result.flags} flags from {file}; flag set version {result.version}", markup=False
        )
        return
    console.print(f"{result.summary()}; nothing was changed", markup=False)
    for change in result.changes or []:
        fields = f": {_changed_fields(change.before, change.after)}" if change.action == "update" else ""
        typer.echo(f"  {change.action} {change.target_kind} {change.key}{fields}")


@flags_app.command("stale")
def stale(
    url: UrlOption = None,
    token: TokenOption = None,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Flags that have outlived their kind's expected lifetime: remove them from the code."""
    found = stale_flags(backend(url, token, database_url).snapshot(), dt.datetime.now(dt.UTC))
    data: list[dict[str, Any]] = [
        {"key": s.key, "kind": s.kind, "overdue_days": s.overdue.days, "owner": s.owner} for s in found
    ]
    if emit(data, output):
        return
    if not data:
        console.print("no stale flags")
        return
    rows = [
        (escape(row["key"]), row["kind"], str(row["overdue_days"]), escape(row["owner"] or "-"))
        for row in data
    ]
    columns = (
        whole("key"),
        wrapped("kind", drop=1),
        whole("overdue (days)", justify="right"),
        wrapped("owner"),
    )
    console.print(fitted(columns, rows, title="stale flags"))


@token_app.command("create")
def token_create(
    name: str,
    scope: Annotated[
        str, typer.Option("--scope", help="admin (writes) or client (reads, evaluates).")
    ] = "client",
    dry_run: DryRunOption = False,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: ChangeOutputOption = Output.table,
) -> None:
    """Create a token in the state store; it is printed once and never stored."""
    if scope not in SCOPES:
        raise UserError(f"--scope {scope!r}: use admin or client")
    request = ops.CreateToken(name=name, scope=scope, dry_run=dry_run)
    result = ops.create_token(workspace(database_url), request)
    data = result.model_dump(mode="json")
    if result.token is not None:
        data["token"] = result.token.get_secret_value()  # asked for: the one time it is shown
    if emit(data, output):
        return
    if result.token is None:
        console.print(f"{result.summary()}; nothing was changed", markup=False)
        return
    console.print(f"token {name!r} ({scope}); keep it now, it is not shown again:", style="bold")
    typer.echo(result.token.get_secret_value())


@token_app.command("list")
def token_list(
    spec: SpecOption = DEFAULT_SPEC, database_url: DatabaseOption = None, output: OutputOption = Output.table
) -> None:
    """Tokens by name, scope and state (never their values)."""
    with session_factory(open_existing(database_url))() as session:
        rows: list[dict[str, Any]] = [
            {
                "name": r.name,
                "scope": r.scope,
                "prefix": r.prefix,
                "created_at": rfc3339(r.created_at),
                "revoked": r.revoked_at is not None,
            }
            for r in list_tokens(session)
        ]
    if emit(rows, output):
        return
    columns = (
        whole("name"),
        wrapped("scope"),
        whole("prefix"),
        whole("created", drop=1),
        wrapped("revoked"),
    )
    cells = [
        (
            escape(row["name"]),
            row["scope"],
            row["prefix"],
            shown_time(row["created_at"]),
            "yes" if row["revoked"] else "no",
        )
        for row in rows
    ]
    console.print(fitted(columns, cells, title="API tokens"))


@token_app.command("revoke")
def token_revoke(
    name: str,
    dry_run: DryRunOption = False,
    spec: SpecOption = DEFAULT_SPEC,
    database_url: DatabaseOption = None,
    output: ChangeOutputOption = Output.table,
) -> None:
    """Revoke a token (servers stop accepting it within a few seconds)."""
    result = ops.revoke_token(workspace(database_url), ops.RevokeToken(name=name, dry_run=dry_run))
    if emit(result.model_dump(mode="json"), output):
        return
    if not result.dry_run:
        console.print(f"revoked {name}", markup=False)
        return
    already = f" (revoked already at {rfc3339(result.revoked_before)})" if result.revoked_before else ""
    console.print(f"{result.summary()}{already}; nothing was changed", markup=False)


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    auto = "auto"
    json = "json"
    text = "text"


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    database_url: DatabaseOption = None,
    environment: Annotated[
        str, typer.Option("--env", "-e", help="Default environment for flag evaluation.")
    ] = "production",
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    spec: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", envvar="SHIPYARD_SPEC", dir_okay=False, help="Run this stack's backup schedules."
        ),
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", envvar="SHIPYARD_LOG_LEVEL", help="Log this and above.")
    ] = LogLevel.info,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            envvar="SHIPYARD_LOG_FORMAT",
            help="Log lines on stderr: json, text, or auto (json unless stderr is a terminal).",
        ),
    ] = LogFormat.auto,
    log_evaluations: Annotated[
        bool,
        typer.Option(
            "--log-evaluations",
            help="Write an access line for every flag evaluation that succeeds too (failures always are).",
        ),
    ] = False,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Run the shipyard server: the flag API, /healthz, /readyz, /metrics and the scheduler."""
    # Imported here: the web stack takes a moment to load and only `serve` needs it.
    from ..server import ServerConfig  # noqa: PLC0415
    from ..server import serve as run_server  # noqa: PLC0415

    console.print(f"shipyard serving on http://{host}:{port} (API docs at /docs)")
    from ..rollout import KubeConnection  # noqa: PLC0415

    kube = KubeConnection(str(kubeconfig) if kubeconfig else None, context)
    config = ServerConfig(
        database_url=database_url,
        environment=environment,
        spec=spec,
        kube=kube,
        log_evaluations=log_evaluations,
    )
    log_json = None if log_format is LogFormat.auto else log_format is LogFormat.json
    run_server(config, host, port, workers, log_level=log_level.value, log_json=log_json)
