"""Project storage for platform users: buckets and objects under ``/projects/{id}/storage``.

Any member of the project's organization, or the project's secret key, acts
as ``service_role`` here: the same service as ``/storage/v1``, reached with
platform credentials, for the CLI and the dashboard.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from zbaas.api import storage as storage_api
from zbaas.api.deps import ProjectAccess, ServicesDep, get_principal, get_project_access
from zbaas.api.models import ERRORS
from zbaas.app import Services
from zbaas.tenant import storage
from zbaas.tenant.storage import Bucket, StoredObject

router = APIRouter(prefix="/projects/{project_id}/storage", tags=["storage"], responses=ERRORS)


class BucketResponse(BaseModel):
    id: str
    name: str
    public: bool
    file_size_limit: int | None
    allowed_mime_types: list[str] | None
    created_at: datetime
    updated_at: datetime


class ObjectResponse(BaseModel):
    bucket: str
    name: str
    size: int
    content_type: str
    etag: str
    cache_control: str
    metadata: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class ObjectPage(BaseModel):
    objects: list[ObjectResponse]
    next_cursor: str | None


def _bucket(bucket: Bucket) -> BucketResponse:
    return BucketResponse(
        id=bucket.id,
        name=bucket.name,
        public=bucket.public,
        file_size_limit=bucket.file_size_limit,
        allowed_mime_types=bucket.allowed_mime_types,
        created_at=bucket.created_at,
        updated_at=bucket.updated_at,
    )


def _object(obj: StoredObject) -> ObjectResponse:
    return ObjectResponse(
        bucket=obj.bucket_id,
        name=obj.name,
        size=obj.size,
        content_type=obj.mimetype,
        etag=f'"{obj.etag}"',
        cache_control=obj.cache_control,
        metadata=obj.user_metadata,
        created_at=obj.created_at,
        updated_at=obj.updated_at,
    )


async def project_access(project_id: UUID, request: Request, services: Services) -> ProjectAccess:
    """Resolve the caller and project on a connection returned at once.

    Object routes stream for as long as a transfer takes, and must not hold a
    control database connection all that time, as a ``ControlConn`` dependency would.
    """
    assert services.pools.control is not None
    async with services.pools.control.connection() as conn:
        principal = await get_principal(request, services, conn)
        return await get_project_access(project_id, principal, conn)


@router.get("/buckets", response_model=list[BucketResponse])
async def list_buckets(
    project_id: UUID, request: Request, services: ServicesDep
) -> list[BucketResponse]:
    """List the project's buckets; every project has ``default``."""
    access = await project_access(project_id, request, services)
    return [_bucket(b) for b in await storage.list_buckets(services, access.project)]


@router.get("/objects/{bucket_id}", response_model=ObjectPage)
async def list_objects(
    project_id: UUID,
    bucket_id: str,
    request: Request,
    services: ServicesDep,
    prefix: Annotated[str, Query(max_length=1100)] = "",
    limit: Annotated[int, Query(ge=1, le=storage.MAX_LIST_LIMIT)] = 100,
    cursor: Annotated[str, Query(max_length=1100)] = "",
) -> ObjectPage:
    """Objects whose name starts with ``prefix``, by name; ``next_cursor`` gets the next page."""
    access = await project_access(project_id, request, services)
    objects, next_cursor = await storage.list_objects(
        services, access.project, bucket_id, prefix, limit, cursor
    )
    return ObjectPage(objects=[_object(o) for o in objects], next_cursor=next_cursor)


@router.put(
    "/objects/{bucket_id}/{name:objectpath}",
    response_model=ObjectResponse,
    responses={201: {"model": ObjectResponse, "description": "Created"}, 413: {}},
)
async def put_object(
    project_id: UUID, bucket_id: str, name: str, request: Request, services: ServicesDep
) -> Response:
    """Store the request body as the object, replacing one of that name: 201 new, 200 replaced.

    The body streams to the backend as it arrives; its Content-Type becomes the object's.
    """
    access = await project_access(project_id, request, services)
    stored, replaced = await storage_api.store(
        request, services, access.project, storage.SERVICE, bucket_id, name, True, form=False
    )
    return Response(
        _object(stored).model_dump_json(),
        status_code=200 if replaced else 201,
        media_type="application/json",
    )


@router.get(
    "/objects/{bucket_id}/{name:objectpath}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 416: {}},
)
@router.head("/objects/{bucket_id}/{name:objectpath}", response_class=Response)
async def get_object(
    project_id: UUID,
    bucket_id: str,
    name: str,
    request: Request,
    services: ServicesDep,
    download: str | None = None,
) -> Response:
    """Download an object; ``Range`` gives 206 with the requested bytes."""
    access = await project_access(project_id, request, services)
    obj = await storage.get_object(services, access.project, storage.SERVICE, bucket_id, name)
    return await storage_api.object_response(request, services, access.project, obj, download)


@router.delete("/objects/{bucket_id}/{name:objectpath}", status_code=204)
async def delete_object(
    project_id: UUID, bucket_id: str, name: str, request: Request, services: ServicesDep
) -> Response:
    """Delete an object; 404 when there is none of that name."""
    access = await project_access(project_id, request, services)
    removed = await storage.remove(services, access.project, storage.SERVICE, bucket_id, [name])
    if not removed:
        raise storage.missing(bucket_id, name)
    return Response(status_code=204)
