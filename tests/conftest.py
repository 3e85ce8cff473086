"""Fixtures: one PostgreSQL server and one real HTTP server per test run.

``ZBAAS_TEST_DATABASE_URL`` names a server to use; without it an embedded
PostgreSQL 18 is started in a temporary folder. The server may be shared with
other work, so every database this run creates carries a random name and is
dropped at the end. Storage tests on S3 get an S3-compatible server (moto) on
loopback, started on first use.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql
from psycopg.conninfo import make_conninfo

from zbaas.app import create_app
from zbaas.config import Settings
from zbaas.postgres.embedded import EmbeddedPostgres


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """Superuser connection string of the PostgreSQL server under test."""
    url = os.environ.get("ZBAAS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's temporary folder: every pytest start resets that folder to
    # mode 0700, which would lock out the server's own system user mid-run.
    folder = Path(tempfile.mkdtemp(prefix="zbaas-test-pg-"))
    embedded = EmbeddedPostgres(folder)
    try:
        yield embedded.start()
    finally:
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


def connect(server_url: str, dbname: str, **kwargs: Any) -> psycopg.Connection:
    """Connect to ``dbname`` on the server under test (as superuser unless ``user`` is given)."""
    return psycopg.connect(make_conninfo(server_url, dbname=dbname, **kwargs), autocommit=True)


@pytest.fixture(scope="session")
def settings(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=server_url,
        control_database=f"zbaas_test_{secrets.token_hex(6)}",
        data_dir=tmp_path_factory.mktemp("data"),
        secret_key=secrets.token_urlsafe(48),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """A real uvicorn server on loopback, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test API server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def drop_leftovers(server_url: str, control_database: str) -> None:
    """Drop every project database and role the control database still lists, then it."""
    with connect(server_url, "postgres") as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (control_database,)
        ).fetchone()
        if exists:
            with connect(server_url, control_database) as control:
                rows = control.execute(
                    "SELECT db_name, owner_role, authenticator_role FROM projects"
                ).fetchall()
            for db_name, *roles in rows:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(db_name)
                    )
                )
                for role in roles:
                    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            admin.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(control_database))
            )


@contextmanager
def moto_server() -> Iterator[str]:
    """Run an S3-compatible server (moto) on loopback and return its endpoint URL.

    moto keeps objects in its own process (in memory, large ones in temporary
    files), accepts any credentials and rejects parts under 5 MiB as S3 does.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the S3 server (moto) did not start within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of the moto S3 server for the whole run; each test names its own bucket."""
    with moto_server() as url:
        yield url


def s3_settings(endpoint_url: str, bucket: str | None = None) -> dict[str, Any]:
    """``Settings`` fields that put storage on the test S3 server, in a fresh bucket.

    Use as ``Settings(**other_fields, **s3_settings(s3_server))``. The backend
    creates the bucket on first use.
    """
    return {
        "storage_backend": "s3",
        "s3_endpoint_url": endpoint_url,
        "s3_bucket": bucket or f"zbaas-test-{uuid.uuid4().hex[:12]}",
        "s3_region": "us-east-1",
        "s3_access_key_id": "zbaas-test",
        "s3_secret_access_key": "zbaas-test-secret",
    }


@pytest.fixture(scope="session")
def api(settings: Settings, server_url: str) -> Iterator[ThreadedServer]:
    server = ThreadedServer(settings)
    server.start()
    yield server
    server.stop()
    drop_leftovers(server_url, settings.control_database)


@pytest.fixture
def client(api: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        yield http


def signup_and_login(client: httpx.Client, email: str | None = None) -> dict[str, Any]:
    """Create a user and return its email, tokens and ready-made auth headers."""
    email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
    password = "correct horse battery"
    response = client.post(
        "/auth/signup", json={"email": email, "password": password, "full_name": "Test User"}
    )
    assert response.status_code == 201, response.text
    tokens = client.post("/auth/login", json={"email": email, "password": password}).json()
    return {
        "email": email,
        "password": password,
        "id": response.json()["id"],
        "tokens": tokens,
        "headers": {"Authorization": f"Bearer {tokens['access_token']}"},
    }


@pytest.fixture
def user(client: httpx.Client) -> dict[str, Any]:
    return signup_and_login(client)


@pytest.fixture
def project(client: httpx.Client, user: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A fresh project of ``user``'s organization, deleted afterwards."""
    slug = f"p-{uuid.uuid4().hex[:8]}"
    response = client.post(
        "/projects", json={"name": "Test Project", "slug": slug}, headers=user["headers"]
    )
    assert response.status_code == 201, response.text
    body = response.json()
    yield body
    client.delete(f"/projects/{body['id']}", headers=user["headers"])


@pytest.fixture
def secret_key(client: httpx.Client, user: dict[str, Any], project: dict[str, Any]) -> str:
    response = client.post(
        f"/projects/{project['id']}/keys",
        json={"name": "tests", "type": "secret"},
        headers=user["headers"],
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


@pytest.fixture
def data_dir(settings: Settings) -> Path:
    return settings.data_dir


# Quota and default object size limit of the storage tests' server: small enough
# that tests can fill them, larger than the 10 MiB cap on other request bodies.
STORAGE_QUOTA_BYTES = 48 * 1024 * 1024
STORAGE_FILE_SIZE_LIMIT = 32 * 1024 * 1024


@pytest.fixture(scope="session", params=["local", "s3"])
def storage_settings(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings of the server the storage tests run against, and the one place to choose them.

    Every storage test runs twice: on the local folder backend and on S3 (moto).
    """
    backend: dict[str, Any] = {"storage_backend": "local"}
    if request.param == "s3":
        backend = s3_settings(request.getfixturevalue("s3_server"))
    return settings.model_copy(
        update={
            "control_database": f"zbaas_test_{secrets.token_hex(6)}",
            "data_dir": tmp_path_factory.mktemp("storage-data"),
            "storage_quota_bytes": STORAGE_QUOTA_BYTES,
            "storage_file_size_limit": STORAGE_FILE_SIZE_LIMIT,
            **backend,
        }
    )


@pytest.fixture(scope="session")
def storage_api(storage_settings: Settings, server_url: str) -> Iterator[ThreadedServer]:
    """A server of its own for the storage tests, built from ``storage_settings``."""
    server = ThreadedServer(storage_settings)
    server.start()
    yield server
    server.stop()
    drop_leftovers(server_url, storage_settings.control_database)
