"""Build the SQL of data API requests from parsed queries and catalog entries.

Every name reaches SQL through ``sql.Identifier`` after the catalog confirmed
it; every value is a query parameter. Values are sent untyped, so PostgreSQL
reads them as the type of the column they are compared with. Results are
turned into JSON by PostgreSQL itself, as PostgREST does, so the response body
is one text value and each row's types keep their JSON form.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from zbaas.rest.catalog import Function, Table
from zbaas.rest.query import Condition, Filter, Logic, OrderItem, Prefer, Query, SelectItem

Params = list[Any]

COMPARISONS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
}
IS_VALUES = {"null": "NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}

# The outer query of every request: the rows as one JSON array, and how many.
RESULT = sql.SQL(
    "SELECT coalesce(json_agg(_pgrst_t), '[]')::text AS body, count(*) AS row_count "
    "FROM ({}) AS _pgrst_t"
)
MUTATION_RESULT = sql.SQL("WITH _pgrst_rows AS ({mutation}) {result}")


def column_ref(name: str, qualifier: str | None) -> sql.Identifier:
    return sql.Identifier(qualifier, name) if qualifier else sql.Identifier(name)


def filter_sql(table: Table, item: Filter, params: Params, qualifier: str | None) -> sql.Composable:
    column = column_ref(table.column(item.column), qualifier)
    if item.operator in COMPARISONS:
        params.append(item.value)
        condition: sql.Composable = sql.SQL("{} {} %s").format(
            column, sql.SQL(COMPARISONS[item.operator])
        )
    elif item.operator in ("like", "ilike"):
        params.append(item.value)
        # The cast lets a pattern match numbers and dates as PostgREST does; on text
        # columns it changes nothing, so their indexes still apply.
        condition = sql.SQL("{}::text {} %s").format(
            column, sql.SQL("LIKE" if item.operator == "like" else "ILIKE")
        )
    elif item.operator == "is":
        assert isinstance(item.value, str)
        condition = sql.SQL("{} IS {}").format(column, sql.SQL(IS_VALUES[item.value]))
    else:  # in
        assert isinstance(item.value, list)
        if not item.value:
            condition = sql.SQL("false")
        else:
            params.extend(item.value)
            placeholders = sql.SQL(", ").join(sql.Placeholder() for _ in item.value)
            condition = sql.SQL("{} IN ({})").format(column, placeholders)
    return sql.SQL("NOT ({})").format(condition) if item.negated else condition


def condition_sql(
    table: Table, item: Condition, params: Params, qualifier: str | None
) -> sql.Composable:
    if isinstance(item, Filter):
        return filter_sql(table, item, params, qualifier)
    assert isinstance(item, Logic)
    joiner = sql.SQL(" AND ") if item.operator == "and" else sql.SQL(" OR ")
    parts = [condition_sql(table, child, params, qualifier) for child in item.conditions]
    combined = sql.SQL("({})").format(joiner.join(parts))
    return sql.SQL("NOT {}").format(combined) if item.negated else combined


def where_sql(
    table: Table, conditions: list[Condition], params: Params, qualifier: str | None = None
) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    parts = [condition_sql(table, item, params, qualifier) for item in conditions]
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts)


def select_sql(
    table: Table, items: list[SelectItem], qualifier: str | None = None
) -> sql.Composable:
    parts: list[sql.Composable] = []
    for item in items:
        if item.column == "*":
            parts.append(
                sql.SQL("{}.*").format(sql.Identifier(qualifier)) if qualifier else sql.SQL("*")
            )
            continue
        column = column_ref(table.column(item.column), qualifier)
        parts.append(sql.SQL("{} AS {}").format(column, sql.Identifier(item.alias or item.column)))
    return sql.SQL(", ").join(parts)


def order_sql(table: Table, items: list[OrderItem], qualifier: str | None = None) -> sql.Composable:
    if not items:
        return sql.SQL("")
    parts = []
    for item in items:
        part = sql.SQL("{} {}").format(
            column_ref(table.column(item.column), qualifier),
            sql.SQL("DESC" if item.descending else "ASC"),
        )
        if item.nulls:
            part = sql.SQL("{} NULLS {}").format(part, sql.SQL(item.nulls.upper()))
        parts.append(part)
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(parts)


def page_sql(query: Query, params: Params) -> sql.Composable:
    clause = sql.SQL("")
    if query.limit is not None:
        params.append(query.limit)
        clause += sql.SQL(" LIMIT %s")
    if query.offset is not None:
        params.append(query.offset)
        clause += sql.SQL(" OFFSET %s")
    return clause


def table_ref(table: Table) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


def read(table: Table, query: Query) -> tuple[sql.Composable, Params]:
    params: Params = []
    inner = sql.SQL("SELECT {} FROM {}{}{}{}").format(
        select_sql(table, query.select),
        table_ref(table),
        where_sql(table, query.where, params),
        order_sql(table, query.order),
        page_sql(query, params),
    )
    return RESULT.format(inner), params


def count(table: Table, query: Query) -> tuple[sql.Composable, Params]:
    params: Params = []
    statement = sql.SQL("SELECT count(*) AS total FROM {}{}").format(
        table_ref(table), where_sql(table, query.where, params)
    )
    return statement, params


def _mutation_result(
    table: Table, mutation: sql.Composable, query: Query, representation: bool
) -> sql.Composable:
    """Wrap a mutation: the changed rows as JSON (or only their count) in one statement."""
    if representation:
        inner = sql.SQL("SELECT {} FROM _pgrst_rows").format(select_sql(table, query.select))
        result = RESULT.format(inner)
    else:
        result = sql.SQL("SELECT NULL::text AS body, count(*) AS row_count FROM _pgrst_rows")
    return MUTATION_RESULT.format(mutation=mutation, result=result)


def insert(
    table: Table, query: Query, rows_json: str, columns: list[str], prefer: Prefer
) -> tuple[sql.Composable, Params]:
    """INSERT the JSON rows; ``columns`` were checked against the table by the caller.

    ``json_populate_recordset`` gives each value its column's type and fills a
    listed column missing from a row with NULL, as PostgREST does.
    """
    names = [sql.Identifier(table.body_column(c)) for c in columns]
    target = sql.SQL(" ({})").format(sql.SQL(", ").join(names)) if names else sql.SQL("")
    source = sql.SQL("SELECT {} FROM json_populate_recordset(NULL::{}, %s::json)").format(
        sql.SQL(", ").join(names), table_ref(table)
    )
    mutation = sql.SQL("INSERT INTO {}{} {}").format(table_ref(table), target, source)

    if prefer.resolution is not None:
        conflict = query.on_conflict or table.primary_key
        conflict_names = sql.SQL(", ").join(sql.Identifier(table.column(c)) for c in conflict)
        if prefer.resolution == "ignore-duplicates" or not names:
            action = sql.SQL("DO NOTHING")
        else:
            action = sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(name) for name in names
            )
        mutation += sql.SQL(" ON CONFLICT ({}) {}").format(conflict_names, action)

    mutation += sql.SQL(" RETURNING {}.*").format(table_ref(table))
    return _mutation_result(table, mutation, query, prefer.representation), [rows_json]


def update(
    table: Table, query: Query, body_json: str, columns: list[str], prefer: Prefer
) -> tuple[sql.Composable, Params]:
    """UPDATE the rows the filters match, setting the body's columns."""
    names = sql.SQL(", ").join(sql.Identifier(table.body_column(c)) for c in columns)
    params: Params = [body_json]
    mutation = sql.SQL(
        "UPDATE {table} SET ({names}) = (SELECT {names} FROM json_populate_record(NULL::{table}, "
        "%s::json)){where} RETURNING {table}.*"
    ).format(table=table_ref(table), names=names, where=where_sql(table, query.where, params))
    return _mutation_result(table, mutation, query, prefer.representation), params


def delete(table: Table, query: Query, prefer: Prefer) -> tuple[sql.Composable, Params]:
    params: Params = []
    mutation = sql.SQL("DELETE FROM {}{} RETURNING {}.*").format(
        table_ref(table), where_sql(table, query.where, params), table_ref(table)
    )
    return _mutation_result(table, mutation, query, prefer.representation), params


def rpc(
    function: Function, args_json: str, given: set[str], query: Query
) -> tuple[sql.Composable, Params]:
    """Call ``function`` with named arguments read from a JSON object.

    ``json_to_record`` casts each argument to its parameter's type, named by the
    catalog's schema and type name, so arrays and JSON arguments arrive intact.
    """
    arguments = [a for a in function.arguments if a.name in given]
    params: Params = []
    call_args = sql.SQL(", ").join(
        sql.SQL("{0} => _pgrst_args.{0}").format(sql.Identifier(a.name)) for a in arguments
    )
    call = sql.SQL("{}({})").format(sql.Identifier(function.schema, function.name), call_args)
    if arguments:
        params.append(args_json)
        record = sql.SQL(", ").join(
            sql.SQL("{} {}").format(
                sql.Identifier(a.name), sql.Identifier(a.type_schema, a.type_name)
            )
            for a in arguments
        )
        source = sql.SQL("json_to_record(%s::json) AS _pgrst_args({}), LATERAL ").format(record)
    else:
        source = sql.SQL("")

    if function.result_columns is None:
        # A scalar is returned unwrapped and a set of scalars as an array, as PostgREST does.
        if function.returns_void:
            body = sql.SQL("NULL::text")
        elif function.returns_set:
            body = sql.SQL("coalesce(json_agg(_pgrst_rpc.value), '[]')::text")
        else:
            body = sql.SQL("min(to_jsonb(_pgrst_rpc.value)::text)")
        statement = sql.SQL(
            "SELECT {} AS body, count(*) AS row_count FROM {}{} AS _pgrst_rpc(value)"
        ).format(body, source, call)
        return statement, params

    result = function.result_table()
    inner = sql.SQL("SELECT {} FROM {}{} AS _pgrst_rpc{}{}{}").format(
        select_sql(result, query.select, "_pgrst_rpc"),
        source,
        call,
        where_sql(result, query.where, params, "_pgrst_rpc"),
        order_sql(result, query.order, "_pgrst_rpc"),
        page_sql(query, params),
    )
    return RESULT.format(inner), params
