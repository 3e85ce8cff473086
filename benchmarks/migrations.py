"""Applying migrations through the API against running the same SQL directly.

Run: ``.venv/bin/python benchmarks/migrations.py`` (embedded PostgreSQL 18, or
the server in ``ZBAAS_DATABASE_URL``). The API server runs as its own
``zbaas serve`` process. Each of the 200 rounds applies one small migration
with ``POST /projects/{id}/database/migrations/{id}/up`` and then runs the
same kind of SQL directly, in one transaction over one open superuser
connection, which is the floor. Rounds alternate so that both sides see the
same catalog size and server load. A plain authenticated GET in each round
shows how much of the API time is HTTP and authentication alone.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import httpx
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import connect, postgres_server, sign_in, zbaas_server  # noqa: E402

MIGRATIONS = 200
TARGET_RATIO = 3.0
MIGRATION_SQL = "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL);"


def set_up_project(url: str) -> tuple[dict[str, str], str, str]:
    """Sign up, create a project and a secret key; return key headers, project id, database."""
    headers = sign_in(url)
    project = httpx.post(
        f"{url}/projects", json={"name": "Bench", "slug": "bench"}, headers=headers, timeout=120
    ).json()
    key = httpx.post(
        f"{url}/projects/{project['id']}/keys",
        json={"name": "bench", "type": "secret"},
        headers=headers,
    ).json()["key"]
    return {"apikey": key}, project["id"], project["db_name"]


def main() -> None:
    with postgres_server() as server_url, zbaas_server(server_url) as (url, _):
        headers, project_id, db_name = set_up_project(url)
        base = f"/projects/{project_id}/database/migrations"

        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            ids = []
            for i in range(MIGRATIONS):
                up_sql = MIGRATION_SQL.format(table=f"api_{i}")
                response = client.post(base, json={"name": f"api_{i}", "up_sql": up_sql})
                response.raise_for_status()
                ids.append(response.json()["id"])

            api_times: list[float] = []
            direct_times: list[float] = []
            request_times: list[float] = []
            with connect(server_url, db_name) as direct:
                for i, migration_id in enumerate(ids):
                    started = time.perf_counter()
                    response = client.post(f"{base}/{migration_id}/up")
                    api_times.append(time.perf_counter() - started)
                    response.raise_for_status()

                    query = sql.SQL(MIGRATION_SQL).format(table=sql.Identifier(f"direct_{i}"))
                    started = time.perf_counter()
                    with direct.transaction():
                        direct.execute(query)
                    direct_times.append(time.perf_counter() - started)

                    started = time.perf_counter()
                    client.get(f"/projects/{project_id}").raise_for_status()
                    request_times.append(time.perf_counter() - started)

    request_median = statistics.median(request_times)
    api_median = statistics.median(api_times)
    direct_median = statistics.median(direct_times)
    print(f"direct SQL in a transaction, median: {direct_median * 1000:.2f} ms ({MIGRATIONS} runs)")
    print(
        f"API POST .../migrations/{{id}}/up, median: {api_median * 1000:.2f} ms ({MIGRATIONS} runs)"
    )
    print(
        f"for reference, GET /projects/{{id}} with the same key, median: "
        f"{request_median * 1000:.2f} ms (authentication and HTTP alone)"
    )
    print(f"ratio API / direct: {api_median / direct_median:.2f}  (target at most {TARGET_RATIO})")


if __name__ == "__main__":
    main()
