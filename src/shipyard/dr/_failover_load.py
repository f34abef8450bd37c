"""What an app sees of a failover: a writer and a probe going through the proxy.

    writer = Writer(endpoint)        # one connection; a row committed every 5 ms, each ack timed
    probe = Probe(endpoint)          # a new connection and a write every 0.1 s: a fresh client
    writer.start(); probe.start()
    ...                              # the primary dies
    writer.wait_success_after(t)     # the first commit acknowledged after t (monotonic)

The writer reconnects at once when its connection breaks and goes on with the next id: the id whose
COMMIT did not return is neither counted as acknowledged nor reused, so after the failover the ids
it counted and the rows the new primary holds say exactly which acknowledged commits were lost.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

TABLE = "shipyard_failover_drill"
CONNECT_TIMEOUT_S = 1


@dataclass(frozen=True, repr=False)
class Endpoint:
    """Where and as whom the load connects (the password stays out of repr and of every message)."""

    host: str
    port: int
    user: str
    password: str | None
    database: str = "postgres"

    def connect(self, timeout_s: int = CONNECT_TIMEOUT_S) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.database,
            autocommit=True,
            connect_timeout=timeout_s,
        )

    def __repr__(self) -> str:
        return f"Endpoint({self.user}@{self.host}:{self.port}/{self.database})"


def prepare_table(endpoint: Endpoint) -> None:
    with endpoint.connect(5) as connection:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE}"
            " (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())"
        )
        connection.execute(f"TRUNCATE {TABLE}")


def drop_table(endpoint: Endpoint) -> None:
    with contextlib.suppress(psycopg.Error), endpoint.connect(5) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {TABLE}")


def present_ids(endpoint: Endpoint, ids: Sequence[int]) -> set[int]:
    """Which of `ids` the server at `endpoint` holds."""
    with endpoint.connect(5) as connection:
        rows = connection.execute(f"SELECT id FROM {TABLE} WHERE id = ANY(%s)", (list(ids),)).fetchall()
    return {int(row[0]) for row in rows}


@dataclass
class _Timeline:
    """Successes in time order (when each attempt began, when it succeeded), and a condition to
    wait on the next one.

    An attempt counts from when it began: a commit sent before the primary died may be
    acknowledged just after the kill (its answer was already on its way), which says nothing about
    the new primary.
    """

    began: list[float] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    condition: threading.Condition = field(default_factory=threading.Condition)

    def add(self, began: float, ended: float) -> None:
        with self.condition:
            self.began.append(began)
            self.ended.append(ended)
            self.condition.notify_all()

    def _first_after(self, moment: float) -> float | None:
        index = bisect.bisect_right(self.began, moment)  # appended in time order: sorted
        return self.ended[index] if index < len(self.began) else None

    def first_after(self, moment: float) -> float | None:
        """When the first attempt begun after `moment` succeeded."""
        with self.condition:
            return self._first_after(moment)

    def last_before(self, moment: float) -> float | None:
        """When the last attempt begun before `moment` succeeded."""
        with self.condition:
            index = bisect.bisect_right(self.began, moment)
            return self.ended[index - 1] if index else None

    def wait_after(self, moment: float, timeout_s: float) -> float | None:
        """`first_after(moment)`, waiting up to `timeout_s` for it; None if none came."""
        deadline = time.monotonic() + timeout_s
        with self.condition:
            while (found := self._first_after(moment)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.condition.wait(min(left, 0.5))
            return found


class _Loop:
    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Writer(_Loop):
    """Commits one row every `period_s` on one connection, remembering each acknowledged id."""

    def __init__(self, endpoint: Endpoint, period_s: float = 0.005) -> None:
        super().__init__("failover-writer")
        self.endpoint = endpoint
        self.period_s = period_s
        self.acknowledged: list[tuple[int, float, float]] = []
        """(id, monotonic time, wall time) of each commit whose COMMIT returned."""
        self.errors = 0
        self.successes = _Timeline()

    def _run(self) -> None:
        next_id = 1
        connection: psycopg.Connection[Any] | None = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = self.endpoint.connect()
                row_id, next_id = next_id, next_id + 1
                sent = time.monotonic()
                connection.execute(f"INSERT INTO {TABLE} (id) VALUES (%s)", (row_id,))
                now = time.monotonic()
                self.acknowledged.append((row_id, now, time.time()))
                self.successes.add(sent, now)
            except psycopg.Error:
                self.errors += 1
                if connection is not None:
                    with contextlib.suppress(psycopg.Error):
                        connection.close()
                connection = None
            next_at = max(next_at + self.period_s, time.monotonic())
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                connection.close()

    def wait_commits(self, count: int, timeout_s: float = 30) -> None:
        target = len(self.acknowledged) + count
        deadline = time.monotonic() + timeout_s
        while len(self.acknowledged) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the writer committed {len(self.acknowledged)} of {target} rows ({self.errors} errors)"
                )
            time.sleep(0.01)

    def wait_success_after(self, moment: float, timeout_s: float) -> float | None:
        return self.successes.wait_after(moment, timeout_s)


class Probe(_Loop):
    """Every `period_s`, a new connection through the proxy and a write transaction: when a client
    that connects afresh (HAProxy picks the server) can write again."""

    def __init__(self, endpoint: Endpoint, period_s: float = 0.1) -> None:
        super().__init__("failover-probe")
        self.endpoint = endpoint
        self.period_s = period_s
        self.successes = _Timeline()
        self.failures = 0
        self.last_error: str | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                with self.endpoint.connect() as connection:
                    connection.execute("SET statement_timeout = 1000")
                    connection.execute("SELECT txid_current()")
                self.successes.add(began, time.monotonic())
            except Exception as error:  # the probe must outlive anything a dying server does
                self.failures += 1
                self.last_error = type(error).__name__
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - began)))
