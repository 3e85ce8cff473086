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

import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from zbaas.postgres.embedded import EmbeddedPostgres

MIGRATIONS = 200
TARGET_RATIO = 3.0
MIGRATION_SQL = "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL);"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """``ZBAAS_DATABASE_URL`` when set, else a fresh embedded PostgreSQL 18."""
    url = os.environ.get("ZBAAS_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="zbaas-bench-") as folder:
        embedded = EmbeddedPostgres(Path(folder))
        try:
            yield embedded.start()
        finally:
            embedded.stop()


def connect(server_url: str, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(make_conninfo(server_url, dbname=dbname), autocommit=True)


@contextmanager
def zbaas_server(server_url: str) -> Iterator[str]:
    """Run ``zbaas serve`` on its own control database; drop what it created afterwards."""
    control = f"zbaas_bench_{secrets.token_hex(4)}"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="zbaas-bench-data-") as data_dir:
        env = {
            **os.environ,
            "ZBAAS_DATABASE_URL": server_url,
            "ZBAAS_CONTROL_DATABASE": control,
            "ZBAAS_DATA_DIR": data_dir,
            "ZBAAS_SECRET_KEY": secrets.token_urlsafe(48),
        }
        # The console script that the package installs beside this Python.
        command = [str(Path(sys.executable).with_name("zbaas")), "serve", "--port", str(port)]
        process = subprocess.Popen([*command, "--log-level", "warning"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=60)
            drop_control(server_url, control)


def wait_until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("zbaas serve did not start")
        time.sleep(0.2)


def drop_control(server_url: str, control: str) -> None:
    """Drop the projects a control database lists, their roles, and the database."""
    with connect(server_url) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (control,))
        if exists.fetchone() is None:
            return
        with connect(server_url, control) as conn:
            rows = conn.execute(
                "SELECT db_name, owner_role, authenticator_role FROM projects"
            ).fetchall()
        for db_name, *roles in rows:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name))
            )
            for role in roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(control)))


def set_up_project(url: str) -> tuple[dict[str, str], str, str]:
    """Sign up, create a project and a secret key; return key headers, project id, database."""
    email = f"bench-{secrets.token_hex(4)}@example.com"
    body = {"email": email, "password": "benchmark password", "full_name": "Bench"}
    httpx.post(f"{url}/auth/signup", json=body).raise_for_status()
    tokens = httpx.post(
        f"{url}/auth/login", json={"email": email, "password": body["password"]}
    ).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
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
    with postgres_server() as server_url, zbaas_server(server_url) as url:
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
