"""Every action the code writes to the audit log has a retention class, and the default policy keeps
each world-changing one for the compliance retention (7 years), not the regular 90 days.

The actions are read from the source: every `record_audit(...)` and `AuditRow(...)` call under
src/shipyard, its `action` a literal, an f-string (a family such as `rollout.`), or one of the few
indirections listed in `_expand` (a new indirection fails here until it is listed and classed).
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

import shipyard
from shipyard.dr._failover import DrReport
from shipyard.flags._store import ChangeAction
from shipyard.jobs._requests import KINDS as JOB_KINDS
from shipyard.spec import AUDIT_ACTIONS, Audit, retention_class
from shipyard.state import AuditRow, open_engine, session_factory
from shipyard.state._audit import audit_cutoffs, expired, prune_audit

SOURCE = Path(shipyard.__file__).parent
FAMILIES = {a.action for a in AUDIT_ACTIONS if a.action.endswith(".")}
NOW = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365)

# The list: each of these was kept for 90 days only.
WORLD_CHANGING = [
    "create",  # a flag (or segment) created, changed, deleted: the flag store's actions
    "update",
    "delete",
    "backup.restore",
    "backup.pitr.restore",
    "job.restore",
    "rollout.rollback",
    "rollout.abort",
    "job.rollback",
    "deploy",
    "dr.failover",
    "dr.failback",
    "token.create",
    "token.revoke",
]


def _literal(node: ast.expr) -> str | None:
    """A literal action, or the fixed start of an f-string one (`rollout.` of f"rollout.{x}")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        start = ""
        for part in node.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            start += part.value
        return start
    return None


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _named(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


class _Module:
    """One source file, for following an `action` handed through the file's own wrappers."""

    def __init__(self, file: Path) -> None:
        self.path = file.relative_to(SOURCE).as_posix()
        self.text = file.read_text()
        self.tree = ast.parse(self.text, filename=str(file))
        self.parents = _parents(self.tree)
        self.constants = {
            target.id: node.value
            for node in self.tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }

    def actions(self, node: ast.expr, depth: int = 0) -> list[str]:
        """The actions an expression handed as an audit action can be."""
        if isinstance(node, ast.Name) and node.id in self.constants:
            node = self.constants[node.id]  # a module's own constant, e.g. DROP_ACTION = "..."
        literal = _literal(node)
        if literal and (isinstance(node, ast.Constant) or literal in FAMILIES):
            return [literal]
        if isinstance(node, ast.Name) and depth < 4 and (sources := self._sources(node)):
            return [action for source in sources for action in self.actions(source, depth + 1)]
        return _expand(self.path, ast.get_source_segment(self.text, node) or "", node.lineno)

    def _sources(self, name: ast.Name) -> list[ast.expr]:
        """Where the value of `name` comes from: what the enclosing function assigns to it, or,
        for one of its parameters, what the calls in this file hand it."""
        function = self.parents.get(name)
        while function is not None and not isinstance(function, ast.FunctionDef):
            function = self.parents.get(function)
        if function is None:
            return []
        assigned = [
            node.value
            for node in ast.walk(function)
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name.id for t in node.targets)
        ]
        if assigned:
            return assigned
        params = [a.arg for a in function.args.args]
        if name.id not in params:
            return []
        position = params.index(name.id)
        found = []
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call):
                continue
            arguments = node.args
            if _called(node) == "to_thread" and arguments and _named(arguments[0], function.name):
                arguments = arguments[1:]  # asyncio.to_thread(function, *its arguments)
            elif _called(node) != function.name:
                continue
            keyword = next((k.value for k in node.keywords if k.arg == name.id), None)
            found.append(keyword if keyword is not None else arguments[position])
        return found


def _expand(path: str, expression: str, line: int) -> list[str]:
    """The actions an `action=` computed some other way can be; fails for one not listed here."""
    if expression.startswith("action_of("):  # jobs: job.<kind>
        return [f"job.{kind}" for kind in JOB_KINDS]
    if path == "flags/_store.py" and expression == "change.action":  # the store's own _audit
        return list(get_args(ChangeAction))
    if path == "dr/_failover.py" and expression == 'f"dr.{self.action}"':
        return [f"dr.{action}" for action in get_args(get_type_hints(DrReport)["action"])]
    raise AssertionError(
        f"src/shipyard/{path}:{line}: audit action {expression!r} is computed in a way this test does"
        " not know; list it in _expand and class its actions in spec/_audit_actions.py"
    )


def recorded_actions() -> dict[str, str]:
    """Every action (or family) the code writes to the audit log, with where it is written."""
    actions: dict[str, str] = {}
    for file in sorted(SOURCE.rglob("*.py")):
        if file.relative_to(SOURCE).as_posix().startswith("state/"):
            continue  # record_audit's own definition
        module = _Module(file)
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Call) or _called(node) not in ("record_audit", "AuditRow"):
                continue
            argument = next((k.value for k in node.keywords if k.arg == "action"), None)
            if argument is None:
                continue
            for kind in module.actions(argument):
                actions.setdefault(kind, f"{module.path}:{node.lineno}")
    return actions


RECORDED = recorded_actions()


def test_the_source_scan_finds_the_known_writers() -> None:
    # A guard against a scan that silently finds nothing.
    for expected in ("deploy", "dr.failover", "rollout.", "backup.restore", "create", "job.deploy", "login"):
        assert expected in RECORDED, sorted(RECORDED)


@pytest.mark.parametrize("action", sorted(RECORDED))
def test_every_recorded_action_has_a_retention_class(action: str) -> None:
    assert retention_class(action) is not None, (
        f"{action!r} (written at {RECORDED[action]}) is in no entry of spec/_audit_actions.py AUDIT_ACTIONS"
    )


@pytest.mark.parametrize("action", sorted(RECORDED))
def test_the_default_policy_keeps_each_action_as_its_class_says(action: str) -> None:
    policy = Audit()
    cutoffs = audit_cutoffs(NOW, policy.retention, policy.compliance_retention, policy.compliance_actions)
    sample = action + "x" if action.endswith(".") else action  # a family: one of its members
    year_old = expired(NOW - YEAR, sample, cutoffs)
    if retention_class(action) == "compliance":
        assert not year_old, f"{action} ({RECORDED[action]}) is world-changing: kept for 7 years"
        assert expired(NOW - 8 * YEAR, sample, cutoffs)
    else:
        assert year_old, f"{action} ({RECORDED[action]}) is a security entry: kept for `retention`"


@pytest.mark.parametrize("action", WORLD_CHANGING)
def test_flag_changes_restores_rollbacks_and_failovers_are_kept_for_seven_years(action: str) -> None:
    policy = Audit()
    assert policy.compliance_retention >= 7 * 365 * 86400
    cutoffs = audit_cutoffs(NOW, policy.retention, policy.compliance_retention, policy.compliance_actions)
    assert retention_class(action) == "compliance"
    assert not expired(NOW - 6 * YEAR, action, cutoffs)


def test_each_catalogued_action_is_written_somewhere() -> None:
    # A class for an action nothing writes any more is dead weight that hides a rename.
    for entry in AUDIT_ACTIONS:
        assert any(kind == entry.action or kind.startswith(entry.action) for kind in RECORDED), entry


def test_a_prune_by_the_default_policy_keeps_every_compliance_entry_on_a_real_store(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'state.db'}")
    sessions = session_factory(engine)
    year_ago = dt.datetime.now(dt.UTC) - YEAR
    samples = sorted({a + "x" if a.endswith(".") else a for a in RECORDED})
    with sessions() as session, session.begin():
        for action in samples:
            session.add(AuditRow(at=year_ago, actor="t", action=action, target_kind="t", target="t"))
    policy = Audit()
    cutoffs = audit_cutoffs(
        dt.datetime.now(dt.UTC), policy.retention, policy.compliance_retention, policy.compliance_actions
    )
    prune_audit(sessions, cutoffs)
    with sessions() as session:
        kept = {row.action for row in session.query(AuditRow)}
    assert kept == {a for a in samples if retention_class(a) == "compliance"}
    assert "login" in samples
    assert "login" not in kept
    engine.dispose()
