"""Settings, read from the environment with the prefix ``ZBAAS_``."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_KEY_FILE = "secret_key"
MIN_SECRET_KEY_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZBAAS_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL server for the control and project databases; "
        "unset starts embedded PostgreSQL 18 in the data folder.",
    )
    control_database: str = Field(
        default="zbaas", description="Name of the control database on that server."
    )
    data_dir: Path = Field(
        default=Path("zbaas-data"),
        description="Folder for embedded PostgreSQL, storage buckets and the generated secret key.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Signs platform tokens and encrypts stored credentials; "
        "generated into the data folder when unset.",
    )
    environment: str = Field(default="development", description="development or production.")
    access_token_ttl: int = Field(default=900, description="Platform access token lifetime, s.")
    refresh_token_ttl: int = Field(
        default=30 * 24 * 3600, description="Platform refresh token lifetime, s."
    )
    enduser_access_token_ttl: int = Field(
        default=3600, description="Lifetime of a project end user's access token (JWT), s."
    )
    enduser_refresh_token_ttl: int = Field(
        default=30 * 24 * 3600, description="Lifetime of a project end user's refresh token, s."
    )
    rest_statement_timeout_ms: int = Field(
        default=8000, description="statement_timeout of each data API request, ms."
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, description="Largest request body accepted, bytes."
    )
    migration_lock_timeout_ms: int = Field(
        default=5000, description="lock_timeout for migrations and user SQL, ms."
    )
    migration_statement_timeout_ms: int = Field(
        default=300_000, description="statement_timeout for migrations and user SQL, ms."
    )
    search_statement_timeout_ms: int = Field(
        default=30_000, description="statement_timeout for one full-text search request, ms."
    )
    tenant_pool_max_size: int = Field(
        default=5, description="Connections per project database and role, per API process."
    )
    tenant_pool_max_idle: float = Field(
        default=60.0, description="Seconds before an idle project connection is closed."
    )

    storage_backend: Literal["local", "s3"] = Field(
        default="local",
        description="Where object bytes are kept: local (a folder under the data folder) "
        "or s3 (any S3-compatible store).",
    )
    storage_quota_bytes: int = Field(
        default=1024**3, ge=0, description="Total size of all objects of one project, bytes."
    )
    storage_file_size_limit: int = Field(
        default=50 * 1024**2,
        ge=0,
        description="Largest object of a bucket that sets no file_size_limit, bytes.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint, for MinIO, R2 or another S3-compatible store; unset is AWS.",
    )
    s3_bucket: str | None = Field(
        default=None, description="S3 bucket that stores every project's objects."
    )
    s3_region: str | None = Field(default=None, description="S3 region.")
    s3_access_key_id: str | None = Field(
        default=None, description="S3 access key id; unset uses boto3's default credentials."
    )
    s3_secret_access_key: str | None = Field(default=None, description="S3 secret access key.")

    @field_validator("control_database")
    @classmethod
    def _check_control_database(cls, value: str) -> str:
        if not value or len(value.encode()) > 63:
            raise ValueError("control_database must be 1 to 63 bytes")
        return value

    @cached_property
    def resolved_secret_key(self) -> str:
        """Return the configured secret key, or one generated once into the data folder."""
        if self.secret_key:
            if self.environment == "production" and len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
                raise ValueError(
                    f"ZBAAS_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters "
                    "in production"
                )
            return self.secret_key
        if self.environment == "production":
            raise ValueError("ZBAAS_SECRET_KEY must be set in production")
        path = self.data_dir / SECRET_KEY_FILE
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # The key is written whole to a file of its own, then linked into place.
            # A link fails when the name exists, so processes starting at once agree
            # on the first key published, and none reads a half-written file.
            draft = self.data_dir / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            try:
                fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write(secrets.token_urlsafe(48))
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink(missing_ok=True)
        return path.read_text(encoding="ascii").strip()
