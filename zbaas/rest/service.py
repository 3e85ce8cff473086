"""Run data API requests: one transaction per request, as the caller's role.

Each request runs on an authenticator connection of the project. The
transaction first sets the role (``anon``, ``authenticated`` or
``service_role``), the JWT claims that ``auth.uid()`` and friends read, and a
statement timeout, all with ``is_local`` so nothing outlives the transaction.
Any error rolls the whole request back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from zbaas.app import Services
from zbaas.platform.projects import Project
from zbaas.rest import build, catalog
from zbaas.rest.errors import RestError, from_postgres, parse_error
from zbaas.rest.query import Prefer, Query
from zbaas.tenant.connections import as_authenticator

logger = logging.getLogger("zbaas.rest")

ROLES = ("anon", "authenticated", "service_role")
# The only schema the data API serves; other schemas (auth, zbaas_meta) stay private.
EXPOSED_SCHEMA = "public"


@dataclass
class Caller:
    role: str
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    body: str | None
    row_count: int
    total: int | None = None


@dataclass
class Pending:
    """A read whose rows are fetched after COMMIT, so the query and COMMIT share a round trip."""

    finish: Callable[[], Awaitable[Result]]


Work = Callable[[psycopg.AsyncConnection, catalog.Lookup], Awaitable[Result | Pending]]


# Role, claims and timeout last until the end of the transaction (is_local = true).
SET_CALLER = (
    "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
    "set_config('statement_timeout', %s, true)"
)
# Turning read-only on is allowed at any point of a transaction, unlike turning it off.
SET_CALLER_READ_ONLY = SET_CALLER + ", set_config('transaction_read_only', 'on', true)"


async def run(
    services: Services, project: Project, caller: Caller, work: Work, *, read_only: bool
) -> Result:
    """Run ``work`` in one transaction as ``caller``; PostgreSQL errors become RestError.

    Pipeline mode sends BEGIN, the settings, the query and COMMIT in one round
    trip when the table is cached. Otherwise the catalog lookup needs a round
    trip of its own first. When a cached table turns out stale, the transaction
    has rolled back and the request runs once more on a fresh lookup.
    """
    try:
        return await _attempt(services, project, caller, work, read_only, use_cache=True)
    except catalog.StaleCatalog:
        return await _attempt(services, project, caller, work, read_only, use_cache=False)


async def _attempt(
    services: Services,
    project: Project,
    caller: Caller,
    work: Work,
    read_only: bool,
    *,
    use_cache: bool,
) -> Result:
    assert caller.role in ROLES
    claims = {**caller.claims, "role": caller.role}
    timeout_ms = str(services.settings.rest_statement_timeout_ms)
    lookup = catalog.Lookup(services.tables, project.db_name, use_cache=use_cache)
    async with as_authenticator(services, project) as conn:
        try:
            async with conn.pipeline(), conn.transaction():
                await conn.execute(
                    SET_CALLER_READ_ONLY if read_only else SET_CALLER,
                    (caller.role, json.dumps(claims), timeout_ms),
                )
                outcome = await work(conn, lookup)
            return await outcome.finish() if isinstance(outcome, Pending) else outcome
        except (psycopg.errors.Error, catalog.StaleCatalog) as exc:
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                # A failed pipelined query skips the queued COMMIT; end the
                # transaction here so the pool gets the connection back idle.
                await conn.rollback()
            if isinstance(exc, catalog.StaleCatalog):
                raise
            if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
                raise  # the connection itself failed, which the app reports as 503
            if lookup.used_cache and exc.sqlstate in catalog.STALE_SQLSTATES:
                raise catalog.StaleCatalog(exc.sqlstate) from None
            error = from_postgres(exc, caller.role)
            if error.status >= 500:
                logger.warning(
                    "data API query of project %s failed with SQLSTATE %s",
                    project.id,
                    exc.sqlstate,
                )
            raise error from None


def expect_single(result: Result) -> Result:
    """Unwrap the one row of ``Accept: application/vnd.pgrst.object+json``.

    Writes call it inside their transaction, so a write that touched another
    number of rows is rolled back, as PostgREST does.
    """
    if result.row_count != 1:
        raise RestError(
            406,
            "PGRST116",
            "JSON object requested, multiple (or no) rows returned",
            details=f"The result contains {result.row_count} rows",
        )
    if result.body is not None:
        result.body = result.body[1:-1] if result.body.startswith("[") else result.body
    return result


async def _fetch(conn: psycopg.AsyncConnection, statement: Any, params: list[Any]) -> Result:
    cur = await conn.execute(statement, params)
    row = await cur.fetchone()
    assert row is not None
    return Result(row["body"], int(row["row_count"]))


def select(name: str, query: Query, prefer: Prefer, single: bool) -> Work:
    async def work(conn: psycopg.AsyncConnection, lookup: catalog.Lookup) -> Pending:
        table = await lookup.table(conn, EXPOSED_SCHEMA, name)
        rows = await conn.execute(*build.read(table, query))
        counted = None
        if prefer.count is not None:
            # NOTE: count=planned and count=estimated return an exact count.
            counted = await conn.execute(*build.count(table, query))

        async def finish() -> Result:
            row = await rows.fetchone()
            assert row is not None
            result = Result(row["body"], int(row["row_count"]))
            if counted is not None:
                total = await counted.fetchone()
                assert total is not None
                result.total = int(total["total"])
            return expect_single(result) if single else result

        return Pending(finish)

    return work


def body_columns(rows: list[Any], query: Query) -> list[str]:
    """Return the columns to insert: ``columns=`` when given, else every key of every row."""
    for row in rows:
        if not isinstance(row, dict):
            raise RestError(400, "PGRST102", "Each row of the body must be a JSON object")
    if query.columns is not None:
        return query.columns
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def insert(name: str, query: Query, body: Any, prefer: Prefer, single: bool) -> Work:
    rows = body if isinstance(body, list) else [body]
    columns = body_columns(rows, query)

    async def work(conn: psycopg.AsyncConnection, lookup: catalog.Lookup) -> Result:
        table = await lookup.table(conn, EXPOSED_SCHEMA, name)
        if not rows:
            return Result("[]" if prefer.representation else None, 0)
        # NOTE: Prefer missing=default is ignored, so a listed column missing from
        # one row of a bulk insert gets NULL, not its default.
        statement, params = build.insert(table, query, json.dumps(rows), columns, prefer)
        result = await _fetch(conn, statement, params)
        return expect_single(result) if single else result

    return work


def require_filters(query: Query, verb: str) -> None:
    """Reject a PATCH or DELETE without filters, which would touch every row.

    The code and wording are those of the pg-safeupdate extension.
    """
    if not query.where:
        raise RestError(
            400,
            "21000",
            f"{verb} requires a WHERE clause",
            hint="Add a filter such as id=eq.1; to change every row, filter on a condition "
            "every row meets.",
        )
    if query.limit is not None or query.offset is not None or query.order:
        raise parse_error(f"limit, offset and order are not supported on {verb}")


def update(name: str, query: Query, body: Any, prefer: Prefer, single: bool) -> Work:
    require_filters(query, "UPDATE")
    if not isinstance(body, dict):
        raise RestError(400, "PGRST102", "PATCH expects one JSON object")
    columns = list(body)

    async def work(conn: psycopg.AsyncConnection, lookup: catalog.Lookup) -> Result:
        table = await lookup.table(conn, EXPOSED_SCHEMA, name)
        if not columns:
            return Result("[]" if prefer.representation else None, 0)
        statement, params = build.update(table, query, json.dumps(body), columns, prefer)
        result = await _fetch(conn, statement, params)
        return expect_single(result) if single else result

    return work


def delete(name: str, query: Query, prefer: Prefer, single: bool) -> Work:
    require_filters(query, "DELETE")

    async def work(conn: psycopg.AsyncConnection, lookup: catalog.Lookup) -> Result:
        table = await lookup.table(conn, EXPOSED_SCHEMA, name)
        result = await _fetch(conn, *build.delete(table, query, prefer))
        return expect_single(result) if single else result

    return work


def call(name: str, args: dict[str, Any], query: Query, single: bool, *, read_only: bool) -> Work:
    async def work(conn: psycopg.AsyncConnection, lookup: catalog.Lookup) -> Result:
        function = await catalog.function(conn, EXPOSED_SCHEMA, name, set(args))
        if read_only and function.volatile:
            raise RestError(
                405,
                "25006",
                f"{name} is VOLATILE and may write: call it with POST",
                hint="GET and HEAD run read-only; declare the function STABLE to allow them.",
            )
        statement, params = build.rpc(function, json.dumps(args), set(args), query)
        result = await _fetch(conn, statement, params)
        return expect_single(result) if single else result

    return work
