"""``zbaas indexes``: indexes on a project's tables."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path

app = typer.Typer(help="List, create and drop indexes on a project's tables.", no_args_is_help=True)

TableArg = Annotated[str, typer.Argument(help="Table of schema public.")]


class IndexType(StrEnum):
    btree = "btree"
    hash = "hash"
    gist = "gist"
    gin = "gin"


def _render(indexes: list[dict[str, Any]]) -> None:
    output.table(
        ["name", "columns", "type", "unique", "valid", "size", "scans", "definition"],
        (
            (
                i["name"],
                i["columns"],
                i["type"],
                "primary key" if i["primary"] else i["unique"],
                i["valid"],
                output.size(i["size_bytes"]),
                i["scans"],
                i["definition"],
            )
            for i in indexes
        ),
        empty="No indexes on this table.",
    )


@app.command("list")
def list_indexes(table: TableArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List every index on a table, with its size and scans since statistics were reset."""
    with Api.from_environment() as api:
        response = api.get(project_path(api, project, "database", "tables", table, "indexes"))
    output.show(response, as_json, _render)


@app.command()
def create(
    table: TableArg,
    columns: Annotated[list[str], typer.Argument(help="Columns, in index order.")],
    index_type: Annotated[IndexType, typer.Option("--type", help="Index method.")] = (
        IndexType.btree
    ),
    unique: Annotated[
        bool, typer.Option(help="Make the index unique: a duplicate value is rejected.")
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(help="Index name: letters, digits and '_'; default: from table and columns."),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(
            help="Partial-index predicate, one SQL expression such as 'done = false'; "
            "default: none, every row."
        ),
    ] = None,
    opclass: Annotated[
        str | None,
        typer.Option(help="Operator class for every column, such as gin_trgm_ops; default: none."),
    ] = None,
    concurrently: Annotated[
        bool,
        typer.Option(help="Build without blocking writes (CREATE INDEX CONCURRENTLY)."),
    ] = True,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an index; by default concurrently, so writes go on during the build."""
    body = {
        "columns": columns,
        "type": index_type.value,
        "unique": unique,
        "name": name,
        "where": where,
        "opclass": opclass,
        "concurrently": concurrently,
    }
    with Api.from_environment() as api:
        response = api.post(
            project_path(api, project, "database", "tables", table, "indexes"), json=body
        )
    output.show(response, as_json, lambda index: _render([index]))


@app.command()
def drop(
    name: Annotated[str, typer.Argument(help="Index of schema public.")],
    concurrently: Annotated[
        bool,
        typer.Option(help="Drop without blocking reads and writes (DROP INDEX CONCURRENTLY)."),
    ] = True,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop an index; it fails while a constraint needs it."""
    with Api.from_environment() as api:
        api.delete(
            project_path(api, project, "database", "indexes", name),
            params={"concurrently": str(concurrently).lower()},
        )
    if not as_json:
        output.done(f"Dropped index {name}.")


@app.command("search")
def search_index(
    table: TableArg,
    column: Annotated[
        list[str], typer.Option("--column", "-c", help="Text column to search; repeat for several.")
    ],
    language: Annotated[
        str, typer.Option(help="Text search configuration of the server (pg_ts_config).")
    ] = "english",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build, concurrently, the GIN index that 'zbaas search' over these columns uses."""
    with Api.from_environment() as api:
        response = api.post(
            project_path(api, project, "database", "tables", table, "search", "index"),
            json={"columns": column, "language": language},
        )

    def render(index: dict[str, Any]) -> None:
        verb = "Created" if index["created"] else "Found existing"
        output.done(f"{verb} search index {index['name']} ({output.size(index['size_bytes'])}).")

    output.show(response, as_json, render)
