"""``zbaas health``: the database health report of a project, findings coloured by severity."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.text import Text

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path
from zbaas.cli.errors import CliError

RANK = {"ok": 0, "info": 0, "warning": 1, "critical": 2}

# Threshold names of the API and their units; the server owns the defaults, which the
# report lists under "thresholds".
THRESHOLDS = {
    "bloat_min_bytes": "bytes",
    "bloat_min_ratio": "share 0-1",
    "seq_scan_min_rows": "rows",
    "seq_scan_min_count": "scans",
    "unused_index_max_scans": "scans",
    "slow_query_mean_ms": "ms",
    "connections_warning_ratio": "share 0-1",
    "connections_critical_ratio": "share 0-1",
    "cache_hit_min_ratio": "share 0-1",
    "vacuum_dead_rows": "rows",
    "vacuum_dead_ratio": "share 0-1",
    "xid_age_warning": "transactions",
    "xid_age_critical": "transactions",
    "long_query_seconds": "s",
    "long_transaction_seconds": "s",
    "lock_wait_seconds": "s",
    "sequence_warning_ratio": "share 0-1",
    "sequence_critical_ratio": "share 0-1",
}


class FailOn(StrEnum):
    warning = "warning"
    critical = "critical"


def _thresholds(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in THRESHOLDS:
            raise CliError(
                f"invalid threshold {pair!r}: use NAME=VALUE with NAME one of "
                + ", ".join(THRESHOLDS),
                exit_code=2,
            )
        params[name] = value
    return params


def _findings(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [
        (area, finding)
        for area, section in report["sections"].items()
        for finding in section["findings"]
    ]
    return sorted(found, key=lambda pair: -RANK[pair[1]["severity"]])


def _recommendation(finding: dict[str, Any]) -> Text:
    text = Text(finding["recommendation"])
    if finding["fix_sql"]:
        text.append("\n" + finding["fix_sql"], style="dim")
    return text


def render(report: dict[str, Any]) -> None:
    counts = report["finding_counts"]
    summary = Text.assemble(
        "Health ",
        (report["status"].upper(), output.SEVERITY_STYLES[report["status"]]),
        f" for {report['database']} on PostgreSQL {report['server_version']}: "
        f"{counts['critical']} critical, {counts['warning']} warning, {counts['info']} info",
    )
    output.stdout.print(summary)
    output.table(
        ["severity", "area", "object", "finding", "recommendation and fix"],
        (
            (
                Text(f["severity"], style=output.SEVERITY_STYLES[f["severity"]]),
                area,
                f["object"],
                f["message"],
                _recommendation(f),
            )
            for area, f in _findings(report)
        ),
        empty="No findings.",
    )
    for area, section in report["sections"].items():
        if not section["available"]:
            output.done(f"{area}: not available: {section['message']}")


def health(
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            help="Report threshold as NAME=VALUE, such as slow_query_mean_ms=50; repeat for "
            "several. Names and units: "
            + ", ".join(f"{name} ({unit})" for name, unit in THRESHOLDS.items())
            + ". Defaults: the server's, listed under 'thresholds' with --json.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, max=1000, help="Rows listed per section at most; default: 50."),
    ] = None,
    fail_on: Annotated[
        FailOn | None,
        typer.Option(help="Exit with status 1 when the report's status reaches this level."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report problems in the project's database, each with a recommendation and a fix.

    Checks bloat, missing, unused, duplicate and invalid indexes, slow queries,
    connections, cache hits, vacuum, long transactions, table sizes and sequences.
    """
    params = _thresholds(threshold or [])
    if limit is not None:
        params["limit"] = str(limit)
    with Api.from_environment() as api:
        response = api.get(project_path(api, project, "db", "health"), params=params)
    output.show(response, as_json, render)

    status = response.json()["status"]
    if fail_on is not None and RANK[status] >= RANK[fail_on.value]:
        raise CliError(f"the database health is {status} (--fail-on {fail_on.value})")
