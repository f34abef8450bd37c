"""A client tool's failure is told apart from a server that went away by what libpq said, even
when only the tool's last lines were kept (pg_dump's parallel workers print after libpq)."""

from __future__ import annotations

from typing import NoReturn

import pytest

from shipyard.backup import _sources as sources
from shipyard.backup._connect import PostgresSource
from shipyard.backup._sources import _lost_postgres
from shipyard.errors import BackupError, DatastoreUnreachable

SOURCE = PostgresSource(name="db", host="127.0.0.1", port=1, database="app", user="postgres")


@pytest.mark.parametrize(
    "tail",
    [
        # seen in CI: `pg_ctl stop -m immediate` while pg_dump --jobs=2 copied a table
        "before or while processing the request. / pg_dump: detail: Command was: COPY public.big (id, pad)"
        " TO stdout; / pg_dump: error: a worker process died unexpectedly",
        "server closed the connection unexpectedly / This probably means the server terminated abnormally",
        "FATAL:  terminating connection due to administrator command",
    ],
)
def test_a_server_that_went_away_is_unreachable_whatever_lines_were_kept(
    tail: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # By the time the tool has failed, the server may be back (restarted) and answer: only what
    # libpq said mid-dump tells that it went away.
    def answers(source: PostgresSource) -> NoReturn:
        raise BackupError("postgres:db: cannot connect: password authentication failed")

    monkeypatch.setattr(sources, "connect_postgres", answers)
    lost = _lost_postgres(
        SOURCE, "pg_dump", BackupError(f"postgres:db: pg_dump: pg_dump exited with 1: {tail}")
    )
    assert isinstance(lost, DatastoreUnreachable)
    assert lost.message.startswith("postgres:db: PostgreSQL at 127.0.0.1:1/app as postgres stopped answering")
