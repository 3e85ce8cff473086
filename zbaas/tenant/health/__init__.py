"""The database health report: problems found in one project database, each with a fix.

It covers what PgHero, Heroku's pg-extras and ``supabase inspect db`` cover: bloat,
missing, unused, duplicate and invalid indexes, slow statements, connections,
cache hit ratios, vacuum and transaction ID age, long-running work, table sizes
and sequences near their limit. Everything is read as the superuser connected to
the project's database, with every server-wide view filtered to that database.
"""

from zbaas.tenant.health.model import Finding, HealthReport, Section, Sections, Thresholds
from zbaas.tenant.health.report import build_report

__all__ = ["Finding", "HealthReport", "Section", "Sections", "Thresholds", "build_report"]
