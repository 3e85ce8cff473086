"""``zbaas policies``: the row-level security policies of a table."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path
from zbaas.cli.rls import TableArg

app = typer.Typer(
    help="Create, list and delete a table's row-level security policies.", no_args_is_help=True
)


class Command(StrEnum):
    ALL = "ALL"
    SELECT = "SELECT"
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


def _render(policies: list[dict[str, Any]]) -> None:
    output.table(
        ["name", "command", "roles", "kind", "using", "check"],
        (
            (
                p["name"],
                p["command"],
                p["roles"],
                "permissive" if p["permissive"] else "restrictive",
                p["using"],
                p["check"],
            )
            for p in policies
        ),
        empty="No policies on this table.",
    )


@app.command()
def create(
    table: TableArg,
    name: Annotated[str, typer.Argument(help="Policy name, up to 63 bytes.")],
    command: Annotated[
        Command,
        typer.Option(case_sensitive=False, help="The statements the policy applies to."),
    ] = Command.ALL,
    using: Annotated[
        str | None,
        typer.Option(
            help="SQL expression that existing rows must satisfy, such as "
            "'auth.uid() = user_id'; default: none.",
        ),
    ] = None,
    check: Annotated[
        str | None,
        typer.Option(help="SQL expression that new or changed rows must satisfy; default: none."),
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(
            help="Role the policy applies to, such as authenticated or anon; repeat for "
            "several. Default: public (every role).",
        ),
    ] = None,
    restrictive: Annotated[
        bool,
        typer.Option(help="Make it restrictive: rows must pass it as well as a permissive policy."),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a policy; --using and --check must each be exactly one SQL expression."""
    body: dict[str, Any] = {
        "name": name,
        "command": command.value,
        "using": using,
        "check": check,
        "permissive": not restrictive,
    }
    if role:
        body["roles"] = role
    with Api.from_environment() as api:
        response = api.post(
            project_path(api, project, "database", "rls", table, "policies"), json=body
        )
    output.show(response, as_json, lambda policy: _render([policy]))


@app.command("list")
def list_policies(table: TableArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List a table's policies, ordered by name."""
    with Api.from_environment() as api:
        response = api.get(project_path(api, project, "database", "rls", table, "policies"))
    output.show(response, as_json, _render)


@app.command()
def delete(
    table: TableArg,
    name: Annotated[str, typer.Argument(help="Name of the policy to drop.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop a policy from a table."""
    with Api.from_environment() as api:
        api.delete(project_path(api, project, "database", "rls", table, "policies", name))
    if not as_json:
        output.done(f"Dropped policy {name!r} on {table}.")
