"""Request dependencies: who is calling, in which organization, on which project."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

import psycopg
from fastapi import Depends, Header, Request

from zbaas.app import Services
from zbaas.errors import Forbidden, NotFound, Unauthorized
from zbaas.platform import accounts, keys, orgs, projects
from zbaas.platform.security import api_key_type


async def get_services(request: Request) -> Services:
    # async, because FastAPI runs a plain def dependency in a worker thread, which
    # costs every request a thread hand-off.
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_control(services: ServicesDep) -> AsyncIterator[psycopg.AsyncConnection]:
    assert services.pools.control is not None
    async with services.pools.control.connection() as conn:
        yield conn


ControlConn = Annotated[psycopg.AsyncConnection, Depends(get_control)]


@dataclass
class Principal:
    """The caller: a platform user, or an API key of one project."""

    user_id: UUID | None = None
    session_id: str | None = None
    key: keys.KeyOwner | None = None


def _presented_credential(request: Request) -> tuple[str | None, str | None]:
    """Return (bearer token, apikey header) as sent."""
    bearer = None
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        bearer = value.strip()
    return bearer, request.headers.get("apikey")


async def get_principal(request: Request, services: ServicesDep, conn: ControlConn) -> Principal:
    bearer, apikey = _presented_credential(request)
    key_text = apikey or (bearer if bearer and bearer.startswith("zmesh_") else None)
    if key_text is not None:
        if api_key_type(key_text) is None:
            raise Unauthorized("malformed API key", code="invalid_api_key")
        owner = await keys.resolve(conn, key_text)
        if owner is None:
            raise Unauthorized("invalid or revoked API key", code="invalid_api_key")
        return Principal(key=owner)

    if bearer is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    claims = services.signer.verify(bearer)
    if claims is None or not await accounts.session_is_active(conn, claims["sid"], claims["sub"]):
        raise Unauthorized("invalid or expired access token", code="invalid_token")
    return Principal(user_id=UUID(claims["sub"]), session_id=claims["sid"])


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_current_user(principal: PrincipalDep) -> Principal:
    if principal.user_id is None:
        raise Forbidden("this endpoint needs a signed-in platform user, not an API key")
    return principal


CurrentUser = Annotated[Principal, Depends(get_current_user)]


@dataclass
class ActingOrg:
    id: str
    role: str


async def get_acting_org(
    user: CurrentUser,
    conn: ControlConn,
    x_org_id: Annotated[str | None, Header(description="Organization to act in")] = None,
) -> ActingOrg:
    assert user.user_id is not None
    org_id, role = await orgs.acting_org(conn, user.user_id, x_org_id)
    return ActingOrg(org_id, role)


OrgDep = Annotated[ActingOrg, Depends(get_acting_org)]


@dataclass
class ProjectAccess:
    """A project the caller may reach, and how: an org role or a key type."""

    project: projects.Project
    role: str  # owner, admin, member, secret or publishable

    @property
    def is_key(self) -> bool:
        return self.role in ("secret", "publishable")

    def require_manager(self, action: str) -> None:
        """Owners and admins only: deleting the project, creating and revoking keys."""
        if self.role not in orgs.MANAGER_ROLES:
            raise Forbidden(
                f"only organization owners and admins may {action}; you act as {self.role}"
            )

    def require_developer(self, action: str) -> None:
        """Org members and secret keys: schema work such as migrations and policies."""
        if self.role == "publishable":
            raise Forbidden(f"a publishable key may not {action}; use a secret key")


def _not_found(project_id: UUID | str) -> NotFound:
    return NotFound(f"project {project_id} not found", code="project_not_found")


async def get_project_access(
    project_id: UUID, principal: PrincipalDep, conn: ControlConn
) -> ProjectAccess:
    """Resolve the project; one the caller cannot reach is 404, so ids do not leak."""
    if principal.key is not None:
        if principal.key.project_id != project_id:
            raise _not_found(project_id)
        if principal.key.type == "publishable":
            raise Forbidden(
                "a publishable key reaches only the data API and end-user auth; "
                "use a secret key or sign in"
            )
        return ProjectAccess(principal.key.project, principal.key.type)

    project = await projects.get(conn, project_id)
    if project is None:
        raise _not_found(project_id)
    assert principal.user_id is not None
    try:
        role = await orgs.membership(conn, project.org_id, principal.user_id)
    except NotFound:
        raise _not_found(project_id) from None
    return ProjectAccess(project, role)


ProjectDep = Annotated[ProjectAccess, Depends(get_project_access)]
