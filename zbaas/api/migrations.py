"""Project migrations: create, list, change, apply and roll back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import AfterValidator, BaseModel, Field, model_validator

from zbaas.api.deps import ControlConn, ProjectDep, ServicesDep
from zbaas.api.models import ERRORS, Request
from zbaas.tenant import migrations
from zbaas.tenant.sqlcheck import MAX_SQL_LENGTH, LintWarning

router = APIRouter(
    prefix="/projects/{project_id}/database/migrations", tags=["migrations"], responses=ERRORS
)


def _migration_name(value: str) -> str:
    if not migrations.NAME_PATTERN.fullmatch(value):
        raise ValueError(f"invalid migration name: use {migrations.NAME_RULE}")
    return value


MigrationName = Annotated[
    str,
    Field(min_length=1, max_length=100, description=f"Migration name: {migrations.NAME_RULE}."),
    AfterValidator(_migration_name),
]
SqlText = Annotated[str, Field(max_length=MAX_SQL_LENGTH)]


class MigrationCreate(Request):
    name: MigrationName
    up_sql: SqlText = Field(description="SQL that applies the change; must not be empty.")
    down_sql: SqlText | None = Field(
        default=None, description="SQL that reverses up_sql; without it the migration is final."
    )


class MigrationUpdate(Request):
    name: MigrationName | None = None
    up_sql: SqlText | None = None
    down_sql: SqlText | None = Field(default=None, description="null removes the down_sql.")

    @model_validator(mode="after")
    def _check_fields(self) -> MigrationUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one of name, up_sql and down_sql")
        for required in ("name", "up_sql"):
            if required in self.model_fields_set and getattr(self, required) is None:
                raise ValueError(f"{required} cannot be null")
        return self


class DriftResponse(BaseModel):
    reason: Literal["checksum_mismatch", "version_mismatch", "unknown_migration"]
    message: str


class MigrationResponse(BaseModel):
    id: UUID
    version: int = Field(description="Order of the migration in its project, from 1.")
    name: str
    up_sql: str | None = Field(description="null for a migration only the database records.")
    down_sql: str | None
    checksum: str = Field(description="Hex SHA-256 of up_sql.")
    status: Literal["applied", "pending"]
    applied_at: datetime | None
    created_at: datetime | None
    drift: DriftResponse | None = Field(
        description="Set when the project database's record disagrees with this migration."
    )


class LintWarningResponse(BaseModel):
    rule: str
    message: str
    line: int
    help: str | None


class MigrationChecked(MigrationResponse):
    warnings: list[LintWarningResponse] = Field(
        description="squawk findings for up_sql; they never block the migration."
    )


class RunResultResponse(BaseModel):
    id: UUID
    version: int
    name: str
    status: Literal["applied", "failed", "skipped"]
    applied_at: datetime | None


class ApplyPendingResponse(BaseModel):
    results: list[RunResultResponse]


def _shape(state: migrations.MigrationState) -> dict[str, Any]:
    shaped = dict(state.__dict__)
    shaped["drift"] = state.drift.__dict__ if state.drift is not None else None
    return shaped


def _checked(state: migrations.MigrationState, warnings: list[LintWarning]) -> MigrationChecked:
    return MigrationChecked(**_shape(state), warnings=[w.__dict__ for w in warnings])


@router.post("", status_code=201, response_model=MigrationChecked)
async def create_migration(
    body: MigrationCreate, access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> MigrationChecked:
    """Store a pending migration as the next version, with squawk's warnings for up_sql."""
    access.require_developer("manage migrations")
    state, warnings = await migrations.create(
        conn, services, access.project, body.name, body.up_sql, body.down_sql
    )
    return _checked(state, warnings)


@router.get("", response_model=list[MigrationResponse])
async def list_migrations(
    access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> list[MigrationResponse]:
    """Every migration in version order, applied or pending, with any drift."""
    access.require_developer("read migrations")
    states = await migrations.list_migrations(conn, services, access.project)
    return [MigrationResponse(**_shape(state)) for state in states]


@router.post("/up", response_model=ApplyPendingResponse)
async def apply_pending(
    access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> ApplyPendingResponse:
    """Apply every pending migration in order; stop at the first failure.

    A failure is an error whose details list each migration's result.
    """
    access.require_developer("apply migrations")
    results = await migrations.apply_pending(conn, services, access.project)
    return ApplyPendingResponse(results=[RunResultResponse(**r.__dict__) for r in results])


@router.get("/{migration_id}", response_model=MigrationResponse)
async def get_migration(
    migration_id: UUID, access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> MigrationResponse:
    """Return one migration with its status."""
    access.require_developer("read migrations")
    state = await migrations.get_migration(conn, services, access.project, migration_id)
    return MigrationResponse(**_shape(state))


@router.patch("/{migration_id}", response_model=MigrationChecked)
async def update_migration(
    migration_id: UUID,
    body: MigrationUpdate,
    access: ProjectDep,
    conn: ControlConn,
    services: ServicesDep,
) -> MigrationChecked:
    """Change a pending migration; an applied one is 409."""
    access.require_developer("manage migrations")
    state, warnings = await migrations.update(
        conn,
        services,
        access.project,
        migration_id,
        name=body.name,
        up_sql=body.up_sql,
        down_sql=body.down_sql,
        down_sql_given="down_sql" in body.model_fields_set,
    )
    return _checked(state, warnings)


@router.delete("/{migration_id}", status_code=204)
async def delete_migration(
    migration_id: UUID, access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> Response:
    """Delete a pending migration; an applied one is 409."""
    access.require_developer("manage migrations")
    await migrations.delete(conn, services, access.project, migration_id)
    return Response(status_code=204)


@router.post("/{migration_id}/up", response_model=MigrationResponse)
async def apply_migration(
    migration_id: UUID, access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> MigrationResponse:
    """Run up_sql and record it in one transaction; a failure changes nothing (422)."""
    access.require_developer("apply migrations")
    state = await migrations.apply(conn, services, access.project, migration_id)
    return MigrationResponse(**_shape(state))


@router.post("/{migration_id}/down", response_model=MigrationResponse)
async def rollback_migration(
    migration_id: UUID, access: ProjectDep, conn: ControlConn, services: ServicesDep
) -> MigrationResponse:
    """Run down_sql of the latest applied migration and remove its record, atomically."""
    access.require_developer("roll back migrations")
    state = await migrations.rollback(conn, services, access.project, migration_id)
    return MigrationResponse(**_shape(state))
