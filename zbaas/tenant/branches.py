"""Database branches: a copy of a project's database with roles of its own.

A branch database gets the same roles, grants, ``auth`` and ``zbaas_meta``
schemas as a project database (see ``provisioning``). Then the bundled
``pg_dump``, piped into ``psql``, copies the parent's other schemas into it,
with their rows when ``with_data`` is set. The parent's applied-migration
history is always copied, and ``auth.users`` rows only with the data. Objects
owned by the parent's owner role are reassigned to the branch's owner role.
``branch_copy`` does the copy; this module keeps the control rows.

The control row keeps the parent's schema as inspected at the moment of the
copy (the base), which ``branch_merge`` uses to tell which side changed what.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from zbaas.errors import Conflict, InvalidInput, NotFound
from zbaas.platform.security import SecretBox
from zbaas.postgres.pools import Pools
from zbaas.tenant import branch_copy, provisioning, schema_diff

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
        base = await branch_copy.copy_parent(pools, project, db_name, owner, with_data)
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
