"""Patroni's REST API: the cluster as Patroni sees it, and the switchover and failover calls.

    client = PatroniClient([node.rest_url for node in layout.nodes], auth=("shipyard", password))
    view = client.cluster()                      # GET /cluster on the first node that answers
    view.leader                                  # the member holding the leader lock, or None
    client.switchover("db-primary", "db-standby")   # POST /switchover: a planned change of primary
    client.failover("db-standby")                # POST /failover: promote it, whatever the leader

GET endpoints need no password (Patroni cannot protect them without TLS); the unsafe ones
(switchover, failover, config, reload) send HTTP basic auth with the REST user's password, which
never appears in a message. Patroni 3.0.2 answers a switchover only once it is done (or given up):
up to twice `max(10 s, loop_wait)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import DrError

LEADER_ROLES = ("leader", "master", "primary")
REPLICA_ROLES = ("replica", "sync_standby")
RUNNING_STATES = ("running", "streaming")


@dataclass(frozen=True)
class Member:
    """One node in Patroni's `/cluster` answer."""

    name: str
    role: str
    """`leader`, `sync_standby`, `replica` (or `standby_leader`)."""
    state: str
    """`running`, `streaming`, `starting`, `stopped`, `crashed`, `start failed`, …"""
    host: str
    port: int
    api_url: str | None
    timeline: int | None
    lag: int | None
    """Bytes behind the leader; None for the leader, or when Patroni does not know."""

    @property
    def is_leader(self) -> bool:
        return self.role in LEADER_ROLES

    @property
    def is_running_replica(self) -> bool:
        return self.role in REPLICA_ROLES and self.state in RUNNING_STATES

    @classmethod
    def of(cls, data: dict[str, Any]) -> Member:
        lag = data.get("lag")
        timeline = data.get("timeline")
        return cls(
            name=str(data.get("name", "")),
            role=str(data.get("role", "")),
            state=str(data.get("state", "")),
            host=str(data.get("host", "")),
            port=int(data.get("port") or 0),
            api_url=data.get("api_url"),
            timeline=int(timeline) if isinstance(timeline, int) else None,
            lag=int(lag) if isinstance(lag, int) else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "state": self.state,
            "address": f"{self.host}:{self.port}",
            "timeline": self.timeline,
            "lag_bytes": self.lag,
        }


@dataclass(frozen=True)
class ClusterView:
    members: tuple[Member, ...]

    @property
    def leader(self) -> Member | None:
        """The member holding the leader lock, when PostgreSQL runs there."""
        return next((m for m in self.members if m.is_leader and m.state in RUNNING_STATES), None)

    @property
    def sync_standbys(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role == "sync_standby")

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    @classmethod
    def of(cls, data: dict[str, Any]) -> ClusterView:
        return cls(tuple(Member.of(m) for m in data.get("members", []) if isinstance(m, dict)))


class PatroniClient:
    """The REST APIs of a cluster's nodes; reads ask each in turn until one answers."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 3.0,
        loop_wait: int = 10,
    ) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        self.auth = auth
        self.timeout_s = timeout_s
        # Patroni polls a switchover's result for up to 2 x max(10, loop_wait) seconds.
        self.switch_timeout_s = 2 * max(10, loop_wait) + 10

    def _get(self, url: str, path: str) -> httpx.Response:
        return httpx.get(f"{url}{path}", timeout=self.timeout_s)

    def cluster(self) -> ClusterView:
        """`GET /cluster` from the first node that answers; DrError naming them all when none does."""
        errors = []
        for url in self.urls:
            try:
                response = self._get(url, "/cluster")
                if response.status_code == 200:
                    return ClusterView.of(response.json())
                errors.append(f"{url}: HTTP {response.status_code}")
            except (httpx.HTTPError, ValueError) as error:
                errors.append(f"{url}: {type(error).__name__}")
        raise DrError("no Patroni REST API answered (" + "; ".join(errors) + ")")

    def try_cluster(self) -> ClusterView | None:
        try:
            return self.cluster()
        except DrError:
            return None

    def health(self, url: str, path: str = "/primary") -> int | None:
        """The HTTP status of a health check (`/primary`, `/replica`, …), None when unreachable."""
        try:
            return self._get(url.rstrip("/"), path).status_code
        except httpx.HTTPError:
            return None

    def _unsafe(
        self, method: str, url: str, path: str, body: dict[str, Any], timeout_s: float
    ) -> httpx.Response:
        if self.auth is None:
            raise DrError("Patroni's unsafe endpoints need the REST user's password; none was given")
        try:
            return httpx.request(method, f"{url}{path}", json=body, auth=self.auth, timeout=timeout_s)
        except httpx.HTTPError as error:
            raise DrError(
                f"Patroni at {url} did not answer {method} {path} ({type(error).__name__})"
            ) from None

    def _first_answering(
        self, method: str, path: str, body: dict[str, Any], timeout_s: float
    ) -> httpx.Response:
        """The answer of the first node whose API is reachable (a refusal is an answer)."""
        last: DrError | None = None
        for url in self.urls:
            try:
                return self._unsafe(method, url, path, body, timeout_s)
            except DrError as error:
                last = error
        raise last or DrError("no Patroni node to ask")

    def switchover(self, leader: str, candidate: str) -> str:
        """A planned switchover from `leader` to `candidate`; Patroni's answer, DrError if refused."""
        response = self._first_answering(
            "POST", "/switchover", {"leader": leader, "candidate": candidate}, self.switch_timeout_s
        )
        return _answer("switchover", response)

    def failover(self, candidate: str) -> str:
        """Promote `candidate` whatever the leader's state; DrError if Patroni refuses."""
        response = self._first_answering("POST", "/failover", {"candidate": candidate}, self.switch_timeout_s)
        return _answer("failover", response)

    def config(self) -> dict[str, Any]:
        """The cluster's dynamic configuration (`GET /config`)."""
        for url in self.urls:
            try:
                response = self._get(url, "/config")
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                data: dict[str, Any] = response.json()
                return data
        raise DrError("no Patroni REST API answered GET /config with the cluster's configuration")

    def patch_config(self, changes: dict[str, Any]) -> None:
        response = self._first_answering("PATCH", "/config", changes, self.timeout_s * 3)
        _answer("PATCH /config", response)

    def reload(self, url: str) -> None:
        """Make one node read its patroni.yml again."""
        _answer("reload", self._unsafe("POST", url.rstrip("/"), "/reload", {}, self.timeout_s * 3))


def _answer(what: str, response: httpx.Response) -> str:
    text = response.text.strip()
    if response.status_code == 401:
        raise DrError(f"Patroni refused the {what}: the REST API's user or password is wrong ({text})")
    if response.status_code == 403:
        raise DrError(
            f"Patroni refused the {what}: this address is not in its restapi allowlist (the cluster's"
            " own addresses); run it from a node's host"
        )
    if response.status_code >= 300:
        raise DrError(f"Patroni refused the {what} (HTTP {response.status_code}): {text}")
    return text
