"""Look up tables and functions in the catalog.

Every name of a data API request is checked against what these functions
return before it reaches SQL, and only then quoted with ``sql.Identifier``.

Tables are cached per process (see :class:`TableCache`), because the lookup
would otherwise cost each request a second round trip. A cached table is only
trusted while it agrees with the database: a name it lacks, or an error from
PostgreSQL that a changed table explains, raises :class:`StaleCatalog`, and the
request runs again on a fresh lookup. Functions are looked up on every call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg

from zbaas.rest.errors import RestError, not_found_table, unknown_body_column, unknown_column

# How long a cached table is used before it is read again, s. A change that makes
# a request fail is seen at once. A change that fails nothing, such as a new
# primary key while the old columns stay unique, goes unseen for this long.
TABLE_CACHE_SECONDS = 1.0
TABLE_CACHE_ENTRIES = 4096

# SQLSTATEs a request can raise because a cached table no longer matches the
# database: undefined_table, undefined_column, and invalid_column_reference (an
# upsert target that is no longer a unique key).
STALE_SQLSTATES = frozenset({"42P01", "42703", "42P10"})


class StaleCatalog(Exception):
    """Signal that a cached table disagrees with the request, which must run on a fresh lookup."""


@dataclass
class Table:
    schema: str
    name: str
    columns: list[str]
    primary_key: list[str]
    # True when the table came from the cache: a missing name then means "look
    # again", not "no such column".
    cached: bool = False

    def column(self, name: str) -> str:
        """Return ``name`` if the table has it; 400 with PostgreSQL's code otherwise."""
        if name not in self.columns:
            if self.cached:
                raise StaleCatalog(name)
            raise unknown_column(self.name, name)
        return name

    def body_column(self, name: str) -> str:
        if name not in self.columns:
            if self.cached:
                raise StaleCatalog(name)
            raise unknown_body_column(self.name, name)
        return name


@dataclass
class Argument:
    name: str
    type_schema: str
    type_name: str
    has_default: bool


@dataclass
class Function:
    schema: str
    name: str
    arguments: list[Argument]
    returns_set: bool
    returns_void: bool
    volatile: bool
    # Result columns when the function returns rows (a table type, RETURNS TABLE or
    # OUT parameters); None when it returns a scalar.
    result_columns: list[str] | None = field(default=None)

    def result_table(self) -> Table:
        """Describe the result rows as a table, so filters and select can be checked against it."""
        if self.result_columns is None:
            raise RestError(
                400,
                "PGRST100",
                f"{self.schema}.{self.name} returns a scalar; select, filters and order apply "
                "only to functions that return rows",
            )
        return Table(self.schema, self.name, self.result_columns, [])


TABLE_QUERY = """
SELECT a.attname, coalesce(a.attnum = ANY (i.indkey), false) AS is_pk
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY a.attnum
"""


class TableCache:
    """Tables of every project database this process serves, least recently used first out."""

    def __init__(self, max_entries: int = TABLE_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, str], tuple[Table, float]] = OrderedDict()

    def get(self, database: str, schema: str, name: str) -> Table | None:
        key = (database, schema, name)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[1] > TABLE_CACHE_SECONDS:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, database: str, table: Table) -> None:
        key = (database, table.schema, table.name)
        self._entries[key] = (replace(table, cached=True), time.monotonic())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class Lookup:
    """The table lookups of one attempt at a request, from the cache when allowed."""

    def __init__(self, cache: TableCache, database: str, *, use_cache: bool) -> None:
        self.cache = cache
        self.database = database
        self.use_cache = use_cache
        self.used_cache = False

    async def table(self, conn: psycopg.AsyncConnection, schema: str, name: str) -> Table:
        """Return ``schema.name`` from the cache, or load it and cache it."""
        if self.use_cache:
            cached = self.cache.get(self.database, schema, name)
            if cached is not None:
                self.used_cache = True
                return cached
        found = await table(conn, schema, name)
        self.cache.put(self.database, found)
        return found


async def table(conn: psycopg.AsyncConnection, schema: str, name: str) -> Table:
    """Load the columns and primary key of ``schema.name``; 404 when there is none."""
    cur = await conn.execute(TABLE_QUERY, (schema, name))
    rows = await cur.fetchall()
    if not rows:
        raise not_found_table(schema, name)
    return Table(
        schema,
        name,
        [row["attname"] for row in rows],
        [row["attname"] for row in rows if row["is_pk"]],
    )


# One row per function of that name. Input arguments carry their type's schema
# and name, which the builder quotes to cast the JSON arguments.
FUNCTION_QUERY = """
SELECT
    p.oid,
    p.proretset AS returns_set,
    p.provolatile = 'v' AS volatile,
    p.prorettype = 'pg_catalog.void'::regtype AS returns_void,
    rt.typtype AS return_kind,
    rt.typrelid AS return_relid,
    p.pronargs,
    p.pronargdefaults,
    coalesce((
        SELECT json_agg(json_build_object(
            'name', args.name, 'mode', args.mode,
            'type_schema', tn.nspname, 'type_name', t.typname) ORDER BY args.ord)
        FROM unnest(
            coalesce(p.proallargtypes, p.proargtypes::oid[]),
            coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs])),
            p.proargnames
        ) WITH ORDINALITY AS args(type_oid, mode, name, ord)
        JOIN pg_type t ON t.oid = args.type_oid
        JOIN pg_namespace tn ON tn.oid = t.typnamespace
    ), '[]') AS args,
    (
        SELECT json_agg(a.attname ORDER BY a.attnum)
        FROM pg_attribute a
        WHERE a.attrelid = rt.typrelid AND a.attnum > 0 AND NOT a.attisdropped
    ) AS return_columns
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_type rt ON rt.oid = p.prorettype
WHERE n.nspname = %s AND p.proname = %s AND p.prokind = 'f'
"""


def _function_from_row(schema: str, name: str, row: dict[str, Any]) -> Function | None:
    """Build a Function; None when an input argument has no name (not callable by name)."""
    args = row["args"]
    inputs = [a for a in args if a["mode"] in ("i", "b", "v")]
    outputs = [a["name"] for a in args if a["mode"] in ("o", "b", "t")]
    if any(not a["name"] for a in inputs):
        return None
    first_default = len(inputs) - row["pronargdefaults"]
    arguments = [
        Argument(a["name"], a["type_schema"], a["type_name"], index >= first_default)
        for index, a in enumerate(inputs)
    ]
    if outputs:
        result_columns: list[str] | None = outputs
    elif row["return_kind"] == "c":
        result_columns = row["return_columns"] or []
    else:
        result_columns = None
    return Function(
        schema,
        name,
        arguments,
        row["returns_set"],
        row["returns_void"],
        row["volatile"],
        result_columns,
    )


async def function(
    conn: psycopg.AsyncConnection, schema: str, name: str, given: set[str]
) -> Function:
    """Find the one function ``schema.name`` callable with exactly the ``given`` arguments.

    A candidate matches when every required argument is given and every given
    name is an argument. None matches: 404 (PGRST202); several: 300 (PGRST203).
    """
    cur = await conn.execute(FUNCTION_QUERY, (schema, name))
    candidates = []
    for row in await cur.fetchall():
        found = _function_from_row(schema, name, row)
        if found is None:
            continue
        names = {a.name for a in found.arguments}
        required = {a.name for a in found.arguments if not a.has_default}
        if required <= given <= names:
            candidates.append(found)

    signature = f"{schema}.{name}({', '.join(sorted(given))})"
    if not candidates:
        raise RestError(
            404,
            "PGRST202",
            f"Could not find the function {signature} in the schema cache",
            hint="Check the function name and that the argument names match its parameters.",
        )
    if len(candidates) > 1:
        raise RestError(
            300,
            "PGRST203",
            f"Could not choose the best candidate function between several for {signature}",
            hint="Rename the overloaded functions or give arguments that only one accepts.",
        )
    return candidates[0]
