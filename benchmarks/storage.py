"""Upload and download of a large object through the API against copying the file on disk.

Run: ``.venv/bin/python benchmarks/storage.py [--size-mb 200] [--backend local|s3] [--rounds 3]``
(embedded PostgreSQL 18, or the server in ``ZBAAS_DATABASE_URL``). The API
server runs as its own ``zbaas serve`` process on loopback. With ``--backend s3``
an S3-compatible server (moto) runs on loopback too, in a process of its own.

Each round has three timed steps. It copies the source file to another file
in the same folder with 1 MiB reads and writes, which is the floor. It uploads
the file with ``PUT /projects/{id}/storage/objects/default/{path}``, the body
streamed from the file by httpx. It downloads the object with ``GET`` of the
same path into a file and checks the source's MD5. With ``--backend s3`` it
also sends the file to moto with boto3 and reads it back, as a second floor.

Printed: the median throughput of each step, the ratios to the floors, and
the server's peak RSS during each transfer above its idle RSS (after a 1 MiB
warm-up transfer), sampled with psutil every 10 ms. Target: peak under
100 MB above idle.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import boto3
import httpx
import psutil
from boto3.s3.transfer import TransferConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _support import postgres_server, sign_in, zbaas_server  # noqa: E402

from tests.conftest import moto_server  # noqa: E402

MB = 1024 * 1024
CLIENT_CHUNK = MB
SAMPLE_SECONDS = 0.01
TARGET_RSS_MB = 100
BUCKET = "default"


class PeakRss:
    """Peak resident memory of one process while the block runs, sampled in a thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_source(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` and return their MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "wb") as handle:
        for first in range(0, size, MB):
            chunk = os.urandom(min(MB, size - first))
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(MB):
            digest.update(chunk)
    return digest.hexdigest()


def read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CLIENT_CHUNK):
            yield chunk


def disk_copy(source: Path, target: Path) -> float:
    """Copy the file with plain reads and writes, as the server's own file I/O would; seconds."""
    started = time.perf_counter()
    with open(target, "wb") as handle:
        for chunk in read_chunks(source):
            handle.write(chunk)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def upload(client: httpx.Client, endpoint: str, source: Path) -> float:
    """PUT the file with a streamed body; seconds until the response arrives."""
    started = time.perf_counter()
    response = client.put(
        endpoint,
        content=read_chunks(source),
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(source.stat().st_size),
        },
    )
    seconds = time.perf_counter() - started
    if response.status_code not in (200, 201):
        raise RuntimeError(f"upload failed with {response.status_code}: {response.text[:500]}")
    return seconds


def download(client: httpx.Client, endpoint: str, target: Path) -> float:
    """GET the object into a file; seconds until its last byte is written."""
    started = time.perf_counter()
    with client.stream("GET", endpoint) as response, open(target, "wb") as handle:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"download failed with {response.status_code}: {response.text}")
        for chunk in response.iter_raw(CLIENT_CHUNK):
            handle.write(chunk)
    return time.perf_counter() - started


def s3_direct(env: dict[str, str], source: Path, target: Path) -> tuple[float, float]:
    """Upload and download the file with boto3 straight to the S3 server; seconds of each.

    The upload sends the same 8 MiB parts, one at a time, as the S3 backend does.
    The download is one streamed GetObject, as in the backend.
    """
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=env["ZBAAS_S3_ENDPOINT_URL"],
        region_name=env["ZBAAS_S3_REGION"],
        aws_access_key_id=env["ZBAAS_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["ZBAAS_S3_SECRET_ACCESS_KEY"],
    )
    config = TransferConfig(multipart_chunksize=8 * MB, max_concurrency=1, use_threads=False)
    bucket, key = env["ZBAAS_S3_BUCKET"], f"direct/{secrets.token_hex(4)}"
    try:
        started = time.perf_counter()
        client.upload_file(str(source), bucket, key, Config=config)
        uploaded = time.perf_counter() - started
        started = time.perf_counter()
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with open(target, "wb") as handle:
            for chunk in body.iter_chunks(CLIENT_CHUNK):
                handle.write(chunk)
        downloaded = time.perf_counter() - started
        client.delete_object(Bucket=bucket, Key=key)
    finally:
        client.close()
    target.unlink(missing_ok=True)
    return uploaded, downloaded


def storage_env(backend: str, size: int, rounds: int, stack: ExitStack) -> dict[str, str]:
    """Server settings that allow the benchmark's objects, on the chosen backend."""
    env = {
        "ZBAAS_STORAGE_FILE_SIZE_LIMIT": str(2 * size),
        # Every round uploads to a new path.
        "ZBAAS_STORAGE_QUOTA_BYTES": str((rounds + 2) * size),
    }
    if backend == "s3":
        env |= {
            "ZBAAS_STORAGE_BACKEND": "s3",
            "ZBAAS_S3_ENDPOINT_URL": stack.enter_context(moto_server()),
            "ZBAAS_S3_BUCKET": f"zbaas-bench-{secrets.token_hex(4)}",
            "ZBAAS_S3_REGION": "us-east-1",
            "ZBAAS_S3_ACCESS_KEY_ID": "zbaas-bench",
            "ZBAAS_S3_SECRET_ACCESS_KEY": "zbaas-bench-secret",
        }
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="object size, MiB")
    parser.add_argument("--backend", choices=["local", "s3"], default="local")
    parser.add_argument("--rounds", type=int, default=3, help="transfers of each kind")
    args = parser.parse_args()
    size = args.size_mb * MB

    copies: list[float] = []
    uploads: list[float] = []
    downloads: list[float] = []
    direct_uploads: list[float] = []
    direct_downloads: list[float] = []
    upload_peaks: list[int] = []
    download_peaks: list[int] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zbaas-bench-")))
        source = work / "source.bin"
        source_md5 = make_source(source, size)
        small = work / "small.bin"
        make_source(small, MB)

        env = storage_env(args.backend, size, args.rounds, stack)
        server_url = stack.enter_context(postgres_server())
        url, process = stack.enter_context(zbaas_server(server_url, env))
        server = psutil.Process(process.pid)
        client = stack.enter_context(httpx.Client(base_url=url, timeout=600))
        client.headers.update(sign_in(url))
        created = client.post(
            "/projects", json={"name": "Storage", "slug": f"bench-{secrets.token_hex(3)}"}
        )
        created.raise_for_status()
        project_id = created.json()["id"]
        stack.callback(lambda: client.delete(f"/projects/{project_id}"))
        objects = f"/projects/{project_id}/storage/objects/{BUCKET}/bench"

        # A first small transfer loads what the server imports lazily (the S3 client).
        upload(client, f"{objects}/warm-up.bin", small)
        download(client, f"{objects}/warm-up.bin", work / "warm-up.bin")
        idle = server.memory_info().rss

        for index in range(args.rounds):
            copies.append(disk_copy(source, work / "copy.bin"))
            endpoint = f"{objects}/round-{index}.bin"
            with PeakRss(server) as peak:
                uploads.append(upload(client, endpoint, source))
            upload_peaks.append(peak.peak)
            target = work / "download.bin"
            with PeakRss(server) as peak:
                downloads.append(download(client, endpoint, target))
            download_peaks.append(peak.peak)
            if target.stat().st_size != size or file_md5(target) != source_md5:
                raise RuntimeError("the downloaded object differs from the uploaded file")
            target.unlink()
            if args.backend == "s3":
                direct_up, direct_down = s3_direct(env, source, work / "direct.bin")
                direct_uploads.append(direct_up)
                direct_downloads.append(direct_down)

    def rate(seconds: list[float]) -> float:
        return args.size_mb / statistics.median(seconds)

    floor, up, down = rate(copies), rate(uploads), rate(downloads)
    above_idle = (max(upload_peaks + download_peaks) - idle) / MB
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"backend: {args.backend}, object {args.size_mb} MiB, {args.rounds} rounds (medians)")
    print(f"disk copy (floor):  {floor:8.1f} MiB/s")
    print(f"upload via API:     {up:8.1f} MiB/s   ratio {up / floor:.2f}")
    print(f"download via API:   {down:8.1f} MiB/s   ratio {down / floor:.2f}")
    if direct_uploads:
        direct_up, direct_down = rate(direct_uploads), rate(direct_downloads)
        print(f"S3 upload, boto3:   {direct_up:8.1f} MiB/s   API/boto3 {up / direct_up:.2f}")
        print(f"S3 download, boto3: {direct_down:8.1f} MiB/s   API/boto3 {down / direct_down:.2f}")
    print(f"server RSS idle:    {idle / MB:8.1f} MiB (after a 1 MiB warm-up transfer)")
    print(f"peak during upload:   {(max(upload_peaks) - idle) / MB:+8.1f} MiB above idle")
    print(f"peak during download: {(max(download_peaks) - idle) / MB:+8.1f} MiB above idle")
    verdict = "met" if above_idle < TARGET_RSS_MB else "missed"
    print(f"target: peak under {TARGET_RSS_MB} MB above idle ({verdict})")


if __name__ == "__main__":
    main()
