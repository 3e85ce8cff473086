from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import signup_and_login


@pytest.fixture
def team(client: httpx.Client, user: dict[str, Any]) -> dict[str, Any]:
    """``user`` owns an org that also has an admin and a member."""
    org_id = client.get("/orgs", headers=user["headers"]).json()[0]["id"]
    admin = signup_and_login(client)
    member = signup_and_login(client)
    for account, role in ((admin, "admin"), (member, "member")):
        response = client.post(
            f"/orgs/{org_id}/members",
            json={"email": account["email"], "role": role},
            headers=user["headers"],
        )
        assert response.status_code == 201, response.text
    org_header = {"X-Org-Id": org_id}
    return {
        "org_id": org_id,
        "owner": user,
        "admin": {**admin, "headers": {**admin["headers"], **org_header}},
        "member": {**member, "headers": {**member["headers"], **org_header}},
    }


def test_create_org_makes_caller_owner(client: httpx.Client, user: dict[str, Any]) -> None:
    response = client.post("/orgs", json={"name": "Second Org"}, headers=user["headers"])

    assert response.status_code == 201
    assert response.json()["role"] == "owner"
    assert len(client.get("/orgs", headers=user["headers"]).json()) == 2


def test_list_members_shows_roles(client: httpx.Client, team: dict[str, Any]) -> None:
    members = client.get(f"/orgs/{team['org_id']}/members", headers=team["owner"]["headers"]).json()

    assert sorted(m["role"] for m in members) == ["admin", "member", "owner"]


def test_member_cannot_add_members(client: httpx.Client, team: dict[str, Any]) -> None:
    outsider = signup_and_login(client)

    response = client.post(
        f"/orgs/{team['org_id']}/members",
        json={"email": outsider["email"], "role": "member"},
        headers=team["member"]["headers"],
    )

    assert response.status_code == 403


def test_add_member_unknown_email_is_404(client: httpx.Client, team: dict[str, Any]) -> None:
    response = client.post(
        f"/orgs/{team['org_id']}/members",
        json={"email": "nobody-here@example.com", "role": "member"},
        headers=team["owner"]["headers"],
    )

    assert response.status_code == 404


def test_add_member_twice_is_409(client: httpx.Client, team: dict[str, Any]) -> None:
    response = client.post(
        f"/orgs/{team['org_id']}/members",
        json={"email": team["member"]["email"], "role": "member"},
        headers=team["owner"]["headers"],
    )

    assert response.status_code == 409


def test_add_member_invalid_role_is_422(client: httpx.Client, team: dict[str, Any]) -> None:
    response = client.post(
        f"/orgs/{team['org_id']}/members",
        json={"email": team["member"]["email"], "role": "superuser"},
        headers=team["owner"]["headers"],
    )

    assert response.status_code == 422


def test_remove_last_owner_is_409(client: httpx.Client, team: dict[str, Any]) -> None:
    response = client.delete(
        f"/orgs/{team['org_id']}/members/{team['owner']['id']}",
        headers=team["admin"]["headers"],
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "last_owner"


def test_admin_removes_member(client: httpx.Client, team: dict[str, Any]) -> None:
    response = client.delete(
        f"/orgs/{team['org_id']}/members/{team['member']['id']}",
        headers=team["admin"]["headers"],
    )

    assert response.status_code == 204
    assert client.get("/projects", headers=team["member"]["headers"]).status_code == 404


def test_outsider_org_is_404(client: httpx.Client, team: dict[str, Any]) -> None:
    outsider = signup_and_login(client)

    members = client.get(f"/orgs/{team['org_id']}/members", headers=outsider["headers"])
    projects = client.get("/projects", headers={**outsider["headers"], "X-Org-Id": team["org_id"]})

    assert members.status_code == 404
    assert projects.status_code == 404


def test_member_cannot_delete_project_or_manage_keys(
    client: httpx.Client, team: dict[str, Any]
) -> None:
    created = client.post(
        "/projects",
        json={"name": "Team App", "slug": "team-app"},
        headers=team["member"]["headers"],
    )
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    key = client.post(
        f"/projects/{project_id}/keys", json={"name": "k"}, headers=team["owner"]["headers"]
    ).json()

    delete = client.delete(f"/projects/{project_id}", headers=team["member"]["headers"])
    create_key = client.post(
        f"/projects/{project_id}/keys", json={"name": "k2"}, headers=team["member"]["headers"]
    )
    revoke = client.delete(
        f"/projects/{project_id}/keys/{key['id']}", headers=team["member"]["headers"]
    )
    admin_delete = client.delete(f"/projects/{project_id}", headers=team["admin"]["headers"])

    assert delete.status_code == 403
    assert create_key.status_code == 403
    assert revoke.status_code == 403
    assert admin_delete.status_code == 204


def test_project_of_other_org_is_404(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    outsider = signup_and_login(client)

    for method, path in (
        ("GET", f"/projects/{project['id']}"),
        ("PATCH", f"/projects/{project['id']}"),
        ("DELETE", f"/projects/{project['id']}"),
        ("GET", f"/projects/{project['id']}/keys"),
    ):
        response = client.request(method, path, headers=outsider["headers"], json={})
        assert response.status_code == 404, (method, path)
