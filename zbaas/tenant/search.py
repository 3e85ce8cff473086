"""Ranked full-text search over a project table, its GIN index, and a trigram fallback.

Every search and the index built for it use one canonical document expression,
``to_tsvector('<config>'::regconfig, coalesce(c1::text, '') || ' ' || ...)``, built
by ``document()`` from the same inputs. PostgreSQL uses an expression index only
when the query contains the indexed expression, so both sides must come from
that one function.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from zbaas.errors import Conflict, Forbidden, InvalidInput, NotFound, sql_error

logger = logging.getLogger("zbaas.tenant")

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
# Schemas that belong to PostgreSQL itself; their tables are not searchable.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
# Relation kinds a search can read: table, partitioned table, view, materialized view.
SEARCHABLE_KINDS = ("r", "p", "v", "m")
# Type category 'S' (string) covers text, varchar, char, name, citext and domains
# over them: pg_type.typcategory of a domain is copied from its base type.
STRING_CATEGORY = "S"
HEADLINE_OPTIONS = "StartSel=<b>, StopSel=</b>, MaxWords=35, MinWords=15, MaxFragments=2"
# How long a second request for the same search index waits for the first to finish.
INDEX_LOCK_WAIT_S = 600.0


@dataclass
class Table:
    oid: int
    schema: str
    name: str
    kind: str

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class SearchPlan:
    """A checked search: table, columns and text search configuration all exist."""

    table: Table
    columns: list[str]
    config: str  # a pg_ts_config name, already quoted as an identifier when needed
    trgm_schema: str | None = None  # where pg_trgm is installed, if it is


@dataclass
class SearchResult:
    mode: str  # "fulltext", or "fuzzy" when the trigram fallback produced the rows
    rows: list[dict[str, Any]]
    index: str | None
    language: str
    limit: int
    offset: int


@dataclass
class SearchIndex:
    name: str
    table: str
    columns: list[str]
    language: str
    definition: str
    valid: bool
    created: bool
    size_bytes: int


def split_table_name(table: str) -> tuple[str, str]:
    """Split ``schema.table`` or ``table`` (in ``public``) into schema and name."""
    schema, dot, name = table.partition(".")
    if not dot:
        return "public", table
    if not schema or not name:
        raise NotFound(f"table {table!r} not found", code="table_not_found")
    return schema, name


# One catalog query checks the table, its columns and the text search
# configuration, and counts the searchable words of the query, so that a
# search costs one round trip before the statement itself.
CATALOG_CHECK = """
SELECT c.oid, n.nspname, c.relname, c.relkind,
    (SELECT coalesce(jsonb_object_agg(a.attname, jsonb_build_object(
                'type', format_type(a.atttypid, a.atttypmod),
                'category', t.typcategory::text)), '{}')
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname = ANY(%(columns)s)) AS columns,
    config.name AS config,
    config.nodes AS query_nodes,
    (SELECT en.nspname FROM pg_extension e JOIN pg_namespace en ON en.oid = e.extnamespace
     WHERE e.extname = 'pg_trgm') AS trgm_schema
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT quote_ident(cfgname) AS name,
           numnode(websearch_to_tsquery(oid::regconfig, %(query)s)) AS nodes
    FROM pg_ts_config
    WHERE cfgname = %(language)s AND pg_ts_config_is_visible(oid)
) AS config ON true
WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND c.relkind = ANY(%(kinds)s)
  AND NOT n.nspname = ANY(%(system)s)
"""


def check_columns(table: Table, columns: list[str], found: dict[str, Any]) -> None:
    """Raise 404 for an unknown column and 422 for one that does not hold text."""
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise InvalidInput(
            f"columns are listed more than once: {', '.join(duplicates)}",
            details={"field": "columns", "duplicates": duplicates},
        )

    for column in columns:
        if column not in found:
            raise NotFound(
                f"column {column!r} not found in table {table.qualified_name}",
                code="column_not_found",
                details={"field": "columns", "column": column},
            )
        if found[column]["category"] != STRING_CATEGORY:
            raise InvalidInput(
                f"column {column!r} has type {found[column]['type']}; full-text search needs "
                "a text-like column (text, varchar, char, citext)",
                code="column_not_text",
                details={"field": "columns", "column": column, "type": found[column]["type"]},
            )


async def unknown_language(conn: psycopg.AsyncConnection, language: str) -> InvalidInput:
    """Build the error for an unknown language, listing the configurations there are."""
    cur = await conn.execute(
        "SELECT cfgname FROM pg_ts_config WHERE pg_ts_config_is_visible(oid) ORDER BY cfgname"
    )
    available = [r["cfgname"] for r in await cur.fetchall()]
    return InvalidInput(
        f"unknown text search language {language!r}; use one of: {', '.join(available)}",
        code="unknown_language",
        details={"field": "language", "available": available},
    )


async def prepare(
    conn: psycopg.AsyncConnection,
    table: str,
    columns: list[str],
    language: str,
    query: str | None = None,
) -> SearchPlan:
    """Check the table, columns, language and, when given, the query against the catalog.

    Raises NotFound for an unknown table or column, and InvalidInput for a
    column without text, an unknown language, or a query with no searchable
    word (only stop words or punctuation).
    """
    schema, name = split_table_name(table)
    cur = await conn.execute(
        CATALOG_CHECK,
        {
            "schema": schema,
            "name": name,
            "kinds": list(SEARCHABLE_KINDS),
            "system": list(SYSTEM_SCHEMAS),
            "columns": columns,
            "language": language,
            "query": query,
        },
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"table {table!r} not found", code="table_not_found")
    resolved = Table(row["oid"], row["nspname"], row["relname"], row["relkind"])

    check_columns(resolved, columns, row["columns"])
    if row["config"] is None:
        raise await unknown_language(conn, language)
    if query is not None and row["query_nodes"] == 0:
        raise InvalidInput(
            f"the search query {query!r} has no searchable words in the {language} "
            "text search configuration (only stop words or punctuation)",
            code="empty_query",
        )
    return SearchPlan(resolved, columns, row["config"], row["trgm_schema"])


def _config(plan: SearchPlan) -> sql.Composable:
    return sql.SQL("{}::regconfig").format(sql.Literal(plan.config))


def document_text(plan: SearchPlan, alias: str | None = None) -> sql.Composable:
    """Build the searched text: the columns joined by single spaces, NULL read as empty."""
    parts = [
        sql.SQL("coalesce({}::text, '')").format(
            sql.Identifier(alias, column) if alias else sql.Identifier(column)
        )
        for column in plan.columns
    ]
    return sql.SQL(" || ' ' || ").join(parts)


def document(plan: SearchPlan, alias: str | None = None) -> sql.Composable:
    """Build the canonical tsvector expression, which the search index is built on."""
    return sql.SQL("to_tsvector({}, {})").format(_config(plan), document_text(plan, alias))


def search_statement(
    plan: SearchPlan, query: str, limit: int, offset: int, highlight: bool
) -> tuple[sql.Composed, dict[str, Any]]:
    """Build the ranked search, to run as is or under EXPLAIN.

    The tsquery is written inline with constant arguments, not as a FROM item:
    ``websearch_to_tsquery`` is immutable, so the planner folds it to a constant
    and can match ``document @@ constant`` against the GIN index. The inner query
    ranks and cuts the page; only the rows of the page pay for ``to_jsonb`` and
    ``ts_headline`` in the outer one.
    """
    config = _config(plan)
    tsquery = sql.SQL("websearch_to_tsquery({}, %(query)s)").format(config)
    headlines = sql.SQL("NULL::text[]")
    if highlight:
        headlines = sql.SQL("ARRAY[{}]").format(
            sql.SQL(", ").join(
                sql.SQL(
                    "ts_headline({}, coalesce((m.found).{}::text, ''), {}, %(options)s)"
                ).format(config, sql.Identifier(column), tsquery)
                for column in plan.columns
            )
        )
    # Rows of equal rank are ordered by physical position, so that pages do not
    # overlap. Views have no ctid, and a partitioned table repeats it across
    # partitions, so their ties keep the order the executor returns.
    has_tid = plan.table.kind in ("r", "m")
    empty = sql.SQL("")

    statement = sql.SQL(
        "SELECT to_jsonb(m.found) AS found_row, m.rank, {headlines} AS headlines FROM ("
        "SELECT t AS found, ts_rank_cd({doc}, {tsquery}) AS rank{tid} "
        "FROM {table} AS t WHERE {doc} @@ {tsquery} "
        "ORDER BY rank DESC{inner_tie} LIMIT %(limit)s OFFSET %(offset)s"
        ") AS m ORDER BY m.rank DESC{outer_tie}"
    ).format(
        headlines=headlines,
        doc=document(plan, "t"),
        tsquery=tsquery,
        tid=sql.SQL(", t.ctid AS tid") if has_tid else empty,
        table=plan.table.identifier,
        inner_tie=sql.SQL(", t.ctid") if has_tid else empty,
        outer_tie=sql.SQL(", m.tid") if has_tid else empty,
    )
    params = {"query": query, "limit": limit, "offset": offset, "options": HEADLINE_OPTIONS}
    return statement, params


def match_exists_statement(plan: SearchPlan, query: str) -> tuple[sql.Composed, dict[str, Any]]:
    statement = sql.SQL(
        "SELECT EXISTS (SELECT FROM {table} AS t WHERE {doc} @@ "
        "websearch_to_tsquery({config}, %(query)s)) AS found"
    ).format(table=plan.table.identifier, doc=document(plan, "t"), config=_config(plan))
    return statement, {"query": query}


def fuzzy_statement(
    plan: SearchPlan, trgm_schema: str, query: str, limit: int, offset: int
) -> tuple[sql.Composed, dict[str, Any]]:
    """Rank rows by pg_trgm word similarity between the query and the document text.

    ``<%`` keeps rows whose best-matching stretch of words reaches
    ``pg_trgm.word_similarity_threshold`` (0.6 unless the server sets another).
    """
    text = document_text(plan, "t")
    statement = sql.SQL(
        "SELECT to_jsonb(t) AS found_row, {similarity}(%(query)s, ({text})) AS rank, "
        "NULL::text[] AS headlines FROM {table} AS t "
        "WHERE %(query)s OPERATOR({schema}.<%%) ({text}) "
        "ORDER BY rank DESC, found_row LIMIT %(limit)s OFFSET %(offset)s"
    ).format(
        similarity=sql.Identifier(trgm_schema, "word_similarity"),
        schema=sql.Identifier(trgm_schema),
        text=text,
        table=plan.table.identifier,
    )
    return statement, {"query": query, "limit": limit, "offset": offset}


def plan_indexes(plan_json: Any) -> list[str]:
    """Return the names of the indexes that nodes of an EXPLAIN (FORMAT JSON) plan scan."""
    names: list[str] = []
    stack = [plan_json]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "Index Name" in node:
                names.append(str(node["Index Name"]))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


async def _run(
    conn: psycopg.AsyncConnection, statement: sql.Composed, params: dict[str, Any]
) -> tuple[list[dict[str, Any]], str | None]:
    """Run a statement and return its rows and the index its plan scans, if any.

    The index is read from EXPLAIN (FORMAT JSON) of the same statement with the
    same parameters, planned just before it in the same transaction. Matching
    index expressions in the catalog would only show that an index could serve
    the query. The plan shows whether the planner chose it, because it may prefer
    a sequential scan on a small table or for a term found in most rows.
    """
    # In pipeline mode both statements go to the server in one round trip.
    explain = await conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params)
    cur = await conn.execute(statement, params)
    explained = await explain.fetchone()
    assert explained is not None
    indexes = plan_indexes(next(iter(explained.values())))
    return await cur.fetchall(), (indexes[0] if indexes else None)


def _shape_rows(rows: list[dict[str, Any]], plan: SearchPlan) -> list[dict[str, Any]]:
    shaped = []
    for row in rows:
        headlines = row["headlines"]
        shaped.append(
            {
                "row": row["found_row"],
                "rank": float(row["rank"]),
                "highlights": None
                if headlines is None
                else dict(zip(plan.columns, headlines, strict=True)),
            }
        )
    return shaped


async def search(
    conn: psycopg.AsyncConnection,
    table: str,
    *,
    query: str,
    columns: list[str],
    language: str,
    limit: int,
    offset: int,
    highlight: bool,
    fuzzy: bool,
    statement_timeout_ms: int,
) -> SearchResult:
    """Search ``table`` as the connection's role, ranked by ``ts_rank_cd``.

    With ``fuzzy`` and no full-text match at all, rows are ranked by pg_trgm word
    similarity instead. Raises NotFound for an unknown table or column, and
    Forbidden when the role may not read the table. Raises InvalidInput for a
    column without text, an unknown language or an empty query, for fuzzy
    search without pg_trgm, and for a search over its time limit.
    """
    if not query.strip():
        raise InvalidInput("the search query is empty", code="empty_query")

    # Pipeline mode sends BEGIN, the timeout and the catalog check in one round
    # trip, and EXPLAIN with the search in a second one.
    try:
        async with conn.pipeline(), conn.transaction():
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, true)", (str(statement_timeout_ms),)
            )
            plan = await prepare(conn, table, columns, language, query)
            trgm = plan.trgm_schema if fuzzy else None
            if fuzzy and trgm is None:
                raise InvalidInput(
                    "fuzzy search needs the pg_trgm extension; enable it for this project "
                    "and retry",
                    code="extension_required",
                    details={"extension": "pg_trgm"},
                )

            statement, params = search_statement(plan, query, limit, offset, highlight)
            rows, index = await _run(conn, statement, params)
            mode = "fulltext"
            if not rows and trgm is not None and not await _has_match(conn, plan, query):
                statement, params = fuzzy_statement(plan, trgm, query, limit, offset)
                rows, index = await _run(conn, statement, params)
                mode = "fuzzy"
    except psycopg.errors.QueryCanceled:
        logger.warning("search on %s timed out after %d ms", table, statement_timeout_ms)
        raise InvalidInput(
            f"the search took longer than {statement_timeout_ms} ms and was cancelled; "
            "build the search index (POST .../search/index) or make the query more specific",
            code="statement_timeout",
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _forbidden(exc) from None
    except (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded) as exc:
        # Text the search cannot process, such as a document past tsvector's 1 MB.
        raise sql_error(exc) from None

    return SearchResult(mode, _shape_rows(rows, plan), index, language, limit, offset)


async def _has_match(conn: psycopg.AsyncConnection, plan: SearchPlan, query: str) -> bool:
    statement, params = match_exists_statement(plan, query)
    cur = await conn.execute(statement, params)
    row = await cur.fetchone()
    return bool(row and row["found"])


def _forbidden(exc: psycopg.errors.InsufficientPrivilege) -> Forbidden:
    message = exc.diag.message_primary or "permission denied"
    return Forbidden(
        f"the project's owner role may not do this: {message}",
        code="insufficient_privilege",
        details={"sqlstate": exc.sqlstate},
    )


def index_name(table: Table, columns: list[str], language: str) -> str:
    """Return ``<table>_<columns>_<language>_fts``, with a hash when that is not usable.

    A hash of the inputs is added when the name is longer than 63 bytes or had
    characters other than lowercase letters, digits and underscores replaced,
    so that two tables such as ``My-Table`` and ``my_table`` get distinct names.
    """
    raw = "_".join([table.name, *columns, language, "fts"])
    name = re.sub(r"[^a-z0-9_]+", "_", raw.lower()).strip("_")
    if name == raw and len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(
        "\0".join([table.qualified_name, *columns, language]).encode()
    ).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER_BYTES - 13]}_{digest}_fts"


async def _index_row(
    conn: psycopg.AsyncConnection, schema: str, name: str
) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT i.indexrelid, i.indrelid, i.indisvalid, am.amname, "
        "pg_get_indexdef(i.indexrelid) AS definition, pg_relation_size(c.oid) AS size "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_am am ON am.oid = c.relam "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    )
    return await cur.fetchone()


async def _lock_index_name(conn: psycopg.AsyncConnection, key: str) -> None:
    """Take a session advisory lock on ``key``, polling.

    A blocking ``pg_advisory_lock`` would hold a snapshot while it waits, and
    ``CREATE INDEX CONCURRENTLY`` in the session holding the lock waits for every
    older snapshot: the two would wait for each other. ``pg_try_advisory_lock``
    returns at once, so the waiting session has no snapshot open between tries.
    """
    deadline = time.monotonic() + INDEX_LOCK_WAIT_S
    while True:
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS locked", (key,)
        )
        row = await cur.fetchone()
        if row is not None and row["locked"]:
            return
        if time.monotonic() > deadline:
            raise Conflict(
                f"the search index {key} is still being built by another request; retry later",
                code="index_build_in_progress",
            )
        await asyncio.sleep(0.2)


async def create_index(
    conn: psycopg.AsyncConnection,
    table: str,
    *,
    columns: list[str],
    language: str,
    statement_timeout_ms: int,
    lock_timeout_ms: int,
) -> SearchIndex:
    """Build the GIN index on the search expression, CONCURRENTLY; idempotent.

    ``conn`` must be an autocommit connection of the table's owner, because
    CREATE INDEX CONCURRENTLY cannot run inside a transaction block. An advisory
    lock serializes requests for the same index, so a second request waits and
    then finds the first one's index. A build that fails leaves no invalid index.
    """
    plan = await prepare(conn, table, columns, language)
    if plan.table.kind not in ("r", "p", "m"):
        raise InvalidInput(
            f"{plan.table.qualified_name} is a view; only tables and materialized views "
            "can carry an index",
            code="not_a_table",
        )
    name = index_name(plan.table, columns, language)

    await _lock_index_name(conn, f"zbaas.search_index:{plan.table.schema}.{name}")
    try:
        created = await _build_index(conn, plan, name, statement_timeout_ms, lock_timeout_ms)
    finally:
        await conn.execute(
            "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
            (f"zbaas.search_index:{plan.table.schema}.{name}",),
        )

    row = await _index_row(conn, plan.table.schema, name)
    assert row is not None
    return SearchIndex(
        name=name,
        table=plan.table.qualified_name,
        columns=columns,
        language=language,
        definition=row["definition"],
        valid=row["indisvalid"],
        created=created,
        size_bytes=row["size"],
    )


async def _build_index(
    conn: psycopg.AsyncConnection,
    plan: SearchPlan,
    name: str,
    statement_timeout_ms: int,
    lock_timeout_ms: int,
) -> bool:
    """Build the index unless a valid one of that name exists; return whether it built."""
    existing = await _index_row(conn, plan.table.schema, name)
    if existing is not None:
        if existing["indrelid"] != plan.table.oid or existing["amname"] != "gin":
            raise Conflict(
                f"an index or relation named {name} already exists in schema "
                f"{plan.table.schema} and is not this table's search index; drop or rename it",
                code="index_exists",
            )
        # NOTE: an index of the generated name on this table counts as the search
        # index without comparing its expression with document().
        if existing["indisvalid"]:
            return False
        # An invalid index of this name is left from a failed build; the advisory
        # lock rules out a build still in progress.
        await _drop_index(conn, plan.table.schema, name)

    statement = sql.SQL("CREATE INDEX CONCURRENTLY {name} ON {table} USING gin ({doc})").format(
        name=sql.Identifier(name), table=plan.table.identifier, doc=document(plan)
    )
    started = time.monotonic()
    try:
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false)", (str(statement_timeout_ms),)
        )
        await conn.execute("SELECT set_config('lock_timeout', %s, false)", (str(lock_timeout_ms),))
        await conn.execute(statement)
    except psycopg.errors.QueryCanceled:
        logger.warning(
            "building search index %s on %s timed out after %d ms",
            name,
            plan.table.qualified_name,
            statement_timeout_ms,
        )
        await _drop_index(conn, plan.table.schema, name)
        raise InvalidInput(
            f"building the search index {name} took longer than {statement_timeout_ms} ms "
            "or waited too long for a lock, and was cancelled",
            code="statement_timeout",
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _forbidden(exc) from None
    except psycopg.errors.DuplicateTable:
        # A relation of that name appeared after the check; it is not ours to drop.
        raise Conflict(
            f"a relation named {name} already exists in schema {plan.table.schema}; "
            "drop or rename it",
            code="index_exists",
        ) from None
    except (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded) as exc:
        logger.warning(
            "building search index %s on %s failed: %s",
            name,
            plan.table.qualified_name,
            exc.sqlstate,
        )
        await _drop_index(conn, plan.table.schema, name)
        raise sql_error(exc) from None
    except psycopg.Error:
        await _drop_index(conn, plan.table.schema, name)
        raise
    finally:
        await conn.execute("RESET statement_timeout")
        await conn.execute("RESET lock_timeout")

    logger.info(
        "built search index %s on %s in %.1f s",
        name,
        plan.table.qualified_name,
        time.monotonic() - started,
    )
    return True


async def _drop_index(conn: psycopg.AsyncConnection, schema: str, name: str) -> None:
    await conn.execute(
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
    )
