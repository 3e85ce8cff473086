"""Shared set-up for benchmarks: a PostgreSQL server and a ``zbaas serve`` process."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from zbaas.postgres.embedded import EmbeddedPostgres


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
def zbaas_server(
    server_url: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run a ``zbaas serve`` process on its own control database, dropped afterwards.

    ``env`` adds settings (``ZBAAS_*`` variables) to the server's environment.
    """
    control = f"zbaas_bench_{secrets.token_hex(4)}"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="zbaas-bench-data-") as data_dir:
        server_env = {
            **os.environ,
            "ZBAAS_DATABASE_URL": server_url,
            "ZBAAS_CONTROL_DATABASE": control,
            "ZBAAS_DATA_DIR": data_dir,
            "ZBAAS_SECRET_KEY": secrets.token_urlsafe(48),
            **(env or {}),
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zbaas.cli.main",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=server_env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("zbaas serve did not start")
                time.sleep(0.2)
            yield url, process
        finally:
            process.terminate()
            process.wait(timeout=60)
            drop_control(server_url, control)


def drop_control(server_url: str, control: str) -> None:
    """Drop the projects a control database lists, their roles, and the database."""
    with connect(server_url) as admin:
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


def sign_in(url: str) -> dict[str, str]:
    """Sign up a fresh user and return its Authorization header."""
    email = f"bench-{secrets.token_hex(4)}@example.com"
    body = {"email": email, "password": "benchmark password", "full_name": "Bench"}
    httpx.post(f"{url}/auth/signup", json=body).raise_for_status()
    tokens = httpx.post(
        f"{url}/auth/login", json={"email": email, "password": body["password"]}
    ).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}
