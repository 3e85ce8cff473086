"""PostgreSQL extensions of one project database, enabled by the control plane.

The owner role cannot create most extensions itself, so zbaas installs them as
the superuser, but only those on ``ALLOWED``. Extensions that reach outside the
project's database, read server internals shared with other databases, or run
untrusted code are on ``NEVER_ALLOWED`` and are rejected even where the server
lacks them.

Extensions go into a schema ``extensions`` owned by the superuser, not into
``public``. ``public`` belongs to the owner role, and an extension script runs
as superuser with its target schema first on the search path. Objects that the
owner planted there, such as a function or operator with a matching signature,
could then run with superuser rights. The project's roles get USAGE on
``extensions``, and the database's ``search_path`` lists it after ``public``,
so types and functions such as ``vector`` or ``similarity()`` resolve without
a schema prefix. Provisioning sets both up when it creates the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql

from zbaas.app import Services
from zbaas.errors import Conflict, Forbidden, InvalidInput, NotFound, ZbaasError
from zbaas.platform.projects import Project
from zbaas.postgres.server import API_ROLES
from zbaas.tenant.connections import as_superuser

logger = logging.getLogger("zbaas.tenant")

SCHEMA = "extensions"
SEARCH_PATH = '"$user", public, extensions'

# Debian package that provides each extension, by PostgreSQL major version. The
# contrib modules ship inside Debian's server package ``postgresql-<major>``.
CONTRIB = "postgresql-{major}"
POSTGIS = "postgresql-{major}-postgis-3"

ALLOWED: dict[str, str] = {
    "vector": "postgresql-{major}-pgvector",
    "postgis": POSTGIS,
    "postgis_raster": POSTGIS,
    "postgis_sfcgal": POSTGIS,
    "address_standardizer": POSTGIS,
    "pg_trgm": CONTRIB,
    "uuid-ossp": CONTRIB,
    "hstore": CONTRIB,
    "citext": CONTRIB,
    "pgcrypto": CONTRIB,
    "unaccent": CONTRIB,
    "ltree": CONTRIB,
    # NOTE: its view shows call counts and timings of every database on the server.
    # Only the query text of other roles is hidden (PostgreSQL docs, pg_stat_statements).
    "pg_stat_statements": CONTRIB,
    "btree_gin": CONTRIB,
    "btree_gist": CONTRIB,
    "bloom": CONTRIB,
    "cube": CONTRIB,
    "earthdistance": CONTRIB,
    "fuzzystrmatch": CONTRIB,
    "intarray": CONTRIB,
    "isn": CONTRIB,
    "seg": CONTRIB,
    "tablefunc": CONTRIB,
    "dict_int": CONTRIB,
    "tsm_system_rows": CONTRIB,
    "tsm_system_time": CONTRIB,
    "moddatetime": CONTRIB,
}

# Built-in replacements to suggest when the server lacks an allowed extension.
ALTERNATIVES: dict[str, str] = {
    "uuid-ossp": "for random UUIDs use the built-in gen_random_uuid() (PostgreSQL 13+), "
    "which needs no extension",
    "pgcrypto": "gen_random_uuid(), sha256() and sha512() are built in and need no extension",
}

_OUTSIDE = "connects to other databases or servers"
_FILES = "reads or writes files or runs programs on the database server"
_INTERNALS = "reads or alters server internals shared with every other database on the server"
_UNTRUSTED = "is an untrusted procedural language that runs arbitrary code on the database server"

NEVER_ALLOWED: dict[str, str] = {
    "dblink": _OUTSIDE,
    "postgres_fdw": _OUTSIDE,
    "file_fdw": _FILES,
    "adminpack": _FILES,
    "xml2": "fetches external documents through XSLT (xslt_process)",
    "plpython3u": _UNTRUSTED,
    "plpythonu": _UNTRUSTED,
    "plpython2u": _UNTRUSTED,
    "plperlu": _UNTRUSTED,
    "pltclu": _UNTRUSTED,
    "pljavau": _UNTRUSTED,
    "plsh": _UNTRUSTED,
    "pageinspect": _INTERNALS,
    "pg_surgery": _INTERNALS,
    "pg_buffercache": _INTERNALS,
    "pg_walinspect": _INTERNALS,
    "pg_logicalinspect": _INTERNALS,
    "pg_visibility": _INTERNALS,
    "pg_freespacemap": _INTERNALS,
    "pg_prewarm": _INTERNALS,
    "pgstattuple": _INTERNALS,
    "pgrowlocks": _INTERNALS,
    "amcheck": _INTERNALS,
    "old_snapshot": _INTERNALS,
}


def never_allowed_reason(name: str) -> str | None:
    """Return why ``name`` is never allowed, or None.

    Untrusted procedural languages end in ``u`` by PostgreSQL convention
    (plperlu, pltclu), so unknown ones are caught by name as well.
    """
    if name in NEVER_ALLOWED:
        return NEVER_ALLOWED[name]
    if name.startswith("pl") and name.endswith("u"):
        return _UNTRUSTED
    return None


@dataclass
class Extension:
    name: str
    comment: str | None
    default_version: str | None
    installed_version: str | None
    schema: str | None
    available: bool
    allowed: bool
    package: str | None = None
    message: str | None = None

    @property
    def enabled(self) -> bool:
        return self.installed_version is not None


LIST_SQL = """
SELECT a.name, a.comment, a.default_version, e.extversion AS installed_version,
       n.nspname AS schema
FROM pg_available_extensions a
LEFT JOIN pg_extension e ON e.extname = a.name
LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
ORDER BY a.name
"""


async def _major_version(conn: psycopg.AsyncConnection) -> int:
    row = await (await conn.execute("SHOW server_version_num")).fetchone()
    assert row is not None
    return int(row["server_version_num"]) // 10000


def _missing(name: str, major: int) -> Extension:
    """Build the entry of an allowed extension that this server lacks, naming its package."""
    package = ALLOWED[name].format(major=major)
    message = (
        f"extension {name!r} is not available on this PostgreSQL {major} server; "
        f"Debian's {package} package provides it"
    )
    if name in ALTERNATIVES:
        message += f"; {ALTERNATIVES[name]}"
    return Extension(
        name=name,
        comment=None,
        default_version=None,
        installed_version=None,
        schema=None,
        available=False,
        allowed=True,
        package=package,
        message=message,
    )


def _from_row(row: dict) -> Extension:
    name = row["name"]
    reason = never_allowed_reason(name)
    return Extension(
        name=name,
        comment=row["comment"],
        default_version=row["default_version"],
        installed_version=row["installed_version"],
        schema=row["schema"],
        available=True,
        allowed=reason is None and name in ALLOWED,
        message=f"zbaas never enables {name!r}: it {reason}" if reason else None,
    )


async def _list(conn: psycopg.AsyncConnection) -> list[Extension]:
    rows = await (await conn.execute(LIST_SQL)).fetchall()
    found = [_from_row(row) for row in rows]
    present = {ext.name for ext in found}
    major = await _major_version(conn)
    found += [_missing(name, major) for name in ALLOWED if name not in present]
    return sorted(found, key=lambda ext: ext.name)


async def list_extensions(services: Services, project: Project) -> list[Extension]:
    """List every extension the server can install, plus allowed ones it lacks."""
    async with as_superuser(services, project) as conn:
        return await _list(conn)


async def _resolve(conn: psycopg.AsyncConnection, name: str) -> Extension:
    """Return ``name``'s state, or raise 403, 404 or 422 when it cannot be managed here."""
    reason = never_allowed_reason(name)
    if reason is not None:
        raise Forbidden(
            f"zbaas never enables extension {name!r}: it {reason}",
            code="extension_not_allowed",
        )

    row = await (
        await conn.execute(
            "SELECT a.name, a.comment, a.default_version, e.extversion AS installed_version, "
            "n.nspname AS schema FROM pg_available_extensions a "
            "LEFT JOIN pg_extension e ON e.extname = a.name "
            "LEFT JOIN pg_namespace n ON n.oid = e.extnamespace WHERE a.name = %s",
            (name,),
        )
    ).fetchone()
    if row is None:
        if name in ALLOWED:
            missing = _missing(name, await _major_version(conn))
            assert missing.message is not None
            raise InvalidInput(
                missing.message,
                code="extension_not_available",
                details={"extension": name, "package": missing.package},
            )
        raise NotFound(
            f"extension {name!r} not found: this server has no such extension; "
            "GET the extensions list for the names zbaas can enable",
            code="extension_not_found",
        )

    extension = _from_row(row)
    if not extension.allowed:
        raise Forbidden(
            f"extension {name!r} is not on zbaas's list of allowed extensions",
            code="extension_not_allowed",
        )
    return extension


async def _required(conn: psycopg.AsyncConnection, name: str) -> list[str]:
    """Return every extension that ``CREATE EXTENSION name CASCADE`` would also install."""
    rows = await (
        await conn.execute(
            """
            WITH RECURSIVE deps(name) AS (
                SELECT unnest(v.requires) FROM pg_available_extension_versions v
                JOIN pg_available_extensions a
                  ON a.name = v.name AND a.default_version = v.version
                WHERE v.name = %s
              UNION
                SELECT unnest(v.requires) FROM deps
                JOIN pg_available_extension_versions v ON v.name = deps.name
                JOIN pg_available_extensions a
                  ON a.name = v.name AND a.default_version = v.version
            )
            SELECT deps.name FROM deps
            WHERE NOT EXISTS (SELECT 1 FROM pg_extension e WHERE e.extname = deps.name)
            ORDER BY 1
            """,
            (name,),
        )
    ).fetchall()
    return [row["name"] for row in rows]


async def _check_required(conn: psycopg.AsyncConnection, name: str, required: str) -> None:
    try:
        await _resolve(conn, required)
    except NotFound as exc:
        raise InvalidInput(
            f"extension {name!r} requires {required!r}, which this server does not have",
            code="extension_not_available",
            details={"extension": name, "requires": required},
        ) from exc
    except ZbaasError as exc:
        exc.message = f"extension {name!r} requires {required!r}: {exc.message}"
        raise


async def prepare_schema(conn: psycopg.AsyncConnection, db_name: str, owner_role: str) -> bool:
    """Create ``extensions`` with USAGE for the project's roles and put it on the search path.

    ``conn`` is a superuser connection to ``db_name``. Returns True when the
    database's search_path setting changed, so that connections opened before
    it must be replaced.

    A copy of a project's database (a branch) needs this call again, because the
    copy's grants name the parent's roles. The branch copy makes it.
    """
    roles = [owner_role, *API_ROLES]
    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    await conn.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(SCHEMA), sql.SQL(", ").join(sql.Identifier(r) for r in roles)
        )
    )

    row = await (
        await conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d "
            "ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0",
            (db_name,),
        )
    ).fetchone()
    settings = row["setconfig"] if row is not None else None
    if settings and f"search_path={SEARCH_PATH}" in settings:
        return False
    await conn.execute(
        sql.SQL("ALTER DATABASE {} SET search_path = {}").format(
            sql.Identifier(db_name), sql.SQL(SEARCH_PATH)
        )
    )
    return True


async def enable(services: Services, project: Project, name: str) -> Extension:
    """Install ``name`` and what it requires (CASCADE); a no-op when it is installed."""
    async with as_superuser(services, project) as conn, conn.transaction():
        # One enable or disable at a time per database: CREATE EXTENSION IF NOT
        # EXISTS and CREATE SCHEMA IF NOT EXISTS race with themselves otherwise.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('zbaas.extensions'))")
        extension = await _resolve(conn, name)
        if extension.enabled:
            return extension

        for required in await _required(conn, name):
            await _check_required(conn, name, required)
        path_changed = await prepare_schema(conn, project.db_name, project.owner_role)
        await conn.execute(
            sql.SQL("CREATE EXTENSION IF NOT EXISTS {} SCHEMA {} CASCADE").format(
                sql.Identifier(name), sql.Identifier(SCHEMA)
            )
        )
        extension = await _resolve(conn, name)

    if path_changed:
        # Only databases provisioned before the extensions schema existed get here. A
        # setting applies to sessions opened after it, so this process's pooled
        # connections go.
        # NOTE: other API processes keep their older connections until the pool
        # retires them.
        await services.pools.forget_database(project.db_name)
    logger.info("project %s: enabled extension %s", project.id, name)
    return extension


DEPENDENTS_SQL = """
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = %(name)s),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
  UNION
    -- Array types of the extension's types are not members themselves.
    SELECT 'pg_type'::regclass, t.typarray FROM pg_depend d, ext, pg_type t
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
      AND d.classid = 'pg_type'::regclass AND t.oid = d.objid AND t.typarray <> 0
  UNION
    SELECT 'pg_extension'::regclass, ext.oid FROM ext
)
SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) AS object
FROM pg_depend d JOIN members m ON d.refclassid = m.classid AND d.refobjid = m.objid
WHERE d.deptype = 'n'
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend e, ext
    WHERE e.classid = d.classid AND e.objid = d.objid AND e.deptype = 'e'
      AND e.refobjid = ext.oid
  )
  -- Parts of the extension's own objects, such as the operators and support
  -- functions of its operator families, are not members but go with them.
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend o JOIN members m2 ON o.refclassid = m2.classid AND o.refobjid = m2.objid
    WHERE o.classid = d.classid AND o.objid = d.objid AND o.deptype IN ('a', 'i')
  )
ORDER BY 1
"""


async def disable(
    services: Services, project: Project, name: str, *, cascade: bool = False
) -> Extension:
    """Drop ``name``; with objects depending on it, 409 unless ``cascade`` drops them too."""
    async with as_superuser(services, project) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('zbaas.extensions'))")
        extension = await _resolve(conn, name)
        if not extension.enabled:
            return extension

        if not cascade:
            rows = await (await conn.execute(DEPENDENTS_SQL, {"name": name})).fetchall()
            dependents = [row["object"] for row in rows]
            if dependents:
                raise _dependents_conflict(name, dependents)

        statement = "DROP EXTENSION {} CASCADE" if cascade else "DROP EXTENSION {}"
        try:
            async with conn.transaction():
                await conn.execute(sql.SQL(statement).format(sql.Identifier(name)))
        except psycopg.errors.DependentObjectsStillExist as exc:
            # Dependencies the catalog query above does not follow end up here.
            detail = exc.diag.message_detail or ""
            raise _dependents_conflict(name, detail.splitlines()) from None
        extension = await _resolve(conn, name)

    logger.info("project %s: disabled extension %s (cascade=%s)", project.id, name, cascade)
    return extension


def _dependents_conflict(name: str, dependents: list[str]) -> Conflict:
    shown = ", ".join(dependents[:10])
    more = f" and {len(dependents) - 10} more" if len(dependents) > 10 else ""
    return Conflict(
        f"cannot disable extension {name!r}: {shown}{more} depend on it; drop them first, "
        "or send cascade=true to drop them with the extension",
        code="extension_in_use",
        details={"extension": name, "dependents": dependents},
    )
