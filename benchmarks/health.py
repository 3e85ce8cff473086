"""Time the database health report on a database with 500 tables and 1,500 indexes.

Starts embedded PostgreSQL 18 in a temporary folder, or uses the server named by
``ZBAAS_DATABASE_URL``, and creates a scratch database. Prints the median time
of the report and the number of statements it sends. The floor, measured in the
same run, is one read of ``pg_stat_user_tables``.

    .venv/bin/python benchmarks/health.py [--tables 500] [--runs 11]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from zbaas.postgres.embedded import EmbeddedPostgres
from zbaas.tenant.health import Thresholds, build_report

ROWS_PER_TABLE = 20


class CountingCursor(psycopg.AsyncCursor[Any]):
    """A cursor that counts the statements sent through it (BEGIN and COMMIT are not)."""

    statements = 0

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> CountingCursor:
        CountingCursor.statements += 1
        await super().execute(query, params, **kwargs)
        return self


def create_schema(url: str, tables: int) -> None:
    """Create ``tables`` tables with three indexes each (primary key and two more)."""
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            for number in range(tables):
                table = sql.Identifier(f"bench_{number:04d}")
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE {} (id bigserial PRIMARY KEY, account int, label text, "
                        "created timestamptz DEFAULT now())"
                    ).format(table)
                )
                conn.execute(sql.SQL("CREATE INDEX ON {} (account)").format(table))
                conn.execute(sql.SQL("CREATE INDEX ON {} (label, account)").format(table))
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (account, label) "
                        "SELECT g %% 7, 'label ' || g FROM generate_series(1, %s) g"
                    ).format(table),
                    (ROWS_PER_TABLE,),
                )
        conn.execute("ANALYZE")
        count = conn.execute(
            "SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        ).fetchone()
        print(f"schema: {tables} tables, {count[0] if count else 0} indexes")


async def time_report(url: str, runs: int) -> tuple[list[float], int]:
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row, cursor_factory=CountingCursor
    )
    async with conn:
        await build_report(conn, Thresholds())  # warm the catalog caches
        CountingCursor.statements = 0
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            await build_report(conn, Thresholds())
            timings.append(time.perf_counter() - started)
    return timings, CountingCursor.statements // runs


async def time_floor(url: str, runs: int) -> list[float]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await (await conn.execute("SELECT * FROM pg_stat_user_tables")).fetchall()
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            await (await conn.execute("SELECT * FROM pg_stat_user_tables")).fetchall()
            timings.append(time.perf_counter() - started)
    return timings


def run(server_url: str, tables: int, runs: int) -> None:
    dbname = f"zbaas_bench_health_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        version = admin.execute("SHOW server_version").fetchone()
    print(f"server: PostgreSQL {version[0] if version else '?'}")
    url = make_conninfo(server_url, dbname=dbname)
    try:
        started = time.perf_counter()
        create_schema(url, tables)
        print(f"setup: {time.perf_counter() - started:.1f} s")

        timings, statements = asyncio.run(time_report(url, runs))
        floor = asyncio.run(time_floor(url, runs))
        report_ms = statistics.median(timings) * 1000
        floor_ms = statistics.median(floor) * 1000
        print(
            f"report: median {report_ms:.1f} ms over {runs} runs "
            f"(min {min(timings) * 1000:.1f}, max {max(timings) * 1000:.1f})"
        )
        print(f"statements per report: {statements} (in one transaction: plus BEGIN, COMMIT)")
        print(f"floor, one read of pg_stat_user_tables: median {floor_ms:.1f} ms")
        print(f"ratio report / floor: {report_ms / floor_ms:.1f}")
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=500, help="tables to create (3 indexes each)")
    parser.add_argument("--runs", type=int, default=11, help="timed reports")
    args = parser.parse_args()

    server_url = os.environ.get("ZBAAS_DATABASE_URL")
    if server_url:
        run(server_url, args.tables, args.runs)
        return
    folder = Path(tempfile.mkdtemp(prefix="zbaas-bench-health-"))
    embedded = EmbeddedPostgres(folder)
    try:
        run(embedded.start(), args.tables, args.runs)
    finally:
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
