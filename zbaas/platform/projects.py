"""Projects: the control row and the lifecycle of the database behind it."""

from __future__ import annotations

import logging
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from zbaas.errors import Conflict, InvalidInput, NotFound
from zbaas.platform.security import SecretBox
from zbaas.postgres.pools import Pools
from zbaas.storage.backend import Backend
from zbaas.tenant import branches, provisioning

logger = logging.getLogger("zbaas.platform")

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
DB_PREFIX = "zbaas_"
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
REF_ALPHABET = string.ascii_lowercase + string.digits
REF_LENGTH = 16


@dataclass
class Project:
    """A project's control row, with its credentials still encrypted."""

    id: UUID
    org_id: str
    ref: str
    name: str
    slug: str
    description: str
    db_name: str
    status: str
    owner_role: str
    owner_password: str
    authenticator_role: str
    authenticator_password: str
    jwt_secret: str
    created_at: datetime
    updated_at: datetime


PROJECT_COLUMNS = (
    "id, org_id, ref, name, slug, description, db_name, status, owner_role, owner_password, "
    "authenticator_role, authenticator_password, jwt_secret, created_at, updated_at"
)


def max_slug_bytes(org_id: str) -> int:
    return MAX_IDENTIFIER_BYTES - len(DB_PREFIX) - len(org_id) - 1


def database_name(org_id: str, slug: str) -> str:
    """``zbaas_<org_id>_<slug>`` with the slug's hyphens as underscores."""
    return f"{DB_PREFIX}{org_id}_{slug.replace('-', '_')}"


def check_slug(org_id: str, slug: str) -> None:
    if not SLUG_PATTERN.fullmatch(slug):
        raise InvalidInput(
            f"invalid slug {slug!r}: use lowercase letters, digits and single hyphens, "
            "not starting or ending with a hyphen",
            details={"field": "slug"},
        )
    limit = max_slug_bytes(org_id)
    if len(slug) > limit:
        raise InvalidInput(
            f"slug {slug!r} is {len(slug)} characters; the maximum is {limit} so that the "
            f"database name fits PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte limit",
            details={"field": "slug", "max_length": limit},
        )


async def create(
    conn: psycopg.AsyncConnection,
    pools: Pools,
    box: SecretBox,
    org_id: str,
    name: str,
    slug: str,
    description: str,
) -> Project:
    """Reserve the control row, provision the database, then mark the project active.

    The row is reserved first, so two requests for one slug cannot both start
    provisioning. A failure at any later step removes the row, the database and
    the roles.
    """
    check_slug(org_id, slug)
    db_name = database_name(org_id, slug)
    ref = "".join(secrets.choice(REF_ALPHABET) for _ in range(REF_LENGTH))
    owner, authenticator = provisioning.role_names(ref)
    roles = provisioning.ProjectRoles(
        owner, secrets.token_urlsafe(32), authenticator, secrets.token_urlsafe(32)
    )

    cur = conn.cursor(row_factory=class_row(Project))
    try:
        await cur.execute(
            f"INSERT INTO projects (org_id, ref, name, slug, description, db_name, status, "
            f"owner_role, owner_password, authenticator_role, authenticator_password, jwt_secret) "
            f"VALUES (%s, %s, %s, %s, %s, %s, 'provisioning', %s, %s, %s, %s, %s) "
            f"RETURNING {PROJECT_COLUMNS}",
            (
                org_id,
                ref,
                name,
                slug,
                description,
                db_name,
                owner,
                box.encrypt(roles.owner_password),
                authenticator,
                box.encrypt(roles.authenticator_password),
                box.encrypt(secrets.token_urlsafe(48)),
            ),
        )
    except psycopg.errors.UniqueViolation:
        raise Conflict(
            f"a project with the slug {slug!r} or the database name {db_name} already exists",
            code="project_exists",
        ) from None
    project = await cur.fetchone()
    assert project is not None

    provisioned = False
    try:
        # NOTE: every project lives on the one server of ZBAAS_DATABASE_URL or the
        # embedded one. Registering more servers and placing projects on the least
        # loaded one are not built yet.
        await provisioning.create_project_database(pools, db_name, roles)
        provisioned = True
        await conn.execute("UPDATE projects SET status = 'active' WHERE id = %s", (project.id,))
    except BaseException as exc:
        logger.warning("creating project %s failed; removing what was created", project.id)
        if provisioned:
            await provisioning.drop_project_database(pools, db_name, [authenticator, owner])
        await conn.execute("DELETE FROM projects WHERE id = %s", (project.id,))
        if isinstance(exc, psycopg.errors.DuplicateDatabase):
            raise Conflict(
                f"the database {db_name} already exists on the server; choose another slug",
                code="project_exists",
            ) from None
        raise

    project.status = "active"
    logger.info("project %s created with database %s", project.id, db_name)
    return project


async def list_for_org(conn: psycopg.AsyncConnection, org_id: str) -> list[Project]:
    cur = conn.cursor(row_factory=class_row(Project))
    await cur.execute(
        f"SELECT {PROJECT_COLUMNS} FROM projects WHERE org_id = %s AND status = 'active' "
        "ORDER BY created_at, id",
        (org_id,),
    )
    return await cur.fetchall()


async def get(conn: psycopg.AsyncConnection, project_id: UUID | str) -> Project | None:
    cur = conn.cursor(row_factory=class_row(Project))
    await cur.execute(
        f"SELECT {PROJECT_COLUMNS} FROM projects WHERE id = %s AND status = 'active'",
        (project_id,),
    )
    return await cur.fetchone()


async def get_by_slug(conn: psycopg.AsyncConnection, org_id: str, slug: str) -> Project:
    cur = conn.cursor(row_factory=class_row(Project))
    await cur.execute(
        f"SELECT {PROJECT_COLUMNS} FROM projects "
        "WHERE org_id = %s AND slug = %s AND status = 'active'",
        (org_id, slug),
    )
    project = await cur.fetchone()
    if project is None:
        raise NotFound(f"project with slug {slug!r} not found", code="project_not_found")
    return project


async def update(
    conn: psycopg.AsyncConnection, project: Project, name: str | None, description: str | None
) -> Project:
    cur = conn.cursor(row_factory=class_row(Project))
    await cur.execute(
        f"UPDATE projects SET name = coalesce(%s, name), "
        f"description = coalesce(%s, description), updated_at = now() "
        f"WHERE id = %s AND status = 'active' RETURNING {PROJECT_COLUMNS}",
        (name, description, project.id),
    )
    updated = await cur.fetchone()
    if updated is None:
        raise NotFound(f"project {project.id} not found", code="project_not_found")
    return updated


async def delete(
    conn: psycopg.AsyncConnection, pools: Pools, storage: Backend, project: Project
) -> None:
    """Drop the branches, the database and roles, purge storage, then remove keys and the row.

    Every blob of the project is deleted, whichever bucket held it: blob keys
    start with the project id.

    The row is marked ``deleting`` first, so a concurrent second DELETE gets 404
    and requests stop resolving the project while its database goes away.
    """
    cur = await conn.execute(
        "UPDATE projects SET status = 'deleting' WHERE id = %s AND status = 'active'",
        (project.id,),
    )
    if cur.rowcount != 1:
        raise NotFound(f"project {project.id} not found", code="project_not_found")

    await branches.drop_project_branches(conn, pools, project.id)
    await provisioning.drop_project_database(
        pools, project.db_name, [project.authenticator_role, project.owner_role]
    )
    await storage.delete_prefix(f"{project.id}/")
    await conn.execute("DELETE FROM projects WHERE id = %s", (project.id,))
    logger.info("project %s deleted with database %s", project.id, project.db_name)
