"""The sequences section: sequences close to the last value they or their column can hold."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from zbaas.tenant.health.model import Context, Finding, Section, Severity, Thresholds
from zbaas.tenant.health.tables import SYSTEM_SCHEMA_FILTER

# The column a sequence fills (serial or identity) can be narrower than the sequence.
SEQUENCES_SQL = f"""
SELECT
    format('%I.%I', n.nspname, c.relname) AS display_name,
    n.nspname::text AS schema,
    c.relname::text AS name,
    format_type(q.seqtypid, NULL) AS data_type,
    q.seqmin AS min_value,
    q.seqmax AS max_value,
    q.seqincrement AS increment_by,
    q.seqcycle AS cycle,
    pg_sequence_last_value(c.oid) AS last_value,
    owner.table_display_name,
    owner.table_schema,
    owner.table_name,
    owner.column_name,
    owner.column_type
FROM pg_sequence q
JOIN pg_class c ON c.oid = q.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT
        format('%I.%I', tn.nspname, t.relname) AS table_display_name,
        tn.nspname::text AS table_schema,
        t.relname::text AS table_name,
        a.attname::text AS column_name,
        format_type(a.atttypid, NULL) AS column_type
    FROM pg_depend d
    JOIN pg_class t ON t.oid = d.refobjid
    JOIN pg_namespace tn ON tn.oid = t.relnamespace
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.classid = 'pg_class'::regclass
      AND d.objid = c.oid
      AND d.refclassid = 'pg_class'::regclass
      AND d.deptype IN ('a', 'i')
    LIMIT 1
) owner ON true
WHERE {SYSTEM_SCHEMA_FILTER}
ORDER BY 1
"""

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


async def collect(context: Context, thresholds: Thresholds) -> Section:
    rows = await (await context.conn.execute(SEQUENCES_SQL)).fetchall()
    section = Section()
    measured = []
    for row in rows:
        usage = _usage(row)
        if usage is not None:
            measured.append((usage, row))
    measured.sort(key=lambda pair: pair[0][2], reverse=True)

    for (low, high, ratio), row in measured[: thresholds.limit]:
        section.items.append(
            {
                "sequence": row["display_name"],
                "column": _column_name(row),
                "data_type": row["data_type"],
                "column_type": row["column_type"],
                "last_value": row["last_value"],
                "limit": high if row["increment_by"] > 0 else low,
                "used_ratio": round(ratio, 6),
            }
        )
    for (low, high, ratio), row in measured:
        if ratio >= thresholds.sequence_warning_ratio:
            critical = ratio >= thresholds.sequence_critical_ratio
            section.add(
                _finding(
                    context,
                    row,
                    high if row["increment_by"] > 0 else low,
                    ratio,
                    "critical" if critical else "warning",
                )
            )
    return section


def _column_name(row: dict[str, Any]) -> str | None:
    if row["column_name"] is None:
        return None
    return f"{row['table_display_name']}.{row['column_name']}"


def _usage(row: dict[str, Any]) -> tuple[int, int, float] | None:
    """Return the usable range and the share of it used, or None if nothing to measure.

    A cycling sequence starts over instead of failing, and one never called has no
    last value.
    """
    if row["cycle"] or row["last_value"] is None:
        return None
    low, high = row["min_value"], row["max_value"]
    column_range = INTEGER_RANGES.get(row["column_type"] or "")
    if column_range is not None:
        low, high = max(low, column_range[0]), min(high, column_range[1])
    if high <= low:
        return None
    ascending = row["increment_by"] > 0
    used = row["last_value"] - low if ascending else high - row["last_value"]
    return low, high, max(0.0, used / (high - low))


def _fix_sql(context: Context, row: dict[str, Any]) -> str | None:
    """Widen whatever sets the limit to bigint: the column, the sequence, or its MAXVALUE.

    NOTE: only ascending sequences get a fix; a descending one near its minimum
    gets the recommendation alone.
    """
    if row["increment_by"] < 0:
        return None
    sequence = sql.Identifier(row["schema"], row["name"])
    statements = []
    if row["column_type"] in ("smallint", "integer"):
        statements.append(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE bigint").format(
                sql.Identifier(row["table_schema"], row["table_name"]),
                sql.Identifier(row["column_name"]),
            )
        )
    if row["data_type"] in ("smallint", "integer"):
        statements.append(sql.SQL("ALTER SEQUENCE {} AS bigint").format(sequence))
    elif row["max_value"] < INTEGER_RANGES["bigint"][1]:
        statements.append(sql.SQL("ALTER SEQUENCE {} NO MAXVALUE").format(sequence))
    if not statements:
        return None
    return "; ".join(statement.as_string(context.conn) for statement in statements)


def _finding(
    context: Context, row: dict[str, Any], limit: int, ratio: float, severity: Severity
) -> Finding:
    column = _column_name(row)
    target = f" for {column} ({row['column_type']})" if column else ""
    recommendation = (
        "When it reaches the limit every insert that draws from it fails. Widen it to "
        "bigint before then."
    )
    if row["column_type"] in ("smallint", "integer"):
        recommendation += (
            " Changing the column type rewrites the table under an ACCESS EXCLUSIVE lock, "
            "and columns that reference it need the same change."
        )
    return Finding(
        severity=severity,
        object_type="sequence",
        object=row["display_name"],
        message=f"sequence {row['display_name']}{target} has used {ratio:.1%} of its range "
        f"(last value {row['last_value']:,}, limit {limit:,})",
        recommendation=recommendation,
        fix_sql=_fix_sql(context, row),
    )
