from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from zbaas.config import Settings


def test_validation_error_uses_error_shape(client: httpx.Client, user: dict[str, Any]) -> None:
    response = client.post("/projects", json={"slug": "x"}, headers=user["headers"])

    body = response.json()
    assert response.status_code == 422
    assert set(body) == {"error"}
    assert body["error"]["code"] == "validation_failed"
    assert body["error"]["details"][0]["field"] == "name"


def test_malformed_json_is_422(client: httpx.Client, user: dict[str, Any]) -> None:
    response = client.post(
        "/projects",
        content=b'{"name": "x", "slug": ',
        headers={**user["headers"], "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"


def test_huge_body_is_413(client: httpx.Client, user: dict[str, Any], settings: Settings) -> None:
    padding = "x" * (settings.max_body_bytes + 1)

    response = client.post(
        "/projects",
        json={"name": "Big", "slug": "big", "description": padding},
        headers=user["headers"],
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_chunked_huge_body_is_413(
    client: httpx.Client, user: dict[str, Any], settings: Settings
) -> None:
    def chunks() -> Any:
        yield b'{"name": "Big", "slug": "big", "description": "'
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = client.post(
        "/projects",
        content=chunks(),
        headers={**user["headers"], "Content-Type": "application/json"},
    )

    assert response.status_code == 413


def test_invalid_project_id_is_4xx(client: httpx.Client, user: dict[str, Any]) -> None:
    response = client.get("/projects/1;DROP TABLE projects", headers=user["headers"])

    assert response.status_code in (404, 422)
    assert "error" in response.json()


def test_concurrent_same_slug_creates_one(client: httpx.Client, user: dict[str, Any]) -> None:
    slug = f"race-{uuid.uuid4().hex[:8]}"

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            return own.post(
                "/projects", json={"name": "Race", "slug": slug}, headers=user["headers"]
            )

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(create, range(4)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409]
    created = next(r for r in responses if r.status_code == 201).json()
    client.delete(f"/projects/{created['id']}", headers=user["headers"])


def test_openapi_documents_models(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()

    create = spec["paths"]["/projects"]["post"]
    assert "requestBody" in create
    assert "201" in create["responses"]
    assert "ProjectResponse" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200
