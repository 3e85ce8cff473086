"""The FastAPI application factory and its lifespan: pools and the embedded server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zbaas import __version__, logs
from zbaas.config import Settings
from zbaas.errors import PayloadTooLarge, ServiceUnavailable, ZbaasError
from zbaas.platform import schema
from zbaas.platform.security import SecretBox, TokenSigner
from zbaas.postgres import server
from zbaas.postgres.embedded import EmbeddedPostgres, lock_data_dir
from zbaas.postgres.pools import Pools
from zbaas.rest.catalog import TableCache
from zbaas.storage import open_backend
from zbaas.storage.backend import Backend

logger = logging.getLogger("zbaas.api")


@dataclass
class Services:
    """Everything a request handler needs, built once per process at start-up."""

    settings: Settings
    pools: Pools
    box: SecretBox
    signer: TokenSigner
    storage_root: Path
    storage: Backend
    tables: TableCache = field(default_factory=TableCache)
    # Projects whose ``storage`` schema this process has checked (see tenant.storage).
    storage_ready: set[UUID] = field(default_factory=set)
    extras: dict[str, Any] = field(default_factory=dict)


async def start_services(
    settings: Settings, *, lock_held: bool = False
) -> tuple[Services, EmbeddedPostgres | None, Any]:
    """Start embedded PostgreSQL when no URL is set, then open pools and upgrade the schema.

    Pass ``lock_held`` when the caller already holds the data folder lock.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedPostgres | None = None
    lock = None
    server_url = settings.database_url
    if server_url is None:
        # Only the embedded server's files need a single owner; API processes on an
        # external server may share one data folder.
        if not lock_held:
            lock = lock_data_dir(settings.data_dir)
        embedded = EmbeddedPostgres(settings.data_dir)
        server_url = embedded.start()

    pools = Pools(server_url, settings)
    try:
        async with pools.admin(pools.server_params().get("dbname") or "postgres") as conn:
            await server.ensure_database(conn, settings.control_database)
            await server.ensure_api_roles(conn)
        async with pools.admin(settings.control_database) as conn:
            await schema.upgrade(conn)
            # Project roles must not reach the control database. Under the schema
            # lock, because two processes revoking at once make PostgreSQL fail
            # one with "tuple concurrently updated".
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.SCHEMA_LOCK_KEY,))
                await conn.execute(
                    psycopg.sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(
                        psycopg.sql.Identifier(settings.control_database)
                    )
                )
        await pools.open()
    except BaseException:
        await pools.close()
        if embedded is not None:
            embedded.stop()
        raise

    secret = settings.resolved_secret_key
    storage_root = settings.data_dir / "storage"
    storage_root.mkdir(parents=True, exist_ok=True)
    try:
        storage = open_backend(settings, storage_root)
    except BaseException:
        await pools.close()
        if embedded is not None:
            embedded.stop()
        raise
    services = Services(
        settings=settings,
        pools=pools,
        box=SecretBox(secret),
        signer=TokenSigner(secret, settings.access_token_ttl),
        storage_root=storage_root,
        storage=storage,
    )
    return services, embedded, lock


class BodySizeLimit:
    """Reject request bodies over the limit with 413 before the handler reads them.

    Requests for which ``exempt(method, path)`` is true pass uncapped: storage
    uploads, which stream to the backend under their bucket's limit and the
    project's quota instead.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        exempt: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.exempt is not None and self.exempt(scope["method"], scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(scope, receive, send, self._error())
            return

        received = 0
        rejected = False

        async def limited_receive() -> Message:
            # Past the limit the client gets its 413 at once and the handler receives a
            # disconnect, whatever it was doing with the body.
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = True
                    await _send_error(scope, receive, send, self._error())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is larger than the limit of {self.max_bytes} bytes")


class RequestId:
    """Take the caller's X-Request-Id or make one, keep it in ``request.state`` and echo it.

    A plain ASGI middleware rather than ``@app.middleware("http")``, because Starlette's
    BaseHTTPMiddleware (1.10) ends a streamed response cleanly even when the endpoint
    raised in the middle, so a broken download would look complete.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")
        # A client-supplied id is kept only when it is short and plain, so it cannot
        # forge log lines.
        if not (0 < len(request_id) <= 64 and request_id.replace("-", "").isalnum()):
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        logs.request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _send_error(scope: Scope, receive: Receive, send: Send, error: ZbaasError) -> None:
    response = JSONResponse(error.to_dict(), status_code=error.status)
    await response(scope, receive, send)


def error_response(error: ZbaasError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ZbaasError)
    async def _zbaas(request: Request, exc: ZbaasError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in err["loc"] if p != "body"), "message": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{d['field'] or 'body'}: {d['message']}" for d in details[:5])
        return JSONResponse(
            {
                "error": {
                    "code": "validation_failed",
                    "message": f"invalid request: {summary}",
                    "details": details,
                }
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(
            {"error": {"code": code, "message": message, "details": None}},
            status_code=exc.status_code,
        )

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.error(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        return error_response(
            ServiceUnavailable("a database server cannot be reached; try again shortly")
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {
                "error": {
                    "code": "internal_error",
                    "message": "internal server error",
                    "details": {"request_id": request.state.request_id}
                    if hasattr(request.state, "request_id")
                    else None,
                }
            },
            status_code=500,
        )


def create_app(settings: Settings | None = None, *, lock_held: bool = False) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services, embedded, lock = await start_services(settings, lock_held=lock_held)
        app.state.services = services
        try:
            yield
        finally:
            await services.storage.close()
            await services.pools.close()
            if embedded is not None:
                embedded.stop()
            if lock is not None:
                lock.close()

    app = FastAPI(
        title="zbaas",
        version=__version__,
        description="Self-hostable Backend-as-a-Service control plane on PostgreSQL.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    from zbaas.api import routers, storage

    app.add_middleware(RequestId)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, exempt=storage.is_upload)

    for router in routers():
        app.include_router(router)
    return app
