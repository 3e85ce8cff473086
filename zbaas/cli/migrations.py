"""``zbaas migrations``: write, list, apply and roll back a project's migrations."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from zbaas.cli import output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt, ProjectOpt, is_uuid, project_path
from zbaas.cli.errors import CliError

app = typer.Typer(
    help="Write, list, apply, roll back and delete a project's migrations.", no_args_is_help=True
)

UP_MARK = "-- zbaas:up"
DOWN_MARK = "-- zbaas:down"
TEMPLATE = f"""\
-- Migration {{name}}: write the SQL that applies it below {UP_MARK}, and the SQL that
-- reverses it below {DOWN_MARK} (empty: the migration cannot be rolled back).
-- Lines above {UP_MARK} are dropped. Save and quit the editor to create it.
{UP_MARK}

{DOWN_MARK}

"""

MigrationArg = Annotated[
    str | None,
    typer.Argument(
        show_default=False,
        help="Migration by id, version number or name.",
    ),
]


def _read_sql(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=2) from None


def _editor() -> list[str]:
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not command:
        raise CliError(
            "no editor: set EDITOR, or pass the SQL with --up FILE and --down FILE", exit_code=2
        )
    return shlex.split(command)


def split_template(text: str) -> tuple[str, str | None]:
    """Return (up SQL, down SQL or None) from an edited template.

    The marks count only as whole lines, so the instructions above them may name them.
    """
    lines = [line.rstrip() for line in text.splitlines()]
    if UP_MARK not in lines:
        raise CliError(f"the line {UP_MARK!r} is missing from the edited file", exit_code=2)
    body = lines[lines.index(UP_MARK) + 1 :]
    if DOWN_MARK in body:
        split = body.index(DOWN_MARK)
        up_lines, down_lines = body[:split], body[split + 1 :]
    else:
        up_lines, down_lines = body, []
    return "\n".join(up_lines).strip(), "\n".join(down_lines).strip() or None


def _edit(name: str) -> tuple[str, str | None, Path]:
    """Open the editor on a template; the file is kept until the migration is created."""
    editor = _editor()
    fd, file_name = tempfile.mkstemp(prefix="zbaas-migration-", suffix=".sql")
    path = Path(file_name)
    with os.fdopen(fd, "w") as file:
        file.write(TEMPLATE.format(name=name))
    if subprocess.run([*editor, str(path)], check=False).returncode != 0:
        raise CliError(f"the editor failed; your SQL is in {path}")
    up_sql, down_sql = split_template(path.read_text())
    if not up_sql:
        path.unlink()
        raise CliError("the up SQL is empty; nothing was created")
    return up_sql, down_sql, path


def _render_state(migration: dict[str, Any]) -> None:
    output.done(
        f"Migration {migration['version']} {migration['name']!r} is {migration['status']} "
        f"({migration['id']})."
    )


def _render_warnings(migration: dict[str, Any]) -> None:
    _render_state(migration)
    for warning in migration.get("warnings") or []:
        output.warn(f"line {warning['line']}: {warning['message']} [{warning['rule']}]")
        if warning.get("help"):
            output.stderr.print(f"  {warning['help']}", markup=False, highlight=False)


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="Name: letters, digits, '_', '-', '.' and spaces.")],
    up: Annotated[
        Path | None,
        typer.Option(
            help="File with the SQL that applies the change; '-' reads stdin. "
            "Default: write both SQL texts in $EDITOR."
        ),
    ] = None,
    down: Annotated[
        Path | None,
        typer.Option(help="File with the SQL that reverses it; without it the migration is final."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a pending migration from files, or in $EDITOR when --up is not given.

    The server returns squawk's lint warnings on the up SQL; warnings do not block creation.
    """
    edited = None
    if up is None:
        if down is not None:
            raise CliError("--down needs --up", exit_code=2)
        up_sql, down_sql, edited = _edit(name)
    else:
        up_sql = _read_sql(up)
        down_sql = _read_sql(down) if down is not None else None

    with Api.from_environment() as api:
        try:
            response = api.post(
                project_path(api, project, "database", "migrations"),
                json={"name": name, "up_sql": up_sql, "down_sql": down_sql},
            )
        except CliError as exc:
            if edited is not None:
                exc.message += f"; your SQL is in {edited}"
            raise
    if edited is not None:
        edited.unlink()
    output.show(response, as_json, _render_warnings)


@app.command("list")
def list_migrations(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List migrations in version order with their status and any drift."""
    with Api.from_environment() as api:
        response = api.get(project_path(api, project, "database", "migrations"))

    def render(migrations: list[dict[str, Any]]) -> None:
        output.table(
            ["version", "name", "status", "applied", "id", "drift"],
            (
                (
                    m["version"],
                    m["name"],
                    m["status"],
                    output.when(m["applied_at"]),
                    m["id"],
                    m["drift"]["message"] if m["drift"] else "",
                )
                for m in migrations
            ),
            empty="No migrations; write one with 'zbaas migrations new NAME'.",
        )

    output.show(response, as_json, render)


def find_migration(migrations: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """Return the migration whose id, version or name is ``ref``."""
    for migration in migrations:
        if ref in (migration["id"], str(migration["version"]), migration["name"]):
            return migration
    raise CliError(f"migration {ref!r} not found: give its id, version or name")


def _migration_id(api: Api, base: str, ref: str) -> str:
    if is_uuid(ref):
        return ref
    return str(find_migration(api.get(base).json(), ref)["id"])


@app.command()
def up(
    migration: MigrationArg = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply one migration, or with no argument every pending one in order.

    Each migration runs whole or not at all; applying all stops at the first failure.
    """
    with Api.from_environment() as api:
        base = project_path(api, project, "database", "migrations")
        if migration is not None:
            response = api.post(f"{base}/{_migration_id(api, base, migration)}/up")
            output.show(response, as_json, _render_state)
            return
        response = api.post(f"{base}/up")

    def render(body: dict[str, Any]) -> None:
        results = body["results"]
        if not results:
            output.done("No pending migrations.")
            return
        output.table(
            ["version", "name", "status"], ((r["version"], r["name"], r["status"]) for r in results)
        )

    output.show(response, as_json, render)


@app.command()
def down(
    migration: Annotated[
        str | None,
        typer.Argument(
            show_default=False,
            help="Migration by id, version number or name; default: the latest applied.",
        ),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Roll back the latest applied migration by running its down SQL."""
    with Api.from_environment() as api:
        base = project_path(api, project, "database", "migrations")
        if migration is None:
            applied = [m for m in api.get(base).json() if m["status"] == "applied"]
            if not applied:
                raise CliError("no applied migration to roll back")
            migration_id = str(max(applied, key=lambda m: m["version"])["id"])
        else:
            migration_id = _migration_id(api, base, migration)
        response = api.post(f"{base}/{migration_id}/down")
    output.show(response, as_json, _render_state)


@app.command()
def delete(
    migration: Annotated[
        str, typer.Argument(help="Pending migration by id, version number or name.")
    ],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a pending migration, such as one that failed; an applied one stays."""
    with Api.from_environment() as api:
        base = project_path(api, project, "database", "migrations")
        migration_id = _migration_id(api, base, migration)
        api.delete(f"{base}/{migration_id}")
    if not as_json:
        output.done(f"Deleted migration {migration}.")
