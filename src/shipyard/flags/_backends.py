"""One interface over the flag store, whether it is local (the state store) or a server's API.

The flag verbs of `shipyard.ops` work through it, so that `shipyard flags …` works the same
against `--url` and against the local database, and the API routes hand the ops functions the
store their live flag set follows: every path ends in the same `FlagStore` methods. A dry run
only reads (`snapshot`, `get`, `get_segment`), so against a server it sends no change.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx

from ..errors import (
    ConflictError,
    InvalidObjectError,
    NotFoundError,
    PreconditionFailedError,
    ShipyardError,
    UserError,
)
from ..spec.flags import FlagSet
from ..state import rfc3339
from ._evaluator import Evaluation, compile_flagset
from ._store import AuditEntry, FlagStore, Stored
from ._wire import flag_to_snake, flag_to_wire, flagset_to_wire


class FlagBackend(Protocol):
    def snapshot(self) -> FlagSet: ...
    def get(self, key: str) -> Stored: ...
    def get_segment(self, name: str) -> Stored: ...
    def create(self, data: dict[str, Any]) -> Stored: ...
    def replace(self, key: str, data: dict[str, Any], if_match: int | None = None) -> Stored: ...
    def patch(self, key: str, patch: dict[str, Any], if_match: int | None = None) -> Stored: ...
    def delete(self, key: str, if_match: int | None = None) -> None: ...
    def evaluate(self, key: str, context: dict[str, Any], environment: str) -> dict[str, Any]: ...
    def audit(self, key: str, limit: int = 100) -> list[dict[str, Any]]: ...
    def import_set(self, flagset: FlagSet, replace_all: bool = False) -> int: ...
    def put_segment(self, name: str, data: dict[str, Any], if_match: int | None = None) -> Stored: ...
    def delete_segment(self, name: str, if_match: int | None = None) -> None: ...


def evaluation_data(key: str, evaluation: Evaluation, version: int) -> dict[str, Any]:
    return {
        "key": key,
        "value": evaluation.value,
        "variant": evaluation.variant,
        "reason": str(evaluation.reason),
        "errorCode": str(evaluation.error_code) if evaluation.error_code else None,
        "errorMessage": evaluation.error_message,
        "flagSetVersion": version,
    }


def audit_data(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": rfc3339(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
    }


class LocalBackend:
    """The flag store in the local state database, acting as `actor`."""

    def __init__(self, store: FlagStore, actor: str) -> None:
        self.store = store
        self.actor = actor

    def snapshot(self) -> FlagSet:
        return self.store.snapshot()

    def get(self, key: str) -> Stored:
        return self.store.get(key)

    def get_segment(self, name: str) -> Stored:
        return self.store.get_segment(name)

    def create(self, data: dict[str, Any]) -> Stored:
        return self.store.create(data, self.actor)

    def replace(self, key: str, data: dict[str, Any], if_match: int | None = None) -> Stored:
        return self.store.replace(key, data, self.actor, if_match)

    def patch(self, key: str, patch: dict[str, Any], if_match: int | None = None) -> Stored:
        return self.store.patch(key, patch, self.actor, if_match)

    def delete(self, key: str, if_match: int | None = None) -> None:
        self.store.delete(key, self.actor, if_match)

    def evaluate(self, key: str, context: dict[str, Any], environment: str) -> dict[str, Any]:
        flagset = self.store.snapshot()
        if flagset.flag(key) is None:
            raise NotFoundError(f"no flag {key!r}")
        evaluation = compile_flagset(flagset).evaluate(key, context, environment)
        return evaluation_data(key, evaluation, flagset.version)

    def audit(self, key: str, limit: int = 100) -> list[dict[str, Any]]:
        entries = self.store.audit(key, limit=limit)
        if not entries:
            self.store.get(key)
        return [audit_data(entry) for entry in entries]

    def import_set(self, flagset: FlagSet, replace_all: bool = False) -> int:
        return self.store.import_set(flagset, self.actor, replace_all=replace_all)

    def put_segment(self, name: str, data: dict[str, Any], if_match: int | None = None) -> Stored:
        return self.store.put_segment(name, data, self.actor, if_match)

    def delete_segment(self, name: str, if_match: int | None = None) -> None:
        self.store.delete_segment(name, self.actor, if_match)


class RemoteBackend:
    """A shipyard server's flag API, with a bearer token.

    The API's bodies are camelCase (seed 003's `defaultValue`); this backend sends them so and
    hands the ops verbs snake_case documents, as the local store does (`shipyard.flags._wire`).
    """

    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ShipyardError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code < 400:
            return response
        try:
            body = response.json()
        except json.JSONDecodeError:
            body = {}
        detail = body.get("detail") or body.get("title") or response.reason_phrase
        status = response.status_code
        if status == 404:
            raise NotFoundError(detail)
        if status == 412:
            raise PreconditionFailedError(detail)
        if status == 409:
            raise ConflictError(detail)
        if status == 422:
            problems = [(e.get("field", ""), e.get("message", "")) for e in body.get("errors", [])]
            raise InvalidObjectError(detail, problems)
        if status in (401, 403):
            raise UserError(
                f"{self.url} refused the token ({status} {detail}); pass --token or set SHIPYARD_TOKEN"
            )
        raise ShipyardError(f"{self.url} answered {status}: {detail}")

    @staticmethod
    def _stored(response: httpx.Response) -> Stored:
        body = response.json()
        return Stored(flag_to_snake(body["flag"]), body["version"])

    @staticmethod
    def _if_match(version: int | None) -> dict[str, str]:
        return {"If-Match": f'"{version}"'} if version is not None else {}

    def snapshot(self) -> FlagSet:
        return FlagSet.from_data(self._call("GET", "/feature-flags").json())

    def get(self, key: str) -> Stored:
        return self._stored(self._call("GET", f"/feature-flags/{key}"))

    def get_segment(self, name: str) -> Stored:
        for item in self._call("GET", "/feature-segments").json():
            if item["segment"]["name"] == name:
                return Stored(item["segment"], item["version"])
        raise NotFoundError(f"no segment {name!r}")

    def create(self, data: dict[str, Any]) -> Stored:
        return self._stored(self._call("POST", "/feature-flags", json=flag_to_wire(data)))

    def replace(self, key: str, data: dict[str, Any], if_match: int | None = None) -> Stored:
        return self._stored(
            self._call(
                "PUT", f"/feature-flags/{key}", json=flag_to_wire(data), headers=self._if_match(if_match)
            )
        )

    def patch(self, key: str, patch: dict[str, Any], if_match: int | None = None) -> Stored:
        response = self._call(
            "PATCH", f"/feature-flags/{key}", json=flag_to_wire(patch), headers=self._if_match(if_match)
        )
        return self._stored(response)

    def delete(self, key: str, if_match: int | None = None) -> None:
        self._call("DELETE", f"/feature-flags/{key}", headers=self._if_match(if_match))

    def evaluate(self, key: str, context: dict[str, Any], environment: str) -> dict[str, Any]:
        body = {"context": context, "environment": environment, "keys": [key]}
        result: dict[str, Any] = self._call("POST", "/feature-flags/evaluate", json=body).json()["results"][
            key
        ]
        if result.get("errorCode") == "FLAG_NOT_FOUND":
            raise NotFoundError(f"no flag {key!r}")
        return result

    def audit(self, key: str, limit: int = 100) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self._call(
            "GET", f"/feature-flags/{key}/audit", params={"limit": limit}
        ).json()
        for entry in entries:
            for side in ("before", "after"):
                if entry.get(side) is not None:
                    entry[side] = flag_to_snake(entry[side])
        return entries

    def import_set(self, flagset: FlagSet, replace_all: bool = False) -> int:
        response = self._call(
            "POST",
            "/feature-flags/import",
            json=flagset_to_wire(flagset.to_data()),
            params={"replace": str(replace_all).lower()},
        )
        return int(response.json()["version"])

    def put_segment(self, name: str, data: dict[str, Any], if_match: int | None = None) -> Stored:
        body = self._call(
            "PUT", f"/feature-segments/{name}", json=data, headers=self._if_match(if_match)
        ).json()
        return Stored(body["segment"], body["version"])

    def delete_segment(self, name: str, if_match: int | None = None) -> None:
        self._call("DELETE", f"/feature-segments/{name}", headers=self._if_match(if_match))
