"""The data API's table cache: schema changes are seen by the next request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ThreadedServer, signup_and_login
from tests.restkit import ProjectHandle, rest_headers, run_as_owner
from zbaas.config import Settings
from zbaas.rest import catalog


@pytest.fixture
def handle(api: ThreadedServer, server_url: str, settings: Settings) -> Iterator[ProjectHandle]:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        project = ProjectHandle(http, signup_and_login(http), "cache")
        run_as_owner(
            server_url,
            settings,
            project.project,
            "CREATE TABLE things (id integer PRIMARY KEY, name text NOT NULL);"
            "INSERT INTO things VALUES (1, 'one'), (2, 'two');",
        )
        yield project
        project.delete()


@pytest.fixture
def ddl(server_url: str, settings: Settings, handle: ProjectHandle) -> Any:
    def run(statements: str) -> None:
        run_as_owner(server_url, settings, handle.project, statements)

    return run


@pytest.fixture
def rest(api: ThreadedServer, handle: ProjectHandle) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{api.url}/rest/v1", headers=rest_headers(handle.secret), timeout=30
    ) as http:
        yield http


def test_lookups_are_cached(rest: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    load = catalog.table

    async def counting(conn: Any, schema: str, name: str) -> catalog.Table:
        loads.append(name)
        return await load(conn, schema, name)

    monkeypatch.setattr(catalog, "table", counting)
    for _ in range(20):
        assert rest.get("/things", params={"id": "eq.1"}).json() == [{"id": 1, "name": "one"}]

    assert loads.count("things") <= 2


def test_added_column_is_seen(rest: httpx.Client, ddl: Any) -> None:
    assert rest.get("/things", params={"id": "eq.1"}).status_code == 200
    ddl("ALTER TABLE things ADD COLUMN colour text NOT NULL DEFAULT 'red'")

    selected = rest.get("/things", params={"select": "id,colour", "id": "eq.1"})
    assert selected.status_code == 200, selected.text
    assert selected.json() == [{"id": 1, "colour": "red"}]

    filtered = rest.get("/things", params={"colour": "eq.red", "order": "id"})
    assert [row["id"] for row in filtered.json()] == [1, 2]

    inserted = rest.post("/things", json={"id": 3, "name": "three", "colour": "blue"})
    assert inserted.status_code == 201, inserted.text


def test_dropped_column_is_400(rest: httpx.Client, ddl: Any) -> None:
    assert rest.get("/things", params={"name": "eq.one"}).status_code == 200
    ddl("ALTER TABLE things DROP COLUMN name")

    response = rest.get("/things", params={"name": "eq.one"})
    assert response.status_code == 400
    assert response.json()["code"] == "42703"

    written = rest.patch("/things", params={"id": "eq.1"}, json={"name": "uno"})
    assert written.status_code == 400
    assert written.json()["code"] == "PGRST204"


def test_dropped_table_is_404(rest: httpx.Client, ddl: Any) -> None:
    assert rest.get("/things").status_code == 200
    ddl("DROP TABLE things")

    assert rest.get("/things").status_code == 404
    assert rest.post("/things", json={"id": 9, "name": "nine"}).status_code == 404


def test_recreated_table_is_seen(rest: httpx.Client, ddl: Any) -> None:
    assert rest.get("/things").status_code == 200
    ddl("DROP TABLE things; CREATE TABLE things (code text PRIMARY KEY, label text)")

    inserted = rest.post("/things", json={"code": "a", "label": "first"})
    assert inserted.status_code == 201, inserted.text
    assert rest.get("/things", params={"select": "code,label"}).json() == [
        {"code": "a", "label": "first"}
    ]


def test_renamed_table_is_seen(rest: httpx.Client, ddl: Any) -> None:
    assert rest.get("/things").status_code == 200
    ddl("ALTER TABLE things RENAME TO widgets")

    assert rest.get("/things").status_code == 404
    assert len(rest.get("/widgets").json()) == 2


def test_changed_primary_key_upserts(rest: httpx.Client, ddl: Any) -> None:
    upsert = {"Prefer": "resolution=merge-duplicates,return=representation"}
    assert rest.post("/things", json={"id": 1, "name": "uno"}, headers=upsert).status_code == 201
    ddl("ALTER TABLE things DROP CONSTRAINT things_pkey;ALTER TABLE things ADD PRIMARY KEY (name)")

    # The cached key (id) no longer has a unique index, so PostgreSQL rejects it
    # and the request runs again with the new key (name).
    response = rest.post("/things", json={"id": 7, "name": "two"}, headers=upsert)
    assert response.status_code == 201, response.text
    assert response.json() == [{"id": 7, "name": "two"}]
