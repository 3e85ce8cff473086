from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import connect, signup_and_login


def _email() -> str:
    return f"auth-{uuid.uuid4().hex[:12]}@example.com"


def test_signup_creates_owned_organization(client: httpx.Client, user: dict[str, Any]) -> None:
    orgs = client.get("/orgs", headers=user["headers"]).json()

    assert len(orgs) == 1
    assert orgs[0]["role"] == "owner"


def test_login_returns_bearer_tokens(client: httpx.Client, user: dict[str, Any]) -> None:
    tokens = user["tokens"]

    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] > 0
    assert tokens["access_token"] and tokens["refresh_token"]


def test_me_returns_user(client: httpx.Client, user: dict[str, Any]) -> None:
    me = client.get("/auth/me", headers=user["headers"]).json()

    assert me["email"] == user["email"]
    assert "password_hash" not in me


def test_password_stored_as_argon2id(
    client: httpx.Client, user: dict[str, Any], server_url: str, settings: Any
) -> None:
    with connect(server_url, settings.control_database) as conn:
        stored = conn.execute(
            "SELECT password_hash FROM users WHERE id = %s", (user["id"],)
        ).fetchone()

    assert stored is not None
    assert stored[0].startswith("$argon2id$")


def test_signup_rejects_duplicate_email_any_case(
    client: httpx.Client, user: dict[str, Any]
) -> None:
    response = client.post(
        "/auth/signup",
        json={"email": user["email"].upper(), "password": "another password", "full_name": "X"},
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_taken"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": "long enough", "full_name": "A"},
        {"email": "short@example.com", "password": "1234567", "full_name": "A"},
        {"email": "blank@example.com", "password": "long enough", "full_name": ""},
        {"email": "blank@example.com", "password": "long enough", "full_name": "   "},
        {"email": "zw@example.com", "password": "long enough", "full_name": "A\u200bB"},
        {"email": "extra@example.com", "password": "long enough", "full_name": "A", "x": 1},
    ],
)
def test_signup_rejects_invalid_input(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post("/auth/signup", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"


def test_login_wrong_password_same_as_unknown_email(
    client: httpx.Client, user: dict[str, Any]
) -> None:
    wrong = client.post("/auth/login", json={"email": user["email"], "password": "wrong pass"})
    unknown = client.post("/auth/login", json={"email": _email(), "password": "wrong pass"})

    assert wrong.status_code == 401
    assert unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_refresh_rotates_token(client: httpx.Client, user: dict[str, Any]) -> None:
    first = user["tokens"]["refresh_token"]

    rotated = client.post("/auth/refresh", json={"refresh_token": first})

    assert rotated.status_code == 200
    assert rotated.json()["refresh_token"] != first
    me = client.get(
        "/auth/me", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"}
    )
    assert me.status_code == 200


def test_refresh_reuse_revokes_chain(client: httpx.Client, user: dict[str, Any]) -> None:
    first = user["tokens"]["refresh_token"]
    second = client.post("/auth/refresh", json={"refresh_token": first}).json()

    reuse = client.post("/auth/refresh", json={"refresh_token": first})
    successor = client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    access = client.get("/auth/me", headers={"Authorization": f"Bearer {second['access_token']}"})

    assert reuse.status_code == 401
    assert successor.status_code == 401
    assert access.status_code == 401


def test_logout_ends_session(client: httpx.Client) -> None:
    account = signup_and_login(client)

    response = client.post(
        "/auth/logout",
        headers=account["headers"],
        json={"refresh_token": account["tokens"]["refresh_token"]},
    )

    assert response.status_code == 204
    assert client.get("/auth/me", headers=account["headers"]).status_code == 401
    refresh = client.post(
        "/auth/refresh", json={"refresh_token": account["tokens"]["refresh_token"]}
    )
    assert refresh.status_code == 401


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer", "Bearer a.b.c"],
)
def test_me_rejects_bad_credentials(client: httpx.Client, authorization: str) -> None:
    response = client.get("/auth/me", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert set(response.json()) == {"error"}


def test_me_requires_credentials(client: httpx.Client) -> None:
    assert client.get("/auth/me").status_code == 401
