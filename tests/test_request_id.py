from __future__ import annotations

import re

import httpx


def test_request_id_echoes_caller_value(client: httpx.Client) -> None:
    response = client.get("/health", headers={"X-Request-Id": "trace-42"})

    assert response.headers["x-request-id"] == "trace-42"


def test_request_id_generated_when_missing(client: httpx.Client) -> None:
    response = client.get("/health")

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_request_id_on_error_response(client: httpx.Client) -> None:
    response = client.get("/no-such-endpoint", headers={"X-Request-Id": "trace-43"})

    assert response.status_code == 404
    assert response.headers["x-request-id"] == "trace-43"
