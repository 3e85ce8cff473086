"""HTTP routers, one per area: parse, authorize, call the layer below, shape the answer."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    from zbaas.api import auth, backup, health, keys, orgs, projects

    return [health.router, auth.router, orgs.router, projects.router, keys.router, backup.router]
