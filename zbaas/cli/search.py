"""``zbaas search``: ranked full-text search over a project table."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path


def _highlighted(snippet: str) -> Text:
    """Turn ts_headline's <b>...</b> marks into bold text; everything else is shown as is."""
    parts = re.split(r"(<b>.*?</b>)", snippet)
    markup = "".join(
        f"[bold]{escape(p[3:-4])}[/bold]" if p.startswith("<b>") else escape(p) for p in parts
    )
    return Text.from_markup(markup)


def search(
    table: Annotated[str, typer.Argument(help="Table to search, 'table' or 'schema.table'.")],
    query: Annotated[
        str,
        typer.Argument(help='Search words: "quoted phrases", or, and -word to exclude.'),
    ],
    column: Annotated[
        list[str], typer.Option("--column", "-c", help="Text column to search; repeat for several.")
    ],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows to return at most.")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Ranked rows to skip, for paging.")] = 0,
    language: Annotated[
        str, typer.Option(help="Text search configuration of the server (pg_ts_config).")
    ] = "english",
    highlight: Annotated[bool, typer.Option(help="Show snippets with the matches in bold.")] = True,
    fuzzy: Annotated[
        bool,
        typer.Option(help="When nothing matches, rank rows by pg_trgm word similarity instead."),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search rows of a table ranked by relevance (ts_rank_cd), best first."""
    body = {
        "query": query,
        "columns": column,
        "limit": limit,
        "offset": offset,
        "language": language,
        "highlight": highlight,
        "fuzzy": fuzzy,
    }
    with Api.from_environment() as api:
        response = api.post(
            project_path(api, project, "database", "tables", table, "search"), json=body
        )

    def render(result: dict[str, Any]) -> None:
        hits = result["rows"]
        index = f"index {result['index']}" if result["index_used"] else "no index"
        output.stderr.print(
            f"{len(hits)} rows, {result['mode']} search, {index}", markup=False, highlight=False
        )
        if not hits:
            return
        key = "id" if "id" in hits[0]["row"] and "id" not in column else None
        headers = ["rank", *([key] if key else []), *column]
        rows = []
        for hit in hits:
            snippets = hit["highlights"] or {}
            cells: list[Any] = [f"{hit['rank']:.4f}"]
            if key:
                cells.append(hit["row"][key])
            for name in column:
                cells.append(
                    _highlighted(snippets[name]) if name in snippets else hit["row"].get(name)
                )
            rows.append(cells)
        output.table(headers, rows)

    output.show(response, as_json, render)
