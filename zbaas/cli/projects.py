"""``zbaas projects``: create, list, show, change and delete projects."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from zbaas.cli import output
from zbaas.cli.client import Api, segment
from zbaas.cli.common import JsonOpt, YesOpt, confirm, resolve_project
from zbaas.cli.errors import CliError

app = typer.Typer(help="Create, list, get, update and delete projects.", no_args_is_help=True)

ProjectArg = Annotated[
    str | None,
    typer.Argument(
        envvar="ZBAAS_PROJECT",
        show_default=False,
        help="Project slug or id; default: ZBAAS_PROJECT, else 'project' in ./zbaas.toml.",
    ),
]
OrgOpt = Annotated[
    str | None,
    typer.Option(
        "--org",
        envvar="ZBAAS_ORG",
        help="Organization id to act in; default: your first organization.",
    ),
]


def _org_headers(org: str | None) -> dict[str, str]:
    return {"X-Org-Id": org} if org else {}


def slug_from_name(name: str) -> str:
    """Make a slug such as 'my-app-2' from 'My App 2': lowercase words joined by hyphens."""
    return "-".join(re.findall(r"[a-z0-9]+", name.lower()))


def _render_one(project: dict[str, Any]) -> None:
    output.fields(
        [
            ("slug", project["slug"]),
            ("name", project["name"]),
            ("id", project["id"]),
            ("status", project["status"]),
            ("database", project["db_name"]),
            ("description", project["description"]),
            ("created", output.when(project["created_at"])),
        ]
    )


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Display name, up to 100 characters.")],
    slug: Annotated[
        str | None,
        typer.Option(
            help="URL name: lowercase letters, digits and single hyphens; it names the "
            "database and cannot change. Default: made from the name.",
        ),
    ] = None,
    description: Annotated[
        str, typer.Option(help="Free text, up to 2000 characters; default: empty.")
    ] = "",
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a project; its database, roles and storage are ready when this returns."""
    body = {"name": name, "slug": slug or slug_from_name(name), "description": description}
    if not body["slug"]:
        raise CliError(f"cannot make a slug from the name {name!r}; pass --slug", exit_code=2)
    with Api.from_environment() as api:
        response = api.post("/projects", json=body, headers=_org_headers(org))
    output.show(response, as_json, _render_one)


@app.command("list")
def list_projects(org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """List the projects of your organization."""
    with Api.from_environment() as api:
        response = api.get("/projects", headers=_org_headers(org))

    def render(projects: list[dict[str, Any]]) -> None:
        output.table(
            ["slug", "name", "status", "id", "created"],
            (
                (p["slug"], p["name"], p["status"], p["id"], output.when(p["created_at"]))
                for p in projects
            ),
            empty="No projects yet; create one with 'zbaas projects create NAME'.",
        )

    output.show(response, as_json, render)


@app.command()
def get(project: ProjectArg = None, as_json: JsonOpt = False) -> None:
    """Show a project."""
    with Api.from_environment() as api:
        response = api.get(f"/projects/{resolve_project(api, project)}")
    output.show(response, as_json, _render_one)


@app.command()
def update(
    project: ProjectArg = None,
    name: Annotated[str | None, typer.Option(help="New display name; default: unchanged.")] = None,
    description: Annotated[
        str | None, typer.Option(help="New description; default: unchanged.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a project or change its description; the slug stays."""
    body = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    if not body:
        raise CliError("nothing to change: pass --name or --description", exit_code=2)
    with Api.from_environment() as api:
        response = api.patch(f"/projects/{resolve_project(api, project)}", json=body)
    output.show(response, as_json, _render_one)


@app.command()
def delete(project: ProjectArg = None, yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Delete a project: its database, roles, keys and storage. This cannot be undone."""
    with Api.from_environment() as api:
        project_id = resolve_project(api, project)
        found = api.get(f"/projects/{segment(project_id)}").json()
        confirm(
            f"Delete project {found['slug']} with its database {found['db_name']}, "
            "keys and storage?",
            yes,
        )
        api.delete(f"/projects/{segment(project_id)}")
    if not as_json:
        output.done(f"Deleted project {found['slug']}.")
