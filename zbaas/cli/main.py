"""The ``zbaas`` command line: every API operation, and ``zbaas serve`` to run the API.

Each command group lives in its own module. This one assembles them, and turns
errors into one ``error:`` line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from zbaas import __version__
from zbaas.cli import (
    auth,
    backup,
    branches,
    extensions,
    health,
    indexes,
    keys,
    migrations,
    output,
    policies,
    projects,
    rls,
    search,
    serve,
    storage,
)
from zbaas.cli.errors import CliError

HELP = (
    "zbaas: self-hostable Backend-as-a-Service on PostgreSQL.\n\n"
    "The server is ZBAAS_URL, else the one of 'zbaas login', else http://127.0.0.1:8000. "
    "Credentials: ZBAAS_API_KEY (a project's secret key; project commands only), "
    "else ZBAAS_TOKEN (a platform access token), else the login stored by 'zbaas login'.\n\n"
    "ZBAAS_PROJECT or 'project' in ./zbaas.toml names the default project, "
    "ZBAAS_ORG the organization to act in (default: your first), ZBAAS_TIMEOUT the "
    "seconds to wait for a response (default: 600)."
)


class App(typer.Typer):
    """The root command: prints a :class:`CliError` as one line instead of a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except CliError as exc:
            output.error(exc)
            sys.exit(exc.exit_code)
        except Exception as exc:
            if os.environ.get("ZBAAS_DEBUG"):
                raise
            output.error(
                CliError(
                    f"unexpected {type(exc).__name__}: {exc}; "
                    "set ZBAAS_DEBUG=1 to see where it happened",
                    code="internal_error",
                )
            )
            sys.exit(1)


app = App(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        output.done(f"zbaas {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """zbaas: self-hostable Backend-as-a-Service on PostgreSQL."""


app.command()(auth.login)
app.command()(auth.logout)
app.add_typer(projects.app, name="projects")
app.add_typer(keys.app, name="keys")
app.add_typer(migrations.app, name="migrations")
app.add_typer(rls.app, name="rls")
app.add_typer(policies.app, name="policies")
app.add_typer(extensions.app, name="extensions")
app.add_typer(indexes.app, name="indexes")
app.command("search")(search.search)
app.command("backup")(backup.backup)
app.add_typer(branches.app, name="branches")
app.command("health")(health.health)
app.add_typer(storage.app, name="storage")
app.command("serve")(serve.serve)


if __name__ == "__main__":
    app()
