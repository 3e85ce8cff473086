"""Project API keys."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from zbaas.api.deps import ControlConn, ProjectDep
from zbaas.api.models import ERRORS, KeyCreate, KeyCreated, KeyResponse
from zbaas.platform import keys

router = APIRouter(prefix="/projects/{project_id}/keys", tags=["keys"], responses=ERRORS)


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, access: ProjectDep, conn: ControlConn) -> KeyCreated:
    """Generate a key; the plain key is in this response and never again."""
    access.require_manager("create API keys")
    key, plain = await keys.create(conn, access.project.id, body.name, body.type)
    return KeyCreated(**key.__dict__, key=plain)


@router.get("", response_model=list[KeyResponse])
async def list_keys(access: ProjectDep, conn: ControlConn) -> list[KeyResponse]:
    """Key metadata; never the key or its hash."""
    return [KeyResponse(**k.__dict__) for k in await keys.list_for_project(conn, access.project.id)]


@router.delete("/{key_id}", status_code=204)
async def revoke_key(key_id: UUID, access: ProjectDep, conn: ControlConn) -> Response:
    """Revoke a key; the next request with it is 401 on every API server."""
    access.require_manager("revoke API keys")
    await keys.revoke(conn, access.project.id, key_id)
    return Response(status_code=204)
