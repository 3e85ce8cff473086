"""Hostile input to the data API: names, values and tokens crafted to break out of SQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from tests.conftest import ThreadedServer, connect, signup_and_login
from tests.restkit import (
    ITEMS_SETUP,
    TODOS_SETUP,
    ProjectHandle,
    project_row,
    rest_headers,
    run_as_owner,
    sign_token,
    signup,
)
from zbaas.config import Settings

CANARY_SETUP = "CREATE TABLE canary (id integer PRIMARY KEY); INSERT INTO canary VALUES (1);"


@dataclass
class Hostile:
    http: httpx.Client
    main: ProjectHandle
    other: ProjectHandle
    secret: str
    other_secret: str
    session: dict[str, Any]
    server_url: str

    def get(self, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, headers=rest_headers(key or self.main.secret), **kwargs)

    def canary_intact(self) -> bool:
        with connect(self.server_url, self.main.project["db_name"]) as conn:
            rows = conn.execute("SELECT id FROM canary").fetchall()
            items = conn.execute("SELECT count(*) FROM items").fetchone()
        return rows == [(1,)] and items == (5,)


@pytest.fixture(scope="module")
def hostile(api: ThreadedServer, server_url: str, settings: Settings) -> Iterator[Hostile]:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        owner = signup_and_login(http)
        main, other = ProjectHandle(http, owner, "hx"), ProjectHandle(http, owner, "hx")
        run_as_owner(server_url, settings, main.project, TODOS_SETUP + ITEMS_SETUP + CANARY_SETUP)
        secrets = [
            project_row(server_url, settings, p.project["id"])["jwt_secret"] for p in (main, other)
        ]
        session = signup(http, main.publishable)
        yield Hostile(http, main, other, secrets[0], secrets[1], session, server_url)
        main.delete()
        other.delete()


INJECTIONS = [
    "items; DROP TABLE canary",
    'items"; DROP TABLE canary; --',
    "items' OR '1'='1",
    "items--",
    "items/**/",
    '"items"',
    "public.items",
    "pg_catalog.pg_authid",
]


@pytest.mark.parametrize("name", INJECTIONS)
def test_hostile_table_name_is_404(hostile: Hostile, name: str) -> None:
    response = hostile.get(f"/rest/v1/{quote(name, safe='')}")

    assert response.status_code == 404
    assert hostile.canary_intact()


@pytest.mark.parametrize("name", INJECTIONS)
def test_hostile_table_name_on_delete_changes_nothing(hostile: Hostile, name: str) -> None:
    response = hostile.http.delete(
        f"/rest/v1/{quote(name, safe='')}?id=eq.1", headers=rest_headers(hostile.main.secret)
    )

    assert response.status_code == 404
    assert hostile.canary_intact()


@pytest.mark.parametrize(
    "select",
    [
        "id,name;DROP TABLE canary",
        'id,"name""; DROP TABLE canary; --"',
        "id,(SELECT 1)",
        "id::text",
        "id--",
        "id,name/*",
        "canary(*)",
        "",
    ],
)
def test_hostile_select_is_400(hostile: Hostile, select: str) -> None:
    response = hostile.get("/rest/v1/items", params={"select": select})

    assert response.status_code == 400
    assert response.json()["code"] in ("42703", "PGRST100")
    assert hostile.canary_intact()


@pytest.mark.parametrize(
    "column", ["id;DROP TABLE canary", 'id"--', "id) OR (1=1", "name/**/", "1"]
)
def test_hostile_filter_column_is_400(hostile: Hostile, column: str) -> None:
    response = hostile.get("/rest/v1/items", params={column: "eq.1"})

    assert response.status_code == 400
    assert hostile.canary_intact()


@pytest.mark.parametrize(
    "value",
    [
        "eq.'; DROP TABLE canary; --",
        "eq.apple' OR '1'='1",
        'eq.apple"; DROP TABLE canary; --',
        "eq.apple/*",
        "like.%') OR 1=1 --",
        'in.("\'); DROP TABLE canary; --",x)',
    ],
)
def test_hostile_filter_value_matches_nothing(hostile: Hostile, value: str) -> None:
    response = hostile.get("/rest/v1/items", params={"name": value})

    assert response.status_code == 200
    assert response.json() == []
    assert hostile.canary_intact()


def test_hostile_in_list_unbalanced_is_400(hostile: Hostile) -> None:
    response = hostile.get(
        "/rest/v1/items", params={"name": "in.(apple,'); DROP TABLE canary; --)"}
    )

    assert response.status_code == 400
    assert hostile.canary_intact()


def test_hostile_filter_value_typed_column_is_400(hostile: Hostile) -> None:
    response = hostile.get("/rest/v1/items", params={"id": "eq.1 OR 1=1"})

    assert response.status_code == 400
    assert response.json()["code"] == "22P02"


@pytest.mark.parametrize(
    "value",
    [
        "(id.eq.1;DROP TABLE canary)",
        "(id.eq.1,name.eq.x) OR (1=1)",
        "(id.gt.1))",
        '(name.eq."unterminated)',
        "(and(and(and(and(and(and(and(and(and(and(and(id.eq.1)))))))))))))",
        "(id.raw.1)",
    ],
)
def test_hostile_or_condition_is_400(hostile: Hostile, value: str) -> None:
    response = hostile.get("/rest/v1/items", params={"or": value})

    assert response.status_code == 400
    assert hostile.canary_intact()


@pytest.mark.parametrize(
    "order",
    [
        "id;DROP TABLE canary",
        "id.desc;--",
        "id.desc,(SELECT 1)",
        "id.sideways",
        'id".desc',
        "random()",
    ],
)
def test_hostile_order_is_400(hostile: Hostile, order: str) -> None:
    response = hostile.get("/rest/v1/items", params={"order": order})

    assert response.status_code == 400
    assert hostile.canary_intact()


@pytest.mark.parametrize("limit", ["1;DROP TABLE canary", "-1", "1 OR 1=1", "ALL", "1e3"])
def test_hostile_limit_is_400(hostile: Hostile, limit: str) -> None:
    response = hostile.get("/rest/v1/items", params={"limit": limit})

    assert response.status_code == 400
    assert response.json()["code"] == "PGRST100"


def test_hostile_body_column_is_400(hostile: Hostile) -> None:
    response = hostile.http.post(
        "/rest/v1/items",
        json={"id": 50, "name": "x", "name); DROP TABLE canary; --": 1},
        headers=rest_headers(hostile.main.secret),
    )

    assert response.status_code == 400
    assert response.json()["code"] == "PGRST204"
    assert hostile.canary_intact()


def test_hostile_body_value_stored_verbatim(hostile: Hostile) -> None:
    text = "'); DROP TABLE canary; -- \" /* */"
    headers = {**rest_headers(hostile.main.secret), "Prefer": "return=representation"}

    created = hostile.http.post("/rest/v1/items", json={"id": 60, "name": text}, headers=headers)
    hostile.http.delete("/rest/v1/items?id=eq.60", headers=headers)

    assert created.status_code == 201
    assert created.json()[0]["name"] == text
    assert hostile.canary_intact()


def test_hostile_on_conflict_column_is_400(hostile: Hostile) -> None:
    response = hostile.http.post(
        "/rest/v1/items",
        params={"on_conflict": "id) DO NOTHING; DROP TABLE canary; --"},
        json={"id": 1, "name": "x"},
        headers={**rest_headers(hostile.main.secret), "Prefer": "resolution=merge-duplicates"},
    )

    assert response.status_code == 400
    assert hostile.canary_intact()


@pytest.mark.parametrize(
    "function", ["add; DROP TABLE canary", "pg_sleep", "now()", 'x"--', "set_config"]
)
def test_hostile_function_name_is_404(hostile: Hostile, function: str) -> None:
    response = hostile.http.post(
        f"/rest/v1/rpc/{quote(function, safe='')}",
        json={},
        headers=rest_headers(hostile.main.secret),
    )

    assert response.status_code == 404
    assert hostile.canary_intact()


def test_hostile_body_not_json_is_400(hostile: Hostile) -> None:
    response = hostile.http.post(
        "/rest/v1/items",
        content=b"{'id': 1",
        headers={**rest_headers(hostile.main.secret), "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "PGRST102"


def test_hostile_huge_body_is_413(hostile: Hostile, settings: Settings) -> None:
    body = b'[{"id": 1, "name": "' + b"x" * (settings.max_body_bytes + 1) + b'"}]'

    response = hostile.http.post(
        "/rest/v1/items",
        content=body,
        headers={**rest_headers(hostile.main.secret), "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert hostile.canary_intact()


def test_concurrent_inserts_all_land(hostile: Hostile) -> None:
    token = hostile.session["access_token"]
    headers = rest_headers(hostile.main.publishable, token)
    marker = f"conc-{uuid.uuid4().hex[:8]}"

    def insert(index: int) -> int:
        with httpx.Client(base_url=str(hostile.http.base_url), timeout=60) as http:
            return http.post(
                "/rest/v1/todos", json={"title": f"{marker}-{index}"}, headers=headers
            ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(insert, range(24)))
    listed = hostile.http.get(
        "/rest/v1/todos", params={"title": f"like.{marker}*"}, headers=headers
    )

    assert statuses == [201] * 24
    assert len(listed.json()) == 24


# --- tokens ----------------------------------------------------------------------


def user_get(hostile: Hostile, token: str) -> httpx.Response:
    return hostile.http.get("/rest/v1/todos", headers=rest_headers(hostile.main.publishable, token))


def test_jwt_expired_is_401(hostile: Hostile) -> None:
    token = sign_token(
        hostile.secret, {"exp": int(time.time()) - 60, "iat": int(time.time()) - 120}
    )

    response = user_get(hostile, token)

    assert response.status_code == 401
    assert response.json()["code"] == "PGRST303"


def test_jwt_wrong_signature_is_401(hostile: Hostile) -> None:
    token = sign_token("not the project secret at all, just some text", {})

    response = user_get(hostile, token)

    assert response.status_code == 401
    assert response.json()["code"] == "PGRST301"


def test_jwt_of_other_project_is_401(hostile: Hostile) -> None:
    token = sign_token(hostile.other_secret, {})

    response = user_get(hostile, token)

    assert response.status_code == 401


def test_jwt_tampered_payload_is_401(hostile: Hostile) -> None:
    header, _, signature = hostile.session["access_token"].split(".")
    forged = jwt.encode({"sub": str(uuid.uuid4()), "role": "authenticated"}, "x" * 32).split(".")[1]

    response = user_get(hostile, f"{header}.{forged}.{signature}")

    assert response.status_code == 401


def test_jwt_alg_none_is_401(hostile: Hostile) -> None:
    token = jwt.encode(
        {
            "sub": str(uuid.uuid4()),
            "role": "authenticated",
            "aud": "authenticated",
            "exp": int(time.time()) + 600,
        },
        key=None,
        algorithm="none",
    )

    response = user_get(hostile, token)

    assert response.status_code == 401


def test_jwt_service_role_claim_is_401(hostile: Hostile) -> None:
    token = sign_token(hostile.secret, {"role": "service_role"})

    response = user_get(hostile, token)

    assert response.status_code == 401


def test_jwt_postgres_role_claim_is_401(hostile: Hostile) -> None:
    token = sign_token(hostile.secret, {"role": "postgres"})

    response = user_get(hostile, token)

    assert response.status_code == 401


def test_jwt_garbage_is_401(hostile: Hostile) -> None:
    response = user_get(hostile, "'; DROP TABLE canary; --")

    assert response.status_code == 401
    assert hostile.canary_intact()


def test_authorization_other_key_is_401(hostile: Hostile) -> None:
    response = hostile.http.get(
        "/rest/v1/items",
        headers={
            "apikey": hostile.main.publishable,
            "Authorization": f"Bearer {hostile.main.secret}",
        },
    )

    assert response.status_code == 401


def test_malformed_apikey_is_401(hostile: Hostile) -> None:
    response = hostile.http.get("/rest/v1/items", headers={"apikey": "zmesh_pk_' OR 1=1 --"})

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"
