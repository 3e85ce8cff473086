"""Project storage for apps: the Supabase Storage API subset at ``/storage/v1``.

The ``apikey`` header names the project, as for the data API. An end-user JWT
in ``Authorization`` makes the caller that user, and ``zbaas.tenant.storage``
enforces the access rules. Signed URLs carry their project in the token, so they
work without a key. Request and response bodies have the shapes that the
Supabase storage clients send and read. Errors keep zbaas's shape, which those
clients raise as ``StorageApiError`` with the HTTP status.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC
from email.utils import format_datetime
from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from zbaas.api.apikey import resolve_apikey, user_claims
from zbaas.api.deps import ServicesDep
from zbaas.api.models import ERRORS
from zbaas.app import Services
from zbaas.errors import InvalidInput, ZbaasError
from zbaas.platform.projects import Project
from zbaas.storage.backend import BlobNotFound
from zbaas.storage.names import RESERVED_BUCKET_IDS
from zbaas.storage.uploads import RawUpload, read_body
from zbaas.tenant import storage
from zbaas.tenant.storage import Bucket, Caller, ListEntry, StoredObject


class ObjectPath(Convertor[str]):
    """Like ``path``, but also matching line breaks, so that a name holding one
    reaches the name checks (422) instead of matching no route (404)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("objectpath", ObjectPath())

# NOTE: not served: resumable (TUS) uploads, image transforms (/render/image),
# list-v2, and the x-metadata header of raw uploads.
router = APIRouter(prefix="/storage/v1", tags=["storage"], responses=ERRORS)

ADMIN_UPLOAD = re.compile(r"^/projects/[^/]+/storage/objects/[^/]+/.+$")


def is_upload(method: str, path: str) -> bool:
    """Return True for requests that stream an object's content, which skip the body size cap."""
    if method not in ("POST", "PUT"):
        return False
    if path.startswith("/storage/v1/object/"):
        rest = path[len("/storage/v1/object/") :]
        if rest.startswith("upload/sign/"):
            return method == "PUT"
        bucket, slash, name = rest.partition("/")
        return bool(slash and name) and bucket not in RESERVED_BUCKET_IDS
    return method == "PUT" and ADMIN_UPLOAD.match(path) is not None


class Interrupted(ZbaasError):
    status = 400
    code = "upload_interrupted"


# --- callers ------------------------------------------------------------------


async def storage_caller(request: Request, services: Services) -> tuple[Project, Caller]:
    """Resolve the project of the ``apikey`` header and the actor: service_role, a user, or anon."""
    client = await resolve_apikey(request, services)
    claims = user_claims(request, client)
    if claims is not None:
        return client.project, Caller("authenticated", UUID(str(claims["sub"])))
    if client.key_type == "secret":
        return client.project, storage.SERVICE
    return client.project, Caller("anon")


# --- shapes -------------------------------------------------------------------


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def bucket_json(bucket: Bucket) -> dict[str, Any]:
    return {
        "id": bucket.id,
        "name": bucket.name,
        "owner": str(bucket.owner) if bucket.owner else "",
        "public": bucket.public,
        "file_size_limit": bucket.file_size_limit,
        "allowed_mime_types": bucket.allowed_mime_types,
        "created_at": iso(bucket.created_at),
        "updated_at": iso(bucket.updated_at),
    }


def system_metadata(obj: StoredObject | ListEntry) -> dict[str, Any]:
    """Build the ``metadata`` object that Supabase reports for an object."""
    return {
        "eTag": f'"{obj.etag}"',
        "size": obj.size,
        "mimetype": obj.mimetype,
        "cacheControl": obj.cache_control,
        "lastModified": iso(obj.updated_at),
        "contentLength": obj.size,
        "httpStatusCode": 200,
    }


def object_json(obj: StoredObject) -> dict[str, Any]:
    owner = str(obj.owner) if obj.owner else None
    return {
        "id": str(obj.id),
        "bucket_id": obj.bucket_id,
        "name": obj.name,
        "owner": owner,
        "owner_id": owner,
        "version": str(obj.id),
        "created_at": iso(obj.created_at),
        "updated_at": iso(obj.updated_at),
        "last_accessed_at": iso(obj.last_accessed_at),
        "metadata": system_metadata(obj),
        "user_metadata": obj.user_metadata,
    }


def info_json(obj: StoredObject) -> dict[str, Any]:
    return {
        "id": str(obj.id),
        "name": obj.name,
        "version": str(obj.id),
        "bucket_id": obj.bucket_id,
        "size": obj.size,
        "content_type": obj.mimetype,
        "cache_control": obj.cache_control,
        "etag": f'"{obj.etag}"',
        "metadata": obj.user_metadata,
        "last_modified": iso(obj.updated_at),
        "created_at": iso(obj.created_at),
    }


def entry_json(entry: ListEntry) -> dict[str, Any]:
    if entry.id is None:
        return {
            "name": entry.name,
            "id": None,
            "updated_at": None,
            "created_at": None,
            "last_accessed_at": None,
            "metadata": None,
        }
    return {
        "name": entry.name,
        "id": str(entry.id),
        "updated_at": iso(entry.updated_at),
        "created_at": iso(entry.created_at),
        "last_accessed_at": iso(entry.last_accessed_at),
        "metadata": system_metadata(entry),
    }


def upload_json(obj: StoredObject) -> dict[str, Any]:
    return {"Id": str(obj.id), "Key": f"{obj.bucket_id}/{obj.name}"}


# --- bodies -------------------------------------------------------------------


class StorageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")


# bigint's range: a larger limit means no limit anyway.
MAX_FILE_SIZE_LIMIT = 2**63 - 1


class BucketCreate(StorageRequest):
    name: str = Field(max_length=100)
    id: str | None = Field(default=None, max_length=100)
    public: bool = False
    file_size_limit: int | None = Field(default=None, ge=0, le=MAX_FILE_SIZE_LIMIT)
    allowed_mime_types: list[str] | None = Field(default=None, max_length=100)


class BucketUpdate(StorageRequest):
    public: bool | None = None
    file_size_limit: int | None = Field(default=None, ge=0, le=MAX_FILE_SIZE_LIMIT)
    allowed_mime_types: list[str] | None = Field(default=None, max_length=100)


class SortBy(StorageRequest):
    column: str = "name"
    order: str = "asc"


class ListBody(StorageRequest):
    prefix: str = Field(default="", max_length=1100)
    limit: int = 100
    offset: int = 0
    sortBy: SortBy = Field(default_factory=SortBy)
    search: str = Field(default="", max_length=1024)


class RemoveBody(StorageRequest):
    prefixes: list[str] = Field(max_length=storage.MAX_REMOVE_NAMES)


class MoveBody(StorageRequest):
    bucketId: str = Field(max_length=100)
    sourceKey: str = Field(max_length=1100)
    destinationKey: str = Field(max_length=1100)
    destinationBucket: str | None = Field(default=None, max_length=100)


class SignBody(StorageRequest):
    expiresIn: int


class SignManyBody(StorageRequest):
    expiresIn: int
    paths: list[str] = Field(max_length=storage.MAX_REMOVE_NAMES)


# --- buckets ------------------------------------------------------------------


@router.get("/bucket")
async def list_buckets(request: Request, services: ServicesDep) -> JSONResponse:
    """List every bucket of the project; any key of the project may."""
    project, _ = await storage_caller(request, services)
    return JSONResponse([bucket_json(b) for b in await storage.list_buckets(services, project)])


@router.post("/bucket")
async def create_bucket(
    body: BucketCreate, request: Request, services: ServicesDep
) -> JSONResponse:
    """Create a bucket (secret key only); ``{"name": <bucket id>}``."""
    project, caller = await storage_caller(request, services)
    bucket = await storage.create_bucket(
        services,
        project,
        caller,
        body.id or body.name,
        body.name,
        body.public,
        body.file_size_limit,
        body.allowed_mime_types,
    )
    return JSONResponse({"name": bucket.id})


@router.get("/bucket/{bucket_id}")
async def get_bucket(bucket_id: str, request: Request, services: ServicesDep) -> JSONResponse:
    project, _ = await storage_caller(request, services)
    return JSONResponse(bucket_json(await storage.get_bucket(services, project, bucket_id)))


@router.put("/bucket/{bucket_id}")
async def update_bucket(
    bucket_id: str, body: BucketUpdate, request: Request, services: ServicesDep
) -> JSONResponse:
    """Change ``public``, ``file_size_limit`` or ``allowed_mime_types`` (secret key only)."""
    project, caller = await storage_caller(request, services)
    changes = body.model_dump(include=body.model_fields_set)
    await storage.update_bucket(services, project, caller, bucket_id, changes)
    return JSONResponse({"message": "Successfully updated"})


@router.post("/bucket/{bucket_id}/empty")
async def empty_bucket(bucket_id: str, request: Request, services: ServicesDep) -> JSONResponse:
    """Delete every object of a bucket (secret key only)."""
    project, caller = await storage_caller(request, services)
    await storage.empty_bucket(services, project, caller, bucket_id)
    return JSONResponse({"message": "Successfully emptied"})


@router.delete("/bucket/{bucket_id}")
async def delete_bucket(bucket_id: str, request: Request, services: ServicesDep) -> JSONResponse:
    """Delete an empty bucket (secret key only)."""
    project, caller = await storage_caller(request, services)
    await storage.delete_bucket(services, project, caller, bucket_id)
    return JSONResponse({"message": "Successfully deleted"})


# --- object routes with a fixed first segment ----------------------------------


@router.post("/object/list/{bucket_id}")
async def list_objects(
    bucket_id: str, body: ListBody, request: Request, services: ServicesDep
) -> JSONResponse:
    """List one folder level: folders first, then objects, as Supabase's ``list``."""
    project, caller = await storage_caller(request, services)
    entries = await storage.list_folder(
        services,
        project,
        caller,
        bucket_id,
        body.prefix,
        limit=body.limit,
        offset=body.offset,
        sort_column=body.sortBy.column,
        sort_order=body.sortBy.order,
        search=body.search,
    )
    return JSONResponse([entry_json(entry) for entry in entries])


@router.post("/object/move")
async def move_object(body: MoveBody, request: Request, services: ServicesDep) -> JSONResponse:
    project, caller = await storage_caller(request, services)
    await storage.move(
        services,
        project,
        caller,
        body.bucketId,
        body.sourceKey,
        body.destinationKey,
        body.destinationBucket,
    )
    return JSONResponse({"message": "Successfully moved"})


@router.post("/object/copy")
async def copy_object(body: MoveBody, request: Request, services: ServicesDep) -> JSONResponse:
    project, caller = await storage_caller(request, services)
    copied = await storage.copy(
        services,
        project,
        caller,
        body.bucketId,
        body.sourceKey,
        body.destinationKey,
        body.destinationBucket,
        upsert=request.headers.get("x-upsert") == "true",
    )
    return JSONResponse(upload_json(copied))


@router.post("/object/sign/{bucket_id}")
async def sign_many(
    bucket_id: str, body: SignManyBody, request: Request, services: ServicesDep
) -> JSONResponse:
    """Signed download URLs for several objects; a missing one gets an error entry."""
    project, caller = await storage_caller(request, services)
    tokens = await storage.sign_download(
        services, project, caller, bucket_id, body.paths, body.expiresIn
    )
    return JSONResponse(
        [
            {
                "path": path,
                "error": None
                if token
                else "Either the object does not exist or you do not have access to it",
                "signedURL": signed_path("sign", bucket_id, path, token) if token else None,
            }
            for path, token in zip(body.paths, tokens, strict=True)
        ]
    )


def signed_path(kind: str, bucket_id: str, name: str, token: str) -> str:
    """``/object/<kind>/<bucket>/<name>?token=...``, relative to ``/storage/v1``."""
    return f"/object/{kind}/{quote(bucket_id)}/{quote(name)}?token={token}"


@router.post("/object/sign/{bucket_id}/{name:objectpath}")
async def sign_one(
    bucket_id: str, name: str, body: SignBody, request: Request, services: ServicesDep
) -> JSONResponse:
    """Sign a download URL, valid for ``expiresIn`` seconds, that needs no key."""
    project, caller = await storage_caller(request, services)
    [token] = await storage.sign_download(
        services, project, caller, bucket_id, [name], body.expiresIn
    )
    if token is None:
        raise storage.missing(bucket_id, name)
    url = signed_path("sign", bucket_id, name, token)
    return JSONResponse({"signedURL": url, "signedUrl": url})


@router.get("/object/sign/{bucket_id}/{name:objectpath}")
@router.head("/object/sign/{bucket_id}/{name:objectpath}")
async def get_signed(
    bucket_id: str,
    name: str,
    request: Request,
    services: ServicesDep,
    token: Annotated[str, Query(max_length=4096)],
    download: str | None = None,
) -> Response:
    """Download through a signed URL; a changed path or token is 403."""
    grant = await storage.verify_signed(services, token, "download", bucket_id, name)
    obj = await storage.get_object(
        services, grant.project, grant.caller, bucket_id, name, signed=True
    )
    return await object_response(request, services, grant.project, obj, download)


@router.post("/object/upload/sign/{bucket_id}/{name:objectpath}")
async def sign_upload(
    bucket_id: str, name: str, request: Request, services: ServicesDep
) -> JSONResponse:
    """Sign an upload URL, valid for two hours, that needs no key."""
    project, caller = await storage_caller(request, services)
    upsert = request.headers.get("x-upsert") == "true"
    token = await storage.sign_upload(services, project, caller, bucket_id, name, upsert=upsert)
    return JSONResponse({"url": signed_path("upload/sign", bucket_id, name, token), "token": token})


@router.put("/object/upload/sign/{bucket_id}/{name:objectpath}")
async def upload_signed(
    bucket_id: str,
    name: str,
    request: Request,
    services: ServicesDep,
    token: Annotated[str, Query(max_length=4096)],
) -> JSONResponse:
    """Upload through a signed upload URL."""
    grant = await storage.verify_signed(services, token, "upload", bucket_id, name)
    stored, _ = await store(
        request, services, grant.project, grant.caller, bucket_id, name, grant.upsert, signed=True
    )
    return JSONResponse(upload_json(stored))


async def object_info(
    bucket_id: str, name: str, request: Request, services: ServicesDep, *, public: bool
) -> JSONResponse:
    project, caller = await storage_caller(request, services)
    obj = await storage.get_object(services, project, caller, bucket_id, name, public_only=public)
    return JSONResponse(info_json(obj), headers={"Cache-Control": "no-cache"})


@router.get("/object/info/public/{bucket_id}/{name:objectpath}")
async def info_public(
    bucket_id: str, name: str, request: Request, services: ServicesDep
) -> JSONResponse:
    return await object_info(bucket_id, name, request, services, public=True)


@router.get("/object/info/authenticated/{bucket_id}/{name:objectpath}")
async def info_authenticated(
    bucket_id: str, name: str, request: Request, services: ServicesDep
) -> JSONResponse:
    return await object_info(bucket_id, name, request, services, public=False)


@router.get("/object/info/{bucket_id}/{name:objectpath}")
async def info(bucket_id: str, name: str, request: Request, services: ServicesDep) -> JSONResponse:
    """Return an object's size, type, ETag, metadata and times."""
    return await object_info(bucket_id, name, request, services, public=False)


@router.get("/object/public/{bucket_id}/{name:objectpath}")
@router.head("/object/public/{bucket_id}/{name:objectpath}")
async def download_public(
    bucket_id: str,
    name: str,
    request: Request,
    services: ServicesDep,
    download: str | None = None,
) -> Response:
    """Download from a public bucket with any key of the project.

    NOTE: one host serves every project, so a public URL still needs the
    project's ``apikey`` header; a bare browser link cannot name the project.
    """
    project, caller = await storage_caller(request, services)
    obj = await storage.get_object(services, project, caller, bucket_id, name, public_only=True)
    return await object_response(request, services, project, obj, download)


# --- object routes by bucket ---------------------------------------------------


@router.get("/object/authenticated/{bucket_id}/{name:objectpath}")
@router.head("/object/authenticated/{bucket_id}/{name:objectpath}")
@router.get("/object/{bucket_id}/{name:objectpath}")
@router.head("/object/{bucket_id}/{name:objectpath}")
async def download(
    bucket_id: str,
    name: str,
    request: Request,
    services: ServicesDep,
    download: str | None = None,
) -> Response:
    """Download an object; ``Range`` gives 206 with the requested bytes."""
    project, caller = await storage_caller(request, services)
    obj = await storage.get_object(services, project, caller, bucket_id, name)
    return await object_response(request, services, project, obj, download)


@router.post("/object/{bucket_id}/{name:objectpath}")
@router.put("/object/{bucket_id}/{name:objectpath}")
async def upload(
    bucket_id: str, name: str, request: Request, services: ServicesDep
) -> JSONResponse:
    """Upload an object, as a form's file part or as the raw body.

    POST creates and rejects an existing name unless ``x-upsert: true``; PUT
    replaces or creates. ``{"Id", "Key"}`` on success.
    """
    project, caller = await storage_caller(request, services)
    upsert = request.method == "PUT" or request.headers.get("x-upsert") == "true"
    stored, _ = await store(request, services, project, caller, bucket_id, name, upsert)
    return JSONResponse(upload_json(stored))


@router.delete("/object/{bucket_id}/{name:objectpath}")
async def delete_one(
    bucket_id: str, name: str, request: Request, services: ServicesDep
) -> JSONResponse:
    project, caller = await storage_caller(request, services)
    removed = await storage.remove(services, project, caller, bucket_id, [name])
    if not removed:
        raise storage.missing(bucket_id, name)
    return JSONResponse({"message": "Successfully deleted"})


@router.delete("/object/{bucket_id}")
async def remove(
    bucket_id: str, body: RemoveBody, request: Request, services: ServicesDep
) -> JSONResponse:
    """Delete the objects named in ``prefixes``; returns those that existed."""
    project, caller = await storage_caller(request, services)
    removed = await storage.remove(services, project, caller, bucket_id, body.prefixes)
    return JSONResponse([object_json(obj) for obj in removed])


# --- streaming helpers, shared with the management routes ------------------------


async def store(
    request: Request,
    services: Services,
    project: Project,
    caller: Caller,
    bucket_id: str,
    name: str,
    upsert: bool,
    *,
    signed: bool = False,
    form: bool = True,
) -> tuple[StoredObject, bool]:
    """Stream the request body into storage; return the object and whether it replaced one.

    With ``form`` a ``multipart/form-data`` body is read as a form whose file part
    is the content; otherwise the body is the content, whatever its type.
    """
    headers = request.headers
    content_type, cache_control = headers.get("content-type"), headers.get("cache-control")
    body = (
        read_body(request.stream(), content_type, cache_control)
        if form
        else RawUpload(request.stream(), content_type, cache_control, None)
    )
    # A raw body's declared length is its size, so an oversized one fails before streaming.
    declared = headers.get("content-length")
    declared_size = None
    if isinstance(body, RawUpload) and declared is not None and declared.isdigit():
        declared_size = int(declared)
    try:
        return await storage.upload(
            services,
            project,
            caller,
            bucket_id,
            name,
            body,
            upsert=upsert,
            declared_size=declared_size,
            signed=signed,
        )
    except ClientDisconnect:
        raise Interrupted("the client disconnected before the upload was complete") from None


class BlobResponse(StreamingResponse):
    """Stream a blob, and close the backend's reader however the response ends."""

    def __init__(
        self, chunks: AsyncIterator[bytes], status_code: int, headers: dict[str, str]
    ) -> None:
        super().__init__(chunks, status_code=status_code, headers=headers)
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.chunks, "aclose", None)
                if aclose is not None:
                    await aclose()


class Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return the inclusive byte range of a single-range ``Range`` header, or None for all.

    Headers that are not one ``bytes=`` range are ignored, as RFC 9110 allows. A
    range that starts past the end raises :class:`Unsatisfiable`.
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size - 1)


def content_disposition(name: str, download: str | None) -> str | None:
    if download is None:
        return None
    filename = download or name.rsplit("/", 1)[-1]
    return f"attachment; filename*=UTF-8''{quote(filename, safe='')}"


async def object_response(
    request: Request,
    services: Services,
    project: Project,
    obj: StoredObject,
    download: str | None,
) -> Response:
    """The object's bytes, or the part that ``Range`` requests, streamed from the backend."""
    etag = f'"{obj.etag}"'
    headers = {
        "ETag": etag,
        "Last-Modified": format_datetime(obj.updated_at.astimezone(UTC), usegmt=True),
        "Cache-Control": obj.cache_control,
        "Accept-Ranges": "bytes",
        "Content-Type": obj.mimetype,
        # Served content is the users' own: never let a browser run it on this origin.
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-Content-Type-Options": "nosniff",
    }
    disposition = content_disposition(obj.name, download)
    if disposition is not None:
        headers["Content-Disposition"] = disposition
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)

    try:
        byte_range = parse_range(request.headers.get("range"), obj.size)
    except Unsatisfiable:
        error = InvalidInput(
            f"the Range header asks for bytes past the end of the object, which has {obj.size}",
            code="range_not_satisfiable",
            details={"size": obj.size},
        )
        return JSONResponse(
            error.to_dict(), status_code=416, headers={"Content-Range": f"bytes */{obj.size}"}
        )
    status, start, end = 200, 0, None
    headers["Content-Length"] = str(obj.size)
    if byte_range is not None:
        status, (start, end) = 206, byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{obj.size}"
        headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)

    chunks = services.storage.read(storage.blob_key(project, obj.id), start, end)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except BlobNotFound:
        # The object was deleted or replaced between the lookup and the read.
        raise storage.missing(obj.bucket_id, obj.name) from None
    return BlobResponse(_prepend(first, chunks), status, headers)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
