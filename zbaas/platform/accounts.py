"""Platform users, their sessions and refresh tokens."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg
from anyio import to_thread
from psycopg.rows import class_row

from zbaas.errors import Conflict, Unauthorized
from zbaas.platform import orgs
from zbaas.platform.security import hash_password, hash_token, new_refresh_token, verify_password

INVALID_LOGIN = "invalid email or password"
INVALID_REFRESH = "invalid or expired refresh token; log in again"


@dataclass
class User:
    id: UUID
    email: str
    full_name: str
    created_at: datetime


@dataclass
class SessionTokens:
    user_id: UUID
    session_id: UUID
    refresh_token: str


ORG_ID_ALPHABET = string.ascii_lowercase + string.digits
ORG_ID_LENGTH = 12


def new_org_id() -> str:
    """Return a short random id of lowercase letters and digits, as used in database names."""
    return "".join(secrets.choice(ORG_ID_ALPHABET) for _ in range(ORG_ID_LENGTH))


async def signup(conn: psycopg.AsyncConnection, email: str, password: str, full_name: str) -> User:
    """Create a user and their own organization, of which they are the owner."""
    password_hash = await to_thread.run_sync(hash_password, password)
    try:
        async with conn.transaction():
            cur = conn.cursor(row_factory=class_row(User))
            await cur.execute(
                "INSERT INTO users (email, password_hash, full_name) VALUES (%s, %s, %s) "
                "RETURNING id, email, full_name, created_at",
                (email, password_hash, full_name),
            )
            user = await cur.fetchone()
            assert user is not None
            await orgs.create(conn, f"{full_name}'s organization", user.id)
    except psycopg.errors.UniqueViolation:
        raise Conflict(
            f"an account with the email {email} already exists", code="email_taken"
        ) from None
    return user


async def get(conn: psycopg.AsyncConnection, user_id: UUID | str) -> User | None:
    cur = conn.cursor(row_factory=class_row(User))
    await cur.execute(
        "SELECT id, email, full_name, created_at FROM users WHERE id = %s", (user_id,)
    )
    return await cur.fetchone()


async def get_by_email(conn: psycopg.AsyncConnection, email: str) -> User | None:
    cur = conn.cursor(row_factory=class_row(User))
    await cur.execute(
        "SELECT id, email, full_name, created_at FROM users WHERE lower(email) = lower(%s)",
        (email,),
    )
    return await cur.fetchone()


async def authenticate(conn: psycopg.AsyncConnection, email: str, password: str) -> UUID:
    """Return the user id for valid credentials; the same 401 for any wrong part."""
    row = await (
        await conn.execute(
            "SELECT id, password_hash FROM users WHERE lower(email) = lower(%s)", (email,)
        )
    ).fetchone()
    password_hash = row["password_hash"] if row else None
    valid = await to_thread.run_sync(verify_password, password_hash, password)
    if not valid or row is None:
        raise Unauthorized(INVALID_LOGIN, code="invalid_credentials")
    return UUID(str(row["id"]))


async def start_session(conn: psycopg.AsyncConnection, user_id: UUID, ttl: int) -> SessionTokens:
    async with conn.transaction():
        row = await (
            await conn.execute(
                "INSERT INTO sessions (user_id) VALUES (%s) RETURNING id", (user_id,)
            )
        ).fetchone()
        assert row is not None
        session_id = UUID(str(row["id"]))
        token = await _issue_refresh(conn, session_id, ttl)
    return SessionTokens(user_id, session_id, token)


async def _issue_refresh(conn: psycopg.AsyncConnection, session_id: UUID, ttl: int) -> str:
    token = new_refresh_token()
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (%s, %s, %s)",
        (hash_token(token), session_id, datetime.now(UTC) + timedelta(seconds=ttl)),
    )
    return token


async def rotate_refresh(conn: psycopg.AsyncConnection, token: str, ttl: int) -> SessionTokens:
    """Spend ``token`` and return its successor in the same session.

    A token that was already spent means it leaked: the whole session is revoked,
    so neither the thief nor the user can refresh again.
    """
    async with conn.transaction():
        row = await (
            await conn.execute(
                "SELECT t.session_id, t.used_at, t.expires_at, s.user_id, s.revoked_at "
                "FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id "
                "WHERE t.token_hash = %s FOR UPDATE OF t, s",
                (hash_token(token),),
            )
        ).fetchone()
        if row is None or row["revoked_at"] is not None:
            raise Unauthorized(INVALID_REFRESH, code="invalid_refresh_token")
        if row["used_at"] is not None:
            await conn.execute(
                "UPDATE sessions SET revoked_at = now() WHERE id = %s", (row["session_id"],)
            )
        elif row["expires_at"] > datetime.now(UTC):
            await conn.execute(
                "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = %s",
                (hash_token(token),),
            )
            new_token = await _issue_refresh(conn, row["session_id"], ttl)
            return SessionTokens(UUID(str(row["user_id"])), UUID(str(row["session_id"])), new_token)
    # Reached on reuse (after the revocation committed) and on expiry.
    raise Unauthorized(INVALID_REFRESH, code="invalid_refresh_token")


async def session_is_active(conn: psycopg.AsyncConnection, session_id: str, user_id: str) -> bool:
    row = await (
        await conn.execute(
            "SELECT 1 FROM sessions WHERE id = %s AND user_id = %s AND revoked_at IS NULL",
            (session_id, user_id),
        )
    ).fetchone()
    return row is not None


async def end_session(conn: psycopg.AsyncConnection, session_id: str) -> None:
    await conn.execute(
        "UPDATE sessions SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
        (session_id,),
    )
