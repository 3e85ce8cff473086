"""Indexes on the tables of a project's ``public`` schema.

Indexes are built and dropped ``CONCURRENTLY`` by default, as the owner role on
an autocommit connection, so writes to the table go on during the build. A
concurrent build that fails leaves an invalid index in the catalog, and this
module drops it before it reports the failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pglast
import psycopg
from pglast import ast, parser
from pglast.enums import SetOperation
from pglast.stream import RawStream
from psycopg import sql

from zbaas.app import Services
from zbaas.errors import Conflict, Forbidden, InvalidInput, NotFound, sql_error
from zbaas.platform.projects import Project
from zbaas.tenant.connections import as_owner

logger = logging.getLogger("zbaas.tenant")

SCHEMA = "public"
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
MAX_PREDICATE_CHARS = 4000
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

IndexType = Literal["btree", "hash", "gist", "gin", "brin"]

# Operator classes a request may name, with the access methods they belong to.
# The trigram ones come from pg_trgm and exist only once that extension is enabled.
OPERATOR_CLASSES: dict[str, frozenset[str]] = {
    "text_pattern_ops": frozenset({"btree"}),
    "varchar_pattern_ops": frozenset({"btree"}),
    "bpchar_pattern_ops": frozenset({"btree"}),
    "jsonb_ops": frozenset({"gin"}),
    "jsonb_path_ops": frozenset({"gin"}),
    "array_ops": frozenset({"gin"}),
    "tsvector_ops": frozenset({"gin", "gist"}),
    "inet_ops": frozenset({"gist"}),
    "gin_trgm_ops": frozenset({"gin"}),
    "gist_trgm_ops": frozenset({"gist"}),
}
EXTENSION_OF_OPERATOR_CLASS = {"gin_trgm_ops": "pg_trgm", "gist_trgm_ops": "pg_trgm"}


GENERATED_NAME_ATTEMPTS = 3
BUILD_LOCK = "zbaas.indexes"  # advisory lock key, hashed; advisory locks are per database
BUILD_LOCK_POLL_S = 0.1


class NameTaken(Conflict):
    """The build failed because the index name was taken after it was checked."""


@dataclass
class IndexSpec:
    """A requested index; ``name`` None means generate one."""

    columns: list[str]
    type: IndexType = "btree"
    unique: bool = False
    name: str | None = None
    where: str | None = None
    opclass: str | None = None
    concurrently: bool = True


@dataclass
class Index:
    name: str
    table: str
    columns: list[str]
    type: str
    unique: bool
    primary: bool
    valid: bool
    size_bytes: int
    scans: int
    definition: str
    predicate: str | None
    constraint: str | None


INDEX_SELECT = """
SELECT c.relname AS name, t.relname AS table, am.amname AS type,
       i.indisunique AS unique, i.indisprimary AS primary, i.indisvalid AS valid,
       pg_relation_size(c.oid) AS size_bytes, coalesce(s.idx_scan, 0) AS scans,
       pg_get_indexdef(c.oid) AS definition,
       pg_get_expr(i.indpred, i.indrelid) AS predicate,
       (SELECT k.conname FROM pg_constraint k
        WHERE k.conindid = c.oid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x')
        LIMIT 1) AS constraint,
       -- Key columns by name; an expression key comes back as its SQL text.
       ARRAY(SELECT coalesce(a.attname::text, pg_get_indexdef(c.oid, k.n, true))
             FROM generate_series(1, i.indnkeyatts) AS k(n)
             LEFT JOIN pg_attribute a
               ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k.n - 1]
             ORDER BY k.n) AS columns
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_am am ON am.oid = c.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = c.oid
"""


# --- request checks, run before any SQL ---------------------------------------------------------


def check_name(name: str) -> None:
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise InvalidInput(
            f"index name {name!r} is {len(name.encode())} bytes; the maximum is "
            f"{MAX_IDENTIFIER_BYTES}",
            details={"field": "name"},
        )
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            f"invalid index name {name!r}: use letters, digits and underscores, "
            "starting with a letter or underscore",
            details={"field": "name"},
        )


def _nodes(value: Any) -> Iterator[ast.Node]:
    if isinstance(value, tuple | list):
        for item in value:
            yield from _nodes(item)
    elif isinstance(value, ast.Node):
        yield value
        for attribute in value:
            yield from _nodes(getattr(value, attribute))


def parse_predicate(text: str) -> str:
    """Return the partial-index predicate ``text`` as PostgreSQL text, or raise 422.

    ``text`` must be exactly one SQL expression: no ``;``, no comment, no subquery.
    The result is pglast's serialization of the parsed expression, so nothing
    outside that one expression reaches the CREATE INDEX statement.
    """
    if not text.strip():
        raise _bad_where("must not be empty")
    if len(text) > MAX_PREDICATE_CHARS:
        raise _bad_where(f"is {len(text)} characters; the maximum is {MAX_PREDICATE_CHARS}")
    try:
        tokens = parser.scan(text)
    except pglast.parser.ParseError as exc:
        raise _bad_where(f"cannot be read as SQL: {exc}") from None
    for token in tokens:
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            raise _bad_where("must not contain comments")
        if token.name == "ASCII_59":
            raise _bad_where("must be one expression, without ';'")

    try:
        statements = pglast.parse_sql("SELECT " + text)
    except pglast.parser.ParseError as exc:
        raise _bad_where(f"is not a valid SQL expression: {exc}") from None
    select = statements[0].stmt if len(statements) == 1 else None
    if not isinstance(select, ast.SelectStmt) or not _is_bare_select(select):
        raise _bad_where("must be exactly one SQL expression")
    target = select.targetList[0]
    if target.name is not None:
        raise _bad_where("must be exactly one SQL expression, without an alias")
    if any(isinstance(node, ast.SubLink | ast.SelectStmt) for node in _nodes(target.val)):
        raise _bad_where("must not contain a subquery")
    return str(RawStream()(target.val))


def _is_bare_select(select: ast.SelectStmt) -> bool:
    clauses = [
        "distinctClause",
        "intoClause",
        "fromClause",
        "whereClause",
        "groupClause",
        "havingClause",
        "windowClause",
        "valuesLists",
        "sortClause",
        "limitOffset",
        "limitCount",
        "lockingClause",
        "withClause",
    ]
    return (
        select.op == SetOperation.SETOP_NONE
        and select.targetList is not None
        and len(select.targetList) == 1
        and all(getattr(select, clause) is None for clause in clauses)
    )


def _bad_where(problem: str) -> InvalidInput:
    return InvalidInput(f"invalid where: the predicate {problem}", details={"field": "where"})


def _check_spec(spec: IndexSpec) -> None:
    if spec.type not in get_args(IndexType):
        raise InvalidInput(
            f"invalid index type {spec.type!r}: use one of {', '.join(get_args(IndexType))}",
            details={"field": "type"},
        )
    if not spec.columns:
        raise InvalidInput("send column or columns: at least one column to index")
    if len(set(spec.columns)) != len(spec.columns):
        raise InvalidInput("columns must not repeat a column", details={"field": "columns"})
    if spec.unique and spec.type != "btree":
        raise InvalidInput(
            f"a {spec.type} index cannot be unique; only btree indexes enforce uniqueness",
            details={"field": "unique"},
        )
    if spec.name is not None:
        check_name(spec.name)
    if spec.opclass is not None:
        methods = OPERATOR_CLASSES.get(spec.opclass)
        if methods is None:
            raise InvalidInput(
                f"operator class {spec.opclass!r} is not supported; use one of "
                f"{', '.join(sorted(OPERATOR_CLASSES))}",
                details={"field": "opclass"},
            )
        if spec.type not in methods:
            raise InvalidInput(
                f"operator class {spec.opclass!r} belongs to {', '.join(sorted(methods))} "
                f"indexes, not {spec.type}",
                details={"field": "opclass"},
            )


# --- catalog look-ups ---------------------------------------------------------------------------


async def _table(conn: psycopg.AsyncConnection, table: str) -> dict[str, Any]:
    """Return the table's oid, name and kind, or raise 404."""
    row = await (
        await conn.execute(
            "SELECT c.oid, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'm')",
            (SCHEMA, table),
        )
    ).fetchone()
    if row is None:
        raise NotFound(f"table {table!r} not found in schema public", code="table_not_found")
    return row


async def _columns(
    conn: psycopg.AsyncConnection, table_oid: int, table: str, names: list[str]
) -> dict[str, dict[str, Any]]:
    """Return each named column's type and type category, or raise 404 for the first unknown."""
    rows = await (
        await conn.execute(
            "SELECT a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod) AS type, "
            "t.typcategory FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped "
            "AND a.attname = ANY(%s)",
            (table_oid, names),
        )
    ).fetchall()
    found = {row["attname"]: row for row in rows}
    for name in names:
        if name not in found:
            raise NotFound(f"column {name!r} not found in table {table!r}", code="column_not_found")
    return found


async def _has_default_opclass(conn: psycopg.AsyncConnection, method: str, type_oid: int) -> bool:
    """Check that ``method`` has a default operator class for the type.

    An operator class of a type it is binary coercible to counts too, as varchar uses text's.
    """
    row = await (
        await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_opclass o JOIN pg_am a ON a.oid = o.opcmethod "
            "WHERE a.amname = %(method)s AND o.opcdefault AND (o.opcintype = %(type)s "
            "OR EXISTS (SELECT 1 FROM pg_cast c WHERE c.castsource = %(type)s "
            "AND c.casttarget = o.opcintype AND c.castmethod = 'b'))) AS found",
            {"method": method, "type": type_oid},
        )
    ).fetchone()
    return bool(row and row["found"])


async def _opclass(conn: psycopg.AsyncConnection, name: str, method: str) -> sql.Composable:
    """Return the schema-qualified operator class, or raise 422 naming the extension it needs."""
    row = await (
        await conn.execute(
            "SELECT n.nspname FROM pg_opclass o JOIN pg_am a ON a.oid = o.opcmethod "
            "JOIN pg_namespace n ON n.oid = o.opcnamespace "
            "WHERE o.opcname = %s AND a.amname = %s "
            "ORDER BY n.nspname <> 'pg_catalog', n.nspname LIMIT 1",
            (name, method),
        )
    ).fetchone()
    if row is None:
        extension = EXTENSION_OF_OPERATOR_CLASS.get(name)
        todo = f"; enable the {extension} extension first" if extension else ""
        raise InvalidInput(
            f"operator class {name!r} for {method} does not exist in this database{todo}",
            details={"field": "opclass"},
        )
    return sql.Identifier(row["nspname"], name)


async def _relation_exists(conn: psycopg.AsyncConnection, name: str) -> bool:
    row = await (
        await conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (SCHEMA, name),
        )
    ).fetchone()
    return row is not None


# --- generated names ----------------------------------------------------------------------------


def _slug(part: str) -> str:
    return re.sub(r"\W+", "_", part.lower()).strip("_") or "x"


def _fit(stem: str, tail: str) -> str:
    """Join ``stem`` and ``tail`` with '_' within 63 bytes, shortening the stem if needed.

    A shortened stem gets a short hash of the full one, so two long names that
    share a prefix still differ.
    """
    name = f"{stem}_{tail}"
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(stem.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len(f"_{digest}_{tail}".encode())
    short = stem.encode()[:room].decode(errors="ignore").rstrip("_")
    return f"{short}_{digest}_{tail}"


def generated_names(table: str, columns: list[str], spec: IndexSpec) -> Iterator[str]:
    """Yield readable names like ``posts_title_idx``, ``users_email_key``, ``docs_body_gin_idx``,
    then the same with 1, 2... appended, as PostgreSQL does."""
    stem = "_".join(_slug(part) for part in [table, *columns])
    kind = "key" if spec.unique else "idx"
    tail = kind if spec.type == "btree" else f"{spec.type}_{kind}"
    yield _fit(stem, tail)
    for number in range(1, 1000):
        yield _fit(stem, f"{tail}{number}")


async def _choose_name(
    conn: psycopg.AsyncConnection, table: str, columns: list[str], spec: IndexSpec
) -> str:
    for name in generated_names(table, columns, spec):
        if not await _relation_exists(conn, name):
            return name
    raise Conflict(f"no free index name left for table {table!r}; send a name")


# --- list, create, drop -------------------------------------------------------------------------


async def _list(conn: psycopg.AsyncConnection, table_oid: int) -> list[Index]:
    cursor = conn.cursor(row_factory=psycopg.rows.class_row(Index))
    await cursor.execute(INDEX_SELECT + " WHERE i.indrelid = %s ORDER BY c.relname", (table_oid,))
    return await cursor.fetchall()


async def list_indexes(services: Services, project: Project, table: str) -> list[Index]:
    """List every index on ``table``, with size, scan count and definition."""
    async with as_owner(services, project) as conn:
        found = await _table(conn, table)
        return await _list(conn, found["oid"])


async def create_index(services: Services, project: Project, table: str, spec: IndexSpec) -> Index:
    """Build the index; on failure no index of that name is left behind."""
    _check_spec(spec)
    predicate = parse_predicate(spec.where) if spec.where is not None else None

    async with as_owner(services, project) as conn:
        found = await _table(conn, table)
        if found["relkind"] == "p" and spec.concurrently:
            raise InvalidInput(
                f"{table!r} is a partitioned table, and PostgreSQL cannot build its indexes "
                "CONCURRENTLY; send concurrently: false",
                details={"field": "concurrently"},
            )
        columns = await _columns(conn, found["oid"], table, spec.columns)
        opclass = await _opclass(conn, spec.opclass, spec.type) if spec.opclass else None
        if opclass is None:
            await _check_default_opclass(conn, spec, columns)

        if spec.name is not None and await _relation_exists(conn, spec.name):
            raise Conflict(
                f"a relation named {spec.name!r} already exists in schema public; "
                "choose another name",
                code="index_exists",
            )

        async with _one_build_at_a_time(conn, services):
            # Other sessions, such as a migration, may still take a generated name
            # between the check and the build, so it is chosen again a few times.
            for attempt in range(GENERATED_NAME_ATTEMPTS):
                name = spec.name or await _choose_name(conn, table, spec.columns, spec)
                statement = _create_statement(name, table, spec, opclass, predicate)
                try:
                    await _build(conn, services, project, statement, name, spec.concurrently)
                    break
                except NameTaken:
                    if spec.name is not None or attempt == GENERATED_NAME_ATTEMPTS - 1:
                        raise
        indexes = await _list(conn, found["oid"])
    logger.info("project %s: created index %s on %s", project.id, name, table)
    return next(index for index in indexes if index.name == name)


async def _check_default_opclass(
    conn: psycopg.AsyncConnection, spec: IndexSpec, columns: dict[str, dict[str, Any]]
) -> None:
    """Reject gin or gist on a text column without an operator class, with what to do instead.

    Other types without a default operator class fail in PostgreSQL with its own message.
    """
    if spec.type not in ("gin", "gist"):
        return
    for name in spec.columns:
        column = columns[name]
        if column["typcategory"] != "S":
            continue
        if await _has_default_opclass(conn, spec.type, column["atttypid"]):
            continue
        opclass = f"{spec.type}_trgm_ops"
        raise InvalidInput(
            f"column {name!r} has type {column['type']}, which has no default operator class "
            f"for {spec.type} indexes; for LIKE, ILIKE and similarity search enable the pg_trgm "
            f"extension and send opclass {opclass!r}, for full-text search use a tsvector "
            "expression index, for equality use a btree index",
            code="no_default_operator_class",
            details={"field": "type", "column": name, "suggested_opclass": opclass},
        )


def _create_statement(
    name: str,
    table: str,
    spec: IndexSpec,
    opclass: sql.Composable | None,
    predicate: str | None,
) -> sql.Composed:
    keys = [
        sql.SQL(" ").join([sql.Identifier(column), opclass]) if opclass else sql.Identifier(column)
        for column in spec.columns
    ]
    parts: list[sql.Composable] = [
        sql.SQL("CREATE UNIQUE INDEX" if spec.unique else "CREATE INDEX"),
    ]
    if spec.concurrently:
        parts.append(sql.SQL("CONCURRENTLY"))
    parts += [
        sql.Identifier(name),
        sql.SQL("ON"),
        sql.Identifier(SCHEMA, table),
        # The type is one of the IndexType literals, checked by the request model.
        sql.SQL("USING {} ({})").format(sql.SQL(spec.type), sql.SQL(", ").join(keys)),
    ]
    if predicate is not None:
        # pglast's serialization of a single parsed expression; see parse_predicate.
        parts += [sql.SQL("WHERE"), sql.SQL(predicate)]
    return sql.SQL(" ").join(parts)


@asynccontextmanager
async def _one_build_at_a_time(
    conn: psycopg.AsyncConnection, services: Services
) -> AsyncIterator[None]:
    """Hold the database's index-build lock, so that zbaas runs one build or drop at a time.

    Two concurrent builds in one database can deadlock, because each waits for
    the transactions of the other. The lock is a session-level advisory lock,
    polled with pg_try_advisory_lock: a session blocked in pg_advisory_lock
    holds a snapshot that the running build would wait for, a deadlock again.
    """
    deadline = time.monotonic() + services.settings.migration_statement_timeout_ms / 1000
    while True:
        row = await (
            await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s)) AS locked", (BUILD_LOCK,))
        ).fetchone()
        if row is not None and row["locked"]:
            break
        if time.monotonic() > deadline:
            raise Conflict(
                "another index build or drop is still running in this project; try again later",
                code="index_build_running",
            )
        await asyncio.sleep(BUILD_LOCK_POLL_S)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (BUILD_LOCK,))


async def _set_timeouts(conn: psycopg.AsyncConnection, services: Services, lock: bool) -> None:
    settings = services.settings
    await conn.execute(
        "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
        (
            str(settings.migration_statement_timeout_ms),
            # A concurrent build waits for every transaction older than it by design,
            # so only the statement timeout bounds it.
            str(settings.migration_lock_timeout_ms) if lock else "0",
        ),
    )


async def _build(
    conn: psycopg.AsyncConnection,
    services: Services,
    project: Project,
    statement: sql.Composed,
    name: str,
    concurrently: bool,
) -> None:
    await _set_timeouts(conn, services, lock=not concurrently)
    try:
        await conn.execute(statement)
    except psycopg.errors.DuplicateTable:
        # Another request created this name between the check and the build, and
        # its index is not ours to drop.
        raise NameTaken(
            f"a relation named {name!r} already exists in schema public", code="index_exists"
        ) from None
    except BaseException as exc:
        if concurrently:
            await _drop_invalid(conn, project, name)
        mapped = _build_error(exc, name)
        if mapped is exc:
            raise
        raise mapped from exc
    finally:
        await conn.execute("RESET statement_timeout; RESET lock_timeout")


async def _drop_invalid(conn: psycopg.AsyncConnection, project: Project, name: str) -> None:
    """Drop the invalid index that a failed concurrent build of ``name`` left, if any."""
    row = await (
        await conn.execute(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND NOT i.indisvalid",
            (SCHEMA, name),
        )
    ).fetchone()
    if row is None:
        return
    logger.warning("project %s: dropping invalid index %s left by a failed build", project.id, name)
    try:
        await conn.execute(
            sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(SCHEMA, name))
        )
    except psycopg.Error as exc:
        # The build's own error is the one to report; this one is only logged.
        logger.error(
            "project %s: could not drop invalid index %s: %s", project.id, name, exc.sqlstate
        )


def _build_error(exc: BaseException, name: str) -> BaseException:
    """Map a failed CREATE INDEX by exception class; others pass through unchanged."""
    if isinstance(exc, psycopg.errors.UniqueViolation):
        detail = exc.diag.message_detail or ""
        return Conflict(
            f"cannot create unique index {name!r}: existing rows have duplicate values. {detail}",
            code="duplicate_values",
            details={"sqlstate": exc.sqlstate, "detail": detail},
        )
    if isinstance(exc, psycopg.errors.DeadlockDetected):
        return Conflict(
            f"index {name!r} was not built: it deadlocked with another transaction; try again",
            code="deadlock",
        )
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return Conflict(
            f"index {name!r} was not built: another transaction holds a lock on the table; "
            "try again, or build it concurrently",
            code="lock_timeout",
        )
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return Forbidden(f"index {name!r} was not built: {exc.diag.message_primary}")
    if isinstance(
        exc,
        psycopg.errors.ProgrammingError
        | psycopg.errors.DataError
        | psycopg.errors.NotSupportedError
        | psycopg.errors.QueryCanceled,
    ):
        return sql_error(exc)
    return exc


async def drop_index(
    services: Services, project: Project, name: str, *, concurrently: bool = True
) -> None:
    """Drop an index of schema public; 409 when a constraint needs it."""
    async with as_owner(services, project) as conn:
        row = await (
            await conn.execute(
                "SELECT c.oid, c.relkind, t.relname AS table FROM pg_class c "
                "JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_class t ON t.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('i', 'I')",
                (SCHEMA, name),
            )
        ).fetchone()
        if row is None:
            raise NotFound(f"index {name!r} not found in schema public", code="index_not_found")
        await _check_no_constraint(conn, name, row["oid"])
        if row["relkind"] == "I" and concurrently:
            raise InvalidInput(
                f"{name!r} is an index on a partitioned table, and PostgreSQL cannot drop it "
                "CONCURRENTLY; send concurrently=false",
                details={"field": "concurrently"},
            )

        async with _one_build_at_a_time(conn, services):
            await _drop(conn, services, name, row["table"], concurrently)
    logger.info("project %s: dropped index %s on %s", project.id, name, row["table"])


async def _drop(
    conn: psycopg.AsyncConnection, services: Services, name: str, table: str, concurrently: bool
) -> None:
    statement = sql.SQL("DROP INDEX CONCURRENTLY {}" if concurrently else "DROP INDEX {}")
    await _set_timeouts(conn, services, lock=not concurrently)
    try:
        await conn.execute(statement.format(sql.Identifier(SCHEMA, name)))
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise Conflict(
            f"cannot drop index {name!r}: {exc.diag.message_detail or 'objects depend on it'}",
            code="index_in_use",
        ) from None
    except psycopg.errors.UndefinedObject:
        raise NotFound(
            f"index {name!r} not found in schema public", code="index_not_found"
        ) from None
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
        raise Conflict(
            f"index {name!r} was not dropped: lock timed out because another "
            f"transaction has table {table!r} locked; try again",
            code="lock_timeout",
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise Forbidden(f"index {name!r} was not dropped: {exc.diag.message_primary}") from None
    finally:
        await conn.execute("RESET statement_timeout; RESET lock_timeout")


async def _check_no_constraint(conn: psycopg.AsyncConnection, name: str, index_oid: int) -> None:
    """Raise 409 naming the constraint when ``index_oid`` backs one or a foreign key uses it."""
    rows = await (
        await conn.execute(
            "SELECT k.conname, k.contype, t.relname AS table FROM pg_constraint k "
            "JOIN pg_class t ON t.oid = k.conrelid WHERE k.conindid = %s "
            "ORDER BY k.contype = 'f', k.conname",
            (index_oid,),
        )
    ).fetchall()
    if not rows:
        return
    kinds = {"p": "primary key", "u": "unique", "x": "exclusion", "f": "foreign key"}
    first = rows[0]
    kind = kinds.get(first["contype"], "")
    raise Conflict(
        f"cannot drop index {name!r}: the {kind} constraint {first['conname']!r} on table "
        f"{first['table']!r} needs it; drop the constraint instead (ALTER TABLE ... "
        "DROP CONSTRAINT in a migration)",
        code="index_backs_constraint",
        details={"constraints": [row["conname"] for row in rows]},
    )
