"""Organizations and members."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from zbaas.api.deps import ControlConn, CurrentUser
from zbaas.api.models import ERRORS, MemberCreate, MemberResponse, OrgCreate, OrgResponse
from zbaas.platform import orgs

router = APIRouter(prefix="/orgs", tags=["organizations"], responses=ERRORS)


@router.get("", response_model=list[OrgResponse])
async def list_orgs(user: CurrentUser, conn: ControlConn) -> list[OrgResponse]:
    """List the caller's organizations with their role in each."""
    assert user.user_id is not None
    return [OrgResponse(**o.__dict__) for o in await orgs.list_for_user(conn, user.user_id)]


@router.post("", status_code=201, response_model=OrgResponse)
async def create_org(body: OrgCreate, user: CurrentUser, conn: ControlConn) -> OrgResponse:
    """Create an organization owned by the caller."""
    assert user.user_id is not None
    return OrgResponse(**(await orgs.create(conn, body.name, user.user_id)).__dict__)


@router.get("/{org_id}/members", response_model=list[MemberResponse])
async def list_members(org_id: str, user: CurrentUser, conn: ControlConn) -> list[MemberResponse]:
    """Members of an organization the caller belongs to."""
    assert user.user_id is not None
    await orgs.membership(conn, org_id, user.user_id)
    return [MemberResponse(**m.__dict__) for m in await orgs.list_members(conn, org_id)]


@router.post("/{org_id}/members", status_code=201, response_model=MemberResponse)
async def add_member(
    org_id: str, body: MemberCreate, user: CurrentUser, conn: ControlConn
) -> MemberResponse:
    """Add an existing user; owners and admins only."""
    assert user.user_id is not None
    orgs.require_manager(await orgs.membership(conn, org_id, user.user_id), "add members")
    return MemberResponse(**(await orgs.add_member(conn, org_id, body.email, body.role)).__dict__)


@router.delete("/{org_id}/members/{user_id}", status_code=204)
async def remove_member(
    org_id: str, user_id: UUID, user: CurrentUser, conn: ControlConn
) -> Response:
    """Remove a member; owners and admins only, and the last owner stays."""
    assert user.user_id is not None
    orgs.require_manager(await orgs.membership(conn, org_id, user.user_id), "remove members")
    await orgs.remove_member(conn, org_id, user_id)
    return Response(status_code=204)
