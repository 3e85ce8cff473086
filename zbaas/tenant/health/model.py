"""Types of the health report: thresholds, findings, sections and the report itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg

Severity = Literal["info", "warning", "critical"]
Status = Literal["ok", "warning", "critical"]

# An info finding leaves a status ok; a warning or critical finding raises it to its level.
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
STATUS_RANK: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Thresholds:
    """Limits above or below which a condition becomes a finding; every one has a default."""

    bloat_min_bytes: int = 10 * 1024 * 1024
    bloat_min_ratio: float = 0.5
    seq_scan_min_rows: int = 10_000
    seq_scan_min_count: int = 100
    unused_index_max_scans: int = 0
    slow_query_mean_ms: float = 100.0
    connections_warning_ratio: float = 0.8
    connections_critical_ratio: float = 0.95
    cache_hit_min_ratio: float = 0.99
    vacuum_dead_rows: int = 10_000
    vacuum_dead_ratio: float = 0.2
    xid_age_warning: int = 500_000_000
    xid_age_critical: int = 1_500_000_000
    long_query_seconds: float = 60.0
    long_transaction_seconds: float = 300.0
    lock_wait_seconds: float = 10.0
    sequence_warning_ratio: float = 0.75
    sequence_critical_ratio: float = 0.9
    limit: int = 50


@dataclass
class Finding:
    """One problem: how bad it is, what it concerns, what to do, and the SQL that does it."""

    severity: Severity
    object_type: str
    object: str
    message: str
    recommendation: str
    fix_sql: str | None = None


@dataclass
class Section:
    """One area of the report: its status, measured rows, totals and findings.

    ``available`` is false when the server cannot provide the data, and ``message``
    then explains why and how to enable it.
    """

    status: Status = "ok"
    available: bool = True
    message: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)
        if SEVERITY_RANK[finding.severity] > STATUS_RANK[self.status]:
            self.status = "critical" if finding.severity == "critical" else "warning"


@dataclass
class Sections:
    table_bloat: Section
    missing_indexes: Section
    unused_indexes: Section
    duplicate_indexes: Section
    invalid_indexes: Section
    slow_queries: Section
    connections: Section
    cache_hit: Section
    vacuum: Section
    long_running: Section
    table_sizes: Section
    sequences: Section


@dataclass
class HealthReport:
    """The health report of one project database."""

    status: Status
    database: str
    server_version: str
    generated_at: datetime
    stats_reset: datetime | None
    finding_counts: dict[str, int]
    thresholds: Thresholds
    sections: Sections


@dataclass
class Context:
    """Facts about the database and server that several sections need."""

    database: str
    database_oid: int
    server_version: str
    block_size: int
    now: datetime
    stats_reset: datetime | None
    xid_age: int
    preload_libraries: list[str]
    statements_schema: str | None
    conn: psycopg.AsyncConnection[Any]


def rank_status(findings: list[Finding]) -> Status:
    worst = max((SEVERITY_RANK[f.severity] for f in findings), default=0)
    if worst == SEVERITY_RANK["critical"]:
        return "critical"
    if worst == SEVERITY_RANK["warning"]:
        return "warning"
    return "ok"
