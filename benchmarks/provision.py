"""Project creation against raw CREATE DATABASE, and key-authenticated reads against /health.

Run: ``.venv/bin/python benchmarks/provision.py`` (embedded PostgreSQL 18, or the
server in ``ZBAAS_DATABASE_URL``). The API server runs as its own process; the
load for the request-rate part comes from this process.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time
from pathlib import Path

import httpx
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import connect, postgres_server, sign_in, zbaas_server  # noqa: E402

PROJECTS = 50
LOAD_SECONDS = 5.0
CONCURRENCY = 16


def time_api_creates(url: str, headers: dict[str, str]) -> list[float]:
    timings = []
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        for i in range(PROJECTS):
            started = time.perf_counter()
            response = client.post("/projects", json={"name": f"Bench {i}", "slug": f"bench-{i}"})
            timings.append(time.perf_counter() - started)
            response.raise_for_status()
    return timings


def time_raw_creates(server_url: str) -> list[float]:
    prefix = f"zbaas_rawbench_{secrets.token_hex(3)}"
    timings = []
    with connect(server_url) as conn:
        try:
            for i in range(PROJECTS):
                name = sql.Identifier(f"{prefix}_{i}")
                started = time.perf_counter()
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(name))
                timings.append(time.perf_counter() - started)
        finally:
            for i in range(PROJECTS):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(f"{prefix}_{i}"))
                )
    return timings


async def requests_per_second(url: str, headers: dict[str, str]) -> float:
    done = 0
    deadline = time.perf_counter() + LOAD_SECONDS

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await client.get(url, headers=headers)
            response.raise_for_status()
            done += 1

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
        return done / (time.perf_counter() - started)


def main() -> None:
    with postgres_server() as server_url, zbaas_server(server_url) as (url, _):
        headers = sign_in(url)
        raw = time_raw_creates(server_url)
        api = time_api_creates(url, headers)
        raw_median, api_median = statistics.median(raw), statistics.median(api)
        print(f"raw CREATE DATABASE median: {raw_median * 1000:.1f} ms ({PROJECTS} databases)")
        print(f"API POST /projects median:  {api_median * 1000:.1f} ms ({PROJECTS} projects)")
        print(f"ratio API / raw: {api_median / raw_median:.2f}  (target at most 2.0)")

        project_id = httpx.get(f"{url}/projects", headers=headers).json()[0]["id"]
        key = httpx.post(
            f"{url}/projects/{project_id}/keys",
            json={"name": "bench", "type": "secret"},
            headers=headers,
        ).json()["key"]
        health = asyncio.run(requests_per_second(f"{url}/health", {}))
        keyed = asyncio.run(requests_per_second(f"{url}/projects/{project_id}", {"apikey": key}))
        print(f"GET /health:                 {health:.0f} req/s")
        print(f"GET /projects/{{id}} with key: {keyed:.0f} req/s")
        print(f"ratio keyed / health: {keyed / health:.2f}  (target at least 0.7)")


if __name__ == "__main__":
    main()
