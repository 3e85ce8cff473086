"""Ranked full-text search over a project table, and the GIN index that serves it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from zbaas.api.deps import ProjectDep, ServicesDep
from zbaas.api.models import ERRORS, Request
from zbaas.tenant import search
from zbaas.tenant.connections import as_owner

router = APIRouter(
    prefix="/projects/{project_id}/database/tables/{table}/search",
    tags=["search"],
    responses=ERRORS,
)

ColumnName = Annotated[str, Field(min_length=1, max_length=search.MAX_IDENTIFIER_BYTES)]
Columns = Field(min_length=1, max_length=32, description="Text-like columns to search.")
Language = Field(
    default="english",
    min_length=1,
    max_length=search.MAX_IDENTIFIER_BYTES,
    description="A text search configuration of the server (pg_ts_config), such as english.",
)


class SearchRequest(Request):
    query: str = Field(
        min_length=1,
        max_length=1000,
        description='websearch_to_tsquery syntax: words, "quoted phrases", or, -word.',
    )
    columns: list[ColumnName] = Columns
    limit: int = Field(default=20, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=2**63 - 1)
    language: str = Language
    highlight: bool = Field(default=True, description="Return ts_headline snippets per column.")
    fuzzy: bool = Field(
        default=False,
        description="When nothing matches, rank rows by pg_trgm word similarity instead.",
    )


class SearchHit(BaseModel):
    row: dict[str, Any]
    rank: float = Field(description="ts_rank_cd, or pg_trgm word similarity in fuzzy mode.")
    highlights: dict[str, str] | None = Field(
        description="Snippets per column with matches in <b>...</b>; null when not requested "
        "and in fuzzy mode."
    )


class SearchResponse(BaseModel):
    mode: Literal["fulltext", "fuzzy"]
    index_used: bool = Field(description="Whether the query plan scans an index.")
    index: str | None = Field(description="The index the query plan scans, if any.")
    language: str
    limit: int
    offset: int
    rows: list[SearchHit]


class SearchIndexRequest(Request):
    columns: list[ColumnName] = Columns
    language: str = Language


class SearchIndexResponse(BaseModel):
    name: str
    table: str
    columns: list[str]
    language: str
    definition: str
    valid: bool
    created: bool = Field(description="False when the index already existed.")
    size_bytes: int


@router.post("", response_model=SearchResponse)
async def search_table(
    table: str, body: SearchRequest, access: ProjectDep, services: ServicesDep
) -> SearchResponse:
    """Search rows of a table, ranked by ts_rank_cd, as the project's owner role."""
    access.require_developer("search tables through the management API")
    async with as_owner(services, access.project) as conn:
        result = await search.search(
            conn,
            table,
            query=body.query,
            columns=body.columns,
            language=body.language,
            limit=body.limit,
            offset=body.offset,
            highlight=body.highlight,
            fuzzy=body.fuzzy,
            statement_timeout_ms=services.settings.search_statement_timeout_ms,
        )
    return SearchResponse(
        mode=result.mode,  # type: ignore[arg-type]
        index_used=result.index is not None,
        index=result.index,
        language=result.language,
        limit=result.limit,
        offset=result.offset,
        rows=[SearchHit(**hit) for hit in result.rows],
    )


@router.post(
    "/index",
    status_code=201,
    response_model=SearchIndexResponse,
    responses={200: {"model": SearchIndexResponse, "description": "The index already existed."}},
)
async def create_search_index(
    table: str,
    body: SearchIndexRequest,
    access: ProjectDep,
    services: ServicesDep,
    response: Response,
) -> SearchIndexResponse:
    """Build, CONCURRENTLY, the GIN index that searches over these columns can use."""
    access.require_developer("create search indexes")
    async with as_owner(services, access.project) as conn:
        index = await search.create_index(
            conn,
            table,
            columns=body.columns,
            language=body.language,
            statement_timeout_ms=services.settings.migration_statement_timeout_ms,
            lock_timeout_ms=services.settings.migration_lock_timeout_ms,
        )
    if not index.created:
        response.status_code = 200
    return SearchIndexResponse(**index.__dict__)
