"""``zbaas branches``: database branches of a project, their diff and merge."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, YesOpt, confirm, project_path

app = typer.Typer(
    help="Create, list, diff, merge and delete database branches of a project.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Branch name.")]


def _render_branches(branches: list[dict[str, Any]]) -> None:
    output.table(
        ["name", "status", "data", "database", "created", "merged"],
        (
            (
                b["name"],
                b["status"],
                "copied" if b["with_data"] else "schema only",
                b["db_name"],
                output.when(b["created_at"]),
                output.when(b["merged_at"]),
            )
            for b in branches
        ),
        empty="No branches; create one with 'zbaas branches create NAME'.",
    )


def _render_statements(
    statements: list[dict[str, Any]], empty: str, console: Console | None = None
) -> None:
    output.table(
        ["#", "statement", "destructive"],
        (
            (
                number,
                s["sql"],
                Text(s["reason"] or "yes", style="bold red") if s["destructive"] else "",
            )
            for number, s in enumerate(statements, 1)
        ),
        empty=empty,
        console=console,
    )


@app.command()
def create(
    name: NameArg,
    with_data: Annotated[
        bool, typer.Option(help="Copy the tables' rows too, not only the schema.")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy the project's database schema (and rows with --with-data) into a new branch."""
    with Api.from_environment() as api, output.waiting(f"Copying the database into {name}"):
        response = api.post(
            project_path(api, project, "branches"), json={"name": name, "with_data": with_data}
        )
    output.show(response, as_json, lambda branch: _render_branches([branch]))


@app.command("list")
def list_branches(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List the project's branches, oldest first."""
    with Api.from_environment() as api:
        response = api.get(project_path(api, project, "branches"))
    output.show(response, as_json, _render_branches)


@app.command()
def diff(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Show the DDL a merge would apply to the project, in order, flagging destructive steps."""
    with Api.from_environment() as api:
        response = api.get(project_path(api, project, "branches", name, "diff"))

    def render(result: dict[str, Any]) -> None:
        _render_statements(result["statements"], "No schema changes to merge.")
        for conflict in result["conflicts"]:
            output.warn(f"conflict: {conflict['kind']} {conflict['name']}")
        if result["migrations"]:
            versions = ", ".join(str(v) for v in result["migrations"])
            output.done(f"The merge records branch migrations {versions}.")

    output.show(response, as_json, render)


@app.command()
def merge(
    name: NameArg,
    allow_destructive: Annotated[
        bool,
        typer.Option(
            help="Also apply statements that drop or rewrite data (asks first unless --yes); "
            "without it such a merge is refused.",
        ),
    ] = False,
    yes: YesOpt = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply the branch's schema changes and migrations to the project in one transaction."""
    with Api.from_environment() as api:
        base = project_path(api, project, "branches", name)
        if allow_destructive and not yes:
            statements = api.get(f"{base}/diff").json()["statements"]
            destructive = [s for s in statements if s["destructive"]]
            if destructive:
                # On stderr, with the question, so that --json output stays clean.
                _render_statements(destructive, "", output.stderr)
                confirm(f"Apply {len(destructive)} destructive statements to the project?", yes)
        response = api.post(f"{base}/merge", json={"allow_destructive": allow_destructive})

    def render(result: dict[str, Any]) -> None:
        _render_statements(result["applied"], "Nothing to merge: the schemas are the same.")
        if result["applied"]:
            output.done(f"Merged branch {name} with {len(result['applied'])} statements.")

    output.show(response, as_json, render)


@app.command()
def delete(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Drop the branch database and its roles; the project is not touched."""
    with Api.from_environment() as api:
        api.delete(project_path(api, project, "branches", name))
    if not as_json:
        output.done(f"Deleted branch {name}.")
