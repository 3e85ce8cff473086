"""Streaming transfers with a progress bar: downloads into files, uploads from them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import httpx
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from zbaas.cli import output
from zbaas.cli.errors import CliError

CHUNK_BYTES = 1024 * 1024


class BytesColumn(ProgressColumn):
    """Bytes so far, and the total when it is known in advance."""

    def render(self, task: Task) -> Text:
        done = output.size(task.completed)
        text = f"{done} of {output.size(task.total)}" if task.total is not None else done
        return Text(text, style="progress.download")


class SpeedColumn(ProgressColumn):
    """Bytes per second: rich's recent-window speed, else the average since the start."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(f"{output.size(speed or 0)}/s", style="progress.data.speed")


def progress_bar(total_known: bool) -> Progress:
    """Bytes, bytes per second and elapsed time on stderr; a bar when the total is known."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        *([BarColumn()] if total_known else []),
        BytesColumn(),
        SpeedColumn(),
        TimeElapsedColumn(),
        console=output.stderr,
    )


def copy_stream(
    chunks: Iterable[bytes], target: IO[bytes], description: str, total: int | None
) -> int:
    """Write ``chunks`` to ``target`` under a progress bar; return the byte count."""
    written = 0
    with progress_bar(total is not None) as progress:
        task = progress.add_task(description, total=total)
        for chunk in chunks:
            target.write(chunk)
            written += len(chunk)
            progress.update(task, completed=written)
    return written


# Downloads ask for the bytes as stored, so that they can be written as they arrive
# without passing through httpx's decoders.
IDENTITY = {"Accept-Encoding": "identity"}


def body_chunks(response: httpx.Response) -> Iterator[bytes]:
    """Yield a streamed response's body; raw unless the server encoded it anyway."""
    if response.headers.get("content-encoding", "identity") == "identity":
        return response.iter_raw()
    return response.iter_bytes(CHUNK_BYTES)


def check_writable(destination: Path) -> None:
    """Fail before a download when its file cannot be created."""
    if destination.is_dir():
        raise CliError(f"{destination} is a folder; give a file name", exit_code=2)
    if not destination.parent.is_dir():
        raise CliError(f"cannot write {destination}: the folder does not exist", exit_code=2)


def save_download(chunks: Iterable[bytes], destination: Path, total: int | None = None) -> int:
    """Stream into a temporary file beside ``destination`` and move it there when complete.

    A failed or interrupted download leaves no partial file, and an older file of the
    same name stays as it was.
    """
    partial = destination.with_name(f".{destination.name}.part-{os.getpid()}")
    try:
        with partial.open("wb") as file:
            written = copy_stream(chunks, file, destination.name, total)
        partial.replace(destination)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CliError(f"cannot write {destination}: {exc.strerror}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written


def read_chunks(file: IO[bytes], description: str, total: int | None) -> Iterator[bytes]:
    """Yield a file's bytes for an upload body, advancing a progress bar as they are sent."""
    with progress_bar(total is not None) as progress:
        task = progress.add_task(description, total=total)
        sent = 0
        while chunk := file.read(CHUNK_BYTES):
            sent += len(chunk)
            yield chunk
            progress.update(task, completed=sent)
