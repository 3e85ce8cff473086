"""The PostgREST-compatible data API: ``/rest/v1/{table}`` and ``/rest/v1/rpc/{function}``.

The ``apikey`` header names the project. ``Authorization: Bearer <end-user JWT>``
makes the request run as ``authenticated`` with the token's claims. Without a
user, a secret key runs as ``service_role``, which bypasses RLS, and a
publishable key runs as ``anon``. Errors use PostgREST's shape and status codes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from psycopg_pool import PoolTimeout

from zbaas.api.apikey import resolve_apikey, user_claims
from zbaas.api.deps import ServicesDep
from zbaas.errors import ZbaasError
from zbaas.rest import service
from zbaas.rest.errors import RestError
from zbaas.rest.query import LOGIC_KEYS, RESERVED, parse_prefer, parse_query
from zbaas.rest.service import Caller, Result
from zbaas.tenant.endusers import InvalidToken

logger = logging.getLogger("zbaas.api")

SINGLE_OBJECT = "application/vnd.pgrst.object+json"
JSON_TYPES = ("application/json", SINGLE_OBJECT, "*/*", "application/*")


def rest_error_response(error: RestError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def from_zbaas_error(error: ZbaasError) -> RestError:
    """Render errors raised below the data API (keys, tokens, body size) in its shape."""
    if isinstance(error, InvalidToken):
        code = "PGRST303" if error.expired else "PGRST301"
        return RestError(401, code, error.message)
    return RestError(error.status, error.code, error.message)


class PostgrestRoute(APIRoute):
    """A route whose errors are rendered in PostgREST's shape instead of zbaas's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def render_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except RestError as exc:
                return rest_error_response(exc)
            except ZbaasError as exc:
                return rest_error_response(from_zbaas_error(exc))
            except (PoolTimeout, psycopg.OperationalError) as exc:
                logger.error(
                    "database unavailable on %s %s: %s",
                    request.method,
                    request.url.path,
                    type(exc).__name__,
                )
                return rest_error_response(
                    RestError(503, "PGRST000", "Database connection error. Retrying shortly.")
                )

        return render_errors


router = APIRouter(prefix="/rest/v1", tags=["data API"], route_class=PostgrestRoute)


def check_schema(request: Request) -> None:
    """Refuse a schema other than ``public`` named by Accept-Profile or Content-Profile."""
    for header in ("accept-profile", "content-profile"):
        schema = request.headers.get(header)
        if schema is not None and schema != service.EXPOSED_SCHEMA:
            raise RestError(
                406,
                "PGRST106",
                f"The schema must be one of the following: {service.EXPOSED_SCHEMA}",
                details=f"{header} named the schema {schema!r}",
            )


def wants_single(request: Request) -> bool:
    """Read the Accept header: a JSON array, or one object; other media types are 406."""
    accept = request.headers.get("accept", "application/json")
    media_types = [part.split(";")[0].strip() for part in accept.split(",")]
    if SINGLE_OBJECT in media_types:
        return True
    if any(media in JSON_TYPES for media in media_types) or not accept.strip():
        return False
    raise RestError(
        406,
        "PGRST107",
        f"None of these media types are available: {accept}",
        hint="The data API answers application/json and application/vnd.pgrst.object+json.",
    )


def caller_for(request: Request, client: Any) -> Caller:
    claims = user_claims(request, client)
    if claims is not None:
        return Caller("authenticated", claims)
    return Caller("service_role" if client.key_type == "secret" else "anon")


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RestError(400, "PGRST102", "Empty or invalid json", details=str(exc)) from None


def content_range(result: Result, offset: int | None) -> str:
    total = "*" if result.total is None else str(result.total)
    if result.row_count == 0:
        return f"*/{total}"
    first = offset or 0
    return f"{first}-{first + result.row_count - 1}/{total}"


def respond(result: Result, status: int, single: bool, *, head: bool = False) -> Response:
    media_type = SINGLE_OBJECT if single else "application/json"
    headers = {"Content-Range": content_range(result, None)}
    if result.body is None or head:
        if status == 201 or head:
            return Response(status_code=status, headers=headers, media_type=media_type)
        return Response(status_code=204, headers=headers)
    return Response(
        result.body, status_code=status, headers=headers, media_type=f"{media_type}; charset=utf-8"
    )


async def call_function(function: str, request: Request, services: ServicesDep) -> Response:
    """Call a function of the public schema with named arguments.

    POST takes the arguments as a JSON object and applies the query string's
    filters to the result; GET and HEAD take them from the query string and run
    read-only.
    """
    client = await resolve_apikey(request, services)
    caller = caller_for(request, client)
    check_schema(request)
    single = wants_single(request)
    read_only = request.method in ("GET", "HEAD")
    params = request.query_params.multi_items()

    if read_only:
        # NOTE: on GET every parameter that is not select, order, limit, offset or
        # and/or is taken as an argument, so GET calls cannot add column filters.
        args: dict[str, Any] = {
            key: value for key, value in params if key not in RESERVED and key not in LOGIC_KEYS
        }
        query = parse_query(params, skip=set(args))
    else:
        body = await json_body(request)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise RestError(400, "PGRST102", "Function arguments must be a JSON object")
        args, query = body, parse_query(params)

    work = service.call(function, args, query, single, read_only=read_only)
    result = await service.run(services, client.project, caller, work, read_only=read_only)
    if result.body is None:
        return Response(status_code=204)
    return respond(result, 200, single, head=request.method == "HEAD")


async def table_request(table: str, request: Request, services: ServicesDep) -> Response:
    """Read, insert, upsert, update or delete rows of a table or view of the public schema."""
    client = await resolve_apikey(request, services)
    caller = caller_for(request, client)
    check_schema(request)
    single = wants_single(request)
    query = parse_query(request.query_params.multi_items())
    prefer = parse_prefer(request.headers.getlist("prefer"))
    method = request.method

    if method in ("GET", "HEAD"):
        work = service.select(table, query, prefer, single)
    elif method == "DELETE":
        work = service.delete(table, query, prefer, single)
    else:
        body = await json_body(request)
        if body is None:
            raise RestError(400, "PGRST102", "Empty or invalid json")
        if method == "POST":
            work = service.insert(table, query, body, prefer, single)
        else:
            work = service.update(table, query, body, prefer, single)

    read_only = method in ("GET", "HEAD")
    result = await service.run(services, client.project, caller, work, read_only=read_only)

    if read_only:
        status = 206 if result.total is not None and result.row_count < result.total else 200
        response = respond(result, status, single, head=method == "HEAD")
        response.headers["Content-Range"] = content_range(result, query.offset)
        return response
    return respond(result, 201 if method == "POST" else 200, single)


# One route per method, so each gets its own OpenAPI operation id.
for _method in ("GET", "HEAD", "POST"):
    router.add_api_route(
        "/rpc/{function}",
        call_function,
        methods=[_method],
        operation_id=f"rest_rpc_{_method.lower()}",
    )
for _method in ("GET", "HEAD", "POST", "PATCH", "DELETE"):
    router.add_api_route(
        "/{table}", table_request, methods=[_method], operation_id=f"rest_table_{_method.lower()}"
    )
