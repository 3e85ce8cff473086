from __future__ import annotations

import logging
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from psycopg import sql

from tests.conftest import ThreadedServer, connect, signup_and_login
from zbaas.postgres import embedded
from zbaas.tenant import backup

# Objects of every kind a dump must carry, created as the project's owner role. The
# odd table name checks that identifiers with quotes, semicolons and comment
# markers survive the round trip.
RICH_SCHEMA = """
CREATE SEQUENCE public.invoice_numbers START 1000 INCREMENT 7;
CREATE TABLE public.authors (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    born date
);
CREATE TABLE public.posts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    author_id bigint NOT NULL REFERENCES public.authors (id) ON DELETE CASCADE,
    title text NOT NULL CHECK (title <> ''),
    body text,
    tags text[] NOT NULL DEFAULT '{}',
    meta jsonb,
    owner_id uuid,
    invoice integer NOT NULL DEFAULT nextval('public.invoice_numbers'),
    score numeric(10, 3),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX posts_title_trgm ON public.posts USING gin (title gin_trgm_ops);
CREATE INDEX posts_author ON public.posts (author_id, created_at DESC);
CREATE TABLE public."odd ""name""; -- x" (id integer PRIMARY KEY, "value;--" text);
CREATE VIEW public.post_titles AS
    SELECT p.id, a.name AS author, p.title FROM public.posts p JOIN public.authors a
    ON a.id = p.author_id;
CREATE FUNCTION public.word_count(body text) RETURNS integer
    LANGUAGE sql IMMUTABLE AS $$ SELECT coalesce(array_length(regexp_split_to_array(
    trim(body), '\\s+'), 1), 0) $$;
CREATE FUNCTION public.touch_title() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.title := trim(NEW.title);
    RETURN NEW;
END $$;
CREATE TRIGGER posts_touch BEFORE INSERT OR UPDATE ON public.posts
    FOR EACH ROW EXECUTE FUNCTION public.touch_title();
ALTER TABLE public.posts ENABLE ROW LEVEL SECURITY;
CREATE POLICY posts_read ON public.posts FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY posts_write ON public.posts FOR INSERT TO authenticated
    WITH CHECK (owner_id = auth.uid());
COMMENT ON TABLE public.posts IS 'posts; with a ''quoted'' comment';

INSERT INTO public.authors (name, born)
    SELECT 'author ' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE date '1970-01-01' + g END
    FROM generate_series(1, 50) g;
INSERT INTO public.posts (author_id, title, body, tags, meta, owner_id, score)
    SELECT 1 + g % 50,
           '  title ' || g || E' with \\'quotes\\', tabs\\t and ünïcode ',
           CASE WHEN g % 7 = 0 THEN NULL
                ELSE repeat(E'line\\n\\\\ back; -- not a comment ', g % 4) END,
           ARRAY['t' || g % 3, 'x'],
           jsonb_build_object('n', g, 'even', g % 2 = 0),
           md5(g::text)::uuid,
           g / 3.0
    FROM generate_series(1, 500) g;
INSERT INTO public."odd ""name""; -- x" VALUES (1, E'a\\tb'), (2, NULL);
SELECT setval('public.invoice_numbers', 5000, false);
INSERT INTO zbaas_meta.schema_migrations (version, migration_id, name, checksum)
    VALUES (1, gen_random_uuid(), 'create posts', 'abc');
ALTER TABLE public.authors ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.authors FORCE ROW LEVEL SECURITY;
CREATE POLICY authors_read ON public.authors FOR SELECT USING (born IS NOT NULL);
"""


def owner_role(server_url: str, db_name: str) -> str:
    with connect(server_url, db_name) as conn:
        row = conn.execute(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
        ).fetchone()
    assert row is not None
    return str(row[0])


# Every test here only reads its project, so one user and one project serve the
# whole module. These fixtures replace conftest's function-scoped ones of the
# same names.
@pytest.fixture(scope="module")
def client(api: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def user(client: httpx.Client) -> dict[str, Any]:
    return signup_and_login(client)


def create_project(client: httpx.Client, user: dict[str, Any]) -> dict[str, Any]:
    slug = f"b-{uuid.uuid4().hex[:8]}"
    response = client.post(
        "/projects", json={"name": "Backup Test", "slug": slug}, headers=user["headers"]
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def project(client: httpx.Client, user: dict[str, Any]) -> Iterator[dict[str, Any]]:
    created = create_project(client, user)
    yield created
    client.delete(f"/projects/{created['id']}", headers=user["headers"])


@pytest.fixture(scope="module")
def secret_key(client: httpx.Client, user: dict[str, Any], project: dict[str, Any]) -> str:
    response = client.post(
        f"/projects/{project['id']}/keys",
        json={"name": "tests", "type": "secret"},
        headers=user["headers"],
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


@pytest.fixture(scope="module")
def rich_project(project: dict[str, Any], server_url: str) -> dict[str, Any]:
    """The module's project filled with tables, views, functions, policies and rows."""
    owner = owner_role(server_url, project["db_name"])
    with connect(server_url, project["db_name"]) as conn:
        # Extensions are created by the control plane, as superuser.
        conn.execute("CREATE EXTENSION pg_trgm WITH SCHEMA public")
        conn.execute(
            "INSERT INTO auth.users (email, encrypted_password) VALUES ('a@example.com', 'x')"
        )
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
        conn.execute(RICH_SCHEMA.encode())
    return project


def backup_url(project: dict[str, Any]) -> str:
    return f"/projects/{project['id']}/database/backup"


def download(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], **params: str
) -> httpx.Response:
    response = client.post(backup_url(project), params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response


def bundled(program: str) -> str:
    return str(embedded.bin_dir() / program)


def client_environment(server_url: str, dbname: str, tmp_path: Path) -> dict[str, str]:
    """Environment for the bundled psql and pg_restore, with a password file if needed."""
    password = psycopg.conninfo.conninfo_to_dict(server_url).get("password")
    passfile = None
    if password:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"*:*:*:*:{password}\n")
        passfile.chmod(0o600)
    return backup.libpq_environment(server_url, dbname, passfile)


@pytest.fixture
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh, empty, uniquely named database, dropped afterwards."""
    name = f"zbaas_restore_{uuid.uuid4().hex[:12]}"
    with connect(server_url, "postgres") as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(name)
            )
        )
    yield name
    with connect(server_url, "postgres") as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def schema_diff(server_url: str, source: str, target: str) -> str:
    """Return the DDL that would turn ``source``'s schema into ``target``'s (migra)."""
    from results.dbdiff import Migration

    with connect(server_url, source) as a, connect(server_url, target) as b:
        migration = Migration(a.cursor(), b.cursor())
        migration.set_safety(False)
        migration.add_all_changes_ordered(privileges=True)
        return str(migration.sql)


# Lines of a schema dump that differ between any two databases. PostgreSQL 18 writes
# random \restrict keys. The PostgreSQL 15 server on 127.0.0.1:5432 sets a pg_attver
# attribute option on every column when it is created, so a restore gets new values.
VOLATILE_DUMP_LINES = re.compile(
    r"^(\\(un)?restrict .*|ALTER TABLE ONLY .* SET \(pg_attver=\d+\);)$", re.MULTILINE
)


def schema_dump(server_url: str, dbname: str, tmp_path: Path) -> str:
    """``pg_dump --schema-only`` text without the lines in VOLATILE_DUMP_LINES."""
    result = subprocess.run(
        [bundled("pg_dump"), "--schema-only"],
        env=client_environment(server_url, dbname, tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    return VOLATILE_DUMP_LINES.sub("", result.stdout)


def table_fingerprints(server_url: str, dbname: str) -> dict[str, tuple[int, str]]:
    """Return row count and an MD5 of the sorted rows of every table and sequence."""
    fingerprints: dict[str, tuple[int, str]] = {}
    with connect(server_url, dbname) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'S') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2"
        ).fetchall()
        for schema, name, kind in tables:
            relation = sql.Identifier(schema, name)
            if kind == "S":
                query = sql.SQL("SELECT 1, (last_value, is_called)::text FROM {}").format(relation)
            else:
                query = sql.SQL(
                    "SELECT count(*), "
                    "coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM {} t"
                ).format(relation)
            row = conn.execute(query).fetchone()
            assert row is not None
            fingerprints[f"{schema}.{name}"] = (int(row[0]), str(row[1]))
    return fingerprints


def restore_plain(server_url: str, dbname: str, dump: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [bundled("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump)],
        env=client_environment(server_url, dbname, tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def server_major(server_url: str) -> int:
    with connect(server_url, "postgres") as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    return int(row[0]) // 10000


def restore_custom(server_url: str, dbname: str, dump: Path, tmp_path: Path) -> None:
    # pg_restore 18 sends SET transaction_timeout, which servers before 17 reject;
    # that one error is expected there and restoring goes on past it.
    before_17 = server_major(server_url) < 17
    result = subprocess.run(
        [
            bundled("pg_restore"),
            *([] if before_17 else ["--exit-on-error"]),
            f"--dbname={dbname}",
            str(dump),
        ],
        env=client_environment(server_url, dbname, tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    if before_17:
        assert all("transaction_timeout" in line for line in errors), result.stderr
    else:
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("dump_format", "restore"), [("plain", restore_plain), ("custom", restore_custom)]
)
def test_backup_restores_exactly(
    client: httpx.Client,
    user: dict[str, Any],
    rich_project: dict[str, Any],
    server_url: str,
    scratch_database: str,
    tmp_path: Path,
    dump_format: str,
    restore: Any,
) -> None:
    response = download(client, rich_project, user["headers"], format=dump_format)
    dump = tmp_path / "backup"
    dump.write_bytes(response.content)

    restore(server_url, scratch_database, dump, tmp_path)

    source = rich_project["db_name"]
    original = table_fingerprints(server_url, source)
    assert original["public.posts"][0] == 500
    assert schema_diff(server_url, source, scratch_database) == ""
    assert schema_dump(server_url, scratch_database, tmp_path) == schema_dump(
        server_url, source, tmp_path
    )
    assert table_fingerprints(server_url, scratch_database) == original


def test_backup_schema_diff_sees_missing_objects(
    rich_project: dict[str, Any], server_url: str, scratch_database: str
) -> None:
    # Guards the restore test: an empty database must not compare as equal.
    assert "posts" in schema_diff(server_url, rich_project["db_name"], scratch_database)


def test_backup_plain_headers(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    response = download(client, project, user["headers"])

    disposition = response.headers["content-disposition"]
    assert re.fullmatch(
        rf'attachment; filename="{project["slug"]}-\d{{8}}T\d{{6}}Z\.sql"', disposition
    )
    assert response.headers["content-type"].startswith("application/sql")
    assert response.text.startswith("--\n-- PostgreSQL database dump")


def test_backup_custom_format_archive(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    response = download(client, project, user["headers"], format="custom")

    assert response.headers["content-disposition"].endswith('.dump"')
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content.startswith(b"PGDMP")


def test_backup_schema_only_has_no_rows(
    client: httpx.Client, user: dict[str, Any], rich_project: dict[str, Any]
) -> None:
    text = download(client, rich_project, user["headers"], schema_only="true").text

    assert "CREATE TABLE public.posts" in text
    assert "author 17" not in text


@pytest.mark.parametrize(
    "params",
    [
        {"format": "tar"},
        {"format": "PLAIN; rm -rf /"},
        {"format": "--file=/tmp/x"},
        {"schema_only": "maybe"},
        {"schema_only": "true'--"},
    ],
)
def test_backup_invalid_parameter_is_422(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], params: dict[str, str]
) -> None:
    response = client.post(backup_url(project), params=params, headers=user["headers"])

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"


def test_backup_secret_key_allowed(
    client: httpx.Client, project: dict[str, Any], secret_key: str
) -> None:
    response = client.post(backup_url(project), headers={"apikey": secret_key})

    assert response.status_code == 200


def test_backup_publishable_key_forbidden(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    created = client.post(
        f"/projects/{project['id']}/keys",
        json={"name": "browser", "type": "publishable"},
        headers=user["headers"],
    )
    assert created.status_code == 201, created.text

    response = client.post(backup_url(project), headers={"apikey": created.json()["key"]})

    assert response.status_code == 403


def test_backup_other_user_not_found(client: httpx.Client, project: dict[str, Any]) -> None:
    stranger = signup_and_login(client)

    response = client.post(backup_url(project), headers=stranger["headers"])

    assert response.status_code == 404


def test_backup_anonymous_unauthorized(client: httpx.Client, project: dict[str, Any]) -> None:
    assert client.post(backup_url(project)).status_code == 401


def test_backup_logs_start_end_and_size(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="zbaas.backup")

    size = len(download(client, project, user["headers"]).content)

    messages = [r.getMessage() for r in caplog.records if r.name == "zbaas.backup"]
    assert any(m.startswith(f"backup of project {project['id']} started") for m in messages)
    assert f"backup of project {project['id']} finished: {size} bytes" in "\n".join(messages)


def test_backup_version_older_than_server_is_503(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backup, "_pg_dump_major", 14)

    response = client.post(backup_url(project), headers=user["headers"])

    assert response.status_code == 503
    assert "at least the server's major version" in response.json()["error"]["message"]


def test_backup_lock_timeout_is_503_before_output(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    server_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backup, "LOCK_WAIT_TIMEOUT", "200ms")
    table = f"locked_{uuid.uuid4().hex[:8]}"
    with connect(server_url, project["db_name"]) as conn:
        conn.execute(sql.SQL("CREATE TABLE public.{} (id integer)").format(sql.Identifier(table)))
    try:
        with connect(server_url, project["db_name"]) as conn, conn.transaction():
            conn.execute(
                sql.SQL("LOCK TABLE public.{} IN ACCESS EXCLUSIVE MODE").format(
                    sql.Identifier(table)
                )
            )

            response = client.post(backup_url(project), headers=user["headers"])
    finally:
        with connect(server_url, project["db_name"]) as conn:
            conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(table)))

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "backup_failed"


# Larger than the pipe, the server's socket buffers and the client's together, so
# pg_dump is still running when the test has read the first chunk.
LARGE_TABLE_MB = 32


@pytest.fixture(scope="module")
def large_project(
    client: httpx.Client, user: dict[str, Any], server_url: str
) -> Iterator[dict[str, Any]]:
    created = create_project(client, user)
    with connect(server_url, created["db_name"]) as conn:
        conn.execute("CREATE TABLE public.filler (id integer, payload text)")
        conn.execute(
            "INSERT INTO public.filler SELECT g, repeat(md5(g::text), 32) "
            "FROM generate_series(1, %s) g",
            (LARGE_TABLE_MB * 1024,),
        )
    yield created
    client.delete(f"/projects/{created['id']}", headers=user["headers"])


def pg_dump_processes(db_name: str) -> list[psutil.Process]:
    """pg_dump processes started for ``db_name``, found by their environment."""
    found = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] != "pg_dump":
            continue
        try:
            if process.environ().get("PGDATABASE") == db_name:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_until_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid):
            return True
        time.sleep(0.05)
    return False


def test_backup_client_disconnect_kills_pg_dump(
    client: httpx.Client, user: dict[str, Any], large_project: dict[str, Any]
) -> None:
    with client.stream("POST", backup_url(large_project), headers=user["headers"]) as response:
        assert response.status_code == 200
        # Keep the iterator: dropping it would close the response at once.
        chunks = response.iter_raw()
        next(chunks)
        running = pg_dump_processes(large_project["db_name"])
        assert len(running) == 1
    # Leaving the block closes the connection before the body was read.

    assert wait_until_gone(running[0].pid)
    assert pg_dump_processes(large_project["db_name"]) == []


def test_backup_pg_dump_failure_midstream_breaks_download(
    client: httpx.Client, user: dict[str, Any], large_project: dict[str, Any]
) -> None:
    with client.stream("POST", backup_url(large_project), headers=user["headers"]) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        next(chunks)
        [process] = pg_dump_processes(large_project["db_name"])
        process.kill()

        with pytest.raises(httpx.RemoteProtocolError):
            for _ in chunks:
                pass

    assert wait_until_gone(process.pid)


def test_backup_credentials_stay_off_command_line(
    client: httpx.Client,
    user: dict[str, Any],
    large_project: dict[str, Any],
    server_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = psycopg.conninfo.conninfo_to_dict(server_url).get("password")

    with client.stream("POST", backup_url(large_project), headers=user["headers"]) as response:
        chunks = response.iter_raw()
        next(chunks)
        [process] = pg_dump_processes(large_project["db_name"])
        command_line = " ".join(process.cmdline())
        environment = process.environ()
        passfile = environment.get("PGPASSFILE")
        # Removed as soon as pg_dump has connected, while it still runs.
        passfile_left = passfile is not None and Path(passfile).exists()

    assert "PGPASSWORD" not in environment
    assert not passfile_left
    assert "host" not in command_line
    assert large_project["db_name"] not in command_line
    if password:
        assert password not in command_line
        assert passfile is not None
        assert password not in caplog.text


def test_backup_plain_sets_transaction_timeout_only_on_17(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], server_url: str
) -> None:
    text = download(client, project, user["headers"]).text

    assert ("SET transaction_timeout = 0;" in text) == (server_major(server_url) >= 17)
