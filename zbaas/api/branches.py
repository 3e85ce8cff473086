"""Database branches: create, list, delete, diff against the parent, merge back."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from zbaas.api.deps import ControlConn, ProjectDep, ServicesDep
from zbaas.api.models import ERRORS, Request
from zbaas.tenant import branch_merge, branches

router = APIRouter(prefix="/projects/{project_id}/branches", tags=["branches"], responses=ERRORS)


class BranchCreate(Request):
    # The length limit here only bounds the request; check_name gives the real rule.
    name: str = Field(min_length=1, max_length=200)
    with_data: bool = False


class MergeRequest(Request):
    allow_destructive: bool = False


class BranchResponse(BaseModel):
    name: str
    db_name: str
    parent: str = Field(description="Database name of the parent project.")
    with_data: bool
    status: str
    created_at: datetime
    merged_at: datetime | None


class StatementResponse(BaseModel):
    sql: str
    destructive: bool
    reason: str | None = Field(description="Why the statement is destructive, if it is.")


class ConflictResponse(BaseModel):
    kind: str
    name: str


class DiffResponse(BaseModel):
    statements: list[StatementResponse] = Field(description="DDL for the parent, in order.")
    conflicts: list[ConflictResponse]
    migrations: list[int] = Field(description="Branch migration versions the merge records.")


class MergeResponse(BaseModel):
    applied: list[StatementResponse]
    migrations: list[int]


def _shape(branch: branches.Branch, parent: str) -> BranchResponse:
    return BranchResponse(
        name=branch.name,
        db_name=branch.db_name,
        parent=parent,
        with_data=branch.with_data,
        status=branch.status,
        created_at=branch.created_at,
        merged_at=branch.merged_at,
    )


def _statements(result: branch_merge.Diff) -> list[StatementResponse]:
    return [
        StatementResponse(sql=c.sql, destructive=c.destructive, reason=c.reason)
        for c in result.plan.changes
    ]


@router.post("", status_code=201, response_model=BranchResponse)
async def create_branch(
    body: BranchCreate, access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> BranchResponse:
    """Copy the project's schema (and rows with ``with_data``) into a new branch database."""
    access.require_developer("create branches")
    branch = await branches.create(
        conn, services.pools, services.box, access.project, body.name, body.with_data
    )
    return _shape(branch, access.project.db_name)


@router.get("", response_model=list[BranchResponse])
async def list_branches(access: ProjectDep, conn: ControlConn) -> list[BranchResponse]:
    """Branches of the project, oldest first."""
    access.require_developer("list branches")
    found = await branches.list_for_project(conn, access.project.id)
    return [_shape(b, access.project.db_name) for b in found]


@router.get("/{branch_name}", response_model=BranchResponse)
async def get_branch(branch_name: str, access: ProjectDep, conn: ControlConn) -> BranchResponse:
    """One branch."""
    access.require_developer("read branches")
    branch = await branches.get(conn, access.project.id, branch_name)
    return _shape(branch, access.project.db_name)


@router.delete("/{branch_name}", status_code=204)
async def delete_branch(
    branch_name: str, access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> Response:
    """Drop the branch database and its roles; the parent is not touched."""
    access.require_developer("delete branches")
    branch = await branches.get(conn, access.project.id, branch_name)
    await branches.delete(conn, services.pools, branch)
    return Response(status_code=204)


@router.get("/{branch_name}/diff", response_model=DiffResponse)
async def diff_branch(
    branch_name: str, access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> DiffResponse:
    """Show the ordered DDL that a merge would apply to the parent, with destructive flags."""
    access.require_developer("diff branches")
    branch = await branches.get(conn, access.project.id, branch_name)
    result = await branch_merge.diff(conn, services.pools, services.box, access.project, branch)
    return DiffResponse(
        statements=_statements(result),
        conflicts=[ConflictResponse(**c) for c in result.conflicts()],
        migrations=result.migrations,
    )


@router.post("/{branch_name}/merge", response_model=MergeResponse)
async def merge_branch(
    branch_name: str,
    access: ProjectDep,
    conn: ControlConn,
    services: ServicesDep,
    body: MergeRequest | None = None,
) -> MergeResponse:
    """Apply the branch's schema changes and migrations to the parent in one transaction."""
    access.require_developer("merge branches")
    branch = await branches.get(conn, access.project.id, branch_name)
    result = await branch_merge.merge(
        conn,
        services.pools,
        services.box,
        services.settings,
        access.project,
        branch,
        allow_destructive=body.allow_destructive if body else False,
    )
    return MergeResponse(applied=_statements(result), migrations=result.migrations)
