"""``zbaas migrations``, ``rls``, ``policies``, ``extensions``, ``indexes`` and ``search``."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clikit import Cli, create_project, delete_project, logged_in_cli
from tests.conftest import ThreadedServer

NOTES_UP = """
CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text NOT NULL,
                    body text, user_id uuid);
INSERT INTO notes (title, body) VALUES
  ('Buying milk', 'remember the milk and the bread'),
  ('Walking', 'walk the dog in the park'),
  ('Reading', 'a book about PostgreSQL full-text search');
"""
NOTES_DOWN = "DROP TABLE notes;"

Session = tuple[Cli, dict[str, Any]]


@pytest.fixture(scope="module")
def session(api: ThreadedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """A logged-in CLI whose default project, set in zbaas.toml, has the table notes."""
    cli, user = logged_in_cli(api, tmp_path_factory.mktemp("cli-database"))
    project = create_project(cli)
    (cli.cwd / "zbaas.toml").write_text(f'project = "{project["slug"]}"\n')
    (cli.cwd / "notes_up.sql").write_text(NOTES_UP)
    (cli.cwd / "notes_down.sql").write_text(NOTES_DOWN)
    cli.ok("migrations", "new", "create_notes", "--up", "notes_up.sql", "--down", "notes_down.sql")
    cli.ok("migrations", "up")
    yield cli, project
    delete_project(api, user, project["id"])


def _migration(cli: Cli, name: str) -> dict[str, Any]:
    migrations = cli.ok("migrations", "list", "--json").json()
    return next(m for m in migrations if m["name"] == name)


# --- migrations -----------------------------------------------------------------


def test_migrations_up_and_down_by_reference(session: Session) -> None:
    cli, _ = session
    (cli.cwd / "drop_tags.sql").write_text("ALTER TABLE notes DROP COLUMN tags;")

    created = cli.ok(
        "migrations",
        "new",
        "add_tags",
        "--up",
        "-",
        "--down",
        "drop_tags.sql",
        input="ALTER TABLE notes ADD tags text;",
    )
    pending = cli.ok("migrations", "list")
    version = str(_migration(cli, "add_tags")["version"])
    applied = cli.ok("migrations", "up", version)
    rolled_back = cli.ok("migrations", "down", "add_tags")
    status_after = _migration(cli, "add_tags")["status"]
    cli.ok("migrations", "up")

    assert f"Migration {version} 'add_tags' is pending" in created.stdout
    assert "create_notes" in pending.stdout
    assert "add_tags" in pending.stdout
    assert f"Migration {version} 'add_tags' is applied" in applied.stdout
    assert f"Migration {version} 'add_tags' is pending" in rolled_back.stdout
    assert status_after == "pending"


def test_migrations_down_without_id_rolls_back_the_latest(session: Session) -> None:
    cli, _ = session
    (cli.cwd / "drop_ratings.sql").write_text("DROP TABLE ratings;")
    cli.ok(
        "migrations",
        "new",
        "add_ratings",
        "--up",
        "-",
        "--down",
        "drop_ratings.sql",
        input="CREATE TABLE ratings (stars int);",
    )
    cli.ok("migrations", "up")

    result = cli.ok("migrations", "down", "--json").json()
    cli.ok("migrations", "up")

    assert (result["name"], result["status"]) == ("add_ratings", "pending")


def test_migrations_up_applies_all_pending_in_order(session: Session) -> None:
    cli, _ = session
    cli.ok("migrations", "new", "p1", "--up", "-", input="CREATE TABLE p1 (a int);")
    cli.ok("migrations", "new", "p2", "--up", "-", input="CREATE TABLE p2 (a int);")

    applied = cli.ok("migrations", "up", "--json").json()["results"]
    again = cli.ok("migrations", "up")

    assert [r["name"] for r in applied][-2:] == ["p1", "p2"]
    assert {r["status"] for r in applied} == {"applied"}
    assert "No pending migrations." in again.stdout


def test_migrations_up_failure_reports_sql_error_and_results(session: Session) -> None:
    cli, _ = session
    cli.ok("migrations", "new", "ok_one", "--up", "-", input="CREATE TABLE ok_one (a int);")
    cli.ok("migrations", "new", "bad_one", "--up", "-", input="SELECT 1;\nSELECT 1/0;")

    result = cli.fails("migrations", "up")
    ok_one = _migration(cli, "ok_one")
    deleted = cli.ok("migrations", "delete", "bad_one")

    assert "error: up_sql of migration" in result.stderr
    assert "failed at line 2: division by zero" in result.stderr
    assert "(sql_error)" in result.stderr
    assert "sqlstate: 22012" in result.stderr
    assert "name=ok_one status=applied" in result.stderr
    assert "name=bad_one status=failed" in result.stderr
    assert ok_one["status"] == "applied"
    assert "Deleted migration" in deleted.stdout


def test_migrations_new_with_missing_file_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("migrations", "new", "ghost", "--up", "no-such-file.sql", code=2)

    assert "error: cannot read no-such-file.sql: No such file or directory" in result.stderr


def test_migrations_new_with_invalid_name_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("migrations", "new", "bad;name", "--up", "-", input="SELECT 1;")

    assert "(validation_failed)" in result.stderr
    assert "invalid migration name" in result.stderr


def test_migrations_new_opens_the_editor(session: Session, tmp_path: Path) -> None:
    cli, _ = session
    editor = tmp_path / "editor.sh"
    editor.write_text(
        "#!/bin/sh\n"
        "sed -i 's/^-- zbaas:up$/-- zbaas:up\\nCREATE TABLE edited (a int);/' \"$1\"\n"
        "sed -i 's/^-- zbaas:down$/-- zbaas:down\\nDROP TABLE edited;/' \"$1\"\n"
    )
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)

    cli.ok("migrations", "new", "edited", env={"EDITOR": str(editor), "VISUAL": ""})
    created = _migration(cli, "edited")

    assert created["up_sql"] == "CREATE TABLE edited (a int);"
    assert created["down_sql"] == "DROP TABLE edited;"


def test_migrations_new_with_empty_editor_text_creates_nothing(session: Session) -> None:
    cli, _ = session

    result = cli.fails("migrations", "new", "empty", env={"EDITOR": "true", "VISUAL": ""})
    names = [m["name"] for m in cli.ok("migrations", "list", "--json").json()]

    assert "the up SQL is empty; nothing was created" in result.stderr
    assert "empty" not in names


def test_migrations_new_without_editor_says_what_to_do(session: Session) -> None:
    cli, _ = session

    result = cli.fails("migrations", "new", "x", env={"EDITOR": "", "VISUAL": ""}, code=2)

    assert "no editor: set EDITOR, or pass the SQL with --up FILE" in result.stderr
    assert list(cli.tmp_dir.iterdir()) == []


def test_migrations_up_unknown_migration_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("migrations", "up", "no_such_migration")

    assert "migration 'no_such_migration' not found" in result.stderr


# --- row-level security and policies ---------------------------------------------


def test_rls_enable_and_disable(session: Session) -> None:
    cli, _ = session

    enabled = cli.ok("rls", "enable", "notes")
    disabled = cli.ok("rls", "disable", "public.notes", "--json").json()

    assert "Row-level security on public.notes is enabled." in enabled.stdout
    assert disabled == {
        "schema": "public",
        "table": "notes",
        "rls_enabled": False,
        "rls_forced": False,
    }


def test_rls_unknown_table_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("rls", "enable", "notes; DROP TABLE notes")

    assert "(table_not_found)" in result.stderr
    assert cli.ok("indexes", "list", "notes", "--json").json()


def test_policies_create_list_and_delete(session: Session) -> None:
    cli, _ = session

    created = cli.ok(
        "policies",
        "create",
        "notes",
        "own/rows",
        "--command",
        "select",
        "--using",
        "auth.uid() = user_id",
        "--role",
        "authenticated",
        "--json",
    ).json()
    listed = cli.ok("policies", "list", "notes")
    deleted = cli.ok("policies", "delete", "notes", "own/rows")
    after = cli.ok("policies", "list", "notes", "--json").json()

    assert created["command"] == "SELECT"
    assert created["roles"] == ["authenticated"]
    assert "own/rows" in listed.stdout
    assert "auth.uid()" in listed.stdout
    assert "Dropped policy 'own/rows' on notes." in deleted.stdout
    assert after == []


def test_policies_create_with_injected_expression_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails(
        "policies", "create", "notes", "evil", "--using", "true); DROP TABLE notes; ("
    )

    assert "(invalid_expression)" in result.stderr
    assert cli.ok("policies", "list", "notes", "--json").json() == []


def test_policies_delete_unknown_policy_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("policies", "delete", "notes", "nope")

    assert "error:" in result.stderr
    assert "nope" in result.stderr


# --- extensions -------------------------------------------------------------------


def test_extensions_list_enable_and_disable(session: Session) -> None:
    cli, _ = session

    enabled = cli.ok("extensions", "enable", "pg_trgm")
    listed = cli.ok("extensions", "list", "--enabled")
    everything = cli.ok("extensions", "list", "--json").json()
    disabled = cli.ok("extensions", "disable", "pg_trgm", "--cascade", "--json").json()

    assert "Enabled pg_trgm" in enabled.stdout
    assert "schema extensions" in enabled.stdout
    assert "pg_trgm" in listed.stdout
    assert "dblink" not in listed.stdout
    assert any(e["name"] == "dblink" and not e["allowed"] for e in everything)
    assert disabled["enabled"] is False


def test_extensions_enable_refused_one_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("extensions", "enable", "dblink")

    assert "(extension_not_allowed)" in result.stderr


# --- indexes and search -----------------------------------------------------------


def test_indexes_create_list_and_drop(session: Session) -> None:
    cli, _ = session

    created = cli.ok(
        "indexes", "create", "notes", "title", "body", "--name", "notes_tb", "--json"
    ).json()
    listed = cli.ok("indexes", "list", "notes")
    dropped = cli.ok("indexes", "drop", "notes_tb")
    after = [i["name"] for i in cli.ok("indexes", "list", "notes", "--json").json()]

    assert created["columns"] == ["title", "body"]
    assert created["valid"] is True
    assert "notes_tb" in listed.stdout
    assert "notes_pkey" in listed.stdout
    assert "Dropped index notes_tb." in dropped.stdout
    assert "notes_tb" not in after


def test_indexes_create_unknown_column_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("indexes", "create", "notes", "nope")

    assert "error:" in result.stderr
    assert "nope" in result.stderr


def test_indexes_drop_unknown_index_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("indexes", "drop", "no_such_index")

    assert "no_such_index" in result.stderr


def test_indexes_create_invalid_type(session: Session) -> None:
    cli, _ = session

    result = cli.fails("indexes", "create", "notes", "title", "--type", "brin", code=2)

    assert "brin" in result.stderr


def test_search_ranks_and_highlights(session: Session) -> None:
    cli, _ = session

    built = cli.ok("indexes", "search", "notes", "-c", "title", "-c", "body")
    table = cli.ok("search", "notes", "milk", "-c", "title", "-c", "body")
    as_json = cli.ok("search", "notes", "milk", "-c", "title", "-c", "body", "--json").json()

    assert "search index" in built.stdout
    assert "1 rows, fulltext search" in table.stderr
    assert "remember the milk and the bread" in table.stdout
    assert as_json["rows"][0]["row"]["title"] == "Buying milk"
    assert "<b>milk</b>" in as_json["rows"][0]["highlights"]["body"]


def test_search_fuzzy_and_options(session: Session) -> None:
    cli, _ = session
    cli.ok("extensions", "enable", "pg_trgm")

    fuzzy = cli.ok("search", "notes", "postgre", "-c", "body", "--fuzzy", "--json").json()
    paged = cli.ok(
        "search", "notes", "walk or book", "-c", "body", "--limit", "1", "--offset", "1", "--json"
    ).json()

    assert fuzzy["mode"] == "fuzzy"
    assert (paged["limit"], paged["offset"]) == (1, 1)
    assert len(paged["rows"]) == 1


def test_search_unknown_column_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("search", "notes", "milk", "-c", "nope")

    assert "error:" in result.stderr
    assert "nope" in result.stderr


def test_search_limit_out_of_range(session: Session) -> None:
    cli, _ = session

    result = cli.fails("search", "notes", "milk", "-c", "body", "--limit", "0", code=2)

    assert "--limit" in result.stderr
