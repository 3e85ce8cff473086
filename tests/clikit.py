"""Run the installed ``zbaas`` command as a subprocess against the test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ThreadedServer, signup_and_login

# The console script that `pip install -e .` puts next to the interpreter.
ZBAAS = Path(sys.executable).with_name("zbaas")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Cli:
    """The ``zbaas`` command with its own config folder, working folder and environment."""

    home: Path
    url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.home / "config" / "zbaas"

    @property
    def tmp_dir(self) -> Path:
        folder = self.home / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def cwd(self) -> Path:
        folder = self.home / "work"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ZBAAS_")}
        base.update(
            {
                "ZBAAS_URL": self.url,
                "XDG_CONFIG_HOME": str(self.home / "config"),
                "HOME": str(self.home),
                # Wide enough that no table cell is cut in the assertions.
                "COLUMNS": "250",
                # Files the CLI keeps for the user, such as an edited migration, stay here.
                "TMPDIR": str(self.tmp_dir),
            }
        )
        base.update(self.env)
        base.update(extra or {})
        return {k: v for k, v in base.items() if v is not None}

    def __call__(
        self,
        *args: str,
        input: str | None = "",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 120,
    ) -> Result:
        completed = subprocess.run(
            [str(ZBAAS), *args],
            input=input,
            env=self.environment(env),
            cwd=cwd or self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        """Run and require exit status 0 with no traceback."""
        result = self(*args, **kwargs)
        assert result.returncode == 0, result.stderr + result.stdout
        assert "Traceback" not in result.stderr
        return result

    def fails(self, *args: str, code: int = 1, **kwargs: Any) -> Result:
        """Run and require exit status ``code``, an ``error:`` line and no traceback."""
        result = self(*args, **kwargs)
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result


def new_user(api: ThreadedServer) -> dict[str, Any]:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        return signup_and_login(http)


def logged_in_cli(api: ThreadedServer, home: Path) -> tuple[Cli, dict[str, Any]]:
    """A ``zbaas`` logged in, through ``zbaas login``, as a new user."""
    user = new_user(api)
    cli = Cli(home, api.url)
    cli.ok("login", "--email", user["email"], input=user["password"] + "\n")
    return cli, user


def unique_slug(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_project(cli: Cli) -> dict[str, Any]:
    slug = unique_slug()
    project: dict[str, Any] = cli.ok(
        "projects", "create", "CLI test", "--slug", slug, "--json"
    ).json()
    return project


def delete_project(api: ThreadedServer, user: dict[str, Any], project_id: str) -> None:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        http.delete(f"/projects/{project_id}", headers=user["headers"])
