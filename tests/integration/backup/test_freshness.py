"""`backup freshness`: each source's newest restorable copy against the RPO; stale ones page."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from integration.backup._cli import sessions_of, shipyard
from support.backup_stack import backup_stack
from support.webhook import webhook_receiver


def test_stale_until_a_backup_then_fresh_then_stale_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with webhook_receiver() as webhook, backup_stack() as stack:
        hook, received = webhook.url, webhook.received
        # A generous RPO while backing up (a slow machine takes seconds per set), then a tight one: the same
        # copies judged against 2 s must page, with no clock to fake.
        channels = "notifications:\n  ops: {kind: webhook, url: '${env:HOOK}'}\n"
        stack.write_spec(extra="dr: {rto: 15m, rpo: 10m}\n" + channels)

        def freshness() -> tuple[int, list[dict[str, Any]]]:
            result = shipyard(stack, monkeypatch, capsys, "backup", "freshness", "-o", "json", HOOK=hook)
            return result.code, json.loads(result.out)

        sessions_of(stack)  # the store, as `serve` or a first backup makes it: freshness only reads one
        code, report = freshness()
        assert code == 1
        assert {r["source"] for r in report} == {"postgres:db", "redis:cache", f"files:{stack.files}"}
        assert all(r["stale"] and r["age_s"] is None for r in report)
        assert [e["event"] for e in received] == ["backup.stale"]
        assert received[0]["severity"] == "page"
        taken = shipyard(stack, monkeypatch, capsys, "backup", "database", "-o", "json")
        assert taken.code == 0, taken.err
        code, report = freshness()
        assert code == 1  # Redis and the files still have no copy
        by_source = {r["source"]: r for r in report}
        assert by_source["postgres:db"]["stale"] is False
        assert by_source["postgres:db"]["newest_set"] == taken.json()["id"]
        assert by_source["redis:cache"]["stale"] is True
        assert shipyard(stack, monkeypatch, capsys, "backup", "full").code == 0
        code, report = freshness()
        assert code == 0, report
        assert len(received) == 2  # nothing sent while fresh
        stack.write_spec(extra="dr: {rto: 15m, rpo: 2s}\n" + channels)
        time.sleep(2.5)  # past the 2 s RPO even on a fast machine
        code, report = freshness()
        assert code == 1
        assert all(r["stale"] and r["age_s"] > 2 and r["limit_s"] == 2 for r in report)
        assert len(received) == 3
