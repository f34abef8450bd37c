"""Live pages: the HTML fragment a page's polling script refreshes its live regions from.

Every dashboard page answers a request carrying `X-Shipyard-Live: 1` with its content block alone
(no header, no navigation, no one-time message consumed): `static/dashboard.js` fetches the page it
is on that way every few seconds and swaps each element marked `data-live` (by id) for the new one.
A page thus needs no endpoint of its own to be live, and the fragment is the page's own rendering,
so the two cannot disagree.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from jinja2 import Environment

LIVE_HEADER = "x-shipyard-live"


def wants_live(request: Request) -> bool:
    return request.headers.get(LIVE_HEADER) == "1"


def live_block(environment: Environment, template: str, context: dict[str, Any]) -> str:
    """The `content` block of `template` rendered alone."""
    page = environment.get_template(template)
    return "".join(page.blocks["content"](page.new_context(context)))
