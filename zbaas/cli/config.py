"""The server, credentials and default project of the CLI, and the places they come from.

Environment variables win over the credentials file, which ``zbaas login``
writes to ``$XDG_CONFIG_HOME/zbaas/credentials.json`` (default
``~/.config/zbaas``) with mode 0600 in a folder of mode 0700.
"""

from __future__ import annotations

import fcntl
import json
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zbaas.cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:8000"
PROJECT_FILE = "zbaas.toml"
CREDENTIALS_FILE = "credentials.json"
LOCK_FILE = "credentials.lock"


@dataclass
class Credentials:
    """A platform login: the server it belongs to and its token pair."""

    url: str
    access_token: str
    refresh_token: str | None = None
    email: str | None = None


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "zbaas"


def credentials_path() -> Path:
    return config_dir() / CREDENTIALS_FILE


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"invalid server URL {url!r}: it must start with http:// or https://")
    return url


def env(name: str) -> str | None:
    """Return an environment variable's value; an empty value counts as unset."""
    value = os.environ.get(name, "").strip()
    return value or None


def load_credentials() -> Credentials | None:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
        return Credentials(
            url=data["url"],
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token"),
            email=data.get("email"),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(
            f"cannot read {path}: {exc}; run 'zbaas logout' and 'zbaas login' again"
        ) from None


def _private_dir() -> Path:
    folder = config_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode does not apply to a folder that already existed.
    folder.chmod(0o700)
    return folder


def save_credentials(credentials: Credentials) -> Path:
    """Write the file atomically; it is created 0600, so no other user can read it."""
    path = _private_dir() / CREDENTIALS_FILE
    temporary = path.with_name(f".{CREDENTIALS_FILE}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(asdict(credentials), file, indent=2)
        file.write("\n")
    os.replace(temporary, path)
    return path


def delete_credentials() -> bool:
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True


@contextmanager
def credentials_lock() -> Iterator[None]:
    """Hold an exclusive lock while a refresh token is spent and its successor stored.

    The server revokes a session whose refresh token is spent twice, so two CLI
    processes must not refresh with the same token at once.
    """
    fd = os.open(_private_dir() / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def server_url(stored: Credentials | None) -> str:
    """Return ``ZBAAS_URL``, else the URL of the stored login, else the local default."""
    url = env("ZBAAS_URL")
    if url is not None:
        return normalize_url(url)
    return stored.url if stored is not None else DEFAULT_URL


def project_file(folder: Path | None = None) -> dict[str, Any]:
    """Read ``zbaas.toml`` in the current folder; return an empty dict when there is none."""
    path = (folder or Path.cwd()) / PROJECT_FILE
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    project = data.get("project")
    if project is not None and not isinstance(project, str):
        raise CliError(f"{path}: 'project' must be a string, the project's slug or id")
    return data
