from __future__ import annotations

import httpx


def test_health_reports_ok(client: httpx.Client) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_unknown_path_uses_error_shape(client: httpx.Client) -> None:
    response = client.get("/no/such/path")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_openapi_documents_endpoints(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    for path in ("/auth/signup", "/projects", "/projects/{project_id}/keys", "/orgs"):
        assert path in paths


def test_request_id_echoed_when_plain(client: httpx.Client) -> None:
    response = client.get("/health", headers={"X-Request-Id": "abc-123"})

    assert response.headers["X-Request-Id"] == "abc-123"


def test_request_id_replaced_when_hostile(client: httpx.Client) -> None:
    response = client.get("/health", headers={"X-Request-Id": "x\tINFO forged line"})

    assert response.headers["X-Request-Id"] != "x\tINFO forged line"
    assert response.headers["X-Request-Id"].isalnum()
