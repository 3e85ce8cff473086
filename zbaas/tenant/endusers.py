"""End users of one project: ``auth.users``, sessions, refresh tokens and access tokens.

Passwords are hashed with argon2id. Access tokens are HS256 JWTs signed with the
project's own secret and carry the claims that Supabase Auth (GoTrue) puts in
its tokens, so RLS policies written for Supabase (``auth.uid() = user_id``) work
unchanged. Refresh tokens rotate: each one is spent once, and spending one twice
revokes its whole session. Every function here takes a superuser connection to
the project database, because no project role may write ``auth`` tables.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt
import psycopg
from anyio import to_thread
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from zbaas.errors import Conflict, InvalidInput, Unauthorized
from zbaas.platform.security import hash_password, hash_token, new_refresh_token, verify_password

AUDIENCE = "authenticated"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
# Clock skew tolerated when checking exp and iat of a presented token.
LEEWAY_SECONDS = 5


@dataclass
class EndUser:
    id: UUID
    aud: str
    role: str
    email: str
    raw_user_meta_data: dict[str, Any]
    raw_app_meta_data: dict[str, Any]
    last_sign_in_at: datetime | None
    created_at: datetime
    updated_at: datetime


USER_COLUMNS = (
    "id, aud, role, email, raw_user_meta_data, raw_app_meta_data, "
    "last_sign_in_at, created_at, updated_at"
)


class InvalidToken(Unauthorized):
    """An access token that is malformed, wrongly signed, expired or lacks claims."""

    code = "bad_jwt"

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"Password should be at least {MIN_PASSWORD_LENGTH} characters.",
            code="weak_password",
            details={"reasons": ["length"]},
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"Password should be at most {MAX_PASSWORD_LENGTH} characters.",
            code="validation_failed",
        )


async def signup(
    conn: psycopg.AsyncConnection, email: str, password: str, user_metadata: dict[str, Any]
) -> EndUser:
    """Create a user; the email is confirmed at once because zbaas sends no mail."""
    check_password(password)
    password_hash = await to_thread.run_sync(hash_password, password)
    cur = conn.cursor(row_factory=class_row(EndUser))
    try:
        await cur.execute(
            f"INSERT INTO auth.users (email, encrypted_password, raw_user_meta_data) "
            f"VALUES (%s, %s, %s) RETURNING {USER_COLUMNS}",
            (email, password_hash, Jsonb(user_metadata)),
        )
    except psycopg.errors.UniqueViolation:
        raise Conflict("User already registered", code="user_already_exists") from None
    user = await cur.fetchone()
    assert user is not None
    return user


async def get(conn: psycopg.AsyncConnection, user_id: UUID | str) -> EndUser | None:
    cur = conn.cursor(row_factory=class_row(EndUser))
    await cur.execute(f"SELECT {USER_COLUMNS} FROM auth.users WHERE id = %s", (user_id,))
    return await cur.fetchone()


async def authenticate(conn: psycopg.AsyncConnection, email: str, password: str) -> EndUser:
    """Return the user for valid credentials; the same error for an unknown email."""
    row = await (
        await conn.execute(
            "SELECT id, encrypted_password FROM auth.users WHERE lower(email) = lower(%s)",
            (email,),
        )
    ).fetchone()
    password_hash = row["encrypted_password"] if row else None
    valid = await to_thread.run_sync(verify_password, password_hash, password)
    if not valid or row is None:
        raise Unauthorized("Invalid login credentials", code="invalid_credentials")

    cur = conn.cursor(row_factory=class_row(EndUser))
    await cur.execute(
        f"UPDATE auth.users SET last_sign_in_at = now() WHERE lower(email) = lower(%s) "
        f"RETURNING {USER_COLUMNS}",
        (email,),
    )
    user = await cur.fetchone()
    assert user is not None
    return user


async def start_session(conn: psycopg.AsyncConnection, user_id: UUID, ttl: int) -> tuple[UUID, str]:
    """Open a session and return its id with its first refresh token."""
    async with conn.transaction():
        row = await (
            await conn.execute(
                "INSERT INTO auth.sessions (user_id) VALUES (%s) RETURNING id", (user_id,)
            )
        ).fetchone()
        assert row is not None
        session_id = UUID(str(row["id"]))
        token = await _issue_refresh(conn, session_id, ttl)
    return session_id, token


async def _issue_refresh(conn: psycopg.AsyncConnection, session_id: UUID, ttl: int) -> str:
    token = new_refresh_token()
    await conn.execute(
        "INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at) VALUES (%s, %s, %s)",
        (hash_token(token), session_id, datetime.now(UTC) + timedelta(seconds=ttl)),
    )
    return token


INVALID_REFRESH = "Invalid Refresh Token: Refresh Token Not Found"


async def rotate_refresh(
    conn: psycopg.AsyncConnection, token: str, ttl: int
) -> tuple[UUID, UUID, str]:
    """Spend ``token``; return (user id, session id, successor token).

    A token spent a second time means it leaked: its session is revoked, so neither
    the thief nor the user can refresh again.
    """
    async with conn.transaction():
        row = await (
            await conn.execute(
                "SELECT t.session_id, t.used_at, t.expires_at, s.user_id, s.revoked_at "
                "FROM auth.refresh_tokens t JOIN auth.sessions s ON s.id = t.session_id "
                "WHERE t.token_hash = %s FOR UPDATE OF t, s",
                (hash_token(token),),
            )
        ).fetchone()
        if row is None or row["revoked_at"] is not None:
            raise Unauthorized(INVALID_REFRESH, code="refresh_token_not_found")
        if row["used_at"] is not None:
            await conn.execute(
                "UPDATE auth.sessions SET revoked_at = now() WHERE id = %s", (row["session_id"],)
            )
        elif row["expires_at"] > datetime.now(UTC):
            await conn.execute(
                "UPDATE auth.refresh_tokens SET used_at = now() WHERE token_hash = %s",
                (hash_token(token),),
            )
            new_token = await _issue_refresh(conn, row["session_id"], ttl)
            return UUID(str(row["user_id"])), UUID(str(row["session_id"])), new_token
    # Reached on reuse (after the revocation committed) and on expiry.
    raise Unauthorized(INVALID_REFRESH, code="refresh_token_already_used")


async def session_is_active(conn: psycopg.AsyncConnection, session_id: str, user_id: str) -> bool:
    row = await (
        await conn.execute(
            "SELECT 1 FROM auth.sessions WHERE id = %s AND user_id = %s AND revoked_at IS NULL",
            (session_id, user_id),
        )
    ).fetchone()
    return row is not None


async def end_sessions(
    conn: psycopg.AsyncConnection, user_id: str, session_id: str, scope: str
) -> None:
    """Revoke the ``local`` session, ``others`` of the user, or all of them (``global``)."""
    if scope == "local":
        condition, params = "id = %s", (session_id,)
    elif scope == "others":
        condition, params = "user_id = %s AND id <> %s", (user_id, session_id)
    else:
        condition, params = "user_id = %s", (user_id,)
    await conn.execute(
        f"UPDATE auth.sessions SET revoked_at = now() WHERE {condition} AND revoked_at IS NULL",
        params,
    )


def issue_access_token(
    secret: str, user: EndUser, session_id: UUID, ttl: int, issuer: str
) -> tuple[str, int]:
    """Sign an access token for ``user``; return it with its expiry (Unix seconds)."""
    now = int(time.time())
    expires_at = now + ttl
    claims = {
        "iss": issuer,
        "aud": user.aud,
        "sub": str(user.id),
        "exp": expires_at,
        "iat": now,
        "email": user.email,
        "phone": "",
        "role": user.role,
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(session_id),
        "is_anonymous": False,
        "app_metadata": user.raw_app_meta_data,
        "user_metadata": user.raw_user_meta_data,
    }
    return jwt.encode(claims, secret, algorithm="HS256"), expires_at


# Verified tokens, so a client that sends the same token on every request pays
# for the signature check once. Entries leave at their token's expiry or when
# the cache is full.
VERIFIED_TOKENS_MAX = 10_000
_verified: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()


def verify_access_token(secret: str, token: str) -> dict[str, Any]:
    """Return the claims of a valid end-user token of this project.

    Only the ``authenticated`` role is accepted: a token can never raise its bearer
    to ``service_role``, which only the project's secret key grants.
    """
    key = (secret, token)
    cached = _verified.get(key)
    if cached is not None:
        if time.time() <= cached["exp"] + LEEWAY_SECONDS:
            _verified.move_to_end(key)
            return dict(cached)
        del _verified[key]
        raise InvalidToken("JWT expired", expired=True)

    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "sub", "role", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("JWT expired", expired=True) from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid JWT: {type(exc).__name__}") from None
    if claims.get("role") != "authenticated":
        raise InvalidToken("invalid JWT: the role claim must be 'authenticated'")
    try:
        UUID(str(claims["sub"]))
    except ValueError:
        raise InvalidToken("invalid JWT: the sub claim is not a user id") from None

    _verified[key] = claims
    if len(_verified) > VERIFIED_TOKENS_MAX:
        _verified.popitem(last=False)
    return dict(claims)
