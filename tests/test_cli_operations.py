"""``zbaas backup``, ``branches`` and ``health``."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from tests.clikit import Cli, create_project, delete_project, logged_in_cli
from tests.conftest import ThreadedServer, connect
from zbaas.config import Settings

SCHEMA_UP = """
CREATE TABLE posts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text, body text);
INSERT INTO posts (title, body)
    SELECT 'title ' || n, repeat('x', 200) FROM generate_series(1, 500) n;
CREATE TABLE tickets (id serial PRIMARY KEY);
ALTER SEQUENCE tickets_id_seq RESTART WITH 2147483000;
INSERT INTO tickets DEFAULT VALUES;
"""

Session = tuple[Cli, dict[str, Any]]


@pytest.fixture(scope="module")
def session(api: ThreadedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """A logged-in CLI with a default project (ZBAAS_PROJECT) holding posts and tickets."""
    cli, user = logged_in_cli(api, tmp_path_factory.mktemp("cli-operations"))
    project = create_project(cli)
    cli.env["ZBAAS_PROJECT"] = project["slug"]
    cli.ok("migrations", "new", "schema", "--up", "-", input=SCHEMA_UP)
    cli.ok("migrations", "up")
    yield cli, project
    delete_project(api, user, project["id"])


# --- backup -----------------------------------------------------------------------


def test_backup_writes_the_file_with_progress(session: Session) -> None:
    cli, _ = session

    result = cli.ok("backup", "-o", "plain.sql")
    dump = (cli.cwd / "plain.sql").read_text()

    assert "PostgreSQL database dump" in dump
    assert "CREATE TABLE public.posts" in dump
    assert "Wrote " in result.stdout
    assert "to plain.sql" in result.stdout
    assert "plain.sql" in result.stderr
    assert "/s" in result.stderr
    assert not [p for p in cli.cwd.iterdir() if ".part-" in p.name]


def test_backup_json_reports_bytes_and_seconds(session: Session) -> None:
    cli, _ = session

    report = cli.ok("backup", "-o", "archive.dump", "--format", "custom", "--json").json()
    path = cli.cwd / "archive.dump"

    assert report["file"] == "archive.dump"
    assert report["bytes"] == path.stat().st_size
    assert report["seconds"] > 0
    assert path.read_bytes().startswith(b"PGDMP")


def test_backup_default_name_and_schema_only(session: Session, tmp_path: Path) -> None:
    cli, project = session

    cli.ok("backup", "--schema-only", cwd=tmp_path)
    (written,) = tmp_path.iterdir()
    dump = written.read_text()

    assert written.name.startswith(project["slug"] + "-")
    assert written.name.endswith(".sql")
    assert "CREATE TABLE public.posts" in dump
    assert "title 1" not in dump


def test_backup_to_stdout(session: Session) -> None:
    cli, _ = session

    result = cli.ok("backup", "-o", "-", "--schema-only")

    assert result.stdout.startswith("--\n-- PostgreSQL database dump")


def test_backup_into_missing_folder_fails_before_downloading(session: Session) -> None:
    cli, _ = session

    result = cli.fails("backup", "-o", "no/such/folder/x.sql", code=2)

    assert "the folder does not exist" in result.stderr


def test_backup_of_unknown_project_leaves_no_file(session: Session) -> None:
    cli, _ = session

    result = cli.fails("backup", "-o", "ghost.sql", "-p", str(uuid.uuid4()))

    assert "(project_not_found)" in result.stderr
    assert not (cli.cwd / "ghost.sql").exists()


class BrokenDownload:
    """A loopback HTTP server that starts a chunked download and drops the connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            received = b""
            while b"\r\n\r\n" not in received:
                received += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/sql\r\n"
                b'Content-Disposition: attachment; filename="x.sql"\r\n'
                b"Transfer-Encoding: chunked\r\n\r\n" + b"6\r\n-- par\r\n"
            )

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()


def test_backup_cut_off_removes_the_partial_file(tmp_path: Path) -> None:
    server = BrokenDownload()
    cli = Cli(tmp_path, server.url, env={"ZBAAS_TOKEN": "t"})
    (cli.cwd / "keep.sql").write_text("older backup")

    try:
        result = cli.fails("backup", "-o", "keep.sql", "-p", str(uuid.uuid4()))
    finally:
        server.close()

    assert "error: request to" in result.stderr
    assert "failed" in result.stderr
    assert (cli.cwd / "keep.sql").read_text() == "older backup"
    assert sorted(p.name for p in cli.cwd.iterdir()) == ["keep.sql"]


# --- branches ---------------------------------------------------------------------


def _branch_owner(settings: Settings, server_url: str, project_id: str, name: str) -> str:
    with connect(server_url, settings.control_database) as control:
        row = control.execute(
            "SELECT owner_role FROM branches WHERE project_id = %s AND name = %s",
            (project_id, name),
        ).fetchone()
    assert row is not None
    return str(row[0])


def _run_in_branch(server_url: str, db_name: str, role: str, statements: str) -> None:
    with connect(server_url, db_name) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute(statements.encode())


def test_branches_create_list_diff_merge_and_delete(
    session: Session, settings: Settings, server_url: str
) -> None:
    cli, project = session

    created = cli.ok("branches", "create", "feature", "--json").json()
    owner = _branch_owner(settings, server_url, project["id"], "feature")
    _run_in_branch(server_url, created["db_name"], owner, "ALTER TABLE posts ADD COLUMN tags text")
    listed = cli.ok("branches", "list")
    planned = cli.ok("branches", "diff", "feature")
    merged = cli.ok("branches", "merge", "feature")
    after = cli.ok("branches", "diff", "feature", "--json").json()
    deleted = cli.ok("branches", "delete", "feature")

    assert created["name"] == "feature"
    assert created["status"] == "active"
    assert "feature" in listed.stdout
    assert "schema only" in listed.stdout
    assert "tags" in planned.stdout
    assert "ADD COLUMN" in planned.stdout.upper()
    assert "Merged branch feature with 1 statements." in merged.stdout
    assert after["statements"] == []
    assert "Deleted branch feature." in deleted.stdout
    assert cli.ok("branches", "list", "--json").json() == []


def test_branches_destructive_merge_asks_first(
    session: Session, settings: Settings, server_url: str
) -> None:
    cli, project = session
    created = cli.ok("branches", "create", "dropper", "--json").json()
    owner = _branch_owner(settings, server_url, project["id"], "dropper")
    _run_in_branch(server_url, created["db_name"], owner, "ALTER TABLE posts DROP COLUMN body")

    without_flag = cli.fails("branches", "merge", "dropper")
    declined = cli.fails("branches", "merge", "dropper", "--allow-destructive", input="n\n")
    planned = cli.ok("branches", "diff", "dropper", "--json").json()
    merged = cli.ok("branches", "merge", "dropper", "--allow-destructive", "--yes", "--json")
    cli.ok("branches", "delete", "dropper")

    assert "(destructive_changes)" in without_flag.stderr
    assert "drops a column" in declined.stderr
    assert "cancelled" in declined.stderr
    assert [s["destructive"] for s in planned["statements"]] == [True]
    assert merged.json()["applied"][0]["destructive"] is True


def test_branches_invalid_and_unknown_names_fail(session: Session) -> None:
    cli, project = session

    invalid = cli.fails("branches", "create", "Bad Name;")
    unknown = cli.fails("branches", "diff", "no-such-branch")
    dots = cli.fails("branches", "delete", "..")
    still_there = cli.ok("projects", "get", project["slug"], "--json").json()

    assert "error:" in invalid.stderr
    assert "error:" in unknown.stderr
    assert "no-such-branch" in unknown.stderr
    assert "error:" in dots.stderr
    assert still_there["id"] == project["id"]


# --- health -----------------------------------------------------------------------


def test_health_shows_findings_table(session: Session) -> None:
    cli, _ = session

    result = cli.ok("health")

    assert "Health CRITICAL" in result.stdout
    assert "public.tickets_id_seq" in result.stdout
    assert "critical" in result.stdout


def test_health_colours_findings_by_severity(session: Session) -> None:
    cli, _ = session

    result = cli.ok("health", env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})

    assert "\x1b[1;31mcritical\x1b[0m" in result.stdout
    assert "Health \x1b[1;31mCRITICAL\x1b[0m" in result.stdout


def test_health_json_and_thresholds(session: Session) -> None:
    cli, _ = session

    report = cli.ok(
        "health", "--threshold", "slow_query_mean_ms=5", "--limit", "3", "--json"
    ).json()

    assert report["status"] == "critical"
    assert report["thresholds"]["slow_query_mean_ms"] == 5
    assert report["thresholds"]["limit"] == 3


def test_health_fail_on_sets_the_exit_status(session: Session) -> None:
    cli, _ = session

    result = cli.fails("health", "--fail-on", "warning")

    assert "public.tickets_id_seq" in result.stdout
    assert "error: the database health is critical (--fail-on warning)" in result.stderr


def test_health_invalid_threshold_fails(session: Session) -> None:
    cli, _ = session

    unknown = cli.fails("health", "--threshold", "nope=1", code=2)
    out_of_range = cli.fails("health", "--threshold", "bloat_min_ratio=7")

    assert "invalid threshold 'nope=1'" in unknown.stderr
    assert "(validation_failed)" in out_of_range.stderr
