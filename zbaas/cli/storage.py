"""``zbaas storage``: upload, download, list and delete a project's stored files.

Objects are named ``BUCKET/PATH``; every project has the bucket ``default``.
Transfers stream in both directions, so a file never has to fit in memory.
"""

from __future__ import annotations

import mimetypes
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer

from zbaas.cli import output
from zbaas.cli.client import Api, segment
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path, resolve_project
from zbaas.cli.errors import CliError
from zbaas.cli.transfer import (
    IDENTITY,
    body_chunks,
    check_writable,
    copy_stream,
    read_chunks,
    save_download,
)

app = typer.Typer(
    help="Upload, download, list and delete a project's files (BUCKET/PATH).",
    no_args_is_help=True,
)

MAX_PAGE = 1000


def split_target(target: str) -> tuple[str, str]:
    """Split 'avatars/2024/me.png' into ('avatars', '2024/me.png'); the path may be empty."""
    bucket, _, name = target.partition("/")
    if not bucket:
        raise CliError(f"invalid object {target!r}: write BUCKET/PATH", exit_code=2)
    return bucket, name


def object_path(project_id: str, bucket: str, name: str) -> str:
    """Return the management path of one object; the name keeps its slashes as folders."""
    if not name:
        raise CliError(
            f"no object path after the bucket {bucket!r}: write BUCKET/PATH", exit_code=2
        )
    parts = "/".join(segment(part) for part in name.split("/"))
    return f"/projects/{project_id}/storage/objects/{segment(bucket)}/{parts}"


def _upload_name(source: Path, name: str) -> str:
    """Return the object's name: the given path, or the file's name under a folder ending in '/'."""
    if name and not name.endswith("/"):
        return name
    if str(source) == "-":
        raise CliError("give the object's path when uploading stdin: BUCKET/PATH", exit_code=2)
    return name + source.name


@app.command()
def put(
    source: Annotated[Path, typer.Argument(help="File to upload; '-' reads stdin.")],
    target: Annotated[
        str,
        typer.Argument(
            help="BUCKET/PATH to store it as; 'BUCKET' or 'BUCKET/folder/' keeps the file's name."
        ),
    ],
    content_type: Annotated[
        str | None,
        typer.Option(help="Content-Type to store; default: guessed from the name, else binary."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a file, replacing an object of the same name, with a progress bar."""
    bucket, name = split_target(target)
    name = _upload_name(source, name)
    media_type = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    if str(source) == "-":
        file, size = sys.stdin.buffer, None
    else:
        try:
            file = source.open("rb")
        except OSError as exc:
            raise CliError(f"cannot read {source}: {exc.strerror}", exit_code=2) from None
        size = source.stat().st_size

    headers = {"Content-Type": media_type}
    if size is not None:
        headers["Content-Length"] = str(size)
    with file, Api.from_environment() as api:
        path = object_path(resolve_project(api, project), bucket, name)
        body = read_chunks(file, f"{bucket}/{name}", size)
        with api.stream("PUT", path, content=body, headers=headers) as response:
            response.read()

    def render(stored: dict[str, Any]) -> None:
        verb = "Replaced" if response.status_code == 200 else "Uploaded"
        output.done(
            f"{verb} {stored['bucket']}/{stored['name']} "
            f"({output.size(stored['size'])}, {stored['content_type']})."
        )

    output.show(response, as_json, render)


@app.command()
def get(
    source: Annotated[str, typer.Argument(help="BUCKET/PATH of the object.")],
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write; '-' writes to stdout. Default: the object's file name "
            "in this folder.",
        ),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download an object with a progress bar; a failed download leaves no partial file.

    --json prints the file, its size in bytes and the seconds taken.
    """
    bucket, name = split_target(source)
    to_stdout = str(output_file) == "-"
    destination = None if to_stdout else output_file or Path(PurePosixPath(name).name or bucket)
    if destination is not None:
        check_writable(destination)

    started = time.monotonic()
    with Api.from_environment() as api:
        path = object_path(resolve_project(api, project), bucket, name)
        with api.stream("GET", path, headers=IDENTITY) as response:
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            chunks = body_chunks(response)
            if destination is None:
                written = copy_stream(chunks, sys.stdout.buffer, f"{bucket}/{name}", total)
            else:
                written = save_download(chunks, destination, total)
    seconds = time.monotonic() - started

    if destination is None:
        return
    if as_json:
        output.print_json({"file": str(destination), "bytes": written, "seconds": seconds})
    else:
        output.done(f"Wrote {output.size(written)} to {destination} in {seconds:.1f} s.")


def _render_buckets(buckets: list[dict[str, Any]]) -> None:
    output.table(
        ["bucket", "public", "file size limit", "allowed types", "created"],
        (
            (
                b["name"],
                b["public"],
                output.size(b["file_size_limit"]) if b["file_size_limit"] else "",
                b["allowed_mime_types"] or "",
                output.when(b["created_at"]),
            )
            for b in buckets
        ),
        empty="No buckets.",
    )


@app.command("ls")
def list_objects(
    target: Annotated[
        str | None,
        typer.Argument(
            show_default=False,
            help="BUCKET, or BUCKET/PREFIX for the objects whose path starts with PREFIX; "
            "without it, the buckets.",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_PAGE, help="Objects per page at most.")
    ] = 100,
    cursor: Annotated[
        str | None,
        typer.Option(help="Where the next page starts, as the previous page printed it."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the buckets, or one page of a bucket's objects by name."""
    with Api.from_environment() as api:
        if target is None:
            response = api.get(project_path(api, project, "storage", "buckets"))
            output.show(response, as_json, _render_buckets)
            return
        bucket, prefix = split_target(target)
        params = {"prefix": prefix, "limit": str(limit), "cursor": cursor or ""}
        response = api.get(project_path(api, project, "storage", "objects", bucket), params=params)

    def render(page: dict[str, Any]) -> None:
        output.table(
            ["name", "size", "type", "updated"],
            (
                (o["name"], output.size(o["size"]), o["content_type"], output.when(o["updated_at"]))
                for o in page["objects"]
            ),
            empty="No objects.",
        )
        if page["next_cursor"]:
            output.stderr.print(
                f"More objects: zbaas storage ls {target} --cursor {page['next_cursor']}",
                markup=False,
                highlight=False,
            )

    output.show(response, as_json, render)


@app.command("rm")
def remove(
    targets: Annotated[list[str], typer.Argument(help="BUCKET/PATH of each object to delete.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete objects, in the order given; the first failure stops."""
    with Api.from_environment() as api:
        project_id = resolve_project(api, project)
        for target in targets:
            bucket, name = split_target(target)
            api.delete(object_path(project_id, bucket, name))
            if not as_json:
                output.done(f"Deleted {bucket}/{name}.")
