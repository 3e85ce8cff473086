"""The database health report of a project."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Self

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from zbaas.api.deps import ProjectDep, ServicesDep
from zbaas.api.models import ERRORS
from zbaas.tenant import health
from zbaas.tenant.connections import as_superuser

router = APIRouter(prefix="/projects/{project_id}/db", tags=["database health"], responses=ERRORS)

DEFAULTS = health.Thresholds()


def _ratio(default: float, description: str) -> float:
    return Field(default=default, ge=0, le=1, allow_inf_nan=False, description=description)


def _seconds(default: float, description: str) -> float:
    return Field(default=default, gt=0, le=30 * 86400, allow_inf_nan=False, description=description)


def _count(default: int, description: str) -> int:
    return Field(default=default, ge=0, le=2**62, description=description)


class HealthQuery(BaseModel):
    """Thresholds of the report; each one has a default."""

    model_config = ConfigDict(extra="forbid")

    bloat_min_bytes: int = _count(
        DEFAULTS.bloat_min_bytes, "Estimated wasted bytes from which bloat is reported."
    )
    bloat_min_ratio: float = _ratio(
        DEFAULTS.bloat_min_ratio, "Wasted share of a relation from which bloat is reported."
    )
    seq_scan_min_rows: int = _count(
        DEFAULTS.seq_scan_min_rows,
        "Rows from which a table read mostly by sequential scans is reported.",
    )
    seq_scan_min_count: int = _count(
        DEFAULTS.seq_scan_min_count, "Sequential scans from which a table is reported."
    )
    unused_index_max_scans: int = _count(
        DEFAULTS.unused_index_max_scans, "Index scans up to which an index counts as unused."
    )
    slow_query_mean_ms: float = Field(
        default=DEFAULTS.slow_query_mean_ms,
        gt=0,
        le=86_400_000,
        allow_inf_nan=False,
        description="Mean execution time, ms, from which a statement is reported as slow.",
    )
    connections_warning_ratio: float = _ratio(
        DEFAULTS.connections_warning_ratio, "Share of the connection limit that is a warning."
    )
    connections_critical_ratio: float = _ratio(
        DEFAULTS.connections_critical_ratio, "Share of the connection limit that is critical."
    )
    cache_hit_min_ratio: float = _ratio(
        DEFAULTS.cache_hit_min_ratio, "Cache hit ratio below which the cache is reported."
    )
    vacuum_dead_rows: int = _count(
        DEFAULTS.vacuum_dead_rows, "Dead rows from which a table needs VACUUM."
    )
    vacuum_dead_ratio: float = _ratio(
        DEFAULTS.vacuum_dead_ratio, "Share of dead rows from which a table needs VACUUM."
    )
    xid_age_warning: int = Field(
        default=DEFAULTS.xid_age_warning,
        ge=1,
        le=2**31,
        description="Transaction ID age that is a warning.",
    )
    xid_age_critical: int = Field(
        default=DEFAULTS.xid_age_critical,
        ge=1,
        le=2**31,
        description="Transaction ID age that is critical.",
    )
    long_query_seconds: float = _seconds(
        DEFAULTS.long_query_seconds, "Runtime, s, from which a query is long-running."
    )
    long_transaction_seconds: float = _seconds(
        DEFAULTS.long_transaction_seconds, "Age, s, from which an open transaction is reported."
    )
    lock_wait_seconds: float = _seconds(
        DEFAULTS.lock_wait_seconds, "Wait, s, from which a blocked lock wait is reported."
    )
    sequence_warning_ratio: float = _ratio(
        DEFAULTS.sequence_warning_ratio, "Used share of a sequence's range that is a warning."
    )
    sequence_critical_ratio: float = _ratio(
        DEFAULTS.sequence_critical_ratio, "Used share of a sequence's range that is critical."
    )
    limit: int = Field(
        default=DEFAULTS.limit, ge=1, le=1000, description="Rows listed per section at most."
    )

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        for warning, critical in (
            ("connections_warning_ratio", "connections_critical_ratio"),
            ("xid_age_warning", "xid_age_critical"),
            ("sequence_warning_ratio", "sequence_critical_ratio"),
        ):
            if getattr(self, warning) > getattr(self, critical):
                raise ValueError(f"{warning} must not be greater than {critical}")
        return self

    def thresholds(self) -> health.Thresholds:
        return health.Thresholds(
            **{f.name: getattr(self, f.name) for f in fields(health.Thresholds)}
        )


@router.get("/health", response_model=health.HealthReport)
async def get_database_health(
    access: ProjectDep,
    services: ServicesDep,
    query: Annotated[HealthQuery, Query()],
) -> health.HealthReport:
    """Report problems in the project's database, each with a recommendation and a fix."""
    access.require_developer("read the database health report")
    async with as_superuser(services, access.project) as conn:
        return await health.build_report(conn, query.thresholds())
