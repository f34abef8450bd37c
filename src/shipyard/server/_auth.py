"""Bearer-token authentication for every route but the health and metrics endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StateStoreUnavailable
from ..tokens import Scope, Token, verify_token

# A verified token is trusted for this long without asking the database again, so that a busy
# evaluation endpoint does not query per request; revoking a token takes effect within it.
CACHE_SECONDS = 5.0

REFRESH_GRACE_SECONDS = 30.0
"""How long past CACHE_SECONDS a fast route keeps trusting a token while it is re-checked.

When a token's entry expires, the fast routes (`cached_actor`) go on answering for it while one
re-check runs in a thread, instead of sending every request the full way at once: at thousands of
requests a second, that herd of identical checks stalled a worker for 100 ms or more every five
seconds. A revocation still takes effect once the re-check returns (milliseconds after the five
seconds); only if re-checks keep failing (the database unreachable) does the trust end here."""


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="shy_<scope>_<random>",
    description="An API token (`shipyard flags token create NAME --scope admin|client`), sent as"
    " `Authorization: Bearer <token>`.",
)
"""The OpenAPI security scheme of every API route (the routes check the token themselves)."""

UNLEASH_KEY = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    scheme_name="unleashToken",
    description="A client or admin token as Unleash's SDKs send it: `Authorization: <token>` (`Bearer`"
    " optional).",
)
"""The security scheme of the Unleash-compatible routes, whose SDKs send no `Bearer`."""

API_KEY = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="A client or admin token in `X-API-Key`, as OFREP also allows.",
)
"""OFREP's other way to send the token."""


async def bearer_header(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
) -> str | None:
    """The request's `Authorization` header, as is (BEARER declares it to OpenAPI)."""
    return request.headers.get("authorization")


Authorization = Annotated[str | None, Depends(bearer_header)]
"""A route's (or a dependency's) `Authorization` header, documented as the bearer scheme."""


class TokenAuth:
    def __init__(
        self, sessions: sessionmaker[Session], on_refused: Callable[[str], None] = lambda _reason: None
    ) -> None:
        self._sessions = sessions
        self._on_refused = on_refused
        """Told of each refusal (missing, invalid, scope): `/metrics` counts them."""
        self._cache: dict[str, tuple[float, Token | None]] = {}
        self._rechecking: set[str] = set()

    def _verify(self, token: str) -> Token | None:
        with self._sessions() as session:
            return verify_token(session, token)

    async def _token(self, authorization: str | None) -> Token:
        raw = _bearer(authorization)
        if raw is None:
            self._on_refused("missing")
            raise HTTPException(401, "Unauthorized", headers={"WWW-Authenticate": 'Bearer realm="shipyard"'})
        digest = hashlib.sha256(raw.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is None or cached[0] < now:
            try:
                token = await asyncio.to_thread(self._verify, raw)
            except StateStoreUnavailable:
                if cached is None:
                    raise  # never verified here: 503
                # Trusted as last verified while the store is down (a revocation cannot commit
                # either), so that flag evaluations go on; checked again CACHE_SECONDS later.
                token = cached[1]
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + CACHE_SECONDS, token)
        else:
            token = cached[1]
        if token is None:
            self._on_refused("invalid")
            raise HTTPException(
                401, "Unauthorized", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return token

    def cached_actor(self, authorization: str | None, scope: Scope) -> str | None:
        """The actor behind `authorization` when its token was verified less than CACHE_SECONDS
        ago and allows `scope`, without awaiting anything (the fast routes, `_fast`); None when
        the token must be checked the full way (unknown, expired from the cache, invalid, or of
        a lesser scope), which also gives the refusal its usual answer. An entry that has just
        expired is re-checked in the background meanwhile (REFRESH_GRACE_SECONDS)."""
        raw = _bearer(authorization)
        if raw is None:
            return None
        digest = hashlib.sha256(raw.encode()).hexdigest()
        cached = self._cache.get(digest)
        if cached is None:
            return None
        overdue = time.monotonic() - cached[0]
        if overdue > 0 and (overdue > REFRESH_GRACE_SECONDS or not self._recheck(digest, raw)):
            return None
        token = cached[1]
        if token is None or not token.allows(scope):
            return None
        return actor_of_token(token)

    def _recheck(self, digest: str, raw: str) -> bool:
        """Verify the token again in a thread, once at a time per token, and update its entry;
        False when that cannot be started here (no event loop runs this call)."""
        if digest in self._rechecking:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._rechecking.add(digest)

        def done(future: asyncio.Future[Token | None]) -> None:  # on the loop's thread
            self._rechecking.discard(digest)
            if not future.cancelled() and future.exception() is None:
                self._cache[digest] = (time.monotonic() + CACHE_SECONDS, future.result())
            # A failed check changes nothing: the next request past the expiry tries again.

        loop.run_in_executor(None, self._verify, raw).add_done_callback(done)
        return True

    async def _require(self, request: Request | None, authorization: str | None, scope: Scope) -> str:
        token = await self._token(authorization)
        actor = actor_of_token(token)
        if request is not None:
            record_actor(request, actor)  # before the scope check: a 403 still says who asked
        if not token.allows(scope):
            self._on_refused("scope")
            raise HTTPException(403, "Forbidden")
        return actor

    async def admin(self, request: Request, authorization: Authorization = None) -> str:
        """The actor behind the request's admin token (a route's dependency)."""
        return await self._require(request, authorization, "admin")

    async def client(self, request: Request, authorization: Authorization = None) -> str:
        """The actor behind the request's token, client or admin (a route's dependency)."""
        return await self._require(request, authorization, "client")

    async def actor_of(self, authorization: str, scope: Scope) -> str:
        """The actor behind a token handed over some other way (the dashboard's login form, its
        cookie); the request is not marked as made by it."""
        return await self._require(None, authorization, scope)


def actor_of_token(token: Token) -> str:
    """How the access log and the audit name whoever a token belongs to."""
    return f"token:{token.name}"


def _bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for any other header."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization[7:].strip()


def record_actor(request: Request, actor: str) -> None:
    """Say who made `request`, for its access line (`request.state`, the ASGI scope's state)."""
    request.state.actor = actor


def record_scope_actor(scope: MutableMapping[str, Any], actor: str) -> None:
    """`record_actor` for a request answered below Starlette's `Request` (the fast routes)."""
    scope.setdefault("state", {})["actor"] = actor
