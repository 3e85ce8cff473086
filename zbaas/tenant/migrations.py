"""Migrations: versioned up/down SQL that is applied whole or not at all.

The control database stores each migration's SQL (table ``migrations``). Whether
it is applied is recorded only in the project database, in
``zbaas_meta.schema_migrations``, so a backup or a branch carries its own
history. The record is written in the same transaction as the SQL, so a failure
leaves no trace. The exception is a single statement that cannot run in a
transaction (``CREATE INDEX CONCURRENTLY``): its record is written after it
succeeded.

Every run holds a session-level advisory lock in the project database. Runs of
one project are serialized, and runs of other projects do not contend for the
lock because advisory locks are scoped to one database. The SQL runs as the
project's owner role with ``lock_timeout`` and ``statement_timeout`` set.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row

from zbaas.app import Services
from zbaas.config import Settings
from zbaas.errors import Conflict, InvalidInput, NotFound, ZbaasError, sql_error
from zbaas.platform.projects import Project
from zbaas.tenant import sqlcheck
from zbaas.tenant.connections import as_owner
from zbaas.tenant.sqlcheck import LintWarning, Script, Statement

logger = logging.getLogger("zbaas.migrations")

# Key of the advisory lock taken in a project database by every migration run.
# Advisory locks are per database, so one constant serializes each project alone.
MIGRATION_LOCK_KEY = 0x7A62_6161_734D

NAME_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.\- ]{0,98}[A-Za-z0-9_.\-])?$")
NAME_RULE = (
    "1 to 100 characters: letters, digits, underscores, hyphens, dots and spaces, "
    "starting with a letter or digit and not ending with a space"
)

# SQL shorter than this parses in well under a millisecond, faster than a thread hand-off.
INLINE_PARSE_LENGTH = 20_000

MIGRATION_COLUMNS = "id, project_id, version, name, up_sql, down_sql, checksum, created_at"


@dataclass
class Migration:
    """A migration's control row."""

    id: UUID
    project_id: UUID
    version: int
    name: str
    up_sql: str
    down_sql: str | None
    checksum: str
    created_at: datetime


@dataclass
class AppliedRecord:
    """A row of ``zbaas_meta.schema_migrations`` in the project database."""

    version: int
    migration_id: UUID
    name: str
    checksum: str
    applied_at: datetime


@dataclass
class Drift:
    """A disagreement between the project database's record and the control plane."""

    reason: str  # checksum_mismatch, version_mismatch or unknown_migration
    message: str


@dataclass
class MigrationState:
    """A migration with its status read from the project database.

    A migration that only the project database records (``drift.reason`` is
    ``unknown_migration``) has no SQL and no ``created_at``.
    """

    id: UUID
    version: int
    name: str
    up_sql: str | None
    down_sql: str | None
    checksum: str
    status: str  # applied or pending
    applied_at: datetime | None
    created_at: datetime | None
    drift: Drift | None = None


@dataclass
class RunResult:
    """The outcome for one migration of an apply-all run."""

    id: UUID
    version: int
    name: str
    status: str  # applied, failed or skipped
    applied_at: datetime | None = None


@dataclass
class Summary:
    """A migration's id, version and name, for listings in messages and details."""

    id: UUID
    version: int
    name: str

    def label(self) -> str:
        return f"{self.version} {self.name!r}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": str(self.id), "version": self.version, "name": self.name}


@dataclass
class _Records:
    """Everything ``zbaas_meta.schema_migrations`` holds, ordered by version."""

    rows: list[AppliedRecord] = field(default_factory=list)

    def by_id(self) -> dict[UUID, AppliedRecord]:
        return {row.migration_id: row for row in self.rows}

    def latest(self) -> AppliedRecord | None:
        return self.rows[-1] if self.rows else None


def checksum(up_sql: str) -> str:
    """Return the hex SHA-256 of ``up_sql`` encoded as UTF-8."""
    return hashlib.sha256(up_sql.encode()).hexdigest()


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            f"invalid migration name {name!r}: use {NAME_RULE}",
            details={"field": "name"},
            code="invalid_name",
        )


def _not_found(migration_id: UUID) -> NotFound:
    return NotFound(f"migration {migration_id} not found", code="migration_not_found")


# Control database


async def _get_row(
    control: psycopg.AsyncConnection, project_id: UUID, migration_id: UUID
) -> Migration:
    cur = control.cursor(row_factory=class_row(Migration))
    await cur.execute(
        f"SELECT {MIGRATION_COLUMNS} FROM migrations WHERE id = %s AND project_id = %s",
        (migration_id, project_id),
    )
    migration = await cur.fetchone()
    if migration is None:
        raise _not_found(migration_id)
    return migration


async def _get_row_with_earlier(
    control: psycopg.AsyncConnection, project_id: UUID, migration_id: UUID
) -> tuple[Migration, list[UUID]]:
    """Return the migration and the ids of the project's earlier versions, in one query."""
    cur = await control.execute(
        f"SELECT {MIGRATION_COLUMNS}, ARRAY(SELECT e.id FROM migrations e "
        f" WHERE e.project_id = m.project_id AND e.version < m.version) AS earlier "
        f"FROM migrations m WHERE id = %s AND project_id = %s",
        (migration_id, project_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise _not_found(migration_id)
    earlier = row.pop("earlier")
    return Migration(**row), earlier


async def _all_rows(control: psycopg.AsyncConnection, project_id: UUID) -> list[Migration]:
    cur = control.cursor(row_factory=class_row(Migration))
    await cur.execute(
        f"SELECT {MIGRATION_COLUMNS} FROM migrations WHERE project_id = %s ORDER BY version",
        (project_id,),
    )
    return await cur.fetchall()


async def _summaries(
    control: psycopg.AsyncConnection, project_id: UUID, *, below_version: int | None = None
) -> list[Summary]:
    """List id, version and name (no SQL), optionally only below a version."""
    cur = control.cursor(row_factory=class_row(Summary))
    await cur.execute(
        "SELECT id, version, name FROM migrations "
        "WHERE project_id = %s AND version < coalesce(%s, 2147483647) ORDER BY version",
        (project_id, below_version),
    )
    return await cur.fetchall()


# Project database


SELECT_RECORDS = (
    "SELECT version, migration_id, name, checksum, applied_at "
    "FROM zbaas_meta.schema_migrations ORDER BY version"
)


async def _records(conn: psycopg.AsyncConnection) -> _Records:
    cur = conn.cursor(row_factory=class_row(AppliedRecord))
    await cur.execute(SELECT_RECORDS)
    return _Records(await cur.fetchall())


def _timeouts(settings: Settings, *, local: bool) -> sql.Composed:
    template = (
        "SET LOCAL lock_timeout = {lock}; SET LOCAL statement_timeout = {statement}"
        if local
        else "SET lock_timeout = {lock}; SET statement_timeout = {statement}"
    )
    return sql.SQL(template).format(
        lock=sql.Literal(settings.migration_lock_timeout_ms),
        statement=sql.Literal(settings.migration_statement_timeout_ms),
    )


# Everything DISCARD ALL resets except prepared statements: psycopg keeps its own
# prepared statements on pooled connections and notices their removal only the
# first time it receives a DISCARD ALL, so later runs would fail on stale names.
# sqlcheck rejects PREPARE and DEALLOCATE in migrations for the same reason.
RESET_SESSION = (
    "CLOSE ALL; RESET ROLE; RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); "
    "DISCARD PLANS; DISCARD SEQUENCES; DISCARD TEMP"
)


@dataclass
class _LockedSession:
    """An owner connection holding the project's migration lock, and the history it read."""

    conn: psycopg.AsyncConnection
    records: _Records


@asynccontextmanager
async def _locked_session(services: Services, project: Project) -> AsyncIterator[_LockedSession]:
    """Yield an owner connection that holds the project's migration lock.

    Waiting for the lock is bounded by ``lock_timeout``; a run still holding it
    then is a 409. On exit the session is reset, which releases the lock and
    undoes whatever session state the migration SQL changed, before the pool
    reuses the connection.
    """
    async with as_owner(services, project) as conn:
        # One round trip: timeouts, the lock, then the history as of holding it.
        lock_and_read = (
            _timeouts(services.settings, local=False)
            + sql.SQL("; SELECT pg_advisory_lock({}); ").format(sql.Literal(MIGRATION_LOCK_KEY))
            + sql.SQL(SELECT_RECORDS)
        )
        try:
            cur = await conn.execute(lock_and_read)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            await _reset_session(conn)
            raise Conflict(
                "another migration run of this project is in progress; retry when it has finished",
                code="migration_in_progress",
            ) from None
        while cur.nextset():
            pass  # the history is the last of the four results
        records = _Records([AppliedRecord(**row) for row in await cur.fetchall()])

        try:
            yield _LockedSession(conn, records)
        finally:
            await _reset_session(conn)


async def _reset_session(conn: psycopg.AsyncConnection) -> None:
    if conn.closed:
        return
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.rollback()
        await conn.execute(RESET_SESSION)
    except psycopg.Error as exc:
        # A connection that may still hold the lock must not go back to the pool.
        logger.warning("could not reset a migration session (%s); closing it", type(exc).__name__)
        await conn.close()


def _user_sql_error(
    exc: psycopg.Error,
    migration: Migration,
    script: Script,
    statement: Statement,
    field_name: str,
    settings: Settings,
) -> InvalidInput:
    """Turn an error raised by one statement of migration SQL into a 422.

    ``position`` and ``line`` point into the whole script: PostgreSQL's position
    within the statement when it gives one, else the statement's first character.
    """
    text = script.sql[statement.start : statement.end]
    error = sql_error(exc, sql_text=text)
    details: dict[str, Any] = dict(error.details or {})
    offset = details.get("position") or len(text) - len(text.lstrip()) + 1
    details["position"] = statement.start + offset
    details["line"] = sqlcheck.line_of(script.sql, details["position"] - 1)
    details.update(
        {"field": field_name, "migration_id": str(migration.id), "version": migration.version}
    )
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        details.setdefault(
            "hint",
            f"a lock was held by another session for longer than lock_timeout "
            f"({settings.migration_lock_timeout_ms} ms); retry when the table is less busy",
        )
    elif isinstance(exc, psycopg.errors.QueryCanceled):
        details.setdefault(
            "hint",
            f"a statement ran longer than statement_timeout "
            f"({settings.migration_statement_timeout_ms} ms)",
        )
    return InvalidInput(
        f"{field_name} of migration {migration.version} {migration.name!r} failed at line "
        f"{details['line']}: {error.message}; nothing was changed",
        details=details,
        code="sql_error",
    )


async def _execute_script(
    conn: psycopg.AsyncConnection,
    settings: Settings,
    migration: Migration,
    script: Script,
    field_name: str,
) -> None:
    """Run the statements one by one, so that an error names the statement that failed."""
    for statement in script.statements:
        try:
            await conn.execute(script.sql[statement.start : statement.end])
        except psycopg.Error as exc:
            if not _is_user_sql_error(exc, conn):
                raise
            raise _user_sql_error(exc, migration, script, statement, field_name, settings) from None


def _is_user_sql_error(exc: psycopg.Error, conn: psycopg.AsyncConnection) -> bool:
    """Return whether the server rejected the SQL, rather than the connection failing."""
    return exc.sqlstate is not None and not conn.broken


async def _invalid_indexes(conn: psycopg.AsyncConnection) -> set[int]:
    cur = await conn.execute("SELECT indexrelid::int8 AS oid FROM pg_index WHERE NOT indisvalid")
    return {row["oid"] for row in await cur.fetchall()}


async def _drop_new_invalid_indexes(conn: psycopg.AsyncConnection, before: set[int]) -> None:
    """Drop the invalid indexes that a failed concurrent index build left behind."""
    cur = await conn.execute(
        "SELECT i.indexrelid::int8 AS oid, n.nspname AS schema, c.relname AS name "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid"
    )
    for row in await cur.fetchall():
        if row["oid"] in before:
            continue
        try:
            await conn.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
                    sql.Identifier(row["schema"]), sql.Identifier(row["name"])
                )
            )
        except psycopg.Error as exc:
            logger.warning(
                "could not drop the invalid index %s.%s left by a failed migration: %s",
                row["schema"],
                row["name"],
                type(exc).__name__,
            )


async def _run(
    conn: psycopg.AsyncConnection,
    settings: Settings,
    migration: Migration,
    script: Script,
    field_name: str,
    record: sql.Composable,
    record_params: tuple[Any, ...],
) -> AppliedRecord:
    """Run ``script`` and write ``record`` so that both happen or neither does.

    Returns the record row that was inserted or deleted.

    A transactional script and its record share one transaction. A script that
    must run outside a transaction is a single statement, which ``sqlcheck``
    enforces. It runs alone, and the record is written after it succeeded.
    """
    if script.transactional:
        async with conn.transaction():
            # Again per transaction: earlier SQL in this session may have changed them.
            await conn.execute(_timeouts(settings, local=True))
            await _execute_script(conn, settings, migration, script, field_name)
            return await _write_record(conn, record, record_params)

    await conn.execute(_timeouts(settings, local=False))
    before = await _invalid_indexes(conn)
    try:
        await _execute_script(conn, settings, migration, script, field_name)
    except InvalidInput:
        await _drop_new_invalid_indexes(conn, before)
        raise
    # NOTE: if the connection fails between the statement and this record, the
    # change is in place while the migration still shows as pending.
    return await _write_record(conn, record, record_params)


async def _write_record(
    conn: psycopg.AsyncConnection, record: sql.Composable, params: tuple[Any, ...]
) -> AppliedRecord:
    """Run the INSERT or DELETE of the record and return the row it changed."""
    cur = await conn.execute(record, params)
    if cur.rowcount != 1:
        raise RuntimeError(f"recording the migration changed {cur.rowcount} rows instead of 1")
    row = await cur.fetchone()
    assert row is not None
    return AppliedRecord(**row)


RECORD_APPLIED = sql.SQL(
    "INSERT INTO zbaas_meta.schema_migrations (version, migration_id, name, checksum) "
    "VALUES (%s, %s, %s, %s) RETURNING version, migration_id, name, checksum, applied_at"
)
RECORD_ROLLED_BACK = sql.SQL(
    "DELETE FROM zbaas_meta.schema_migrations WHERE migration_id = %s AND version = %s "
    "RETURNING version, migration_id, name, checksum, applied_at"
)


# Listing


def _state(migration: Migration, record: AppliedRecord | None) -> MigrationState:
    drift = None
    if record is not None and record.checksum != migration.checksum:
        drift = Drift(
            "checksum_mismatch",
            f"the database records checksum {record.checksum} for this migration, but its "
            f"up_sql now hashes to {migration.checksum}; the applied SQL was different",
        )
    elif record is not None and record.version != migration.version:
        drift = Drift(
            "version_mismatch",
            f"the database records this migration as version {record.version}, "
            f"not {migration.version}",
        )
    return MigrationState(
        id=migration.id,
        version=migration.version,
        name=migration.name,
        up_sql=migration.up_sql,
        down_sql=migration.down_sql,
        checksum=migration.checksum,
        status="applied" if record is not None else "pending",
        applied_at=record.applied_at if record is not None else None,
        created_at=migration.created_at,
        drift=drift,
    )


def _unknown_state(record: AppliedRecord) -> MigrationState:
    return MigrationState(
        id=record.migration_id,
        version=record.version,
        name=record.name,
        up_sql=None,
        down_sql=None,
        checksum=record.checksum,
        status="applied",
        applied_at=record.applied_at,
        created_at=None,
        drift=Drift(
            "unknown_migration",
            f"the database records migration {record.version} {record.name!r} that this "
            "project does not have, for example after restoring a backup of another history",
        ),
    )


async def list_migrations(
    control: psycopg.AsyncConnection, services: Services, project: Project
) -> list[MigrationState]:
    """List every migration in version order, with its status and any drift."""
    rows = await _all_rows(control, project.id)
    async with as_owner(services, project) as conn:
        records = (await _records(conn)).by_id()

    states = [_state(row, records.pop(row.id, None)) for row in rows]
    states.extend(_unknown_state(record) for record in records.values())
    states.sort(key=lambda state: (state.version, state.created_at is None))
    return states


async def get_migration(
    control: psycopg.AsyncConnection, services: Services, project: Project, migration_id: UUID
) -> MigrationState:
    migration = await _get_row(control, project.id, migration_id)
    async with as_owner(services, project) as conn:
        record = (await _records(conn)).by_id().get(migration.id)
    return _state(migration, record)


# Create, update, delete


async def _check_sql(
    services: Services, project: Project, up_sql: str, down_sql: str | None
) -> tuple[list[LintWarning], int]:
    """Parse both scripts and lint up_sql; return the warnings and the highest applied version."""
    up_script = await _parse(up_sql, "up_sql")
    if down_sql is not None:
        await _parse(down_sql, "down_sql")

    async with as_owner(services, project) as conn:
        cur = await conn.execute(
            "SELECT current_setting('server_version_num')::int AS server_version, "
            "coalesce(max(version), 0) AS max_version FROM zbaas_meta.schema_migrations"
        )
        row = await cur.fetchone()
    assert row is not None

    warnings = await sqlcheck.lint(
        up_sql, in_transaction=up_script.transactional, server_version_num=row["server_version"]
    )
    return warnings, int(row["max_version"])


async def _parse(sql_text: str, field_name: str) -> Script:
    """Parse in a worker thread when the SQL is long enough to hold up the event loop."""
    if len(sql_text) < INLINE_PARSE_LENGTH:
        return sqlcheck.parse_script(sql_text, field_name)
    return await asyncio.to_thread(sqlcheck.parse_script, sql_text, field_name)


def _blank_to_none(down_sql: str | None) -> str | None:
    return down_sql if down_sql is not None and down_sql.strip() else None


async def create(
    control: psycopg.AsyncConnection,
    services: Services,
    project: Project,
    name: str,
    up_sql: str,
    down_sql: str | None,
) -> tuple[MigrationState, list[LintWarning]]:
    """Check and store a pending migration as the project's next version.

    Returns it with squawk's warnings for up_sql. A blank ``down_sql`` is stored
    as none, which makes the migration irreversible.
    """
    check_name(name)
    down_sql = _blank_to_none(down_sql)
    warnings, max_applied = await _check_sql(services, project, up_sql, down_sql)

    async with control.transaction():
        # The project row lock makes concurrent creates take consecutive versions.
        await control.execute("SELECT 1 FROM projects WHERE id = %s FOR UPDATE", (project.id,))
        cur = control.cursor(row_factory=class_row(Migration))
        await cur.execute(
            f"INSERT INTO migrations (project_id, version, name, up_sql, down_sql, checksum) "
            f"SELECT %s, greatest(coalesce(max(version), 0), %s) + 1, %s, %s, %s, %s "
            f"FROM migrations WHERE project_id = %s RETURNING {MIGRATION_COLUMNS}",
            (project.id, max_applied, name, up_sql, down_sql, checksum(up_sql), project.id),
        )
        migration = await cur.fetchone()
    assert migration is not None

    logger.info(
        "project %s: created migration %s version %s", project.id, migration.id, migration.version
    )
    return _state(migration, None), warnings


def _immutable(migration: Migration, action: str) -> Conflict:
    return Conflict(
        f"migration {migration.version} {migration.name!r} is applied and cannot be {action}; "
        "roll it back first or create a new migration",
        code="migration_applied",
    )


async def update(
    control: psycopg.AsyncConnection,
    services: Services,
    project: Project,
    migration_id: UUID,
    *,
    name: str | None = None,
    up_sql: str | None = None,
    down_sql: str | None = None,
    down_sql_given: bool = False,
) -> tuple[MigrationState, list[LintWarning]]:
    """Change a pending migration; ``down_sql_given`` with ``down_sql=None`` removes it.

    Returns the migration with squawk's warnings for its up_sql.
    """
    if name is not None:
        check_name(name)
    migration = await _get_row(control, project.id, migration_id)
    new_up = up_sql if up_sql is not None else migration.up_sql
    new_down = _blank_to_none(down_sql) if down_sql_given else migration.down_sql
    warnings, _ = await _check_sql(services, project, new_up, new_down)

    # Under the lock, no run can apply the migration between the check and the write.
    async with _locked_session(services, project) as session:
        if migration.id in session.records.by_id():
            raise _immutable(migration, "changed")
        cur = control.cursor(row_factory=class_row(Migration))
        await cur.execute(
            f"UPDATE migrations SET name = %s, up_sql = %s, down_sql = %s, checksum = %s "
            f"WHERE id = %s AND project_id = %s RETURNING {MIGRATION_COLUMNS}",
            (name or migration.name, new_up, new_down, checksum(new_up), migration.id, project.id),
        )
        updated = await cur.fetchone()
    if updated is None:
        raise _not_found(migration_id)
    return _state(updated, None), warnings


async def delete(
    control: psycopg.AsyncConnection, services: Services, project: Project, migration_id: UUID
) -> None:
    """Delete a pending migration."""
    migration = await _get_row(control, project.id, migration_id)
    async with _locked_session(services, project) as session:
        if migration.id in session.records.by_id():
            raise _immutable(migration, "deleted")
        cur = await control.execute(
            "DELETE FROM migrations WHERE id = %s AND project_id = %s", (migration.id, project.id)
        )
    if cur.rowcount != 1:
        raise _not_found(migration_id)


# Apply and roll back


async def _apply_locked(
    control: psycopg.AsyncConnection,
    session: _LockedSession,
    settings: Settings,
    project: Project,
    migration_id: UUID,
) -> MigrationState:
    """Apply one migration on a connection that holds the project's migration lock."""
    migration, earlier_ids = await _get_row_with_earlier(control, project.id, migration_id)
    records = session.records
    applied = records.by_id()
    if migration.id in applied:
        raise Conflict(
            f"migration {migration.version} {migration.name!r} is already applied",
            code="migration_already_applied",
        )

    if any(earlier_id not in applied for earlier_id in earlier_ids):
        earlier = await _summaries(control, project.id, below_version=migration.version)
        pending = [summary for summary in earlier if summary.id not in applied]
        raise Conflict(
            f"migration {migration.version} {migration.name!r} cannot be applied while earlier "
            f"migrations are pending: {', '.join(p.label() for p in pending)}; apply them first",
            details={"pending": [p.as_dict() for p in pending]},
            code="migrations_pending",
        )
    for record in records.rows:
        if record.version == migration.version:
            raise Conflict(
                f"version {migration.version} is already recorded in the database for "
                f"migration {record.name!r} ({record.migration_id}), which this project does "
                "not have; resolve the drift shown in the migration list first",
                code="migration_version_taken",
            )

    script = await _parse(migration.up_sql, "up_sql")
    started = time.perf_counter()
    record = await _run(
        session.conn,
        settings,
        migration,
        script,
        "up_sql",
        RECORD_APPLIED,
        (migration.version, migration.id, migration.name, migration.checksum),
    )
    logger.info(
        "project %s: applied migration %s version %s in %.1f ms",
        project.id,
        migration.id,
        migration.version,
        (time.perf_counter() - started) * 1000,
    )
    records.rows.append(record)
    records.rows.sort(key=lambda row: row.version)
    return _state(migration, record)


async def apply(
    control: psycopg.AsyncConnection, services: Services, project: Project, migration_id: UUID
) -> MigrationState:
    """Apply one pending migration whose predecessors are all applied.

    Raises Conflict when it is applied already, an earlier one is pending or
    another run holds the lock, and InvalidInput when its SQL fails. After a
    failure the database is as before and the migration is still pending.
    """
    async with _locked_session(services, project) as session:
        return await _apply_locked(control, session, services.settings, project, migration_id)


async def apply_pending(
    control: psycopg.AsyncConnection, services: Services, project: Project
) -> list[RunResult]:
    """Apply every pending migration in version order, stopping at the first failure.

    The error raised on a failure carries every migration's result in
    ``details["results"]``: the ones before it stay applied.
    """
    async with _locked_session(services, project) as session:
        applied = session.records.by_id()
        pending = [s for s in await _summaries(control, project.id) if s.id not in applied]

        results: list[RunResult] = []
        for index, summary in enumerate(pending):
            try:
                state = await _apply_locked(
                    control, session, services.settings, project, summary.id
                )
            except ZbaasError as exc:
                results.append(RunResult(summary.id, summary.version, summary.name, "failed"))
                results.extend(
                    RunResult(s.id, s.version, s.name, "skipped") for s in pending[index + 1 :]
                )
                raise _run_failed(exc, results, applied_count=index) from None
            results.append(
                RunResult(summary.id, summary.version, summary.name, "applied", state.applied_at)
            )
    return results


def _run_failed(exc: ZbaasError, results: list[RunResult], *, applied_count: int) -> ZbaasError:
    details = dict(exc.details) if isinstance(exc.details, dict) else {}
    details["results"] = [
        {
            "id": str(r.id),
            "version": r.version,
            "name": r.name,
            "status": r.status,
            "applied_at": r.applied_at.isoformat() if r.applied_at else None,
        }
        for r in results
    ]
    message = f"{exc.message} ({applied_count} of {len(results)} pending migrations were applied)"
    return type(exc)(message, details=details, code=exc.code)


async def rollback(
    control: psycopg.AsyncConnection, services: Services, project: Project, migration_id: UUID
) -> MigrationState:
    """Run the down_sql of the latest applied migration and remove its record.

    Raises Conflict when the migration is not applied, is not the latest applied
    one or has no down_sql, and InvalidInput when down_sql fails. After a
    failure the database is as before and the migration is still applied.
    """
    migration = await _get_row(control, project.id, migration_id)
    async with _locked_session(services, project) as session:
        records = session.records
        record = records.by_id().get(migration.id)
        if record is None:
            raise Conflict(
                f"migration {migration.version} {migration.name!r} is not applied; "
                "there is nothing to roll back",
                code="migration_not_applied",
            )
        latest = records.latest()
        if latest is not None and latest.migration_id != migration.id:
            raise Conflict(
                f"only the latest applied migration can be rolled back, and that is "
                f"{latest.version} {latest.name!r}; roll it back first",
                details={
                    "latest": {
                        "id": str(latest.migration_id),
                        "version": latest.version,
                        "name": latest.name,
                    }
                },
                code="migration_not_latest",
            )
        if migration.down_sql is None:
            raise Conflict(
                f"migration {migration.version} {migration.name!r} has no down_sql, so it "
                "cannot be rolled back; write a new migration that reverses it",
                code="migration_irreversible",
            )

        script = await _parse(migration.down_sql, "down_sql")
        await _run(
            session.conn,
            services.settings,
            migration,
            script,
            "down_sql",
            RECORD_ROLLED_BACK,
            (migration.id, record.version),
        )
    logger.info(
        "project %s: rolled back migration %s version %s",
        project.id,
        migration.id,
        migration.version,
    )
    return _state(migration, None)
