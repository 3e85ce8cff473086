"""Project API keys: only their SHA-256 and a display prefix are stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from zbaas.errors import NotFound
from zbaas.platform.projects import PROJECT_COLUMNS, Project
from zbaas.platform.security import KEY_DISPLAY_LENGTH, generate_api_key, hash_token

# last_used_at is written at most this often per key, so the hot path stays a read.
LAST_USED_RESOLUTION = "1 minute"


@dataclass
class ApiKey:
    id: UUID
    name: str
    type: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass
class KeyOwner:
    """The key type and the project that a presented key authenticates as."""

    key_id: UUID
    type: str
    project: Project

    @property
    def project_id(self) -> UUID:
        return self.project.id


KEY_COLUMNS = "id, name, type, prefix, created_at, last_used_at"


async def create(
    conn: psycopg.AsyncConnection, project_id: UUID, name: str, key_type: str
) -> tuple[ApiKey, str]:
    """Store a new key and return it with the plain key, which is never readable again."""
    plain = generate_api_key(key_type)
    cur = conn.cursor(row_factory=class_row(ApiKey))
    await cur.execute(
        f"INSERT INTO api_keys (project_id, name, type, prefix, key_hash) "
        f"VALUES (%s, %s, %s, %s, %s) RETURNING {KEY_COLUMNS}",
        (project_id, name, key_type, plain[:KEY_DISPLAY_LENGTH], hash_token(plain)),
    )
    key = await cur.fetchone()
    assert key is not None
    return key, plain


async def list_for_project(conn: psycopg.AsyncConnection, project_id: UUID) -> list[ApiKey]:
    cur = conn.cursor(row_factory=class_row(ApiKey))
    await cur.execute(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = %s ORDER BY created_at, id",
        (project_id,),
    )
    return await cur.fetchall()


async def revoke(conn: psycopg.AsyncConnection, project_id: UUID, key_id: UUID) -> None:
    cur = await conn.execute(
        "DELETE FROM api_keys WHERE id = %s AND project_id = %s", (key_id, project_id)
    )
    if cur.rowcount != 1:
        raise NotFound(f"API key {key_id} not found", code="key_not_found")


_PROJECT_SELECT = ", ".join(f"p.{c.strip()}" for c in PROJECT_COLUMNS.split(","))


async def resolve(conn: psycopg.AsyncConnection, plain: str) -> KeyOwner | None:
    """Find the key and its active project in one indexed lookup; None when unknown or revoked.

    Revocation deletes the row, so every API process rejects the key on its next lookup.
    """
    cur = await conn.execute(
        f"WITH touched AS ("
        f" UPDATE api_keys SET last_used_at = now() WHERE key_hash = %(h)s"
        f" AND (last_used_at IS NULL OR last_used_at < now() - interval '{LAST_USED_RESOLUTION}')"
        f") SELECT k.id AS key_id, k.type AS key_type, {_PROJECT_SELECT}"
        f" FROM api_keys k JOIN projects p ON p.id = k.project_id AND p.status = 'active'"
        f" WHERE k.key_hash = %(h)s",
        {"h": hash_token(plain)},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    key_id, key_type = row.pop("key_id"), row.pop("key_type")
    return KeyOwner(key_id=key_id, type=key_type, project=Project(**row))
