"""Build the health report of one project database in one read-only transaction."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from zbaas.errors import ServiceUnavailable
from zbaas.tenant.health import activity, indexes, sequences, statements, tables
from zbaas.tenant.health.model import (
    SEVERITY_RANK,
    HealthReport,
    Section,
    Sections,
    Thresholds,
    rank_status,
)

logger = logging.getLogger("zbaas.tenant")

# REPEATABLE READ gives every query the same catalog snapshot, and the statistics
# views are cached for the transaction, so the sections agree with each other.
# The lock timeout is a backstop: the queries are written to take no lock that a
# migration could hold.
TRANSACTION_SETUP = (
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
    "SET LOCAL statement_timeout = '30s'; "
    "SET LOCAL lock_timeout = '5s'"
)

# Sections whose items come from more than one query, and the field they are ranked by.
RANKED_ITEMS = {"table_bloat": "wasted_bytes", "cache_hit": "blocks_read"}


def merge(first: Section, second: Section) -> Section:
    merged = Section(
        available=first.available and second.available,
        message=" ".join(m for m in (first.message, second.message) if m) or None,
        summary={**first.summary, **second.summary},
        items=first.items + second.items,
        findings=first.findings + second.findings,
    )
    merged.status = rank_status(merged.findings)
    return merged


async def build_report(conn: psycopg.AsyncConnection[Any], thresholds: Thresholds) -> HealthReport:
    """Read this database's catalogs and statistics and return its health report.

    ``conn`` is a superuser connection to the project database in autocommit mode
    with dict rows. Raises ServiceUnavailable when the report runs into its timeouts.
    """
    try:
        async with conn.transaction():
            await conn.execute(TRANSACTION_SETUP)
            context, parts, database_findings = await activity.collect(conn, thresholds)
            table_parts = await tables.collect(context, thresholds)
            index_parts = await indexes.collect(context, thresholds)
            parts["sequences"] = await sequences.collect(context, thresholds)
            parts["slow_queries"] = await statements.collect(context, thresholds)
    except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as exc:
        logger.warning("health report of %s timed out: %s", conn.info.dbname, type(exc).__name__)
        raise ServiceUnavailable(
            "the health report timed out reading the database's statistics; try again",
            code="health_report_timeout",
        ) from None

    for name, part in table_parts.items():
        parts[name] = merge(part, index_parts[name]) if name in index_parts else part
    for name, part in index_parts.items():
        parts.setdefault(name, part)
    parts["vacuum"].summary["database_xid_age"] = context.xid_age
    for finding in database_findings:
        parts["vacuum"].add(finding)
    for name, field in RANKED_ITEMS.items():
        parts[name].items.sort(key=lambda item, f=field: item[f], reverse=True)
        del parts[name].items[thresholds.limit :]

    findings = [f for part in parts.values() for f in part.findings]
    counts = {severity: 0 for severity in SEVERITY_RANK}
    for finding in findings:
        counts[finding.severity] += 1
    return HealthReport(
        status=rank_status(findings),
        database=context.database,
        server_version=context.server_version,
        generated_at=context.now,
        stats_reset=context.stats_reset,
        finding_counts=counts,
        thresholds=thresholds,
        sections=Sections(**parts),
    )
