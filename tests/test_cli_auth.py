"""``zbaas login``, ``logout``, credentials from the environment, and errors."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from tests.clikit import ZBAAS, Cli, create_project, delete_project, logged_in_cli, new_user
from tests.conftest import ThreadedServer, free_port
from zbaas.cli.main import app


@pytest.fixture(scope="module")
def session(
    api: ThreadedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cli, dict[str, Any], dict[str, Any]]]:
    cli, user = logged_in_cli(api, tmp_path_factory.mktemp("cli-auth"))
    project = create_project(cli)
    yield cli, user, project
    delete_project(api, user, project["id"])


def test_login_stores_credentials_with_private_modes(
    session: tuple[Cli, dict[str, Any], dict[str, Any]],
) -> None:
    cli, user, _ = session
    path = cli.config_dir / "credentials.json"

    stored = json.loads(path.read_text())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_dir.stat().st_mode) == 0o700
    assert stored["url"] == cli.url
    assert stored["email"] == user["email"]
    assert stored["access_token"]
    assert stored["refresh_token"]


def test_login_prints_the_user(api: ThreadedServer, tmp_path: Path) -> None:
    user = new_user(api)
    cli = Cli(tmp_path, api.url)

    result = cli.ok("login", "--email", user["email"], input=user["password"] + "\n")
    as_json = cli.ok("login", "--email", user["email"], "--json", input=user["password"] + "\n")

    assert f"as {user['email']}" in result.stdout
    assert as_json.json()["email"] == user["email"]
    assert "access_token" not in as_json.stdout


def test_login_prompts_for_email_on_stdin(api: ThreadedServer, tmp_path: Path) -> None:
    user = new_user(api)
    cli = Cli(tmp_path, api.url)

    cli.ok("login", input=f"{user['email']}\n{user['password']}\n")

    assert cli.ok("projects", "list", "--json").json() == []


def test_login_with_wrong_password_fails(api: ThreadedServer, tmp_path: Path) -> None:
    user = new_user(api)
    cli = Cli(tmp_path, api.url)

    result = cli.fails("login", "--email", user["email"], input="not the password\n")

    assert "error: invalid email or password (invalid_credentials)" in result.stderr
    assert not (cli.config_dir / "credentials.json").exists()


def test_login_with_token(api: ThreadedServer, tmp_path: Path) -> None:
    user = new_user(api)
    cli = Cli(tmp_path, api.url)

    cli.ok("login", "--token", "-", input=user["tokens"]["access_token"] + "\n")
    stored = json.loads((cli.config_dir / "credentials.json").read_text())

    assert stored["email"] == user["email"]
    assert stored["refresh_token"] is None
    assert cli.ok("projects", "list", "--json").json() == []


def test_login_with_bad_token_fails(api: ThreadedServer, tmp_path: Path) -> None:
    cli = Cli(tmp_path, api.url)

    result = cli.fails("login", "--token", "not-a-token")

    assert "error: the server rejected this token" in result.stderr
    assert not (cli.config_dir / "credentials.json").exists()


def test_commands_without_login_say_how_to_log_in(api: ThreadedServer, tmp_path: Path) -> None:
    result = Cli(tmp_path, api.url).fails("projects", "list")

    assert "not logged in: run 'zbaas login'" in result.stderr


def test_unreachable_server_names_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = Cli(tmp_path, url).fails("projects", "list", env={"ZBAAS_TOKEN": "x"})

    assert f"cannot connect to the zbaas server at {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_stored_login_is_not_sent_to_another_server(
    session: tuple[Cli, dict[str, Any], dict[str, Any]],
) -> None:
    cli, _, _ = session
    other = f"http://127.0.0.1:{free_port()}"

    result = cli.fails("projects", "list", env={"ZBAAS_URL": other})

    assert f"you are logged in to {cli.url}, not {other}" in result.stderr


def test_env_token_works_without_login(api: ThreadedServer, tmp_path: Path) -> None:
    user = new_user(api)
    cli = Cli(tmp_path, api.url, env={"ZBAAS_TOKEN": user["tokens"]["access_token"]})

    assert cli.ok("projects", "list", "--json").json() == []
    assert not cli.config_dir.exists()


def test_env_api_key_reaches_its_project_by_id(
    session: tuple[Cli, dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    cli, _, project = session
    key = cli.ok("keys", "create", "ci", "--type", "secret", "-p", project["slug"], "--json")
    keyed = Cli(tmp_path, cli.url, env={"ZBAAS_API_KEY": key.json()["key"]})

    by_id = keyed.ok("projects", "get", project["id"], "--json")
    by_slug = keyed.fails("projects", "get", project["slug"], code=2)
    listed = keyed.fails("projects", "list")

    assert by_id.json()["slug"] == project["slug"]
    assert "an API key cannot look up the slug" in by_slug.stderr
    assert "needs a signed-in platform user" in listed.stderr


def test_env_api_key_that_is_revoked_fails(
    session: tuple[Cli, dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    cli, _, project = session
    key = cli.ok("keys", "create", "gone", "--type", "secret", "-p", project["slug"], "--json")
    cli.ok("keys", "revoke", key.json()["id"], "-p", project["slug"])
    keyed = Cli(tmp_path, cli.url, env={"ZBAAS_API_KEY": key.json()["key"]})

    result = keyed.fails("projects", "get", project["id"])

    assert "error: invalid or revoked API key (invalid_api_key)" in result.stderr


def test_expired_access_token_is_refreshed(api: ThreadedServer, tmp_path: Path) -> None:
    cli, _ = logged_in_cli(api, tmp_path)
    path = cli.config_dir / "credentials.json"
    stored = json.loads(path.read_text())
    first_refresh = stored["refresh_token"]
    # The server rejects this token just as it rejects an expired one.
    stored["access_token"] = "expired"
    path.write_text(json.dumps(stored))

    cli.ok("projects", "list")
    renewed = json.loads(path.read_text())

    assert renewed["access_token"] != "expired"
    assert renewed["refresh_token"] != first_refresh
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_concurrent_commands_refresh_once(api: ThreadedServer, tmp_path: Path) -> None:
    cli, _ = logged_in_cli(api, tmp_path)
    path = cli.config_dir / "credentials.json"
    stored = json.loads(path.read_text())
    stored["access_token"] = "expired"
    path.write_text(json.dumps(stored))

    # Each process spending the same refresh token would end the session (reuse
    # detection), so all of them must pass with the lock around the refresh.
    processes = [
        subprocess.Popen(
            [str(ZBAAS), "projects", "list", "--json"],
            env=cli.environment(),
            cwd=cli.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in processes]
    after = cli.ok("projects", "list", "--json")

    assert results == [(0, "")] * 6
    assert after.json() == []


def test_logout_ends_the_session_and_deletes_credentials(
    api: ThreadedServer, tmp_path: Path
) -> None:
    cli, _ = logged_in_cli(api, tmp_path)
    path = cli.config_dir / "credentials.json"
    token = json.loads(path.read_text())["access_token"]

    result = cli.ok("logout")
    again = cli.ok("logout")
    after = httpx.get(f"{api.url}/auth/me", headers={"Authorization": f"Bearer {token}"})

    assert f"Logged out of {api.url}" in result.stdout
    assert "Not logged in." in again.stdout
    assert not path.exists()
    assert after.status_code == 401


def test_help_says_what_options_set(tmp_path: Path) -> None:
    cli = Cli(tmp_path, f"http://127.0.0.1:{free_port()}")

    root = cli.ok("--help")
    login = cli.ok("login", "--help")

    assert "ZBAAS_API_KEY" in root.stdout
    assert "ZBAAS_URL" in root.stdout
    assert "default: ZBAAS_URL" in login.stdout


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf command under a Typer group, by its full name."""
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append((f"{prefix}{name}", command))
    return found


def test_commands_have_json_and_help() -> None:
    commands = _commands(typer.main.get_command(app))

    without_json = [
        name for name, command in commands if not any("--json" in p.opts for p in command.params)
    ]
    without_help = [
        f"{name} {param.name}"
        for name, command in commands
        for param in command.params
        if not getattr(param, "help", None)
    ]

    assert len(commands) > 35
    assert without_json == ["serve"]
    assert without_help == []
