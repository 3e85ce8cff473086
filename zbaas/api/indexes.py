"""Indexes on a project's tables."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field, model_validator

from zbaas.api.deps import ProjectDep, ServicesDep
from zbaas.api.models import ERRORS, Request
from zbaas.tenant import indexes

router = APIRouter(prefix="/projects/{project_id}/database", tags=["indexes"], responses=ERRORS)

# PostgreSQL identifiers are at most 63 bytes; longer path values cannot name anything.
TableName = Annotated[str, Path(min_length=1, max_length=63)]
IndexName = Annotated[str, Path(min_length=1, max_length=63)]
ColumnName = Annotated[str, Field(min_length=1, max_length=63)]


class IndexCreate(Request):
    column: ColumnName | None = Field(default=None, description="The one column to index.")
    columns: list[ColumnName] | None = Field(
        default=None, min_length=1, max_length=32, description="Columns, in index order."
    )
    type: indexes.IndexType = "btree"
    unique: bool = False
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="Letters, digits and underscores; generated from table and columns if unset.",
    )
    where: str | None = Field(
        default=None,
        max_length=indexes.MAX_PREDICATE_CHARS,
        description="Partial-index predicate: one SQL expression, such as 'deleted_at IS NULL'.",
    )
    opclass: str | None = Field(
        default=None,
        max_length=63,
        description="Operator class for every column: " + ", ".join(indexes.OPERATOR_CLASSES),
    )
    concurrently: bool = Field(
        default=True, description="Build without blocking writes (CREATE INDEX CONCURRENTLY)."
    )

    @model_validator(mode="after")
    def _one_column_field(self) -> IndexCreate:
        if (self.column is None) == (self.columns is None):
            raise ValueError("send exactly one of column and columns")
        return self

    def spec(self) -> indexes.IndexSpec:
        return indexes.IndexSpec(
            columns=[self.column] if self.column is not None else list(self.columns or []),
            type=self.type,
            unique=self.unique,
            name=self.name,
            where=self.where,
            opclass=self.opclass,
            concurrently=self.concurrently,
        )


class IndexResponse(BaseModel):
    name: str
    table: str
    columns: list[str]
    type: str
    unique: bool
    primary: bool
    valid: bool = Field(description="False while a concurrent build runs or after it failed.")
    size_bytes: int
    scans: int = Field(description="Index scans since statistics were last reset.")
    definition: str
    predicate: str | None = Field(description="WHERE clause of a partial index.")
    constraint: str | None = Field(description="The constraint this index backs, if any.")


@router.get("/tables/{table}/indexes", response_model=list[IndexResponse])
async def list_indexes(
    table: TableName, access: ProjectDep, services: ServicesDep
) -> list[IndexResponse]:
    """List every index on a table of schema public."""
    found = await indexes.list_indexes(services, access.project, table)
    return [IndexResponse(**index.__dict__) for index in found]


@router.post("/tables/{table}/indexes", status_code=201, response_model=IndexResponse)
async def create_index(
    table: TableName, body: IndexCreate, access: ProjectDep, services: ServicesDep
) -> IndexResponse:
    """Build an index, CONCURRENTLY unless the request sets concurrently to false."""
    access.require_developer("create indexes")
    index = await indexes.create_index(services, access.project, table, body.spec())
    return IndexResponse(**index.__dict__)


@router.delete("/indexes/{index_name}", status_code=204)
async def drop_index(
    index_name: IndexName,
    access: ProjectDep,
    services: ServicesDep,
    concurrently: Annotated[
        bool, Query(description="Drop without blocking reads and writes (DROP INDEX CONCURRENTLY).")
    ] = True,
) -> Response:
    """Drop an index of schema public; 409 if a constraint needs it."""
    access.require_developer("drop indexes")
    await indexes.drop_index(services, access.project, index_name, concurrently=concurrently)
    return Response(status_code=204)
