"""Copy a parent database into a provisioned branch database.

The bundled ``pg_dump`` is piped into ``psql`` for the user schemas, from one
exported snapshot of the parent that also serves the copied history rows and
the inspected base schema. Objects and per-schema default privileges of the
parent's owner role are then moved to the branch's owner role.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from zbaas.postgres.pools import Pools
from zbaas.postgres.programs import libpq_environment, program
from zbaas.tenant import schema_diff

if TYPE_CHECKING:
    from zbaas.platform.projects import Project

logger = logging.getLogger("zbaas.tenant.branches")

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


async def copy_parent(
    pools: Pools, project: Project, db_name: str, owner: str, with_data: bool
) -> schema_diff.Schema:
    """Copy the parent into the provisioned ``db_name``; return the parent's inspected schema.

    One repeatable-read transaction on the parent exports its snapshot, so
    pg_dump, the copied history rows and the inspected base all show the parent
    at one moment. The inspection runs while pg_dump and psql do the copy.
    """
    # Imported here because the extensions module depends on the projects module,
    # which depends on this one.
    from zbaas.tenant import extensions

    # Provisioning made an empty ``extensions`` schema; the parent's dump brings its
    # own, with the extensions enabled in it, so the empty one goes first.
    async with pools.admin(db_name) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} RESTRICT").format(sql.Identifier(extensions.SCHEMA))
        )

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
        # The dump granted USAGE on ``extensions`` to the parent's roles, not the branch's.
        await extensions.prepare_schema(conn, db_name, owner)
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
        # NOTE: the storage schema is left out with the other managed ones, so a
        # branch starts with only an empty "default" bucket: objects are not copied.
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
