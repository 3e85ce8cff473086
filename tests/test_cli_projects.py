"""``zbaas projects`` and project resolution by slug, id, ``--project`` and ``zbaas.toml``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.clikit import Cli, create_project, delete_project, logged_in_cli, unique_slug
from tests.conftest import ThreadedServer


@pytest.fixture(scope="module")
def session(
    api: ThreadedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cli, dict[str, Any], dict[str, Any]]]:
    cli, user = logged_in_cli(api, tmp_path_factory.mktemp("cli-projects"))
    project = create_project(cli)
    yield cli, user, project
    delete_project(api, user, project["id"])


Session = tuple[Cli, dict[str, Any], dict[str, Any]]


def test_create_makes_the_slug_from_the_name(session: Session, api: ThreadedServer) -> None:
    cli, user, _ = session
    name = f"Shop {unique_slug('x').upper()}"

    result = cli.ok("projects", "create", name)
    created = cli.ok("projects", "get", name.lower().replace(" ", "-"), "--json").json()
    delete_project(api, user, created["id"])

    assert f"slug         {name.lower().replace(' ', '-')}" in result.stdout
    assert created["name"] == name
    assert created["status"] == "active"


def test_create_with_invalid_slug_fails(session: Session) -> None:
    cli, _, _ = session

    result = cli.fails("projects", "create", "Bad", "--slug", "Bad Slug;")

    assert "error: invalid slug 'Bad Slug;'" in result.stderr
    assert "(invalid_input)" in result.stderr


def test_create_with_taken_slug_fails(session: Session) -> None:
    cli, _, project = session

    result = cli.fails("projects", "create", "Again", "--slug", project["slug"])

    assert "already exists (project_exists)" in result.stderr


def test_list_shows_a_table_and_json(session: Session) -> None:
    cli, _, project = session

    table = cli.ok("projects", "list")
    as_json = cli.ok("projects", "list", "--json").json()

    assert project["slug"] in table.stdout
    assert project["id"] in table.stdout
    assert [p["slug"] for p in as_json] == [project["slug"]]


def test_project_sources_name_the_same_project(session: Session) -> None:
    cli, _, project = session
    (cli.cwd / "zbaas.toml").write_text(f'project = "{project["slug"]}"\n')

    try:
        by_slug = cli.ok("projects", "get", project["slug"], "--json").json()
        by_id = cli.ok("projects", "get", project["id"], "--json").json()
        by_env = cli.ok("projects", "get", "--json", env={"ZBAAS_PROJECT": project["id"]}).json()
        by_file = cli.ok("projects", "get", "--json").json()
        by_option = cli.ok("keys", "list", "-p", project["slug"], "--json").json()
    finally:
        (cli.cwd / "zbaas.toml").unlink()

    assert by_slug == by_id == by_env == by_file
    assert by_option == []


def test_get_unknown_project_fails(session: Session) -> None:
    cli, _, _ = session

    by_slug = cli.fails("projects", "get", "no-such-project")
    by_id = cli.fails("projects", "get", "00000000-0000-0000-0000-000000000000")

    assert "error: project 'no-such-project' not found in your organization" in by_slug.stderr
    assert "(project_not_found)" in by_id.stderr


def test_project_is_required(session: Session) -> None:
    cli, _, _ = session

    result = cli.fails("projects", "get", code=2)

    assert "no project given: pass --project" in result.stderr


def test_broken_zbaas_toml_is_reported(session: Session) -> None:
    cli, _, _ = session
    (cli.cwd / "zbaas.toml").write_text("project = \n")

    try:
        result = cli.fails("projects", "get")
    finally:
        (cli.cwd / "zbaas.toml").unlink()

    assert "zbaas.toml" in result.stderr
    assert "error: cannot read" in result.stderr


def test_update_changes_name_and_description(session: Session) -> None:
    cli, _, project = session

    updated = cli.ok(
        "projects", "update", project["slug"], "--name", "Renamed", "--description", "d", "--json"
    ).json()
    nothing = cli.fails("projects", "update", project["slug"], code=2)
    blank = cli.fails("projects", "update", project["slug"], "--name", " ")

    assert (updated["name"], updated["description"]) == ("Renamed", "d")
    assert "nothing to change" in nothing.stderr
    assert "(validation_failed)" in blank.stderr


def test_delete_asks_and_answering_no_keeps_the_project(session: Session) -> None:
    cli, _, _ = session
    project = create_project(cli)

    answered_no = cli.fails("projects", "delete", project["slug"], input="n\n")
    closed_stdin = cli.fails("projects", "delete", project["slug"], input="")
    still_there = cli.ok("projects", "get", project["slug"], "--json").json()
    deleted = cli.ok("projects", "delete", project["slug"], input="y\n")
    after_delete = cli.fails("projects", "get", project["id"])

    assert "Delete project" in answered_no.stderr
    assert "cancelled" in answered_no.stderr
    assert "cancelled" in closed_stdin.stderr
    assert still_there["id"] == project["id"]
    assert f"Deleted project {project['slug']}." in deleted.stdout
    assert "(project_not_found)" in after_delete.stderr


def test_delete_with_yes_does_not_ask(session: Session) -> None:
    cli, _, _ = session
    project = create_project(cli)

    result = cli.ok("projects", "delete", project["id"], "--yes", "--json")

    assert result.stdout == ""
    assert "(project_not_found)" in cli.fails("projects", "get", project["id"]).stderr


def test_keys_create_list_and_revoke(session: Session) -> None:
    cli, _, project = session

    created = cli.ok("keys", "create", "deploy", "--type", "secret", "-p", project["slug"])
    plain = created.stdout.strip()
    listed = cli.ok("keys", "list", "-p", project["slug"])
    key_id = next(
        k["id"]
        for k in cli.ok("keys", "list", "-p", project["slug"], "--json").json()
        if k["name"] == "deploy"
    )
    revoked = cli.ok("keys", "revoke", key_id, "-p", project["slug"])
    after = cli.ok("keys", "list", "-p", project["slug"], "--json").json()

    assert plain.startswith("zmesh_sk_")
    assert "it is not shown again" in created.stderr
    assert "deploy" in listed.stdout
    assert plain not in listed.stdout
    assert f"Revoked key {key_id}." in revoked.stdout
    assert key_id not in [k["id"] for k in after]


def test_keys_revoke_unknown_key_fails(session: Session) -> None:
    cli, _, project = session

    unknown = cli.fails(
        "keys", "revoke", "00000000-0000-0000-0000-000000000000", "-p", project["id"]
    )
    malformed = cli.fails("keys", "revoke", "not-an-id", "-p", project["id"], code=1)

    assert "error:" in unknown.stderr
    assert "(validation_failed)" in malformed.stderr


def test_keys_create_invalid_type(session: Session) -> None:
    cli, _, project = session

    result = cli.fails("keys", "create", "x", "--type", "root", "-p", project["slug"], code=2)

    assert "'root' is not one of" in result.stderr
