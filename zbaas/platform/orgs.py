"""Organizations and their members."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from zbaas.errors import Conflict, Forbidden, NotFound

ROLES = ("owner", "admin", "member")
MANAGER_ROLES = ("owner", "admin")


@dataclass
class Organization:
    id: str
    name: str
    role: str
    created_at: datetime


@dataclass
class Member:
    user_id: UUID
    email: str
    full_name: str
    role: str
    created_at: datetime


async def create(conn: psycopg.AsyncConnection, name: str, owner_id: UUID) -> Organization:
    """Create an organization whose owner is ``owner_id``."""
    from zbaas.platform.accounts import new_org_id

    org_id = new_org_id()
    async with conn.transaction():
        row = await (
            await conn.execute(
                "INSERT INTO organizations (id, name) VALUES (%s, %s) RETURNING created_at",
                (org_id, name),
            )
        ).fetchone()
        assert row is not None
        await conn.execute(
            "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'owner')",
            (org_id, owner_id),
        )
    return Organization(org_id, name, "owner", row["created_at"])


async def list_for_user(conn: psycopg.AsyncConnection, user_id: UUID) -> list[Organization]:
    """List the user's organizations, oldest membership first."""
    cur = conn.cursor(row_factory=class_row(Organization))
    await cur.execute(
        "SELECT o.id, o.name, m.role, o.created_at FROM memberships m "
        "JOIN organizations o ON o.id = m.org_id WHERE m.user_id = %s "
        "ORDER BY m.created_at, o.id",
        (user_id,),
    )
    return await cur.fetchall()


async def membership(conn: psycopg.AsyncConnection, org_id: str, user_id: UUID) -> str:
    """Return the user's role in the organization; an org they are not in is 404."""
    row = await (
        await conn.execute(
            "SELECT role FROM memberships WHERE org_id = %s AND user_id = %s", (org_id, user_id)
        )
    ).fetchone()
    if row is None:
        raise NotFound(f"organization {org_id} not found", code="org_not_found")
    return str(row["role"])


async def acting_org(
    conn: psycopg.AsyncConnection, user_id: UUID, requested: str | None
) -> tuple[str, str]:
    """Return (org id, role) named by the X-Org-Id header, else the user's first org."""
    if requested:
        return requested, await membership(conn, requested, user_id)
    row = await (
        await conn.execute(
            "SELECT org_id, role FROM memberships WHERE user_id = %s "
            "ORDER BY created_at, org_id LIMIT 1",
            (user_id,),
        )
    ).fetchone()
    if row is None:
        raise NotFound("you are not a member of any organization; create one with POST /orgs")
    return str(row["org_id"]), str(row["role"])


def require_manager(role: str, action: str) -> None:
    if role not in MANAGER_ROLES:
        raise Forbidden(f"only organization owners and admins may {action}; your role is {role}")


async def list_members(conn: psycopg.AsyncConnection, org_id: str) -> list[Member]:
    cur = conn.cursor(row_factory=class_row(Member))
    await cur.execute(
        "SELECT u.id AS user_id, u.email, u.full_name, m.role, m.created_at "
        "FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.org_id = %s "
        "ORDER BY m.created_at, u.email",
        (org_id,),
    )
    return await cur.fetchall()


async def add_member(conn: psycopg.AsyncConnection, org_id: str, email: str, role: str) -> Member:
    user = await (
        await conn.execute("SELECT id FROM users WHERE lower(email) = lower(%s)", (email,))
    ).fetchone()
    if user is None:
        raise NotFound(
            f"no user with the email {email}; they must sign up first", code="user_not_found"
        )
    try:
        await conn.execute(
            "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, %s)",
            (org_id, user["id"], role),
        )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"{email} is already a member of organization {org_id}") from None
    members = [m for m in await list_members(conn, org_id) if m.user_id == user["id"]]
    return members[0]


async def remove_member(conn: psycopg.AsyncConnection, org_id: str, user_id: UUID) -> None:
    """Remove a member; the last owner stays, so an organization is never orphaned."""
    async with conn.transaction():
        # Locking the owners' rows serializes two concurrent removals of the last two owners.
        owners = await (
            await conn.execute(
                "SELECT user_id FROM memberships WHERE org_id = %s AND role = 'owner' FOR UPDATE",
                (org_id,),
            )
        ).fetchall()
        owner_ids = {str(r["user_id"]) for r in owners}
        if owner_ids == {str(user_id)}:
            raise Conflict(
                "the last owner of an organization cannot be removed; make another member "
                "owner first",
                code="last_owner",
            )
        cur = await conn.execute(
            "DELETE FROM memberships WHERE org_id = %s AND user_id = %s", (org_id, user_id)
        )
        if cur.rowcount != 1:
            raise NotFound(f"user {user_id} is not a member of organization {org_id}")
