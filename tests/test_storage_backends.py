"""The storage backend contract, checked on the local folder and on a real S3 server.

Every test in the first part runs twice: on ``LocalBackend`` in a temporary
folder and on ``S3Backend`` against the moto server of the ``s3_server``
fixture, in a bucket of its own. ``Store.stored()`` lists everything a backend
holds, partial uploads included (files in the incoming folder, S3 multipart
uploads in progress), so "keeps nothing" is checked on the store itself.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest

from tests.conftest import s3_settings
from zbaas.config import Settings
from zbaas.errors import ServiceUnavailable
from zbaas.storage import s3
from zbaas.storage.backend import (
    READ_CHUNK_BYTES,
    Backend,
    BlobNotFound,
    BlobTooLarge,
    StoredBlob,
)
from zbaas.storage.local import LocalBackend
from zbaas.storage.s3 import MIN_PART_BYTES, S3Backend

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
# The S3 backend under test uses the smallest part S3 allows, to keep uploads short.
PART = MIN_PART_BYTES
NO_LIMIT = 1 << 40


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Store:
    kind: str
    backend: Backend
    # Every key the store contains, partial uploads included.
    stored: Callable[[], list[str]]


def s3_client(endpoint_url: str) -> Any:
    fields = s3_settings(endpoint_url)
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=fields["s3_region"],
        aws_access_key_id=fields["s3_access_key_id"],
        aws_secret_access_key=fields["s3_secret_access_key"],
    )


def bucket_names(client: Any) -> set[str]:
    return {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}


def s3_contents(client: Any, bucket: str) -> list[str]:
    if bucket not in bucket_names(client):
        return []
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    ]
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted(keys + [f"upload in progress: {upload['Key']}" for upload in uploads])


def s3_remove_bucket(client: Any, bucket: str) -> None:
    if bucket not in bucket_names(client):
        return
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


def folder_contents(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "local":
        root = tmp_path / "storage"
        local = LocalBackend(root)
        yield Store("local", local, lambda: folder_contents(root))
        await local.close()
        return

    endpoint_url: str = request.getfixturevalue("s3_server")
    fields = s3_settings(endpoint_url)
    backend = S3Backend(
        fields["s3_bucket"],
        endpoint_url=endpoint_url,
        region=fields["s3_region"],
        access_key_id=fields["s3_access_key_id"],
        secret_access_key=fields["s3_secret_access_key"],
        part_bytes=PART,
    )
    client = s3_client(endpoint_url)
    try:
        yield Store("s3", backend, lambda: s3_contents(client, fields["s3_bucket"]))
    finally:
        await backend.close()
        s3_remove_bucket(client, fields["s3_bucket"])
        client.close()


def key(project: str | None = None) -> str:
    return f"{project or uuid.uuid4().hex}/{uuid.uuid4().hex}"


def content(size: int) -> bytes:
    return os.urandom(size)


async def stream(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


async def failing_stream(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    async for piece in stream(data, chunk):
        yield piece
    raise ConnectionResetError("the client went away")


async def read_all(backend: Backend, blob: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in backend.read(blob, start, end)])


async def write(backend: Backend, blob: str, data: bytes, chunk: int = 64 * 1024) -> StoredBlob:
    return await backend.write(blob, stream(data, chunk), NO_LIMIT)


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# The contract, on both backends.


async def test_write_then_read_returns_the_same_bytes(store: Store) -> None:
    data = content(MIB + 3)
    blob = key()

    stored = await write(store.backend, blob, data, chunk=10_000)

    assert stored == StoredBlob(size=len(data), etag=md5(data))
    chunks = [chunk async for chunk in store.backend.read(blob)]
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= READ_CHUNK_BYTES
    assert store.stored() == [blob]


async def test_write_empty_blob(store: Store) -> None:
    blob = key()

    stored = await write(store.backend, blob, b"")

    assert stored == StoredBlob(size=0, etag=md5(b""))
    assert await read_all(store.backend, blob) == b""
    assert await read_all(store.backend, blob, 0, 0) == b""


@pytest.mark.parametrize(
    ("start", "end"),
    [(1000, None), (10, 20), (0, 0), (299_999, None), (299_999, 299_999), (5, 10**9)],
    ids=["start-only", "start-end", "first-byte", "last-byte-open", "last-byte", "end-past-size"],
)
async def test_read_range(store: Store, start: int, end: int | None) -> None:
    data = content(300_000)
    blob = key()
    await write(store.backend, blob, data)

    got = await read_all(store.backend, blob, start, end)

    assert got == data[start : None if end is None else end + 1]


async def test_read_range_past_the_end_yields_nothing(store: Store) -> None:
    blob = key()
    await write(store.backend, blob, b"0123456789")

    assert await read_all(store.backend, blob, 10) == b""
    assert await read_all(store.backend, blob, 50, 60) == b""
    assert await read_all(store.backend, blob, 5, 4) == b""


async def test_read_missing_key_raises(store: Store) -> None:
    chunks = store.backend.read(key())

    with pytest.raises(BlobNotFound):
        await anext(chunks)


async def test_read_stopped_early_leaves_the_backend_usable(store: Store) -> None:
    data = content(4 * READ_CHUNK_BYTES)
    blob = key()
    await write(store.backend, blob, data)

    for _ in range(3):
        chunks = store.backend.read(blob)
        assert await anext(chunks) == data[:READ_CHUNK_BYTES]
        await chunks.aclose()

    assert await read_all(store.backend, blob) == data


@pytest.mark.parametrize("size", [1000, 2 * PART + 1], ids=["one-part", "multipart"])
async def test_write_past_max_bytes_keeps_nothing(store: Store, size: int) -> None:
    with pytest.raises(BlobTooLarge) as raised:
        await store.backend.write(key(), stream(content(size)), size - 1)

    assert raised.value.max_bytes == size - 1
    assert store.stored() == []


async def test_write_of_exactly_max_bytes_is_kept(store: Store) -> None:
    data = content(1000)
    blob = key()

    stored = await store.backend.write(blob, stream(data), len(data))

    assert stored.size == len(data)
    assert store.stored() == [blob]


@pytest.mark.parametrize("size", [1000, 2 * PART + 1], ids=["one-part", "multipart"])
async def test_stream_that_raises_keeps_nothing(store: Store, size: int) -> None:
    with pytest.raises(ConnectionResetError):
        await store.backend.write(key(), failing_stream(content(size)), NO_LIMIT)

    assert store.stored() == []


async def test_cancelled_write_keeps_nothing(store: Store) -> None:
    sent = anyio.Event()

    async def endless() -> AsyncIterator[bytes]:
        for index in range(10**6):
            if index * 64 * 1024 > 2 * PART:
                sent.set()
            yield b"x" * (64 * 1024)
            await anyio.sleep(0)

    async with anyio.create_task_group() as group:
        group.start_soon(store.backend.write, key(), endless(), NO_LIMIT)
        await sent.wait()
        group.cancel_scope.cancel()

    assert store.stored() == []


async def test_failed_replacement_keeps_the_old_blob(store: Store) -> None:
    old = content(5000)
    blob = key()
    await write(store.backend, blob, old)

    with pytest.raises(BlobTooLarge):
        await store.backend.write(blob, stream(content(2 * PART + 1)), 2 * PART)
    with pytest.raises(ConnectionResetError):
        await store.backend.write(blob, failing_stream(content(2 * PART + 1)), NO_LIMIT)

    assert await read_all(store.backend, blob) == old
    assert store.stored() == [blob]


async def test_write_replaces_the_blob_under_the_same_key(store: Store) -> None:
    blob = key()
    await write(store.backend, blob, content(2 * PART + 10))
    new = content(1234)

    stored = await write(store.backend, blob, new)

    assert stored == StoredBlob(size=len(new), etag=md5(new))
    assert await read_all(store.backend, blob) == new
    assert store.stored() == [blob]


@pytest.mark.parametrize(
    "size", [PART, PART + 1, 2 * PART, 2 * PART + 12_345], ids=["1", "1+1", "2", "2+rest"]
)
async def test_write_of_several_parts_round_trips(store: Store, size: int) -> None:
    data = content(size)
    blob = key()

    stored = await write(store.backend, blob, data, chunk=100_000)

    assert stored == StoredBlob(size=size, etag=md5(data))
    assert await read_all(store.backend, blob) == data
    assert md5(await read_all(store.backend, blob, PART - 5, PART + 5)) == md5(
        data[PART - 5 : PART + 6]
    )


async def test_write_of_chunks_larger_than_a_part(store: Store) -> None:
    data = content(2 * PART + 7)
    blob = key()

    stored = await store.backend.write(blob, stream(data, len(data)), NO_LIMIT)

    assert stored.etag == md5(data)
    assert await read_all(store.backend, blob) == data


async def test_concurrent_writes_to_different_keys(store: Store) -> None:
    blobs = {key("project-a"): content(PART + index * 1000 + 1) for index in range(6)}
    results: dict[str, StoredBlob] = {}

    async def one(blob: str, data: bytes) -> None:
        results[blob] = await write(store.backend, blob, data, chunk=32 * 1024)

    async with anyio.create_task_group() as group:
        for blob, data in blobs.items():
            group.start_soon(one, blob, data)

    for blob, data in blobs.items():
        assert results[blob].etag == md5(data)
        assert await read_all(store.backend, blob) == data
    assert store.stored() == sorted(blobs)


async def test_copy(store: Store) -> None:
    data = content(70_000)
    source, target = key(), key()
    await write(store.backend, source, data)

    await store.backend.copy(source, target)

    assert await read_all(store.backend, target) == data
    assert await read_all(store.backend, source) == data
    assert store.stored() == sorted([source, target])


async def test_copy_replaces_the_target(store: Store) -> None:
    source, target = key(), key()
    await write(store.backend, source, b"new")
    await write(store.backend, target, b"old content")

    await store.backend.copy(source, target)

    assert await read_all(store.backend, target) == b"new"


async def test_copy_of_missing_source_raises_blob_not_found(store: Store) -> None:
    target = key()

    with pytest.raises(BlobNotFound):
        await store.backend.copy(key(), target)

    assert store.stored() == []


async def test_delete_ignores_missing_keys(store: Store) -> None:
    remaining, deleted = key(), key()
    await write(store.backend, remaining, b"remaining")
    await write(store.backend, deleted, b"deleted")

    await store.backend.delete([deleted, key(), key()])
    await store.backend.delete([])

    assert store.stored() == [remaining]
    with pytest.raises(BlobNotFound):
        await anext(store.backend.read(deleted))


async def test_delete_in_several_batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "DELETE_BATCH", 3)
    blobs = [key("project") for _ in range(8)]
    for blob in blobs:
        await write(store.backend, blob, blob.encode())

    await store.backend.delete(blobs[:7])

    assert store.stored() == [blobs[7]]


async def test_delete_prefix_removes_only_that_project(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pages, so that the S3 listing and deleting take several rounds.
    monkeypatch.setattr(s3, "DELETE_BATCH", 2)
    project, other = uuid.uuid4().hex, uuid.uuid4().hex
    # Same leading characters, another project: a bare string prefix would take it too.
    lookalike = project + "0"
    doomed = [key(project) for _ in range(5)]
    survivors = [key(other), key(other), key(lookalike)]
    for blob in doomed + survivors:
        await write(store.backend, blob, b"bytes of " + blob.encode())

    await store.backend.delete_prefix(f"{project}/")

    assert store.stored() == sorted(survivors)
    for blob in survivors:
        assert await read_all(store.backend, blob) == b"bytes of " + blob.encode()


async def test_delete_prefix_of_unknown_project_is_fine(store: Store) -> None:
    await store.backend.delete_prefix(f"{uuid.uuid4().hex}/")

    assert store.stored() == []


@pytest.mark.parametrize("prefix", ["", "/"])
async def test_delete_prefix_rejects_empty_prefix(store: Store, prefix: str) -> None:
    blob = key()
    await write(store.backend, blob, b"x")

    with pytest.raises(ValueError):
        await store.backend.delete_prefix(prefix)

    assert store.stored() == [blob]


# S3 only: what the contract does not show.


@pytest.fixture
async def s3_store(s3_server: str) -> AsyncIterator[tuple[S3Backend, Any]]:
    fields = s3_settings(s3_server)
    backend = S3Backend.from_settings(Settings(**fields))
    client = s3_client(s3_server)
    try:
        yield backend, client
    finally:
        await backend.close()
        s3_remove_bucket(client, fields["s3_bucket"])
        client.close()


def etag_parts(client: Any, bucket: str, blob: str) -> int:
    """How many parts S3 assembled the object from; 0 for a single PutObject."""
    etag = client.head_object(Bucket=bucket, Key=blob)["ETag"].strip('"')
    return int(etag.split("-")[1]) if "-" in etag else 0


async def test_s3_bucket_is_created_on_first_use(s3_store: tuple[S3Backend, Any]) -> None:
    backend, client = s3_store
    assert backend.bucket not in bucket_names(client)

    await write(backend, key(), b"first")

    assert backend.bucket in bucket_names(client)


async def test_s3_multipart_only_past_one_part(
    s3_store: tuple[S3Backend, Any],
) -> None:
    backend, client = s3_store
    one, three = key(), key()

    await write(backend, one, content(backend.part_bytes))
    stored = await write(backend, three, content(2 * backend.part_bytes + 1))

    assert etag_parts(client, backend.bucket, one) == 0
    assert etag_parts(client, backend.bucket, three) == 3
    # The etag is the MD5 of the content even when S3's own is not.
    assert len(stored.etag) == 32


async def test_s3_copy_large_blob_by_parts(
    s3_store: tuple[S3Backend, Any],
) -> None:
    backend, client = s3_store
    backend.max_copy_bytes = 2 * PART
    backend.copy_part_bytes = PART
    data = content(2 * PART + 100)
    source, target = key(), key()
    await write(backend, source, data)

    await backend.copy(source, target)

    assert await read_all(backend, target) == data
    assert etag_parts(client, backend.bucket, target) == 3
    assert client.list_multipart_uploads(Bucket=backend.bucket).get("Uploads", []) == []


async def test_s3_delete_prefix_aborts_uploads_in_progress(
    s3_store: tuple[S3Backend, Any],
) -> None:
    backend, client = s3_store
    project = uuid.uuid4().hex
    await write(backend, key(project), b"x")
    # As left by a server that died in the middle of an upload.
    client.create_multipart_upload(Bucket=backend.bucket, Key=key(project))

    await backend.delete_prefix(f"{project}/")

    assert s3_contents(client, backend.bucket) == []


async def test_s3_delete_objects_sends_content_md5(s3_store: tuple[S3Backend, Any]) -> None:
    backend, _ = s3_store
    sent: list[dict[str, str]] = []
    backend._client.meta.events.register(
        "before-send.s3.DeleteObjects",
        lambda request, **_: sent.append(dict(request.headers)),
    )

    await backend.delete([key()])

    assert "Content-MD5" in sent[0]


def test_s3_from_settings_needs_a_bucket() -> None:
    with pytest.raises(ValueError, match="ZBAAS_S3_BUCKET"):
        S3Backend.from_settings(Settings(storage_backend="s3"))


def test_s3_from_settings_needs_both_credentials() -> None:
    with pytest.raises(ValueError, match="ZBAAS_S3_SECRET_ACCESS_KEY"):
        S3Backend.from_settings(
            Settings(storage_backend="s3", s3_bucket="b", s3_access_key_id="id only")
        )


def test_s3_part_size_below_minimum_rejected() -> None:
    with pytest.raises(ValueError, match="part_bytes"):
        S3Backend("bucket", endpoint_url="http://127.0.0.1:9", part_bytes=MIB)


async def test_unreachable_store_is_503() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    backend = S3Backend(
        "zbaas-down",
        endpoint_url=f"http://127.0.0.1:{port}",
        region="us-east-1",
        access_key_id="zbaas-test",
        secret_access_key="zbaas-test-secret",
    )
    try:
        with pytest.raises(ServiceUnavailable) as raised:
            await write(backend, key(), b"x")
        assert raised.value.status == 503
        assert raised.value.code == "storage_unavailable"
    finally:
        await backend.close()
