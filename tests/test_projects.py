from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import connect


def test_create_project_provisions_database(
    client: httpx.Client, project: dict[str, Any], server_url: str
) -> None:
    with connect(server_url, project["db_name"]) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}

    assert project["status"] == "active"
    assert {"auth", "zbaas_meta", "public"} <= schemas
