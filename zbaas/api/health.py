"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter

from zbaas import __version__
from zbaas.api.deps import ControlConn
from zbaas.api.models import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health(conn: ControlConn) -> HealthResponse:
    """Report that the process responds and its control database is reachable."""
    await conn.execute("SELECT 1")
    return HealthResponse(status="ok", version=__version__)
