"""``zbaas backup``: download a project's database as a pg_dump file, with progress."""

from __future__ import annotations

import re
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path
from zbaas.cli.transfer import IDENTITY, body_chunks, check_writable, copy_stream, save_download


class DumpFormat(StrEnum):
    plain = "plain"
    custom = "custom"


def attachment_name(disposition: str | None) -> str | None:
    """Return the file name of a Content-Disposition header, without any folder part."""
    match = re.search(r'filename="([^"/\\]+)"', disposition or "")
    return match.group(1) if match else None


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
        with api.stream("POST", path, params=params, headers=IDENTITY) as response:
            chunks = body_chunks(response)
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
