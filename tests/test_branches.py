from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from psycopg import sql

from tests.conftest import connect, signup_and_login
from zbaas.config import Settings
from zbaas.tenant import schema_diff


@pytest.fixture(scope="module", autouse=True)
def drop_branch_leftovers(settings: Settings, server_url: str) -> Iterator[None]:
    """Drop branch databases and roles that a failed test left behind."""
    yield
    with connect(server_url, "postgres") as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (settings.control_database,)
        ).fetchone()
        if not exists:
            return
        with connect(server_url, settings.control_database) as control:
            rows = control.execute(
                "SELECT db_name, owner_role, authenticator_role FROM branches"
            ).fetchall()
        for db_name, *roles in rows:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name))
            )
            for role in roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def control_row(settings: Settings, server_url: str, query: str, *args: Any) -> Any:
    with connect(server_url, settings.control_database) as control:
        return control.execute(query, args).fetchone()


def branch_row(settings: Settings, server_url: str, project: dict[str, Any], name: str) -> Any:
    return control_row(
        settings,
        server_url,
        "SELECT db_name, owner_role, authenticator_role FROM branches "
        "WHERE project_id = %s AND name = %s",
        project["id"],
        name,
    )


def parent_owner(settings: Settings, server_url: str, project: dict[str, Any]) -> str:
    row = control_row(
        settings, server_url, "SELECT owner_role FROM projects WHERE id = %s", project["id"]
    )
    return str(row[0])


def run_as(server_url: str, db_name: str, role: str, statements: str) -> None:
    """Run SQL in ``db_name`` as ``role``, the way a migration would."""
    with connect(server_url, db_name) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute(statements.encode())


def fetch(server_url: str, db_name: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with connect(server_url, db_name) as conn:
        return conn.execute(query, args).fetchall()


def columns(server_url: str, db_name: str, table: str) -> list[str]:
    rows = fetch(
        server_url,
        db_name,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        table,
    )
    return [r[0] for r in rows]


def inspect(server_url: str, db_name: str) -> schema_diff.Schema:
    with connect(server_url, db_name) as conn:
        conn.autocommit = False
        return schema_diff.inspect_schema(conn)


def record_migration(server_url: str, db_name: str, role: str, version: int, name: str) -> None:
    with connect(server_url, db_name) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute(
            "INSERT INTO zbaas_meta.schema_migrations (version, migration_id, name, checksum) "
            "VALUES (%s, %s, %s, 'x')",
            (version, uuid.uuid4(), name),
        )


PARENT_SCHEMA = (
    "CREATE TABLE posts (id bigserial PRIMARY KEY, title varchar(20) NOT NULL, "
    "author_id uuid REFERENCES auth.users (id), body text); "
    "INSERT INTO posts (title) VALUES ('one'), ('two');"
)


@pytest.fixture
def parent(
    client: httpx.Client, project: dict[str, Any], settings: Settings, server_url: str
) -> dict[str, Any]:
    """The project with a posts table holding two rows and one applied migration."""
    owner = parent_owner(settings, server_url, project)
    run_as(
        server_url,
        project["db_name"],
        owner,
        PARENT_SCHEMA,
    )
    record_migration(server_url, project["db_name"], owner, 1, "create_posts")
    return {**project, "owner": owner}


def create_branch(
    client: httpx.Client, headers: dict[str, str], project: dict[str, Any], **body: Any
) -> httpx.Response:
    return client.post(f"/projects/{project['id']}/branches", json=body, headers=headers)


@pytest.fixture
def branch(
    client: httpx.Client,
    user: dict[str, Any],
    parent: dict[str, Any],
    settings: Settings,
    server_url: str,
) -> dict[str, Any]:
    response = create_branch(client, user["headers"], parent, name="feature-x")
    assert response.status_code == 201, response.text
    db_name, owner, authenticator = branch_row(settings, server_url, parent, "feature-x")
    return {
        **response.json(),
        "owner": owner,
        "authenticator": authenticator,
        "url": f"/projects/{parent['id']}/branches/feature-x",
    }


@pytest.fixture(scope="module")
def shared_user(api: Any) -> dict[str, Any]:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        return signup_and_login(http)


@pytest.fixture(scope="module")
def shared_parent(
    api: Any, shared_user: dict[str, Any], settings: Settings, server_url: str
) -> Iterator[dict[str, Any]]:
    """A parent like ``parent``, shared by the tests of this module that leave it as it is."""
    with httpx.Client(base_url=api.url, timeout=60) as http:
        response = http.post(
            "/projects",
            json={"name": "Shared", "slug": f"s-{uuid.uuid4().hex[:8]}"},
            headers=shared_user["headers"],
        )
        assert response.status_code == 201, response.text
        project = response.json()
        owner = parent_owner(settings, server_url, project)
        run_as(server_url, project["db_name"], owner, PARENT_SCHEMA)
        record_migration(server_url, project["db_name"], owner, 1, "create_posts")
        with connect(server_url, project["db_name"]) as conn:
            conn.execute(
                "WITH u AS (INSERT INTO auth.users (email, encrypted_password) "
                "VALUES ('ada@example.com', 'x') RETURNING id) "
                "UPDATE posts SET author_id = (SELECT id FROM u) WHERE title = 'one'"
            )
        yield {**project, "owner": owner}
        http.delete(f"/projects/{project['id']}", headers=shared_user["headers"])


@pytest.fixture(scope="module")
def shared_branch(
    api: Any,
    shared_user: dict[str, Any],
    shared_parent: dict[str, Any],
    settings: Settings,
    server_url: str,
) -> dict[str, Any]:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        response = create_branch(http, shared_user["headers"], shared_parent, name="feature-x")
    assert response.status_code == 201, response.text
    _, owner, authenticator = branch_row(settings, server_url, shared_parent, "feature-x")
    return {
        **response.json(),
        "owner": owner,
        "authenticator": authenticator,
        "url": f"/projects/{shared_parent['id']}/branches/feature-x",
    }


def test_create_branch_copies_schema(
    shared_branch: dict[str, Any], shared_parent: dict[str, Any], server_url: str
) -> None:
    users = fetch(server_url, shared_branch["db_name"], "SELECT count(*) FROM auth.users")

    assert shared_branch["status"] == "active"
    assert users == [(0,)]
    assert columns(server_url, shared_branch["db_name"], "posts") == [
        "id",
        "title",
        "author_id",
        "body",
    ]
    assert fetch(server_url, shared_branch["db_name"], "SELECT count(*) FROM posts") == [(0,)]


def test_create_branch_names_database_in_family(
    shared_branch: dict[str, Any], shared_parent: dict[str, Any]
) -> None:
    assert len(shared_branch["db_name"].encode()) <= 63
    assert shared_branch["db_name"].startswith(shared_parent["db_name"][:40])
    assert shared_branch["parent"] == shared_parent["db_name"]


def test_create_branch_copies_migration_history(
    shared_branch: dict[str, Any], server_url: str
) -> None:
    rows = fetch(
        server_url,
        shared_branch["db_name"],
        "SELECT version, name FROM zbaas_meta.schema_migrations",
    )

    assert rows == [(1, "create_posts")]


def test_create_branch_provisions_auth_and_roles(
    shared_branch: dict[str, Any], shared_parent: dict[str, Any], server_url: str
) -> None:
    schemas = {
        r[0]
        for r in fetch(server_url, shared_branch["db_name"], "SELECT nspname FROM pg_namespace")
    }
    owners = fetch(
        server_url,
        shared_branch["db_name"],
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace",
    )
    connectable = fetch(
        server_url,
        "postgres",
        "SELECT has_database_privilege(%s, %s, 'CONNECT'), "
        "has_database_privilege(%s, %s, 'CONNECT')",
        shared_branch["owner"],
        shared_branch["db_name"],
        shared_parent["owner"],
        shared_branch["db_name"],
    )

    assert {"auth", "zbaas_meta", "public"} <= schemas
    assert owners == [(shared_branch["owner"],)]
    assert connectable == [(True, False)]


def test_create_branch_moves_default_privileges(
    shared_branch: dict[str, Any], shared_parent: dict[str, Any], server_url: str
) -> None:
    query = (
        "SELECT count(*) FROM pg_default_acl "
        "WHERE defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %s)"
    )

    parent_entries = fetch(server_url, shared_branch["db_name"], query, shared_parent["owner"])
    branch_entries = fetch(server_url, shared_branch["db_name"], query, shared_branch["owner"])

    assert parent_entries == [(0,)]
    assert branch_entries == [(3,)]


def test_create_branch_owner_can_log_in(
    shared_branch: dict[str, Any], settings: Settings, server_url: str
) -> None:
    from zbaas.platform.security import SecretBox

    password = control_row(
        settings,
        server_url,
        "SELECT owner_password FROM branches WHERE db_name = %s",
        shared_branch["db_name"],
    )[0]
    box = SecretBox(settings.resolved_secret_key)
    with connect(
        server_url,
        shared_branch["db_name"],
        user=shared_branch["owner"],
        password=box.decrypt(password),
    ) as conn:
        conn.execute("INSERT INTO posts (title) VALUES ('branch row')")
        count = conn.execute("SELECT count(*) FROM posts").fetchone()

    assert count == (1,)


def test_create_branch_with_data_copies_rows(
    client: httpx.Client,
    shared_user: dict[str, Any],
    shared_parent: dict[str, Any],
    settings: Settings,
    server_url: str,
) -> None:
    response = create_branch(
        client, shared_user["headers"], shared_parent, name="with-rows", with_data=True
    )
    assert response.status_code == 201, response.text
    db_name = response.json()["db_name"]

    titles = fetch(server_url, db_name, "SELECT title FROM posts ORDER BY id")
    next_id = fetch(server_url, db_name, "SELECT nextval('posts_id_seq')")

    users = fetch(server_url, db_name, "SELECT email FROM auth.users")
    authors = fetch(server_url, db_name, "SELECT count(author_id) FROM posts")

    assert response.json()["with_data"] is True
    assert titles == [("one",), ("two",)]
    assert next_id == [(3,)]
    assert users == [("ada@example.com",)]
    assert authors == [(1,)]


@pytest.mark.parametrize(
    "name",
    ["Feature", "feature_x", "a--b", "-a", "a-", "x;drop", "a'b", 'a"b', "a--", "a" * 41, "ü"],
)
def test_create_branch_invalid_name_422(
    client: httpx.Client, shared_user: dict[str, Any], shared_parent: dict[str, Any], name: str
) -> None:
    response = create_branch(client, shared_user["headers"], shared_parent, name=name)

    assert response.status_code == 422
    assert response.json()["error"]["code"] in ("invalid_input", "validation_failed")


def test_create_branch_empty_name_422(
    client: httpx.Client, shared_user: dict[str, Any], shared_parent: dict[str, Any]
) -> None:
    response = create_branch(client, shared_user["headers"], shared_parent, name="")

    assert response.status_code == 422


def test_create_branch_extra_field_422(
    client: httpx.Client, shared_user: dict[str, Any], shared_parent: dict[str, Any]
) -> None:
    response = create_branch(
        client, shared_user["headers"], shared_parent, name="ok", parent="other"
    )

    assert response.status_code == 422


def test_create_branch_existing_name_409(
    client: httpx.Client,
    shared_user: dict[str, Any],
    shared_branch: dict[str, Any],
    shared_parent: dict[str, Any],
) -> None:
    response = create_branch(client, shared_user["headers"], shared_parent, name="feature-x")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "branch_exists"


def test_create_branch_concurrent_same_name(
    api: Any, shared_user: dict[str, Any], shared_parent: dict[str, Any]
) -> None:
    def attempt() -> int:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            return create_branch(
                http, shared_user["headers"], shared_parent, name="race"
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        statuses = sorted(pool.map(lambda _: attempt(), range(3)))

    assert statuses == [201, 409, 409]


def test_create_branch_with_secret_key(
    client: httpx.Client, shared_user: dict[str, Any], shared_parent: dict[str, Any]
) -> None:
    key = client.post(
        f"/projects/{shared_parent['id']}/keys",
        json={"name": "ci", "type": "secret"},
        headers=shared_user["headers"],
    ).json()["key"]

    response = create_branch(client, {"apikey": key}, shared_parent, name="by-key")

    assert response.status_code == 201


def test_create_branch_publishable_key_403(
    client: httpx.Client, shared_user: dict[str, Any], shared_parent: dict[str, Any]
) -> None:
    key = client.post(
        f"/projects/{shared_parent['id']}/keys",
        json={"name": "public", "type": "publishable"},
        headers=shared_user["headers"],
    ).json()["key"]

    response = create_branch(client, {"apikey": key}, shared_parent, name="by-public-key")

    assert response.status_code == 403


def test_create_branch_other_user_404(client: httpx.Client, shared_parent: dict[str, Any]) -> None:
    stranger = signup_and_login(client)

    response = create_branch(client, stranger["headers"], shared_parent, name="intruder")

    assert response.status_code == 404


def test_list_branches_shows_fields(
    client: httpx.Client,
    shared_user: dict[str, Any],
    shared_branch: dict[str, Any],
    shared_parent: dict[str, Any],
) -> None:
    response = client.get(
        f"/projects/{shared_parent['id']}/branches", headers=shared_user["headers"]
    )

    assert response.status_code == 200
    listed = response.json()
    shown = next(b for b in listed if b["name"] == "feature-x")
    assert {"name", "db_name", "parent", "with_data", "status", "created_at"} <= set(shown)
    assert shown["with_data"] is False
    assert shown["parent"] == shared_parent["db_name"]


def test_get_branch_unknown_404(
    client: httpx.Client, shared_user: dict[str, Any], shared_parent: dict[str, Any]
) -> None:
    response = client.get(
        f"/projects/{shared_parent['id']}/branches/x'; DROP TABLE posts; --",
        headers=shared_user["headers"],
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "branch_not_found"


def test_delete_branch_drops_database_and_roles(
    client: httpx.Client,
    shared_user: dict[str, Any],
    shared_parent: dict[str, Any],
    settings: Settings,
    server_url: str,
) -> None:
    created = create_branch(client, shared_user["headers"], shared_parent, name="to-delete")
    assert created.status_code == 201, created.text
    db_name, owner, authenticator = branch_row(settings, server_url, shared_parent, "to-delete")
    shared_branch = {
        "db_name": db_name,
        "owner": owner,
        "authenticator": authenticator,
        "url": f"/projects/{shared_parent['id']}/branches/to-delete",
    }

    response = client.delete(shared_branch["url"], headers=shared_user["headers"])

    databases = fetch(
        server_url,
        "postgres",
        "SELECT 1 FROM pg_database WHERE datname = %s",
        shared_branch["db_name"],
    )
    roles = fetch(
        server_url,
        "postgres",
        "SELECT 1 FROM pg_roles WHERE rolname IN (%s, %s)",
        shared_branch["owner"],
        shared_branch["authenticator"],
    )
    parent_rows = fetch(server_url, shared_parent["db_name"], "SELECT count(*) FROM posts")
    again = client.get(shared_branch["url"], headers=shared_user["headers"])

    assert response.status_code == 204
    assert databases == []
    assert roles == []
    assert parent_rows == [(2,)]
    assert again.status_code == 404


def test_delete_project_drops_branches(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    response = client.delete(f"/projects/{parent['id']}", headers=user["headers"])

    databases = fetch(
        server_url, "postgres", "SELECT 1 FROM pg_database WHERE datname = %s", branch["db_name"]
    )
    roles = fetch(
        server_url,
        "postgres",
        "SELECT 1 FROM pg_roles WHERE rolname IN (%s, %s, %s)",
        branch["owner"],
        branch["authenticator"],
        parent["owner"],
    )

    assert response.status_code == 204
    assert databases == []
    assert roles == []


def diff(client: httpx.Client, user: dict[str, Any], branch: dict[str, Any]) -> dict[str, Any]:
    response = client.get(f"{branch['url']}/diff", headers=user["headers"])
    assert response.status_code == 200, response.text
    return dict(response.json())


def merge(
    client: httpx.Client, user: dict[str, Any], branch: dict[str, Any], **body: Any
) -> httpx.Response:
    return client.post(f"{branch['url']}/merge", json=body or None, headers=user["headers"])


def test_diff_unchanged_branch_empty(
    client: httpx.Client, shared_user: dict[str, Any], shared_branch: dict[str, Any]
) -> None:
    result = diff(client, shared_user, shared_branch)

    assert result == {"statements": [], "conflicts": [], "migrations": []}


def test_merge_adds_table_column_index_policy(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    run_as(
        server_url,
        branch["db_name"],
        branch["owner"],
        "CREATE TABLE comments (id bigserial PRIMARY KEY, "
        "post_id bigint NOT NULL REFERENCES posts (id), body text NOT NULL); "
        "ALTER TABLE posts ADD COLUMN published boolean NOT NULL DEFAULT false; "
        "CREATE INDEX posts_title_idx ON posts (title); "
        "ALTER TABLE posts ENABLE ROW LEVEL SECURITY; "
        "CREATE POLICY posts_read ON posts FOR SELECT TO anon USING (published);",
    )
    record_migration(server_url, branch["db_name"], branch["owner"], 2, "comments")
    # Written to the parent after branching; the merge must keep it.
    run_as(server_url, parent["db_name"], parent["owner"], "INSERT INTO posts (title) VALUES ('3')")

    planned = diff(client, user, branch)
    response = merge(client, user, branch)

    assert [s["destructive"] for s in planned["statements"]] == [False] * len(planned["statements"])
    assert planned["migrations"] == [2]
    assert response.status_code == 200, response.text
    assert response.json()["migrations"] == [2]
    assert columns(server_url, parent["db_name"], "comments") == ["id", "post_id", "body"]
    assert "published" in columns(server_url, parent["db_name"], "posts")
    assert fetch(
        server_url,
        parent["db_name"],
        "SELECT 1 FROM pg_indexes WHERE indexname = 'posts_title_idx'",
    ) == [(1,)]
    assert fetch(
        server_url,
        parent["db_name"],
        "SELECT policyname FROM pg_policies WHERE tablename = 'posts'",
    ) == [("posts_read",)]
    assert fetch(
        server_url, parent["db_name"], "SELECT relrowsecurity FROM pg_class WHERE relname = 'posts'"
    ) == [(True,)]
    assert fetch(server_url, parent["db_name"], "SELECT title FROM posts ORDER BY id") == [
        ("one",),
        ("two",),
        ("3",),
    ]
    assert fetch(
        server_url, parent["db_name"], "SELECT version FROM zbaas_meta.schema_migrations"
    ) == [(1,), (2,)]
    assert fetch(
        server_url,
        parent["db_name"],
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'comments'",
    ) == [(parent["owner"],)]
    assert diff(client, user, branch)["statements"] == []


def test_merge_twice_uses_new_base(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    run_as(server_url, branch["db_name"], branch["owner"], "ALTER TABLE posts ADD COLUMN a int")
    assert merge(client, user, branch).status_code == 200
    run_as(server_url, branch["db_name"], branch["owner"], "ALTER TABLE posts ADD COLUMN b int")

    response = merge(client, user, branch)

    assert response.status_code == 200, response.text
    assert columns(server_url, parent["db_name"], "posts")[-2:] == ["a", "b"]


def test_merge_keeps_parent_only_changes(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    run_as(server_url, parent["db_name"], parent["owner"], "CREATE TABLE audit (id int)")
    run_as(server_url, parent["db_name"], parent["owner"], "ALTER TABLE posts ADD COLUMN p int")
    run_as(server_url, branch["db_name"], branch["owner"], "ALTER TABLE posts ADD COLUMN q int")

    response = merge(client, user, branch)

    assert response.status_code == 200, response.text
    assert columns(server_url, parent["db_name"], "audit") == ["id"]
    assert columns(server_url, parent["db_name"], "posts")[-2:] == ["p", "q"]


def test_merge_destructive_refused_then_allowed(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    run_as(
        server_url,
        branch["db_name"],
        branch["owner"],
        "ALTER TABLE posts DROP COLUMN body; CREATE TABLE tags (name text)",
    )

    planned = diff(client, user, branch)
    refused = merge(client, user, branch)
    columns_after_refusal = columns(server_url, parent["db_name"], "posts")
    tags_after_refusal = columns(server_url, parent["db_name"], "tags")
    allowed = merge(client, user, branch, allow_destructive=True)

    assert [s["reason"] for s in planned["statements"] if s["destructive"]] == ["drops a column"]
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "destructive_changes"
    assert refused.json()["error"]["details"]["statements"][0]["sql"].endswith(
        'drop column "body";'
    )
    assert "body" in columns_after_refusal
    assert tags_after_refusal == []
    assert allowed.status_code == 200, allowed.text
    assert "body" not in columns(server_url, parent["db_name"], "posts")
    assert columns(server_url, parent["db_name"], "tags") == ["name"]


def test_diff_flags_narrowing_type(
    client: httpx.Client, user: dict[str, Any], branch: dict[str, Any], server_url: str
) -> None:
    run_as(
        server_url,
        branch["db_name"],
        branch["owner"],
        "ALTER TABLE posts ALTER COLUMN title TYPE varchar(10); "
        "ALTER TABLE posts ALTER COLUMN id TYPE numeric",
    )

    flagged = {
        s["sql"].split('alter column "')[1].split('"')[0]: s["destructive"]
        for s in diff(client, user, branch)["statements"]
        if "alter column" in s["sql"]
    }

    assert flagged == {"title": True, "id": False}


def test_merge_drop_table_destructive(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    run_as(server_url, branch["db_name"], branch["owner"], "DROP TABLE posts")

    refused = merge(client, user, branch)
    reasons = [s["reason"] for s in refused.json()["error"]["details"]["statements"]]

    assert refused.status_code == 409
    assert "drops a table" in reasons
    assert fetch(server_url, parent["db_name"], "SELECT count(*) FROM posts") == [(2,)]


def test_merge_conflict_nothing_applied(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    run_as(
        server_url,
        parent["db_name"],
        parent["owner"],
        "ALTER TABLE posts ALTER COLUMN title TYPE varchar(200)",
    )
    run_as(
        server_url,
        branch["db_name"],
        branch["owner"],
        "ALTER TABLE posts ALTER COLUMN title TYPE text; CREATE TABLE extra (id int)",
    )

    planned = diff(client, user, branch)
    response = merge(client, user, branch, allow_destructive=True)

    assert planned["conflicts"] == [{"kind": "column", "name": '"public"."posts"."title"'}]
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "merge_conflict"
    assert response.json()["error"]["details"]["conflicts"] == planned["conflicts"]
    assert columns(server_url, parent["db_name"], "extra") == []


def test_merge_conflicting_migration_version(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    record_migration(server_url, parent["db_name"], parent["owner"], 2, "on_parent")
    record_migration(server_url, branch["db_name"], branch["owner"], 2, "on_branch")

    response = merge(client, user, branch)

    assert response.status_code == 409
    assert response.json()["error"]["details"]["conflicts"] == [
        {"kind": "migration", "name": "version 2 (on_branch)"}
    ]


def test_merge_failure_leaves_parent_unchanged(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    # The parent's two rows get the same body, so the unique index fails after
    # the new table and column were already created in the transaction.
    run_as(
        server_url,
        parent["db_name"],
        parent["owner"],
        "UPDATE posts SET body = 'same'",
    )
    run_as(
        server_url,
        branch["db_name"],
        branch["owner"],
        "CREATE TABLE later (id int); ALTER TABLE posts ADD COLUMN extra int; "
        "CREATE UNIQUE INDEX posts_body_key ON posts (body);",
    )
    record_migration(server_url, branch["db_name"], branch["owner"], 2, "unique_body")
    before = inspect(server_url, parent["db_name"])

    response = merge(client, user, branch)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "merge_failed"
    assert response.json()["error"]["details"]["sqlstate"] == "23505"
    assert inspect(server_url, parent["db_name"]) == before
    assert fetch(
        server_url, parent["db_name"], "SELECT version FROM zbaas_meta.schema_migrations"
    ) == [(1,)]


def test_merge_unknown_field_422(
    client: httpx.Client, shared_user: dict[str, Any], shared_branch: dict[str, Any]
) -> None:
    response = merge(client, shared_user, shared_branch, allow_destructive=True, force=True)

    assert response.status_code == 422


@pytest.mark.parametrize(
    ("old", "new", "widening"),
    [
        ("integer", "bigint", True),
        ("bigint", "integer", False),
        ("character varying(10)", "character varying(20)", True),
        ("character varying(20)", "character varying(10)", False),
        ("character varying(20)", "text", True),
        ("text", "character varying(20)", False),
        ("numeric(10,2)", "numeric(12,2)", True),
        ("numeric(10,2)", "numeric(10,3)", False),
        ("numeric(10,2)", "numeric", True),
        ("text", "integer", False),
        ("timestamp without time zone", "timestamp with time zone", False),
    ],
)
def test_is_widening_cases(old: str, new: str, widening: bool) -> None:
    assert schema_diff.is_widening(old, new) is widening


def test_classify_rejects_several_statements() -> None:
    with pytest.raises(schema_diff.UnsupportedStatement):
        schema_diff.classify("create table a (id int); drop table b;", {}, {})


def test_merge_schemas_reports_both_changed() -> None:
    base = {"views": {'"public"."v"': {"schema": "public", "definition": "select 1"}}}
    branch = {"views": {'"public"."v"': {"schema": "public", "definition": "select 2"}}}
    parent = {"views": {'"public"."v"': {"schema": "public", "definition": "select 3"}}}

    _, conflicts = schema_diff.merge_schemas(base, branch, parent)

    assert [c.to_dict() for c in conflicts] == [{"kind": "view", "name": '"public"."v"'}]


def test_copy_failure_removes_branch(
    client: httpx.Client,
    shared_user: dict[str, Any],
    shared_parent: dict[str, Any],
    settings: Settings,
    server_url: str,
) -> None:
    # A branch database name that is taken makes provisioning fail part way.
    from zbaas.tenant.branches import database_name

    taken = database_name(shared_parent["db_name"], "taken")
    with connect(server_url, "postgres") as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(taken)))
    try:
        response = create_branch(client, shared_user["headers"], shared_parent, name="taken")
        row = branch_row(settings, server_url, shared_parent, "taken")
    finally:
        with connect(server_url, "postgres") as admin:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(taken)))

    assert response.status_code == 409
    assert row is None


def test_database_name_fits_limit() -> None:
    from zbaas.tenant.branches import database_name

    long_parent = "zbaas_abcdefgh_" + "x" * 48

    name = database_name(long_parent, "feature")

    assert len(name) == 63
    assert name != database_name(long_parent, "feature-2")
    assert "__br_" in name


def test_merge_hostile_names_quoted(
    client: httpx.Client,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    run_as(
        server_url,
        branch["db_name"],
        branch["owner"],
        'CREATE TABLE "x""; DROP TABLE posts; --" ("a$$b" int); '
        "CREATE FUNCTION odd() RETURNS text LANGUAGE sql AS $f$ SELECT '$$; DROP TABLE posts' $f$;",
    )

    response = merge(client, user, branch)
    tables = fetch(
        server_url,
        parent["db_name"],
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    result = fetch(server_url, parent["db_name"], "SELECT odd()")

    assert response.status_code == 200, response.text
    assert tables == [("posts",), ('x"; DROP TABLE posts; --',)]
    assert result == [("$$; DROP TABLE posts",)]


def test_merge_concurrent_applies_once(
    api: Any,
    user: dict[str, Any],
    branch: dict[str, Any],
    parent: dict[str, Any],
    server_url: str,
) -> None:
    run_as(server_url, branch["db_name"], branch["owner"], "ALTER TABLE posts ADD COLUMN c int")
    record_migration(server_url, branch["db_name"], branch["owner"], 2, "add_c")

    def attempt() -> int:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            return merge(http, user, branch).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        statuses = list(pool.map(lambda _: attempt(), range(2)))

    assert statuses == [200, 200]
    assert columns(server_url, parent["db_name"], "posts").count("c") == 1
    assert fetch(
        server_url, parent["db_name"], "SELECT version FROM zbaas_meta.schema_migrations"
    ) == [(1,), (2,)]


def test_create_branch_keeps_enabled_extensions(
    client: httpx.Client, user: dict[str, Any], parent: dict[str, Any], server_url: str
) -> None:
    enabled = client.post(
        f"/projects/{parent['id']}/database/extensions/pg_trgm/enable", headers=user["headers"]
    )
    assert enabled.status_code == 200, enabled.text

    response = create_branch(client, user["headers"], parent, name="with-trgm")
    assert response.status_code == 201, response.text
    branch_db = response.json()["db_name"]
    diff = client.get(f"/projects/{parent['id']}/branches/with-trgm/diff", headers=user["headers"])

    assert fetch(
        server_url,
        branch_db,
        "SELECT n.nspname FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'",
    ) == [("extensions",)]
    assert diff.status_code == 200
    assert diff.json()["statements"] == []
