"""The control database's schema, versioned and upgraded at start-up.

Each entry of SCHEMA_VERSIONS is applied once, in order, in its own transaction,
under an advisory lock so that API processes starting together do not race.
Never edit an entry that has shipped; append a new one.
"""

from __future__ import annotations

import logging

import psycopg

logger = logging.getLogger("zbaas.platform")

SCHEMA_LOCK_KEY = 0x7A62_6161_7300  # advisory lock id for schema upgrades

SCHEMA_VERSIONS: list[str] = [
    # 1: accounts, organizations, projects and keys
    """
    CREATE TABLE users (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        email text NOT NULL,
        password_hash text NOT NULL,
        full_name text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE UNIQUE INDEX users_email_key ON users (lower(email));

    CREATE TABLE organizations (
        id text PRIMARY KEY,
        name text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE memberships (
        org_id text NOT NULL REFERENCES organizations ON DELETE CASCADE,
        user_id uuid NOT NULL REFERENCES users ON DELETE CASCADE,
        role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (org_id, user_id)
    );
    CREATE INDEX memberships_user_idx ON memberships (user_id, created_at);

    -- A session is one chain of refresh tokens; revoking it ends every token in it.
    CREATE TABLE sessions (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        user_id uuid NOT NULL REFERENCES users ON DELETE CASCADE,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz
    );
    CREATE INDEX sessions_user_idx ON sessions (user_id);

    CREATE TABLE refresh_tokens (
        token_hash bytea PRIMARY KEY,
        session_id uuid NOT NULL REFERENCES sessions ON DELETE CASCADE,
        expires_at timestamptz NOT NULL,
        used_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

    CREATE TABLE projects (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        org_id text NOT NULL REFERENCES organizations,
        ref text NOT NULL UNIQUE,
        name text NOT NULL,
        slug text NOT NULL,
        description text NOT NULL DEFAULT '',
        db_name text NOT NULL UNIQUE,
        status text NOT NULL CHECK (status IN ('provisioning', 'active', 'deleting')),
        owner_role text NOT NULL,
        owner_password text NOT NULL,
        authenticator_role text NOT NULL,
        authenticator_password text NOT NULL,
        jwt_secret text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (org_id, slug)
    );
    COMMENT ON COLUMN projects.owner_password IS 'encrypted with the secret box';
    COMMENT ON COLUMN projects.authenticator_password IS 'encrypted with the secret box';
    COMMENT ON COLUMN projects.jwt_secret IS 'encrypted with the secret box';

    CREATE TABLE api_keys (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
        name text NOT NULL,
        type text NOT NULL CHECK (type IN ('publishable', 'secret')),
        prefix text NOT NULL,
        key_hash bytea NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz
    );
    CREATE INDEX api_keys_project_idx ON api_keys (project_id, created_at);
    """,
    # branches: database branches of a project, each with its own roles
    """
    CREATE TABLE branches (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
        name text NOT NULL,
        db_name text NOT NULL UNIQUE,
        ref text NOT NULL UNIQUE,
        owner_role text NOT NULL,
        owner_password text NOT NULL,
        authenticator_role text NOT NULL,
        authenticator_password text NOT NULL,
        with_data boolean NOT NULL,
        status text NOT NULL CHECK (status IN ('creating', 'active', 'deleting')),
        base_schema jsonb,
        merged_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (project_id, name)
    );
    CREATE INDEX branches_project_idx ON branches (project_id, created_at);
    COMMENT ON COLUMN branches.owner_password IS 'encrypted with the secret box';
    COMMENT ON COLUMN branches.authenticator_password IS 'encrypted with the secret box';
    COMMENT ON COLUMN branches.base_schema IS
        'schema of the parent when the branch was created or last merged, as inspected';
    """,
    # migrations: the stored up/down SQL of each project; whether one is applied is
    # recorded in the project database (zbaas_meta.schema_migrations), not here.
    """
    CREATE TABLE migrations (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
        version integer NOT NULL CHECK (version > 0),
        name text NOT NULL,
        up_sql text NOT NULL,
        down_sql text,
        checksum text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (project_id, version)
    );
    COMMENT ON COLUMN migrations.checksum IS 'hex SHA-256 of up_sql (UTF-8)';
    """,
]


async def upgrade(conn: psycopg.AsyncConnection) -> int:
    """Bring the control schema to the latest version; return that version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = await (
            await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version")
        ).fetchone()
        current = int(row["v"] if isinstance(row, dict) else row[0])

        for version, ddl in enumerate(SCHEMA_VERSIONS, start=1):
            if version <= current:
                continue
            await conn.execute(ddl)
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            logger.info("control schema upgraded to version %s", version)
    return len(SCHEMA_VERSIONS)
