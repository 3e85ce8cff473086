"""End-user auth of a project: the Supabase Auth (GoTrue) REST subset its clients use.

The project is the one the ``apikey`` header names. Errors use GoTrue's shape,
``{"code": <HTTP status>, "error_code": "...", "msg": "..."}``, which the
``supabase-auth`` client turns into ``AuthApiError``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar
from uuid import UUID

import psycopg
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError

from zbaas.api.apikey import ProjectClient, bearer_token, resolve_apikey
from zbaas.api.deps import ServicesDep
from zbaas.app import Services
from zbaas.errors import InvalidInput, Unauthorized, ZbaasError
from zbaas.tenant import endusers
from zbaas.tenant.connections import as_superuser

logger = logging.getLogger("zbaas.api")

# GoTrue returns these conditions with a status other than zbaas's usual one.
GOTRUE_STATUS = {
    "invalid_credentials": 400,
    "refresh_token_not_found": 400,
    "refresh_token_already_used": 400,
    "user_already_exists": 422,
    "bad_json": 400,
}


def gotrue_error(error: ZbaasError) -> JSONResponse:
    status = GOTRUE_STATUS.get(error.code, error.status)
    body: dict[str, Any] = {"code": status, "error_code": error.code, "msg": error.message}
    if error.code == "weak_password":
        body["weak_password"] = error.details
    return JSONResponse(body, status_code=status)


class GoTrueRoute(APIRoute):
    """A route whose errors are rendered in GoTrue's shape instead of zbaas's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def render_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except ZbaasError as exc:
                return gotrue_error(exc)
            except RequestValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(part) for part in first["loc"])
                return gotrue_error(
                    InvalidInput(f"{field}: {first['msg']}", code="validation_failed")
                )
            except (PoolTimeout, psycopg.OperationalError) as exc:
                logger.error(
                    "database unavailable on %s %s: %s",
                    request.method,
                    request.url.path,
                    type(exc).__name__,
                )
                return JSONResponse(
                    {"code": 503, "error_code": "unavailable", "msg": "database unavailable"},
                    status_code=503,
                )

        return render_errors


router = APIRouter(prefix="/auth/v1", tags=["end-user auth"], route_class=GoTrueRoute)


class GoTrueRequest(BaseModel):
    # Fields the clients send that zbaas accepts and ignores: captcha and PKCE data.
    model_config = ConfigDict(extra="forbid")

    gotrue_meta_security: dict[str, Any] | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None


class SignupBody(GoTrueRequest):
    email: EmailStr | None = None
    phone: str | None = None
    password: str = Field(max_length=endusers.MAX_PASSWORD_LENGTH)
    data: dict[str, Any] = Field(default_factory=dict)
    channel: str | None = None


class PasswordGrant(GoTrueRequest):
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = None
    password: str = Field(max_length=endusers.MAX_PASSWORD_LENGTH)
    data: dict[str, Any] | None = None


class RefreshGrant(GoTrueRequest):
    refresh_token: str = Field(min_length=1, max_length=200)


ModelT = TypeVar("ModelT", bound=BaseModel)


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    try:
        raw = json.loads(await request.body() or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput("Could not parse request body as JSON", code="bad_json") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidInput(f"{field}: {first['msg']}", code="validation_failed") from None


def user_json(user: endusers.EndUser) -> dict[str, Any]:
    """A user as GoTrue returns it; the email is confirmed at sign-up."""
    return {
        "id": str(user.id),
        "aud": user.aud,
        "role": user.role,
        "email": user.email,
        "phone": "",
        "email_confirmed_at": user.created_at.isoformat(),
        "confirmed_at": user.created_at.isoformat(),
        "last_sign_in_at": user.last_sign_in_at.isoformat() if user.last_sign_in_at else None,
        "app_metadata": user.raw_app_meta_data,
        "user_metadata": user.raw_user_meta_data,
        "identities": [],
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
        "is_anonymous": False,
    }


def session_json(
    services: Services,
    client: ProjectClient,
    request: Request,
    user: endusers.EndUser,
    session_id: Any,
    refresh_token: str,
) -> dict[str, Any]:
    ttl = services.settings.enduser_access_token_ttl
    issuer = str(request.base_url).rstrip("/") + "/auth/v1"
    access_token, expires_at = endusers.issue_access_token(
        client.jwt_secret, user, session_id, ttl, issuer
    )
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": ttl,
        "expires_at": expires_at,
        "refresh_token": refresh_token,
        "user": user_json(user),
    }


@router.post("/signup")
async def signup(request: Request, services: ServicesDep) -> JSONResponse:
    """Create an end user with email and password and return a signed-in session."""
    client = await resolve_apikey(request, services)
    body = await parse_body(request, SignupBody)
    if body.email is None:
        raise InvalidInput(
            "Signups with a phone number are not supported; send an email",
            code="phone_provider_disabled",
        )

    ttl = services.settings.enduser_refresh_token_ttl
    async with as_superuser(services, client.project) as conn:
        user = await endusers.signup(conn, str(body.email), body.password, body.data)
        session_id, refresh_token = await endusers.start_session(conn, user.id, ttl)
    logger.info("end user %s signed up in project %s", user.id, client.project.id)
    return JSONResponse(session_json(services, client, request, user, session_id, refresh_token))


@router.post("/token")
async def token(
    request: Request,
    services: ServicesDep,
    grant_type: Literal["password", "refresh_token"],
) -> JSONResponse:
    """Sign in with a password, or spend a refresh token for a new session pair."""
    client = await resolve_apikey(request, services)
    ttl = services.settings.enduser_refresh_token_ttl
    if grant_type == "password":
        grant = await parse_body(request, PasswordGrant)
        if grant.email is None:
            raise InvalidInput(
                "Sign-in with a phone number is not supported", code="validation_failed"
            )
        async with as_superuser(services, client.project) as conn:
            user = await endusers.authenticate(conn, grant.email, grant.password)
            session_id, refresh_token = await endusers.start_session(conn, user.id, ttl)
    else:
        refresh = await parse_body(request, RefreshGrant)
        async with as_superuser(services, client.project) as conn:
            user_id, session_id, refresh_token = await endusers.rotate_refresh(
                conn, refresh.refresh_token, ttl
            )
            found = await endusers.get(conn, user_id)
        if found is None:
            raise Unauthorized(endusers.INVALID_REFRESH, code="refresh_token_not_found")
        user = found
    return JSONResponse(session_json(services, client, request, user, session_id, refresh_token))


async def signed_in(request: Request, services: Services) -> tuple[ProjectClient, dict[str, Any]]:
    client = await resolve_apikey(request, services)
    token_text = bearer_token(request)
    if token_text is None:
        raise Unauthorized(
            "This endpoint requires a Bearer token of a signed-in user", code="no_authorization"
        )
    claims = endusers.verify_access_token(client.jwt_secret, token_text)
    try:
        UUID(str(claims.get("session_id")))
    except ValueError:
        raise endusers.InvalidToken("invalid JWT: no session_id claim") from None
    return client, claims


@router.get("/user")
async def get_user(request: Request, services: ServicesDep) -> JSONResponse:
    """Return the signed-in end user; a token whose session was signed out gets 401."""
    client, claims = await signed_in(request, services)
    async with as_superuser(services, client.project) as conn:
        active = await endusers.session_is_active(
            conn, str(claims.get("session_id")), str(claims["sub"])
        )
        user = await endusers.get(conn, claims["sub"]) if active else None
    if user is None:
        raise Unauthorized("Session not found or user was signed out", code="session_not_found")
    return JSONResponse(user_json(user))


@router.post("/logout", status_code=204)
async def logout(
    request: Request,
    services: ServicesDep,
    scope: Literal["global", "local", "others"] = "global",
) -> Response:
    """End the token's session (local), the user's other sessions, or all of them (global).

    Refresh tokens of the ended sessions stop working at once. Access tokens already
    issued stay valid for the data API until they expire, as in Supabase Auth.
    """
    client, claims = await signed_in(request, services)
    async with as_superuser(services, client.project) as conn:
        await endusers.end_sessions(conn, str(claims["sub"]), str(claims.get("session_id")), scope)
    return Response(status_code=204)
