"""Options shared by the commands, and the project that a command acts on."""

from __future__ import annotations

import sys
import uuid
from typing import Annotated

import typer

from zbaas.cli import config
from zbaas.cli.client import Api, segment
from zbaas.cli.errors import ApiError, CliError

JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the API's JSON response unchanged on stdout instead of a table; "
        "commands whose endpoint answers 204 print nothing.",
    ),
]
ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        envvar="ZBAAS_PROJECT",
        show_envvar=True,
        help="Project to act on, by slug or id; default: 'project' in ./zbaas.toml. "
        "With an API key, the key's project by id.",
    ),
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation; for scripts.")
]


def is_uuid(text: str) -> bool:
    """Tell whether ``text`` is a project id in its canonical form.

    Only the 36-character form counts, because 32 hex digits alone are also a
    valid slug.
    """
    # NOTE: a slug written in exactly this form is read as an id too, so such a
    # project can be named only by its real id.
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def project_ref(project: str | None) -> str:
    """Return the project named by ``--project``/``ZBAAS_PROJECT``, else by ``zbaas.toml``."""
    if project:
        return project
    from_file = config.project_file().get("project")
    if from_file:
        return str(from_file)
    raise CliError(
        f"no project given: pass --project SLUG, set ZBAAS_PROJECT, or write "
        f'project = "SLUG" into ./{config.PROJECT_FILE}',
        exit_code=2,
    )


def resolve_project(api: Api, project: str | None) -> str:
    """Return the project's id; a slug is looked up in the acting organization."""
    ref = project_ref(project)
    if is_uuid(ref):
        return ref
    if api.uses_api_key:
        raise CliError(
            f"an API key cannot look up the slug {ref!r}; name the project by its id "
            "(zbaas projects get shows it)",
            exit_code=2,
        )
    try:
        return str(api.get(f"/projects/by-slug/{segment(ref)}").json()["id"])
    except ApiError as exc:
        if exc.status == 404:
            raise CliError(
                f"project {ref!r} not found in your organization", code=exc.code
            ) from None
        raise


def project_path(api: Api, project: str | None, *parts: str) -> str:
    """Return ``/projects/{id}/<parts>`` for the chosen project, each part percent-encoded."""
    tail = "".join(f"/{segment(part)}" for part in parts)
    return f"/projects/{resolve_project(api, project)}{tail}"


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive step; an empty reply (stdin closed, as in CI) means no."""
    if yes:
        return
    sys.stderr.write(f"{question} [y/N]: ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError("cancelled; nothing was changed (pass --yes to skip this question)")
