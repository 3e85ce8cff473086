from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ThreadedServer, connect, signup_and_login
from zbaas.tenant.extensions import NEVER_ALLOWED


def _url(project: dict[str, Any], name: str = "", action: str = "") -> str:
    url = f"/projects/{project['id']}/database/extensions"
    if name:
        url += f"/{name}"
    if action:
        url += f"/{action}"
    return url


def _server_has(server_url: str, name: str) -> bool:
    with connect(server_url, "postgres") as conn:
        row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,))
        return row.fetchone() is not None


def _server_major(server_url: str) -> int:
    with connect(server_url, "postgres") as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None
        return int(row[0]) // 10000


def _installed(server_url: str, db_name: str, name: str) -> bool:
    with connect(server_url, db_name) as conn:
        row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (name,))
        return row.fetchone() is not None


def _as_owner(server_url: str, db_name: str) -> psycopg.Connection:
    """A fresh superuser connection switched to the project's owner role.

    It is opened after the extension calls, so it has the database's search_path.
    """
    conn = connect(server_url, db_name)
    owner = conn.execute(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
    ).fetchone()
    assert owner is not None
    conn.execute(f'SET ROLE "{owner[0]}"')
    return conn


Shared = tuple[httpx.Client, dict[str, Any], dict[str, Any]]


@pytest.fixture(scope="module")
def shared(api: ThreadedServer) -> Iterator[Shared]:
    """One project for the whole module, because creating one takes seconds.

    Each test enables different extensions, so that none depends on another's.
    """
    with httpx.Client(base_url=api.url, timeout=60) as http:
        owner = signup_and_login(http)
        response = http.post(
            "/projects",
            json={"name": "Extensions", "slug": f"ext-{uuid.uuid4().hex[:8]}"},
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


def test_list_extensions_fields(shared: Shared) -> None:
    http, owner, project = shared
    response = http.get(_url(project), headers=owner["headers"])
    intarray = next(e for e in response.json() if e["name"] == "intarray")

    assert response.status_code == 200
    assert intarray["allowed"] is True
    assert intarray["available"] is True
    assert intarray["enabled"] is False
    assert intarray["default_version"]
    assert intarray["comment"]
    assert intarray["installed_version"] is None


def test_list_extensions_plpgsql_enabled(shared: Shared) -> None:
    http, owner, project = shared
    listed = http.get(_url(project), headers=owner["headers"]).json()
    plpgsql = next(e for e in listed if e["name"] == "plpgsql")

    assert plpgsql["enabled"] is True
    assert plpgsql["installed_version"]


@pytest.mark.parametrize("name", ["dblink", "postgres_fdw", "file_fdw"])
def test_list_extensions_never_allowed(shared: Shared, server_url: str, name: str) -> None:
    if not _server_has(server_url, name):
        pytest.skip(f"this PostgreSQL server has no {name}")
    http, owner, project = shared
    listed = http.get(_url(project), headers=owner["headers"]).json()
    entry = next(e for e in listed if e["name"] == name)

    assert entry["allowed"] is False
    assert "never" in entry["message"]


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("postgis", "postgresql-{major}-postgis-3"),
        ("vector", "postgresql-{major}-pgvector"),
        ("uuid-ossp", "postgresql-{major}"),
    ],
)
def test_list_extensions_missing_known(
    shared: Shared, server_url: str, name: str, package: str
) -> None:
    if _server_has(server_url, name):
        pytest.skip(f"this PostgreSQL server has {name}")
    http, owner, project = shared
    listed = http.get(_url(project), headers=owner["headers"]).json()
    entry = next(e for e in listed if e["name"] == name)

    assert entry["available"] is False
    assert entry["enabled"] is False
    assert entry["package"] == package.format(major=_server_major(server_url))


@pytest.mark.parametrize(
    "name",
    sorted({*NEVER_ALLOWED, "plpython3u", "plperlu", "pltclu", "plv8u"}),
)
def test_enable_never_allowed(shared: Shared, server_url: str, name: str) -> None:
    """Every never-allowed name is 403, whether or not the server has the extension."""
    http, owner, project = shared
    response = http.post(_url(project, name, "enable"), headers=owner["headers"])

    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "extension_not_allowed"
    assert not _installed(server_url, project["db_name"], name)


def test_enable_not_on_allowlist(shared: Shared, server_url: str) -> None:
    # tcn is a contrib module that both servers under test ship but zbaas does not list.
    if not _server_has(server_url, "tcn"):
        pytest.skip("this PostgreSQL server has no tcn")
    http, owner, project = shared
    response = http.post(_url(project, "tcn", "enable"), headers=owner["headers"])

    assert response.status_code == 403
    assert "allowed" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "name", ["no_such_extension", "pg_trgm; DROP TABLE x", "pg_trgm'--", 'pg_trgm"', "pgvector"]
)
def test_enable_unknown_name(shared: Shared, name: str) -> None:
    http, owner, project = shared
    response = http.post(_url(project, name, "enable"), headers=owner["headers"])

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "extension_not_found"


def test_enable_overlong_name(shared: Shared) -> None:
    http, owner, project = shared
    response = http.post(_url(project, "x" * 64, "enable"), headers=owner["headers"])

    assert response.status_code == 422


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("postgis", "postgresql-{major}-postgis-3"),
        ("vector", "postgresql-{major}-pgvector"),
        ("uuid-ossp", "postgresql-{major}"),
    ],
)
def test_enable_missing_names_package(
    shared: Shared, server_url: str, name: str, package: str
) -> None:
    if _server_has(server_url, name):
        pytest.skip(f"this PostgreSQL server has {name}")
    http, owner, project = shared
    response = http.post(_url(project, name, "enable"), headers=owner["headers"])
    error = response.json()["error"]

    assert response.status_code == 422
    assert error["code"] == "extension_not_available"
    assert package.format(major=_server_major(server_url)) in error["message"]


def test_enable_missing_uuid_ossp_points_to_builtin(shared: Shared, server_url: str) -> None:
    if _server_has(server_url, "uuid-ossp"):
        pytest.skip("this PostgreSQL server has uuid-ossp")
    http, owner, project = shared
    response = http.post(_url(project, "uuid-ossp", "enable"), headers=owner["headers"])

    assert response.status_code == 422
    assert "gen_random_uuid()" in response.json()["error"]["message"]


def test_new_project_search_path(shared: Shared, server_url: str) -> None:
    with _as_owner(server_url, shared[2]["db_name"]) as conn:
        row = conn.execute("SHOW search_path").fetchone()

    assert row == ('"$user", public, extensions',)


def test_enable_pg_trgm_usable_by_roles(shared: Shared, server_url: str) -> None:
    http, owner, project = shared
    response = http.post(_url(project, "pg_trgm", "enable"), headers=owner["headers"])

    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is True
    assert response.json()["schema"] == "extensions"
    with _as_owner(server_url, project["db_name"]) as conn:
        score = conn.execute("SELECT similarity('postgres', 'postgis')").fetchone()
        assert score is not None
        conn.execute("SET ROLE authenticated")
        assert conn.execute("SELECT 'abc' % 'abd'").fetchone() == (True,)


def test_enable_schema_not_writable_by_owner(shared: Shared, server_url: str) -> None:
    """The owner cannot plant objects where superuser-run extension scripts look them up."""
    http, owner, project = shared
    http.post(_url(project, "isn", "enable"), headers=owner["headers"])

    with (
        _as_owner(server_url, project["db_name"]) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CREATE FUNCTION extensions.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'")


def test_enable_idempotent(shared: Shared) -> None:
    http, owner, project = shared
    first = http.post(_url(project, "citext", "enable"), headers=owner["headers"])
    second = http.post(_url(project, "citext", "enable"), headers=owner["headers"])

    assert first.status_code == 200
    assert second.status_code == 200
    assert second.json()["installed_version"] == first.json()["installed_version"]


def test_enable_concurrent_calls(api: ThreadedServer, shared: Shared, server_url: str) -> None:
    _, owner, project = shared

    def enable(name: str) -> int:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            response = http.post(_url(project, name, "enable"), headers=owner["headers"])
            return response.status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(enable, ["ltree", "ltree", "unaccent", "ltree"]))

    assert statuses == [200, 200, 200, 200]
    assert _installed(server_url, project["db_name"], "ltree")
    assert _installed(server_url, project["db_name"], "unaccent")


def test_enable_cascade_then_disable_required(shared: Shared, server_url: str) -> None:
    http, owner, project = shared
    enabled = http.post(_url(project, "earthdistance", "enable"), headers=owner["headers"])

    assert enabled.status_code == 200, enabled.text
    assert _installed(server_url, project["db_name"], "cube")

    refused = http.post(_url(project, "cube", "disable"), headers=owner["headers"])

    assert refused.status_code == 409
    assert "extension earthdistance" in refused.json()["error"]["details"]["dependents"]
    assert _installed(server_url, project["db_name"], "cube")


def test_enable_with_secret_key(shared: Shared) -> None:
    http, owner, project = shared
    response = http.post(
        _url(project, "fuzzystrmatch", "enable"), headers={"apikey": owner["secret_key"]}
    )

    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is True


def test_enable_other_user_not_found(shared: Shared, server_url: str) -> None:
    http, _, project = shared
    stranger = signup_and_login(http)
    response = http.post(_url(project, "hstore", "enable"), headers=stranger["headers"])

    assert response.status_code == 404
    assert not _installed(server_url, project["db_name"], "hstore")


def test_disable_not_enabled(shared: Shared) -> None:
    http, owner, project = shared
    response = http.post(_url(project, "hstore", "disable"), headers=owner["headers"])

    assert response.status_code == 200
    assert response.json()["enabled"] is False


def test_disable_unused_extension(shared: Shared, server_url: str) -> None:
    http, owner, project = shared
    http.post(_url(project, "seg", "enable"), headers=owner["headers"])
    response = http.post(_url(project, "seg", "disable"), headers=owner["headers"])

    assert response.status_code == 200
    assert response.json()["enabled"] is False
    assert not _installed(server_url, project["db_name"], "seg")


def test_disable_never_allowed_forbidden(shared: Shared) -> None:
    http, owner, project = shared
    response = http.post(_url(project, "dblink", "disable"), headers=owner["headers"])

    assert response.status_code == 403


def test_disable_vector_with_column(shared: Shared, server_url: str) -> None:
    if not _server_has(server_url, "vector"):
        pytest.skip("this PostgreSQL server has no pgvector (Debian: postgresql-15-pgvector)")
    http, owner, project = shared
    enabled = http.post(_url(project, "vector", "enable"), headers=owner["headers"])
    assert enabled.status_code == 200, enabled.text
    with _as_owner(server_url, project["db_name"]) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
        conn.execute("INSERT INTO items VALUES (1, '[1,2,3]')")

    refused = http.post(_url(project, "vector", "disable"), headers=owner["headers"])

    assert refused.status_code == 409
    assert "column embedding of table items" in refused.json()["error"]["details"]["dependents"]
    assert _installed(server_url, project["db_name"], "vector")

    forced = http.post(
        _url(project, "vector", "disable"), params={"cascade": "true"}, headers=owner["headers"]
    )

    assert forced.status_code == 200, forced.text
    assert forced.json()["enabled"] is False
    with connect(server_url, project["db_name"]) as conn:
        columns = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'public.items'::regclass "
            "AND attnum > 0 AND NOT attisdropped"
        ).fetchall()
    assert [c[0] for c in columns] == ["id"]


def test_enable_postgis(shared: Shared, server_url: str) -> None:
    if not _server_has(server_url, "postgis"):
        pytest.skip("this PostgreSQL server has no PostGIS (Debian: postgresql-15-postgis-3)")
    http, owner, project = shared
    response = http.post(_url(project, "postgis", "enable"), headers=owner["headers"])

    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is True
    with _as_owner(server_url, project["db_name"]) as conn:
        conn.execute("CREATE TABLE places (id int PRIMARY KEY, location geometry(Point, 4326))")
        conn.execute("INSERT INTO places VALUES (1, ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326))")
        row = conn.execute("SELECT ST_AsText(location) FROM places").fetchone()
    assert row == ("POINT(13.4 52.5)",)


def test_enable_each_listed_extension(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], server_url: str
) -> None:
    """Every extension that zbaas promises installs, where the server has it."""
    promised = [
        "vector",
        "pg_trgm",
        "uuid-ossp",
        "hstore",
        "postgis",
        "citext",
        "pgcrypto",
        "unaccent",
        "ltree",
        "pg_stat_statements",
    ]
    present = [name for name in promised if _server_has(server_url, name)]
    for name in present:
        response = client.post(_url(project, name, "enable"), headers=user["headers"])
        assert response.status_code == 200, f"{name}: {response.text}"
        assert response.json()["enabled"] is True, name
        assert response.json()["schema"] == "extensions", name
