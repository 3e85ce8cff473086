"""The project named by a request's ``apikey`` header, and the end user its JWT names.

The data API and end-user auth take the project from the ``apikey`` header, as
Supabase clients send it. Supabase clients also send ``Authorization: Bearer
<key>`` until a user signs in, so a bearer that is an API key means "no user".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from zbaas.app import Services
from zbaas.errors import Unauthorized
from zbaas.platform import keys, projects
from zbaas.platform.security import api_key_type
from zbaas.tenant import endusers


@dataclass
class ProjectClient:
    """A caller of one project's data API or auth API, identified by an API key."""

    project: projects.Project
    key_type: str  # publishable or secret
    jwt_secret: str


async def resolve_apikey(request: Request, services: Services) -> ProjectClient:
    """Resolve the ``apikey`` header to its project; 401 when missing, unknown or revoked.

    The key is looked up on every request, so a revoked key fails at once on
    every API process.
    """
    plain = request.headers.get("apikey")
    if not plain:
        raise Unauthorized(
            "No API key found in request: send the project's key in the apikey header",
            code="no_api_key",
        )
    if api_key_type(plain) is None:
        raise Unauthorized(
            "Invalid API key: the apikey header is malformed", code="invalid_api_key"
        )

    assert services.pools.control is not None
    async with services.pools.control.connection() as conn:
        owner = await keys.resolve(conn, plain)
    if owner is None:
        raise Unauthorized("Invalid API key: unknown or revoked", code="invalid_api_key")
    project = owner.project
    return ProjectClient(project, owner.type, services.box.decrypt(project.jwt_secret))


def bearer_token(request: Request) -> str | None:
    """Return the end-user JWT of the Authorization header, or None when there is none.

    A bearer that is an API key stands for the key itself and must be the key of
    the ``apikey`` header, so one request cannot mix two projects' keys.
    """
    authorization = request.headers.get("authorization")
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise Unauthorized(
            "invalid Authorization header: expected 'Bearer <token>'", code="bad_jwt"
        )
    if value.startswith("zmesh_"):
        if value != request.headers.get("apikey"):
            raise Unauthorized(
                "the API key in the Authorization header differs from the apikey header",
                code="invalid_api_key",
            )
        return None
    return value


def user_claims(request: Request, client: ProjectClient) -> dict[str, Any] | None:
    """Return the verified claims of the request's end-user JWT, or None without one."""
    token = bearer_token(request)
    if token is None:
        return None
    return endusers.verify_access_token(client.jwt_secret, token)
