"""The error type every layer raises, and its mapping to HTTP.

Every error reaches the client as ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from typing import Any


class ZbaasError(Exception):
    """An error with an HTTP status, a stable machine code and a message for people."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class Unauthorized(ZbaasError):
    status = 401
    code = "unauthorized"


class Forbidden(ZbaasError):
    status = 403
    code = "forbidden"


class NotFound(ZbaasError):
    status = 404
    code = "not_found"


class Conflict(ZbaasError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ZbaasError):
    status = 413
    code = "payload_too_large"


class InvalidInput(ZbaasError):
    status = 422
    code = "invalid_input"


class ServiceUnavailable(ZbaasError):
    status = 503
    code = "database_unavailable"


def sql_error(exc: Exception, *, sql_text: str | None = None) -> InvalidInput:
    """Turn a PostgreSQL error raised by user SQL into a 422 with SQLSTATE and position.

    The position is PostgreSQL's 1-based character offset into the statement that
    failed; ``line`` is derived from it when the SQL text is given.
    """
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None)
    message = (diag.message_primary if diag is not None else None) or str(exc).strip()
    details: dict[str, Any] = {"sqlstate": sqlstate}
    if diag is not None:
        if diag.statement_position:
            details["position"] = int(diag.statement_position)
            if sql_text is not None:
                details["line"] = sql_text.count("\n", 0, int(diag.statement_position) - 1) + 1
        if diag.message_detail:
            details["detail"] = diag.message_detail
        if diag.message_hint:
            details["hint"] = diag.message_hint
    return InvalidInput(message, details=details, code="sql_error")
