"""Saying so when flag evaluations come from a flag set the state store could not confirm.

While the store does not answer, the evaluation routes go on answering from the last flag set read
(`LiveFlagSet.stale_since`), on the fast path and the FastAPI routes alike, and every answer of
theirs carries `X-Shipyard-Flags-Stale: <RFC 3339 time the store last answered>`, so that an SDK
or an operator can tell a current answer from a stale one. The header is absent while the store
answers.

Plain ASGI, outside the fast routes (`_fast`), so that one place stamps both paths; it reads the
route the answer matched (`scope["route"]`, which the fast routes set too), when the answer starts:
the evaluation itself may be what found the store gone.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..flags import LiveFlagSet
from ..state import rfc3339
from ._access_log import EVALUATION_ROUTES

STALE_HEADER = "X-Shipyard-Flags-Stale"

STAMPED_ROUTES = EVALUATION_ROUTES | {"/feature-flags/evaluate"}
"""The routes that answer from the live flag set: what SDKs poll, and seed 003's bulk evaluation."""
_PREFIXES = tuple(sorted({route.split("/")[1] for route in STAMPED_ROUTES}))
"""The first segments of their paths: only requests under them are looked at."""


class StaleFlagsHeader:
    """Add STALE_HEADER to the evaluation routes' answers while the flag set is stale."""

    def __init__(self, app: ASGIApp, live: LiveFlagSet) -> None:
        self.app = app
        self.live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"][1:].startswith(_PREFIXES):
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            since = self.live.stale_since
            route = getattr(scope.get("route"), "path", None)
            if message["type"] == "http.response.start" and since is not None and route in STAMPED_ROUTES:
                header = (STALE_HEADER.lower().encode(), rfc3339(since).encode())
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, stamped)
