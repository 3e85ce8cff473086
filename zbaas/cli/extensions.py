"""``zbaas extensions``: PostgreSQL extensions of a project database."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path

app = typer.Typer(
    help="List, enable and disable PostgreSQL extensions of a project.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="Extension name, such as vector or pg_trgm.")]


def _note(extension: dict[str, Any]) -> str:
    if extension["message"]:
        return str(extension["message"])
    return str(extension["comment"] or "")


def _render(extensions: list[dict[str, Any]]) -> None:
    output.table(
        ["name", "enabled", "version", "allowed", "available", "note"],
        (
            (
                e["name"],
                e["enabled"],
                e["installed_version"] or e["default_version"],
                e["allowed"],
                e["available"],
                _note(e),
            )
            for e in extensions
        ),
        empty="No extensions.",
    )


@app.command("list")
def list_extensions(
    enabled: Annotated[
        bool, typer.Option("--enabled", help="Show only the enabled extensions.")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the extensions the server has and the allowed ones it lacks, with their status.

    --json prints the whole list and ignores --enabled.
    """
    with Api.from_environment() as api:
        response = api.get(project_path(api, project, "database", "extensions"))

    def render(extensions: list[dict[str, Any]]) -> None:
        _render([e for e in extensions if e["enabled"] or not enabled])

    output.show(response, as_json, render)


@app.command()
def enable(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Install an allowed extension, and the ones it requires, into schema extensions."""
    with Api.from_environment() as api:
        response = api.post(project_path(api, project, "database", "extensions", name, "enable"))

    def render(extension: dict[str, Any]) -> None:
        output.done(
            f"Enabled {extension['name']} {extension['installed_version']} "
            f"in schema {extension['schema']}."
        )

    output.show(response, as_json, render)


@app.command()
def disable(
    name: NameArg,
    cascade: Annotated[
        bool, typer.Option(help="Also drop the objects that depend on the extension.")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop an extension; without --cascade it fails while objects depend on it."""
    with Api.from_environment() as api:
        response = api.post(
            project_path(api, project, "database", "extensions", name, "disable"),
            params={"cascade": "true"} if cascade else None,
        )
    output.show(response, as_json, lambda e: output.done(f"Disabled {e['name']}."))
