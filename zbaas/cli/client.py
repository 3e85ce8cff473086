"""The HTTP client of the CLI: credentials, token refresh and the API's error shape.

The credential is chosen once per command: ``ZBAAS_API_KEY`` (sent as the
``apikey`` header), else ``ZBAAS_TOKEN``, else the stored login of the same
server. Only a stored login is refreshed; its access token is renewed shortly
before it expires, and once more if the server rejects it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx

from zbaas import __version__
from zbaas.cli import config
from zbaas.cli.errors import ApiError, CliError

# Renew an access token this many seconds before its expiry, so that it cannot
# expire between the check and the server's verification.
REFRESH_MARGIN_SECONDS = 30
DEFAULT_TIMEOUT_SECONDS = 600.0


def segment(value: str) -> str:
    """Percent-encode one path segment, so that no name can address another endpoint.

    httpx drops '.' and '..' segments from a URL, which would turn
    ``/projects/{id}/branches/..`` into ``/projects/{id}``; their dots are encoded.
    """
    if not value:
        raise CliError("a name must not be empty", exit_code=2)
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def _timeout() -> httpx.Timeout:
    text = config.env("ZBAAS_TIMEOUT")
    try:
        seconds = float(text) if text is not None else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise CliError(f"ZBAAS_TIMEOUT must be a number of seconds, not {text!r}") from None
    return httpx.Timeout(seconds, connect=10.0)


def _expires_soon(token: str) -> bool:
    """Read the unverified ``exp`` claim of a JWT; the server verifies the token itself.

    Decoded by hand because importing PyJWT, and the cryptography package with it,
    would add a noticeable share to every command's start-up time.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return False
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    return isinstance(expiry, int | float) and expiry - time.time() < REFRESH_MARGIN_SECONDS


def api_error(response: httpx.Response) -> ApiError:
    """Build an ApiError from the API's error shape, or describe a response without that shape."""
    try:
        error = response.json()["error"]
        return ApiError(
            response.status_code,
            str(error["message"]),
            code=error.get("code"),
            details=error.get("details"),
        )
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return ApiError(
            response.status_code, f"HTTP {response.status_code}: {text}", code=None, details=None
        )


class Api:
    """A connection to one zbaas server with one credential."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        login: config.Credentials | None = None,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.token = token
        self.login = login
        headers = {"User-Agent": f"zbaas-cli/{__version__}"}
        org = config.env("ZBAAS_ORG")
        if org is not None:
            headers["X-Org-Id"] = org
        # Requests go only to ``url`` and redirects are not followed, so a plain-HTTP
        # server needs no certificate store, whose loading slows every command's start.
        self.http = httpx.Client(
            base_url=url,
            timeout=_timeout(),
            headers=headers,
            verify=url.startswith("https://"),
        )

    @classmethod
    def from_environment(cls, *, require_auth: bool = True) -> Api:
        """Build the client for the server and credential of the environment or the stored login."""
        stored = config.load_credentials()
        url = config.server_url(stored)
        # A stored login is sent only to the server it was made on.
        login = stored if stored is not None and stored.url == url else None
        api_key, token = config.env("ZBAAS_API_KEY"), config.env("ZBAAS_TOKEN")
        if require_auth and not (api_key or token or login):
            if stored is not None:
                raise CliError(
                    f"you are logged in to {stored.url}, not {url}; run 'zbaas login' "
                    "for this server, or set ZBAAS_TOKEN or ZBAAS_API_KEY"
                )
            raise CliError("not logged in: run 'zbaas login', or set ZBAAS_TOKEN or ZBAAS_API_KEY")
        return cls(url, api_key=api_key, token=token, login=login)

    @property
    def uses_api_key(self) -> bool:
        return self.api_key is not None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth_headers(self) -> dict[str, str]:
        if self.api_key is not None:
            return {"apikey": self.api_key}
        if self.token is not None:
            return {"Authorization": f"Bearer {self.token}"}
        if self.login is not None:
            if self.login.refresh_token and _expires_soon(self.login.access_token):
                self.refresh()
            return {"Authorization": f"Bearer {self.login.access_token}"}
        return {}

    def refresh(self) -> None:
        """Spend the stored refresh token for a new pair, or use the pair another process stored."""
        assert self.login is not None
        spent = self.login.access_token
        with config.credentials_lock():
            current = config.load_credentials()
            if current is not None and current.url == self.url and current.access_token != spent:
                self.login = current
                return
            if not self.login.refresh_token:
                raise CliError("your access token has expired; run 'zbaas login' again")
            response = self._send(
                "POST", "/auth/refresh", json={"refresh_token": self.login.refresh_token}
            )
            if response.status_code == 401:
                raise CliError("your login has expired or ended; run 'zbaas login' again")
            if response.is_error:
                raise api_error(response)
            tokens = response.json()
            self.login.access_token = tokens["access_token"]
            self.login.refresh_token = tokens["refresh_token"]
            config.save_credentials(self.login)

    def _can_refresh(self, response: httpx.Response) -> bool:
        if response.status_code != 401 or self.login is None or not self.login.refresh_token:
            return False
        return self.api_key is None and self.token is None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None

    def _transport_error(self, exc: httpx.TransportError) -> CliError:
        if isinstance(exc, httpx.ConnectError):
            return CliError(
                f"cannot connect to the zbaas server at {self.url}: {exc}; start it with "
                "'zbaas serve', or set ZBAAS_URL to the server's address",
                code="connection_failed",
            )
        if isinstance(exc, httpx.TimeoutException):
            return CliError(
                f"the request to the zbaas server at {self.url} timed out; "
                "ZBAAS_TIMEOUT sets the limit in seconds",
                code="timeout",
            )
        return CliError(f"request to {self.url} failed: {exc}", code="connection_failed")

    def request(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send a request; an error status raises :class:`ApiError` with the API's message."""
        headers = {**kwargs.pop("headers", {}), **(self._auth_headers() if auth else {})}
        response = self._send(method, path, headers=headers, **kwargs)
        if auth and self._can_refresh(response):
            self.refresh()
            headers.update(self._auth_headers())
            response = self._send(method, path, headers=headers, **kwargs)
        if response.is_error:
            raise api_error(response)
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """Send a request and yield its response unread; an error status raises first."""
        # NOTE: a streamed upload body cannot be sent twice, so an access token that the
        # server rejects here is not refreshed and retried. Only the refresh shortly
        # before expiry applies.
        headers = {**kwargs.pop("headers", {}), **self._auth_headers()}
        request = self.http.build_request(method, path, headers=headers, **kwargs)
        try:
            response = self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        try:
            if response.is_error:
                response.read()
                raise api_error(response)
            yield response
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        finally:
            response.close()
