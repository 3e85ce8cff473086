from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ThreadedServer, connect, signup_and_login
from zbaas.app import Services
from zbaas.tenant import migrations, sqlcheck


def base(project: dict[str, Any]) -> str:
    return f"/projects/{project['id']}/database/migrations"


def create(
    client: httpx.Client,
    project: dict[str, Any],
    headers: dict[str, str],
    up_sql: str,
    down_sql: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name or f"m_{uuid.uuid4().hex[:8]}", "up_sql": up_sql}
    if down_sql is not None:
        body["down_sql"] = down_sql
    response = client.post(base(project), json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def up(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], migration_id: str
) -> httpx.Response:
    return client.post(f"{base(project)}/{migration_id}/up", headers=headers)


def down(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], migration_id: str
) -> httpx.Response:
    return client.post(f"{base(project)}/{migration_id}/down", headers=headers)


def listing(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> dict[str, dict[str, Any]]:
    response = client.get(base(project), headers=headers)
    assert response.status_code == 200, response.text
    return {m["id"]: m for m in response.json()}


def tables(server_url: str, db_name: str) -> set[str]:
    with connect(server_url, db_name) as conn:
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        ).fetchall()
    return {r[0] for r in rows}


def records(server_url: str, db_name: str) -> list[tuple[Any, ...]]:
    with connect(server_url, db_name) as conn:
        return conn.execute(
            "SELECT version, migration_id::text, name, checksum "
            "FROM zbaas_meta.schema_migrations ORDER BY version"
        ).fetchall()


@pytest.fixture
def headers(user: dict[str, Any]) -> dict[str, str]:
    return dict(user["headers"])


@pytest.fixture
def services(api: ThreadedServer) -> Services:
    return api.app.state.services  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def shared_user(api: ThreadedServer) -> dict[str, Any]:
    """A user for tests that leave the project's applied state alone."""
    with httpx.Client(base_url=api.url, timeout=60) as own:
        return signup_and_login(own)


@pytest.fixture(scope="module")
def shared_project(api: ThreadedServer, shared_user: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One project for tests that only create migrations or are rejected before any change."""
    with httpx.Client(base_url=api.url, timeout=60) as own:
        response = own.post(
            "/projects",
            json={"name": "Shared", "slug": f"s-{uuid.uuid4().hex[:8]}"},
            headers=shared_user["headers"],
        )
        assert response.status_code == 201, response.text
        body = response.json()
        yield body
        own.delete(f"/projects/{body['id']}", headers=shared_user["headers"])


@pytest.fixture
def shared_headers(shared_user: dict[str, Any]) -> dict[str, str]:
    return dict(shared_user["headers"])


def count(client: httpx.Client, project: dict[str, Any], headers: dict[str, str]) -> int:
    return len(listing(client, project, headers))


@pytest.fixture
def other_project(client: httpx.Client, headers: dict[str, str]) -> Iterator[dict[str, Any]]:
    response = client.post(
        "/projects", json={"name": "Other", "slug": f"o-{uuid.uuid4().hex[:8]}"}, headers=headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    yield body
    client.delete(f"/projects/{body['id']}", headers=headers)


# Endpoints and fields


def test_create_migration_returns_fields(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    up_sql = "CREATE TABLE posts (id bigint PRIMARY KEY, title text);"
    body = create(client, project, headers, up_sql, "DROP TABLE posts;", name="add_posts_table")

    assert body["version"] == 1
    assert body["name"] == "add_posts_table"
    assert body["up_sql"] == up_sql
    assert body["down_sql"] == "DROP TABLE posts;"
    assert body["checksum"] == hashlib.sha256(up_sql.encode()).hexdigest()
    assert body["status"] == "pending"
    assert body["applied_at"] is None
    assert body["created_at"] is not None
    assert body["drift"] is None
    assert isinstance(body["warnings"], list)


def test_create_migration_numbers_versions(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    versions = [create(client, project, headers, "SELECT 1")["version"] for _ in range(3)]

    assert versions == [1, 2, 3]


def test_apply_migration_records_in_project_database(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    migration = create(client, project, headers, "CREATE TABLE posts (id bigint PRIMARY KEY);")

    response = up(client, project, headers, migration["id"])

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "applied"
    assert response.json()["applied_at"] is not None
    assert "public.posts" in tables(server_url, project["db_name"])
    assert records(server_url, project["db_name"]) == [
        (1, migration["id"], migration["name"], migration["checksum"])
    ]


def test_list_migrations_shows_status(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    first = create(client, project, headers, "CREATE TABLE a (id bigint);")
    second = create(client, project, headers, "CREATE TABLE b (id bigint);")
    assert up(client, project, headers, first["id"]).status_code == 200

    found = listing(client, project, headers)

    assert found[first["id"]]["status"] == "applied"
    assert found[second["id"]]["status"] == "pending"
    assert [m["version"] for m in found.values()] == [1, 2]


def test_get_migration_returns_status(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    migration = create(client, shared_project, shared_headers, "SELECT 1")

    response = client.get(f"{base(shared_project)}/{migration['id']}", headers=shared_headers)

    assert response.status_code == 200
    assert response.json()["status"] == "pending"


def test_rollback_migration_runs_down_sql(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    migration = create(
        client, project, headers, "CREATE TABLE posts (id bigint);", "DROP TABLE posts;"
    )
    assert up(client, project, headers, migration["id"]).status_code == 200

    response = down(client, project, headers, migration["id"])

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
    assert "public.posts" not in tables(server_url, project["db_name"])
    assert records(server_url, project["db_name"]) == []


def test_apply_pending_applies_in_order(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    created = [
        create(client, project, headers, "CREATE TABLE a (id bigint PRIMARY KEY);"),
        create(client, project, headers, "CREATE TABLE b (a_id bigint REFERENCES a);"),
        create(client, project, headers, "ALTER TABLE b ADD COLUMN note text;"),
    ]

    response = client.post(f"{base(project)}/up", headers=headers)

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == [m["id"] for m in created]
    assert [r["status"] for r in results] == ["applied"] * 3
    assert [r[0] for r in records(server_url, project["db_name"])] == [1, 2, 3]


def test_apply_pending_stops_at_failure(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    create(client, project, headers, "CREATE TABLE a (id bigint);")
    create(client, project, headers, "CREATE TABLE b (id bigint);\nSELECT * FROM missing;")
    create(client, project, headers, "CREATE TABLE c (id bigint);")

    response = client.post(f"{base(project)}/up", headers=headers)

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["sqlstate"] == "42P01"
    assert details["line"] == 2
    assert [r["status"] for r in details["results"]] == ["applied", "failed", "skipped"]
    assert {"public.a"} <= tables(server_url, project["db_name"])
    assert "public.b" not in tables(server_url, project["db_name"])
    assert [r[0] for r in records(server_url, project["db_name"])] == [1]


def test_apply_pending_with_nothing_pending(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    response = client.post(f"{base(project)}/up", headers=headers)

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_update_pending_migration(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    migration = create(client, shared_project, shared_headers, "SELECT 1", "SELECT 2")

    response = client.patch(
        f"{base(shared_project)}/{migration['id']}",
        json={"name": "renamed", "up_sql": "SELECT 3", "down_sql": None},
        headers=shared_headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "renamed"
    assert body["up_sql"] == "SELECT 3"
    assert body["down_sql"] is None
    assert body["checksum"] == hashlib.sha256(b"SELECT 3").hexdigest()
    assert body["version"] == migration["version"]


def test_update_keeps_fields_not_given(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    migration = create(client, shared_project, shared_headers, "SELECT 1", "SELECT 2")

    response = client.patch(
        f"{base(shared_project)}/{migration['id']}",
        json={"name": "renamed"},
        headers=shared_headers,
    )

    assert response.json()["down_sql"] == "SELECT 2"
    assert response.json()["up_sql"] == "SELECT 1"


@pytest.mark.parametrize(
    "body", [{}, {"name": None}, {"up_sql": None}, {"up_sql": ""}, {"extra": 1}]
)
def test_update_rejects_invalid_body(
    client: httpx.Client,
    shared_project: dict[str, Any],
    shared_headers: dict[str, str],
    body: dict[str, Any],
) -> None:
    migration = create(client, shared_project, shared_headers, "SELECT 1")

    response = client.patch(
        f"{base(shared_project)}/{migration['id']}", json=body, headers=shared_headers
    )

    assert response.status_code == 422


def test_update_applied_migration_conflicts(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    migration = create(client, project, headers, "SELECT 1")
    assert up(client, project, headers, migration["id"]).status_code == 200

    response = client.patch(
        f"{base(project)}/{migration['id']}", json={"up_sql": "SELECT 2"}, headers=headers
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "migration_applied"
    assert listing(client, project, headers)[migration["id"]]["up_sql"] == "SELECT 1"


def test_delete_pending_migration(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    migration = create(client, shared_project, shared_headers, "SELECT 1")

    response = client.delete(f"{base(shared_project)}/{migration['id']}", headers=shared_headers)

    assert response.status_code == 204
    assert migration["id"] not in listing(client, shared_project, shared_headers)


def test_delete_applied_migration_conflicts(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    migration = create(client, project, headers, "SELECT 1")
    assert up(client, project, headers, migration["id"]).status_code == 200

    response = client.delete(f"{base(project)}/{migration['id']}", headers=headers)

    assert response.status_code == 409
    assert migration["id"] in listing(client, project, headers)


def test_unknown_migration_not_found(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    missing = uuid.uuid4()

    responses = [
        client.get(f"{base(shared_project)}/{missing}", headers=shared_headers),
        client.post(f"{base(shared_project)}/{missing}/up", headers=shared_headers),
        client.post(f"{base(shared_project)}/{missing}/down", headers=shared_headers),
        client.patch(
            f"{base(shared_project)}/{missing}", json={"name": "x"}, headers=shared_headers
        ),
        client.delete(f"{base(shared_project)}/{missing}", headers=shared_headers),
    ]

    assert [r.status_code for r in responses] == [404] * 5


def test_migration_of_other_project_not_found(
    client: httpx.Client,
    project: dict[str, Any],
    other_project: dict[str, Any],
    headers: dict[str, str],
) -> None:
    migration = create(client, other_project, headers, "SELECT 1")

    response = up(client, project, headers, migration["id"])

    assert response.status_code == 404
    assert listing(client, other_project, headers)[migration["id"]]["status"] == "pending"


# Atomicity


def test_apply_failure_at_third_statement_changes_nothing(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    up_sql = (
        "CREATE TABLE authors (id bigint PRIMARY KEY);\n"
        "CREATE TABLE books (id bigint PRIMARY KEY, author_id bigint REFERENCES authors);\n"
        "INSERT INTO publishers (name) VALUES ('x');\n"
        "CREATE TABLE never (id bigint);"
    )
    migration = create(client, project, headers, up_sql)
    before = tables(server_url, project["db_name"])

    response = up(client, project, headers, migration["id"])

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "sql_error"
    assert error["details"]["sqlstate"] == "42P01"
    assert error["details"]["position"] == up_sql.index("publishers") + 1
    assert error["details"]["line"] == 3
    assert "publishers" in error["message"]
    assert tables(server_url, project["db_name"]) == before
    assert records(server_url, project["db_name"]) == []
    assert listing(client, project, headers)[migration["id"]]["status"] == "pending"


def test_failed_migration_can_be_fixed_and_applied(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    migration = create(
        client, project, headers, "CREATE TABLE a (id bigint);\nCREATE TABLE a (id bigint);"
    )
    assert up(client, project, headers, migration["id"]).status_code == 422

    fixed = client.patch(
        f"{base(project)}/{migration['id']}",
        json={"up_sql": "CREATE TABLE a (id bigint);\nCREATE TABLE b (id bigint);"},
        headers=headers,
    )
    response = up(client, project, headers, migration["id"])

    assert fixed.status_code == 200
    assert response.status_code == 200
    assert {"public.a", "public.b"} <= tables(server_url, project["db_name"])
    assert records(server_url, project["db_name"])[0][3] == fixed.json()["checksum"]


def test_rollback_failure_at_third_statement_changes_nothing(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    down_sql = "DROP TABLE b;\nDROP TABLE a;\nDROP TABLE not_there;"
    migration = create(
        client,
        project,
        headers,
        "CREATE TABLE a (id bigint);\nCREATE TABLE b (id bigint);",
        down_sql,
    )
    assert up(client, project, headers, migration["id"]).status_code == 200
    before = tables(server_url, project["db_name"])

    response = down(client, project, headers, migration["id"])

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["sqlstate"] == "42P01"
    assert details["field"] == "down_sql"
    assert details["line"] == 3
    assert tables(server_url, project["db_name"]) == before
    assert len(records(server_url, project["db_name"])) == 1
    assert listing(client, project, headers)[migration["id"]]["status"] == "applied"


def test_migration_sql_with_quotes_and_percent(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    up_sql = (
        "CREATE TABLE q (v text);\n"
        "INSERT INTO q VALUES ('O''Brien; DROP TABLE q; --'), ('100%'), ($$%s$$);"
    )
    migration = create(client, project, headers, up_sql)

    response = up(client, project, headers, migration["id"])

    assert response.status_code == 200, response.text
    with connect(server_url, project["db_name"]) as conn:
        values = [r[0] for r in conn.execute("SELECT v FROM q ORDER BY v").fetchall()]
    assert values == ["%s", "100%", "O'Brien; DROP TABLE q; --"]


def test_session_settings_do_not_leak(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    first = create(client, project, headers, "CREATE SCHEMA other;\nSET search_path = other;")
    second = create(client, project, headers, "CREATE TABLE placed (id bigint);")

    assert up(client, project, headers, first["id"]).status_code == 200
    assert up(client, project, headers, second["id"]).status_code == 200
    assert "public.placed" in tables(server_url, project["db_name"])


def test_repeated_applies_reuse_pooled_connection(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    # psycopg prepares a query on its sixth run on a connection; the session reset
    # after each run must keep those prepared statements usable.
    created = [create(client, project, headers, "SELECT 1", "SELECT 1") for _ in range(8)]

    applied = [up(client, project, headers, m["id"]).status_code for m in created]
    rolled_back = [down(client, project, headers, m["id"]).status_code for m in reversed(created)]

    assert applied == [200] * 8
    assert rolled_back == [200] * 8


# Owner role and timeouts


@pytest.mark.parametrize(
    "up_sql",
    [
        "CREATE TABLE side_effect (id bigint);\nCREATE ROLE zbaas_evil_role LOGIN;",
        "ALTER SYSTEM SET work_mem = '64MB'",
        "CREATE TABLE side_effect (id bigint);\nCOPY (SELECT 1) TO PROGRAM 'true';",
        "CREATE DATABASE zbaas_evil_database",
        "CREATE TABLE side_effect (id bigint);\nCREATE EXTENSION dblink;",
        "CREATE TABLE side_effect (id bigint);\nALTER ROLE CURRENT_USER SUPERUSER;",
        "CREATE TABLE side_effect (id bigint);\nDROP TABLE zbaas_meta.schema_migrations;",
    ],
)
def test_migration_runs_without_superuser_rights(
    client: httpx.Client,
    project: dict[str, Any],
    headers: dict[str, str],
    server_url: str,
    up_sql: str,
) -> None:
    migration = create(client, project, headers, up_sql)
    before = tables(server_url, project["db_name"])

    response = up(client, project, headers, migration["id"])

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "sql_error"
    assert tables(server_url, project["db_name"]) == before
    assert records(server_url, project["db_name"]) == []
    with connect(server_url, "postgres") as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'zbaas_evil_role'").fetchone()
            is None
        )
        assert (
            conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'zbaas_evil_database'"
            ).fetchone()
            is None
        )


def test_migration_runs_as_owner_role(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    migration = create(
        client,
        project,
        headers,
        "CREATE TABLE who AS SELECT current_user::text AS name, "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS super;",
    )

    assert up(client, project, headers, migration["id"]).status_code == 200
    with connect(server_url, project["db_name"]) as conn:
        name, is_super = conn.execute("SELECT name, super FROM who").fetchone() or (None, None)
    assert name is not None and name.endswith("_owner")
    assert is_super is False


def test_lock_timeout_fails_cleanly(
    client: httpx.Client,
    project: dict[str, Any],
    headers: dict[str, str],
    server_url: str,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = create(client, project, headers, "CREATE TABLE busy (id bigint);")
    assert up(client, project, headers, table["id"]).status_code == 200
    alter = create(client, project, headers, "ALTER TABLE busy ADD COLUMN note text;")
    monkeypatch.setattr(services.settings, "migration_lock_timeout_ms", 300)

    with connect(server_url, project["db_name"]) as app, app.transaction():
        app.execute("LOCK TABLE busy IN ACCESS SHARE MODE")
        response = up(client, project, headers, alter["id"])
        app.execute("SELECT count(*) FROM busy")  # the app's transaction is unharmed

    assert response.status_code == 422
    assert response.json()["error"]["details"]["sqlstate"] == "55P03"
    assert "lock_timeout" in response.json()["error"]["details"]["hint"]
    assert listing(client, project, headers)[alter["id"]]["status"] == "pending"


def test_statement_timeout_fails_cleanly(
    client: httpx.Client,
    project: dict[str, Any],
    headers: dict[str, str],
    server_url: str,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    migration = create(
        client, project, headers, "CREATE TABLE slow (id bigint);\nSELECT pg_sleep(5);"
    )
    monkeypatch.setattr(services.settings, "migration_statement_timeout_ms", 300)

    response = up(client, project, headers, migration["id"])

    assert response.status_code == 422
    assert response.json()["error"]["details"]["sqlstate"] == "57014"
    assert "public.slow" not in tables(server_url, project["db_name"])


# Concurrency


def test_concurrent_applies_apply_once(
    api: ThreadedServer,
    project: dict[str, Any],
    headers: dict[str, str],
    server_url: str,
    client: httpx.Client,
) -> None:
    migration = create(
        client, project, headers, "CREATE TABLE raced (id bigint);\nSELECT pg_sleep(0.3);"
    )
    callers = 8
    barrier = threading.Barrier(callers)
    statuses: list[int] = []

    def apply() -> None:
        with httpx.Client(base_url=api.url, timeout=60) as own:
            barrier.wait()
            statuses.append(up(own, project, headers, migration["id"]).status_code)

    threads = [threading.Thread(target=apply) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] + [409] * (callers - 1)
    assert len(records(server_url, project["db_name"])) == 1


def test_concurrent_creates_take_distinct_versions(
    api: ThreadedServer,
    project: dict[str, Any],
    headers: dict[str, str],
) -> None:
    callers = 6
    barrier = threading.Barrier(callers)
    versions: list[int] = []

    def create_one() -> None:
        with httpx.Client(base_url=api.url, timeout=60) as own:
            barrier.wait()
            versions.append(create(own, project, headers, "SELECT 1")["version"])

    threads = [threading.Thread(target=create_one) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(versions) == list(range(1, callers + 1))


def test_busy_project_does_not_block_others(
    client: httpx.Client,
    project: dict[str, Any],
    other_project: dict[str, Any],
    headers: dict[str, str],
    server_url: str,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    busy = create(client, project, headers, "SELECT 1")
    free = create(client, other_project, headers, "SELECT 1")
    monkeypatch.setattr(services.settings, "migration_lock_timeout_ms", 300)

    with connect(server_url, project["db_name"]) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrations.MIGRATION_LOCK_KEY,))
        blocked = up(client, project, headers, busy["id"])
        unaffected = up(client, other_project, headers, free["id"])

    assert blocked.status_code == 409
    assert blocked.json()["error"]["code"] == "migration_in_progress"
    assert unaffected.status_code == 200
    assert up(client, project, headers, busy["id"]).status_code == 200


# Order


def test_apply_with_earlier_pending_conflicts(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    first = create(client, project, headers, "SELECT 1", name="first_one")
    second = create(client, project, headers, "SELECT 2")

    response = up(client, project, headers, second["id"])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "migrations_pending"
    assert "first_one" in response.json()["error"]["message"]
    assert response.json()["error"]["details"]["pending"][0]["id"] == first["id"]


def test_apply_applied_migration_conflicts(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    migration = create(client, project, headers, "SELECT 1")
    assert up(client, project, headers, migration["id"]).status_code == 200

    response = up(client, project, headers, migration["id"])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "migration_already_applied"


def test_rollback_not_latest_conflicts(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    first = create(client, project, headers, "SELECT 1", "SELECT 1")
    second = create(client, project, headers, "SELECT 2", "SELECT 2", name="second_one")
    client.post(f"{base(project)}/up", headers=headers)

    response = down(client, project, headers, first["id"])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "migration_not_latest"
    assert "second_one" in response.json()["error"]["message"]
    assert response.json()["error"]["details"]["latest"]["id"] == second["id"]


def test_rollback_without_down_sql_conflicts(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    migration = create(client, project, headers, "CREATE TABLE kept (id bigint);")
    assert up(client, project, headers, migration["id"]).status_code == 200

    response = down(client, project, headers, migration["id"])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "migration_irreversible"


def test_rollback_pending_conflicts(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    migration = create(client, project, headers, "SELECT 1", "SELECT 1")

    response = down(client, project, headers, migration["id"])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "migration_not_applied"


# Statements outside a transaction


def test_concurrent_index_runs_outside_transaction(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    table = create(client, project, headers, "CREATE TABLE t (v text);")
    index = create(
        client,
        project,
        headers,
        "-- build without blocking writes\nCREATE INDEX CONCURRENTLY t_v_idx ON t (v);",
        "DROP INDEX CONCURRENTLY t_v_idx;",
    )
    client.post(f"{base(project)}/up", headers=headers)

    with connect(server_url, project["db_name"]) as conn:
        valid = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.t_v_idx'::regclass"
        ).fetchone()
    rolled_back = down(client, project, headers, index["id"])

    assert listing(client, project, headers)[table["id"]]["status"] == "applied"
    assert valid == (True,)
    assert rolled_back.status_code == 200, rolled_back.text
    assert "public.t_v_idx" not in tables(server_url, project["db_name"])


@pytest.mark.parametrize(
    "up_sql",
    [
        "VACUUM",
        "REINDEX (CONCURRENTLY) TABLE pg_toast_nothing",
        "CREATE INDEX CONCURRENTLY ON auth.users (email)",
    ],
)
def test_statement_outside_transaction_is_accepted(
    client: httpx.Client,
    shared_project: dict[str, Any],
    shared_headers: dict[str, str],
    up_sql: str,
) -> None:
    response = client.post(
        base(shared_project), json={"name": "outside", "up_sql": up_sql}, headers=shared_headers
    )

    assert response.status_code == 201, response.text


def test_vacuum_migration_applies(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    table = create(client, project, headers, "CREATE TABLE v (id bigint);")
    vacuum = create(client, project, headers, "VACUUM (ANALYZE) v;")

    response = client.post(f"{base(project)}/up", headers=headers)

    assert response.status_code == 200, response.text
    assert listing(client, project, headers)[vacuum["id"]]["status"] == "applied"
    assert listing(client, project, headers)[table["id"]]["status"] == "applied"


@pytest.mark.parametrize(
    "up_sql",
    [
        "CREATE TABLE t (v text);\nCREATE INDEX CONCURRENTLY t_v ON t (v);",
        "CREATE INDEX CONCURRENTLY a ON t (v);\nCREATE INDEX CONCURRENTLY b ON t (v);",
        "ANALYZE;\nVACUUM;",
        "CREATE TABLE t (v text);\nDROP INDEX CONCURRENTLY t_v;",
        "SELECT 1;\nREINDEX TABLE CONCURRENTLY t;",
    ],
)
def test_mixed_transaction_modes_rejected(
    client: httpx.Client,
    shared_project: dict[str, Any],
    shared_headers: dict[str, str],
    up_sql: str,
) -> None:
    before = count(client, shared_project, shared_headers)

    response = client.post(
        base(shared_project), json={"name": "mixed", "up_sql": up_sql}, headers=shared_headers
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "mixed_transaction_modes"
    assert "split" in response.json()["error"]["message"]
    assert count(client, shared_project, shared_headers) == before


def test_mixed_down_sql_rejected(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    response = client.post(
        base(shared_project),
        json={"name": "m", "up_sql": "SELECT 1", "down_sql": "SELECT 1; VACUUM;"},
        headers=shared_headers,
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "down_sql"


def test_failed_concurrent_index_leaves_no_invalid_index(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    create(client, project, headers, "CREATE TABLE d (v text);\nINSERT INTO d VALUES ('x'), ('x');")
    index = create(client, project, headers, "CREATE UNIQUE INDEX CONCURRENTLY d_v_key ON d (v);")

    response = client.post(f"{base(project)}/up", headers=headers)

    assert response.status_code == 422
    assert response.json()["error"]["details"]["sqlstate"] == "23505"
    assert "public.d_v_key" not in tables(server_url, project["db_name"])
    assert listing(client, project, headers)[index["id"]]["status"] == "pending"


@pytest.mark.parametrize(
    ("up_sql", "code"),
    [
        ("BEGIN;\nCREATE TABLE t (id bigint);\nCOMMIT;", "transaction_control"),
        ("CREATE TABLE t (id bigint);\nCOMMIT;", "transaction_control"),
        ("SAVEPOINT s", "transaction_control"),
        ("COPY auth.users FROM STDIN", "copy_stream"),
        ("PREPARE p AS SELECT 1", "session_control"),
        ("SELECT 1;\nDISCARD ALL;", "session_control"),
        ("DEALLOCATE ALL", "session_control"),
        ("", "empty_sql"),
        ("   \n\t", "empty_sql"),
        ("-- only a comment\n/* and another */", "empty_sql"),
        (";;", "empty_sql"),
    ],
)
def test_create_rejects_unrunnable_sql(
    client: httpx.Client,
    shared_project: dict[str, Any],
    shared_headers: dict[str, str],
    up_sql: str,
    code: str,
) -> None:
    response = client.post(
        base(shared_project), json={"name": "bad", "up_sql": up_sql}, headers=shared_headers
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == code


def test_create_rejects_unparseable_sql(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    up_sql = "CREATE TABLE a (id bigint);\nCREATE TABEL b (id bigint);"

    response = client.post(
        base(shared_project), json={"name": "bad", "up_sql": up_sql}, headers=shared_headers
    )

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "sql_syntax_error"
    assert "TABEL" in error["message"]
    assert error["details"]["position"] == up_sql.index("TABEL") + 1
    assert error["details"]["line"] == 2


def test_create_rejects_unparseable_sql_after_non_ascii(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    up_sql = "SELECT 'é—ü';\nSELEC 1;"

    response = client.post(
        base(shared_project), json={"name": "bad", "up_sql": up_sql}, headers=shared_headers
    )

    assert response.json()["error"]["details"]["position"] == up_sql.index("SELEC 1") + 1


def test_non_ascii_statement_offsets() -> None:
    script = sqlcheck.parse_script("SELECT 'é';\nSELECT 2;", "up_sql")

    assert [s.start for s in script.statements] == [0, 12]


# Lint


def test_create_returns_lint_warnings(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    up_sql = "CREATE TABLE t (id bigint);\nALTER TABLE t ADD COLUMN n bigint NOT NULL;"

    response = client.post(
        base(shared_project), json={"name": "lint", "up_sql": up_sql}, headers=shared_headers
    )

    assert response.status_code == 201
    warnings = response.json()["warnings"]
    required = [w for w in warnings if w["rule"] == "adding-required-field"]
    assert len(required) == 1
    assert required[0]["line"] == 2
    assert required[0]["message"]
    assert all(w["rule"] != "require-lock-timeout" for w in warnings)


@pytest.mark.parametrize("fake", ["missing", "sleeps", "garbage"])
def test_create_succeeds_when_squawk_fails(
    client: httpx.Client,
    shared_project: dict[str, Any],
    shared_headers: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fake: str,
) -> None:
    script = tmp_path / "squawk"
    if fake == "sleeps":
        script.write_text("#!/bin/sh\nsleep 5\n")
    elif fake == "garbage":
        script.write_text("#!/bin/sh\necho 'not json'\nexit 2\n")
    if fake != "missing":
        script.chmod(0o755)
    monkeypatch.setattr(sqlcheck, "squawk_command", lambda: str(script))
    monkeypatch.setattr(sqlcheck, "SQUAWK_TIMEOUT_S", 0.5)
    caplog.set_level(logging.WARNING, logger="zbaas.migrations")

    response = client.post(
        base(shared_project),
        json={"name": "lint", "up_sql": "ALTER TABLE x ADD COLUMN n int NOT NULL"},
        headers=shared_headers,
    )

    assert response.status_code == 201
    assert response.json()["warnings"] == []
    assert any("squawk" in r.getMessage() for r in caplog.records)


# Drift


def test_list_reports_checksum_drift(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    migration = create(client, project, headers, "SELECT 1")
    assert up(client, project, headers, migration["id"]).status_code == 200
    with connect(server_url, project["db_name"]) as conn:
        conn.execute("UPDATE zbaas_meta.schema_migrations SET checksum = 'edited'")

    found = listing(client, project, headers)[migration["id"]]

    assert found["status"] == "applied"
    assert found["drift"]["reason"] == "checksum_mismatch"


def test_list_reports_version_drift(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    migration = create(client, project, headers, "SELECT 1", "SELECT 1")
    assert up(client, project, headers, migration["id"]).status_code == 200
    with connect(server_url, project["db_name"]) as conn:
        conn.execute("UPDATE zbaas_meta.schema_migrations SET version = 5")

    found = listing(client, project, headers)[migration["id"]]
    rolled_back = down(client, project, headers, migration["id"])

    assert found["drift"]["reason"] == "version_mismatch"
    assert rolled_back.status_code == 200, rolled_back.text
    assert records(server_url, project["db_name"]) == []


def test_list_reports_unknown_recorded_migration(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    known = create(client, project, headers, "SELECT 1")
    stranger = str(uuid.uuid4())
    with connect(server_url, project["db_name"]) as conn:
        conn.execute(
            "INSERT INTO zbaas_meta.schema_migrations (version, migration_id, name, checksum) "
            "VALUES (7, %s, 'from_a_backup', 'abc')",
            (stranger,),
        )

    found = listing(client, project, headers)
    later = create(client, project, headers, "SELECT 2")

    assert found[known["id"]]["drift"] is None
    assert found[stranger]["status"] == "applied"
    assert found[stranger]["drift"]["reason"] == "unknown_migration"
    assert found[stranger]["up_sql"] is None
    assert later["version"] == 8


def test_unknown_migration_blocks_its_version(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    migration = create(client, project, headers, "SELECT 1")
    with connect(server_url, project["db_name"]) as conn:
        conn.execute(
            "INSERT INTO zbaas_meta.schema_migrations (version, migration_id, name, checksum) "
            "VALUES (1, %s, 'from_a_backup', 'abc')",
            (str(uuid.uuid4()),),
        )

    response = up(client, project, headers, migration["id"])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "migration_version_taken"


def test_status_follows_project_database(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], server_url: str
) -> None:
    migration = create(client, project, headers, "SELECT 1")
    assert up(client, project, headers, migration["id"]).status_code == 200
    with connect(server_url, project["db_name"]) as conn:
        conn.execute("DELETE FROM zbaas_meta.schema_migrations")

    assert listing(client, project, headers)[migration["id"]]["status"] == "pending"


# Authorization


def test_secret_key_manages_migrations(
    client: httpx.Client, project: dict[str, Any], secret_key: str
) -> None:
    key_headers = {"apikey": secret_key}
    migration = create(client, project, key_headers, "SELECT 1")

    assert up(client, project, key_headers, migration["id"]).status_code == 200
    assert listing(client, project, key_headers)[migration["id"]]["status"] == "applied"


def test_publishable_key_forbidden(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    key = client.post(
        f"/projects/{project['id']}/keys",
        json={"name": "web", "type": "publishable"},
        headers=headers,
    ).json()["key"]
    migration = create(client, project, headers, "SELECT 1")
    key_headers = {"apikey": key}

    responses = [
        client.post(base(project), json={"name": "x", "up_sql": "SELECT 1"}, headers=key_headers),
        client.get(base(project), headers=key_headers),
        up(client, project, key_headers, migration["id"]),
        down(client, project, key_headers, migration["id"]),
        client.post(f"{base(project)}/up", headers=key_headers),
        client.delete(f"{base(project)}/{migration['id']}", headers=key_headers),
    ]

    assert [r.status_code for r in responses] == [403] * 6
    assert listing(client, project, headers)[migration["id"]]["status"] == "pending"


def test_org_member_manages_migrations(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    member = signup_and_login(client)
    org_id = client.get("/orgs", headers=headers).json()[0]["id"]
    added = client.post(
        f"/orgs/{org_id}/members",
        json={"email": member["email"], "role": "member"},
        headers=headers,
    )
    member_headers = {**member["headers"], "X-Org-Id": org_id}

    migration = create(client, project, member_headers, "SELECT 1")

    assert added.status_code == 201
    assert up(client, project, member_headers, migration["id"]).status_code == 200


def test_outsider_gets_not_found(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str]
) -> None:
    outsider = signup_and_login(client)
    migration = create(client, project, headers, "SELECT 1")

    listed = client.get(base(project), headers=outsider["headers"])
    applied = up(client, project, outsider["headers"], migration["id"])

    assert listed.status_code == 404
    assert applied.status_code == 404


def test_anonymous_unauthorized(client: httpx.Client, project: dict[str, Any]) -> None:
    response = client.get(base(project))

    assert response.status_code == 401


# Hostile input


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 101,
        "add'; DROP TABLE users; --",
        'quote"d',
        "semi;colon",
        "-- comment",
        " leading",
        "trailing ",
        "new\nline",
        "zero\u200bwidth",
        "ümlaut",
    ],
)
def test_create_rejects_invalid_name(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str], name: str
) -> None:
    before = count(client, shared_project, shared_headers)

    response = client.post(
        base(shared_project), json={"name": name, "up_sql": "SELECT 1"}, headers=shared_headers
    )

    assert response.status_code == 422
    assert count(client, shared_project, shared_headers) == before


@pytest.mark.parametrize("name", ["a", "x" * 100, "2026-01-01 add posts.v2", "A_b-c.d e"])
def test_create_accepts_valid_name(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str], name: str
) -> None:
    assert create(client, shared_project, shared_headers, "SELECT 1", name=name)["name"] == name


def test_create_rejects_extra_field(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    response = client.post(
        base(shared_project),
        json={"name": "x", "up_sql": "SELECT 1", "status": "applied"},
        headers=shared_headers,
    )

    assert response.status_code == 422


def test_create_rejects_sql_over_limit(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    before = count(client, shared_project, shared_headers)

    up_sql = "SELECT 1;" + " " * sqlcheck.MAX_SQL_LENGTH

    response = client.post(
        base(shared_project), json={"name": "big", "up_sql": up_sql}, headers=shared_headers
    )

    assert response.status_code == 422
    assert count(client, shared_project, shared_headers) == before


def test_create_rejects_huge_body(
    client: httpx.Client,
    shared_project: dict[str, Any],
    shared_headers: dict[str, str],
    services: Services,
) -> None:
    before = count(client, shared_project, shared_headers)

    up_sql = "-" * (services.settings.max_body_bytes + 1)

    response = client.post(
        base(shared_project), json={"name": "huge", "up_sql": up_sql}, headers=shared_headers
    )

    assert response.status_code == 413
    assert count(client, shared_project, shared_headers) == before


def test_apply_rejects_malformed_id(
    client: httpx.Client, shared_project: dict[str, Any], shared_headers: dict[str, str]
) -> None:
    response = client.post(f"{base(shared_project)}/1%27%3B%20DROP/up", headers=shared_headers)

    assert response.status_code == 422
