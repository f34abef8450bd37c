"""`shipyard audit` and `shipyard audit prune` on a real SQLite store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.state import AuditRow, open_engine, session_factory, utcnow

SPEC = """\
name: shop
audit: {retention: 30d, compliance_retention: 365d, compliance_actions: [deploy]}
environments:
  production: {}
"""


def _store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    sessions = session_factory(open_engine(url))
    now = utcnow()
    with sessions() as session, session.begin():
        for days, actor, action, outcome in [
            (0, "token:ops", "deploy", "succeeded"),
            (2, "cli:bob", "flag.update", "ok"),
            (40, "cli:bob", "backup.run", "succeeded"),
            (40, "token:ops", "deploy", "started"),
            (400, "token:ops", "deploy", "succeeded"),
        ]:
            session.add(
                AuditRow(
                    at=now - dt.timedelta(days=days), actor=actor, action=action, target_kind="service",
                    target="web", outcome=outcome,
                )
            )  # fmt: skip
    return url


def test_audit_lists_filters_and_prunes(tmp_path: Path) -> None:
    url = _store(tmp_path)
    runner = CliRunner()
    table = runner.invoke(app, ["audit", "--database-url", url])
    assert table.exit_code == 0, table.output
    assert "time" in table.output
    assert "flag.update" in table.output
    assert "service web" in table.output
    listed = runner.invoke(app, ["audit", "--since", "7d", "--database-url", url, "-o", "json"])
    assert [e["action"] for e in json.loads(listed.output)] == ["deploy", "flag.update"]
    mine = runner.invoke(app, ["audit", "--actor", "token:ops", "--action", "dep", "--limit", "2",
                               "--database-url", url, "-o", "json"])  # fmt: skip
    assert [(e["actor"], e["outcome"]) for e in json.loads(mine.output)] == [
        ("token:ops", "succeeded"),
        ("token:ops", "started"),
    ]
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC)
    dry = runner.invoke(
        app, ["audit", "prune", "--dry-run", "-f", str(spec), "--database-url", url, "-o", "json"]
    )
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["removed"] == 2  # backup.run at 40 days, deploy at 400 days
    assert len(json.loads(runner.invoke(app, ["audit", "--database-url", url, "-o", "json"]).output)) == 5
    done = runner.invoke(app, ["audit", "prune", "-f", str(spec), "--database-url", url])
    assert "removed 2 audit entries" in done.output
    left = json.loads(runner.invoke(app, ["audit", "--database-url", url, "-o", "json"]).output)
    assert [(e["action"], e["outcome"]) for e in left] == [
        ("deploy", "succeeded"),
        ("flag.update", "ok"),
        ("deploy", "started"),
    ]
    bad = runner.invoke(app, ["audit", "--since", "yesterday-ish", "--database-url", url])
    assert bad.exit_code != 0
