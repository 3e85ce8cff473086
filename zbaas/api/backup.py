"""Database backups: a pg_dump file streamed as a download."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from zbaas.api.deps import ProjectDep, ServicesDep
from zbaas.api.models import ERRORS, ErrorResponse
from zbaas.tenant import backup

router = APIRouter(prefix="/projects", tags=["database"], responses=ERRORS)


class DumpResponse(StreamingResponse):
    """Stream a running pg_dump, and stop it however the response ends.

    The client may disconnect, or the server may cancel the response; either way
    pg_dump is killed and reaped here, so no process outlives its download.
    """

    def __init__(self, dump: backup.Dump) -> None:
        super().__init__(
            dump.chunks(),
            media_type=dump.media_type,
            headers={"Content-Disposition": f'attachment; filename="{dump.filename}"'},
        )
        self.dump = dump

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A disconnect arrives as cancellation; without the shield the wait for
            # pg_dump's exit would be cancelled too.
            with anyio.CancelScope(shield=True):
                await self.dump.close()


@router.post(
    "/{project_id}/database/backup",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The pg_dump file as an attachment: `application/sql` for the "
            "plain format, `application/octet-stream` for the custom format.",
            "content": {"application/sql": {}, "application/octet-stream": {}},
        },
        503: {"model": ErrorResponse},
    },
)
async def backup_database(
    access: ProjectDep,
    services: ServicesDep,
    dump_format: Annotated[
        backup.DumpFormat,
        Query(
            alias="format",
            description="`plain` for a SQL script for psql, `custom` for pg_restore's "
            "archive format.",
        ),
    ] = backup.DumpFormat.PLAIN,
    schema_only: Annotated[
        bool, Query(description="Dump the schema without the tables' rows.")
    ] = False,
) -> DumpResponse:
    """Stream the project database as a pg_dump file, named `<slug>-<UTC timestamp>.sql`.

    The custom format's file ends in `.dump`. An error before the first byte is a
    JSON error; a failure later ends the download without its final chunk.
    """
    access.require_developer("download a database backup")
    dump = await backup.start_backup(services, access.project, dump_format, schema_only)
    return DumpResponse(dump)
