"""The notification channels' URLs as they resolve where this process runs, checked before use.

A channel's `url` is a reference (`${env:NAME}` or a `secretRef`), so the spec's loader cannot see
where it points; `shipyard validate` resolves the references set in its environment and reports a
URL that `spec.url_problem` refuses (another scheme than http(s), a link-local or cloud metadata
address) as a spec problem naming the field, and delivery refuses it again (`_channels.deliver`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..spec import Channel, url_problem
from ._secrets import reference_variable, resolve

URL_FIELDS = {"webhook": ("url",), "slack": ("url",), "telegram": ("api_url",), "email": ()}
"""The fields of each channel kind that hold a URL notifications are posted to."""


def channel_url_problems(
    channels: Mapping[str, Channel], environ: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(`notifications.<name>.<field>`, why) for each channel URL that resolves here to a refused
    address; a reference not set here is not checked (the process that delivers may have it)."""
    problems = []
    for name, channel in channels.items():
        for field in URL_FIELDS[channel.kind]:
            reference = getattr(channel, field)
            value = resolve(reference, environ) if reference is not None else None
            problem = url_problem(value) if value else None
            if problem is not None:
                variable = reference_variable(reference)
                source = f" (read from ${variable})" if variable else ""
                problems.append((f"notifications.{name}.{field}", f"the URL{source} {problem}"))
    return problems
