"""Parse, classify and lint user SQL before it is stored as a migration.

pglast (libpg_query, the PostgreSQL 18 parser) splits the SQL into statements
and finds the ones that PostgreSQL rejects inside a transaction block. squawk
lints the SQL for operations that lock or rewrite tables.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pglast import parser

from zbaas.errors import InvalidInput

logger = logging.getLogger("zbaas.migrations")

# Bounds the CPU time of one request: parsing took about 1 s per MB of SQL in a
# measurement with pglast 8.8 on one core. Longer scripts never reach the parser.
MAX_SQL_LENGTH = 1_000_000

# Statements that PostgreSQL runs only outside a transaction block; ALTER SYSTEM,
# CREATE DATABASE and the tablespace commands also need privileges that no
# project role has, so they fail when applied.
ALWAYS_OUTSIDE_TRANSACTION = frozenset(
    {
        "AlterSystemStmt",
        "CreatedbStmt",
        "DropdbStmt",
        "CreateTableSpaceStmt",
        "DropTableSpaceStmt",
        "CreateSubscriptionStmt",
    }
)

# Statements that manage the connection's session, which the pool shares.
SESSION_STATEMENTS = frozenset({"PrepareStmt", "ExecuteStmt", "DeallocateStmt", "DiscardStmt"})

SQUAWK_TIMEOUT_S = 10.0
# zbaas sets lock_timeout and statement_timeout itself for every migration.
SQUAWK_EXCLUDED_RULES = ("require-lock-timeout", "require-statement-timeout")


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a script, located by 0-based character offsets."""

    kind: str  # parse node name, such as "CreateStmt" or "IndexStmt"
    start: int
    end: int
    transactional: bool
    line: int  # 1-based line of the first character


@dataclass(frozen=True)
class Script:
    """SQL text that parsed, split into its statements."""

    sql: str
    statements: tuple[Statement, ...]

    @property
    def transactional(self) -> bool:
        """True when every statement may run inside a transaction block."""
        return all(statement.transactional for statement in self.statements)


@dataclass(frozen=True)
class LintWarning:
    """One squawk finding; ``line`` is 1-based."""

    rule: str
    message: str
    line: int
    help: str | None


def line_of(sql: str, offset: int) -> int:
    """Return the 1-based line of the 0-based character ``offset``."""
    return sql.count("\n", 0, offset) + 1


def _is_true_option(element: dict[str, Any]) -> bool:
    """Return whether a ``DefElem`` such as ``CONCURRENTLY`` or ``CONCURRENTLY true`` is on."""
    argument = element.get("arg")
    if argument is None:
        return True
    if "Boolean" in argument:
        return bool(argument["Boolean"].get("boolval", False))
    if "Integer" in argument:
        return bool(argument["Integer"].get("ival", 0))
    if "String" in argument:
        return str(argument["String"].get("sval", "")).lower() in ("true", "on", "yes", "1")
    return True


def runs_in_transaction(kind: str, node: dict[str, Any]) -> bool:
    """Return whether PostgreSQL accepts this statement inside a transaction block."""
    if kind in ALWAYS_OUTSIDE_TRANSACTION:
        return False
    if kind in ("IndexStmt", "DropStmt"):
        return not node.get("concurrent", False)
    if kind == "ReindexStmt":
        if node.get("kind") in ("REINDEX_OBJECT_SYSTEM", "REINDEX_OBJECT_DATABASE"):
            return False
        for param in node.get("params", []):
            element = param.get("DefElem", {})
            if element.get("defname") == "concurrently" and _is_true_option(element):
                return False
        return True
    if kind == "VacuumStmt":
        # ANALYZE shares the node but may run in a transaction.
        return not node.get("is_vacuumcmd", False)
    if kind == "ClusterStmt":
        # CLUSTER without a table reclusters every table and needs its own transactions.
        return "relation" in node
    return True


def _character_offsets(sql: str, byte_offsets: list[int]) -> list[int]:
    """Turn ascending UTF-8 byte offsets (libpg_query's unit) into character offsets."""
    if sql.isascii():
        return byte_offsets
    raw = sql.encode()
    offsets: list[int] = []
    previous_byte = 0
    previous_char = 0
    for offset in byte_offsets:
        previous_char += len(raw[previous_byte:offset].decode())
        previous_byte = offset
        offsets.append(previous_char)
    return offsets


def _parse_tree(sql: str, field: str) -> list[dict[str, Any]]:
    try:
        # The JSON tree decodes several times faster than pglast's Python nodes.
        tree = json.loads(parser.parse_sql_json(sql))
    except parser.ParseError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        details: dict[str, Any] = {"field": field}
        if len(exc.args) > 1 and isinstance(exc.args[1], int):
            # pglast reports a 0-based character index; PostgreSQL positions are 1-based.
            details["position"] = exc.args[1] + 1
            details["line"] = line_of(sql, exc.args[1])
        raise InvalidInput(
            f"{field} could not be parsed: {message}", details=details, code="sql_syntax_error"
        ) from None
    return list(tree.get("stmts", []))


def parse_script(sql: str, field: str) -> Script:
    """Parse ``sql`` into statements and check that zbaas can run it as one migration.

    Raises InvalidInput for SQL that is empty, does not parse, controls
    transactions itself, streams COPY data, or mixes statements that must run
    outside a transaction with others.
    """
    if len(sql) > MAX_SQL_LENGTH:
        raise InvalidInput(
            f"{field} is {len(sql)} characters; the maximum is {MAX_SQL_LENGTH}; "
            "split it into several migrations",
            details={"field": field, "max_length": MAX_SQL_LENGTH},
            code="sql_too_long",
        )
    raw_statements = _parse_tree(sql, field) if sql.strip() else []
    if not raw_statements:
        raise InvalidInput(
            f"{field} contains no SQL statement", details={"field": field}, code="empty_sql"
        )

    starts_in_bytes = [raw.get("stmt_location", 0) for raw in raw_statements]
    ends_in_bytes = [
        start + raw["stmt_len"] if raw.get("stmt_len") else len(sql.encode())
        for start, raw in zip(starts_in_bytes, raw_statements, strict=True)
    ]
    starts = _character_offsets(sql, starts_in_bytes)
    ends = _character_offsets(sql, ends_in_bytes)

    statements: list[Statement] = []
    for raw, start, end in zip(raw_statements, starts, ends, strict=True):
        ((kind, node),) = raw["stmt"].items()
        statement = Statement(
            kind, start, end, runs_in_transaction(kind, node), line_of(sql, start)
        )
        _reject_unsupported(statement, node, field)
        statements.append(statement)

    script = Script(sql, tuple(statements))
    _check_transaction_modes(script, field)
    return script


def _reject_unsupported(statement: Statement, node: dict[str, Any], field: str) -> None:
    details = {"field": field, "line": statement.line, "position": statement.start + 1}
    if statement.kind == "TransactionStmt":
        raise InvalidInput(
            f"{field} line {statement.line}: BEGIN, COMMIT, ROLLBACK, SAVEPOINT and "
            "PREPARE TRANSACTION are not allowed, because zbaas runs each migration in "
            "its own transaction; remove the statement",
            details=details,
            code="transaction_control",
        )
    if statement.kind in SESSION_STATEMENTS:
        raise InvalidInput(
            f"{field} line {statement.line}: PREPARE, EXECUTE, DEALLOCATE and DISCARD manage "
            "the connection's session, which zbaas shares between runs; remove the statement",
            details=details,
            code="session_control",
        )
    if statement.kind == "CopyStmt" and not node.get("filename") and not node.get("is_program"):
        raise InvalidInput(
            f"{field} line {statement.line}: COPY FROM STDIN and COPY TO STDOUT need a "
            "client data stream that migrations do not have; use INSERT ... VALUES",
            details=details,
            code="copy_stream",
        )


def _check_transaction_modes(script: Script, field: str) -> None:
    """Allow statements that cannot run in a transaction only as a script's single statement.

    A failure after an earlier such statement succeeded would leave the database
    half changed, so each one gets a migration of its own.
    """
    if len(script.statements) == 1 or script.transactional:
        return
    outside = [s for s in script.statements if not s.transactional]
    listed = ", ".join(f"line {s.line} ({s.kind})" for s in outside)
    raise InvalidInput(
        f"{field} has {len(script.statements)} statements, and {listed} cannot run inside "
        "a transaction; split it so that each such statement is a migration of its own",
        details={
            "field": field,
            "statements": [{"line": s.line, "kind": s.kind} for s in outside],
        },
        code="mixed_transaction_modes",
    )


def squawk_command() -> str | None:
    """Return the squawk executable beside this Python (a virtualenv), else on PATH."""
    beside = shutil.which("squawk", path=str(Path(sys.executable).parent))
    return beside or shutil.which("squawk")


async def lint(sql: str, *, in_transaction: bool, server_version_num: int) -> list[LintWarning]:
    """Lint ``sql`` with squawk and return its findings.

    Lint never blocks a migration: when squawk is missing, times out or prints
    something other than its JSON report, the result is an empty list and a
    warning in the log.
    """
    command = squawk_command()
    if command is None:
        logger.warning("squawk not found; migration SQL is not linted")
        return []

    major, minor = divmod(server_version_num, 10000)
    arguments = [
        "--reporter=json",
        "--config=/dev/null",  # no .squawk.toml from the working folder applies
        f"--pg-version={major}.{minor}",
        f"--exclude={','.join(SQUAWK_EXCLUDED_RULES)}",
    ]
    if in_transaction:
        arguments.append("--assume-in-transaction")

    try:
        process = await asyncio.create_subprocess_exec(
            command,
            *arguments,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        logger.warning("squawk could not start (%s); migration SQL is not linted", exc)
        return []

    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(sql.encode()), timeout=SQUAWK_TIMEOUT_S
        )
    except TimeoutError:
        await _stop(process)
        logger.warning("squawk timed out after %s s; migration SQL is not linted", SQUAWK_TIMEOUT_S)
        return []
    except (OSError, RuntimeError) as exc:
        # A squawk that exits before reading its input closes the pipe under the write.
        await _stop(process)
        logger.warning("squawk failed (%s); migration SQL is not linted", exc)
        return []

    return _read_report(stdout, stderr, process.returncode)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass  # it exited since returncode was read
    await process.wait()


def _read_report(stdout: bytes, stderr: bytes, returncode: int | None) -> list[LintWarning]:
    # squawk exits 1 when it has findings, so only the output distinguishes success from failure.
    try:
        findings = json.loads(stdout)
        warnings = [
            LintWarning(
                rule=str(finding["rule_name"]),
                message=str(finding["message"]),
                line=int(finding["line"]) + 1,  # squawk counts lines from 0
                help=finding.get("help"),
            )
            for finding in findings
        ]
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning(
            "squawk failed with exit code %s (%s: %s); migration SQL is not linted",
            returncode,
            type(exc).__name__,
            stderr.decode(errors="replace").strip()[:200],
        )
        return []
    return warnings
