"""Backup download through the API against raw pg_dump to a file, for a small and a large project.

Run: ``.venv/bin/python benchmarks/backup.py`` (starts embedded PostgreSQL 18 in a
temporary folder and a ``zbaas serve`` process on it, and removes both at the end).

For each project size it prints the peak resident memory (RSS) of the API server
process while it streams the backup, sampled with psutil every 10 ms. It also
prints the throughput of the download against the bundled pg_dump writing the
same database to a file. Targets: peak RSS of the two sizes within 30 MB of each other, and a
throughput ratio of at least 0.8.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from zbaas.postgres.embedded import EmbeddedPostgres
from zbaas.tenant import backup

MB = 1024 * 1024
# Each filler row carries 960 characters of text, about 1 KB on disk and in the dump.
ROW_BYTES = 1024
# (label, target database size in MB, rounds per side)
PROJECTS = [("20 MB", 20, 5), ("1 GB", 1024, 2)]
SAMPLE_SECONDS = 0.01
CURL = shutil.which("curl")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def api_server(server_url: str, data_dir: Path) -> Iterator[tuple[str, psutil.Process]]:
    """Run ``zbaas serve`` as its own process on ``server_url`` until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "ZBAAS_DATABASE_URL": server_url,
        "ZBAAS_DATA_DIR": str(data_dir),
        "ZBAAS_SECRET_KEY": secrets.token_urlsafe(48),
    }
    # The console script runs the server in its own process, the one that is sampled.
    command = [str(Path(sys.executable).parent / "zbaas"), "serve", "--port", str(port)]
    process = subprocess.Popen([*command, "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("zbaas serve did not start")
            time.sleep(0.2)
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def sign_in(client: httpx.Client) -> dict[str, str]:
    email = f"bench-{secrets.token_hex(4)}@example.com"
    body = {"email": email, "password": "benchmark password", "full_name": "Bench"}
    client.post("/auth/signup", json=body).raise_for_status()
    login = client.post("/auth/login", json={"email": email, "password": body["password"]})
    login.raise_for_status()
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def fill(server_url: str, db_name: str, megabytes: int) -> int:
    """Fill one table with about ``megabytes`` of rows; return the database size in bytes."""
    rows = megabytes * MB // ROW_BYTES
    with psycopg.connect(make_conninfo(server_url, dbname=db_name), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("CREATE TABLE public.filler (id integer PRIMARY KEY, payload text)")
        conn.execute(
            "INSERT INTO public.filler SELECT g, repeat(md5(g::text), 30) "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE public.filler")
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Measure:
    seconds: float
    size: int


class RssSampler:
    """Record the peak RSS of one process, sampled in a background thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def raw_dump(server_url: str, db_name: str, target: Path) -> Measure:
    """Time the bundled pg_dump writing ``db_name`` to a file, connected as in the API."""
    password = conninfo_to_dict(server_url).get("password")
    passfile = backup.write_passfile(str(password)) if password else None
    try:
        env = backup.libpq_environment(server_url, db_name, passfile)
        started = time.perf_counter()
        subprocess.run(
            [str(backup.pg_dump_path()), "--format=plain", f"--file={target}"],
            env=env,
            check=True,
        )
        seconds = time.perf_counter() - started
    finally:
        if passfile is not None:
            passfile.unlink()
    size = target.stat().st_size
    target.unlink()
    return Measure(seconds, size)


def api_dump(url: str, headers: dict[str, str], project_id: str, target: Path) -> Measure:
    """Time the API backup download to a file, with curl where installed, else httpx.

    curl is the default because it is a C client like pg_dump's own file output:
    httpx spends more CPU per byte than the server does, and on a machine with few
    cores it would slow the download it measures.
    """
    endpoint = f"{url}/projects/{project_id}/database/backup"
    started = time.perf_counter()
    if CURL is not None:
        header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
        subprocess.run(
            [CURL, "--silent", "--fail", "-X", "POST", *header_args, "-o", str(target), endpoint],
            check=True,
        )
    else:
        with (
            httpx.stream("POST", endpoint, headers=headers, timeout=600) as response,
            open(target, "wb") as handle,
        ):
            response.raise_for_status()
            for chunk in response.iter_raw(MB):
                handle.write(chunk)
    seconds = time.perf_counter() - started
    size = target.stat().st_size
    target.unlink()
    return Measure(seconds, size)


def throughput(measures: list[Measure]) -> float:
    """Median throughput in MB/s."""
    return statistics.median(m.size / m.seconds / MB for m in measures)


def bench_project(
    client: httpx.Client,
    server_url: str,
    url: str,
    headers: dict[str, str],
    server: psutil.Process,
    work: Path,
    label: str,
    megabytes: int,
    rounds: int,
) -> dict[str, float]:
    slug = f"bench-{secrets.token_hex(3)}"
    created = client.post("/projects", json={"name": f"Backup {label}", "slug": slug})
    created.raise_for_status()
    project = created.json()
    try:
        started = time.perf_counter()
        db_size = fill(server_url, project["db_name"], megabytes)
        fill_seconds = time.perf_counter() - started
        print(f"{label}: database {db_size / MB:.0f} MB, filled in {fill_seconds:.0f} s")

        # Alternate the two sides so that neither gets a warmer cache.
        raw: list[Measure] = []
        api: list[Measure] = []
        baseline = server.memory_info().rss
        with RssSampler(server) as sampler:
            for _ in range(rounds):
                raw.append(raw_dump(server_url, project["db_name"], work / "raw.sql"))
                api.append(api_dump(url, headers, project["id"], work / "api.sql"))
        return {
            "dump_mb": api[-1].size / MB,
            "baseline_rss_mb": baseline / MB,
            "peak_rss_mb": sampler.peak / MB,
            "raw_mb_s": throughput(raw),
            "api_mb_s": throughput(api),
        }
    finally:
        client.delete(f"/projects/{project['id']}").raise_for_status()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="zbaas-bench-backup-"))
    embedded = EmbeddedPostgres(work / "embedded")
    try:
        server_url = embedded.start()
        with (
            api_server(server_url, work / "data") as (url, server),
            httpx.Client(base_url=url, timeout=600) as client,
        ):
            headers = sign_in(client)
            client.headers.update(headers)
            results = {
                label: bench_project(
                    client, server_url, url, headers, server, work, label, megabytes, rounds
                )
                for label, megabytes, rounds in PROJECTS
            }
    finally:
        embedded.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"{'project':8} {'dump MB':>8} {'RSS before':>11} {'peak RSS':>9} "
        f"{'raw MB/s':>9} {'API MB/s':>9} {'API/raw':>8}"
    )
    for label, r in results.items():
        print(
            f"{label:8} {r['dump_mb']:8.0f} {r['baseline_rss_mb']:10.1f}M {r['peak_rss_mb']:8.1f}M "
            f"{r['raw_mb_s']:9.1f} {r['api_mb_s']:9.1f} {r['api_mb_s'] / r['raw_mb_s']:8.2f}"
        )
    small, large = (results[label] for label, _, _ in PROJECTS)
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    print()
    print(f"download client: {CURL or 'httpx'}")
    print(f"peak RSS, 1 GB minus 20 MB project: {growth:+.1f} MB (target: within 30 MB)")
    print("throughput ratio API/raw pg_dump: target at least 0.8")


if __name__ == "__main__":
    main()
