"""API tokens with scopes: `admin` may write, `client` may read and evaluate.

A token is shown once, when it is created; the store keeps only its SHA-256, so a leaked
database does not leak working tokens. Tokens are long random strings, so a plain hash (not a
slow password hash) is the right tool: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import UserError
from .state import ApiTokenRow, utcnow

Scope = Literal["admin", "client"]
SCOPES: tuple[Scope, ...] = ("admin", "client")


@dataclass(frozen=True)
class Token:
    name: str
    scope: Scope
    prefix: str

    def allows(self, needed: Scope) -> bool:
        return self.scope in ("admin", needed)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, scope: Scope, created_by: str | None = None) -> str:
    """Create a token and return it; this is the only time its value is available."""
    if scope not in SCOPES:
        raise UserError(f"unknown scope {scope!r}; use one of: {', '.join(SCOPES)}")
    if session.scalar(select(ApiTokenRow).where(ApiTokenRow.name == name)) is not None:
        raise UserError(f"a token named {name!r} exists; revoke it first or pick another name")
    token = f"shy_{scope}_{secrets.token_urlsafe(32)}"
    session.add(
        ApiTokenRow(
            name=name, scope=scope, token_hash=_digest(token), prefix=token[:14], created_by=created_by
        )
    )
    session.commit()
    return token


def verify_token(session: Session, token: str) -> Token | None:
    """The live token matching `token`, or None."""
    digest = _digest(token)
    row = session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Token(name=row.name, scope=row.scope, prefix=row.prefix)  # type: ignore[arg-type]


def revoke_token(session: Session, name: str) -> None:
    row = session.scalar(select(ApiTokenRow).where(ApiTokenRow.name == name))
    if row is None:
        raise UserError(f"no token named {name!r}")
    row.revoked_at = utcnow()
    session.commit()


def list_tokens(session: Session) -> list[ApiTokenRow]:
    return list(session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.name)))
