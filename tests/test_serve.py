"""``zbaas serve`` as a user runs it: embedded PostgreSQL in a data folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from tests.conftest import free_port
from zbaas.platform.schema import SCHEMA_VERSIONS

pytestmark = pytest.mark.slow


def _serve(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZBAAS_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zbaas.cli.main",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--log-level",
            "warning",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_healthy(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"zbaas serve exited: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("zbaas serve did not become healthy")


def _embedded_conn(data_dir: Path) -> psycopg.Connection:
    port = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[3]
    password = (data_dir / "postgres_password").read_text().strip()
    return psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", password=password, dbname="zbaas"
    )


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    # Outside pytest's temporary folder, which each pytest start resets to mode 0700.
    folder = Path(tempfile.mkdtemp(prefix="zbaas-test-serve-"))
    data_dir = folder / "data"
    port = free_port()
    process = _serve(data_dir, port)
    try:
        _wait_healthy(process, port)
        yield process, data_dir, port
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_serve_starts_embedded_postgres(served: tuple[subprocess.Popen[str], Path, int]) -> None:
    _, data_dir, _ = served

    with _embedded_conn(data_dir) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
        schema = conn.execute("SELECT max(version) FROM schema_version").fetchone()

    assert version is not None and int(version[0]) >= 180000
    assert preload is not None and "pg_stat_statements" in preload[0]
    assert schema == (len(SCHEMA_VERSIONS),)


def test_second_serve_on_same_folder_fails(
    served: tuple[subprocess.Popen[str], Path, int],
) -> None:
    _, data_dir, _ = served

    second = _serve(data_dir, free_port())
    _, stderr = second.communicate(timeout=60)

    assert second.returncode == 1
    assert "in use by another zbaas process" in stderr


def test_serve_stops_postgres_on_exit(served: tuple[subprocess.Popen[str], Path, int]) -> None:
    process, data_dir, _ = served

    process.terminate()
    process.wait(timeout=60)

    assert not (data_dir / "postgres" / "postmaster.pid").exists()


def test_serve_restarts_on_existing_folder(
    served: tuple[subprocess.Popen[str], Path, int],
) -> None:
    process, data_dir, _ = served
    process.terminate()
    process.wait(timeout=60)
    port = free_port()

    again = _serve(data_dir, port)
    try:
        _wait_healthy(again, port)
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        again.terminate()
        again.wait(timeout=60)


def test_serve_with_two_workers_shares_one_postgres() -> None:
    folder = Path(tempfile.mkdtemp(prefix="zbaas-test-serve-"))
    data_dir = folder / "data"
    port = free_port()
    process = _serve(data_dir, port, "--workers", "2")
    try:
        _wait_healthy(process, port)
        workers = [
            child
            for child in psutil.Process(process.pid).children(recursive=True)
            if "postgres" not in child.name()
        ]
        assert len(workers) >= 2

        base = f"http://127.0.0.1:{port}"
        email = f"workers-{time.time_ns()}@example.com"
        password = "correct horse battery"
        signup = {"email": email, "password": password, "full_name": "W"}
        assert httpx.post(f"{base}/auth/signup", json=signup, timeout=60).status_code == 201
        # A connection each, so requests land on either worker; every one of them
        # must accept the tokens the other signed.
        for _ in range(6):
            login = httpx.post(
                f"{base}/auth/login", json={"email": email, "password": password}, timeout=60
            )
            assert login.status_code == 200
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            assert httpx.get(f"{base}/projects", headers=headers, timeout=60).status_code == 200

        process.terminate()
        process.wait(timeout=60)
        assert not (data_dir / "postgres" / "postmaster.pid").exists()
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
