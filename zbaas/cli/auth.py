"""``zbaas login`` and ``zbaas logout``: the platform login stored for later commands."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from zbaas.cli import config, output
from zbaas.cli.client import Api
from zbaas.cli.common import JsonOpt
from zbaas.cli.errors import ApiError, CliError


def _read_line(prompt: str, *, secret: bool = False) -> str:
    """Prompt on a terminal; read a plain line when stdin is a pipe, as in CI."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt) if secret else input(prompt)
    line = sys.stdin.readline()
    if not line:
        raise CliError(f"no {prompt.rstrip(': ').lower()} given: stdin is closed", exit_code=2)
    return line.rstrip("\r\n")


def _login_with_password(api: Api, email: str | None) -> config.Credentials:
    email = email or _read_line("Email: ").strip()
    password = _read_line("Password: ", secret=True)
    tokens = api.post("/auth/login", json={"email": email, "password": password}, auth=False).json()
    return config.Credentials(
        url=api.url,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        email=email,
    )


def login(
    url: Annotated[
        str | None,
        typer.Option(
            help="Server to log in to, such as https://zbaas.example.com; "
            "default: ZBAAS_URL, else the last login's, else http://127.0.0.1:8000.",
        ),
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="Account email; asked for when not given.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Store this platform access token instead of logging in with a password; "
            "'-' reads it from stdin. It cannot be refreshed, so it lasts its own lifetime.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Log in and store the credentials in the user's config folder (mode 0600).

    The password is asked for on the terminal, or read as one line from stdin.
    """
    target = config.normalize_url(url) if url else config.server_url(config.load_credentials())
    with Api(target) as api:
        if token is not None:
            plain_token = _read_line("Token: ", secret=True) if token == "-" else token
            credentials = config.Credentials(url=api.url, access_token=plain_token.strip())
        else:
            credentials = _login_with_password(api, email)
        api.login = credentials
        try:
            me = api.get("/auth/me")
        except ApiError as exc:
            if exc.status == 401:
                raise CliError(
                    f"the server rejected this token: {exc.message}", code=exc.code
                ) from None
            raise
        credentials.email = me.json()["email"]
        path = config.save_credentials(credentials)

    def render(user: dict[str, str]) -> None:
        output.done(f"Logged in to {credentials.url} as {user['email']}; credentials in {path}.")

    output.show(me, as_json, render)


def logout(as_json: JsonOpt = False) -> None:
    """End the stored login's session on the server and delete the credentials file."""
    stored = config.load_credentials()
    if stored is None:
        if not as_json:
            output.done("Not logged in.")
        return
    try:
        with Api(stored.url, login=stored) as api:
            api.post("/auth/logout", json={"refresh_token": stored.refresh_token})
    except CliError as exc:
        output.warn(f"the server did not end the session: {exc.message}")
    config.delete_credentials()
    if not as_json:
        output.done(f"Logged out of {stored.url}.")
