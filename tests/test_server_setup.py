"""Server set-up that several API processes run at the same moment."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

from tests.conftest import drop_leftovers
from zbaas.app import start_services
from zbaas.config import Settings
from zbaas.postgres import server


async def _create_concurrently(server_url: str, dbname: str, processes: int) -> None:
    connections = [
        await psycopg.AsyncConnection.connect(server_url, autocommit=True) for _ in range(processes)
    ]
    try:
        await asyncio.gather(*(server.ensure_database(conn, dbname) for conn in connections))
    finally:
        for conn in connections:
            await conn.close()


def test_concurrent_ensure_database_succeeds(server_url: str) -> None:
    for _ in range(5):
        dbname = f"zbaas_race_{uuid.uuid4().hex[:10]}"
        try:
            asyncio.run(_create_concurrently(server_url, dbname, 6))
            with psycopg.connect(server_url) as conn:
                found = conn.execute(
                    "SELECT count(*) FROM pg_database WHERE datname = %s", (dbname,)
                ).fetchone()
            assert found == (1,)
        finally:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))


async def _start_concurrently(settings: Settings, processes: int) -> None:
    started = await asyncio.gather(*(start_services(settings) for _ in range(processes)))
    for services, _, _ in started:
        await services.storage.close()
        await services.pools.close()


def test_concurrent_start_on_one_server(settings: Settings, server_url: str) -> None:
    fresh = settings.model_copy(update={"control_database": f"zbaas_test_{uuid.uuid4().hex[:12]}"})
    try:
        # The first round creates everything; later ones meet at the shared steps.
        for _ in range(4):
            asyncio.run(_start_concurrently(fresh, 8))
    finally:
        drop_leftovers(server_url, fresh.control_database)


def _resolve_key(data_dir: str, start: float) -> str:
    while time.monotonic() < start:
        pass
    return Settings(data_dir=Path(data_dir), secret_key=None).resolved_secret_key


def test_processes_agree_on_generated_secret_key(tmp_path: Path) -> None:
    for attempt in range(5):
        data_dir = tmp_path / f"data-{attempt}"
        start = time.monotonic() + 1.0
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(6, mp_context=context) as pool:
            keys = list(pool.map(_resolve_key, [str(data_dir)] * 6, [start] * 6))

        assert len(set(keys)) == 1
        assert len(keys[0]) >= 32
        assert sorted(path.name for path in data_dir.iterdir()) == ["secret_key"]
