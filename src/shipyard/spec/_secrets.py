"""Secret references, and the detector that keeps secret values out of the spec.

A spec names where a secret lives, never the secret:

- `${env:NAME}` inside a string: read from the environment where shipyard runs (local hosts);
  rendered for Kubernetes as a key of the stack's runtime Secret, never as its value;
- `{secretRef: name/key}`: a key of a Kubernetes Secret (or, when the spec names an external
  secrets store, of that store: an ExternalSecret is rendered to fetch it).

The detector is deliberately strict: a field whose name says it holds a credential must be a
reference, and a string shaped like a credential (a URL with a password, a private key, a cloud or
chat token) is refused wherever it stands. Messages name the field, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
SECRET_REF = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$")

_SENSITIVE_NAME = re.compile(
    r"(passw(or)?d|passwd|secret|token|api[-_]?key|private[-_]?key|credential|auth|dsn|"
    r"access[-_]?key|signing[-_]?key|webhook[-_]?url|database[-_]?url|redis[-_]?url|_pass$|^pass$)",
    re.IGNORECASE,
)
# A scheme starts a run of scheme characters and is bounded: unanchored and unbounded, every
# letter of a long value started a scan to its end (quadratic: 3 s for a 16 kB value, hours for
# a megabyte, before any size limit could speak).
_URL_PASSWORD = re.compile(
    r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]{0,63}://[^/\s:@]*:(?P<password>[^/\s@]+)@", re.I
)
_CREDENTIAL_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("an AWS access key", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[0-9A-Za-z]{30,}")),
    ("a Telegram bot token", re.compile(r"\b\d{8,10}:[0-9A-Za-z_-]{35}\b")),
    ("a JSON web token", re.compile(r"\beyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.")),
)

HOW_TO_REFERENCE = "write a reference instead: '${env:NAME}' or {secretRef: name/key}"


def is_reference(value: object) -> bool:
    """True for a value that only points at a secret."""
    if isinstance(value, dict):
        return set(value) <= {"secretRef", "store"} and "secretRef" in value
    if isinstance(value, str):
        return ENV_REFERENCE.fullmatch(value.strip()) is not None
    return False


def credential_shape(text: str) -> str | None:
    """What kind of credential `text` looks like, or None."""
    for match in _URL_PASSWORD.finditer(text):
        if not ENV_REFERENCE.fullmatch(match["password"]):
            return "a URL with a password in it"
    for name, pattern in _CREDENTIAL_SHAPES:
        if pattern.search(text):
            return name
    return None


def find_secret_values(
    tree: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield (path, why) for every place in a raw spec tree that holds a secret value."""
    if isinstance(tree, dict):
        if is_reference(tree):
            return
        for key, value in tree.items():
            child = (*path, key)
            if (
                isinstance(key, str)
                and _SENSITIVE_NAME.search(key)
                and isinstance(value, str | int | float)
                and not isinstance(value, bool)
                and str(value).strip()
                and not _only_references(str(value))
            ):
                yield child, f"'{key}' holds a secret value; {HOW_TO_REFERENCE}"
                continue
            yield from find_secret_values(value, child)
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            yield from find_secret_values(item, (*path, index))
    elif isinstance(tree, str):
        shape = credential_shape(tree)
        if shape:
            yield path, f"holds {shape}; {HOW_TO_REFERENCE}"


def _only_references(text: str) -> bool:
    """A string whose secret parts are all references, e.g. 'redis://:${env:REDIS_PASSWORD}@redis'."""
    return ENV_REFERENCE.search(text) is not None and credential_shape(text) is None
