"""HTTP routers, one per area: each parses, authorizes, calls the layer below and shapes the response."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    from zbaas.api import auth, health, keys, orgs, projects, rls

    return [health.router, auth.router, orgs.router, projects.router, keys.router, rls.router]
