"""The SQLite store's shared flag version: what lets a read skip asking the database.

Two FlagStores on one file stand for two processes (each opens its own engine and maps the file
itself); the cross-process guarantee under load is tests/integration/flags/test_worker_consistency.py.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from shipyard.flags import FlagStore
from shipyard.flags._store import SharedVersion, SqliteProbe
from shipyard.state import open_engine, session_factory


def _store(path: Path) -> FlagStore:
    return FlagStore(session_factory(open_engine(f"sqlite:///{path}")))


def test_a_write_through_one_store_is_seen_by_the_next_read_of_another(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    writer, reader = _store(db), _store(db)
    probe = reader.probe()
    assert isinstance(probe, SqliteProbe)
    before = probe.version()
    assert probe.version() == before  # unmoved: answered from the shared counter
    stored = writer.create({"key": "a", "default_value": False}, "test")
    assert probe.version() == stored.version != before


def test_a_commit_without_a_bump_is_found_by_a_thorough_check(tmp_path: Path) -> None:
    # A writer killed between its commit and the bump: only the pragma can tell.
    db = tmp_path / "state.db"
    store = _store(db)
    store.create({"key": "a", "default_value": False}, "test")
    probe = store.probe()
    seen = probe.version()
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE counters SET value = value + 1 WHERE name = 'flagset'")
    assert probe.version() == seen  # the shared counter did not move
    assert probe.version(thorough=True) == seen + 1
    assert probe.version() == seen + 1


def test_concurrent_bumps_never_store_the_same_number(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    counters = [SharedVersion.beside(path) for _ in range(4)]  # as four processes map it
    start = counters[0].value() if counters[0] else 0

    def bump(counter: SharedVersion | bool) -> None:
        assert isinstance(counter, SharedVersion)
        for _ in range(500):
            counter.bump()

    threads = [threading.Thread(target=bump, args=(c,)) for c in counters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(counters[0], SharedVersion)
    assert counters[0].value() == start + 2000


def test_without_a_writable_directory_reads_ask_the_database(tmp_path: Path) -> None:
    assert SharedVersion.beside(str(tmp_path / "missing-dir" / "state.db")) is False
