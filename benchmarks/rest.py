"""Measure GET by primary key through /rest/v1 against the same query over raw psycopg.

Starts embedded PostgreSQL (or uses ZBAAS_DATABASE_URL), a zbaas server in its
own process on loopback, and for each measurement a load process of its own.
The API request carries an end user's JWT and the table has RLS on with the
policy ``auth.uid() = user_id``. Printed: requests per second of

- raw: ``SELECT * FROM items WHERE id = $1`` on plain psycopg connections, the floor;
- raw_tx: the database work of one API request replayed over psycopg in the
  same single pipelined round trip (BEGIN, set_config of role and claims, the
  query under RLS, COMMIT);
- api: GET /rest/v1/items?id=eq.N through the HTTP server;

and api / raw, the ratio the data API is judged by.

Run: ``.venv/bin/python benchmarks/rest.py [--seconds 10] [--connections 16] [--workers 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from psycopg import sql

from zbaas.postgres.embedded import EmbeddedPostgres

ROWS = 10_000
PASSWORD = "benchmark password"
TABLE_SETUP = """
CREATE TABLE items (
    id integer PRIMARY KEY,
    user_id uuid NOT NULL,
    title text NOT NULL,
    score integer NOT NULL
);
ALTER TABLE items ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_own_data ON items FOR ALL
    USING (auth.uid() = user_id) WITH CHECK (auth.uid() = user_id);
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    database_url: str, data_dir: Path, port: int, control_database: str, workers: int
) -> subprocess.Popen[bytes]:
    """Run uvicorn with the zbaas app in ``workers`` processes, as ``zbaas serve`` would."""
    env = {
        **os.environ,
        "ZBAAS_DATABASE_URL": database_url,
        "ZBAAS_DATA_DIR": str(data_dir),
        "ZBAAS_CONTROL_DATABASE": control_database,
        "ZBAAS_SECRET_KEY": secrets.token_urlsafe(48),
    }
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "zbaas.app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
        "--workers", str(workers),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError("the zbaas server exited during start-up")
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the zbaas server did not start within 120 s")


def prepare(base_url: str, database_url: str) -> dict[str, Any]:
    """Create a platform user, a project with the items table, and a signed-in end user."""
    http = httpx.Client(base_url=base_url, timeout=120)
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    http.post("/auth/signup", json={"email": email, "password": PASSWORD, "full_name": "Bench"})
    tokens = http.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    project = http.post("/projects", json={"name": "Bench", "slug": "bench"}, headers=headers)
    project.raise_for_status()
    body = project.json()
    key = http.post(
        f"/projects/{body['id']}/keys",
        json={"name": "bench", "type": "publishable"},
        headers=headers,
    ).json()["key"]

    session = http.post(
        "/auth/v1/signup",
        json={"email": f"end-{email}", "password": PASSWORD},
        headers={"apikey": key},
    ).json()
    user_id = session["user"]["id"]

    conninfo = psycopg.conninfo.make_conninfo(database_url, dbname=body["db_name"])
    with psycopg.connect(conninfo, autocommit=True) as conn:
        project_owner = conn.execute(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
        ).fetchone()
        assert project_owner is not None
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(project_owner[0])))
            conn.execute(TABLE_SETUP)
            conn.execute(
                "INSERT INTO items SELECT g, %s, 'item ' || g, g %% 100 "
                "FROM generate_series(1, %s) g",
                (user_id, ROWS),
            )
        conn.execute("ANALYZE items")
    return {
        "key": key,
        "token": session["access_token"],
        "user_id": user_id,
        "conninfo": conninfo,
        "claims": {"sub": user_id, "role": "authenticated"},
    }


def drop_created(database_url: str, control_database: str) -> None:
    """Drop the project databases, roles and control database this run created."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        control = psycopg.conninfo.make_conninfo(database_url, dbname=control_database)
        with psycopg.connect(control) as conn:
            rows = conn.execute(
                "SELECT db_name, owner_role, authenticator_role FROM projects"
            ).fetchall()
        for db_name, *roles in rows:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name))
            )
            for role in roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(control_database))
        )


# --- load processes -------------------------------------------------------------


async def http_worker(port: int, path_for: Any, headers: bytes, deadline: float) -> int:
    """Send keep-alive HTTP/1.1 GETs until the deadline; return how many got status 200."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    while time.monotonic() < deadline:
        writer.write(b"GET " + path_for().encode() + b" HTTP/1.1\r\n" + headers + b"\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"the API returned status {status}; expected 200")
        done += 1
    writer.close()
    return done


def run_http_load(
    port: int, key: str | None, token: str, connections: int, seconds: float, out: Any
) -> None:
    """GET one row by primary key; with ``key`` None, GET /health as the HTTP floor."""
    headers = f"Host: 127.0.0.1:{port}\r\nAccept: application/json\r\n".encode()
    if key is not None:
        headers += f"apikey: {key}\r\nAuthorization: Bearer {token}\r\n".encode()

    def path_for() -> str:
        if key is None:
            return "/health"
        return f"/rest/v1/items?id=eq.{random.randint(1, ROWS)}"

    async def main() -> int:
        deadline = time.monotonic() + seconds
        counts = await asyncio.gather(
            *(http_worker(port, path_for, headers, deadline) for _ in range(connections))
        )
        return sum(counts)

    out.put(asyncio.run(main()))


async def raw_worker(conninfo: str, deadline: float, full: bool, claims: dict[str, Any]) -> int:
    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    claims_json = json.dumps(claims)
    done = 0
    while time.monotonic() < deadline:
        row_id = random.randint(1, ROWS)
        if full:
            # As the API does once the table is cached: BEGIN, the settings, the
            # query under RLS and COMMIT, in one pipeline flush.
            async with conn.pipeline(), conn.transaction():
                await conn.execute(
                    "SELECT set_config('role', 'authenticated', true), "
                    "set_config('request.jwt.claims', %s, true), "
                    "set_config('statement_timeout', '8000', true), "
                    "set_config('transaction_read_only', 'on', true)",
                    (claims_json,),
                )
                cur = await conn.execute(
                    "SELECT coalesce(json_agg(t), '[]')::text, count(*) FROM "
                    "(SELECT * FROM public.items WHERE id = %s) t",
                    (str(row_id),),
                )
        else:
            cur = await conn.execute("SELECT * FROM items WHERE id = %s", (row_id,))
        rows = await cur.fetchall()
        assert len(rows) == 1
        done += 1
    await conn.close()
    return done


def run_raw_load(
    conninfo: str, full: bool, claims: dict[str, Any], connections: int, seconds: float, out: Any
) -> None:
    async def main() -> int:
        deadline = time.monotonic() + seconds
        counts = await asyncio.gather(
            *(raw_worker(conninfo, deadline, full, claims) for _ in range(connections))
        )
        return sum(counts)

    out.put(asyncio.run(main()))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of a process and its live children (the workers)."""
    process = psutil.Process(pid)
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        times = member.cpu_times()
        total += times.user + times.system
    return total


def measure(
    target: Any, args: tuple[Any, ...], seconds: float, server_pid: int | None = None
) -> tuple[float, float | None]:
    """Run ``target`` in a process of its own.

    Returns requests per second and, when ``server_pid`` is given, the server's
    CPU milliseconds per request.
    """
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=target, args=(*args, seconds, out))
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    process.start()
    count = out.get(timeout=seconds + 120)
    process.join()
    cpu_ms = None
    if server_pid and count:
        cpu_ms = (cpu_seconds(server_pid) - cpu_before) * 1000 / count
    return float(count) / seconds, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run, s")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=1, help="API server processes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zbaas-bench-") as folder:
        embedded = None
        database_url = os.environ.get("ZBAAS_DATABASE_URL")
        if not database_url:
            embedded = EmbeddedPostgres(Path(folder) / "pg")
            database_url = embedded.start()
        port = free_port()
        control_database = f"zbaas_bench_{secrets.token_hex(4)}"
        server = start_server(
            database_url, Path(folder) / "data", port, control_database, args.workers
        )
        try:
            setup = prepare(f"http://127.0.0.1:{port}", database_url)
            # The raw runs connect as the superuser: RLS still applies to raw_tx
            # because it switches to the authenticated role.
            owner_conninfo = setup["conninfo"]
            warm = min(2.0, args.seconds)
            load = (port, setup["key"], setup["token"], args.connections)
            measure(run_http_load, load, warm)

            raw, _ = measure(
                run_raw_load, (owner_conninfo, False, {}, args.connections), args.seconds
            )
            raw_tx, _ = measure(
                run_raw_load,
                (owner_conninfo, True, setup["claims"], args.connections),
                args.seconds,
            )
            health, health_cpu = measure(
                run_http_load, (port, None, "", args.connections), args.seconds, server.pid
            )
            api, api_cpu = measure(run_http_load, load, args.seconds, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
            if embedded is None:
                drop_created(database_url, control_database)
            if embedded is not None:
                embedded.stop()

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(
        f"connections: {args.connections}, {args.seconds:.0f} s per run, {ROWS} rows, "
        f"{args.workers} API worker(s)"
    )
    print(f"raw psycopg SELECT by primary key:      {raw:9.0f} req/s")
    print(f"raw psycopg, API transaction shape:     {raw_tx:9.0f} req/s")
    print(
        f"GET /health (HTTP stack floor):         {health:9.0f} req/s, "
        f"server CPU {health_cpu:.2f} ms/req"
    )
    print(
        f"GET /rest/v1 with end-user JWT and RLS: {api:9.0f} req/s, server CPU {api_cpu:.2f} ms/req"
    )
    # NOTE: on two cores this ratio stays near 0.1, under the 0.3 target: /health
    # alone reaches about 0.24 of raw, so the HTTP stack leaves no room for it.
    print(f"ratio api / raw:    {api / raw:.2f}  (target at least 0.3)")
    print(f"ratio api / raw_tx: {api / raw_tx:.2f}")


if __name__ == "__main__":
    main()
