"""Platform sign-up, login and token refresh."""

from __future__ import annotations

from fastapi import APIRouter, Response

from zbaas.api.deps import ControlConn, CurrentUser, ServicesDep
from zbaas.api.models import (
    ERRORS,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    SignupRequest,
    TokenResponse,
    UserResponse,
)
from zbaas.app import Services
from zbaas.errors import NotFound
from zbaas.platform import accounts
from zbaas.platform.security import hash_token

router = APIRouter(prefix="/auth", tags=["auth"], responses=ERRORS)


def _tokens(services: Services, session: accounts.SessionTokens) -> TokenResponse:
    return TokenResponse(
        access_token=services.signer.issue(str(session.user_id), str(session.session_id)),
        refresh_token=session.refresh_token,
        expires_in=services.settings.access_token_ttl,
    )


@router.post("/signup", status_code=201, response_model=UserResponse)
async def signup(body: SignupRequest, conn: ControlConn) -> UserResponse:
    """Create an account and its own organization, owned by the new user."""
    user = await accounts.signup(conn, body.email, body.password, body.full_name)
    return UserResponse(**user.__dict__)


@router.post("/login", response_model=TokenResponse)
async def login(body: LoginRequest, conn: ControlConn, services: ServicesDep) -> TokenResponse:
    """Exchange email and password for an access token and a refresh token."""
    user_id = await accounts.authenticate(conn, body.email, body.password)
    session = await accounts.start_session(conn, user_id, services.settings.refresh_token_ttl)
    return _tokens(services, session)


@router.post("/refresh", response_model=TokenResponse)
async def refresh(body: RefreshRequest, conn: ControlConn, services: ServicesDep) -> TokenResponse:
    """Spend a refresh token for a new pair; reusing a spent one ends the session."""
    session = await accounts.rotate_refresh(
        conn, body.refresh_token, services.settings.refresh_token_ttl
    )
    return _tokens(services, session)


@router.get("/me", response_model=UserResponse)
async def me(user: CurrentUser, conn: ControlConn) -> UserResponse:
    """Return the signed-in user."""
    assert user.user_id is not None
    found = await accounts.get(conn, user.user_id)
    if found is None:
        raise NotFound("user not found")
    return UserResponse(**found.__dict__)


@router.post("/logout", status_code=204)
async def logout(
    user: CurrentUser, conn: ControlConn, body: LogoutRequest | None = None
) -> Response:
    """End the session of the access token, and of the refresh token if one is given."""
    assert user.session_id is not None
    await accounts.end_session(conn, user.session_id)
    if body is not None and body.refresh_token:
        row = await (
            await conn.execute(
                "SELECT session_id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id "
                "WHERE t.token_hash = %s AND s.user_id = %s",
                (hash_token(body.refresh_token), user.user_id),
            )
        ).fetchone()
        if row is not None:
            await accounts.end_session(conn, str(row["session_id"]))
    return Response(status_code=204)
