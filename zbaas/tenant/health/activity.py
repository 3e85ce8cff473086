"""Sessions of this database: the report's context, connections and long-running work.

Every server-wide view (``pg_stat_activity``, ``pg_locks``) is filtered to the
current database, so a report never shows another project's sessions.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from zbaas.tenant.health.model import Context, Finding, Section, Thresholds

# One statement returns the database's facts, its sessions and its lock waits as JSON,
# all read from the same statistics snapshot.
ACTIVITY_SQL = """
WITH here AS (
    SELECT a.* FROM pg_stat_activity a WHERE a.datname = current_database()
)
SELECT
    d.datname::text AS database,
    d.oid::int8 AS database_oid,
    current_setting('server_version') AS server_version,
    current_setting('block_size')::int AS block_size,
    current_setting('max_connections')::int AS max_connections,
    current_setting('superuser_reserved_connections')::int AS reserved_connections,
    current_setting('shared_preload_libraries') AS preload_libraries,
    d.datconnlimit AS database_connection_limit,
    age(d.datfrozenxid)::int8 AS xid_age,
    now() AS now,
    (SELECT n.nspname::text
       FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname = 'pg_stat_statements') AS statements_schema,
    (SELECT s.stats_reset FROM pg_stat_database s WHERE s.datid = d.oid) AS stats_reset,
    coalesce((
        SELECT json_agg(json_build_object(
            'pid', a.pid,
            'role', a.usename,
            'application_name', a.application_name,
            'backend_type', a.backend_type,
            'state', coalesce(a.state, 'unknown'),
            'transaction_seconds', extract(epoch FROM now() - a.xact_start)::float8,
            'query_seconds', extract(epoch FROM now() - a.query_start)::float8,
            'wait_event_type', a.wait_event_type,
            'wait_event', a.wait_event,
            'query', left(a.query, 1000),
            'is_report', a.pid = pg_backend_pid()
        ) ORDER BY a.pid)
        FROM here a
    ), '[]') AS sessions,
    coalesce((
        SELECT json_agg(json_build_object(
            'pid', a.pid,
            'role', a.usename,
            'wait_seconds', coalesce(extract(epoch FROM now() - l.waitstart)::float8, 0),
            'lock_type', l.locktype,
            'mode', l.mode,
            'relation', (
                SELECT format('%I.%I', n.nspname, c.relname)
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = l.relation AND l.database IN (d.oid, 0)
            ),
            'blocking_pids', (
                SELECT coalesce(json_agg(b.pid ORDER BY b.pid), '[]')
                  FROM unnest(blocking.pids) b(pid) WHERE b.pid IN (SELECT pid FROM here)
            ),
            'blocked_by_other_databases', (
                SELECT count(*)
                  FROM unnest(blocking.pids) b(pid) WHERE b.pid NOT IN (SELECT pid FROM here)
            ),
            'query', left(a.query, 1000)
        ) ORDER BY l.waitstart)
        FROM here a
        JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
        CROSS JOIN LATERAL (SELECT pg_blocking_pids(a.pid) AS pids) blocking
    ), '[]') AS lock_waits
FROM pg_database d
WHERE d.datname = current_database()
"""


async def collect(
    conn: psycopg.AsyncConnection[Any], thresholds: Thresholds
) -> tuple[Context, dict[str, Section], list[Finding]]:
    """Read the database's facts and sessions.

    Returns the context, the connections and long_running sections, and the
    database-wide vacuum findings.
    """
    row = await (await conn.execute(ACTIVITY_SQL)).fetchone()
    assert row is not None  # the current database is always in pg_database
    context = Context(
        database=row["database"],
        database_oid=row["database_oid"],
        server_version=row["server_version"],
        block_size=row["block_size"],
        now=row["now"],
        stats_reset=row["stats_reset"],
        xid_age=row["xid_age"],
        preload_libraries=[
            name.strip() for name in row["preload_libraries"].split(",") if name.strip()
        ],
        statements_schema=row["statements_schema"],
        conn=conn,
    )
    sections = {
        "connections": connections_section(row, thresholds),
        "long_running": long_running_section(context, row, thresholds),
    }
    return context, sections, database_xid_findings(context, thresholds)


def connections_section(row: dict[str, Any], thresholds: Thresholds) -> Section:
    clients = [s for s in row["sessions"] if s["backend_type"] == "client backend"]
    groups: dict[tuple[str, str], int] = {}
    for session in clients:
        key = (session["state"], session["role"] or "")
        groups[key] = groups.get(key, 0) + 1

    # Superuser-reserved slots are out of reach of the project's roles.
    usable = row["max_connections"] - row["reserved_connections"]
    limit = usable
    if row["database_connection_limit"] >= 0:
        limit = min(limit, row["database_connection_limit"])
    ratio = len(clients) / limit if limit > 0 else 1.0
    section = Section(
        message="Counts connections to this database only; other databases on the same "
        "server share max_connections.",
        summary={
            "total": len(clients),
            "max_connections": row["max_connections"],
            "reserved_connections": row["reserved_connections"],
            "database_connection_limit": row["database_connection_limit"],
            "limit": limit,
            "usage_ratio": round(ratio, 4),
        },
        items=[
            {"state": state, "role": role, "count": count}
            for (state, role), count in sorted(groups.items(), key=lambda item: -item[1])
        ],
    )

    if ratio >= thresholds.connections_warning_ratio:
        critical = ratio >= thresholds.connections_critical_ratio
        section.add(
            Finding(
                severity="critical" if critical else "warning",
                object_type="database",
                object=row["database"],
                message=f"database {row['database']} has {len(clients)} connections, "
                f"{ratio:.0%} of the limit of {limit}",
                recommendation="Put a connection pooler in front of the application or "
                "lower its pool sizes; close idle connections.",
            )
        )
    return section


def long_running_section(context: Context, row: dict[str, Any], thresholds: Thresholds) -> Section:
    section = Section(
        message=f"Queries over {thresholds.long_query_seconds:g} s, transactions over "
        f"{thresholds.long_transaction_seconds:g} s and lock waits over "
        f"{thresholds.lock_wait_seconds:g} s in this database."
    )
    for session in row["sessions"]:
        if session["is_report"] or session["backend_type"] != "client backend":
            continue
        _check_session(context, section, session, thresholds)

    for wait in row["lock_waits"]:
        if wait["wait_seconds"] < thresholds.lock_wait_seconds:
            continue
        _add_lock_wait(context, section, wait)
    return section


# Server functions that end a session's query or the session itself, by pid.
SESSION_CALLS = {
    "cancel": sql.SQL("SELECT pg_cancel_backend({})"),
    "terminate": sql.SQL("SELECT pg_terminate_backend({})"),
}


def _pid_call(context: Context, action: str, pids: list[int]) -> str:
    statements = (SESSION_CALLS[action].format(sql.Literal(pid)) for pid in pids)
    return "; ".join(statement.as_string(context.conn) for statement in statements)


def _check_session(
    context: Context, section: Section, session: dict[str, Any], thresholds: Thresholds
) -> None:
    pid, role, state = session["pid"], session["role"], session["state"]
    query_seconds = session["query_seconds"] or 0.0
    transaction_seconds = session["transaction_seconds"] or 0.0

    if state == "active" and query_seconds >= thresholds.long_query_seconds:
        section.items.append(
            {
                "kind": "query",
                "pid": pid,
                "role": role,
                "state": state,
                "seconds": round(query_seconds, 3),
                "query": session["query"],
            }
        )
        section.add(
            Finding(
                severity="warning",
                object_type="session",
                object=f"pid {pid}",
                message=f"session {pid} (role {role}) has run one query for {query_seconds:.0f} s",
                recommendation="Check its plan with EXPLAIN; cancel it if it is not expected "
                "to take this long.",
                fix_sql=_pid_call(context, "cancel", [pid]),
            )
        )
    elif transaction_seconds >= thresholds.long_transaction_seconds:
        section.items.append(
            {
                "kind": "transaction",
                "pid": pid,
                "role": role,
                "state": state,
                "seconds": round(transaction_seconds, 3),
                "query": session["query"],
            }
        )
        section.add(
            Finding(
                severity="warning",
                object_type="session",
                object=f"pid {pid}",
                message=f"session {pid} (role {role}) has held a transaction open for "
                f"{transaction_seconds:.0f} s ({state})",
                recommendation="An open transaction holds its locks and keeps VACUUM from "
                "removing dead rows; commit or roll back sooner. Ending the session rolls "
                "its transaction back.",
                fix_sql=_pid_call(context, "terminate", [pid]),
            )
        )


def _add_lock_wait(context: Context, section: Section, wait: dict[str, Any]) -> None:
    pid, blockers = wait["pid"], wait["blocking_pids"]
    target = wait["relation"] or f"a {wait['lock_type']} lock"
    section.items.append(
        {
            "kind": "lock_wait",
            "pid": pid,
            "role": wait["role"],
            "seconds": round(wait["wait_seconds"], 3),
            "mode": wait["mode"],
            "lock_type": wait["lock_type"],
            "relation": wait["relation"],
            "blocking_pids": blockers,
            "blocked_by_other_databases": wait["blocked_by_other_databases"],
            "query": wait["query"],
        }
    )
    blocked_by = ", ".join(str(b) for b in blockers) or "sessions of other databases"
    section.add(
        Finding(
            severity="warning",
            object_type="session",
            object=f"pid {pid}",
            message=f"session {pid} has waited {wait['wait_seconds']:.0f} s for "
            f"{wait['mode']} on {target}, blocked by {blocked_by}",
            recommendation="Find why the blocking session holds its lock (often an idle "
            "transaction or a migration); end it if it must not wait any longer.",
            fix_sql=_pid_call(context, "terminate", blockers) or None,
        )
    )


def database_xid_findings(context: Context, thresholds: Thresholds) -> list[Finding]:
    xid_age = context.xid_age
    if xid_age < thresholds.xid_age_warning:
        return []
    critical = xid_age >= thresholds.xid_age_critical
    return [
        Finding(
            severity="critical" if critical else "warning",
            object_type="database",
            object=context.database,
            message=f"database {context.database} has a transaction ID age of {xid_age:,}, "
            f"{xid_age / 2**31:.0%} of the way to wraparound",
            recommendation="Freeze its oldest tables (listed in this section) with VACUUM; "
            "look for long transactions and abandoned replication slots that hold it back.",
            fix_sql="VACUUM (FREEZE, ANALYZE)",
        )
    ]
