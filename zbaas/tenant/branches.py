"""Database branches: a copy of a project's database with roles of its own.

A branch database gets the same roles, grants, ``auth`` and ``zbaas_meta``
schemas as a project database (see ``provisioning``). Then the bundled
``pg_dump``, piped into ``psql``, copies the parent's other schemas into it,
with their rows when ``with_data`` is set. The parent's applied-migration
history is always copied, and ``auth.users`` rows only with the data. Objects
owned by the parent's owner role are reassigned to the branch's owner role.

The control row keeps the parent's schema as inspected at the moment of the
copy (the base), which ``branch_merge`` uses to tell which side changed what.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row, tuple_row
from psycopg.types.json import Jsonb

from zbaas.errors import Conflict, InvalidInput, NotFound
from zbaas.platform.security import SecretBox
from zbaas.postgres.pools import Pools
from zbaas.postgres.programs import libpq_environment, program
from zbaas.tenant import provisioning, schema_diff

if TYPE_CHECKING:
    from zbaas.platform.projects import Project

logger = logging.getLogger("zbaas.tenant.branches")

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_NAME_LENGTH = 40
HASH_LENGTH = 10
DATABASE_SUFFIX_LENGTH = len("__br_") + HASH_LENGTH
REF_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
REF_LENGTH = 16
STDERR_LIMIT = 4000  # characters of a failed program's stderr kept for the log
TRANSACTION_TIMEOUT_VERSION = 170000  # first server version with transaction_timeout
TRANSACTION_TIMEOUT_LINE = b"SET transaction_timeout = 0;\n"
PREAMBLE_LIMIT = 256 * 1024  # bytes of a dump searched for that line
RELAY_CHUNK = 256 * 1024

# pg_default_acl.defaclobjtype codes, and the privilege names aclexplode returns;
# only these reach DDL.
DEFAULT_PRIVILEGE_KINDS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES"}
PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
    | {"USAGE", "EXECUTE", "CREATE"}
)

# Tables of the managed schemas whose rows a branch takes over from its parent.
HISTORY_TABLE = ("zbaas_meta", "schema_migrations")
USERS_TABLE = ("auth", "users")


class BranchCopyFailed(RuntimeError):
    """pg_dump or psql exited with an error while copying the parent."""


@dataclass
class Branch:
    """A branch's control row, with its credentials still encrypted."""

    id: UUID
    project_id: UUID
    name: str
    db_name: str
    ref: str
    owner_role: str
    owner_password: str
    authenticator_role: str
    authenticator_password: str
    with_data: bool
    status: str
    merged_at: datetime | None
    created_at: datetime


BRANCH_COLUMNS = (
    "id, project_id, name, db_name, ref, owner_role, owner_password, authenticator_role, "
    "authenticator_password, with_data, status, merged_at, created_at"
)


def database_name(parent_db_name: str, name: str) -> str:
    """Return ``<parent db_name, cut to fit>__br_<hash>`` for branch ``name``.

    The hash is the first 10 hex digits of SHA-256 over the parent's full
    database name, a NUL byte and the branch name. So it is deterministic, and
    it differs between branches of one parent and between parents whose cut
    names agree. Project database names never contain ``__`` (organization ids have
    no underscore and slugs only single hyphens), so a branch name cannot
    collide with a project's. The result is at most 63 bytes; database names
    here are ASCII, so bytes and characters agree.
    """
    digest = hashlib.sha256(f"{parent_db_name}\0{name}".encode()).hexdigest()[:HASH_LENGTH]
    prefix = parent_db_name[: MAX_IDENTIFIER_BYTES - DATABASE_SUFFIX_LENGTH]
    return f"{prefix}__br_{digest}"


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            f"invalid branch name {name!r}: use lowercase letters, digits and single hyphens, "
            "not starting or ending with a hyphen",
            details={"field": "name"},
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"branch name {name!r} is {len(name)} characters; the maximum is {MAX_NAME_LENGTH}",
            details={"field": "name", "max_length": MAX_NAME_LENGTH},
        )


async def create(
    conn: psycopg.AsyncConnection,
    pools: Pools,
    box: SecretBox,
    project: Project,
    name: str,
    with_data: bool,
) -> Branch:
    """Reserve the control row, provision the branch database, copy the parent into it.

    A failure at any step after the reservation removes the row, the database
    and the roles. Raises Conflict when the name or database name is taken.
    """
    check_name(name)
    db_name = database_name(project.db_name, name)
    ref = "".join(secrets.choice(REF_ALPHABET) for _ in range(REF_LENGTH))
    owner, authenticator = provisioning.role_names(ref)
    roles = provisioning.ProjectRoles(
        owner, secrets.token_urlsafe(32), authenticator, secrets.token_urlsafe(32)
    )

    cur = conn.cursor(row_factory=class_row(Branch))
    try:
        await cur.execute(
            f"INSERT INTO branches (project_id, name, db_name, ref, owner_role, owner_password, "
            f"authenticator_role, authenticator_password, with_data, status) "
            f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'creating') RETURNING {BRANCH_COLUMNS}",
            (
                project.id,
                name,
                db_name,
                ref,
                owner,
                box.encrypt(roles.owner_password),
                authenticator,
                box.encrypt(roles.authenticator_password),
                with_data,
            ),
        )
    except psycopg.errors.UniqueViolation:
        raise Conflict(
            f"a branch named {name!r} already exists in project {project.id}",
            code="branch_exists",
        ) from None
    branch = await cur.fetchone()
    assert branch is not None

    started = time.monotonic()
    logger.info(
        "branch %s of project %s: copying %s into %s (with_data=%s)",
        name,
        project.id,
        project.db_name,
        db_name,
        with_data,
    )
    try:
        await provisioning.create_project_database(pools, db_name, roles)
    except BaseException as exc:
        await conn.execute("DELETE FROM branches WHERE id = %s", (branch.id,))
        if isinstance(exc, psycopg.errors.DuplicateDatabase):
            raise Conflict(
                f"the database {db_name} already exists on the server; choose another name",
                code="branch_exists",
            ) from None
        raise

    try:
        base = await copy_parent(pools, project, db_name, owner, with_data)
    except BaseException:
        logger.warning("branch %s of project %s: copy failed; removing it", name, project.id)
        await provisioning.drop_project_database(pools, db_name, [authenticator, owner])
        await conn.execute("DELETE FROM branches WHERE id = %s", (branch.id,))
        raise

    await conn.execute(
        "UPDATE branches SET status = 'active', base_schema = %s WHERE id = %s",
        (Jsonb(base), branch.id),
    )
    branch.status = "active"
    logger.info(
        "branch %s of project %s: created %s in %.2f s",
        name,
        project.id,
        db_name,
        time.monotonic() - started,
    )
    return branch


async def copy_parent(
    pools: Pools, project: Project, db_name: str, owner: str, with_data: bool
) -> schema_diff.Schema:
    """Copy the parent into the provisioned ``db_name``; return the parent's inspected schema.

    One repeatable-read transaction on the parent exports its snapshot, so
    pg_dump, the copied history rows and the inspected base all show the parent
    at one moment. The inspection runs while pg_dump and psql do the copy.
    """
    source = await asyncio.to_thread(_open_snapshot, pools.conninfo(project.db_name))
    try:
        snapshot = await asyncio.to_thread(_export_snapshot, source)
        await asyncio.to_thread(_copy_managed_rows, source, pools.conninfo(db_name), with_data)
        results = await asyncio.gather(
            asyncio.to_thread(schema_diff.inspect_schema, source),
            dump_and_restore(
                pools, project.db_name, db_name, snapshot, with_data, source.info.server_version
            ),
            return_exceptions=True,
        )
    finally:
        await asyncio.to_thread(source.close)
    for result in results:
        if isinstance(result, BaseException):
            raise result

    async with pools.admin(db_name) as conn:
        await conn.execute(
            sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                sql.Identifier(project.owner_role), sql.Identifier(owner)
            )
        )
        await move_default_privileges(conn, project.owner_role, owner)
        row = await (await conn.execute("SELECT pg_database_size(current_database())")).fetchone()
    logger.info(
        "copied %s into %s: %s bytes", project.db_name, db_name, row and row["pg_database_size"]
    )
    base = results[0]
    assert isinstance(base, dict)
    return base


async def move_default_privileges(
    conn: psycopg.AsyncConnection, old_owner: str, new_owner: str
) -> None:
    """Move per-schema default privileges (ALTER DEFAULT PRIVILEGES) to the new owner.

    REASSIGN OWNED leaves them with the old role, where they would keep the
    parent's owner from being dropped while the branch exists.
    """
    # NOTE: database-wide default privileges (without IN SCHEMA) of the parent's
    # owner stay as the dump made them, because revoking them does not remove
    # the entry. A project therefore drops its branches before its roles.
    cur = await conn.execute(
        "SELECT d.defaclobjtype AS kind, n.nspname AS schema, a.privilege_type AS privilege, "
        "a.is_grantable AS grantable, "
        "CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END AS grantee "
        "FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace "
        "CROSS JOIN LATERAL aclexplode(d.defaclacl) a "
        "WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (old_owner,),
    )
    for row in await cur.fetchall():
        kind = DEFAULT_PRIVILEGE_KINDS.get(row["kind"])
        if kind is None or row["privilege"] not in PRIVILEGES:
            continue
        old_grantee = _grantee(row["grantee"])
        new_grantee = _grantee(new_owner if row["grantee"] == old_owner else row["grantee"])
        parts = {
            "schema": sql.Identifier(row["schema"]),
            "privilege": sql.SQL(row["privilege"]),
            "kind": sql.SQL(kind),
        }
        grant = (
            "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA {schema} "
            "GRANT {privilege} ON {kind} TO {grantee}"
        )
        if row["grantable"]:
            grant += " WITH GRANT OPTION"
        await conn.execute(
            sql.SQL(grant).format(role=sql.Identifier(new_owner), grantee=new_grantee, **parts)
        )
        await conn.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA {schema} "
                "REVOKE {privilege} ON {kind} FROM {grantee}"
            ).format(role=sql.Identifier(old_owner), grantee=old_grantee, **parts)
        )


def _grantee(role: str | None) -> sql.Composable:
    return sql.SQL("PUBLIC") if role is None else sql.Identifier(role)


def _open_snapshot(conninfo: str) -> psycopg.Connection:
    conn = psycopg.connect(conninfo)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


def _export_snapshot(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def _copy_managed_rows(source: psycopg.Connection, target_conninfo: str, with_data: bool) -> None:
    """Copy the migration history, and the users when ``with_data``, into the branch.

    They go in before the restore, so that foreign keys from copied tables to
    ``auth.users`` validate.
    """
    tables = [HISTORY_TABLE, USERS_TABLE] if with_data else [HISTORY_TABLE]
    with psycopg.connect(target_conninfo, autocommit=True) as target:
        for schema, table in tables:
            copy_rows(source, target, schema, table)


def copy_rows(
    source: psycopg.Connection, target: psycopg.Connection, schema: str, table: str
) -> None:
    """Stream a table's rows with COPY, over the columns both sides have."""
    columns = sorted(
        set(table_columns(source, schema, table)) & set(table_columns(target, schema, table))
    )
    column_list = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    name = sql.Identifier(schema, table)
    with (
        source.cursor().copy(sql.SQL("COPY {} ({}) TO STDOUT").format(name, column_list)) as out,
        target.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, column_list)) as into,
    ):
        for block in out:
            into.write(block)


def table_columns(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute(
        "SELECT a.attname FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        (schema, table),
    )
    return [row[0] for row in cur.fetchall()]


async def dump_and_restore(
    pools: Pools,
    source_db: str,
    target_db: str,
    snapshot: str,
    with_data: bool,
    server_version: int,
) -> None:
    """Pipe ``pg_dump`` of ``source_db`` into ``psql`` on ``target_db``, as superuser.

    The managed schemas are left out because provisioning made them. On
    PostgreSQL 17 and later the two programs share an OS pipe, so the dump never
    passes through this process. The bundled pg_dump (18) writes
    ``SET transaction_timeout`` into every dump, a setting older servers reject,
    so for them the stream is relayed here to drop that one line.
    """
    dump_command = [
        str(program("pg_dump")),
        "--format=plain",
        "--no-password",
        f"--snapshot={snapshot}",
        "--no-publications",
        "--no-subscriptions",
        "--no-tablespaces",
        *(f"--exclude-schema={schema}" for schema in sorted(schema_diff.MANAGED_SCHEMAS)),
    ]
    if not with_data:
        dump_command.append("--schema-only")
    restore_command = [
        str(program("psql")),
        "--no-psqlrc",
        "--quiet",
        "--no-password",
        "--single-transaction",
        "--set=ON_ERROR_STOP=1",
        "--output=/dev/null",
    ]
    relay = server_version < TRANSACTION_TIMEOUT_VERSION

    read_end, write_end = (-1, -1) if relay else os.pipe()
    processes: list[asyncio.subprocess.Process] = []
    try:
        processes.append(
            await asyncio.create_subprocess_exec(
                *dump_command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if relay else write_end,
                stderr=asyncio.subprocess.PIPE,
                env=libpq_environment(pools.conninfo(source_db)),
            )
        )
        processes.append(
            await asyncio.create_subprocess_exec(
                *restore_command,
                stdin=asyncio.subprocess.PIPE if relay else read_end,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=libpq_environment(pools.conninfo(target_db)),
            )
        )
    except BaseException:
        _kill(processes)
        raise
    finally:
        if not relay:
            # The children hold their own copies; closing ours lets each see EOF.
            os.close(read_end)
            os.close(write_end)

    dump, restore = processes
    assert dump.stderr is not None and restore.stderr is not None
    steps = [dump.stderr.read(), restore.stderr.read(), dump.wait(), restore.wait()]
    if relay:
        steps.append(_relay_without_new_settings(dump, restore))
    try:
        dump_errors, restore_errors, *_ = await asyncio.gather(*steps)
    except BaseException:
        _kill(processes)
        raise

    if restore.returncode != 0 or dump.returncode != 0:
        failed, errors = (
            ("psql", restore_errors) if restore.returncode != 0 else ("pg_dump", dump_errors)
        )
        message = errors.decode(errors="replace").strip()[-STDERR_LIMIT:]
        logger.error("copy of %s into %s failed in %s: %s", source_db, target_db, failed, message)
        raise BranchCopyFailed(f"{failed} failed while copying {source_db} into {target_db}")


async def _relay_without_new_settings(
    dump: asyncio.subprocess.Process, restore: asyncio.subprocess.Process
) -> None:
    """Copy pg_dump's output to psql, dropping the preamble's ``SET transaction_timeout``."""
    assert dump.stdout is not None and restore.stdin is not None
    head = b""
    try:
        while len(head) < PREAMBLE_LIMIT and TRANSACTION_TIMEOUT_LINE not in head:
            chunk = await dump.stdout.read(RELAY_CHUNK)
            if not chunk:
                break
            head += chunk
        restore.stdin.write(head.replace(TRANSACTION_TIMEOUT_LINE, b"", 1))
        await restore.stdin.drain()
        while chunk := await dump.stdout.read(RELAY_CHUNK):
            restore.stdin.write(chunk)
            await restore.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        # psql stopped early, and its exit status and stderr report why.
        _kill([dump])
    finally:
        restore.stdin.close()


def _kill(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.kill()


async def list_for_project(conn: psycopg.AsyncConnection, project_id: UUID) -> list[Branch]:
    cur = conn.cursor(row_factory=class_row(Branch))
    await cur.execute(
        f"SELECT {BRANCH_COLUMNS} FROM branches WHERE project_id = %s ORDER BY created_at, name",
        (project_id,),
    )
    return await cur.fetchall()


async def get(conn: psycopg.AsyncConnection, project_id: UUID, name: str) -> Branch:
    """Return the named branch of the project, in any status; raise NotFound."""
    cur = conn.cursor(row_factory=class_row(Branch))
    await cur.execute(
        f"SELECT {BRANCH_COLUMNS} FROM branches WHERE project_id = %s AND name = %s",
        (project_id, name),
    )
    branch = await cur.fetchone()
    if branch is None:
        raise NotFound(
            f"branch {name!r} not found in project {project_id}", code="branch_not_found"
        )
    return branch


def require_active(branch: Branch) -> None:
    if branch.status != "active":
        raise Conflict(
            f"branch {branch.name!r} is {branch.status}; wait until it is active",
            code="branch_not_active",
        )


async def load_base(conn: psycopg.AsyncConnection, branch: Branch) -> schema_diff.Schema:
    """Return the stored base schema of an active branch."""
    row = await (
        await conn.execute("SELECT base_schema FROM branches WHERE id = %s", (branch.id,))
    ).fetchone()
    if row is None or row["base_schema"] is None:
        raise NotFound(f"branch {branch.name!r} has no base schema", code="branch_not_found")
    base: dict[str, Any] = row["base_schema"]
    return base


async def record_merge(
    conn: psycopg.AsyncConnection, branch: Branch, new_base: schema_diff.Schema
) -> None:
    """Make the branch's merged schema its new base, the common ancestor from now on."""
    await conn.execute(
        "UPDATE branches SET base_schema = %s, merged_at = now() WHERE id = %s",
        (Jsonb(new_base), branch.id),
    )


async def delete(conn: psycopg.AsyncConnection, pools: Pools, branch: Branch) -> None:
    """Drop the branch database and roles, then the row; the parent is not touched.

    The row is marked ``deleting`` first, so a concurrent second DELETE gets 409.
    """
    cur = await conn.execute(
        "UPDATE branches SET status = 'deleting' WHERE id = %s AND status = 'active'",
        (branch.id,),
    )
    if cur.rowcount != 1:
        raise Conflict(
            f"branch {branch.name!r} is being created or deleted; try again later",
            code="branch_not_active",
        )
    await _drop(conn, pools, branch)


async def drop_project_branches(
    conn: psycopg.AsyncConnection, pools: Pools, project_id: UUID
) -> None:
    """Drop every branch of a project that is being deleted, in any status."""
    for branch in await list_for_project(conn, project_id):
        await _drop(conn, pools, branch)


async def _drop(conn: psycopg.AsyncConnection, pools: Pools, branch: Branch) -> None:
    await provisioning.drop_project_database(
        pools, branch.db_name, [branch.authenticator_role, branch.owner_role]
    )
    await conn.execute("DELETE FROM branches WHERE id = %s", (branch.id,))
    logger.info("branch %s of project %s deleted", branch.name, branch.project_id)
