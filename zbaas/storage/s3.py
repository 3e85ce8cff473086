"""Blobs as objects in one S3 bucket: AWS, MinIO, Cloudflare R2 or any S3-compatible store.

boto3 is synchronous, so every call runs in a worker thread and the event loop
does not wait on the network. Every project's blobs share one bucket under the
project's key prefix. The bucket is created on first use when it does not
exist, which is what a fresh MinIO (or a test server) needs. On AWS, either
grant the credentials ``s3:CreateBucket`` or create the bucket beforehand.

An upload that is cut short (too large, a failing stream, a cancelled request)
aborts its multipart upload, so the store keeps no part of it. A process that
dies in the middle of an upload cannot abort it. A lifecycle rule on the
bucket, "abort incomplete multipart uploads after 1 day", clears such parts,
and deleting a project also aborts the uploads under its prefix.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from zbaas.errors import ServiceUnavailable
from zbaas.storage.backend import READ_CHUNK_BYTES, BlobNotFound, BlobTooLarge, StoredBlob

if TYPE_CHECKING:
    from zbaas.config import Settings

logger = logging.getLogger("zbaas.storage")

MIB = 1024 * 1024
# Size of every part of a multipart upload but the last. S3 rejects parts under
# 5 MiB (except the last), and an upload keeps about one part in memory.
PART_BYTES = 8 * MIB
MIN_PART_BYTES = 5 * MIB
# CopyObject copies at most 5 GiB, so larger blobs are copied part by part on
# the server side. 512 MiB parts reach S3's largest object (5 TiB) within its
# 10,000 parts.
MAX_COPY_BYTES = 5 * 1024 * MIB
COPY_PART_BYTES = 512 * MIB
# DeleteObjects takes at most 1,000 keys per request.
DELETE_BATCH = 1000
# One pooled connection per worker thread that anyio runs by default.
MAX_CONNECTIONS = 40

NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

T = TypeVar("T")


class StorageError(Exception):
    """An S3 operation that the store rejected and the backend cannot recover from."""


class S3Backend:
    """One S3 object per blob, under the key zbaas made (``<project id>/<object id>``)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES}, got {part_bytes}")
        self.bucket = bucket
        self.region = region
        self.part_bytes = part_bytes
        self.max_copy_bytes = MAX_COPY_BYTES
        self.copy_part_bytes = COPY_PART_BYTES
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

        config = Config(
            max_pool_connections=MAX_CONNECTIONS,
            connect_timeout=10,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": 3},
            # Path-style addressing for other stores, because MinIO serves buckets
            # by path unless DNS is set up for virtual hosts (bucket.host). AWS
            # keeps its own default.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            # Checksums only where S3 requires them, because stores that do not know
            # the newer x-amz-checksum-* headers reject them. TLS already guards the
            # bytes in transit.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session of its own, because the default boto3 session is not safe to
        # share between threads while clients are made. The client itself is.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._client: BaseClient = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Backend:
        """Build the backend from the ``ZBAAS_S3_*`` settings."""
        if not settings.s3_bucket:
            raise ValueError("ZBAAS_S3_BUCKET must name a bucket when ZBAAS_STORAGE_BACKEND is s3")
        if bool(settings.s3_access_key_id) != bool(settings.s3_secret_access_key):
            raise ValueError(
                "set both ZBAAS_S3_ACCESS_KEY_ID and ZBAAS_S3_SECRET_ACCESS_KEY, or neither "
                "to use boto3's default credentials"
            )
        return cls(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )

    async def write(self, key: str, chunks: AsyncIterable[bytes], max_bytes: int) -> StoredBlob:
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        buffer = bytearray()
        upload: _MultipartUpload | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise BlobTooLarge(max_bytes)
                buffer += chunk
                # Only a buffer past one part proves that more than one part
                # follows, so a stream that fits in one part gets a single PutObject.
                # Parts go one at a time: the stream waits while a part uploads, and
                # memory stays at about one part.
                while len(buffer) > self.part_bytes:
                    if upload is None:
                        upload = await self._run(_MultipartUpload.start, self, key)
                    part, buffer = buffer, buffer[self.part_bytes :]
                    del part[self.part_bytes :]
                    await self._run(upload.send, part, digest)

            if upload is None:
                await self._run(self._put, key, buffer, digest)
            else:
                await self._run(upload.send, buffer, digest)
                await self._run(upload.complete)
        except BaseException:
            if upload is not None:
                # Shielded: a cancelled request must still free the parts it stored.
                with anyio.CancelScope(shield=True):
                    await self._run(upload.abort)
            raise
        return StoredBlob(size=size, etag=digest.hexdigest())

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if end is not None and end < start:
            return
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        # No Range for the whole blob, because S3 returns 416 for any range of an empty object.
        if start > 0 or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = await self._run(partial(self._client.get_object, **request))
        except ClientError as error:
            if _error_code(error) in NOT_FOUND_CODES:
                raise BlobNotFound(key) from None
            if _error_code(error) == "InvalidRange":
                # The range starts past the last byte, so there is nothing to send,
                # as from a file.
                return
            raise

        body = response["Body"]
        try:
            while chunk := await anyio.to_thread.run_sync(body.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            # Closing before the end drops the connection instead of reading the rest.
            body.close()

    async def copy(self, source: str, target: str) -> None:
        try:
            await self._run(self._copy, source, target)
        except ClientError as error:
            if _error_code(error) in NOT_FOUND_CODES:
                raise BlobNotFound(source) from None
            raise

    async def delete(self, keys: Sequence[str]) -> None:
        for first in range(0, len(keys), DELETE_BATCH):
            await self._run(self._delete_batch, keys[first : first + DELETE_BATCH])

    async def delete_prefix(self, prefix: str) -> None:
        # An empty prefix would delete the whole bucket's content, every project's blobs.
        if not prefix.strip("/"):
            raise ValueError(f"invalid storage prefix {prefix!r}: it names no project")
        await self._run(self._delete_prefix, prefix)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._client.close)

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(self._call, func, *args)
        except (BotoCoreError, ClientError) as error:
            if isinstance(error, ClientError) and not _is_server_error(error):
                raise
            # The store is down or unreachable: the client gets 503 and may retry.
            logger.error("S3 request to bucket %s failed: %s", self.bucket, error)
            raise ServiceUnavailable(
                "object storage is unavailable; try again later", code="storage_unavailable"
            ) from None

    # The methods below run in a worker thread.

    def _call(self, func: Callable[..., T], *args: Any) -> T:
        self._ensure_bucket()
        return func(*args)

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as error:
                if _error_code(error) not in {"404", "NoSuchBucket", "NotFound"}:
                    raise
                self._create_bucket()
            self._bucket_ready = True

    def _create_bucket(self) -> None:
        request: dict[str, Any] = {"Bucket": self.bucket}
        # S3 rejects us-east-1 as a LocationConstraint, because it is the default.
        if self.region and self.region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**request)
        except ClientError as error:
            # Another zbaas process created it first.
            if _error_code(error) != "BucketAlreadyOwnedByYou":
                raise
            return
        logger.info("created S3 bucket %s", self.bucket)

    def _put(self, key: str, content: bytearray, digest: Any) -> None:
        digest.update(content)
        self._client.put_object(Bucket=self.bucket, Key=key, Body=content)

    def _copy(self, source: str, target: str) -> None:
        head = self._client.head_object(Bucket=self.bucket, Key=source)
        copy_source = {"Bucket": self.bucket, "Key": source}
        if head["ContentLength"] <= self.max_copy_bytes:
            self._client.copy_object(Bucket=self.bucket, Key=target, CopySource=copy_source)
            return

        upload = _MultipartUpload.start(self, target)
        try:
            for first in range(0, head["ContentLength"], self.copy_part_bytes):
                last = min(first + self.copy_part_bytes, head["ContentLength"]) - 1
                upload.copy_part(copy_source, first, last, head["ETag"])
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def _delete_batch(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        response = self._client.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        # S3 does not list missing keys as errors, so anything here is a real
        # failure (access denied, throttling).
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise StorageError(
                f"S3 failed to delete {len(errors)} of {len(keys)} blobs, the first "
                f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
            )

    def _delete_prefix(self, prefix: str) -> None:
        uploads = self._client.get_paginator("list_multipart_uploads")
        for page in uploads.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                _abort(self._client, self.bucket, upload["Key"], upload["UploadId"])

        listing = self._client.get_paginator("list_objects_v2")
        # One page of keys is one DeleteObjects batch.
        pages = listing.paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": DELETE_BATCH}
        )
        for page in pages:
            self._delete_batch([item["Key"] for item in page.get("Contents", [])])


class _MultipartUpload:
    """One multipart upload of ``key``, its parts sent in order from a worker thread."""

    def __init__(self, backend: S3Backend, key: str, upload_id: str) -> None:
        self.client = backend._client
        self.bucket = backend.bucket
        self.key = key
        self.upload_id = upload_id
        self.parts: list[dict[str, Any]] = []

    @classmethod
    def start(cls, backend: S3Backend, key: str) -> _MultipartUpload:
        response = backend._client.create_multipart_upload(Bucket=backend.bucket, Key=key)
        return cls(backend, key, response["UploadId"])

    def send(self, part: bytearray, digest: Any) -> None:
        digest.update(part)
        number = len(self.parts) + 1
        response = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=part
        )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def copy_part(self, source: dict[str, str], first: int, last: int, etag: str) -> None:
        number = len(self.parts) + 1
        response = self.client.upload_part_copy(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            CopySource=source,
            CopySourceRange=f"bytes={first}-{last}",
            # Every part from the same version of the source, even if it is replaced meanwhile.
            CopySourceIfMatch=etag,
        )
        self.parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})

    def complete(self) -> None:
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    def abort(self) -> None:
        _abort(self.client, self.bucket, self.key, self.upload_id)


def _abort(client: BaseClient, bucket: str, key: str, upload_id: str) -> None:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as error:
        # The upload is already completed or aborted, so nothing is left to free.
        if _error_code(error) != "NoSuchUpload":
            raise


def _is_server_error(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return int(status) >= 500


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _add_content_md5(request: Any, **_: Any) -> None:
    """Add a Content-MD5 header to a DeleteObjects request.

    botocore 1.36 and later send a CRC32 checksum header in its place, which
    some S3-compatible stores (older MinIO releases among them) reject with
    MissingContentMD5.
    """
    if "Content-MD5" not in request.headers and request.body:
        body = request.body if isinstance(request.body, bytes) else request.body.encode()
        checksum = hashlib.md5(body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(checksum).decode()
