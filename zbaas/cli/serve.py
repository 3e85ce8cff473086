"""``zbaas serve``: run the HTTP API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from zbaas.cli.errors import CliError

if TYPE_CHECKING:
    from fastapi import FastAPI

# Worker processes start fresh interpreters, so the log level reaches them here.
WORKER_LOG_LEVEL = "ZBAAS_WORKER_LOG_LEVEL"


def worker_app() -> FastAPI:
    """Build the app in one worker process of ``zbaas serve --workers``."""
    from zbaas import logs
    from zbaas.app import create_app

    logs.configure(os.environ.get(WORKER_LOG_LEVEL, "info"))
    return create_app()


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
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API server processes; more than one spreads requests over CPU cores. "
            "With embedded PostgreSQL, one server is started for all of them.",
        ),
    ] = 1,
) -> None:
    """Run the HTTP API, on embedded PostgreSQL unless ZBAAS_DATABASE_URL is set."""
    # The server's modules load only here, so that client commands start fast.
    import uvicorn

    from zbaas import logs
    from zbaas.app import create_app
    from zbaas.config import Settings
    from zbaas.postgres.embedded import DataDirInUse, EmbeddedPostgres, lock_data_dir

    logs.configure(log_level)
    if data_dir is not None:
        os.environ["ZBAAS_DATA_DIR"] = str(data_dir)
    settings = Settings()
    lock = None
    if settings.database_url is None:
        try:
            lock = lock_data_dir(settings.data_dir)
        except DataDirInUse as exc:
            raise CliError(str(exc)) from None
    embedded = None
    try:
        if workers == 1:
            uvicorn.run(
                create_app(settings, lock_held=lock is not None),
                host=host,
                port=port,
                log_level=log_level.lower(),
                proxy_headers=False,
            )
            return
        if settings.database_url is None:
            # Workers are separate processes that each build the app, so they
            # share one embedded server, started here, through its URL.
            embedded = EmbeddedPostgres(settings.data_dir)
            os.environ["ZBAAS_DATABASE_URL"] = embedded.start()
        # Made here, before the workers start, so they all read the same key.
        settings.resolved_secret_key  # noqa: B018
        os.environ[WORKER_LOG_LEVEL] = log_level
        uvicorn.run(
            "zbaas.cli.serve:worker_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level=log_level.lower(),
            proxy_headers=False,
        )
    finally:
        if embedded is not None:
            embedded.stop()
        if lock is not None:
            lock.close()
