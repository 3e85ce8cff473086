"""``zbaas rls``: turn row-level security of a table on or off."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path

app = typer.Typer(help="Enable or disable row-level security on a table.", no_args_is_help=True)

TableArg = Annotated[
    str, typer.Argument(help="'table' or 'schema.table'; the schema defaults to public.")
]


def _set(table: str, action: str, project: str | None, as_json: bool) -> None:
    with Api.from_environment() as api:
        response = api.post(project_path(api, project, "database", "rls", table, action))

    def render(state: dict[str, Any]) -> None:
        status = "enabled" if state["rls_enabled"] else "disabled"
        forced = " and forced for the owner" if state["rls_forced"] else ""
        output.done(
            f"Row-level security on {state['schema']}.{state['table']} is {status}{forced}."
        )

    output.show(response, as_json, render)


@app.command()
def enable(table: TableArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Enable row-level security: only rows that a policy allows stay visible."""
    _set(table, "enable", project, as_json)


@app.command()
def disable(table: TableArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Disable row-level security; the table's policies stay for when it is enabled again."""
    _set(table, "disable", project, as_json)
