"""The failover watcher: `python -m shipyard.dr._ha_watch --spec FILE --env ENV --datastore DS`.

`shipyard dr ha up` supervises it beside a Patroni datastore's processes. Every `--interval`
seconds it asks Patroni's REST API which node holds the leader lock; when that changes it sends a
`dr.failover` event to the spec's notification channels (severity `page` when Patroni failed over
by itself, `info` for a switchover `shipyard dr failover|failback` asked for: it holds the
datastore's lease, or recorded a switchover to that node lately) and records an automatic one in
the audit log (action `dr.failover`, actor `patroni`, outcome `automatic`; a requested one is
recorded step by step by the command itself).

Why a watcher and not Patroni's `on_role_change` callback: the callback runs as the postgres user,
which can read neither shipyard's state store (the notification outbox) nor the channels' secrets,
and on the node that was promoted only; the watcher runs as shipyard does, with the state store's
URL and the channels' variables in its environment (never on disk).

The last leader seen is kept in `<state>/<datastore>-watch.leader.json`: a restarted watcher
neither repeats a notification nor misses a change made while it was down. Of several watchers (one
per host) only the holder of the lease `ha-watch:<datastore>` notifies.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ShipyardError
from ..host import read_json, write_json
from ..locks import Lease, LockHeldError, holder
from ..monitor import Event, Notifier
from ..render import HaLayout, ha_layout
from ..spec import load_spec
from ..state import AuditRow, record_audit, utcnow
from ._patroni import Member, PatroniClient

log = logging.getLogger("shipyard.dr.watch")


def lease_name(datastore: str) -> str:
    return f"ha-watch:{datastore}"


@dataclass(frozen=True)
class LeaderChange:
    previous: str
    """The spec's name of the node that was the primary (`primary`, `standby`, …)."""
    primary: str
    member: Member
    requested: bool
    """A `shipyard dr failover|failback` held the datastore's lease: a switchover it asked for."""

    def event(self, layout: HaLayout) -> Event:
        address = f"{self.member.host}:{self.member.port}"
        how = "a switchover shipyard was asked for" if self.requested else "Patroni failed over by itself"
        return Event(
            kind="dr.failover",
            summary=f"{layout.datastore}: {self.primary} ({address}) is the primary now, in place of"
            f" {self.previous} ({how})",
            severity="info" if self.requested else "page",
            details={
                "datastore": layout.datastore,
                "stack": layout.stack,
                "environment": layout.environment,
                "primary": self.primary,
                "previous": self.previous,
                "member": self.member.name,
                "address": address,
                "automatic": not self.requested,
            },
        )


class Watcher:
    """Notices changes of leader; `step()` looks once (tests call it directly)."""

    def __init__(
        self,
        layout: HaLayout,
        sessions: sessionmaker[Session],
        notifier: Notifier,
        state_file: Path,
        *,
        client: PatroniClient | None = None,
    ) -> None:
        self.layout = layout
        self.sessions = sessions
        self.notifier = notifier
        self.state_file = state_file
        self.client = client or PatroniClient([n.rest_url for n in layout.nodes], timeout_s=1.0)
        self.lease = Lease(sessions, lease_name(layout.datastore), ttl_s=15.0)

    def _active(self) -> bool:
        try:
            self.lease.acquire()
        except LockHeldError:
            return False
        return True

    def step(self) -> LeaderChange | None:
        """Ask once; the change announced, if there was one."""
        view = self.client.try_cluster()
        leader = view.leader if view is not None else None
        if leader is None:
            return None  # between leaders, or nobody answers: the next look decides
        last = read_json(self.state_file) or {}
        previous = last.get("leader")
        if previous == leader.name:
            return None
        change = None
        if previous and self._active():
            primary = self.layout.member_role(leader.name)
            requested = self._requested(primary)
            change = LeaderChange(
                previous=self.layout.member_role(str(previous)),
                primary=primary,
                member=leader,
                requested=requested,
            )
            self._announce(change)
        write_json(self.state_file, {"leader": leader.name, "timeline": leader.timeline, "at": time.time()})
        return change

    def _requested(self, primary: str) -> bool:
        """Whether a `dr failover|failback` asked Patroni to make `primary` the leader: it holds the
        datastore's lease now, or its latest recorded switchover, lately, was to that node (a
        watcher slow to look, on a loaded host, may see the change after the command ended)."""
        if holder(self.sessions, f"dr:{self.layout.datastore}") is not None:
            return True
        # Patroni answers a switchover within 2 x max(10, loop_wait) s; then the change is seen.
        window = dt.timedelta(seconds=2 * max(10, self.layout.loop_wait) + self.layout.ttl)
        with self.sessions() as session:
            rows = session.scalars(
                select(AuditRow)
                .where(
                    AuditRow.action.in_(("dr.failover", "dr.failback")),
                    AuditRow.target == self.layout.datastore,
                    AuditRow.at >= utcnow() - window,
                )
                .order_by(AuditRow.id.desc())
            )
            last = next(
                (row.before or {} for row in rows if (row.before or {}).get("step") == "switchover"), None
            )
        return last is not None and last.get("node") == primary

    def _announce(self, change: LeaderChange) -> None:
        self.notifier.send(change.event(self.layout))
        if not change.requested:
            record_audit(
                self.sessions,
                actor="patroni",
                action="dr.failover",
                target_kind="datastore",
                target=self.layout.datastore,
                before={"primary": change.previous},
                after={
                    "primary": change.primary,
                    "member": change.member.name,
                },
                outcome="automatic",
            )
        log.warning("%s", change.event(self.layout).summary)

    def run(self, interval_s: float, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except ShipyardError as error:
                log.error("failover watcher: %s", error.message)
            except Exception as error:  # a watcher that dies notices nothing: log, look again
                log.error("failover watcher: %s: %s", type(error).__name__, error)
            stop.wait(interval_s)
        with contextlib.suppress(Exception):
            self.lease.release()
        self.notifier.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shipyard.dr._ha_watch")
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--env", required=True)
    parser.add_argument("--datastore", required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--state-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per look at the cluster

    from ..state import open_engine, session_factory  # noqa: PLC0415 - after parsing: --help is fast

    stack = load_spec(args.spec).stack(args.env)
    layout = ha_layout(stack, args.datastore)
    sessions = session_factory(open_engine())
    notifier = Notifier(stack.notifications, sessions)
    state_file = args.state_file or Path.cwd() / f"{args.datastore}-watch.leader.json"
    watcher = Watcher(layout, sessions, notifier, state_file)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("watching %s's leader every %g s", layout.datastore, args.interval)
    watcher.run(args.interval, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
