"""Row-level security of a project's tables, and their policies."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, BeforeValidator, Field

from zbaas.api.deps import ProjectDep, ServicesDep
from zbaas.api.models import ERRORS, Request
from zbaas.tenant import rls
from zbaas.tenant.connections import as_owner

router = APIRouter(
    prefix="/projects/{project_id}/database/rls", tags=["row-level security"], responses=ERRORS
)

TablePath = Annotated[
    str,
    Path(
        max_length=300,
        description="'table' or 'schema.table' (default schema public), "
        "matched exactly as the catalog stores it",
    ),
]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


Command = Annotated[Literal["ALL", "SELECT", "INSERT", "UPDATE", "DELETE"], BeforeValidator(_upper)]
Expression = Annotated[str, Field(max_length=rls.MAX_EXPRESSION_LENGTH)]


class PolicyCreate(Request):
    name: str = Field(min_length=1, max_length=rls.MAX_IDENTIFIER_BYTES)
    command: Command = "ALL"
    using: Expression | None = Field(
        default=None, description="SQL expression that existing rows must satisfy."
    )
    check: Expression | None = Field(
        default=None, description="SQL expression that new or changed rows must satisfy."
    )
    roles: list[Annotated[str, Field(max_length=rls.MAX_IDENTIFIER_BYTES)]] = Field(
        default=["public"], min_length=1, max_length=50
    )
    permissive: bool = True


class PolicyResponse(BaseModel):
    name: str
    command: str
    using: str | None
    check: str | None
    roles: list[str]
    permissive: bool


class RlsStateResponse(BaseModel):
    schema_name: str = Field(serialization_alias="schema")
    table: str
    rls_enabled: bool
    rls_forced: bool


def _state(table: rls.Table) -> RlsStateResponse:
    return RlsStateResponse(
        schema_name=table.schema,
        table=table.name,
        rls_enabled=table.rls_enabled,
        rls_forced=table.rls_forced,
    )


@router.post("/{table}/enable", response_model=RlsStateResponse)
async def enable_rls(
    table: TablePath, access: ProjectDep, services: ServicesDep
) -> RlsStateResponse:
    """Enable row-level security on a table. Enabling it again changes nothing."""
    access.require_developer("change row-level security")
    async with as_owner(services, access.project) as conn:
        state = await rls.set_enabled(
            conn, table, True, lock_timeout_ms=services.settings.migration_lock_timeout_ms
        )
    return _state(state)


@router.post("/{table}/disable", response_model=RlsStateResponse)
async def disable_rls(
    table: TablePath, access: ProjectDep, services: ServicesDep
) -> RlsStateResponse:
    """Disable row-level security on a table. Its policies stay and apply once it is re-enabled."""
    access.require_developer("change row-level security")
    async with as_owner(services, access.project) as conn:
        state = await rls.set_enabled(
            conn, table, False, lock_timeout_ms=services.settings.migration_lock_timeout_ms
        )
    return _state(state)


@router.get("/{table}/policies", response_model=list[PolicyResponse])
async def list_policies(
    table: TablePath, access: ProjectDep, services: ServicesDep
) -> list[PolicyResponse]:
    """List a table's policies as PostgreSQL stores them, ordered by name."""
    access.require_developer("read row-level security policies")
    async with as_owner(services, access.project) as conn:
        policies = await rls.list_policies(conn, table)
    return [PolicyResponse(**policy.__dict__) for policy in policies]


@router.post("/{table}/policies", status_code=201, response_model=PolicyResponse)
async def create_policy(
    table: TablePath, body: PolicyCreate, access: ProjectDep, services: ServicesDep
) -> PolicyResponse:
    """Create a policy. ``using`` and ``check`` must each be exactly one SQL expression."""
    access.require_developer("create row-level security policies")
    spec = rls.PolicySpec(
        name=body.name,
        command=body.command,
        using=body.using,
        check=body.check,
        roles=tuple(body.roles),
        permissive=body.permissive,
    )
    async with as_owner(services, access.project) as conn:
        policy = await rls.create_policy(
            conn, table, spec, lock_timeout_ms=services.settings.migration_lock_timeout_ms
        )
    return PolicyResponse(**policy.__dict__)


# The name takes the rest of the path, so a policy name may contain a slash.
@router.delete("/{table}/policies/{policy_name:path}", status_code=204)
async def delete_policy(
    table: TablePath,
    policy_name: Annotated[str, Path(max_length=300)],
    access: ProjectDep,
    services: ServicesDep,
) -> Response:
    """Drop a policy from a table."""
    access.require_developer("delete row-level security policies")
    async with as_owner(services, access.project) as conn:
        await rls.delete_policy(
            conn, table, policy_name, lock_timeout_ms=services.settings.migration_lock_timeout_ms
        )
    return Response(status_code=204)
