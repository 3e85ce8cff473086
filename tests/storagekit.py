"""Helpers shared by the storage tests: projects on the storage server, clients, end users."""

from __future__ import annotations

import http.client
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from storage3 import SyncStorageClient
from supabase import Client, create_client

from tests.restkit import PASSWORD


def storage_client(url: str, key: str) -> SyncStorageClient:
    """The storage client of an unmodified ``supabase.create_client``."""
    return create_client(url, key).storage


def end_user(url: str, publishable_key: str) -> tuple[Client, str]:
    """Sign a new end user up through the supabase client; return the client and user id."""
    client = create_client(url, publishable_key)
    response = client.auth.sign_up(
        {"email": f"end-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD}
    )
    assert response.user is not None
    return client, str(response.user.id)


def raw_request(
    base_url: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send ``path`` exactly as written: no client normalizes its dot segments or escapes."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def tree(root: Path) -> set[str]:
    """Every file and folder under ``root``, relative to it."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def error_of(response: Any) -> dict[str, Any]:
    """The ``error`` object of a zbaas error response, checked for its shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return dict(body["error"])
