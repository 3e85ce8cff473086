"""HTTP routers, one per area: parse, authorize, call the layer below, shape the response."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    from zbaas.api import (
        auth,
        backup,
        branches,
        endusers,
        extensions,
        health,
        health_report,
        indexes,
        keys,
        migrations,
        orgs,
        projects,
        rest,
        rls,
        search,
        storage,
        storage_admin,
    )

    # Starlette tries routes in order, so the data API, the busiest by far, goes first.
    return [
        rest.router,
        health.router,
        auth.router,
        orgs.router,
        projects.router,
        keys.router,
        migrations.router,
        rls.router,
        extensions.router,
        indexes.router,
        search.router,
        backup.router,
        branches.router,
        health_report.router,
        endusers.router,
        storage.router,
        storage_admin.router,
    ]
