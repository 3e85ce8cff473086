"""Object storage for projects: the bytes live in a backend, the metadata in PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from zbaas.config import Settings
from zbaas.storage.backend import Backend
from zbaas.storage.local import LocalBackend


def open_backend(settings: Settings, storage_root: Path) -> Backend:
    """Return the backend that ``storage_backend`` names: a local folder, or S3."""
    if settings.storage_backend == "s3":
        # Imported only here, so a local set-up never loads the S3 client.
        from zbaas.storage.s3 import S3Backend

        return S3Backend.from_settings(settings)
    return LocalBackend(storage_root)
