"""Time branch creation through the API against a raw pg_dump | psql copy.

The parent project gets a 50-table schema (each table with a primary key, a
foreign key to the previous table, an index and a default). Then, alternately:

- the API: ``POST /projects/{id}/branches`` (roles, database, auth schema,
  schema copy, migration history, ownership, base snapshot), and
- the floor: ``CREATE DATABASE`` and ``pg_dump --schema-only | psql`` with the
  same bundled programs, as superuser.

It prints both medians and their ratio. PostgreSQL is the embedded server in a
temporary folder, or the server in ``ZBAAS_DATABASE_URL`` (only uniquely named
objects are created there, and dropped at the end).

    .venv/bin/python benchmarks/branches.py [--runs 7] [--tables 50]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import uvicorn
from psycopg import sql
from psycopg.conninfo import make_conninfo

from zbaas.app import create_app
from zbaas.config import Settings
from zbaas.postgres.embedded import EmbeddedPostgres
from zbaas.postgres.programs import libpq_environment, program


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def schema_sql(tables: int) -> str:
    statements = []
    for i in range(tables):
        reference = f", parent_id bigint REFERENCES t{i - 1} (id)" if i else ""
        statements.append(
            f"CREATE TABLE t{i} (id bigserial PRIMARY KEY, name text NOT NULL, "
            f"amount numeric(12,2) NOT NULL DEFAULT 0, created_at timestamptz DEFAULT now()"
            f"{reference}); CREATE INDEX t{i}_name_idx ON t{i} (name);"
        )
    return "\n".join(statements)


def raw_copy(server_url: str, source_db: str, target_db: str, server_version: int) -> float:
    """Time CREATE DATABASE plus pg_dump --schema-only | psql into it; drop it after."""
    with psycopg.connect(make_conninfo(server_url, dbname="postgres"), autocommit=True) as admin:
        started = time.perf_counter()
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target_db))
        )
        dump = subprocess.Popen(
            [str(program("pg_dump")), "--schema-only", "--no-password"],
            stdout=subprocess.PIPE,
            env=libpq_environment(make_conninfo(server_url, dbname=source_db)),
        )
        assert dump.stdout is not None
        source = dump.stdout
        strip = None
        if server_version < 170000:
            # pg_dump 18 sets transaction_timeout, which older servers reject.
            strip = subprocess.Popen(
                ["grep", "-v", "^SET transaction_timeout"], stdin=source, stdout=subprocess.PIPE
            )
            source.close()
            assert strip.stdout is not None
            source = strip.stdout
        restore = subprocess.run(
            [
                str(program("psql")),
                "--no-psqlrc",
                "--quiet",
                "--no-password",
                "--single-transaction",
                "--set=ON_ERROR_STOP=1",
                "--output=/dev/null",
            ],
            stdin=source,
            env=libpq_environment(make_conninfo(server_url, dbname=target_db)),
            check=False,
        )
        source.close()
        dump.wait()
        if strip is not None:
            strip.wait()
        elapsed = time.perf_counter() - started
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(target_db)))
    if restore.returncode != 0 or dump.returncode != 0:
        raise RuntimeError("the raw pg_dump | psql copy failed")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each kind")
    parser.add_argument("--tables", type=int, default=50, help="tables in the parent")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="zbaas-bench-branches-"))
    embedded = None
    server_url = os.environ.get("ZBAAS_DATABASE_URL")
    if not server_url:
        embedded = EmbeddedPostgres(work / "embedded")
        server_url = embedded.start()
    settings = Settings(
        database_url=server_url,
        control_database=f"zbaas_bench_{secrets.token_hex(4)}",
        data_dir=work / "data",
        secret_key=secrets.token_urlsafe(48),
    )
    server, thread, url = start_api(settings)
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
            credentials = {"email": email, "password": "correct horse battery"}
            client.post("/auth/signup", json={**credentials, "full_name": "Bench"})
            token = client.post("/auth/login", json=credentials).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            project = client.post(
                "/projects",
                json={"name": "Bench", "slug": f"bench-{uuid.uuid4().hex[:6]}"},
                headers=headers,
            ).json()

            try:
                with psycopg.connect(
                    make_conninfo(server_url, dbname=project["db_name"]), autocommit=True
                ) as conn:
                    with psycopg.connect(
                        make_conninfo(server_url, dbname=settings.control_database)
                    ) as control:
                        row = control.execute(
                            "SELECT owner_role FROM projects WHERE id = %s", (project["id"],)
                        ).fetchone()
                    assert row is not None
                    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(row[0])))
                    conn.execute(schema_sql(args.tables).encode())
                    server_version = conn.info.server_version

                api_times: list[float] = []
                raw_times: list[float] = []
                for run in range(args.runs):
                    started = time.perf_counter()
                    response = client.post(
                        f"/projects/{project['id']}/branches",
                        json={"name": f"bench-{run}"},
                        headers=headers,
                    )
                    api_times.append(time.perf_counter() - started)
                    if response.status_code != 201:
                        raise RuntimeError(f"branch creation failed: {response.text}")
                    client.delete(
                        f"/projects/{project['id']}/branches/bench-{run}", headers=headers
                    )

                    target = f"zbaas_bench_raw_{secrets.token_hex(4)}"
                    raw_times.append(
                        raw_copy(server_url, project["db_name"], target, server_version)
                    )

                api = statistics.median(api_times)
                raw = statistics.median(raw_times)
                print(
                    f"PostgreSQL {server_version // 10000}, {args.tables} tables, {args.runs} runs"
                )
                print(f"branch creation via API:          median {api * 1000:8.1f} ms")
                print(f"CREATE DATABASE + pg_dump | psql: median {raw * 1000:8.1f} ms")
                print(f"ratio API / raw: {api / raw:.2f} (target at most 1.5)")
            finally:
                client.delete(f"/projects/{project['id']}", headers=headers)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        with psycopg.connect(
            make_conninfo(server_url, dbname="postgres"), autocommit=True
        ) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(settings.control_database)
                )
            )
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
