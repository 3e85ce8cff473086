"""``zbaas backup``: download a project's database as a pg_dump file, with progress."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.progress import (
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path
from zbaas.cli.errors import CliError

CHUNK_BYTES = 256 * 1024


class DumpFormat(StrEnum):
    plain = "plain"
    custom = "custom"


def attachment_name(disposition: str | None) -> str | None:
    """The file name of a Content-Disposition header, without any folder part."""
    match = re.search(r'filename="([^"/\\]+)"', disposition or "")
    return match.group(1) if match else None


class BytesColumn(ProgressColumn):
    """Bytes transferred so far; the total of a pg_dump stream is not known in advance."""

    def render(self, task: Task) -> Text:
        return Text(output.size(task.completed), style="progress.download")


class SpeedColumn(ProgressColumn):
    """Bytes per second: rich's recent-window speed, else the average since the start."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(f"{output.size(speed or 0)}/s", style="progress.data.speed")


def progress_bar() -> Progress:
    """Bytes so far, bytes per second and elapsed time, on stderr."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BytesColumn(),
        SpeedColumn(),
        TimeElapsedColumn(),
        console=output.stderr,
        transient=False,
    )


def copy_stream(
    chunks: Iterable[bytes], target: IO[bytes], description: str, total: int | None
) -> int:
    """Write ``chunks`` to ``target`` under a progress bar; return the byte count."""
    written = 0
    with progress_bar() as progress:
        task = progress.add_task(description, total=total)
        for chunk in chunks:
            target.write(chunk)
            written += len(chunk)
            progress.update(task, completed=written)
    return written


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


def check_writable(destination: Path) -> None:
    """Fail before the download when the file cannot be created."""
    if destination.is_dir():
        raise CliError(f"{destination} is a folder; give a file name", exit_code=2)
    if not destination.parent.is_dir():
        raise CliError(f"cannot write {destination}: the folder does not exist", exit_code=2)


def backup(
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write; '-' writes to stdout. "
            "Default: the server's name, <slug>-<UTC time>.sql or .dump, in this folder.",
        ),
    ] = None,
    dump_format: Annotated[
        DumpFormat,
        typer.Option(
            "--format",
            help="plain: a SQL script for psql; custom: pg_restore's archive format.",
        ),
    ] = DumpFormat.plain,
    schema_only: Annotated[
        bool, typer.Option(help="Dump the schema without the tables' rows.")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download the project's database as a pg_dump file, showing bytes and bytes per second.

    A failed download removes its partial file. --json prints the file, its size in
    bytes and the seconds taken.
    """
    if output_file is not None and str(output_file) != "-":
        check_writable(output_file)
    started = time.monotonic()
    params = {"format": dump_format.value, "schema_only": str(schema_only).lower()}
    with Api.from_environment() as api:
        path = project_path(api, project, "database", "backup")
        with api.stream("POST", path, params=params) as response:
            chunks = response.iter_bytes(CHUNK_BYTES)
            if str(output_file) == "-":
                destination = None
                written = copy_stream(chunks, sys.stdout.buffer, "backup", None)
            else:
                name = attachment_name(response.headers.get("content-disposition"))
                destination = output_file or Path(name or "backup.sql")
                written = save_download(chunks, destination)
    seconds = time.monotonic() - started

    if as_json and destination is not None:
        output.print_json({"file": str(destination), "bytes": written, "seconds": seconds})
    elif destination is not None:
        output.done(f"Wrote {output.size(written)} to {destination} in {seconds:.1f} s.")
