"""Sections read from one row per index and per foreign key.

Index bloat, unindexed foreign keys, unused, duplicate and invalid indexes, and
the index cache hit ratio.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from psycopg import sql

from zbaas.tenant.health import estimates
from zbaas.tenant.health.model import Context, Finding, Section, Thresholds
from zbaas.tenant.health.tables import SYSTEM_SCHEMA_FILTER, cache_hit_section, size_text

# The per-column widths and names are aggregated in one pass over every index key,
# and the statistics are read with the functions behind pg_stat_user_indexes: on
# 1,500 indexes, per-index subqueries and the views cost several times more.
INDEXES_SQL = f"""
WITH building AS (
    SELECT index_relid FROM pg_stat_progress_create_index WHERE datname = current_database()
),
index_keys AS (
    SELECT x.indexrelid, x.indrelid, k.attnum, k.position
    FROM pg_index x
    CROSS JOIN LATERAL unnest(string_to_array(x.indkey::text, ' ')::int2[])
        WITH ORDINALITY AS k(attnum, position)
),
-- A plain column's width is measured on the table, an expression's on the index.
widths AS (
    SELECT
        k.indexrelid,
        count(*)::int AS columns,
        count(st.starelid)::int AS columns_with_stats,
        coalesce(sum((1 - st.stanullfrac) * st.stawidth), 0)::float8 AS data_width,
        coalesce(bool_or(st.stanullfrac > 0), false) AS has_nulls,
        array_agg(
            CASE WHEN k.attnum = 0 THEN '(expression)' ELSE quote_ident(a.attname) END
            ORDER BY k.position
        ) AS column_names
    FROM index_keys k
    LEFT JOIN pg_attribute a ON a.attrelid = k.indrelid AND a.attnum = k.attnum
    LEFT JOIN pg_statistic st
        ON NOT st.stainherit
        AND st.starelid = CASE WHEN k.attnum = 0 THEN k.indexrelid ELSE k.indrelid END
        AND st.staattnum = CASE WHEN k.attnum = 0 THEN k.position::int2 ELSE k.attnum END
    GROUP BY k.indexrelid
)
SELECT
    format('%I.%I', n.nspname, i.relname) AS display_name,
    format('%I.%I', n.nspname, t.relname) AS table_display_name,
    n.nspname::text AS schema,
    i.relname::text AS name,
    x.indexrelid::int8 AS oid,
    x.indrelid::int8 AS table_oid,
    am.amname::text AS method,
    i.relpages::int8 AS pages,
    i.reltuples::float8 AS reltuples,
    i.reloptions::text[] AS options,
    x.indisunique AS is_unique,
    x.indisvalid AS is_valid,
    x.indnkeyatts::int AS key_count,
    string_to_array(x.indkey::text, ' ')::int2[] AS attnums,
    x.indclass::text AS opclasses,
    x.indcollation::text AS collations,
    x.indoption::text AS sort_options,
    x.indexprs::text AS expressions,
    x.indpred::text AS predicate,
    con.conname::text AS constraint_name,
    pg_stat_get_numscans(x.indexrelid) AS scans,
    pg_stat_get_blocks_hit(x.indexrelid) AS blocks_hit,
    pg_stat_get_blocks_fetched(x.indexrelid) - pg_stat_get_blocks_hit(x.indexrelid)
        AS blocks_read,
    b.index_relid IS NOT NULL AS being_built,
    w.column_names, w.columns, w.columns_with_stats, w.data_width, w.has_nulls
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
JOIN widths w ON w.indexrelid = x.indexrelid
LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.contype IN ('p', 'u', 'x')
LEFT JOIN (SELECT DISTINCT index_relid FROM building) b ON b.index_relid = x.indexrelid
WHERE t.relkind IN ('r', 'm') AND {SYSTEM_SCHEMA_FILTER}
ORDER BY x.indexrelid
"""

FOREIGN_KEYS_SQL = f"""
SELECT
    format('%I.%I', n.nspname, c.relname) AS table_display_name,
    format('%I', con.conname) AS display_name,
    n.nspname::text AS schema,
    c.relname::text AS table_name,
    con.conrelid::int8 AS table_oid,
    con.conkey AS attnums,
    ARRAY(
        SELECT a.attname::text
        FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, position)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
        ORDER BY k.position
    ) AS column_names,
    format('%I.%I', rn.nspname, r.relname) AS referenced_table,
    greatest(c.reltuples, 0)::float8 AS rows
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = con.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE con.contype = 'f' AND c.relkind = 'r' AND {SYSTEM_SCHEMA_FILTER}
ORDER BY 1, 2
"""

# Stored expression trees carry the character offset of each node in the statement
# that created them, so two identical expressions written differently differ only there.
LOCATION_PATTERN = re.compile(r":location -?\d+")


def definition(index: dict[str, Any]) -> str:
    """Describe an index from the catalog alone.

    pg_get_indexdef and pg_get_expr would be exact, but on PostgreSQL 15 and 18 they
    lock the table and so wait behind a migration's ACCESS EXCLUSIVE lock.
    """
    keys = index["column_names"][: index["key_count"]]
    included = index["column_names"][index["key_count"] :]
    text = f"{'UNIQUE ' if index['is_unique'] else ''}{index['method']} ({', '.join(keys)})"
    if included:
        text += f" INCLUDE ({', '.join(included)})"
    if index["predicate"] is not None:
        text += " WHERE (partial)"
    return text


async def collect(context: Context, thresholds: Thresholds) -> dict[str, Section]:
    indexes = await (await context.conn.execute(INDEXES_SQL)).fetchall()
    foreign_keys = await (await context.conn.execute(FOREIGN_KEYS_SQL)).fetchall()
    by_table: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for index in indexes:
        by_table[index["table_oid"]].append(index)

    missing, fk_indexes = foreign_key_section(context, foreign_keys, by_table)
    return {
        "table_bloat": bloat_section(context, indexes, thresholds),
        "missing_indexes": missing,
        "unused_indexes": unused_section(context, indexes, fk_indexes, thresholds),
        "duplicate_indexes": duplicate_section(context, by_table),
        "invalid_indexes": invalid_section(context, indexes),
        "cache_hit": cache_hit_section(indexes, thresholds, "index"),
    }


def _drop_sql(context: Context, index: dict[str, Any]) -> str:
    statement = sql.SQL("DROP INDEX CONCURRENTLY {}").format(
        sql.Identifier(index["schema"], index["name"])
    )
    return statement.as_string(context.conn)


def bloat_section(
    context: Context, indexes: list[dict[str, Any]], thresholds: Thresholds
) -> Section:
    section = Section()
    for index in indexes:
        expected = estimates.expected_btree_pages(index, context.block_size)
        estimate = estimates.bloat(index["pages"], expected, context.block_size)
        if estimate is None or not index["is_valid"]:
            continue
        wasted_bytes, ratio = estimate
        section.items.append(
            {
                "kind": "index",
                "name": index["display_name"],
                "table": index["table_display_name"],
                "bytes": index["pages"] * context.block_size,
                "wasted_bytes": wasted_bytes,
                "wasted_ratio": round(ratio, 4),
            }
        )
        if wasted_bytes < thresholds.bloat_min_bytes or ratio < thresholds.bloat_min_ratio:
            continue
        statement = sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(
            sql.Identifier(index["schema"], index["name"])
        )
        section.add(
            Finding(
                severity="warning",
                object_type="index",
                object=index["display_name"],
                message=f"index {index['display_name']} wastes an estimated "
                f"{size_text(wasted_bytes)} ({ratio:.0%} of its size)",
                recommendation="Rebuild it; REINDEX CONCURRENTLY builds a new copy beside "
                "the old one without blocking writes.",
                fix_sql=statement.as_string(context.conn),
            )
        )
    return section


def _covers(index: dict[str, Any], attnums: list[int]) -> bool:
    """Return whether the index's leading key columns are the given ones, in any order."""
    leading = index["attnums"][: len(attnums)]
    return (
        index["is_valid"]
        and index["predicate"] is None
        and len(attnums) <= index["key_count"]
        and sorted(leading) == sorted(attnums)
    )


def foreign_key_section(
    context: Context,
    foreign_keys: list[dict[str, Any]],
    by_table: dict[int, list[dict[str, Any]]],
) -> tuple[Section, set[int]]:
    """Report foreign keys without an index on their columns.

    Also returns the oids of indexes that serve a foreign key, which are kept out of
    the unused indexes: they serve the checks of deletes and updates on the
    referenced table.
    """
    section = Section()
    serving: set[int] = set()
    for key in foreign_keys:
        covering = [i for i in by_table.get(key["table_oid"], []) if _covers(i, key["attnums"])]
        serving.update(i["oid"] for i in covering)
        if covering:
            continue

        columns = ", ".join(key["column_names"])
        section.items.append(
            {
                "kind": "foreign_key",
                "table": key["table_display_name"],
                "constraint": key["display_name"],
                "columns": key["column_names"],
                "referenced_table": key["referenced_table"],
                "rows": int(key["rows"]),
            }
        )
        statement = sql.SQL("CREATE INDEX CONCURRENTLY ON {} ({})").format(
            sql.Identifier(key["schema"], key["table_name"]),
            sql.SQL(", ").join(sql.Identifier(name) for name in key["column_names"]),
        )
        section.add(
            Finding(
                severity="warning",
                object_type="foreign_key",
                object=f"{key['display_name']} on {key['table_display_name']}",
                message=f"foreign key {key['display_name']} on {key['table_display_name']} "
                f"({columns}) has no index on its columns",
                recommendation=f"Index the column(s); without an index every delete or key "
                f"update on {key['referenced_table']} scans {key['table_display_name']}, and "
                "joins on the key cannot use an index. CREATE INDEX CONCURRENTLY must run "
                "outside a transaction block.",
                fix_sql=statement.as_string(context.conn),
            )
        )
    return section, serving


def unused_section(
    context: Context,
    indexes: list[dict[str, Any]],
    fk_indexes: set[int],
    thresholds: Thresholds,
) -> Section:
    since = (
        f"since statistics were reset at {context.stats_reset:%Y-%m-%d %H:%M %Z}"
        if context.stats_reset
        else "since statistics collection began"
    )
    section = Section(message=f"Index scans counted {since}.")
    for index in indexes:
        if (
            index["scans"] > thresholds.unused_index_max_scans
            or index["is_unique"]
            or index["constraint_name"] is not None
            or not index["is_valid"]
            or index["oid"] in fk_indexes
        ):
            continue
        section.items.append(
            {
                "index": index["display_name"],
                "table": index["table_display_name"],
                "scans": index["scans"],
                "bytes": index["pages"] * context.block_size,
                "definition": definition(index),
            }
        )
        section.add(
            Finding(
                severity="info",
                object_type="index",
                object=index["display_name"],
                message=f"index {index['display_name']} on {index['table_display_name']} was "
                f"scanned {index['scans']:,} times {since}",
                recommendation="Every write still updates it. Drop it once the statistics "
                "cover a full cycle of the workload (including reports and batch jobs) and "
                "no replica uses it.",
                fix_sql=_drop_sql(context, index),
            )
        )
    return section


def _signature(index: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two indexes interchangeable: method, columns, operator classes, predicate."""
    return (
        index["method"],
        tuple(index["attnums"]),
        index["key_count"],
        index["opclasses"],
        index["collations"],
        index["sort_options"],
        LOCATION_PATTERN.sub("", index["expressions"] or ""),
        LOCATION_PATTERN.sub("", index["predicate"] or ""),
    )


def _keep_order(index: dict[str, Any]) -> tuple[bool, bool, int]:
    """Sort key that puts first the copy to keep: backs a constraint, unique, oldest."""
    return (index["constraint_name"] is None, not index["is_unique"], index["oid"])


def _per_column(text: str, count: int) -> list[str]:
    return text.split(" ")[:count]


def _is_prefix(short: dict[str, Any], long: dict[str, Any]) -> bool:
    """Return whether B-tree ``long`` serves every lookup of ``short``: same leading columns."""
    count = short["key_count"]
    return (
        short["method"] == long["method"] == "btree"
        and not short["is_unique"]
        and short["key_count"] == len(short["attnums"])
        and count < long["key_count"]
        and not short["expressions"]
        and not long["expressions"]
        and short["predicate"] is None
        and long["predicate"] is None
        and short["attnums"] == long["attnums"][:count]
        and all(
            _per_column(short[field], count) == _per_column(long[field], count)
            for field in ("opclasses", "collations", "sort_options")
        )
    )


def duplicate_section(context: Context, by_table: dict[int, list[dict[str, Any]]]) -> Section:
    section = Section()
    for table_indexes in by_table.values():
        valid = [i for i in table_indexes if i["is_valid"]]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
        for index in valid:
            groups[_signature(index)].append(index)

        reported: set[int] = set()
        for group in groups.values():
            keep, *copies = sorted(group, key=_keep_order)
            for copy in copies:
                reported.add(copy["oid"])
                _add_duplicate(context, section, copy, keep, "duplicates")

        for short in valid:
            if short["oid"] in reported:
                continue
            longer = [i for i in valid if i["oid"] not in reported and _is_prefix(short, i)]
            if longer:
                reported.add(short["oid"])
                _add_duplicate(context, section, short, longer[0], "is covered by")
    return section


def _add_duplicate(
    context: Context,
    section: Section,
    redundant: dict[str, Any],
    kept: dict[str, Any],
    relation: str,
) -> None:
    section.items.append(
        {
            "index": redundant["display_name"],
            "table": redundant["table_display_name"],
            "relation": relation.replace(" ", "_"),
            "kept_index": kept["display_name"],
            "bytes": redundant["pages"] * context.block_size,
            "definition": definition(redundant),
            "kept_definition": definition(kept),
        }
    )
    if redundant["constraint_name"] is not None:
        recommendation = (
            f"It backs constraint {redundant['constraint_name']}; drop the redundant "
            "constraint (after moving any foreign key that references it) to remove it."
        )
        fix = None
    else:
        recommendation = f"Drop it; {kept['display_name']} serves the same lookups."
        fix = _drop_sql(context, redundant)
    section.add(
        Finding(
            severity="warning",
            object_type="index",
            object=redundant["display_name"],
            message=f"index {redundant['display_name']} {relation} {kept['display_name']} "
            f"on {redundant['table_display_name']}",
            recommendation=recommendation,
            fix_sql=fix,
        )
    )


def invalid_section(context: Context, indexes: list[dict[str, Any]]) -> Section:
    section = Section()
    for index in indexes:
        if index["is_valid"]:
            continue
        section.items.append(
            {
                "index": index["display_name"],
                "table": index["table_display_name"],
                "being_built": index["being_built"],
                "definition": definition(index),
            }
        )
        if index["being_built"]:
            continue  # CREATE INDEX CONCURRENTLY in progress: invalid until it ends
        section.add(
            Finding(
                severity="warning",
                object_type="index",
                object=index["display_name"],
                message=f"index {index['display_name']} on {index['table_display_name']} "
                "is invalid",
                recommendation="A failed CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY "
                "left it: every write updates it but no query uses it. Drop it, fix the "
                "cause (for a unique index, the duplicate values), then create it again.",
                fix_sql=_drop_sql(context, index),
            )
        )
    return section
