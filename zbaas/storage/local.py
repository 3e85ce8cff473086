"""Blobs as files in a folder under the data directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from zbaas.storage.backend import READ_CHUNK_BYTES, BlobNotFound, BlobTooLarge, StoredBlob

# Partial uploads go here and are renamed into place once complete, so a reader
# never sees half a file. The name cannot clash with a project id.
INCOMING = ".incoming"


class LocalBackend:
    """One file per blob at ``<root>/<key>``; keys are made by zbaas, never by users."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / INCOMING).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys come from zbaas itself; this guard turns a bug into an error, not a leak.
        if not path.is_relative_to(self.root.resolve()) or path == self.root.resolve():
            raise ValueError(f"storage key {key!r} leaves the storage folder")
        return path

    async def write(self, key: str, chunks: AsyncIterable[bytes], max_bytes: int) -> StoredBlob:
        target = self._path(key)
        partial = self.root / INCOMING / uuid.uuid4().hex
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            async with await anyio.open_file(partial, "wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise BlobTooLarge(max_bytes)
                    digest.update(chunk)
                    await handle.write(chunk)
            await anyio.to_thread.run_sync(_place, partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return StoredBlob(size=size, etag=digest.hexdigest())

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await anyio.open_file(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        async with handle:
            await handle.seek(start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                size = READ_CHUNK_BYTES if remaining is None else min(READ_CHUNK_BYTES, remaining)
                chunk = await handle.read(size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    async def copy(self, source: str, target: str) -> None:
        source_path, target_path = self._path(source), self._path(target)
        partial = self.root / INCOMING / uuid.uuid4().hex

        def run() -> None:
            try:
                shutil.copyfile(source_path, partial)
            except FileNotFoundError:
                raise BlobNotFound(source) from None
            _place(partial, target_path)

        try:
            await anyio.to_thread.run_sync(run)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self._path(key) for key in keys]

        def run() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        await anyio.to_thread.run_sync(run)

    async def delete_prefix(self, prefix: str) -> None:
        # Prefixes are whole folders here: a project's "<id>/".
        folder = self._path(prefix.rstrip("/"))
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))

    async def close(self) -> None:
        return None


def _place(partial: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)
