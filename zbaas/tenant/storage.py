"""Project storage: buckets and objects, their rules, quota and signed URLs.

The bytes of an object live in the storage backend under ``<project id>/<object
id>``; its name, size and type live in the project database's ``storage``
schema. That schema belongs to the control plane and no project role has a
grant on it, so user SQL cannot bend the quota or point a row at another blob.
The access rules are therefore enforced here rather than by row-level security:

- the project's secret key (``service_role``) may do everything;
- with a publishable key, anyone may read (download, inspect, list, sign) the
  objects of a public bucket;
- a signed-in end user reads and writes objects under ``<user id>/`` of any
  bucket; anonymous callers may do nothing else;
- only the secret key creates, changes, empties and deletes buckets.

Every upload streams into a fresh blob first. Its metadata row is written
afterwards in one short transaction under a per-project advisory lock, so
concurrent uploads cannot together exceed the quota. A rejected upload leaves
no blob and no row behind.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import jwt
import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from zbaas.app import Services
from zbaas.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge
from zbaas.platform import projects
from zbaas.platform.projects import Project
from zbaas.storage.backend import BlobTooLarge
from zbaas.storage.names import (
    check_bucket_id,
    check_content_type,
    check_mime_types,
    check_object_name,
    check_prefix,
    mime_allowed,
)
from zbaas.storage.uploads import UploadBody, in_pieces
from zbaas.tenant.connections import as_platform

logger = logging.getLogger("zbaas.storage")

DEFAULT_BUCKET = "default"
# Key of the transaction-level advisory lock that serializes the metadata writes
# of one project (advisory locks are per database, and a project has one).
WRITE_LOCK = 0x7A62_7374
MAX_LIST_LIMIT = 1000
MAX_REMOVE_NAMES = 1000
MAX_SIGNED_URL_SECONDS = 365 * 24 * 3600
UPLOAD_URL_SECONDS = 2 * 3600
SORT_COLUMNS = ("name", "created_at", "updated_at", "last_accessed_at")
# Blobs are deleted from the backend in batches of this many keys.
DELETE_BATCH = 1000

SCHEMA_SETUP = """
CREATE SCHEMA IF NOT EXISTS storage;
REVOKE ALL ON SCHEMA storage FROM PUBLIC;

CREATE TABLE IF NOT EXISTS storage.buckets (
    id text COLLATE "C" PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE,
    owner uuid,
    public boolean NOT NULL DEFAULT false,
    file_size_limit bigint CHECK (file_size_limit >= 0),
    allowed_mime_types text[],
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The id is also the blob's name in the backend: <project id>/<id>. Overwriting
-- an object gives it a new id, so a reader of the old blob is never cut short by
-- the writer. "C" collation makes names sort byte-wise and prefix searches
-- use the unique index.
CREATE TABLE IF NOT EXISTS storage.objects (
    id uuid PRIMARY KEY,
    bucket_id text COLLATE "C" NOT NULL REFERENCES storage.buckets (id),
    name text COLLATE "C" NOT NULL,
    owner uuid,
    size bigint NOT NULL CHECK (size >= 0),
    mimetype text NOT NULL,
    etag text NOT NULL,
    cache_control text NOT NULL,
    user_metadata jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Set by writes only, so that a download costs no write.
    last_accessed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bucket_id, name)
);
"""


@dataclass
class Bucket:
    id: str
    name: str
    owner: UUID | None
    public: bool
    file_size_limit: int | None
    allowed_mime_types: list[str] | None
    created_at: datetime
    updated_at: datetime


BUCKET_COLUMNS = (
    "id, name, owner, public, file_size_limit, allowed_mime_types, created_at, updated_at"
)


@dataclass
class StoredObject:
    id: UUID
    bucket_id: str
    name: str
    owner: UUID | None
    size: int
    mimetype: str
    etag: str
    cache_control: str
    user_metadata: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    last_accessed_at: datetime


OBJECT_COLUMNS = (
    "id, bucket_id, name, owner, size, mimetype, etag, cache_control, user_metadata, "
    "created_at, updated_at, last_accessed_at"
)


@dataclass
class ListEntry:
    """One line of a folder listing: a folder (``id`` None) or an object."""

    name: str
    id: UUID | None
    size: int | None
    mimetype: str | None
    etag: str | None
    cache_control: str | None
    created_at: datetime | None
    updated_at: datetime | None
    last_accessed_at: datetime | None


@dataclass(frozen=True)
class Caller:
    """The actor of a storage request: ``service_role``, an ``authenticated`` user, or ``anon``."""

    role: Literal["service_role", "authenticated", "anon"]
    user_id: UUID | None = None

    @property
    def folder(self) -> str | None:
        """The end user's own folder, ``<user id>/``."""
        return f"{self.user_id}/" if self.user_id is not None else None

    def owns(self, name: str) -> bool:
        folder = self.folder
        return folder is not None and name.startswith(folder)

    def check_read(self, bucket: Bucket, name: str) -> None:
        if self.role == "service_role" or bucket.public or self.owns(name):
            return
        raise self.denied("read", bucket, name)

    def check_write(self, bucket: Bucket, name: str) -> None:
        if self.role == "service_role" or self.owns(name):
            return
        raise self.denied("write", bucket, name)

    def check_manage(self, action: str) -> None:
        if self.role != "service_role":
            raise Forbidden(f"only the project's secret key may {action}", code="forbidden")

    def denied(self, verb: str, bucket: Bucket, name: str) -> Forbidden:
        """Build the 403 for an access that the rules do not allow."""
        if self.folder is None:
            actor = "an anonymous caller"
            rule = "sign in to reach your own folder, or use the secret key"
        else:
            actor = "this user"
            rule = f"an end user may only {verb} objects under {self.folder!r}"
        kind = "public" if bucket.public else "private"
        return Forbidden(
            f"{actor} may not {verb} {name[:200]!r} in the {kind} bucket {bucket.id!r}: {rule}",
            code="access_denied",
        )


SERVICE = Caller("service_role")


def blob_key(project: Project, object_id: UUID) -> str:
    return f"{project.id}/{object_id}"


# --- schema -------------------------------------------------------------------


async def prepare_schema(conn: psycopg.AsyncConnection) -> None:
    """Create the ``storage`` schema and the ``default`` bucket, in the caller's transaction.

    Running it again changes nothing.
    """
    await conn.execute(SCHEMA_SETUP)
    await conn.execute(
        "INSERT INTO storage.buckets (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (DEFAULT_BUCKET,) * 2,
    )


async def ensure_schema(conn: psycopg.AsyncConnection) -> bool:
    """Create the schema in a project database made before storage existed; True if it did.

    The lock makes concurrent first requests from several API processes wait
    for one another instead of racing on CREATE.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        row = await (await conn.execute("SELECT to_regclass('storage.objects') AS t")).fetchone()
        if row is not None and row["t"] is not None:
            return False
        owner = await (
            await conn.execute(
                "SELECT r.rolsuper FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
                "WHERE n.nspname = 'storage'"
            )
        ).fetchone()
        if owner is not None and not owner["rolsuper"]:
            # A schema that user SQL made before storage existed: its owner could
            # change the metadata, so it is not taken over.
            raise Conflict(
                "the project database has a schema named storage made by a migration; "
                "rename or drop it so that storage can create its own",
                code="storage_schema_taken",
            )
        await prepare_schema(conn)
    return True


@asynccontextmanager
async def metadata(services: Services, project: Project) -> AsyncIterator[psycopg.AsyncConnection]:
    """Yield a connection to the project's storage metadata, creating the schema once."""
    async with as_platform(services, project) as conn:
        if project.id not in services.storage_ready:
            if await ensure_schema(conn):
                logger.info("created the storage schema of project %s", project.id)
            services.storage_ready.add(project.id)
        yield conn


# --- buckets ------------------------------------------------------------------


async def _bucket(conn: psycopg.AsyncConnection, bucket_id: str, *, lock: bool = False) -> Bucket:
    check_bucket_id(bucket_id)
    cur = conn.cursor(row_factory=class_row(Bucket))
    await cur.execute(
        f"SELECT {BUCKET_COLUMNS} FROM storage.buckets WHERE id = %s"
        + (" FOR UPDATE" if lock else ""),
        (bucket_id,),
    )
    bucket = await cur.fetchone()
    if bucket is None:
        raise NotFound(f"bucket {bucket_id[:100]!r} not found", code="bucket_not_found")
    return bucket


async def list_buckets(services: Services, project: Project) -> list[Bucket]:
    async with metadata(services, project) as conn:
        cur = conn.cursor(row_factory=class_row(Bucket))
        await cur.execute(f"SELECT {BUCKET_COLUMNS} FROM storage.buckets ORDER BY id")
        return await cur.fetchall()


async def get_bucket(services: Services, project: Project, bucket_id: str) -> Bucket:
    async with metadata(services, project) as conn:
        return await _bucket(conn, bucket_id)


async def create_bucket(
    services: Services,
    project: Project,
    caller: Caller,
    bucket_id: str,
    name: str,
    public: bool,
    file_size_limit: int | None,
    allowed_mime_types: list[str] | None,
) -> Bucket:
    caller.check_manage("create buckets")
    check_bucket_id(bucket_id)
    check_bucket_id(name)
    mime_types = check_mime_types(allowed_mime_types) if allowed_mime_types else None
    async with metadata(services, project) as conn:
        cur = conn.cursor(row_factory=class_row(Bucket))
        try:
            await cur.execute(
                "INSERT INTO storage.buckets (id, name, owner, public, file_size_limit, "
                f"allowed_mime_types) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {BUCKET_COLUMNS}",
                (bucket_id, name, caller.user_id, public, file_size_limit, mime_types),
            )
        except psycopg.errors.UniqueViolation:
            raise Conflict(
                f"a bucket named {name!r} or with the id {bucket_id!r} already exists",
                code="bucket_exists",
            ) from None
        bucket = await cur.fetchone()
    assert bucket is not None
    logger.info("bucket %s created in project %s", bucket.id, project.id)
    return bucket


async def update_bucket(
    services: Services, project: Project, caller: Caller, bucket_id: str, changes: dict[str, Any]
) -> Bucket:
    """Change ``public``, ``file_size_limit`` or ``allowed_mime_types``; a None limit clears it."""
    caller.check_manage("change buckets")
    if changes.get("allowed_mime_types"):
        changes["allowed_mime_types"] = check_mime_types(changes["allowed_mime_types"])
    elif "allowed_mime_types" in changes:
        changes["allowed_mime_types"] = None
    if changes.get("public") is None:
        changes.pop("public", None)
    assignments = [
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
        for column in ("public", "file_size_limit", "allowed_mime_types")
        if column in changes
    ]
    async with metadata(services, project) as conn:
        cur = conn.cursor(row_factory=class_row(Bucket))
        await cur.execute(
            sql.SQL(
                "UPDATE storage.buckets SET {assignments} WHERE id = %(id)s RETURNING {columns}"
            ).format(
                assignments=sql.SQL(", ").join([*assignments, sql.SQL("updated_at = now()")]),
                columns=sql.SQL(BUCKET_COLUMNS),
            ),
            {**changes, "id": bucket_id},
        )
        bucket = await cur.fetchone()
    if bucket is None:
        raise NotFound(f"bucket {bucket_id[:100]!r} not found", code="bucket_not_found")
    return bucket


async def empty_bucket(services: Services, project: Project, caller: Caller, bucket_id: str) -> int:
    """Delete every object of the bucket; return how many there were."""
    caller.check_manage("empty buckets")
    async with metadata(services, project) as conn, conn.transaction():
        await _bucket(conn, bucket_id, lock=True)
        rows = await (
            await conn.execute(
                "DELETE FROM storage.objects WHERE bucket_id = %s RETURNING id", (bucket_id,)
            )
        ).fetchall()
    await _delete_blobs(services, project, [row["id"] for row in rows])
    logger.info("bucket %s of project %s emptied of %d objects", bucket_id, project.id, len(rows))
    return len(rows)


async def delete_bucket(
    services: Services, project: Project, caller: Caller, bucket_id: str
) -> None:
    """Delete an empty bucket; a bucket that still contains objects is 409."""
    caller.check_manage("delete buckets")
    async with metadata(services, project) as conn, conn.transaction():
        await _bucket(conn, bucket_id, lock=True)
        try:
            await conn.execute("DELETE FROM storage.buckets WHERE id = %s", (bucket_id,))
        except psycopg.errors.ForeignKeyViolation:
            raise Conflict(
                f"the bucket {bucket_id!r} is not empty: empty it first",
                code="bucket_not_empty",
            ) from None
    logger.info("bucket %s deleted from project %s", bucket_id, project.id)


# --- uploads ------------------------------------------------------------------


async def _usage(conn: psycopg.AsyncConnection, bucket_id: str = "", name: str = "") -> int:
    """Bytes the project stores, not counting the object ``bucket_id/name``."""
    # NOTE: the usage is summed over all objects at every upload; a project with
    # millions of objects would want a running total instead.
    row = await (
        await conn.execute(
            "SELECT coalesce(sum(size), 0)::bigint AS used FROM storage.objects "
            "WHERE NOT (bucket_id = %s AND name = %s)",
            (bucket_id, name),
        )
    ).fetchone()
    assert row is not None
    return int(row["used"])


def _quota_error(services: Services, used: int) -> PayloadTooLarge:
    quota = services.settings.storage_quota_bytes
    return PayloadTooLarge(
        f"the project's storage quota of {quota} bytes would be exceeded "
        f"({used} bytes are in use): delete objects first",
        code="quota_exceeded",
        details={"quota_bytes": quota, "used_bytes": used},
    )


def _size_error(bucket: Bucket, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the object is larger than the limit of bucket {bucket.id!r}, {limit} bytes",
        code="entity_too_large",
        details={"file_size_limit": limit},
    )


def _type_error(bucket: Bucket, content_type: str) -> InvalidInput:
    return InvalidInput(
        f"the bucket {bucket.id!r} does not take {content_type[:100]!r}; "
        f"allowed: {', '.join(bucket.allowed_mime_types or [])}",
        code="invalid_mime_type",
        details={"allowed_mime_types": bucket.allowed_mime_types},
    )


def size_limit(services: Services, bucket: Bucket) -> int:
    if bucket.file_size_limit is not None:
        return bucket.file_size_limit
    return services.settings.storage_file_size_limit


async def upload(
    services: Services,
    project: Project,
    caller: Caller,
    bucket_id: str,
    name: str,
    body: UploadBody,
    *,
    upsert: bool,
    declared_size: int | None = None,
    signed: bool = False,
) -> tuple[StoredObject, bool]:
    """Store an object; return it and whether it replaced one.

    ``signed`` means a signed upload URL already granted the write. Without
    ``upsert`` an existing object is 409. Past the bucket's limit or the quota
    it is 413, an unaccepted type is 422, and nothing is stored.
    """
    check_object_name(name)
    async with metadata(services, project) as conn:
        bucket = await _bucket(conn, bucket_id)
        if not signed:
            caller.check_write(bucket, name)
        existing = await _find(conn, bucket_id, name)
        if existing is not None and not upsert:
            raise _exists(bucket_id, name)
        used = await _usage(conn, bucket_id, name)

    limit = size_limit(services, bucket)
    remaining = max(services.settings.storage_quota_bytes - used, 0)
    if declared_size is not None and declared_size > limit:
        raise _size_error(bucket, limit)
    if declared_size is not None and declared_size > remaining:
        raise _quota_error(services, used)

    def check_type(content_type: str) -> None:
        check_content_type(content_type)
        if not mime_allowed(content_type, bucket.allowed_mime_types):
            raise _type_error(bucket, content_type)

    object_id = uuid.uuid4()
    key = blob_key(project, object_id)
    try:
        blob = await services.storage.write(
            key, in_pieces(body.chunks(check_type)), min(limit, remaining)
        )
    except BlobTooLarge:
        if limit <= remaining:
            raise _size_error(bucket, limit) from None
        raise _quota_error(services, used) from None

    try:
        values = {
            "id": object_id,
            "bucket_id": bucket_id,
            "name": name,
            "owner": caller.user_id,
            "size": blob.size,
            "mimetype": body.content_type(),
            "etag": blob.etag,
            "cache_control": body.cache_control(),
            "user_metadata": _jsonb(body.user_metadata()),
        }
        async with metadata(services, project) as conn, conn.transaction():
            stored, replaced = await _write_row(services, conn, values, upsert=upsert)
    except BaseException:
        await services.storage.delete([key])
        raise

    if replaced is not None:
        await _delete_blobs(services, project, [replaced])
    return stored, replaced is not None


def _jsonb(value: dict[str, Any] | None) -> Jsonb | None:
    return Jsonb(value) if value is not None else None


def _exists(bucket_id: str, name: str) -> Conflict:
    return Conflict(
        f"the object {name[:200]!r} already exists in bucket {bucket_id!r}; "
        "send x-upsert: true to replace it",
        code="object_exists",
    )


async def _write_row(
    services: Services, conn: psycopg.AsyncConnection, values: dict[str, Any], *, upsert: bool
) -> tuple[StoredObject, UUID | None]:
    """Insert or replace the row of ``values`` under the project's write lock.

    Returns the row and the id of the object it replaced. Must run in a transaction.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
    await _bucket(conn, values["bucket_id"])
    used = await _usage(conn, values["bucket_id"], values["name"])
    if used + values["size"] > services.settings.storage_quota_bytes:
        raise _quota_error(services, used)

    old = await _find(conn, values["bucket_id"], values["name"], lock=True)
    if old is not None and not upsert:
        raise _exists(values["bucket_id"], values["name"])
    cur = conn.cursor(row_factory=class_row(StoredObject))
    if old is None:
        await cur.execute(
            f"INSERT INTO storage.objects (id, bucket_id, name, owner, size, mimetype, etag, "
            f"cache_control, user_metadata) VALUES (%(id)s, %(bucket_id)s, %(name)s, %(owner)s, "
            f"%(size)s, %(mimetype)s, %(etag)s, %(cache_control)s, %(user_metadata)s) "
            f"RETURNING {OBJECT_COLUMNS}",
            values,
        )
    else:
        await cur.execute(
            f"UPDATE storage.objects SET id = %(id)s, owner = %(owner)s, size = %(size)s, "
            f"mimetype = %(mimetype)s, etag = %(etag)s, cache_control = %(cache_control)s, "
            f"user_metadata = %(user_metadata)s, updated_at = now(), last_accessed_at = now() "
            f"WHERE id = %(old_id)s RETURNING {OBJECT_COLUMNS}",
            {**values, "old_id": old.id},
        )
    stored = await cur.fetchone()
    assert stored is not None
    return stored, old.id if old is not None else None


# --- reads --------------------------------------------------------------------


async def _find(
    conn: psycopg.AsyncConnection, bucket_id: str, name: str, *, lock: bool = False
) -> StoredObject | None:
    cur = conn.cursor(row_factory=class_row(StoredObject))
    await cur.execute(
        f"SELECT {OBJECT_COLUMNS} FROM storage.objects WHERE bucket_id = %s AND name = %s"
        + (" FOR UPDATE" if lock else ""),
        (bucket_id, name),
    )
    return await cur.fetchone()


def missing(bucket_id: str, name: str) -> NotFound:
    return NotFound(
        f"object {name[:200]!r} not found in bucket {bucket_id!r}", code="object_not_found"
    )


async def get_object(
    services: Services,
    project: Project,
    caller: Caller,
    bucket_id: str,
    name: str,
    *,
    public_only: bool = False,
    signed: bool = False,
) -> StoredObject:
    """Return an object the caller may read.

    ``public_only`` serves public buckets only (the ``/public/`` routes);
    ``signed`` means a signed URL already granted the read.
    """
    check_object_name(name)
    async with metadata(services, project) as conn:
        bucket = await _bucket(conn, bucket_id)
        if public_only and not bucket.public:
            raise Forbidden(
                f"the bucket {bucket_id!r} is not public: download with a key, "
                "or through a signed URL",
                code="bucket_not_public",
            )
        if not signed:
            caller.check_read(bucket, name)
        found = await _find(conn, bucket_id, name)
    if found is None:
        raise missing(bucket_id, name)
    return found


def _like_prefix(text: str) -> str:
    """``text`` as a LIKE pattern that matches names starting with it."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def list_folder(
    services: Services,
    project: Project,
    caller: Caller,
    bucket_id: str,
    prefix: str,
    *,
    limit: int = 100,
    offset: int = 0,
    sort_column: str = "name",
    sort_order: str = "asc",
    search: str = "",
) -> list[ListEntry]:
    """List one folder level under ``prefix``, as Supabase's ``list`` does.

    Folders come first, then objects; ``search`` keeps entries whose name
    starts with it, ignoring case. An end user sees only their own folder of a
    private bucket.
    """
    check_prefix(prefix)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not 0 < limit <= MAX_LIST_LIMIT or offset < 0:
        raise InvalidInput(
            f"limit must be 1 to {MAX_LIST_LIMIT} and offset at least 0", code="invalid_range"
        )
    if sort_column not in SORT_COLUMNS or sort_order.lower() not in ("asc", "desc"):
        raise InvalidInput(
            f"sortBy must name a column of {', '.join(SORT_COLUMNS)} and the order asc or desc",
            code="invalid_sort",
        )
    direction = sql.SQL(sort_order.upper())

    async with metadata(services, project) as conn:
        bucket = await _bucket(conn, bucket_id)
        visible = "" if caller.role == "service_role" or bucket.public else caller.folder
        if visible is None:
            raise caller.denied("list", bucket, prefix or "/")
        query = sql.SQL(
            """
            WITH below AS (
                SELECT id, substr(name, %(skip)s) AS rest, size, mimetype, etag, cache_control,
                       created_at, updated_at, last_accessed_at
                FROM storage.objects
                WHERE bucket_id = %(bucket)s AND name LIKE %(prefix)s AND name LIKE %(visible)s
                  AND substr(name, %(skip)s) ILIKE %(search)s
            ), entries AS (
                SELECT DISTINCT split_part(rest, '/', 1) AS name, NULL::uuid AS id,
                       NULL::bigint AS size, NULL::text AS mimetype, NULL::text AS etag,
                       NULL::text AS cache_control, NULL::timestamptz AS created_at,
                       NULL::timestamptz AS updated_at, NULL::timestamptz AS last_accessed_at
                FROM below WHERE strpos(rest, '/') > 0
                UNION ALL
                SELECT rest, id, size, mimetype, etag, cache_control, created_at, updated_at,
                       last_accessed_at
                FROM below WHERE strpos(rest, '/') = 0
            )
            SELECT * FROM entries
            ORDER BY id IS NULL DESC, {column} {direction} NULLS LAST, name {direction}
            LIMIT %(limit)s OFFSET %(offset)s
            """
        ).format(column=sql.Identifier(sort_column), direction=direction)
        cur = conn.cursor(row_factory=class_row(ListEntry))
        await cur.execute(
            query,
            {
                "skip": len(prefix) + 1,
                "bucket": bucket_id,
                "prefix": _like_prefix(prefix),
                "visible": _like_prefix(visible),
                "search": _like_prefix(search),
                "limit": limit,
                "offset": offset,
            },
        )
        return await cur.fetchall()


async def list_objects(
    services: Services,
    project: Project,
    bucket_id: str,
    prefix: str,
    limit: int,
    cursor: str,
) -> tuple[list[StoredObject], str | None]:
    """List the objects whose names start with ``prefix``, by name, after ``cursor``.

    Returns the page and the cursor of the next one (None on the last page).
    """
    check_prefix(prefix)
    if not 0 < limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be 1 to {MAX_LIST_LIMIT}", code="invalid_range")
    async with metadata(services, project) as conn:
        await _bucket(conn, bucket_id)
        cur = conn.cursor(row_factory=class_row(StoredObject))
        await cur.execute(
            f"SELECT {OBJECT_COLUMNS} FROM storage.objects "
            "WHERE bucket_id = %s AND name LIKE %s AND name > %s ORDER BY name LIMIT %s",
            (bucket_id, _like_prefix(prefix), cursor, limit + 1),
        )
        rows = await cur.fetchall()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].name
    return rows, None


# --- changes ------------------------------------------------------------------


async def remove(
    services: Services, project: Project, caller: Caller, bucket_id: str, names: Sequence[str]
) -> list[StoredObject]:
    """Delete the named objects; names that do not exist are skipped. Returns those deleted.

    If the caller may not write one of the names, nothing is deleted.
    """
    if not 0 < len(names) <= MAX_REMOVE_NAMES:
        raise InvalidInput(f"name 1 to {MAX_REMOVE_NAMES} objects to remove", code="invalid_range")
    for name in names:
        check_object_name(name, field="prefixes")
    async with metadata(services, project) as conn, conn.transaction():
        bucket = await _bucket(conn, bucket_id)
        for name in names:
            caller.check_write(bucket, name)
        cur = conn.cursor(row_factory=class_row(StoredObject))
        await cur.execute(
            f"DELETE FROM storage.objects WHERE bucket_id = %s AND name = ANY(%s) "
            f"RETURNING {OBJECT_COLUMNS}",
            (bucket_id, list(names)),
        )
        removed = await cur.fetchall()
    await _delete_blobs(services, project, [item.id for item in removed])
    return removed


async def move(
    services: Services,
    project: Project,
    caller: Caller,
    bucket_id: str,
    source: str,
    destination: str,
    destination_bucket: str | None = None,
) -> StoredObject:
    """Rename an object, into another bucket if given; the blob stays where it is."""
    check_object_name(source, field="sourceKey")
    check_object_name(destination, field="destinationKey")
    target_bucket_id = destination_bucket or bucket_id
    async with metadata(services, project) as conn, conn.transaction():
        bucket = await _bucket(conn, bucket_id)
        target = await _bucket(conn, target_bucket_id) if destination_bucket else bucket
        caller.check_write(bucket, source)
        caller.check_write(target, destination)
        found = await _find(conn, bucket_id, source, lock=True)
        if found is None:
            raise missing(bucket_id, source)
        _check_fits(services, target, found)
        cur = conn.cursor(row_factory=class_row(StoredObject))
        try:
            await cur.execute(
                f"UPDATE storage.objects SET bucket_id = %s, name = %s, updated_at = now() "
                f"WHERE id = %s RETURNING {OBJECT_COLUMNS}",
                (target_bucket_id, destination, found.id),
            )
        except psycopg.errors.UniqueViolation:
            raise _exists(target_bucket_id, destination) from None
        moved = await cur.fetchone()
    assert moved is not None
    return moved


async def copy(
    services: Services,
    project: Project,
    caller: Caller,
    bucket_id: str,
    source: str,
    destination: str,
    destination_bucket: str | None = None,
    *,
    upsert: bool = False,
) -> StoredObject:
    """Copy an object into a new blob, counted against the quota like an upload."""
    check_object_name(source, field="sourceKey")
    check_object_name(destination, field="destinationKey")
    target_bucket_id = destination_bucket or bucket_id
    async with metadata(services, project) as conn:
        bucket = await _bucket(conn, bucket_id)
        target = await _bucket(conn, target_bucket_id)
        caller.check_read(bucket, source)
        caller.check_write(target, destination)
        found = await _find(conn, bucket_id, source)
    if found is None:
        raise missing(bucket_id, source)
    _check_fits(services, target, found)

    object_id = uuid.uuid4()
    key = blob_key(project, object_id)
    await services.storage.copy(blob_key(project, found.id), key)
    try:
        values = {
            "id": object_id,
            "bucket_id": target_bucket_id,
            "name": destination,
            "owner": caller.user_id,
            "size": found.size,
            "mimetype": found.mimetype,
            "etag": found.etag,
            "cache_control": found.cache_control,
            "user_metadata": _jsonb(found.user_metadata),
        }
        async with metadata(services, project) as conn, conn.transaction():
            stored, replaced = await _write_row(services, conn, values, upsert=upsert)
    except BaseException:
        await services.storage.delete([key])
        raise
    if replaced is not None:
        await _delete_blobs(services, project, [replaced])
    return stored


def _check_fits(services: Services, bucket: Bucket, found: StoredObject) -> None:
    """An object moved or copied into ``bucket`` must meet its limit and types."""
    limit = size_limit(services, bucket)
    if found.size > limit:
        raise _size_error(bucket, limit)
    if not mime_allowed(found.mimetype, bucket.allowed_mime_types):
        raise _type_error(bucket, found.mimetype)


async def _delete_blobs(services: Services, project: Project, object_ids: list[UUID]) -> None:
    """Delete blobs whose rows are gone; a failure leaves an orphan blob and a log line."""
    keys = [blob_key(project, object_id) for object_id in object_ids]
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start : start + DELETE_BATCH]
        try:
            await services.storage.delete(batch)
        except Exception:
            logger.warning(
                "could not delete %d blobs of project %s; they stay as orphans",
                len(batch),
                project.id,
                exc_info=True,
            )


# --- signed URLs ----------------------------------------------------------------

Purpose = Literal["download", "upload"]


def _sign(
    services: Services, project: Project, purpose: Purpose, url: str, ttl: int, **claims: Any
) -> str:
    now = int(time.time())
    payload = {"url": url, "purpose": purpose, "iat": now, "exp": now + ttl, **claims}
    secret = services.box.decrypt(project.jwt_secret)
    # The key id names the project, so a signed URL works without an API key.
    return jwt.encode(payload, secret, algorithm="HS256", headers={"kid": str(project.id)})


def check_expiry(expires_in: int) -> int:
    if not 0 < expires_in <= MAX_SIGNED_URL_SECONDS:
        raise InvalidInput(
            f"expiresIn must be 1 to {MAX_SIGNED_URL_SECONDS} seconds", code="invalid_expiry"
        )
    return expires_in


async def sign_download(
    services: Services,
    project: Project,
    caller: Caller,
    bucket_id: str,
    names: Sequence[str],
    expires_in: int,
) -> list[str | None]:
    """Return a download token for each name, None for an object that does not exist."""
    check_expiry(expires_in)
    for name in names:
        check_object_name(name, field="paths")
    async with metadata(services, project) as conn:
        bucket = await _bucket(conn, bucket_id)
        for name in names:
            caller.check_read(bucket, name)
        rows = await (
            await conn.execute(
                "SELECT name FROM storage.objects WHERE bucket_id = %s AND name = ANY(%s)",
                (bucket_id, list(names)),
            )
        ).fetchall()
    present = {row["name"] for row in rows}
    return [
        _sign(services, project, "download", f"{bucket_id}/{name}", expires_in)
        if name in present
        else None
        for name in names
    ]


async def sign_upload(
    services: Services,
    project: Project,
    caller: Caller,
    bucket_id: str,
    name: str,
    *,
    upsert: bool,
) -> str:
    """Return a token that lets anyone holding it upload ``name`` once, for two hours."""
    check_object_name(name)
    async with metadata(services, project) as conn:
        bucket = await _bucket(conn, bucket_id)
        caller.check_write(bucket, name)
        if not upsert and await _find(conn, bucket_id, name) is not None:
            raise _exists(bucket_id, name)
    owner = str(caller.user_id) if caller.user_id is not None else None
    return _sign(
        services,
        project,
        "upload",
        f"{bucket_id}/{name}",
        UPLOAD_URL_SECONDS,
        upsert=upsert,
        owner=owner,
    )


@dataclass
class Grant:
    """Permission that a valid signed URL grants, and its project."""

    project: Project
    caller: Caller
    upsert: bool


def _invalid(reason: str) -> Forbidden:
    return Forbidden(f"invalid signed URL: {reason}", code="invalid_signature")


async def verify_signed(
    services: Services, token: str, purpose: Purpose, bucket_id: str, name: str
) -> Grant:
    """Check a signed URL's token for ``purpose`` on ``bucket_id/name``; 403 otherwise."""
    try:
        project_id = UUID(str(jwt.get_unverified_header(token).get("kid")))
    except (jwt.PyJWTError, ValueError):
        raise _invalid("the token is malformed") from None
    assert services.pools.control is not None
    async with services.pools.control.connection() as conn:
        project = await projects.get(conn, project_id)
    if project is None:
        raise _invalid("the signature does not match")
    try:
        claims = jwt.decode(
            token,
            services.box.decrypt(project.jwt_secret),
            algorithms=["HS256"],
            options={"require": ["exp", "url", "purpose"]},
        )
    except jwt.ExpiredSignatureError:
        raise _invalid("it has expired") from None
    except jwt.PyJWTError:
        raise _invalid("the signature does not match") from None
    if claims["purpose"] != purpose:
        raise _invalid(f"it is not for {purpose}s")
    if claims["url"] != f"{bucket_id}/{name}":
        raise _invalid("it was signed for another object")
    owner = claims.get("owner")
    caller = Caller("authenticated", UUID(owner)) if owner else SERVICE
    return Grant(project, caller, bool(claims.get("upsert")))
