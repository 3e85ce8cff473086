from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import connect, free_port, signup_and_login
from zbaas.config import Settings
from zbaas.platform.security import hash_token

KEY_PATTERN = re.compile(r"^zmesh_(pk|sk)_[0-9A-Za-z]{49}$")


def _create_key(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], **body: Any
) -> httpx.Response:
    return client.post(
        f"/projects/{project['id']}/keys", json={"name": "k", **body}, headers=user["headers"]
    )


def test_create_key_defaults_to_publishable(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    response = _create_key(client, user, project)

    assert response.status_code == 201
    assert response.json()["type"] == "publishable"
    assert response.json()["key"].startswith("zmesh_pk_")
    assert KEY_PATTERN.match(response.json()["key"])


def test_create_secret_key_format(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    key = _create_key(client, user, project, type="secret").json()["key"]

    assert key.startswith("zmesh_sk_")
    assert KEY_PATTERN.match(key)


def test_create_key_invalid_type_is_422(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    assert _create_key(client, user, project, type="admin").status_code == 422


def test_list_keys_never_shows_key(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    plain = _create_key(client, user, project, type="secret").json()["key"]

    listed = client.get(f"/projects/{project['id']}/keys", headers=user["headers"])

    assert listed.status_code == 200
    assert set(listed.json()[0]) == {"id", "name", "type", "prefix", "created_at", "last_used_at"}
    assert plain not in listed.text
    assert plain.startswith(listed.json()[0]["prefix"])


def test_only_hash_and_prefix_stored(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    server_url: str,
    settings: Settings,
) -> None:
    created = _create_key(client, user, project, type="secret").json()

    with connect(server_url, settings.control_database) as conn:
        row = conn.execute(
            "SELECT key_hash, prefix, row_to_json(k)::text FROM api_keys k WHERE id = %s",
            (created["id"],),
        ).fetchone()

    assert row is not None
    assert bytes(row[0]) == hash_token(created["key"])
    assert len(row[1]) < 20
    assert created["key"] not in row[2]


def test_secret_key_authenticates_its_project(
    client: httpx.Client, project: dict[str, Any], secret_key: str
) -> None:
    by_header = client.get(f"/projects/{project['id']}", headers={"apikey": secret_key})
    by_bearer = client.get(
        f"/projects/{project['id']}", headers={"Authorization": f"Bearer {secret_key}"}
    )

    assert by_header.status_code == 200
    assert by_bearer.status_code == 200


def test_key_records_last_use(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], secret_key: str
) -> None:
    client.get(f"/projects/{project['id']}", headers={"apikey": secret_key})

    listed = client.get(f"/projects/{project['id']}/keys", headers=user["headers"]).json()

    assert listed[0]["last_used_at"] is not None


def test_key_of_other_project_is_404(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], secret_key: str
) -> None:
    other = client.post(
        "/projects", json={"name": "Other", "slug": "other-app"}, headers=user["headers"]
    ).json()
    try:
        response = client.get(f"/projects/{other['id']}", headers={"apikey": secret_key})
        assert response.status_code == 404
    finally:
        client.delete(f"/projects/{other['id']}", headers=user["headers"])


def test_publishable_key_cannot_manage_project(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    key = _create_key(client, user, project).json()["key"]

    response = client.get(f"/projects/{project['id']}", headers={"apikey": key})

    assert response.status_code == 403


def test_secret_key_cannot_mint_keys(
    client: httpx.Client, project: dict[str, Any], secret_key: str
) -> None:
    response = client.post(
        f"/projects/{project['id']}/keys", json={"name": "x"}, headers={"apikey": secret_key}
    )

    assert response.status_code == 403


@pytest.mark.parametrize(
    "transform",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),
        lambda k: k[:20],
        lambda k: k.replace("zmesh_sk_", "zmesh_xx_"),
        lambda k: k + "'; DROP TABLE api_keys; --",
    ],
)
def test_malformed_key_is_401(
    client: httpx.Client, project: dict[str, Any], secret_key: str, transform: Any
) -> None:
    response = client.get(f"/projects/{project['id']}", headers={"apikey": transform(secret_key)})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_revoke_unknown_key_is_404(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    response = client.delete(
        f"/projects/{project['id']}/keys/00000000-0000-0000-0000-000000000000",
        headers=user["headers"],
    )

    assert response.status_code == 404


@pytest.fixture
def second_server(settings: Settings, api: Any) -> Iterator[str]:
    """Another ``zbaas serve`` process on the same control database and secret."""
    port = free_port()
    env = {
        **os.environ,
        "ZBAAS_DATABASE_URL": settings.database_url or "",
        "ZBAAS_CONTROL_DATABASE": settings.control_database,
        "ZBAAS_SECRET_KEY": settings.secret_key or "",
        "ZBAAS_DATA_DIR": str(settings.data_dir),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zbaas.cli.main",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"second server did not start: {process.stderr.read()!r}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_revoked_key_fails_on_every_server(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    secret_key: str,
    second_server: str,
) -> None:
    path = f"/projects/{project['id']}"
    key_id = client.get(f"{path}/keys", headers=user["headers"]).json()[0]["id"]
    assert httpx.get(second_server + path, headers={"apikey": secret_key}).status_code == 200

    revoke = client.delete(f"{path}/keys/{key_id}", headers=user["headers"])

    assert revoke.status_code == 204
    assert client.get(path, headers={"apikey": secret_key}).status_code == 401
    assert httpx.get(second_server + path, headers={"apikey": secret_key}).status_code == 401


def test_platform_token_of_outsider_cannot_list_keys(
    client: httpx.Client, project: dict[str, Any]
) -> None:
    outsider = signup_and_login(client)

    response = client.get(f"/projects/{project['id']}/keys", headers=outsider["headers"])

    assert response.status_code == 404
