"""End-user auth of a project, driven by the real supabase client and raw HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from supabase import Client, create_client
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from tests.conftest import ThreadedServer, connect, signup_and_login
from tests.restkit import PASSWORD, ProjectHandle, project_row, rest_headers, signup
from zbaas.config import Settings


@pytest.fixture(scope="module")
def handles(api: ThreadedServer) -> Iterator[tuple[ProjectHandle, ProjectHandle]]:
    """Two projects of one owner, shared by the module: project creation takes seconds."""
    with httpx.Client(base_url=api.url, timeout=60) as http:
        owner = signup_and_login(http)
        first, second = ProjectHandle(http, owner, "eu"), ProjectHandle(http, owner, "eu")
        yield first, second
        first.delete()
        second.delete()


@pytest.fixture
def handle(handles: tuple[ProjectHandle, ProjectHandle]) -> ProjectHandle:
    return handles[0]


@pytest.fixture
def other(handles: tuple[ProjectHandle, ProjectHandle]) -> ProjectHandle:
    return handles[1]


@pytest.fixture
def project(handle: ProjectHandle) -> dict[str, Any]:
    return handle.project


@pytest.fixture
def publishable_key(handle: ProjectHandle) -> str:
    return handle.publishable


@pytest.fixture
def supabase(api: Any, publishable_key: str) -> Client:
    return create_client(api.url, publishable_key)


def new_email() -> str:
    return f"end-{uuid.uuid4().hex[:10]}@example.com"


def test_signup_returns_session(supabase: Client) -> None:
    email = new_email()

    response = supabase.auth.sign_up({"email": email, "password": PASSWORD})

    assert response.session is not None
    assert response.session.token_type == "bearer"
    assert response.session.expires_in == 3600
    assert response.session.expires_at is not None
    assert response.session.refresh_token
    assert response.user is not None
    assert response.user.email == email
    assert response.user.role == "authenticated"
    assert response.user.aud == "authenticated"
    assert response.user.app_metadata["provider"] == "email"


def test_signup_token_claims_signed_with_project_secret(
    supabase: Client, project: dict[str, Any], server_url: str, settings: Settings
) -> None:
    email = new_email()
    session = supabase.auth.sign_up({"email": email, "password": PASSWORD}).session
    assert session is not None
    secret = project_row(server_url, settings, project["id"])["jwt_secret"]

    claims = jwt.decode(
        session.access_token, secret, algorithms=["HS256"], audience="authenticated"
    )

    assert claims["sub"] == session.user.id
    assert claims["role"] == "authenticated"
    assert claims["email"] == email
    assert claims["exp"] == session.expires_at


def test_signup_stores_argon2id_hash(
    supabase: Client, project: dict[str, Any], server_url: str
) -> None:
    email = new_email()
    supabase.auth.sign_up({"email": email, "password": PASSWORD})

    with connect(server_url, project["db_name"]) as conn:
        row = conn.execute(
            "SELECT encrypted_password FROM auth.users WHERE email = %s", (email,)
        ).fetchone()

    assert row is not None
    assert row[0].startswith("$argon2id$")
    assert PASSWORD not in row[0]


def test_signup_duplicate_email_rejected(supabase: Client) -> None:
    email = new_email()
    supabase.auth.sign_up({"email": email, "password": PASSWORD})

    with pytest.raises(AuthApiError) as caught:
        supabase.auth.sign_up({"email": email.upper(), "password": PASSWORD})

    assert caught.value.status == 422
    assert caught.value.code == "user_already_exists"


def test_signup_weak_password_rejected(supabase: Client) -> None:
    with pytest.raises(AuthWeakPasswordError) as caught:
        supabase.auth.sign_up({"email": new_email(), "password": "short"})

    assert caught.value.status == 422
    assert caught.value.reasons == ["length"]


def test_sign_in_with_password_returns_session(
    supabase: Client, api: Any, publishable_key: str
) -> None:
    email = new_email()
    supabase.auth.sign_up({"email": email, "password": PASSWORD})
    other = create_client(api.url, publishable_key)

    response = other.auth.sign_in_with_password({"email": email, "password": PASSWORD})

    assert response.session is not None
    assert response.user is not None
    assert response.user.email == email
    assert response.user.last_sign_in_at is not None


def test_sign_in_wrong_password_rejected(supabase: Client) -> None:
    email = new_email()
    supabase.auth.sign_up({"email": email, "password": PASSWORD})

    with pytest.raises(AuthApiError) as caught:
        supabase.auth.sign_in_with_password({"email": email, "password": "wrong password!"})

    assert caught.value.status == 400
    assert caught.value.code == "invalid_credentials"


def test_sign_in_unknown_email_same_error(supabase: Client) -> None:
    with pytest.raises(AuthApiError) as caught:
        supabase.auth.sign_in_with_password({"email": new_email(), "password": PASSWORD})

    assert caught.value.status == 400
    assert caught.value.message == "Invalid login credentials"


def test_refresh_session_rotates_tokens(supabase: Client) -> None:
    first = supabase.auth.sign_up({"email": new_email(), "password": PASSWORD}).session
    assert first is not None

    refreshed = supabase.auth.refresh_session()

    assert refreshed.session is not None
    assert refreshed.session.refresh_token != first.refresh_token
    assert refreshed.user is not None
    assert refreshed.user.id == first.user.id


def test_refresh_token_reuse_revokes_session(client: httpx.Client, publishable_key: str) -> None:
    session = signup(client, publishable_key)
    grant = "/auth/v1/token?grant_type=refresh_token"
    headers = {"apikey": publishable_key}
    spent = session["refresh_token"]
    successor = client.post(grant, json={"refresh_token": spent}, headers=headers).json()

    reuse = client.post(grant, json={"refresh_token": spent}, headers=headers)
    after = client.post(grant, json={"refresh_token": successor["refresh_token"]}, headers=headers)

    assert reuse.status_code == 400
    assert after.status_code == 400
    assert after.json()["error_code"] == "refresh_token_not_found"


def test_get_user_returns_signed_in_user(supabase: Client) -> None:
    email = new_email()
    supabase.auth.sign_up({"email": email, "password": PASSWORD})

    response = supabase.auth.get_user()

    assert response is not None
    assert response.user.email == email


def test_sign_out_ends_session(client: httpx.Client, publishable_key: str) -> None:
    session = signup(client, publishable_key)
    headers = rest_headers(publishable_key, session["access_token"])

    logout = client.post("/auth/v1/logout", headers=headers)
    user = client.get("/auth/v1/user", headers=headers)
    refresh = client.post(
        "/auth/v1/token?grant_type=refresh_token",
        json={"refresh_token": session["refresh_token"]},
        headers={"apikey": publishable_key},
    )

    assert logout.status_code == 204
    assert user.status_code == 401
    assert refresh.status_code == 400


def test_sign_out_via_client_clears_session(supabase: Client) -> None:
    supabase.auth.sign_up({"email": new_email(), "password": PASSWORD})

    supabase.auth.sign_out()

    assert supabase.auth.get_session() is None


def test_auth_missing_apikey_rejected(client: httpx.Client) -> None:
    response = client.post("/auth/v1/signup", json={"email": new_email(), "password": PASSWORD})

    assert response.status_code == 401
    assert response.json()["error_code"] == "no_api_key"


def test_auth_revoked_key_rejected(client: httpx.Client, handle: ProjectHandle) -> None:
    base = f"/projects/{handle.project['id']}/keys"
    created = client.post(
        base, json={"name": "revoked", "type": "publishable"}, headers=handle.owner["headers"]
    ).json()
    client.delete(f"{base}/{created['id']}", headers=handle.owner["headers"])

    response = client.post(
        "/auth/v1/signup",
        json={"email": new_email(), "password": PASSWORD},
        headers={"apikey": created["key"]},
    )

    assert response.status_code == 401
    assert response.json()["error_code"] == "invalid_api_key"


def test_users_belong_to_one_project(
    client: httpx.Client, publishable_key: str, other: ProjectHandle
) -> None:
    email = new_email()
    signup(client, publishable_key, email)

    response = client.post(
        "/auth/v1/token?grant_type=password",
        json={"email": email, "password": PASSWORD},
        headers={"apikey": other.publishable},
    )

    assert response.status_code == 400
    assert response.json()["error_code"] == "invalid_credentials"


def test_get_user_with_other_project_token_rejected(
    client: httpx.Client, publishable_key: str, other: ProjectHandle
) -> None:
    session = signup(client, publishable_key)

    response = client.get(
        "/auth/v1/user", headers=rest_headers(other.publishable, session["access_token"])
    )

    assert response.status_code == 401


def test_signup_unknown_field_rejected(client: httpx.Client, publishable_key: str) -> None:
    response = client.post(
        "/auth/v1/signup",
        json={"email": new_email(), "password": PASSWORD, "role": "service_role"},
        headers={"apikey": publishable_key},
    )

    assert response.status_code == 422
    assert response.json()["error_code"] == "validation_failed"


def test_signup_invalid_json_rejected(client: httpx.Client, publishable_key: str) -> None:
    response = client.post(
        "/auth/v1/signup",
        content=b"{not json",
        headers={"apikey": publishable_key, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["error_code"] == "bad_json"


def test_token_unknown_grant_type_rejected(client: httpx.Client, publishable_key: str) -> None:
    response = client.post(
        "/auth/v1/token?grant_type=magic", json={}, headers={"apikey": publishable_key}
    )

    assert response.status_code == 422
    assert response.json()["error_code"] == "validation_failed"
