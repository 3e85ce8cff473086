"""Diff a branch against its parent, and merge its schema changes into the parent.

A merge runs in one transaction on the parent, as the parent's owner role.
Inside that transaction it inspects the parent, plans the DDL against the
branch and the stored base, and checks conflicts and destructive statements.
Then it applies the DDL and records the branch's new migrations. Any refusal
or error rolls the transaction back, so the parent is left exactly as it was.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from zbaas.config import Settings
from zbaas.errors import Conflict, InvalidInput
from zbaas.platform.security import SecretBox
from zbaas.postgres.pools import Pools
from zbaas.tenant import branch_copy, branches, schema_diff
from zbaas.tenant.branches import Branch

if TYPE_CHECKING:
    from zbaas.platform.projects import Project

logger = logging.getLogger("zbaas.tenant.branches")

# Advisory lock id taken in the parent during a merge, so merges of one parent
# run one at a time.
MERGE_LOCK_KEY = 0x7A62_6272_6D67


@dataclass
class Diff:
    """The plan of a merge and the migration versions it would record."""

    plan: schema_diff.Plan
    migrations: list[int] = field(default_factory=list)

    def conflicts(self) -> list[dict[str, str]]:
        return [conflict.to_dict() for conflict in self.plan.conflicts]


async def diff(
    conn: psycopg.AsyncConnection, pools: Pools, box: SecretBox, project: Project, branch: Branch
) -> Diff:
    """Return the ordered DDL that would bring the branch's changes onto the parent."""
    branches.require_active(branch)
    base = await branches.load_base(conn, branch)
    branch_conninfo = pools.conninfo(branch.db_name)
    parent_conninfo = _parent_conninfo(pools, box, project)

    def work() -> Diff:
        branch_schema, branch_history = _read_branch(branch_conninfo)
        with psycopg.connect(parent_conninfo) as parent:
            parent.read_only = True
            parent_schema = schema_diff.inspect_schema(parent)
            parent_history = _history(parent)
        return _plan(base, branch_schema, parent_schema, branch_history, parent_history)[0]

    return await asyncio.to_thread(work)


async def merge(
    conn: psycopg.AsyncConnection,
    pools: Pools,
    box: SecretBox,
    settings: Settings,
    project: Project,
    branch: Branch,
    allow_destructive: bool,
) -> Diff:
    """Apply the branch's schema changes and new migrations to the parent in one transaction.

    Raises Conflict (409) listing the conflicts, or the destructive statements
    unless ``allow_destructive``, or the statement that failed; in each case
    nothing is applied.
    """
    branches.require_active(branch)
    base = await branches.load_base(conn, branch)
    branch_conninfo = pools.conninfo(branch.db_name)
    parent_conninfo = _parent_conninfo(pools, box, project)
    timeouts = (
        f"{settings.migration_lock_timeout_ms}ms",
        f"{settings.migration_statement_timeout_ms}ms",
    )

    def work() -> tuple[Diff, schema_diff.Schema]:
        branch_schema, branch_history = _read_branch(branch_conninfo)
        with psycopg.connect(parent_conninfo) as parent, parent.transaction():
            parent.execute("SELECT pg_advisory_xact_lock(%s)", (MERGE_LOCK_KEY,))
            parent.execute(
                "SELECT set_config('lock_timeout', %s, true), "
                "set_config('statement_timeout', %s, true)",
                timeouts,
            )
            parent_schema = schema_diff.inspect_schema(parent)
            parent_history = _history(parent)
            result, new_history = _plan(
                base, branch_schema, parent_schema, branch_history, parent_history
            )
            _check(result, allow_destructive)
            for change in result.plan.changes:
                _apply(parent, change.sql)
            _record_history(parent, new_history)
        return result, branch_schema

    result, branch_schema = await asyncio.to_thread(work)
    await branches.record_merge(conn, branch, branch_schema)
    logger.info(
        "branch %s merged into project %s: %d statements, %d migrations",
        branch.name,
        project.id,
        len(result.plan.changes),
        len(result.migrations),
    )
    return result


def _parent_conninfo(pools: Pools, box: SecretBox, project: Project) -> str:
    # The DDL embeds names and bodies that the branch's owner wrote, so it runs
    # with no more rights than the owner has on the parent.
    return pools.conninfo(project.db_name, project.owner_role, box.decrypt(project.owner_password))


def _read_branch(conninfo: str) -> tuple[schema_diff.Schema, list[dict[str, Any]]]:
    with psycopg.connect(conninfo) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        return schema_diff.inspect_schema(conn), _history(conn)


def _history(conn: psycopg.Connection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute("SELECT * FROM zbaas_meta.schema_migrations ORDER BY version")
    return cur.fetchall()


def _plan(
    base: schema_diff.Schema,
    branch_schema: schema_diff.Schema,
    parent_schema: schema_diff.Schema,
    branch_history: list[dict[str, Any]],
    parent_history: list[dict[str, Any]],
) -> tuple[Diff, list[dict[str, Any]]]:
    """Plan the DDL and pick the branch's migrations that the parent lacks.

    A migration is new when its id is not in the parent's history. A new one
    whose version the parent already used for another migration is a conflict.
    """
    try:
        plan = schema_diff.plan_merge(base, branch_schema, parent_schema)
    except schema_diff.UnsupportedStatement as exc:
        raise InvalidInput(str(exc), code="unsupported_ddl") from None

    parent_ids = {str(row["migration_id"]) for row in parent_history}
    parent_versions = {row["version"] for row in parent_history}
    new_history = [row for row in branch_history if str(row["migration_id"]) not in parent_ids]
    for row in new_history:
        if row["version"] in parent_versions:
            plan.conflicts.append(
                schema_diff.Conflict("migration", f"version {row['version']} ({row['name']})")
            )
    return Diff(plan, [row["version"] for row in new_history]), new_history


def _check(result: Diff, allow_destructive: bool) -> None:
    if result.plan.conflicts:
        names = ", ".join(f"{c.kind} {c.name}" for c in result.plan.conflicts[:10])
        raise Conflict(
            f"the parent and the branch both changed {names} since the branch was made; "
            "make the branch match the parent for these objects and merge again",
            code="merge_conflict",
            details={"conflicts": result.conflicts()},
        )
    destructive = result.plan.destructive
    if destructive and not allow_destructive:
        raise Conflict(
            f"the merge has {len(destructive)} destructive statements; review them and "
            'send {"allow_destructive": true} to apply them',
            code="destructive_changes",
            details={
                "statements": [{"sql": c.sql, "reason": c.reason} for c in destructive],
            },
        )


def _apply(conn: psycopg.Connection, statement: str) -> None:
    try:
        conn.execute(statement.encode())
    except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as exc:
        raise _failed(statement, exc) from None
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        raise _failed(statement, exc) from None


def _failed(statement: str, exc: psycopg.Error) -> Conflict:
    message = exc.diag.message_primary or str(exc).strip()
    return Conflict(
        f"merge failed and nothing was applied: {message}",
        code="merge_failed",
        details={"statement": statement, "sqlstate": exc.sqlstate, "message": message},
    )


def _record_history(conn: psycopg.Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = sorted(
        set(rows[0]) & set(branch_copy.table_columns(conn, *branch_copy.HISTORY_TABLE))
    )
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(*branch_copy.HISTORY_TABLE),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder() for _ in columns),
    )
    with conn.cursor() as cur:
        cur.executemany(statement, [[row[c] for c in columns] for row in rows])
