"""The contract every storage backend keeps.

A backend stores opaque blobs under keys that zbaas makes itself, of the form
``<project id>/<object id>``: no name a user chose ever becomes a file path or
an S3 key, so a hostile object name cannot reach outside its project. Names,
buckets, sizes and types live in the project's database; the backend stores
only bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

# Bytes handed to the client per chunk when streaming a blob out.
READ_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class StoredBlob:
    """Size and checksum of a blob a backend has written."""

    size: int
    # Hex MD5 of the content, as S3 reports for a single-part upload.
    etag: str


class BlobTooLarge(Exception):
    """The stream went past ``max_bytes``; the backend kept none of it."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the content is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class BlobNotFound(Exception):
    """No blob is stored under the key."""


class Backend(Protocol):
    """Stores blobs. Every method is safe to call from many requests at once."""

    async def write(self, key: str, chunks: AsyncIterable[bytes], max_bytes: int) -> StoredBlob:
        """Store the stream under ``key`` as it arrives, replacing any blob there.

        Past ``max_bytes`` raise :class:`BlobTooLarge` and keep nothing, not even a
        partial blob. If the stream raises, nothing is kept either. A reader never
        sees a half-written blob.
        """
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Yield the bytes from ``start`` to ``end`` inclusive (``None``: to the last byte).

        Raises :class:`BlobNotFound` on the first iteration when the key is absent.
        Chunks are at most :data:`READ_CHUNK_BYTES`, so memory stays flat.
        """
        ...

    async def copy(self, source: str, target: str) -> None:
        """Copy one blob to another key; raise :class:`BlobNotFound` without a source."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete the blobs, ignoring keys with no blob."""
        ...

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every blob whose key starts with ``prefix`` (a project's ``<id>/``)."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
