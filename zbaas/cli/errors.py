"""Errors of the CLI: printed as one ``error:`` line on stderr, never as a traceback."""

from __future__ import annotations

from typing import Any


class CliError(Exception):
    """A failure the user can act on; the root command prints it and exits with ``exit_code``."""

    def __init__(
        self, message: str, *, code: str | None = None, details: Any = None, exit_code: int = 1
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
        self.exit_code = exit_code


class ApiError(CliError):
    """An error response of the API, in its ``{"error": {code, message, details}}`` shape."""

    def __init__(self, status: int, message: str, *, code: str | None, details: Any) -> None:
        super().__init__(message, code=code, details=details)
        self.status = status
