"""`shipyard dr test` against real servers: a live PostgreSQL, Redis and files directory backed up
with restic into a local repository, restored into scratch servers, and the report checked."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shipyard.cli import app
from support.backup_stack import BackupStack, backup_stack

pytestmark = pytest.mark.integration


class _Receiver(BaseHTTPRequestHandler):
    events: list[dict[str, Any]] = []  # noqa: RUF012 - one receiver per module, shared by design

    def do_POST(self) -> None:
        _Receiver.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture(scope="module")
def stack() -> Iterator[BackupStack]:
    with backup_stack() as live:
        yield live


def _targets(stack: BackupStack, *, rto: str, rpo: str) -> None:
    stack.write_spec(
        extra=f"dr: {{rto: {rto}, rpo: {rpo}}}\n"
        "notifications:\n  ops: {kind: webhook, url: '${env:DRILL_HOOK}'}\n"
    )


def _drill(stack: BackupStack, hook: str, mode: str, report_dir: Path) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        app,
        [
            "dr",
            "test",
            mode,
            "-f",
            str(stack.spec),
            "-e",
            "test",
            "-o",
            "json",
            "--report-dir",
            str(report_dir),
        ],
        env=stack.cli_env(DRILL_HOOK=hook),
        catch_exceptions=False,
    )
    return result.exit_code, json.loads(result.stdout)


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_drills_measure_rto_and_rpo_against_the_targets(
    stack: BackupStack, hook: str, tmp_path: Path
) -> None:
    reports = tmp_path / "drills"

    # Nothing has been backed up yet: a restore drill has nothing to recover from.
    _targets(stack, rto="1h", rpo="1h")
    code, empty = _drill(stack, hook, "partial", reports)
    assert code == 1
    assert empty["failed_phase"]["name"] == "select newest restorable set"
    assert "no restorable backup set of shop (test) holds postgres:db" in empty["failed_phase"]["reason"]
    assert [p["status"] for p in empty["phases"]] == ["failed", "skipped", "skipped"]
    assert empty["achieved"]["rto_seconds"] is None

    # backup: a fresh set of every source, then verified by restoring it into scratch servers.
    began = time.monotonic()
    code, backup = _drill(stack, hook, "backup", reports)
    took = time.monotonic() - began
    assert code == 0, backup
    assert backup["passed"] is True
    assert [(p["name"], p["status"]) for p in backup["phases"]] == [
        ("take backup set", "passed"),
        ("verify backup set", "passed"),
    ]
    assert "verified" in backup["phases"][1]["detail"]
    rto, rpo = backup["achieved"]["rto_seconds"], backup["achieved"]["rpo_seconds"]
    assert isinstance(rto, float)
    assert rto > 0
    assert rto == pytest.approx(backup["phases"][1]["seconds"], abs=0.01)
    assert isinstance(rpo, float)
    assert 0 <= rpo <= took  # the age of the set this drill took, not of an older one
    assert [(t["name"], t["verdict"]) for t in backup["targets"]] == [
        ("rto", "pass"),
        ("rpo", "pass"),
        ("mttr", "not set"),
    ]
    assert {p["source"] for p in backup["restore_points"]} == {
        "postgres:db",
        "redis:cache",
        f"files:{stack.files}",
    }
    markdown, machine = Path(backup["report"]["markdown"]), Path(backup["report"]["json"])
    assert markdown.parent == reports
    assert machine.parent == reports
    assert markdown.read_text(encoding="utf-8").startswith("# DR drill `backup` of shop/test: PASS\n")
    saved = json.loads(machine.read_text(encoding="utf-8"))
    assert saved["achieved"] == backup["achieved"]

    # restore with an RTO no real restore can meet: the drill recovers, and reports FAIL on RTO.
    _targets(stack, rto="0s", rpo="1h")
    code, restore = _drill(stack, hook, "restore", reports)
    assert code == 1
    assert restore["failed_phase"] is None
    assert [p["name"] for p in restore["phases"]] == [
        "select newest restorable set",
        "restore postgres:db",
        "restore redis:cache",
        f"restore files:{stack.files}",
        "health postgres:db",
        "health redis:cache",
        f"health files:{stack.files}",
    ]
    assert all(p["status"] == "passed" for p in restore["phases"]), restore["phases"]
    assert "3 tables' row counts match; 2 checks passed" in restore["phases"][4]["detail"]
    assert "105 keys (105 in the manifest)" in restore["phases"][5]["detail"]
    rto, rpo = restore["achieved"]["rto_seconds"], restore["achieved"]["rpo_seconds"]
    assert isinstance(rto, float)
    assert rto > 0
    assert isinstance(rpo, float)
    assert rpo > 0
    assert [(t["name"], t["verdict"]) for t in restore["targets"]][:2] == [("rto", "fail"), ("rpo", "pass")]
    assert restore["achieved"]["mttr_drills"] == 1  # the first restore drill of this stack
    assert restore["achieved"]["mttr_seconds"] == rto
    markdown = Path(restore["report"]["markdown"]).read_text(encoding="utf-8")
    assert "| RTO (disaster → healthy restored stack) | 0.00 s |" in markdown
    assert "| FAIL |" in markdown

    # the scratch servers the restores started are gone
    for detail in (p["detail"] for p in restore["phases"] if p["name"].startswith("restore ")):
        port = re.search(r"on port (\d+)", detail)
        if port:
            assert _closed(int(port[1]))

    assert len(list(reports.glob("*.md"))) == len(list(reports.glob("*.json"))) >= 2
    kinds = [event["event"] for event in _Receiver.events]
    assert kinds.count("dr.drill.passed") == 1
    assert kinds.count("dr.drill.failed") == 2
