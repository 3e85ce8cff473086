from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ThreadedServer, connect, signup_and_login

Shared = tuple[httpx.Client, dict[str, Any], dict[str, Any]]


@pytest.fixture(scope="module")
def shared(api: ThreadedServer) -> Iterator[Shared]:
    """One project for the whole module, because creating one takes seconds.

    Each test makes its own table, so that none depends on another's.
    """
    with httpx.Client(base_url=api.url, timeout=60) as http:
        owner = signup_and_login(http)
        response = http.post(
            "/projects",
            json={"name": "Indexes", "slug": f"idx-{uuid.uuid4().hex[:8]}"},
            headers=owner["headers"],
        )
        assert response.status_code == 201, response.text
        project = response.json()
        key = http.post(
            f"/projects/{project['id']}/keys",
            json={"name": "tests", "type": "secret"},
            headers=owner["headers"],
        )
        assert key.status_code == 201, key.text
        owner["secret_key"] = key.json()["key"]
        yield http, owner, project
        http.delete(f"/projects/{project['id']}", headers=owner["headers"])


def _as_owner(server_url: str, db_name: str) -> psycopg.Connection:
    conn = connect(server_url, db_name)
    owner = conn.execute(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
    ).fetchone()
    assert owner is not None
    conn.execute(f'SET ROLE "{owner[0]}"')
    return conn


@pytest.fixture
def table(shared: Shared, server_url: str) -> str:
    """A fresh table ``t_<hex>`` with a primary key, a unique constraint and a few rows."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    with _as_owner(server_url, shared[2]["db_name"]) as conn:
        conn.execute(
            f"CREATE TABLE {name} (id bigserial PRIMARY KEY, title text, body text, "
            "email text, code text UNIQUE, tags text[], data jsonb, deleted_at timestamptz, "
            "during tstzrange, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            f"INSERT INTO {name} (title, body, email, code, tags, data) "
            "SELECT 'title ' || i, 'body ' || i, 'user' || i || '@example.com', 'c' || i, "
            "ARRAY['a', 'b'], jsonb_build_object('n', i) FROM generate_series(1, 100) AS i"
        )
    return name


def _indexes_url(project: dict[str, Any], table: str) -> str:
    return f"/projects/{project['id']}/database/tables/{table}/indexes"


def _index_url(project: dict[str, Any], name: str) -> str:
    return f"/projects/{project['id']}/database/indexes/{name}"


def _index_names(server_url: str, db_name: str, table: str) -> set[str]:
    with connect(server_url, db_name) as conn:
        rows = conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
            (f"public.{table}",),
        ).fetchall()
    return {row[0] for row in rows}


def _create(shared: Shared, table: str, body: dict[str, Any]) -> httpx.Response:
    http, owner, project = shared
    return http.post(_indexes_url(project, table), json=body, headers=owner["headers"])


def test_list_indexes_primary_key(shared: Shared, table: str) -> None:
    http, owner, project = shared
    response = http.get(_indexes_url(project, table), headers=owner["headers"])
    pkey = next(i for i in response.json() if i["name"] == f"{table}_pkey")

    assert response.status_code == 200
    assert pkey["primary"] is True
    assert pkey["unique"] is True
    assert pkey["valid"] is True
    assert pkey["columns"] == ["id"]
    assert pkey["type"] == "btree"
    assert pkey["size_bytes"] > 0
    assert pkey["scans"] >= 0
    assert pkey["definition"].startswith("CREATE UNIQUE INDEX")
    assert pkey["constraint"] == f"{table}_pkey"


def test_list_indexes_unknown_table(shared: Shared) -> None:
    http, owner, project = shared
    response = http.get(_indexes_url(project, "no_such_table"), headers=owner["headers"])

    assert response.status_code == 404


def test_create_index_generated_name(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "title"})

    assert response.status_code == 201, response.text
    assert response.json()["name"] == f"{table}_title_idx"
    assert response.json()["valid"] is True
    assert response.json()["columns"] == ["title"]


def test_create_index_generated_name_unique(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "email", "unique": True})

    assert response.status_code == 201, response.text
    assert response.json()["name"] == f"{table}_email_key"
    assert response.json()["unique"] is True


def test_create_index_generated_name_numbered(shared: Shared, table: str) -> None:
    first = _create(shared, table, {"column": "title"})
    second = _create(shared, table, {"column": "title", "where": "deleted_at IS NULL"})

    assert first.json()["name"] == f"{table}_title_idx"
    assert second.status_code == 201, second.text
    assert second.json()["name"] == f"{table}_title_idx1"


def test_create_index_gin_array(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "tags", "type": "gin"})

    assert response.status_code == 201, response.text
    assert response.json()["name"] == f"{table}_tags_gin_idx"
    assert response.json()["type"] == "gin"


@pytest.mark.parametrize(
    ("kind", "column"), [("hash", "email"), ("brin", "created_at"), ("gist", "during")]
)
def test_create_index_types(shared: Shared, table: str, kind: str, column: str) -> None:
    response = _create(shared, table, {"column": column, "type": kind})

    assert response.status_code == 201, response.text
    assert response.json()["type"] == kind


def test_create_index_jsonb_path_ops(shared: Shared, table: str) -> None:
    response = _create(
        shared, table, {"column": "data", "type": "gin", "opclass": "jsonb_path_ops"}
    )

    assert response.status_code == 201, response.text
    assert "jsonb_path_ops" in response.json()["definition"]


def test_create_index_multiple_columns(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"columns": ["email", "created_at"], "name": "by_email"})

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "by_email"
    assert response.json()["columns"] == ["email", "created_at"]


def test_create_index_partial(shared: Shared, table: str) -> None:
    response = _create(
        shared, table, {"column": "email", "where": "deleted_at IS NULL AND title LIKE 'a%'"}
    )

    assert response.status_code == 201, response.text
    assert "deleted_at IS NULL" in response.json()["predicate"]
    assert "'a%'" in response.json()["predicate"]


def test_create_index_not_concurrently(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "body", "concurrently": False})

    assert response.status_code == 201, response.text
    assert response.json()["valid"] is True


def test_create_index_with_secret_key(shared: Shared, table: str) -> None:
    http, owner, project = shared
    response = http.post(
        _indexes_url(project, table),
        json={"column": "title"},
        headers={"apikey": owner["secret_key"]},
    )

    assert response.status_code == 201, response.text


def test_create_index_other_user_not_found(shared: Shared, table: str) -> None:
    http, _, project = shared
    stranger = signup_and_login(http)
    response = http.post(
        _indexes_url(project, table), json={"column": "title"}, headers=stranger["headers"]
    )

    assert response.status_code == 404


@pytest.mark.parametrize(
    "where",
    [
        "true; DROP TABLE posts",
        "true -- comment",
        "true /* comment */",
        "(SELECT true)",
        "EXISTS (SELECT 1 FROM pg_class)",
        "true) WITH (fillfactor = 10",
        "1 FROM pg_class",
        "deleted_at IS NULL AS x",
        "a, b",
        "",
        "x" * 5000,
    ],
)
def test_create_index_where_rejected(
    shared: Shared, table: str, server_url: str, where: str
) -> None:
    response = _create(shared, table, {"column": "title", "where": where})

    assert response.status_code == 422, response.text
    assert _index_names(server_url, shared[2]["db_name"], table) == {
        f"{table}_pkey",
        f"{table}_code_key",
    }


def test_create_index_where_mutable_function(shared: Shared, table: str) -> None:
    """PostgreSQL's own reason comes back: index predicates must be immutable."""
    response = _create(shared, table, {"column": "title", "where": "created_at > now()"})

    assert response.status_code == 422
    assert response.json()["error"]["details"]["sqlstate"] == "42P17"


def test_create_index_where_unknown_column(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "title", "where": "nope IS NULL"})

    assert response.status_code == 422
    assert response.json()["error"]["details"]["sqlstate"] == "42703"


@pytest.mark.parametrize(
    "name",
    ['x"; DROP TABLE posts; --', "a'b", "a;b", "a b", "1abc", "a-b", "x" * 64, "ü" * 40],
)
def test_create_index_name_rejected(shared: Shared, table: str, name: str) -> None:
    response = _create(shared, table, {"column": "title", "name": name})

    assert response.status_code == 422


def test_create_index_duplicate_name(shared: Shared, table: str) -> None:
    first = _create(shared, table, {"column": "title", "name": f"{table}_dup"})
    second = _create(shared, table, {"column": "body", "name": f"{table}_dup"})

    assert first.status_code == 201
    assert second.status_code == 409


def test_create_index_concurrent_generated_names(
    api: ThreadedServer, shared: Shared, table: str
) -> None:
    _, owner, project = shared

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            return http.post(
                _indexes_url(project, table), json={"column": "title"}, headers=owner["headers"]
            )

    with ThreadPoolExecutor(max_workers=3) as pool:
        responses = list(pool.map(create, range(3)))

    assert [r.status_code for r in responses] == [201, 201, 201]
    assert {r.json()["name"] for r in responses} == {
        f"{table}_title_idx",
        f"{table}_title_idx1",
        f"{table}_title_idx2",
    }


def test_create_index_name_of_table(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "title", "name": table})

    assert response.status_code == 409


@pytest.mark.parametrize("name", ["no_such_table", "x'; DROP TABLE t; --", 'a"b'])
def test_create_index_unknown_table(shared: Shared, name: str) -> None:
    response = _create(shared, name, {"column": "title"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "table_not_found"


@pytest.mark.parametrize("column", ["nope", 'title"', "title; DROP TABLE t"])
def test_create_index_unknown_column(shared: Shared, table: str, column: str) -> None:
    response = _create(shared, table, {"column": column})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "column_not_found"


def test_create_index_unique_hash(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "email", "type": "hash", "unique": True})

    assert response.status_code == 422
    assert "btree" in response.json()["error"]["message"]


def test_create_index_gin_text_suggests_pg_trgm(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "title", "type": "gin"})

    assert response.status_code == 422
    assert "pg_trgm" in response.json()["error"]["message"]


def test_create_index_hash_multiple_columns(shared: Shared, table: str) -> None:
    """PostgreSQL's own reason: hash indexes take one column."""
    response = _create(shared, table, {"columns": ["title", "body"], "type": "hash"})

    assert response.status_code == 422
    assert response.json()["error"]["details"]["sqlstate"] == "0A000"


def test_create_index_bad_type(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "title", "type": "btree; DROP TABLE x"})

    assert response.status_code == 422


def test_create_index_column_and_columns(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "title", "columns": ["body"]})

    assert response.status_code == 422


def test_create_index_opclass_not_supported(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "title", "opclass": "text_ops; DROP TABLE x"})

    assert response.status_code == 422


def test_create_index_opclass_wrong_type(shared: Shared, table: str) -> None:
    response = _create(
        shared, table, {"column": "title", "type": "gist", "opclass": "gin_trgm_ops"}
    )

    assert response.status_code == 422


def test_create_index_opclass_pattern_ops(shared: Shared, table: str) -> None:
    response = _create(shared, table, {"column": "title", "opclass": "text_pattern_ops"})

    assert response.status_code == 201, response.text
    assert "text_pattern_ops" in response.json()["definition"]


def test_create_index_trigram(shared: Shared, table: str) -> None:
    http, owner, project = shared
    missing = _create(shared, table, {"column": "title", "type": "gin", "opclass": "gin_trgm_ops"})
    enabled = http.post(
        f"/projects/{project['id']}/database/extensions/pg_trgm/enable", headers=owner["headers"]
    )
    created = _create(shared, table, {"column": "title", "type": "gin", "opclass": "gin_trgm_ops"})

    assert missing.status_code == 422
    assert "pg_trgm" in missing.json()["error"]["message"]
    assert enabled.status_code == 200
    assert created.status_code == 201, created.text
    assert "gin_trgm_ops" in created.json()["definition"]


def test_create_index_long_names_fit(shared: Shared, server_url: str) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}_{'long' * 12}"
    first, second = "c" * 56 + "_one", "c" * 56 + "_two"
    with _as_owner(server_url, shared[2]["db_name"]) as conn:
        conn.execute(f"CREATE TABLE {table} ({first} int, {second} int)")

    one = _create(shared, table, {"column": first})
    two = _create(shared, table, {"column": second})

    assert one.status_code == 201, one.text
    assert two.status_code == 201, two.text
    assert len(one.json()["name"].encode()) <= 63
    assert one.json()["name"].endswith("_idx")
    assert one.json()["name"] != two.json()["name"]


def test_create_unique_index_duplicates_leave_nothing(
    shared: Shared, table: str, server_url: str
) -> None:
    """A failed concurrent build leaves an invalid index; zbaas drops it."""
    with _as_owner(server_url, shared[2]["db_name"]) as conn:
        conn.execute(f"UPDATE {table} SET title = 'same'")

    response = _create(shared, table, {"column": "title", "unique": True, "name": "t_uniq"})

    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "duplicate_values"
    assert _index_names(server_url, shared[2]["db_name"], table) == {
        f"{table}_pkey",
        f"{table}_code_key",
    }


def test_create_index_allows_writes_during_build(
    api: ThreadedServer, shared: Shared, server_url: str
) -> None:
    """Rows inserted from another connection while a concurrent build runs go in at once.

    A transaction that wrote to the table and stays open makes the build wait in
    its first phase; a plain CREATE INDEX would block every insert behind it there.
    """
    _, owner, project = shared
    db_name = project["db_name"]
    table = f"big_{uuid.uuid4().hex[:8]}"
    with _as_owner(server_url, db_name) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text)")
        conn.execute(
            f"INSERT INTO {table} (payload) SELECT md5(i::text) FROM generate_series(1, 200000) i"
        )

    blocker = _as_owner(server_url, db_name)
    blocker.autocommit = False
    blocker.execute(f"INSERT INTO {table} (payload) VALUES ('open transaction')")

    def build() -> httpx.Response:
        with httpx.Client(base_url=api.url, timeout=120) as http:
            return http.post(
                _indexes_url(project, table), json={"column": "payload"}, headers=owner["headers"]
            )

    with ThreadPoolExecutor(max_workers=1) as pool, connect(server_url, db_name) as watcher:
        pending = pool.submit(build)
        phase = None
        deadline = time.monotonic() + 30
        while phase is None and time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT phase FROM pg_stat_progress_create_index WHERE relid = %s::regclass",
                (table,),
            ).fetchone()
            phase = row[0] if row else None
            time.sleep(0.02)

        with _as_owner(server_url, db_name) as writer:
            writer.execute("SET statement_timeout = '3s'")
            for i in range(50):
                writer.execute(f"INSERT INTO {table} (payload) VALUES (%s)", (f"during {i}",))
        still_building = not pending.done()

        blocker.commit()
        blocker.close()
        response = pending.result(timeout=120)

    assert phase is not None
    assert still_building
    assert response.status_code == 201, response.text
    assert response.json()["valid"] is True
    with connect(server_url, db_name) as conn:
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert count == (200000 + 1 + 50,)


def test_drop_index(shared: Shared, table: str, server_url: str) -> None:
    http, owner, project = shared
    _create(shared, table, {"column": "title", "name": f"{table}_gone"})
    response = http.delete(_index_url(project, f"{table}_gone"), headers=owner["headers"])

    assert response.status_code == 204
    assert f"{table}_gone" not in _index_names(server_url, project["db_name"], table)


def test_drop_index_not_concurrently(shared: Shared, table: str, server_url: str) -> None:
    http, owner, project = shared
    _create(shared, table, {"column": "title", "name": f"{table}_gone"})
    response = http.delete(
        _index_url(project, f"{table}_gone"),
        params={"concurrently": "false"},
        headers=owner["headers"],
    )

    assert response.status_code == 204
    assert f"{table}_gone" not in _index_names(server_url, project["db_name"], table)


def test_drop_index_primary_key(shared: Shared, table: str, server_url: str) -> None:
    http, owner, project = shared
    response = http.delete(_index_url(project, f"{table}_pkey"), headers=owner["headers"])

    assert response.status_code == 409
    assert f"{table}_pkey" in response.json()["error"]["message"]
    assert "primary key" in response.json()["error"]["message"]
    assert f"{table}_pkey" in _index_names(server_url, project["db_name"], table)


def test_drop_index_unique_constraint(shared: Shared, table: str) -> None:
    http, owner, project = shared
    response = http.delete(_index_url(project, f"{table}_code_key"), headers=owner["headers"])

    assert response.status_code == 409
    assert response.json()["error"]["details"]["constraints"] == [f"{table}_code_key"]


@pytest.mark.parametrize("name", ["no_such_index", "x'; DROP TABLE t; --", 'a"b'])
def test_drop_index_unknown(shared: Shared, name: str) -> None:
    http, owner, project = shared
    response = http.delete(_index_url(project, name), headers=owner["headers"])

    assert response.status_code == 404


def test_drop_index_outside_public(shared: Shared) -> None:
    http, owner, project = shared
    response = http.delete(_index_url(project, "users_email_key"), headers=owner["headers"])

    assert response.status_code == 404
