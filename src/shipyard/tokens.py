"""API tokens with scopes: `admin` may write, `client` may read and evaluate.

A token is shown once, when it is created; the store keeps only its SHA-256, so a leaked
database does not leak working tokens. Tokens are long random strings, so a plain hash (not a
slow password hash) is the right tool: there is nothing to brute-force. Creating and revoking a
token are audited (`token.create`, `token.revoke`) in the same transaction, never with its value.

The dashboard signs in with an admin token once and then carries a session: a random id in its
cookie, kept here only as its SHA-256, with the token it was opened with. A session ends at
sign-out, SESSION_LIFETIME after it began, SESSION_IDLE after its last request, or when its
token is revoked; so the cookie never holds a token, and a stolen one is worth little.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .errors import UserError
from .state import ApiTokenRow, AuditRow, DashboardSessionRow, as_utc, utcnow

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
    _audit(session, created_by, "token.create", name, {"scope": scope, "prefix": token[:14]})
    session.commit()
    return token


def verify_token(session: Session, token: str) -> Token | None:
    """The live token matching `token`, or None."""
    digest = _digest(token)
    row = session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Token(name=row.name, scope=row.scope, prefix=row.prefix)  # type: ignore[arg-type]


def revoke_token(session: Session, name: str, revoked_by: str | None = None) -> None:
    """Revoke the token and end every dashboard session opened with it."""
    row = session.scalar(select(ApiTokenRow).where(ApiTokenRow.name == name))
    if row is None:
        raise UserError(f"no token named {name!r}")
    row.revoked_at = utcnow()
    ended = session.execute(delete(DashboardSessionRow).where(DashboardSessionRow.token_id == row.id))
    sessions_ended = int(ended.rowcount)  # type: ignore[attr-defined]
    _audit(session, revoked_by, "token.revoke", name, {"scope": row.scope, "sessions_ended": sessions_ended})
    session.commit()


def _audit(session: Session, actor: str | None, action: str, name: str, after: dict[str, object]) -> None:
    """The token change's audit entry, in the change's own transaction (never the token's value)."""
    session.add(
        AuditRow(
            actor=(actor or "unknown")[:128], action=action, target_kind="api_token", target=name, after=after
        )
    )


def list_tokens(session: Session) -> list[ApiTokenRow]:
    return list(session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.name)))


# --- dashboard sessions ---------------------------------------------------------------------------

SESSION_LIFETIME = dt.timedelta(hours=12)
"""A dashboard session ends this long after sign-in, however busy (a working day, then sign in again)."""
SESSION_IDLE = dt.timedelta(hours=1)
"""… or this long after its last request."""
_SEEN_EVERY = dt.timedelta(minutes=1)
"""`last_seen_at` is written at most this often: a page's requests cost no write each."""


def open_session(session: Session, token: str, address: str | None = None) -> str | None:
    """A new dashboard session for `token` when it is a live admin token: the session id (shown
    once, for the cookie); None otherwise."""
    digest = _digest(token)
    row = session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == digest))
    if row is None or row.revoked_at is not None or row.scope != "admin":
        return None
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        DashboardSessionRow(
            session_hash=_digest(session_id),
            token_id=row.id,
            address=(address or "")[:64] or None,
            created_at=now,
            last_seen_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    # Sessions that ended without a sign-out go here rather than in a job of their own.
    session.execute(delete(DashboardSessionRow).where(DashboardSessionRow.expires_at < now))
    session.commit()
    return session_id


def session_token(session: Session, session_id: str) -> Token | None:
    """The live token behind a live dashboard session, or None (unknown, expired, idle too long,
    or its token revoked); notes that the session was seen."""
    if not session_id or len(session_id) > 128:
        return None
    found = session.execute(
        select(DashboardSessionRow, ApiTokenRow)
        .join(ApiTokenRow, ApiTokenRow.id == DashboardSessionRow.token_id)
        .where(DashboardSessionRow.session_hash == _digest(session_id))
    ).first()
    if found is None:
        return None
    row, token = found
    now = utcnow()
    last_seen = as_utc(row.last_seen_at)
    if token.revoked_at is not None or as_utc(row.expires_at) <= now or now - last_seen > SESSION_IDLE:
        return None
    if now - last_seen > _SEEN_EVERY:
        row.last_seen_at = now
        session.commit()
    return Token(name=token.name, scope=token.scope, prefix=token.prefix)  # type: ignore[arg-type]


def close_session(session: Session, session_id: str) -> bool:
    """End a dashboard session (sign-out); False when there was none."""
    if not session_id or len(session_id) > 128:
        return False
    result = session.execute(
        delete(DashboardSessionRow).where(DashboardSessionRow.session_hash == _digest(session_id))
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]
