"""Server-level setup: the control database and the roles every project shares."""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

logger = logging.getLogger("zbaas.postgres")

# NOLOGIN roles that RLS policies name; one set per server, shared by all projects.
# A project's authenticator reaches them only with SET ROLE inside its own database.
API_ROLES: dict[str, str] = {
    "anon": "NOLOGIN NOINHERIT",
    "authenticated": "NOLOGIN NOINHERIT",
    "service_role": "NOLOGIN NOINHERIT BYPASSRLS",
}


async def ensure_database(conn: psycopg.AsyncConnection, dbname: str) -> None:
    """Create ``dbname`` unless it exists; ``conn`` is a superuser autocommit connection."""
    row = await (
        await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
    ).fetchone()
    if row is not None:
        return
    try:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        logger.info("created database %s", dbname)
    except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
        # Another API process created it first. When both passed the check at
        # once, PostgreSQL reports the clash on pg_database's unique index.
        pass


async def ensure_api_roles(conn: psycopg.AsyncConnection) -> None:
    """Create ``anon``, ``authenticated`` and ``service_role`` where missing."""
    for role, options in API_ROLES.items():
        exists = await (
            await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        ).fetchone()
        if exists:
            continue
        try:
            await conn.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(role)))
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            pass  # created concurrently by another API process
