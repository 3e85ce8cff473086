"""Row-level security of a project's tables: turn it on or off, and manage policies.

Every call runs as the project's owner role, because only a table's owner may
change its row-level security. Table and role names are looked up in the catalog
before they reach SQL as identifiers. Policy expressions are user SQL: each one
must parse with pglast as exactly one expression before it is put into the DDL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from pglast import ast, parse_sql, parser
from pglast.enums import SetOperation
from psycopg import sql
from psycopg.rows import class_row

from zbaas.errors import Conflict, Forbidden, InvalidInput, NotFound, ZbaasError, sql_error

logger = logging.getLogger("zbaas.tenant")

DEFAULT_SCHEMA = "public"
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are truncated
MAX_EXPRESSION_LENGTH = 10_000

COMMANDS: dict[str, sql.SQL] = {
    "ALL": sql.SQL("ALL"),
    "SELECT": sql.SQL("SELECT"),
    "INSERT": sql.SQL("INSERT"),
    "UPDATE": sql.SQL("UPDATE"),
    "DELETE": sql.SQL("DELETE"),
}
# PostgreSQL applies USING to rows that already exist and WITH CHECK to rows being
# written, so each command takes only the clauses that can apply to it.
USING_COMMANDS = frozenset({"ALL", "SELECT", "UPDATE", "DELETE"})
CHECK_COMMANDS = frozenset({"ALL", "INSERT", "UPDATE"})

# Tokens that pglast's scanner reports outside string literals and that may not
# appear in an expression, because they end a statement or hide text from a reader.
FORBIDDEN_TOKENS = {"ASCII_59": "a semicolon", "SQL_COMMENT": "a comment", "C_COMMENT": "a comment"}
# An expression is parsed after each prefix: as a select list, and where the policy puts it.
SELECT_PREFIX = "SELECT "
POLICY_PREFIX = "CREATE POLICY p ON t USING ("


@dataclass
class Table:
    """A table found in the catalog, with its row-level security state."""

    schema: str
    name: str
    rls_enabled: bool
    rls_forced: bool
    owned: bool  # the current role has the privileges of the table's owner

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass
class Policy:
    """A policy as PostgreSQL stores it, with ``using`` and ``check`` as deparsed text."""

    name: str
    command: str
    using: str | None
    check: str | None
    roles: list[str]
    permissive: bool


@dataclass
class PolicySpec:
    """A policy to create, as the caller wrote it."""

    name: str
    command: str = "ALL"
    using: str | None = None
    check: str | None = None
    roles: tuple[str, ...] = ("public",)
    permissive: bool = True


TABLE_QUERY = """
SELECT n.nspname AS schema, c.relname AS name,
       c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced,
       pg_has_role(current_user, c.relowner, 'USAGE') AS owned
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""

POLICY_QUERY = """
SELECT policyname AS name, cmd AS command, qual AS using, with_check AS check,
       roles::text[] AS roles, permissive = 'PERMISSIVE' AS permissive
FROM pg_policies
WHERE schemaname = %s AND tablename = %s
"""


def split_table_name(text: str) -> tuple[str, str]:
    """Split ``table`` or ``schema.table`` into (schema, table), at the first dot.

    Names are matched exactly as the catalog stores them, without SQL quoting or
    case folding, so a table whose own name contains a dot cannot be named.
    """
    schema, dot, name = text.partition(".")
    if not dot:
        schema, name = DEFAULT_SCHEMA, text
    for part in (schema, name):
        if not part or "\x00" in part:
            raise InvalidInput(
                f"invalid table name {text!r}: write 'table' or 'schema.table'",
                details={"table": text},
            )
    return schema, name


async def find_table(conn: psycopg.AsyncConnection, text: str) -> Table:
    """Look up an ordinary or partitioned table, or raise ``NotFound``."""
    schema, name = split_table_name(text)
    cursor = conn.cursor(row_factory=class_row(Table))
    row = await (await cursor.execute(TABLE_QUERY, (schema, name))).fetchone()
    if row is None:
        raise NotFound(
            f"table {schema}.{name} not found", code="table_not_found", details={"table": text}
        )
    return row


def _require_owned(table: Table) -> None:
    if not table.owned:
        raise Forbidden(
            f"table {table.qualified_name} is not owned by the project's owner role, so its "
            "row-level security and policies cannot be changed",
            code="table_not_owned",
            details={"table": table.qualified_name},
        )


def check_policy_name(name: str) -> None:
    """Reject names PostgreSQL would truncate, and control characters."""
    if not name or len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise InvalidInput(
            f"invalid policy name {name!r}: use 1 to {MAX_IDENTIFIER_BYTES} bytes",
            details={"field": "name"},
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise InvalidInput(
            f"invalid policy name {name!r}: it contains a control character",
            details={"field": "name"},
        )


def _invalid_expression(field: str, text: str, reason: str) -> InvalidInput:
    return InvalidInput(
        f"invalid {field} expression: {reason}",
        code="invalid_expression",
        details={"field": field, "expression": text},
    )


def parse_expression(text: str, field: str) -> ast.Node:
    """Parse ``text`` as exactly one SQL expression and return its parse tree.

    Raise ``InvalidInput`` for an empty text, a syntax error, a semicolon or
    comment outside string literals, or anything beyond one expression (a second
    statement, a FROM or other clause, an alias, a set operation).
    """
    if not text.strip():
        raise _invalid_expression(field, text, "it is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise _invalid_expression(
            field, text, f"it is longer than {MAX_EXPRESSION_LENGTH} characters"
        )
    # libpg_query reads a C string and would stop at a NUL, leaving the rest unchecked.
    if "\x00" in text:
        raise _invalid_expression(field, text, "it contains a NUL character")

    try:
        tokens = parser.scan(text)
    except parser.ParseError as exc:
        raise _syntax_error(field, text, exc, 0) from None
    for token in tokens:
        if token.name in FORBIDDEN_TOKENS:
            raise _invalid_expression(
                field,
                text,
                f"it contains {FORBIDDEN_TOKENS[token.name]} outside a string literal "
                f"at character {token.start + 1}",
            )

    try:
        statements = parse_sql(SELECT_PREFIX + text)
    except parser.ParseError as exc:
        raise _syntax_error(field, text, exc, len(SELECT_PREFIX)) from None
    reason = _not_one_expression(statements)
    if reason is not None:
        raise _invalid_expression(field, text, reason)
    tree = statements[0].stmt.targetList[0].val

    # The text must also mean the same where the policy puts it, inside parentheses
    # after USING or WITH CHECK ("ALL true" is an expression only after SELECT).
    try:
        in_policy = parse_sql(POLICY_PREFIX + text + ")")
    except parser.ParseError as exc:
        raise _syntax_error(field, text, exc, len(POLICY_PREFIX)) from None
    if len(in_policy) != 1 or getattr(in_policy[0].stmt, "qual", None) != tree:
        raise _invalid_expression(field, text, "it is not a single expression")
    return tree


def _syntax_error(field: str, text: str, exc: parser.ParseError, offset: int) -> InvalidInput:
    """Return a parse error with its position counted in ``text`` (1-based characters)."""
    message = str(exc.args[0]) if exc.args else str(exc)
    error = _invalid_expression(field, text, message)
    if len(exc.args) > 1 and isinstance(exc.args[1], int):
        position = exc.args[1] - offset + 1
        if 1 <= position <= len(text) + 1:
            error.details["position"] = position
    return error


_SELECT_CLAUSES = (
    "distinctClause",
    "intoClause",
    "fromClause",
    "whereClause",
    "groupClause",
    "havingClause",
    "windowClause",
    "valuesLists",
    "sortClause",
    "limitOffset",
    "limitCount",
    "lockingClause",
    "withClause",
)


def _not_one_expression(statements: tuple[ast.RawStmt, ...]) -> str | None:
    """Return why ``SELECT <text>`` is more than one bare expression, or None."""
    if len(statements) != 1:
        return f"it adds {len(statements) - 1} more statement(s)"
    select = statements[0].stmt
    if not isinstance(select, ast.SelectStmt) or select.op != SetOperation.SETOP_NONE:
        return "it is not a single expression"
    for clause in _SELECT_CLAUSES:
        if getattr(select, clause, None):
            return "it adds a clause to the expression (FROM, WHERE, ORDER BY or similar)"
    if not select.targetList or len(select.targetList) != 1:
        return "it holds several comma-separated expressions"
    target = select.targetList[0]
    if target.name is not None or target.indirection:
        return "it gives the expression an alias"
    return None


def _check_clauses(spec: PolicySpec) -> None:
    if spec.command not in COMMANDS:
        raise InvalidInput(
            f"invalid command {spec.command!r}: use one of {', '.join(COMMANDS)}",
            details={"field": "command"},
        )
    if spec.using is not None and spec.command not in USING_COMMANDS:
        raise InvalidInput(
            "an INSERT policy cannot have 'using': USING applies to existing rows, "
            "and an INSERT only writes new ones; put the condition in 'check'",
            details={"field": "using"},
        )
    if spec.check is not None and spec.command not in CHECK_COMMANDS:
        raise InvalidInput(
            f"a {spec.command} policy cannot have 'check': WITH CHECK applies to new or "
            f"changed rows, and a {spec.command} writes none; put the condition in 'using'",
            details={"field": "check"},
        )


async def _role_list(conn: psycopg.AsyncConnection, roles: tuple[str, ...]) -> sql.Composable:
    """Build the TO list. Every role except PUBLIC must exist in the catalog."""
    if not roles:
        raise InvalidInput(
            "roles must name at least one role, or be left out for PUBLIC",
            details={"field": "roles"},
        )
    named = list(dict.fromkeys(role for role in roles if role.lower() != "public"))
    if not named:
        return sql.SQL("PUBLIC")
    if any(role.lower() == "public" for role in roles):
        # PostgreSQL would drop the other roles with only a warning.
        raise InvalidInput(
            "public already includes every role; list it alone or leave it out",
            details={"field": "roles"},
        )
    if any("\x00" in role for role in named):
        raise InvalidInput("a role name contains a NUL character", details={"field": "roles"})

    cursor = await conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (named,))
    existing = {row["rolname"] for row in await cursor.fetchall()}
    missing = [role for role in named if role not in existing]
    if missing:
        raise InvalidInput(
            f"role {missing[0]!r} does not exist; name an existing role such as anon, "
            "authenticated or service_role, or public for every role",
            code="role_not_found",
            details={"field": "roles", "missing": missing},
        )

    return sql.SQL(", ").join(sql.Identifier(role) for role in named)


async def _begin_ddl(conn: psycopg.AsyncConnection, lock_timeout_ms: int) -> None:
    """Bound the wait for the table's lock, and fix how string literals are read.

    The expressions were checked with standard-conforming strings, so the server
    must read backslashes in literals the same way.
    """
    await conn.execute(
        "SELECT set_config('lock_timeout', %s, true), "
        "set_config('standard_conforming_strings', 'on', true)",
        (f"{lock_timeout_ms}ms",),
    )


# Errors any DDL on a table can raise, for reasons other than the caller's input.
# LockNotAvailable is an OperationalError, which would otherwise read as an outage.
DDL_ERRORS = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.LockNotAvailable,
)


def _ddl_error(exc: psycopg.Error, table: Table) -> ZbaasError:
    """Map one of ``DDL_ERRORS`` to its HTTP error."""
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return NotFound(f"table {table.qualified_name} not found", code="table_not_found")
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return Conflict(
            f"table {table.qualified_name} is locked by another transaction; try again",
            code="table_locked",
        )
    return Forbidden(
        f"the project's owner role may not change table {table.qualified_name}",
        code="table_not_owned",
    )


async def set_enabled(
    conn: psycopg.AsyncConnection, table_name: str, enabled: bool, *, lock_timeout_ms: int
) -> Table:
    """Enable or disable row-level security. Repeating a call changes nothing."""
    table = await find_table(conn, table_name)
    _require_owned(table)

    action = sql.SQL("ENABLE" if enabled else "DISABLE")
    try:
        async with conn.transaction():
            await _begin_ddl(conn, lock_timeout_ms)
            await conn.execute(
                sql.SQL("ALTER TABLE {} {} ROW LEVEL SECURITY").format(table.identifier(), action)
            )
    except DDL_ERRORS as exc:
        raise _ddl_error(exc, table) from None

    logger.info(
        "row-level security %s on %s in %s",
        "enabled" if enabled else "disabled",
        table.qualified_name,
        conn.info.dbname,
    )
    return await find_table(conn, table_name)


async def list_policies(conn: psycopg.AsyncConnection, table_name: str) -> list[Policy]:
    """List a table's policies by name, read back from ``pg_policies``."""
    table = await find_table(conn, table_name)
    return await _read_policies(conn, table)


async def _read_policies(
    conn: psycopg.AsyncConnection, table: Table, name: str | None = None
) -> list[Policy]:
    query = POLICY_QUERY
    params: list[Any] = [table.schema, table.name]
    if name is not None:
        query += " AND policyname = %s"
        params.append(name)
    cursor = conn.cursor(row_factory=class_row(Policy))
    await cursor.execute(query + " ORDER BY policyname", params)
    return await cursor.fetchall()


async def create_policy(
    conn: psycopg.AsyncConnection, table_name: str, spec: PolicySpec, *, lock_timeout_ms: int
) -> Policy:
    """Check the policy in full, create it, and return it as the catalog stores it.

    Nothing is created unless every check passes. A policy name already used on
    the table raises ``Conflict``. An error that PostgreSQL still finds in an
    expression (an unknown column, a non-boolean result) raises ``InvalidInput``
    with its SQLSTATE and the position inside that expression.
    """
    check_policy_name(spec.name)
    _check_clauses(spec)
    expressions = {
        field: (text, parse_expression(text, field))
        for field, text in (("using", spec.using), ("check", spec.check))
        if text is not None
    }
    table = await find_table(conn, table_name)
    _require_owned(table)
    roles = await _role_list(conn, spec.roles)
    statement = _policy_statement(conn, spec, table, roles, expressions)

    try:
        async with conn.transaction():
            await _begin_ddl(conn, lock_timeout_ms)
            await conn.execute(statement.sql)
    except psycopg.errors.DuplicateObject:
        raise Conflict(
            f"policy {spec.name!r} already exists on table {table.qualified_name}",
            code="policy_exists",
            details={"name": spec.name, "table": table.qualified_name},
        ) from None
    except DDL_ERRORS as exc:
        raise _ddl_error(exc, table) from None
    except (psycopg.ProgrammingError, psycopg.DataError, psycopg.NotSupportedError) as exc:
        raise _expression_error(exc, statement) from None

    logger.info("created policy %r on %s in %s", spec.name, table.qualified_name, conn.info.dbname)
    return (await _read_policies(conn, table, spec.name))[0]


@dataclass
class PolicyStatement:
    """A CREATE POLICY statement, its text, and where each expression sits in that text."""

    sql: sql.Composed
    text: str
    spans: dict[str, tuple[int, int]]  # field -> (start, end), 0-based, end excluded


def _policy_statement(
    conn: psycopg.AsyncConnection,
    spec: PolicySpec,
    table: Table,
    roles: sql.Composable,
    expressions: dict[str, tuple[str, ast.Node]],
) -> PolicyStatement:
    parts: list[tuple[str | None, sql.Composable]] = [
        (
            None,
            sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
                sql.Identifier(spec.name),
                table.identifier(),
                sql.SQL("PERMISSIVE" if spec.permissive else "RESTRICTIVE"),
                COMMANDS[spec.command],
                roles,
            ),
        )
    ]
    for field, keyword in (("using", " USING ("), ("check", " WITH CHECK (")):
        if field in expressions:
            # The text goes in verbatim because parse_expression proved it is one
            # expression with no comment or semicolon; _verify_statement re-checks.
            parts.append((None, sql.SQL(keyword)))
            parts.append((field, sql.SQL(expressions[field][0])))
            parts.append((None, sql.SQL(")")))

    text = ""
    spans: dict[str, tuple[int, int]] = {}
    for field, part in parts:
        piece = part.as_string(conn)
        if field is not None:
            spans[field] = (len(text), len(text) + len(piece))
        text += piece

    _verify_statement(text, {field: tree for field, (_, tree) in expressions.items()})
    return PolicyStatement(sql.Composed([part for _, part in parts]), text, spans)


def _verify_statement(text: str, expressions: dict[str, ast.Node]) -> None:
    """Check that the DDL is one CREATE POLICY holding exactly the parsed expressions.

    This guards, apart from the checks on each expression, the invariant that
    user text never changes the statement around it.
    """
    try:
        statements = parse_sql(text)
    except parser.ParseError:
        statements = ()
    policy = statements[0].stmt if len(statements) == 1 else None
    if (
        not isinstance(policy, ast.CreatePolicyStmt)
        or policy.qual != expressions.get("using")
        or policy.with_check != expressions.get("check")
    ):
        raise InvalidInput(
            "the policy expressions do not form a single CREATE POLICY statement",
            code="invalid_expression",
        )


def _expression_error(exc: psycopg.Error, statement: PolicyStatement) -> InvalidInput:
    """Return PostgreSQL's error as 422, naming the expression it is in where known.

    PostgreSQL 15 reports no position for errors in policy expressions, so the field
    is named only when the statement has one expression, or when a position falls
    inside one.
    """
    error = sql_error(exc)
    details = error.details
    position = details.pop("position", None)
    details.pop("line", None)
    if len(statement.spans) == 1:
        details["field"] = next(iter(statement.spans))
    for field, (start, end) in statement.spans.items():
        # PostgreSQL's position is a 1-based character offset into the statement.
        if position is not None and start < position <= end:
            offset = position - start
            details["field"] = field
            details["position"] = offset
            details["line"] = statement.text.count("\n", start, start + offset - 1) + 1
    return error


async def delete_policy(
    conn: psycopg.AsyncConnection, table_name: str, name: str, *, lock_timeout_ms: int
) -> None:
    """Drop a policy, or raise ``NotFound`` when the table has none of that name."""
    table = await find_table(conn, table_name)
    not_found = NotFound(
        f"policy {name!r} not found on table {table.qualified_name}",
        code="policy_not_found",
        details={"name": name, "table": table.qualified_name},
    )
    if "\x00" in name or not await _read_policies(conn, table, name):
        raise not_found
    _require_owned(table)

    try:
        async with conn.transaction():
            await _begin_ddl(conn, lock_timeout_ms)
            await conn.execute(
                sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(name), table.identifier())
            )
    except psycopg.errors.UndefinedObject:
        raise not_found from None
    except DDL_ERRORS as exc:
        raise _ddl_error(exc, table) from None

    logger.info("dropped policy %r on %s in %s", name, table.qualified_name, conn.info.dbname)
