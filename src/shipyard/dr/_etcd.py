"""etcd, as a Patroni datastore's DCS: its health, and its authentication turned on and kept true.

Over etcd's v3 JSON gateway (`/v3/...`, etcd 3.4), on the member's own address. Passwords go in
request bodies only, never in a URL, a log line or an error.

`ensure_auth` makes etcd hold two users: `root` (shipyard's, to manage users) and `patroni`, whose
one role may read and write the datastore's keys and nothing else, then turns authentication on.
Run again it checks both passwords, changes `patroni`'s to the current secret when it differs, and
re-grants the role: rotating the secret in the environment and running `dr ha up` is enough.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx

from ..errors import DrError

ROOT = "root"
_NOT_ENABLED = "authentication is not enabled"
_EXISTS = "already exists"
_BAD_PASSWORD = "authentication failed"


class EtcdRefused(DrError):
    """etcd answered with an error (its message, never a password, is in `message`)."""

    http_status = 502

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix: str) -> str:
    """The end of etcd's range for every key starting with `prefix` (its last byte plus one)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


class EtcdClient:
    """One etcd member's v3 gateway."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def healthy(self) -> bool:
        """The member answers and has a leader (`GET /health`)."""
        try:
            response = httpx.get(f"{self.url}/health", timeout=self.timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json().get("health") == "true"

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if time.monotonic() > deadline:
                raise DrError(
                    f"etcd at {self.url} is not healthy after {timeout_s:g} s (no leader, or not listening)"
                )
            time.sleep(0.1)

    def call(self, method: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        """POST `/v3/<method>`; EtcdRefused with etcd's own message when it says no."""
        headers = {"Authorization": token} if token else {}
        try:
            response = httpx.post(
                f"{self.url}/v3/{method}", json=body, headers=headers, timeout=self.timeout_s
            )
        except httpx.HTTPError as error:
            raise DrError(f"etcd at {self.url} did not answer ({type(error).__name__})") from None
        data: dict[str, Any] = response.json() if response.content else {}
        if response.status_code != 200:
            message = str(data.get("message") or data.get("error") or response.text).removeprefix(
                "etcdserver: "
            )
            raise EtcdRefused(message, response.status_code)
        return data

    def authenticate(self, user: str, password: str) -> str:
        """A token for `user`; EtcdRefused when authentication is off or the password is wrong."""
        return str(self.call("auth/authenticate", {"name": user, "password": password})["token"])


def _tolerate_exists(client: EtcdClient, method: str, body: dict[str, Any], token: str | None) -> None:
    try:
        client.call(method, body, token)
    except EtcdRefused as error:
        if _EXISTS not in error.message:
            raise


def _grant(client: EtcdClient, token: str | None, user: str, password: str, prefix: str) -> None:
    """`user` exists with role `user`, which may read and write `prefix*` (idempotent)."""
    _tolerate_exists(client, "auth/user/add", {"name": user, "password": password}, token)
    _tolerate_exists(client, "auth/role/add", {"name": user}, token)
    permission = {"permType": "READWRITE", "key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
    client.call("auth/role/grant", {"name": user, "perm": permission}, token)
    client.call("auth/user/grant", {"user": user, "role": user}, token)


def ensure_auth(
    client: EtcdClient,
    *,
    root_password: str,
    user: str,
    password: str,
    prefix: str,
    may_change_password: bool = True,
) -> str:
    """etcd's authentication on, with `root` and `user` (keys under `prefix` only); what was done.

    DrError naming the secret when etcd's authentication is on with another root password: shipyard
    cannot know it, and turning authentication off needs that password too. `user`'s password is
    changed to `password` only when `may_change_password` (no Patroni runs with the old one: it
    would lose etcd at its next authentication, and a primary that loses its DCS steps down).
    """
    try:
        token = client.authenticate(ROOT, root_password)
    except EtcdRefused as error:
        if _NOT_ENABLED in error.message:
            _tolerate_exists(client, "auth/user/add", {"name": ROOT, "password": root_password}, None)
            _tolerate_exists(client, "auth/role/add", {"name": ROOT}, None)
            client.call("auth/user/grant", {"user": ROOT, "role": ROOT}, None)
            _grant(client, None, user, password, prefix)
            client.call("auth/enable", {}, None)
            return f"authentication turned on: users {ROOT} and {user} (keys under {prefix})"
        if _BAD_PASSWORD in error.message:
            raise DrError(
                f"etcd at {client.url} has authentication on and refuses root's password: the etcd root"
                " password secret is not the one it was turned on with"
            ) from None
        raise
    _grant(client, token, user, password, prefix)
    try:
        client.authenticate(user, password)
    except EtcdRefused as error:
        if _BAD_PASSWORD not in error.message:
            raise
        if not may_change_password:
            raise DrError(
                f"etcd's {user} user has another password than the etcd password secret, and Patroni runs"
                " here with the old one: to rotate it, `shipyard dr ha down` on every host, then"
                " `shipyard dr ha up` with the new secret"
            ) from None
        client.call("auth/user/changepw", {"name": user, "password": password}, token)
        return f"authentication on; {user}'s password changed to the current secret"
    return "authentication on; users checked"
