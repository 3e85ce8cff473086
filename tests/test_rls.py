"""Row-level security endpoints, policy expression checks, and the auth.* claim functions."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import ThreadedServer, connect, signup_and_login
from zbaas.config import Settings
from zbaas.platform.security import SecretBox

OWN_ROWS = "(auth.uid() = user_id)"


@dataclass
class ProjectDb:
    """Direct access to one project database, as its owner and authenticator roles."""

    server_url: str
    id: str
    db_name: str
    owner_role: str
    authenticator_role: str
    authenticator_password: str

    def owner(self) -> psycopg.Connection:
        """A superuser connection switched to the owner role, so new objects belong to it."""
        conn = connect(self.server_url, self.db_name)
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.owner_role)))
        return conn

    def authenticator(self) -> psycopg.Connection:
        """A login as the authenticator role, as the data API makes it."""
        return connect(
            self.server_url,
            self.db_name,
            user=self.authenticator_role,
            password=self.authenticator_password,
        )

    def rls_enabled(self, table: str) -> bool:
        with connect(self.server_url, self.db_name) as conn:
            row = conn.execute(
                "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (table,)
            ).fetchone()
        assert row is not None
        return bool(row[0])

    def policy_names(self, table: str) -> list[str]:
        with connect(self.server_url, self.db_name) as conn:
            rows = conn.execute(
                "SELECT polname FROM pg_policy WHERE polrelid = %s::regclass ORDER BY polname",
                (table,),
            ).fetchall()
        return [row[0] for row in rows]

    def table_exists(self, table: str) -> bool:
        with connect(self.server_url, self.db_name) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        return row is not None and row[0] is not None


@pytest.fixture(scope="module")
def http(api: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def member(http: httpx.Client) -> dict[str, Any]:
    return signup_and_login(http)


@pytest.fixture(scope="module")
def db(
    http: httpx.Client, member: dict[str, Any], server_url: str, settings: Settings
) -> Iterator[ProjectDb]:
    """One project shared by this module's tests. Each test makes its own tables."""
    response = http.post(
        "/projects",
        json={"name": "RLS", "slug": f"rls-{uuid.uuid4().hex[:8]}"},
        headers=member["headers"],
    )
    assert response.status_code == 201, response.text
    body = response.json()
    with connect(server_url, settings.control_database) as control:
        row = control.execute(
            "SELECT owner_role, authenticator_role, authenticator_password "
            "FROM projects WHERE id = %s",
            (body["id"],),
        ).fetchone()
    assert row is not None
    yield ProjectDb(
        server_url=server_url,
        id=body["id"],
        db_name=body["db_name"],
        owner_role=row[0],
        authenticator_role=row[1],
        authenticator_password=SecretBox(settings.resolved_secret_key).decrypt(row[2]),
    )
    http.delete(f"/projects/{body['id']}", headers=member["headers"])


@pytest.fixture
def table(db: ProjectDb) -> str:
    """Create a table ``public.<name>`` of the owner role with a ``user_id`` column."""
    name = f"todos_{uuid.uuid4().hex[:8]}"
    with db.owner() as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE public.{} (id serial PRIMARY KEY, user_id uuid, title text)"
            ).format(sql.Identifier(name))
        )
    return name


@pytest.fixture(scope="module")
def headers(member: dict[str, Any]) -> dict[str, str]:
    return member["headers"]


def rls_url(db: ProjectDb, table: str, tail: str) -> str:
    return f"/projects/{db.id}/database/rls/{quote(table, safe='')}/{tail}"


def create_policy(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str], **body: Any
) -> httpx.Response:
    return http.post(rls_url(db, table, "policies"), json=body, headers=headers)


# Enable and disable


def test_enable_rls_sets_flag(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = http.post(rls_url(db, table, "enable"), headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "schema": "public",
        "table": table,
        "rls_enabled": True,
        "rls_forced": False,
    }
    assert db.rls_enabled(table)


def test_enable_rls_twice_is_idempotent(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    first = http.post(rls_url(db, table, "enable"), headers=headers)
    second = http.post(rls_url(db, table, "enable"), headers=headers)

    assert first.status_code == 200
    assert second.status_code == 200
    assert second.json()["rls_enabled"] is True


def test_disable_rls_clears_flag(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    http.post(rls_url(db, table, "enable"), headers=headers)

    first = http.post(rls_url(db, table, "disable"), headers=headers)
    second = http.post(rls_url(db, table, "disable"), headers=headers)

    assert first.status_code == 200
    assert first.json()["rls_enabled"] is False
    assert second.status_code == 200
    assert not db.rls_enabled(table)


def test_enable_rls_schema_qualified_table(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str]
) -> None:
    schema = f"app_{uuid.uuid4().hex[:8]}"
    with db.owner() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.items (id int)").format(sql.Identifier(schema)))

    response = http.post(rls_url(db, f"{schema}.items", "enable"), headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["schema"] == schema
    assert db.rls_enabled(f"{schema}.items")


def test_enable_rls_partitioned_table(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str]
) -> None:
    name = f"events_{uuid.uuid4().hex[:8]}"
    with db.owner() as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id int, at date) PARTITION BY RANGE (at)").format(
                sql.Identifier(name)
            )
        )

    response = http.post(rls_url(db, name, "enable"), headers=headers)

    assert response.status_code == 200, response.text
    assert db.rls_enabled(name)


def test_enable_rls_table_name_is_case_sensitive(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str]
) -> None:
    name = f"Mixed_{uuid.uuid4().hex[:8]}"
    with db.owner() as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(name)))

    exact = http.post(rls_url(db, name, "enable"), headers=headers)
    folded = http.post(rls_url(db, name.lower(), "enable"), headers=headers)

    assert exact.status_code == 200
    assert folded.status_code == 404


@pytest.mark.parametrize("name", ["no_such_table", "no_such_schema.todos", "todos.public"])
def test_enable_rls_unknown_table(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str], name: str
) -> None:
    response = http.post(rls_url(db, name, "enable"), headers=headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "table_not_found"


@pytest.mark.parametrize("name", ["public.", ".todos"])
def test_enable_rls_malformed_table_name(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str], name: str
) -> None:
    response = http.post(rls_url(db, name, "enable"), headers=headers)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


def test_enable_rls_view_is_not_table(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    view = f"v_{table}"
    with db.owner() as conn:
        conn.execute(
            sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
                sql.Identifier(view), sql.Identifier(table)
            )
        )

    response = http.post(rls_url(db, view, "enable"), headers=headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "table_not_found"


@pytest.mark.parametrize(
    "name",
    ["auth.users", "zbaas_meta.schema_migrations", "pg_catalog.pg_class"],
)
def test_enable_rls_table_not_owned(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str], name: str
) -> None:
    response = http.post(rls_url(db, name, "enable"), headers=headers)

    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "table_not_owned"
    assert not db.rls_enabled(name)


@pytest.mark.parametrize(
    "suffix",
    ['"; DROP TABLE {t}; --', "' OR '1'='1", "; DROP TABLE {t}", " /* x */", "-- x", '"{t}"'],
)
def test_enable_rls_hostile_table_name(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str], suffix: str
) -> None:
    name = table + suffix.replace("{t}", table)

    response = http.post(rls_url(db, name, "enable"), headers=headers)

    assert response.status_code == 404
    assert db.table_exists(table)
    assert not db.rls_enabled(table)


@pytest.mark.parametrize(
    ("method", "tail"),
    [("GET", "policies"), ("POST", "policies"), ("DELETE", "policies/p"), ("POST", "disable")],
)
def test_rls_endpoints_hostile_table_name(
    http: httpx.Client,
    db: ProjectDb,
    table: str,
    headers: dict[str, str],
    method: str,
    tail: str,
) -> None:
    name = f'{table}"; DROP TABLE {table}; --'
    body = {"name": "p", "using": "true"} if method == "POST" else None

    response = http.request(method, rls_url(db, name, tail), json=body, headers=headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "table_not_found"
    assert db.table_exists(table)


def test_enable_rls_nul_in_table_name(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = http.post(rls_url(db, table + "\x00x", "enable"), headers=headers)

    assert response.status_code == 422
    assert not db.rls_enabled(table)


def test_enable_rls_secret_key_allowed(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    key = http.post(
        f"/projects/{db.id}/keys", json={"name": "rls", "type": "secret"}, headers=headers
    ).json()["key"]

    response = http.post(rls_url(db, table, "enable"), headers={"apikey": key})

    assert response.status_code == 200


def test_enable_rls_publishable_key_forbidden(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    key = http.post(
        f"/projects/{db.id}/keys", json={"name": "rls", "type": "publishable"}, headers=headers
    ).json()["key"]

    response = http.post(rls_url(db, table, "enable"), headers={"apikey": key})

    assert response.status_code == 403
    assert not db.rls_enabled(table)


def test_enable_rls_other_users_project_not_found(
    http: httpx.Client, db: ProjectDb, table: str
) -> None:
    stranger = signup_and_login(http)

    response = http.post(rls_url(db, table, "enable"), headers=stranger["headers"])

    assert response.status_code == 404
    assert not db.rls_enabled(table)


def test_enable_rls_without_credentials_unauthorized(
    http: httpx.Client, db: ProjectDb, table: str
) -> None:
    response = http.post(rls_url(db, table, "enable"))

    assert response.status_code == 401


# Creating, listing and deleting policies


def test_create_policy_returns_catalog_fields(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = create_policy(
        http,
        db,
        table,
        headers,
        name="users_own_data",
        command="ALL",
        using=OWN_ROWS,
        check=OWN_ROWS,
    )

    assert response.status_code == 201, response.text
    assert response.json() == {
        "name": "users_own_data",
        "command": "ALL",
        "using": OWN_ROWS,
        "check": OWN_ROWS,
        "roles": ["public"],
        "permissive": True,
    }


def test_list_policies_reads_catalog(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    created = create_policy(
        http,
        db,
        table,
        headers,
        name="readers",
        command="select",
        using="user_id IS NOT NULL",
        roles=["authenticated", "anon"],
        permissive=False,
    )
    create_policy(http, db, table, headers, name="adders", command="INSERT", check="true")

    response = http.get(rls_url(db, table, "policies"), headers=headers)

    assert created.status_code == 201, created.text
    assert response.status_code == 200
    assert response.json() == [
        {
            "name": "adders",
            "command": "INSERT",
            "using": None,
            "check": "true",
            "roles": ["public"],
            "permissive": True,
        },
        {
            "name": "readers",
            "command": "SELECT",
            "using": "(user_id IS NOT NULL)",
            "check": None,
            "roles": ["anon", "authenticated"],
            "permissive": False,
        },
    ]


def test_list_policies_empty(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = http.get(rls_url(db, table, "policies"), headers=headers)

    assert response.status_code == 200
    assert response.json() == []


def test_list_policies_unknown_table(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str]
) -> None:
    response = http.get(rls_url(db, "no_such_table", "policies"), headers=headers)

    assert response.status_code == 404


def test_enable_rls_concurrent_calls(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str], api: ThreadedServer
) -> None:
    statuses: list[int] = []

    def post(action: str) -> None:
        with httpx.Client(base_url=api.url, timeout=60) as client:
            statuses.append(client.post(rls_url(db, table, action), headers=headers).status_code)

    threads = [threading.Thread(target=post, args=("enable",)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 6
    assert db.rls_enabled(table)


def test_create_policy_duplicate_name(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    first = create_policy(http, db, table, headers, name="p", using="true")
    second = create_policy(http, db, table, headers, name="p", using="false")

    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "policy_exists"


def test_create_policy_concurrent_same_name(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str], api: ThreadedServer
) -> None:
    statuses: list[int] = []

    def post() -> None:
        with httpx.Client(base_url=api.url, timeout=60) as client:
            statuses.append(
                create_policy(client, db, table, headers, name="race", using="true").status_code
            )

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [201, 409, 409, 409, 409, 409]
    assert db.policy_names(table) == ["race"]


@pytest.mark.parametrize(
    ("command", "field"),
    [("SELECT", "check"), ("DELETE", "check"), ("INSERT", "using")],
)
def test_create_policy_clause_not_allowed(
    http: httpx.Client,
    db: ProjectDb,
    table: str,
    headers: dict[str, str],
    command: str,
    field: str,
) -> None:
    response = create_policy(http, db, table, headers, name="p", command=command, **{field: "true"})

    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == field
    assert f"{command} policy cannot have '{field}'" in response.json()["error"]["message"]
    assert db.policy_names(table) == []


@pytest.mark.parametrize("command", ["UPDATE", "ALL"])
def test_create_policy_both_clauses_allowed(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str], command: str
) -> None:
    response = create_policy(
        http, db, table, headers, name="p", command=command, using="true", check="true"
    )

    assert response.status_code == 201, response.text


def test_create_policy_unknown_command(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = create_policy(http, db, table, headers, name="p", command="TRUNCATE")

    assert response.status_code == 422
    assert db.policy_names(table) == []


def test_create_policy_unknown_column(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = create_policy(
        http, db, table, headers, name="p", command="INSERT", check="auth.uid() = owner_id"
    )

    error = response.json()["error"]
    assert response.status_code == 422
    assert error["code"] == "sql_error"
    assert error["details"]["sqlstate"] == "42703"
    assert error["message"] == 'column "owner_id" does not exist'
    assert error["details"]["field"] == "check"
    assert db.policy_names(table) == []


def test_create_policy_unknown_column_two_expressions(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = create_policy(
        http, db, table, headers, name="p", using="true", check="auth.uid() = owner_id"
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"]["sqlstate"] == "42703"
    assert db.policy_names(table) == []


@pytest.mark.parametrize(
    ("expression", "sqlstate"),
    [("user_id", "42804"), ("no_such_function(id)", "42883"), ("title = auth.uid()", "42883")],
)
def test_create_policy_postgres_rejects_expression(
    http: httpx.Client,
    db: ProjectDb,
    table: str,
    headers: dict[str, str],
    expression: str,
    sqlstate: str,
) -> None:
    response = create_policy(http, db, table, headers, name="p", using=expression)

    assert response.status_code == 422
    assert response.json()["error"]["details"]["sqlstate"] == sqlstate
    assert db.policy_names(table) == []


HOSTILE_EXPRESSIONS = [
    "",
    "   ",
    "true); DROP TABLE {t}; --",
    "true) WITH CHECK (true",
    "true; DROP TABLE {t}",
    "true;",
    "true -- trailing comment",
    "true /* comment */",
    "/* comment */ true",
    "true /* unterminated",
    "'unterminated",
    "true UNION SELECT true",
    "true FROM {t}",
    "true WHERE false",
    "true ORDER BY 1",
    "true LIMIT 1",
    "true AS alias",
    "true alias",
    "true, false",
    "DROP TABLE {t}",
    "(SELECT true); SELECT 1",
    "true\x00); DROP TABLE {t}; --",
    "ALL true",
    "DISTINCT true",
    "true INTO other_table",
    "*",
    "true)) OR ((true",
]


@pytest.mark.parametrize("expression", HOSTILE_EXPRESSIONS)
@pytest.mark.parametrize("field", ["using", "check"])
def test_create_policy_hostile_expression(
    http: httpx.Client,
    db: ProjectDb,
    table: str,
    headers: dict[str, str],
    expression: str,
    field: str,
) -> None:
    response = create_policy(
        http,
        db,
        table,
        headers,
        name="p",
        command="ALL",
        **{field: expression.replace("{t}", table)},
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_expression"
    assert response.json()["error"]["details"]["field"] == field
    assert db.policy_names(table) == []
    assert db.table_exists(table)


@pytest.mark.parametrize(
    ("expression", "stored"),
    [
        ("title <> 'a;b -- c /* d */'", "(title <> 'a;b -- c /* d */'::text)"),
        ("title <> $$x); DROP TABLE t; --$$", "(title <> 'x); DROP TABLE t; --'::text)"),
        ("id % 2 = 0", "((id % 2) = 0)"),
        ("title <> '{}'", "(title <> '{}'::text)"),
        ("title <> E'\\'; --'", "(title <> '''; --'::text)"),
        (
            "EXISTS (SELECT 1 FROM auth.users u WHERE u.id = user_id)",
            "(EXISTS ( SELECT 1\n   FROM auth.users u\n  WHERE (u.id = todos.user_id)))",
        ),
    ],
)
def test_create_policy_literals_kept(
    http: httpx.Client,
    db: ProjectDb,
    table: str,
    headers: dict[str, str],
    expression: str,
    stored: str,
) -> None:
    response = create_policy(http, db, table, headers, name="p", using=expression)

    assert response.status_code == 201, response.text
    assert response.json()["using"] == stored.replace("todos.", f"{table}.")


def test_create_policy_syntax_error_position(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = create_policy(http, db, table, headers, name="p", using="user_id = = 1")

    error = response.json()["error"]
    assert response.status_code == 422
    assert error["message"] == 'invalid using expression: syntax error at or near "="'
    assert error["details"]["position"] == len("user_id = ") + 1


def test_create_policy_expression_too_long(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = create_policy(http, db, table, headers, name="p", using="true AND " * 2000 + "true")

    assert response.status_code == 422
    assert db.policy_names(table) == []


def test_create_policy_huge_body(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = create_policy(http, db, table, headers, name="p", using="x" * 11 * 1024 * 1024)

    assert response.status_code == 413
    assert db.policy_names(table) == []


@pytest.mark.parametrize(
    "name",
    ['p"; DROP TABLE x; --', "it's mine", "/* not a comment */", "Read own rows", "100% {mine}"],
)
def test_create_policy_hostile_name_stored_literally(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str], name: str
) -> None:
    created = create_policy(http, db, table, headers, name=name, using="true")
    deleted = http.delete(rls_url(db, table, f"policies/{quote(name, safe='')}"), headers=headers)

    assert created.status_code == 201, created.text
    assert created.json()["name"] == name
    assert deleted.status_code == 204
    assert db.policy_names(table) == []
    assert db.table_exists(table)


@pytest.mark.parametrize("name", ["x" * 64, "é" * 32, "tab\there", ""])
def test_create_policy_invalid_name(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str], name: str
) -> None:
    response = create_policy(http, db, table, headers, name=name, using="true")

    assert response.status_code == 422
    assert db.policy_names(table) == []


@pytest.mark.parametrize("roles", [["nobody_here"], ['anon"; DROP ROLE anon; --'], [""], []])
def test_create_policy_invalid_roles(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str], roles: list[str]
) -> None:
    response = create_policy(http, db, table, headers, name="p", using="true", roles=roles)

    assert response.status_code == 422, response.text
    assert db.policy_names(table) == []


def test_create_policy_public_and_role(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = create_policy(
        http, db, table, headers, name="p", using="true", roles=["PUBLIC", "service_role"]
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "roles"
    assert db.policy_names(table) == []


def test_create_policy_public_any_case(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = create_policy(http, db, table, headers, name="p", using="true", roles=["PUBLIC"])

    assert response.status_code == 201, response.text
    assert response.json()["roles"] == ["public"]


def test_create_policy_extra_field(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    response = http.post(
        rls_url(db, table, "policies"),
        json={"name": "p", "using": "true", "table": "other"},
        headers=headers,
    )

    assert response.status_code == 422
    assert db.policy_names(table) == []


def test_create_policy_table_not_owned(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str]
) -> None:
    response = create_policy(http, db, "auth.users", headers, name="p", using="true")

    assert response.status_code == 403
    assert db.policy_names("auth.users") == []


def test_create_policy_unknown_table(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str]
) -> None:
    response = create_policy(http, db, "no_such_table", headers, name="p", using="true")

    assert response.status_code == 404


def test_delete_policy_removes_it(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> None:
    create_policy(http, db, table, headers, name="keep", using="true")
    create_policy(http, db, table, headers, name="drop", using="true")

    response = http.delete(rls_url(db, table, "policies/drop"), headers=headers)

    assert response.status_code == 204
    assert db.policy_names(table) == ["keep"]


@pytest.mark.parametrize("name", ["no_such_policy", "keep; DROP TABLE x", 'keep"--'])
def test_delete_policy_unknown(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str], name: str
) -> None:
    create_policy(http, db, table, headers, name="keep", using="true")

    response = http.delete(rls_url(db, table, f"policies/{quote(name, safe='')}"), headers=headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "policy_not_found"
    assert db.policy_names(table) == ["keep"]


def test_delete_policy_unknown_table(
    http: httpx.Client, db: ProjectDb, headers: dict[str, str]
) -> None:
    response = http.delete(rls_url(db, "no_such_table", "policies/p"), headers=headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "table_not_found"


# auth.uid(), auth.role() and auth.jwt() under the data API's connection pattern


def claims_for(user_id: uuid.UUID | str, **extra: Any) -> dict[str, Any]:
    return {"sub": str(user_id), "role": "authenticated", **extra}


def as_end_user(
    conn: psycopg.Connection, claims: dict[str, Any] | None, role: str = "authenticated"
) -> None:
    """Switch the open transaction to ``role`` and set ``claims``, as the data API does."""
    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
    if claims is not None:
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))


def test_auth_functions_read_claims(db: ProjectDb) -> None:
    user_id = uuid.uuid4()
    with db.authenticator() as conn, conn.transaction():
        as_end_user(conn, claims_for(user_id, email="ada@example.com"))
        row = conn.execute("SELECT auth.uid(), auth.role(), auth.jwt() ->> 'email'").fetchone()

    assert row is not None
    assert row[0] == user_id
    assert row[1] == "authenticated"
    assert row[2] == "ada@example.com"


def test_auth_functions_without_claims(db: ProjectDb) -> None:
    with db.authenticator() as conn, conn.transaction():
        as_end_user(conn, None, role="anon")
        row = conn.execute("SELECT auth.uid(), auth.role(), auth.jwt()").fetchone()

    assert row is not None
    assert row[0] is None
    assert row[1] == "anon"
    assert row[2] == {}


def test_auth_claims_end_with_transaction(db: ProjectDb) -> None:
    with db.authenticator() as conn:
        with conn.transaction():
            as_end_user(conn, claims_for(uuid.uuid4()))
        row = conn.execute(
            "SELECT current_setting('request.jwt.claims', true), current_user"
        ).fetchone()

    assert row is not None
    assert row[0] in (None, "")
    assert row[1] == db.authenticator_role


@pytest.fixture
def owned_rows(
    http: httpx.Client, db: ProjectDb, table: str, headers: dict[str, str]
) -> tuple[str, uuid.UUID, uuid.UUID]:
    """Fill the table with rows of two users, enable RLS and limit ``authenticated`` to own rows."""
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with db.owner() as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (user_id, title) VALUES (%s, 'a1'), (%s, 'a2'), (%s, 'b1')"
            ).format(sql.Identifier(table)),
            (alice, alice, bob),
        )
    enabled = http.post(rls_url(db, table, "enable"), headers=headers)
    policy = create_policy(
        http,
        db,
        table,
        headers,
        name="users_own_data",
        command="ALL",
        using=OWN_ROWS,
        check=OWN_ROWS,
        roles=["authenticated"],
    )
    assert enabled.status_code == 200, enabled.text
    assert policy.status_code == 201, policy.text
    return table, alice, bob


def test_own_rows_policy_filters_select(
    db: ProjectDb, owned_rows: tuple[str, uuid.UUID, uuid.UUID]
) -> None:
    table, alice, bob = owned_rows
    query = sql.SQL("SELECT title FROM {} ORDER BY title").format(sql.Identifier(table))
    seen: dict[uuid.UUID, list[str]] = {}
    for user in (alice, bob):
        with db.authenticator() as conn, conn.transaction():
            as_end_user(conn, claims_for(user))
            seen[user] = [row[0] for row in conn.execute(query).fetchall()]

    assert seen[alice] == ["a1", "a2"]
    assert seen[bob] == ["b1"]


def test_own_rows_policy_blocks_foreign_insert(
    db: ProjectDb, owned_rows: tuple[str, uuid.UUID, uuid.UUID]
) -> None:
    table, alice, bob = owned_rows
    insert = sql.SQL("INSERT INTO {} (user_id, title) VALUES (%s, 'x')").format(
        sql.Identifier(table)
    )
    with db.authenticator() as conn:
        with conn.transaction():
            as_end_user(conn, claims_for(alice))
            conn.execute(insert, (alice,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            as_end_user(conn, claims_for(alice))
            conn.execute(insert, (bob,))


def test_own_rows_policy_limits_update_and_delete(
    db: ProjectDb, owned_rows: tuple[str, uuid.UUID, uuid.UUID]
) -> None:
    table, alice, bob = owned_rows
    with db.authenticator() as conn, conn.transaction():
        as_end_user(conn, claims_for(alice))
        updated = conn.execute(
            sql.SQL("UPDATE {} SET title = 'changed'").format(sql.Identifier(table))
        ).rowcount
        deleted = conn.execute(
            sql.SQL("DELETE FROM {} WHERE title = 'changed'").format(sql.Identifier(table))
        ).rowcount

    with db.owner() as conn:
        remaining = conn.execute(
            sql.SQL("SELECT title FROM {} ORDER BY title").format(sql.Identifier(table))
        ).fetchall()

    assert updated == 2
    assert deleted == 2
    assert [row[0] for row in remaining] == ["b1"]


def test_own_rows_policy_hides_rows_from_anon(
    db: ProjectDb, owned_rows: tuple[str, uuid.UUID, uuid.UUID]
) -> None:
    table, _, _ = owned_rows
    with db.authenticator() as conn, conn.transaction():
        as_end_user(conn, None, role="anon")
        rows = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))).fetchall()

    assert rows == []


def test_authenticator_alone_reads_nothing(
    db: ProjectDb, owned_rows: tuple[str, uuid.UUID, uuid.UUID]
) -> None:
    table, _, _ = owned_rows
    with db.authenticator() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier("public", table)))


def test_own_rows_policy_off_when_rls_disabled(
    http: httpx.Client,
    db: ProjectDb,
    headers: dict[str, str],
    owned_rows: tuple[str, uuid.UUID, uuid.UUID],
) -> None:
    table, alice, _ = owned_rows
    http.post(rls_url(db, table, "disable"), headers=headers)

    with db.authenticator() as conn, conn.transaction():
        as_end_user(conn, claims_for(alice))
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        ).fetchone()

    assert count == (3,)
