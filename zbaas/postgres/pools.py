"""Connection pools: one for the control database, one per project database and role.

Project pools are opened on first use and hold no connection once idle, so the
number of connections an API process keeps stays bounded however many projects
exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from zbaas.config import Settings

logger = logging.getLogger("zbaas.postgres")

# A pool unused this long is closed outright, not only emptied of connections.
POOL_CLOSE_AFTER_S = 600.0


class Pools:
    """The superuser connection to one server, and the pools opened on it."""

    def __init__(self, server_url: str, settings: Settings) -> None:
        self.server_url = server_url
        self.settings = settings
        self.control: AsyncConnectionPool | None = None
        self._tenant: dict[tuple[str, str], tuple[AsyncConnectionPool, float]] = {}
        self._lock = asyncio.Lock()

    def conninfo(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        """Return a connection string for ``dbname`` on this server, as ``user`` if given."""
        params: dict[str, object] = {"dbname": dbname, "application_name": "zbaas"}
        if user is not None:
            params["user"] = user
            params["password"] = password
        return make_conninfo(self.server_url, **params)

    def server_params(self) -> dict[str, str]:
        return {k: str(v) for k, v in conninfo_to_dict(self.server_url).items()}

    async def open(self) -> None:
        self.control = AsyncConnectionPool(
            self.conninfo(self.settings.control_database),
            min_size=2,
            max_size=20,
            kwargs={"autocommit": True, "row_factory": dict_row},
            open=False,
            name="control",
        )
        await self.control.open(wait=True, timeout=30)

    async def close(self) -> None:
        for pool, _ in self._tenant.values():
            await pool.close()
        self._tenant.clear()
        if self.control is not None:
            await self.control.close()

    @asynccontextmanager
    async def admin(self, dbname: str) -> AsyncIterator[psycopg.AsyncConnection[dict]]:
        """Open a superuser connection to ``dbname``, in autocommit, for control-plane work."""
        conn = await psycopg.AsyncConnection.connect(
            self.conninfo(dbname), autocommit=True, row_factory=dict_row
        )
        try:
            yield conn
        finally:
            await conn.close()

    async def tenant(
        self, dbname: str, user: str | None = None, password: str | None = None
    ) -> AsyncConnectionPool:
        """Return the pool for ``user`` on ``dbname``, opening it on first use.

        Without a user the pool connects as the server's superuser.
        """
        # No role is named "", so the superuser's pool cannot clash with a role's.
        key = (dbname, user or "")
        now = time.monotonic()
        entry = self._tenant.get(key)
        if entry is not None:
            self._tenant[key] = (entry[0], now)
            return entry[0]

        async with self._lock:
            entry = self._tenant.get(key)
            if entry is None:
                pool = AsyncConnectionPool(
                    self.conninfo(dbname, user, password),
                    min_size=0,
                    max_size=self.settings.tenant_pool_max_size,
                    max_idle=self.settings.tenant_pool_max_idle,
                    kwargs={"autocommit": True, "row_factory": dict_row},
                    open=False,
                    name=f"{dbname}:{user or 'superuser'}",
                )
                await pool.open()
                entry = (pool, now)
                self._tenant[key] = entry
            await self._close_unused(now)
            return entry[0]

    async def _close_unused(self, now: float) -> None:
        stale = [k for k, (_, used) in self._tenant.items() if now - used > POOL_CLOSE_AFTER_S]
        for key in stale:
            pool, _ = self._tenant.pop(key)
            await pool.close()

    async def forget_database(self, dbname: str) -> None:
        """Close every pool on ``dbname``, before it is dropped."""
        async with self._lock:
            for key in [k for k in self._tenant if k[0] == dbname]:
                pool, _ = self._tenant.pop(key)
                await pool.close()
