"""Object upload and download through the storage API against a bare HTTP file server.

Run: ``.venv/bin/python benchmarks/storage.py [--mb 200] [--small-mb 10] [--rounds 5]``
(starts embedded PostgreSQL 18, or uses ``ZBAAS_DATABASE_URL``, and a ``zbaas serve``
process with the local backend, and removes both at the end).

For a large and a small object it prints the median throughput of a raw
``PUT /storage/v1/object/default/...`` (chunked, 1 MiB pieces) and of a ``GET``
of it. The floor is a bare ASGI app under uvicorn, in a process of its own like
the server, that writes the request body to a file and streams the file back:
the same HTTP stack without keys, metadata or checks. Plain Python file writes
and reads of the same bytes are printed too. It also prints the peak resident
memory (RSS) of the server process during the transfers, sampled every 10 ms.
Targets: peak RSS of the two sizes within 30 MB of each other, because both
directions stream. For the large object, API throughput at least 0.3 of the
bare HTTP floor for uploads, which the local backend also hashes (MD5, for the
ETag), and at least 0.5 for downloads. The small object shows the fixed cost
of a request (key lookup, metadata queries) more.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import postgres_server, sign_in, zbaas_server  # noqa: E402

MB = 1024 * 1024
CHUNK = MB
SAMPLE_SECONDS = 0.01


class PeakRss:
    """Sample a process's RSS in a thread until stopped; keep the highest value."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chunks(total: int) -> Iterator[bytes]:
    piece = os.urandom(CHUNK)
    sent = 0
    while sent < total:
        size = min(CHUNK, total - sent)
        sent += size
        yield piece[:size]


def file_round(folder: Path, size: int) -> tuple[float, float]:
    """Seconds to write and to read ``size`` bytes as a file, Python's plain file I/O."""
    path = folder / "floor.bin"
    started = time.perf_counter()
    with open(path, "wb") as handle:
        for piece in chunks(size):
            handle.write(piece)
    written = time.perf_counter()
    with open(path, "rb") as handle:
        while handle.read(256 * 1024):
            pass
    read = time.perf_counter()
    path.unlink()
    return written - started, read - written


def http_round(
    http: httpx.Client, headers: dict[str, str], url: str, size: int
) -> tuple[float, float]:
    """Seconds to PUT ``size`` bytes to ``url`` and to GET them back."""
    started = time.perf_counter()
    response = http.put(
        url, content=chunks(size), headers={**headers, "Content-Type": "application/octet-stream"}
    )
    response.raise_for_status()
    uploaded = time.perf_counter()
    received = 0
    with http.stream("GET", url, headers=headers) as download:
        download.raise_for_status()
        for piece in download.iter_raw():
            received += len(piece)
    downloaded = time.perf_counter()
    assert received == size, (received, size)
    return uploaded - started, downloaded - uploaded


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """PUT writes the body to a file of the folder in $BENCH_FOLDER; GET streams it back."""
    if scope["type"] != "http":
        return
    path = Path(os.environ["BENCH_FOLDER"]) / Path(scope["path"]).name
    if scope["method"] == "PUT":
        with open(path, "wb") as handle:
            more = True
            while more:
                message = await receive()
                handle.write(message.get("body", b""))
                more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    if not path.is_file():
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    size = path.stat().st_size
    headers = [(b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    with open(path, "rb") as handle:
        while piece := handle.read(256 * 1024):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@contextmanager
def bare_server(folder: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "storage:bare_app", "--port", str(port)]
    env = {**os.environ, "BENCH_FOLDER": folder, "PYTHONPATH": str(Path(__file__).parent)}
    process = subprocess.Popen([*command, "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/ping")
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the bare HTTP server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the large object, MiB")
    parser.add_argument("--small-mb", type=int, default=10, help="size of the small object, MiB")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per size and side")
    args = parser.parse_args()
    os.environ["ZBAAS_STORAGE_FILE_SIZE_LIMIT"] = str((args.mb + 1) * MB)
    os.environ["ZBAAS_STORAGE_QUOTA_BYTES"] = str(
        (args.rounds + 1) * (args.mb + args.small_mb) * MB
    )

    with (
        postgres_server() as server_url,
        zbaas_server(server_url) as (url, process),
        tempfile.TemporaryDirectory(prefix="zbaas-bench-floor-") as floor_dir,
        bare_server(floor_dir) as bare_url,
        httpx.Client(base_url=url, timeout=600) as http,
        httpx.Client(base_url=bare_url, timeout=600) as bare,
    ):
        owner = sign_in(url)
        project = http.post(
            "/projects", json={"name": "Storage bench", "slug": "storage-bench"}, headers=owner
        ).json()
        key = http.post(
            f"/projects/{project['id']}/keys",
            json={"name": "bench", "type": "secret"},
            headers=owner,
        ).json()["key"]
        headers = {"apikey": key, "Authorization": f"Bearer {key}"}
        server = psutil.Process(process.pid)

        print(
            f"{'object':>8} {'side':>8} {'API MB/s':>9} {'bare HTTP MB/s':>15} {'ratio':>6} "
            f"{'file MB/s':>10}"
        )
        peaks: dict[int, int] = {}
        for label_mb in (args.small_mb, args.mb):
            size = label_mb * MB
            api: list[tuple[float, float]] = []
            floor: list[tuple[float, float]] = []
            files: list[tuple[float, float]] = []
            with PeakRss(server) as rss:
                for index in range(args.rounds):
                    name = f"bench-{label_mb}-{index}.bin"
                    files.append(file_round(Path(floor_dir), size))
                    floor.append(http_round(bare, {}, f"/{name}", size))
                    api.append(
                        http_round(http, headers, f"/storage/v1/object/default/{name}", size)
                    )
            peaks[label_mb] = rss.peak
            for side, column in (("upload", 0), ("download", 1)):
                api_rate, floor_rate, file_rate = (
                    size / MB / statistics.median(r[column] for r in runs)
                    for runs in (api, floor, files)
                )
                print(
                    f"{label_mb:>5}MiB {side:>8} {api_rate:>9.1f} {floor_rate:>15.1f} "
                    f"{api_rate / floor_rate:>6.2f} {file_rate:>10.1f}"
                )
        small, large = peaks[args.small_mb], peaks[args.mb]
        print(
            f"peak server RSS: {small / MB:.1f} MB with {args.small_mb} MiB objects, "
            f"{large / MB:.1f} MB with {args.mb} MiB objects, "
            f"difference {(large - small) / MB:.1f} MB"
        )
        http.delete(f"/projects/{project['id']}", headers=owner)


if __name__ == "__main__":
    main()
