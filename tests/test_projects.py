from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import connect
from zbaas.config import Settings


def _slug() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def _zbaas_roles(server_url: str, settings: Settings) -> set[str]:
    """Roles whose comment ties them to this test run's control database."""
    with connect(server_url, "postgres") as conn:
        rows = conn.execute(
            "SELECT r.rolname FROM pg_roles r JOIN pg_shdescription d ON d.objoid = r.oid "
            "AND d.classoid = 'pg_authid'::regclass WHERE d.description LIKE %s",
            (f"%(control database {settings.control_database})",),
        ).fetchall()
    return {r[0] for r in rows}


def _database_exists(server_url: str, db_name: str) -> bool:
    with connect(server_url, "postgres") as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,)).fetchone()
            is not None
        )


def test_create_project_answers_spec_fields(project: dict[str, Any]) -> None:
    assert set(project) >= {"id", "name", "slug", "description", "db_name", "status", "created_at"}
    assert project["status"] == "active"
    assert project["db_name"].endswith("_" + project["slug"].replace("-", "_"))
    assert project["db_name"].startswith("zbaas_")


def test_create_project_provisions_database(project: dict[str, Any], server_url: str) -> None:
    with connect(server_url, project["db_name"]) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        functions = {
            r[0]
            for r in conn.execute(
                "SELECT proname FROM pg_proc WHERE pronamespace = 'auth'::regnamespace"
            ).fetchall()
        }

    assert {"auth", "zbaas_meta", "public"} <= schemas
    assert {"uid", "role", "jwt"} <= functions


def test_get_list_and_by_slug(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    headers = user["headers"]

    one = client.get(f"/projects/{project['id']}", headers=headers)
    listed = client.get("/projects", headers=headers)
    by_slug = client.get(f"/projects/by-slug/{project['slug']}", headers=headers)

    assert one.json() == project
    assert [p["id"] for p in listed.json()] == [project["id"]]
    assert by_slug.json()["id"] == project["id"]


def test_by_slug_unknown_is_404(client: httpx.Client, user: dict[str, Any]) -> None:
    response = client.get("/projects/by-slug/no-such-slug", headers=user["headers"])

    assert response.status_code == 404


def test_patch_updates_name_and_description(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    response = client.patch(
        f"/projects/{project['id']}",
        json={"name": "Updated Name", "description": "New desc"},
        headers=user["headers"],
    )

    assert response.status_code == 200
    assert response.json()["name"] == "Updated Name"
    assert response.json()["description"] == "New desc"
    assert response.json()["slug"] == project["slug"]


def test_patch_slug_is_422(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    response = client.patch(
        f"/projects/{project['id']}", json={"slug": "other"}, headers=user["headers"]
    )

    assert response.status_code == 422


def test_delete_project_leaves_nothing(
    client: httpx.Client, user: dict[str, Any], server_url: str, settings: Settings
) -> None:
    created = client.post(
        "/projects", json={"name": "Doomed", "slug": _slug()}, headers=user["headers"]
    ).json()
    key = client.post(
        f"/projects/{created['id']}/keys",
        json={"name": "k", "type": "secret"},
        headers=user["headers"],
    ).json()
    storage = settings.data_dir / "storage" / created["id"]
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "file.txt").write_text("data")
    roles_before = _zbaas_roles(server_url, settings)
    with connect(server_url, created["db_name"]) as open_conn:
        open_conn.execute("SELECT 1")

        response = client.delete(f"/projects/{created['id']}", headers=user["headers"])

    assert response.status_code == 204
    assert not _database_exists(server_url, created["db_name"])
    assert len(roles_before - _zbaas_roles(server_url, settings)) == 2
    assert not storage.exists()
    with connect(server_url, settings.control_database) as conn:
        keys = conn.execute("SELECT count(*) FROM api_keys WHERE id = %s", (key["id"],)).fetchone()
        rows = conn.execute(
            "SELECT count(*) FROM projects WHERE id = %s", (created["id"],)
        ).fetchone()
    assert keys == (0,)
    assert rows == (0,)
    second = client.delete(f"/projects/{created['id']}", headers=user["headers"])
    assert second.status_code == 404
    assert client.get(f"/projects/{created['id']}", headers=user["headers"]).status_code == 404


@pytest.mark.parametrize(
    "slug",
    [
        "",
        "My-App",
        "my_app",
        "-app",
        "app-",
        "my--app",
        "my app",
        "app;drop",
        "app'--",
        'app"',
        "аpp",
        "app\u200b",
        "app.com",
        "app/x",
    ],
)
def test_create_rejects_invalid_slug(client: httpx.Client, user: dict[str, Any], slug: str) -> None:
    response = client.post("/projects", json={"name": "X", "slug": slug}, headers=user["headers"])

    assert response.status_code == 422, slug
    assert "error" in response.json()


def test_create_rejects_too_long_slug(client: httpx.Client, user: dict[str, Any]) -> None:
    org_id = client.get("/orgs", headers=user["headers"]).json()[0]["id"]
    limit = 63 - len("zbaas_") - len(org_id) - 1

    too_long = client.post(
        "/projects", json={"name": "X", "slug": "a" * (limit + 1)}, headers=user["headers"]
    )
    fits = client.post(
        "/projects", json={"name": "X", "slug": "a" * limit}, headers=user["headers"]
    )

    assert too_long.status_code == 422
    assert str(limit) in too_long.json()["error"]["message"]
    assert fits.status_code == 201
    assert len(fits.json()["db_name"].encode()) == 63
    client.delete(f"/projects/{fits.json()['id']}", headers=user["headers"])


@pytest.mark.parametrize("name", ["", " ", "x" * 101, "tab\there", "bidi\u202eoverride"])
def test_create_rejects_invalid_name(client: httpx.Client, user: dict[str, Any], name: str) -> None:
    response = client.post(
        "/projects", json={"name": name, "slug": _slug()}, headers=user["headers"]
    )

    assert response.status_code == 422


def test_create_same_slug_is_409(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    response = client.post(
        "/projects", json={"name": "Again", "slug": project["slug"]}, headers=user["headers"]
    )

    assert response.status_code == 409


def test_failed_provisioning_leaves_nothing(
    client: httpx.Client, user: dict[str, Any], server_url: str, settings: Settings
) -> None:
    """CREATE DATABASE fails for real because a database of that name already exists."""
    org_id = client.get("/orgs", headers=user["headers"]).json()[0]["id"]
    slug = _slug()
    db_name = f"zbaas_{org_id}_{slug.replace('-', '_')}"
    roles_before = _zbaas_roles(server_url, settings)
    with connect(server_url, "postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    try:
        response = client.post(
            "/projects", json={"name": "Clash", "slug": slug}, headers=user["headers"]
        )

        assert response.status_code == 409
        assert db_name in response.json()["error"]["message"]
        assert _zbaas_roles(server_url, settings) == roles_before
        with connect(server_url, settings.control_database) as conn:
            rows = conn.execute(
                "SELECT count(*) FROM projects WHERE db_name = %s", (db_name,)
            ).fetchone()
        assert rows == (0,)
        # The database that was there before is not ours to drop.
        assert _database_exists(server_url, db_name)
    finally:
        with connect(server_url, "postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(db_name)))


def test_failed_last_step_drops_database_and_roles(
    client: httpx.Client, user: dict[str, Any], server_url: str, settings: Settings
) -> None:
    """The last step, marking the row active, fails for real after the database exists.

    A trigger in this run's own control database rejects that update for one slug,
    so nothing outside the run is touched.
    """
    org_id = client.get("/orgs", headers=user["headers"]).json()[0]["id"]
    slug = _slug()
    db_name = f"zbaas_{org_id}_{slug.replace('-', '_')}"
    trigger = f"fail_{slug.replace('-', '_')}"
    roles_before = _zbaas_roles(server_url, settings)
    with connect(server_url, settings.control_database) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.status = 'active' THEN RAISE EXCEPTION 'injected failure'; END IF; "
                "RETURN NEW; END $$; "
                "CREATE TRIGGER {fn} BEFORE UPDATE ON projects FOR EACH ROW "
                "WHEN (NEW.slug = {slug}) EXECUTE FUNCTION {fn}()"
            ).format(fn=sql.Identifier(trigger), slug=sql.Literal(slug))
        )
    try:
        response = client.post(
            "/projects", json={"name": "Broken", "slug": slug}, headers=user["headers"]
        )
    finally:
        with connect(server_url, settings.control_database) as conn:
            conn.execute(
                sql.SQL("DROP TRIGGER {fn} ON projects; DROP FUNCTION {fn}()").format(
                    fn=sql.Identifier(trigger)
                )
            )

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "injected" not in response.text
    assert _zbaas_roles(server_url, settings) == roles_before
    assert not _database_exists(server_url, db_name)
    with connect(server_url, settings.control_database) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM projects WHERE db_name = %s", (db_name,)
        ).fetchone()
    assert rows == (0,)


def test_owner_role_is_isolated(
    client: httpx.Client, user: dict[str, Any], server_url: str, settings: Settings
) -> None:
    from zbaas.platform.security import SecretBox

    created = [
        client.post(
            "/projects", json={"name": "Iso", "slug": _slug()}, headers=user["headers"]
        ).json()
        for _ in range(2)
    ]
    a, b = created
    with connect(server_url, settings.control_database) as conn:
        owner_role, encrypted = conn.execute(
            "SELECT owner_role, owner_password FROM projects WHERE id = %s", (a["id"],)
        ).fetchone()
    password = SecretBox(settings.secret_key or "").decrypt(encrypted)
    try:
        with connect(server_url, a["db_name"], user=owner_role, password=password) as own:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                own.execute("CREATE ROLE sneaky")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                own.execute("CREATE DATABASE sneaky")
            own.execute("CREATE TABLE mine (id int)")

        for other in (b["db_name"], settings.control_database):
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                connect(server_url, other, user=owner_role, password=password)
    finally:
        for item in created:
            client.delete(f"/projects/{item['id']}", headers=user["headers"])


def test_project_gets_default_bucket(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    response = client.get(f"/projects/{project['id']}/storage/buckets", headers=user["headers"])

    assert response.status_code == 200
    assert [bucket["id"] for bucket in response.json()] == ["default"]
