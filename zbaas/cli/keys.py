"""``zbaas keys``: a project's API keys."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, project_path

app = typer.Typer(help="Create, list and revoke a project's API keys.", no_args_is_help=True)


class KeyType(StrEnum):
    publishable = "publishable"
    secret = "secret"


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name to tell the key apart, such as 'ci'.")],
    key_type: Annotated[
        KeyType,
        typer.Option(
            "--type",
            help="'publishable' for apps (data API and end-user auth only), or 'secret' "
            "for servers and CI (bypasses row-level security, manages the project).",
        ),
    ] = KeyType.publishable,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; the plain key is printed this once and never again."""
    with Api.from_environment() as api:
        response = api.post(
            project_path(api, project, "keys"), json={"name": name, "type": key_type.value}
        )

    def render(key: dict[str, Any]) -> None:
        output.done(key["key"])
        output.stderr.print(
            f"Created {key['type']} key {key['name']!r} ({key['id']}); "
            "store it now, it is not shown again.",
            highlight=False,
            markup=False,
        )

    output.show(response, as_json, render)


@app.command("list")
def list_keys(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List the project's keys: names, types and prefixes, never the keys."""
    with Api.from_environment() as api:
        response = api.get(project_path(api, project, "keys"))

    def render(keys: list[dict[str, Any]]) -> None:
        output.table(
            ["name", "type", "prefix", "id", "created", "last used"],
            (
                (
                    k["name"],
                    k["type"],
                    k["prefix"],
                    k["id"],
                    output.when(k["created_at"]),
                    output.when(k["last_used_at"]),
                )
                for k in keys
            ),
            empty="No keys; create one with 'zbaas keys create NAME'.",
        )

    output.show(response, as_json, render)


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="Id of the key, as 'zbaas keys list' shows.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key; the next request with it fails on every API server."""
    with Api.from_environment() as api:
        api.delete(project_path(api, project, "keys", key_id))
    if not as_json:
        output.done(f"Revoked key {key_id}.")
