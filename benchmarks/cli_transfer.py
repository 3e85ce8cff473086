"""``zbaas storage put`` and ``get`` against curl on the same endpoints, small and large files.

Run: ``.venv/bin/python benchmarks/cli_transfer.py`` (starts embedded PostgreSQL 18, or
uses ``ZBAAS_DATABASE_URL``, and a ``zbaas serve`` process, and removes both at the end).

For each file size it prints the CLI's peak resident memory (RSS), sampled with psutil
every 10 ms, and its throughput against curl uploading and downloading the same file
through the same endpoints. Targets: the CLI's peak RSS for the large file within
20 MiB of the small one (the file streams), and a throughput ratio of at least 0.7.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._support import postgres_server, sign_in, zbaas_server  # noqa: E402

MIB = 1024 * 1024
# (label, size in bytes, rounds per side)
SIZES = [("4 MiB", 4 * MIB, 5), ("512 MiB", 512 * MIB, 3)]
SAMPLE_SECONDS = 0.01
ZBAAS = Path(sys.executable).with_name("zbaas")
CURL = shutil.which("curl")


def run_sampled(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """Run ``command``; return its wall time in seconds and its peak RSS in bytes."""
    started = time.perf_counter()
    process = psutil.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(SAMPLE_SECONDS)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {process.stderr.read().decode()}")
    return elapsed, peak


def main() -> None:
    if CURL is None:
        raise SystemExit("curl is needed for the floor of this benchmark")
    # Room for the large file in one project.
    os.environ["ZBAAS_STORAGE_FILE_SIZE_LIMIT"] = str(1024 * MIB)
    os.environ["ZBAAS_STORAGE_QUOTA_BYTES"] = str(8 * 1024 * MIB)

    with (
        postgres_server() as server_url,
        zbaas_server(server_url) as (url, _),
        tempfile.TemporaryDirectory(prefix="zbaas-bench-cli-") as folder,
    ):
        work = Path(folder)
        headers = sign_in(url)
        slug = "bench-cli"
        project = httpx.post(
            f"{url}/projects", json={"name": "Bench", "slug": slug}, headers=headers, timeout=60
        ).json()
        token = headers["Authorization"].removeprefix("Bearer ")
        env = {**os.environ, "ZBAAS_URL": url, "ZBAAS_TOKEN": token, "ZBAAS_PROJECT": project["id"]}
        base = f"{url}/projects/{project['id']}/storage/objects/default"

        print(
            f"{'file':>8} {'side':>5} {'CLI MiB/s':>10} {'curl MiB/s':>11} {'ratio':>6} "
            f"{'CLI peak RSS':>13}"
        )
        for label, size, rounds in SIZES:
            source = work / "source.bin"
            with source.open("wb") as file:
                remaining = size
                while remaining:
                    chunk = os.urandom(min(remaining, 8 * MIB))
                    file.write(chunk)
                    remaining -= len(chunk)

            cli_put, curl_put, cli_get, curl_get, peaks = [], [], [], [], []
            for _ in range(rounds):
                seconds, peak = run_sampled(
                    [str(ZBAAS), "storage", "put", str(source), "default/cli.bin"], env, work
                )
                cli_put.append(seconds)
                peaks.append(peak)
                seconds, _ = run_sampled(
                    [
                        CURL,
                        "-sf",
                        "-X",
                        "PUT",
                        "-T",
                        str(source),
                        "-H",
                        f"Authorization: Bearer {token}",
                        "-H",
                        "Content-Type: application/octet-stream",
                        f"{base}/curl.bin",
                    ],
                    env,
                    work,
                )
                curl_put.append(seconds)
                seconds, peak = run_sampled(
                    [str(ZBAAS), "storage", "get", "default/cli.bin", "-o", "got.bin"], env, work
                )
                cli_get.append(seconds)
                peaks.append(peak)
                seconds, _ = run_sampled(
                    [
                        CURL,
                        "-sf",
                        "-o",
                        "curl-got.bin",
                        "-H",
                        f"Authorization: Bearer {token}",
                        f"{base}/curl.bin",
                    ],
                    env,
                    work,
                )
                curl_get.append(seconds)
                if (work / "got.bin").stat().st_size != size:
                    raise RuntimeError("the CLI downloaded a file of the wrong size")

            for side, cli_times, curl_times in (
                ("put", cli_put, curl_put),
                ("get", cli_get, curl_get),
            ):
                cli_rate = size / MIB / statistics.median(cli_times)
                curl_rate = size / MIB / statistics.median(curl_times)
                print(
                    f"{label:>8} {side:>5} {cli_rate:>10.1f} {curl_rate:>11.1f} "
                    f"{cli_rate / curl_rate:>6.2f} {max(peaks) / MIB:>9.1f} MiB"
                )

        httpx.delete(f"{url}/projects/{project['id']}", headers=headers, timeout=60)


if __name__ == "__main__":
    main()
