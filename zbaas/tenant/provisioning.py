"""Create and drop a project database with its roles, grants, ``auth`` and ``storage`` schemas.

Each project gets an owner role (LOGIN) that owns its objects and runs its SQL,
and an authenticator role (LOGIN, NOINHERIT) that the data API connects as and
that may only ``SET ROLE`` to ``anon``, ``authenticated`` or ``service_role``.
Neither can create roles or databases, and only they may connect to the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from zbaas.postgres.pools import Pools
from zbaas.postgres.server import API_ROLES

logger = logging.getLogger("zbaas.tenant")

# The database itself belongs to the control plane's superuser, so the owner role
# cannot drop it or change its settings. The owner gets CONNECT, CREATE and TEMP
# and owns the public schema.
DATABASE_SETUP = """
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO {owner};
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO anon, authenticated, service_role;

CREATE SCHEMA auth;
GRANT USAGE ON SCHEMA auth TO {owner}, anon, authenticated, service_role;

-- The claims of the request's JWT, set per transaction by the data API.
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{{}}')::jsonb
$$;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT nullif(auth.jwt() ->> 'sub', '')::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(auth.jwt() ->> 'role', current_user::text)
$$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO {owner}, anon, authenticated, service_role;

CREATE TABLE auth.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    aud text NOT NULL DEFAULT 'authenticated',
    role text NOT NULL DEFAULT 'authenticated',
    email text NOT NULL,
    encrypted_password text NOT NULL,
    raw_user_meta_data jsonb NOT NULL DEFAULT '{{}}',
    raw_app_meta_data jsonb NOT NULL DEFAULT '{{"provider": "email", "providers": ["email"]}}',
    last_sign_in_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON auth.users (lower(email));
-- The owner may reference and read users (a user_id foreign key, a join), not change them.
GRANT SELECT, REFERENCES ON auth.users TO {owner};

-- Applied migrations live in the project database, written in the same transaction
-- as the migration, so a backup or a branch carries its own history.
CREATE SCHEMA zbaas_meta;
CREATE TABLE zbaas_meta.schema_migrations (
    version integer PRIMARY KEY,
    migration_id uuid NOT NULL UNIQUE,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
GRANT USAGE ON SCHEMA zbaas_meta TO {owner};
GRANT SELECT, INSERT, DELETE ON zbaas_meta.schema_migrations TO {owner};

-- End-user sessions of the project's own auth API. Only the control plane (as
-- superuser) reads and writes them; no project role has any grant on them.
CREATE TABLE auth.sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX sessions_user_idx ON auth.sessions (user_id);
CREATE TABLE auth.refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES auth.sessions ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_session_idx ON auth.refresh_tokens (session_id);
"""


@dataclass
class ProjectRoles:
    owner: str
    owner_password: str
    authenticator: str
    authenticator_password: str


@dataclass
class Provisioned:
    """Objects a provisioning run has created so far, so that a failure undoes exactly those."""

    roles: list[str] = field(default_factory=list)
    database: str | None = None


def role_names(ref: str) -> tuple[str, str]:
    return f"zbaas_{ref}_owner", f"zbaas_{ref}_authenticator"


async def create_project_database(pools: Pools, db_name: str, roles: ProjectRoles) -> None:
    """Create the roles, the database and its setup; undo all of it on any failure."""
    done = Provisioned()
    try:
        await _create(pools, db_name, roles, done)
    except BaseException:
        logger.warning("provisioning %s failed; removing what was created", db_name)
        await _undo(pools, done)
        raise


def _verifier(conn: psycopg.AsyncConnection, role: str, password: str) -> str:
    """Hash the password client-side (SCRAM), so the plain text never reaches server logs."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


async def _create(pools: Pools, db_name: str, roles: ProjectRoles, done: Provisioned) -> None:
    # Three round trips on a pooled superuser connection, then one connection to the
    # new database: provisioning time is dominated by CREATE DATABASE itself.
    assert pools.control is not None
    async with pools.control.connection() as conn:
        # One simple-query batch runs as one implicit transaction: both roles or neither.
        # The comment ties each role to its database and control database, so an
        # operator can find a role left behind by a crash mid-provisioning.
        label = f"zbaas role of database {db_name} (control database {conn.info.dbname})"
        await conn.execute(
            sql.SQL(
                "CREATE ROLE {owner} LOGIN PASSWORD {owner_verifier} NOSUPERUSER NOCREATEDB "
                "NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT; "
                "CREATE ROLE {authenticator} LOGIN PASSWORD {authenticator_verifier} NOSUPERUSER "
                "NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT; "
                "COMMENT ON ROLE {owner} IS {label}; "
                "COMMENT ON ROLE {authenticator} IS {label}; "
                "GRANT {api_roles} TO {authenticator}"
            ).format(
                owner=sql.Identifier(roles.owner),
                owner_verifier=sql.Literal(_verifier(conn, roles.owner, roles.owner_password)),
                authenticator=sql.Identifier(roles.authenticator),
                authenticator_verifier=sql.Literal(
                    _verifier(conn, roles.authenticator, roles.authenticator_password)
                ),
                label=sql.Literal(label),
                api_roles=sql.SQL(", ").join(sql.Identifier(r) for r in API_ROLES),
            )
        )
        done.roles.extend([roles.owner, roles.authenticator])

        await conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(db_name)
            )
        )
        done.database = db_name
        await conn.execute(
            sql.SQL(
                "REVOKE ALL ON DATABASE {db} FROM PUBLIC; "
                "GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {db} TO {owner}; "
                "GRANT CONNECT ON DATABASE {db} TO {authenticator}"
            ).format(
                db=sql.Identifier(db_name),
                owner=sql.Identifier(roles.owner),
                authenticator=sql.Identifier(roles.authenticator),
            )
        )

    async with pools.admin(db_name) as conn, conn.transaction():
        await conn.execute(sql.SQL(DATABASE_SETUP).format(owner=sql.Identifier(roles.owner)))
        # Imported here because the extensions and storage modules depend on the
        # projects module, which depends on this one.
        from zbaas.tenant import storage
        from zbaas.tenant.extensions import prepare_schema

        await prepare_schema(conn, db_name, roles.owner)
        await storage.prepare_schema(conn)


async def _undo(pools: Pools, done: Provisioned) -> None:
    async with pools.admin(pools.settings.control_database) as conn:
        if done.database is not None:
            await drop_database(conn, done.database)
        for role in reversed(done.roles):
            await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


async def drop_database(conn: psycopg.AsyncConnection, db_name: str) -> None:
    """Drop ``db_name``, ending its open connections first (PostgreSQL 13+)."""
    await conn.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name))
    )


async def drop_project_database(pools: Pools, db_name: str, role_list: list[str]) -> None:
    await pools.forget_database(db_name)
    async with pools.admin(pools.settings.control_database) as conn:
        await drop_database(conn, db_name)
        for role in role_list:
            await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    logger.info("dropped database %s and roles %s", db_name, ", ".join(role_list))
