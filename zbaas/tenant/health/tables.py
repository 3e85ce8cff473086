"""Sections read from one row per table: bloat, sequential scans, vacuum, cache, sizes.

Sizes come from ``pg_class.relpages``, which VACUUM, ANALYZE and CREATE INDEX
keep current. Reading file sizes (``pg_relation_size``) would take a lock on
every table, and that lock waits behind a migration's ACCESS EXCLUSIVE lock,
which is when a health report is needed most.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from zbaas.tenant.health import estimates
from zbaas.tenant.health.model import Context, Finding, Section, Thresholds

# Schemas that belong to PostgreSQL itself, and those zbaas manages (auth, storage,
# zbaas_meta), whose tables the project's roles do not own and cannot fix. Every
# other schema of the database is reported.
SYSTEM_SCHEMA_FILTER = """
    n.nspname NOT IN ('pg_catalog', 'information_schema', 'auth', 'storage', 'zbaas_meta')
    AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
"""

TABLES_SQL = f"""
SELECT
    format('%I.%I', n.nspname, c.relname) AS display_name,
    n.nspname::text AS schema,
    c.relname::text AS name,
    c.relpages::int8 AS pages,
    c.reltuples::float8 AS reltuples,
    c.relnatts::int AS attribute_count,
    c.reloptions::text[] AS options,
    coalesce(toast.relpages, 0)::int8 AS toast_pages,
    indexes.pages AS index_pages,
    age(c.relfrozenxid)::int8 AS xid_age,
    coalesce(s.seq_scan, 0)::int8 AS seq_scan,
    coalesce(s.idx_scan, 0)::int8 AS idx_scan,
    coalesce(s.n_live_tup, 0)::int8 AS live_rows,
    coalesce(s.n_dead_tup, 0)::int8 AS dead_rows,
    s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
    coalesce(io.heap_blks_hit, 0)::int8 AS blocks_hit,
    coalesce(io.heap_blks_read, 0)::int8 AS blocks_read,
    widths.columns, widths.columns_with_stats, widths.data_width, widths.has_nulls
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class toast ON toast.oid = c.reltoastrelid
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_statio_user_tables io ON io.relid = c.oid
CROSS JOIN LATERAL (
    SELECT coalesce(sum(i.relpages), 0)::int8 AS pages
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
    WHERE x.indrelid = c.oid
) indexes
CROSS JOIN LATERAL (
    SELECT
        count(*)::int AS columns,
        count(st.starelid)::int AS columns_with_stats,
        coalesce(sum((1 - st.stanullfrac) * st.stawidth), 0)::float8 AS data_width,
        coalesce(bool_or(st.stanullfrac > 0), false) AS has_nulls
    FROM pg_attribute a
    LEFT JOIN pg_statistic st
        ON st.starelid = a.attrelid AND st.staattnum = a.attnum AND NOT st.stainherit
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
) widths
WHERE c.relkind IN ('r', 'm') AND {SYSTEM_SCHEMA_FILTER}
"""

# Below this many block reads and hits, a cache hit ratio is not yet meaningful.
CACHE_HIT_MIN_BLOCKS = 1000


async def collect(context: Context, thresholds: Thresholds) -> dict[str, Section]:
    rows = await (await context.conn.execute(TABLES_SQL)).fetchall()
    return {
        "table_bloat": bloat_section(context, rows, thresholds),
        "missing_indexes": sequential_scan_section(rows, thresholds),
        "vacuum": vacuum_section(context, rows, thresholds),
        "cache_hit": cache_hit_section(rows, thresholds, "table"),
        "table_sizes": sizes_section(context, rows, thresholds),
    }


def bloat_section(context: Context, rows: list[dict[str, Any]], thresholds: Thresholds) -> Section:
    section = Section()
    for row in rows:
        expected = estimates.expected_heap_pages(row, context.block_size)
        estimate = estimates.bloat(row["pages"], expected, context.block_size)
        if estimate is None:
            continue
        wasted_bytes, ratio = estimate
        section.items.append(
            {
                "kind": "table",
                "name": row["display_name"],
                "table": row["display_name"],
                "bytes": row["pages"] * context.block_size,
                "wasted_bytes": wasted_bytes,
                "wasted_ratio": round(ratio, 4),
            }
        )
        if wasted_bytes >= thresholds.bloat_min_bytes and ratio >= thresholds.bloat_min_ratio:
            section.add(_table_bloat_finding(context, row, wasted_bytes, ratio))
    return section


def _table_bloat_finding(
    context: Context, row: dict[str, Any], wasted_bytes: int, ratio: float
) -> Finding:
    table = sql.Identifier(row["schema"], row["name"])
    recommendation = (
        "VACUUM makes the space of dead rows reusable. To return the space to the "
        "operating system, rewrite the table with VACUUM FULL, which holds an ACCESS "
        "EXCLUSIVE lock for its whole run, or with pg_repack."
    )
    if row["dead_rows"] > 0:
        fix = sql.SQL("VACUUM (ANALYZE) {}")
    else:
        # Already vacuumed: the free space is reusable, only a rewrite shrinks the file.
        fix = sql.SQL("VACUUM (FULL, ANALYZE) {}")
    return Finding(
        severity="warning",
        object_type="table",
        object=row["display_name"],
        message=f"table {row['display_name']} wastes an estimated {size_text(wasted_bytes)} "
        f"({ratio:.0%} of its size)",
        recommendation=recommendation,
        fix_sql=fix.format(table).as_string(context.conn),
    )


def sequential_scan_section(rows: list[dict[str, Any]], thresholds: Thresholds) -> Section:
    section = Section()
    for row in rows:
        row_count = max(row["live_rows"], int(row["reltuples"]))
        if (
            row_count < thresholds.seq_scan_min_rows
            or row["seq_scan"] < thresholds.seq_scan_min_count
            or row["seq_scan"] <= row["idx_scan"]
        ):
            continue
        section.items.append(
            {
                "kind": "sequential_scans",
                "table": row["display_name"],
                "rows": row_count,
                "seq_scan": row["seq_scan"],
                "idx_scan": row["idx_scan"],
            }
        )
        section.add(
            Finding(
                severity="warning",
                object_type="table",
                object=row["display_name"],
                message=f"table {row['display_name']} ({row_count:,} rows) was read by "
                f"{row['seq_scan']:,} sequential scans and {row['idx_scan']:,} index scans",
                recommendation="Find the frequent queries on this table (slow_queries) and "
                "index the columns of their WHERE and JOIN conditions; EXPLAIN shows the "
                "Seq Scan.",
            )
        )
    return section


def vacuum_section(context: Context, rows: list[dict[str, Any]], thresholds: Thresholds) -> Section:
    section = Section()
    ranked = sorted(rows, key=lambda r: (r["dead_rows"], r["xid_age"]), reverse=True)
    for row in ranked[: thresholds.limit]:
        section.items.append(
            {
                "table": row["display_name"],
                "live_rows": row["live_rows"],
                "dead_rows": row["dead_rows"],
                "dead_ratio": round(_dead_ratio(row), 4),
                "last_vacuum": row["last_vacuum"],
                "last_autovacuum": row["last_autovacuum"],
                "last_analyze": row["last_analyze"],
                "last_autoanalyze": row["last_autoanalyze"],
                "autovacuum_enabled": _autovacuum_enabled(row),
                "xid_age": row["xid_age"],
            }
        )
    for row in rows:
        for finding in _vacuum_findings(context, row, thresholds):
            section.add(finding)
    return section


def _dead_ratio(row: dict[str, Any]) -> float:
    total = row["live_rows"] + row["dead_rows"]
    return row["dead_rows"] / total if total else 0.0


# The spellings PostgreSQL accepts for a false boolean storage parameter.
FALSE_WORDS = {"false", "off", "no", "0", "f", "n", "of", "fa", "fal", "fals"}


def _autovacuum_enabled(row: dict[str, Any]) -> bool:
    for option in row["options"] or []:
        key, _, value = option.partition("=")
        if key == "autovacuum_enabled" and value.lower() in FALSE_WORDS:
            return False
    return True


def _vacuum_findings(
    context: Context, row: dict[str, Any], thresholds: Thresholds
) -> list[Finding]:
    table = sql.Identifier(row["schema"], row["name"])
    name = row["display_name"]
    findings = []

    if row["dead_rows"] >= thresholds.vacuum_dead_rows and _dead_ratio(row) >= (
        thresholds.vacuum_dead_ratio
    ):
        findings.append(
            Finding(
                severity="warning",
                object_type="table",
                object=name,
                message=f"table {name} has {row['dead_rows']:,} dead rows "
                f"({_dead_ratio(row):.0%} of its rows)",
                recommendation="Vacuum it now; if this recurs, lower its "
                "autovacuum_vacuum_scale_factor so autovacuum runs sooner.",
                fix_sql=sql.SQL("VACUUM (ANALYZE) {}").format(table).as_string(context.conn),
            )
        )

    if not _autovacuum_enabled(row):
        findings.append(
            Finding(
                severity="warning",
                object_type="table",
                object=name,
                message=f"autovacuum is disabled on table {name}",
                recommendation="Without autovacuum, dead rows accumulate, statistics go "
                "stale and the table is frozen only by manual VACUUM; enable it again.",
                fix_sql=sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled)")
                .format(table)
                .as_string(context.conn),
            )
        )

    never_analyzed = not any(
        row[key] for key in ("last_analyze", "last_autoanalyze", "last_vacuum", "last_autovacuum")
    )
    if never_analyzed and row["reltuples"] < 0 and row["live_rows"] > 0:
        findings.append(
            Finding(
                severity="info",
                object_type="table",
                object=name,
                message=f"table {name} has never been analyzed",
                recommendation="The planner guesses its row counts until ANALYZE runs; "
                "autovacuum analyzes it once enough rows change.",
                fix_sql=sql.SQL("ANALYZE {}").format(table).as_string(context.conn),
            )
        )

    if row["xid_age"] >= thresholds.xid_age_warning:
        critical = row["xid_age"] >= thresholds.xid_age_critical
        findings.append(
            Finding(
                severity="critical" if critical else "warning",
                object_type="table",
                object=name,
                message=f"table {name} has a transaction ID age of {row['xid_age']:,}, "
                f"{row['xid_age'] / 2**31:.0%} of the way to wraparound",
                recommendation="Freeze it with VACUUM before PostgreSQL has to stop "
                "accepting writes; check that autovacuum can finish on it.",
                fix_sql=sql.SQL("VACUUM (FREEZE, ANALYZE) {}")
                .format(table)
                .as_string(context.conn),
            )
        )
    return findings


def cache_hit_section(rows: list[dict[str, Any]], thresholds: Thresholds, kind: str) -> Section:
    """Build the cache hit ratio of tables or of indexes from per-relation block counts."""
    hits = sum(row["blocks_hit"] for row in rows)
    reads = sum(row["blocks_read"] for row in rows)
    ratio = hits / (hits + reads) if hits + reads else None
    section = Section(
        summary={
            f"{kind}_hit_ratio": None if ratio is None else round(ratio, 4),
            f"{kind}_blocks_hit": hits,
            f"{kind}_blocks_read": reads,
        },
    )
    worst = sorted(rows, key=lambda r: r["blocks_read"], reverse=True)
    for row in worst[: thresholds.limit]:
        if row["blocks_read"] == 0:
            break
        total = row["blocks_hit"] + row["blocks_read"]
        section.items.append(
            {
                "kind": kind,
                "name": row["display_name"],
                "blocks_hit": row["blocks_hit"],
                "blocks_read": row["blocks_read"],
                "hit_ratio": round(row["blocks_hit"] / total, 4),
            }
        )

    if (
        ratio is not None
        and hits + reads >= CACHE_HIT_MIN_BLOCKS
        and (ratio < thresholds.cache_hit_min_ratio)
    ):
        section.add(
            Finding(
                severity="warning",
                object_type="database",
                object=f"{kind}s",
                message=f"{ratio:.1%} of {kind} block reads were served from shared buffers, "
                f"below {thresholds.cache_hit_min_ratio:.1%}",
                recommendation="The working set does not fit in memory: give the server more "
                "shared_buffers or memory, or read less (indexes, fewer columns, archiving "
                "old rows).",
            )
        )
    return section


def sizes_section(context: Context, rows: list[dict[str, Any]], thresholds: Thresholds) -> Section:
    block = context.block_size
    sized = [
        {
            "table": row["display_name"],
            "rows": max(0, int(row["reltuples"])),
            "table_bytes": row["pages"] * block,
            "index_bytes": row["index_pages"] * block,
            "toast_bytes": row["toast_pages"] * block,
            "total_bytes": (row["pages"] + row["index_pages"] + row["toast_pages"]) * block,
        }
        for row in rows
    ]
    sized.sort(key=lambda item: item["total_bytes"], reverse=True)
    return Section(
        message="Sizes as of each relation's last VACUUM, ANALYZE or CREATE INDEX "
        "(pg_class.relpages).",
        summary={
            "tables": len(sized),
            "total_bytes": sum(item["total_bytes"] for item in sized),
        },
        items=sized[: thresholds.limit],
    )


def size_text(size: int) -> str:
    """Format a byte count the way pg_size_pretty does, with one decimal."""
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    for unit in ("kB", "MB", "GB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
