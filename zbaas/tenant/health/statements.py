"""The slow_queries section, from ``pg_stat_statements`` filtered to this database.

The report does not create the extension. A GET changes nothing in the project
database, and the extension is not one the project's roles could have created
themselves: only a superuser may, so a backup restored by the owner role would
fail on it. Where it is created also matters, because its view returns the
counters of every database on the server to every role that may select from it. The
message therefore gives an operator the statements that enable it in a schema
that the project's roles cannot use.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from zbaas.tenant.health.model import Context, Finding, Section, Thresholds

EXTENSION = "pg_stat_statements"
PRIVATE_SCHEMA = "zbaas_stats"

# Statements of the role that the report runs as are the control plane's own work
# (provisioning, this report), not the project's, so they are left out.
STATEMENTS_SQL = """
SELECT queryid, role, calls, total_ms, mean_ms, max_ms, rows, query, total_rank, mean_rank
FROM (
    SELECT
        s.queryid,
        r.rolname::text AS role,
        s.calls,
        s.total_exec_time::float8 AS total_ms,
        s.mean_exec_time::float8 AS mean_ms,
        s.max_exec_time::float8 AS max_ms,
        s.rows,
        left(s.query, 1000) AS query,
        rank() OVER (ORDER BY s.total_exec_time DESC) AS total_rank,
        rank() OVER (ORDER BY s.mean_exec_time DESC) AS mean_rank
    FROM {view} s
    LEFT JOIN pg_roles r ON r.oid = s.userid
    WHERE s.dbid = %(database_oid)s AND s.userid <> current_user::regrole
) ranked
WHERE total_rank <= %(limit)s OR mean_rank <= %(limit)s
ORDER BY total_rank, mean_rank
"""


def enable_sql(context: Context) -> str:
    return (
        sql.SQL(
            "CREATE SCHEMA IF NOT EXISTS {schema}; CREATE EXTENSION IF NOT EXISTS {extension} "
            "SCHEMA {schema}"
        )
        .format(schema=sql.Identifier(PRIVATE_SCHEMA), extension=sql.Identifier(EXTENSION))
        .as_string(context.conn)
    )


def unavailable_section(context: Context) -> Section | None:
    """Say why statement statistics cannot be read and how to enable them, if so."""
    statements = enable_sql(context)
    if EXTENSION not in context.preload_libraries:
        return Section(
            status="ok",
            available=False,
            message=f"{EXTENSION} is not loaded on this server. To enable it, add "
            f"{EXTENSION} to shared_preload_libraries in postgresql.conf, restart "
            f"PostgreSQL, then have a superuser run in database {context.database}: "
            f"{statements}",
            summary={"enable_sql": statements},
        )
    if context.statements_schema is None:
        return Section(
            status="ok",
            available=False,
            message=f"{EXTENSION} is loaded on this server but not created in database "
            f"{context.database}. To enable it, enable the extension {EXTENSION} of the "
            f"project (POST .../database/extensions/{EXTENSION}/enable, or "
            f"zbaas extensions enable {EXTENSION}), or have a superuser run there: {statements}",
            summary={"enable_sql": statements},
        )
    return None


async def collect(context: Context, thresholds: Thresholds) -> Section:
    unavailable = unavailable_section(context)
    if unavailable is not None:
        return unavailable

    assert context.statements_schema is not None
    query = sql.SQL(STATEMENTS_SQL).format(
        view=sql.Identifier(context.statements_schema, EXTENSION)
    )
    params = {"database_oid": context.database_oid, "limit": thresholds.limit}
    try:
        # A savepoint, so that a failure here leaves the other sections' transaction usable.
        async with context.conn.transaction():
            rows = await (await context.conn.execute(query, params)).fetchall()
    except psycopg.errors.UndefinedColumn:
        # Versions before 1.8 (PostgreSQL 12 and older) name the columns total_time etc.
        return Section(
            available=False,
            message=f"{EXTENSION} in database {context.database} is at a version older than "
            f"1.8, without total_exec_time. To update it, have a superuser run there: "
            f"ALTER EXTENSION {EXTENSION} UPDATE",
        )

    section = Section(
        message=f"Statements of this database by total and mean execution time, "
        f"ranked among those of the project's roles; slow above "
        f"{thresholds.slow_query_mean_ms:g} ms on average."
    )
    for row in rows:
        section.items.append(dict(row))
        if row["mean_ms"] >= thresholds.slow_query_mean_ms:
            section.add(_finding(row))
    return section


def _finding(row: dict[str, Any]) -> Finding:
    text = " ".join(row["query"].split())
    if len(text) > 120:
        text = text[:117] + "..."
    return Finding(
        severity="warning",
        object_type="statement",
        object=f"queryid {row['queryid']}",
        message=f"statement {row['queryid']} (role {row['role']}) takes "
        f"{row['mean_ms']:.0f} ms on average over {row['calls']:,} calls: {text}",
        recommendation="Run it with EXPLAIN (ANALYZE, BUFFERS) to see where the time goes; "
        "an index on its filter or join columns, or fewer rows fetched, usually helps.",
    )
