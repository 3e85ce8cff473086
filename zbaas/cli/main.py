"""The ``zbaas`` command line: ``zbaas serve`` runs the HTTP API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from zbaas import logs
from zbaas.postgres.embedded import DataDirInUse, lock_data_dir

app = typer.Typer(
    help="zbaas: self-hostable Backend-as-a-Service on PostgreSQL.", no_args_is_help=True
)
console = Console(stderr=True, soft_wrap=True)


@app.callback()
def main() -> None:
    """zbaas: self-hostable Backend-as-a-Service on PostgreSQL."""


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for embedded PostgreSQL, storage and the secret key; "
            "default: $ZBAAS_DATA_DIR, else ./zbaas-data.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the HTTP API, on embedded PostgreSQL unless ZBAAS_DATABASE_URL is set."""
    import uvicorn

    from zbaas.app import create_app
    from zbaas.config import Settings

    logs.configure(log_level)
    if data_dir is not None:
        os.environ["ZBAAS_DATA_DIR"] = str(data_dir)
    settings = Settings()
    lock = None
    if settings.database_url is None:
        try:
            lock = lock_data_dir(settings.data_dir)
        except DataDirInUse as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    try:
        uvicorn.run(
            create_app(settings, lock_held=lock is not None),
            host=host,
            port=port,
            log_level=log_level.lower(),
            proxy_headers=False,
        )
    finally:
        if lock is not None:
            lock.close()


if __name__ == "__main__":
    app()
