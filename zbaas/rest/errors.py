"""Errors of the data API in PostgREST's shape: ``{code, message, details, hint}``.

PostgreSQL errors keep their SQLSTATE as the code and get the HTTP status that
PostgREST 12 gives them. The data API's own errors use PostgREST's ``PGRST``
codes, so clients written for PostgREST can branch on them.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg


class RestError(Exception):
    """A data API error with its HTTP status and PostgREST body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "hint": self.hint,
        }


def parse_error(message: str, details: str | None = None) -> RestError:
    """Build the 400 for a query string or header that breaks PostgREST's grammar."""
    return RestError(400, "PGRST100", message, details=details)


def not_found_table(schema: str, table: str) -> RestError:
    return RestError(
        404,
        "42P01",
        f'relation "{schema}.{table}" does not exist',
        hint="Check the table name; the data API serves tables and views of the public schema.",
    )


def unknown_column(table: str, column: str) -> RestError:
    return RestError(400, "42703", f"column {table}.{column} does not exist")


def unknown_body_column(table: str, column: str) -> RestError:
    return RestError(
        400, "PGRST204", f"Could not find the '{column}' column of '{table}' in the schema cache"
    )


def _status_for(exc: psycopg.Error, role: str) -> int:
    """Return the HTTP status PostgREST gives a PostgreSQL error, chosen by its class."""
    if isinstance(exc, pg.InsufficientPrivilege):
        # Without a user the fix is to sign in (401); a signed-in user lacks the right (403).
        return 401 if role == "anon" else 403
    if isinstance(exc, pg.UniqueViolation | pg.ForeignKeyViolation | pg.ExclusionViolation):
        return 409
    if isinstance(exc, pg.UndefinedTable | pg.UndefinedFunction):
        return 404
    if isinstance(exc, pg.ReadOnlySqlTransaction):
        return 405
    if isinstance(exc, pg.QueryCanceled):
        return 504
    if isinstance(exc, pg.OperationalError | pg.InsufficientResources):
        return 503
    if isinstance(
        exc,
        pg.IntegrityError
        | pg.DataError
        | pg.ProgrammingError
        | pg.RaiseException
        | pg.CardinalityViolation,
    ):
        return 400
    return 500


def from_postgres(exc: psycopg.Error, role: str) -> RestError:
    """Turn a PostgreSQL error of a data API query into PostgREST's error response."""
    diag = exc.diag
    return RestError(
        _status_for(exc, role),
        exc.sqlstate or "XX000",
        diag.message_primary or "database error",
        details=diag.message_detail,
        hint=diag.message_hint,
    )
