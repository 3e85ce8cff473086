"""Connections into one project database, as its owner or authenticator role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from zbaas.app import Services
from zbaas.platform.projects import Project


@asynccontextmanager
async def as_owner(services: Services, project: Project) -> AsyncIterator[psycopg.AsyncConnection]:
    """Yield a pooled autocommit connection as the project's owner role (dict rows)."""
    pool = await services.pools.tenant(
        project.db_name, project.owner_role, services.box.decrypt(project.owner_password)
    )
    async with pool.connection() as conn:
        yield conn


@asynccontextmanager
async def as_authenticator(
    services: Services, project: Project
) -> AsyncIterator[psycopg.AsyncConnection]:
    """Yield a pooled autocommit connection as the project's authenticator role (dict rows).

    It may only ``SET ROLE`` to anon, authenticated or service_role.
    """
    pool = await services.pools.tenant(
        project.db_name,
        project.authenticator_role,
        services.box.decrypt(project.authenticator_password),
    )
    async with pool.connection() as conn:
        yield conn


@asynccontextmanager
async def as_superuser(
    services: Services, project: Project
) -> AsyncIterator[psycopg.AsyncConnection]:
    """Yield an unpooled superuser connection, for control-plane work the owner may not do."""
    async with services.pools.admin(project.db_name) as conn:
        yield conn


@asynccontextmanager
async def as_platform(
    services: Services, project: Project
) -> AsyncIterator[psycopg.AsyncConnection]:
    """Yield a pooled autocommit superuser connection (dict rows).

    For frequent control-plane work on tables that no project role may touch,
    such as storage metadata; the pool closes its connections when idle.
    """
    pool = await services.pools.tenant(project.db_name)
    async with pool.connection() as conn:
        yield conn
