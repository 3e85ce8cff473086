"""Output of the CLI: tables for people, the API's JSON unchanged for scripts.

Results go to stdout; errors, warnings and progress go to stderr, so that
``zbaas ... --json | jq`` reads only the response.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table
from rich.text import Text

from zbaas.cli.errors import ApiError, CliError


def _stdout() -> Console:
    console = Console()
    # Piped output keeps whole cells: a script or a reader of a log must see whole ids.
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=1000)
    return console


stdout = _stdout()
stderr = Console(stderr=True, soft_wrap=True)

SEVERITY_STYLES = {"critical": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}


def show(response: httpx.Response, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print the response body as sent with ``--json``; otherwise render its parsed JSON."""
    if as_json:
        print_json_text(response.text)
        return
    render(response.json() if response.content else None)


def print_json_text(text: str) -> None:
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()


def print_json(value: Any) -> None:
    """Print a value the CLI made itself (not an API response) as JSON."""
    print_json_text(json.dumps(value))


def done(message: str) -> None:
    """Print a one-line result for people, such as 'Deleted project my-app.'."""
    stdout.print(escape(message), highlight=False, soft_wrap=True)


def waiting(message: str) -> Status:
    """Show a spinner with ``message`` on stderr while a long request runs.

    On a terminal only; a pipe or a CI log gets no output.
    """
    return stderr.status(escape(message), spinner="dots")


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


def when(timestamp: str | None) -> str:
    """Format an API timestamp to the second, as people read it: '2026-01-31 14:05:09'."""
    return timestamp[:19].replace("T", " ") if timestamp else ""


def size(byte_count: float) -> str:
    """Format a byte count in binary units as people read it: '1.5 MiB'."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, index = float(byte_count), 0
    while value >= 1024 and index < len(units) - 1:
        value /= 1024
        index += 1
    return f"{value:.0f} {units[index]}" if index == 0 else f"{value:.1f} {units[index]}"


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    empty: str = "Nothing to show.",
    console: Console | None = None,
) -> None:
    rows = list(rows)
    if not rows:
        done(empty)
        return
    grid = Table(title=title, title_justify="left", highlight=False)
    for column in columns:
        # Fold rather than cut long cells, so that no id or name loses characters.
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(v if isinstance(v, Text) else escape(cell(v)) for v in row))
    (console or stdout).print(grid)


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """Print one record as aligned name and value columns."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in pairs:
        grid.add_row(name, escape(cell(value)))
    stdout.print(grid)


def _compact(value: Any) -> str:
    """Format a detail value on one line: a record as 'key=value ...', text as it is."""
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items() if v is not None)
    return value if isinstance(value, str) else json.dumps(value)


def _detail_lines(details: Any) -> list[str]:
    if isinstance(details, dict):
        lines = []
        for key, value in details.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                lines.append(f"{key}:")
                lines.extend(f"  {_compact(item)}" for item in value)
            else:
                lines.append(f"{key}: {_compact(value)}")
        return lines
    if isinstance(details, list):
        return [_compact(item) for item in details]
    return [] if details is None else [str(details)]


def error(exc: CliError) -> None:
    """Print an error as ``error: <message> (<code>)`` and its details, on stderr."""
    code = f" [dim]({escape(exc.code)})[/dim]" if exc.code else ""
    stderr.print(f"[red]error:[/red] {escape(exc.message)}{code}", highlight=False)
    # A validation error's message already lists its field errors.
    if isinstance(exc, ApiError) and exc.code == "validation_failed":
        return
    for line in _detail_lines(exc.details):
        stderr.print(f"  {escape(line)}", highlight=False)
