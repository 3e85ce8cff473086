"""The database health report: each condition is created for real and must be reported."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ThreadedServer, connect, signup_and_login

SECTIONS = {
    "table_bloat",
    "missing_indexes",
    "unused_indexes",
    "duplicate_indexes",
    "invalid_indexes",
    "slow_queries",
    "connections",
    "cache_hit",
    "vacuum",
    "long_running",
    "table_sizes",
    "sequences",
}

# The statements the report gives an operator to enable statement statistics.
ENABLE_STATEMENTS = (
    'CREATE SCHEMA IF NOT EXISTS "zbaas_stats"; '
    'CREATE EXTENSION IF NOT EXISTS "pg_stat_statements" SCHEMA "zbaas_stats"'
)


def get_report(
    client: httpx.Client, project: dict[str, Any], headers: dict[str, str], **params: Any
) -> dict[str, Any]:
    response = client.get(f"/projects/{project['id']}/db/health", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def findings(report: dict[str, Any], section: str, obj: str | None = None) -> list[dict[str, Any]]:
    """Findings of one section, optionally only those about ``obj``."""
    found = report["sections"][section]["findings"]
    return [f for f in found if obj is None or f["object"] == obj]


def flush_statistics(conn: psycopg.Connection) -> None:
    """Make this session's pending statistics visible to others before it goes idle."""
    conn.execute("SELECT pg_stat_force_next_flush()")


@pytest.fixture
def db(server_url: str, project: dict[str, Any]) -> Iterator[psycopg.Connection]:
    """A superuser connection to the project's database."""
    with connect(server_url, project["db_name"]) as conn:
        yield conn


@pytest.fixture
def owner_role(db: psycopg.Connection) -> str:
    row = db.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'")
    return str(row.fetchone()[0])  # type: ignore[index]


def statements_preloaded(conn: psycopg.Connection) -> bool:
    preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]  # type: ignore[index]
    return "pg_stat_statements" in [name.strip() for name in preload.split(",")]


def test_health_fresh_project_ok(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
) -> None:
    report = get_report(client, project, user["headers"])
    serious = [
        f
        for section in report["sections"].values()
        for f in section["findings"]
        if f["severity"] != "info"
    ]

    assert report["status"] == "ok"
    assert set(report["sections"]) == SECTIONS
    assert serious == []
    assert report["database"] == project["db_name"]
    assert report["finding_counts"]["warning"] == 0


def test_health_skips_managed_schemas(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], db: psycopg.Connection
) -> None:
    # Rows in the platform's own tables, never analysed: these would get
    # "run ANALYZE" findings that the project's roles cannot act on.
    db.execute("INSERT INTO storage.buckets (id, name) VALUES ('extra', 'extra')")
    report = get_report(client, project, user["headers"])
    managed = [
        f["object"]
        for section in report["sections"].values()
        for f in section["findings"]
        if str(f.get("object") or "").split(".")[0] in ("auth", "storage", "zbaas_meta")
    ]

    assert managed == []


def test_health_reports_slow_query(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    db: psycopg.Connection,
    owner_role: str,
) -> None:
    before = get_report(client, project, user["headers"])["sections"]["slow_queries"]
    if not statements_preloaded(db):
        assert before["available"] is False
        assert "shared_preload_libraries" in before["message"]
        assert before["summary"]["enable_sql"] == ENABLE_STATEMENTS
        return

    # An operator follows the report's instructions.
    assert before["available"] is False
    assert before["summary"]["enable_sql"] == ENABLE_STATEMENTS
    db.execute(ENABLE_STATEMENTS)
    db.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(owner_role)))
    db.execute("SELECT pg_sleep(0.3) AS slow_marker")
    db.execute("RESET ROLE")

    report = get_report(client, project, user["headers"], slow_query_mean_ms=200)
    section = report["sections"]["slow_queries"]
    slow = [f for f in section["findings"] if "slow_marker" in f["message"]]

    assert section["available"] is True
    assert slow[0]["severity"] == "warning"
    assert owner_role in slow[0]["message"]
    assert any("slow_marker" in item["query"] for item in section["items"])


def test_health_statements_enabled_by_api(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], db: psycopg.Connection
) -> None:
    if not statements_preloaded(db):
        pytest.skip("pg_stat_statements is not preloaded on this server")
    before = get_report(client, project, user["headers"])["sections"]["slow_queries"]
    assert before["available"] is False
    assert "extensions/pg_stat_statements/enable" in before["message"]

    enabled = client.post(
        f"/projects/{project['id']}/database/extensions/pg_stat_statements/enable",
        headers=user["headers"],
    )
    assert enabled.status_code in (200, 201), enabled.text

    after = get_report(client, project, user["headers"])["sections"]["slow_queries"]
    assert after["available"] is True


def test_health_old_statements_extension_unavailable(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], db: psycopg.Connection
) -> None:
    if not statements_preloaded(db):
        pytest.skip("pg_stat_statements is not preloaded on this server")
    db.execute("CREATE SCHEMA zbaas_stats")
    db.execute("CREATE EXTENSION pg_stat_statements VERSION '1.4' SCHEMA zbaas_stats")

    report = get_report(client, project, user["headers"])
    section = report["sections"]["slow_queries"]

    assert section["available"] is False
    assert "ALTER EXTENSION pg_stat_statements UPDATE" in section["message"]
    assert set(report["sections"]) == SECTIONS


BAD_THRESHOLDS = [
    {"bloat_min_ratio": "2"},
    {"bloat_min_ratio": "nan"},
    {"limit": "0"},
    {"limit": "1001"},
    {"seq_scan_min_rows": "many"},
    {"seq_scan_min_rows": "-1"},
    {"long_transaction_seconds": "0"},
    {"slow_query_mean_ms": "inf"},
    {"xid_age_warning": str(2**40)},
    {"sequence_warning_ratio": "0.95", "sequence_critical_ratio": "0.9"},
    {"connections_warning_ratio": "0.9", "connections_critical_ratio": "0.5"},
    {"no_such_threshold": "1"},
    {"limit": "1; DROP TABLE auth.users --"},
]


class TestSharedProject:
    """Conditions created in one shared project, each under object names of its own.

    Creating a database costs seconds, so these tests share one project.
    """

    @pytest.fixture(scope="class")
    def user(self, api: ThreadedServer) -> dict[str, Any]:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            return signup_and_login(http)

    @pytest.fixture(scope="class")
    def project(self, api: ThreadedServer, user: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            created = http.post(
                "/projects",
                json={"name": "Shared", "slug": f"h-{uuid.uuid4().hex[:8]}"},
                headers=user["headers"],
            )
            assert created.status_code == 201, created.text
            yield created.json()
            http.delete(f"/projects/{created.json()['id']}", headers=user["headers"])

    @pytest.fixture
    def secret_key(
        self, client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
    ) -> str:
        response = client.post(
            f"/projects/{project['id']}/keys",
            json={"name": "tests", "type": "secret"},
            headers=user["headers"],
        )
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    def test_health_secret_key_allowed(
        self, client: httpx.Client, project: dict[str, Any], secret_key: str
    ) -> None:
        report = get_report(client, project, {"apikey": secret_key})

        assert report["database"] == project["db_name"]

    def test_health_publishable_key_forbidden(
        self, client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
    ) -> None:
        created = client.post(
            f"/projects/{project['id']}/keys",
            json={"name": "web", "type": "publishable"},
            headers=user["headers"],
        )
        response = client.get(
            f"/projects/{project['id']}/db/health", headers={"apikey": created.json()["key"]}
        )

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"

    def test_health_other_user_not_found(
        self, client: httpx.Client, project: dict[str, Any]
    ) -> None:
        stranger = signup_and_login(client)
        response = client.get(f"/projects/{project['id']}/db/health", headers=stranger["headers"])

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "project_not_found"

    def test_health_requires_credentials(
        self, client: httpx.Client, project: dict[str, Any]
    ) -> None:
        response = client.get(f"/projects/{project['id']}/db/health")

        assert response.status_code == 401

    def test_health_rejects_bad_thresholds(
        self, client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
    ) -> None:
        for params in BAD_THRESHOLDS:
            response = client.get(
                f"/projects/{project['id']}/db/health", params=params, headers=user["headers"]
            )

            assert response.status_code == 422, params
            assert response.json()["error"]["code"] == "validation_failed", params

    def test_health_reports_table_bloat(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        db: psycopg.Connection,
    ) -> None:
        db.execute(
            "CREATE TABLE bloated (id int PRIMARY KEY, payload text) "
            "WITH (autovacuum_enabled = off)"
        )
        db.execute("INSERT INTO bloated SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g")
        db.execute("ANALYZE bloated")
        # Each full update leaves a dead copy of every row; without VACUUM the table triples.
        db.execute("UPDATE bloated SET payload = payload || ''")
        db.execute("UPDATE bloated SET payload = payload || ''")
        db.execute("ANALYZE bloated")
        flush_statistics(db)

        report = get_report(
            client,
            project,
            user["headers"],
            bloat_min_bytes=100_000,
            bloat_min_ratio=0.5,
            vacuum_dead_rows=1000,
        )
        bloat = findings(report, "table_bloat", "public.bloated")
        dead_rows = [
            f for f in findings(report, "vacuum", "public.bloated") if "dead rows" in f["message"]
        ]
        disabled = [
            f for f in findings(report, "vacuum", "public.bloated") if "autovacuum" in f["message"]
        ]

        assert len(bloat) == 1
        assert bloat[0]["severity"] == "warning"
        assert "public.bloated" in bloat[0]["message"]
        assert bloat[0]["fix_sql"] == 'VACUUM (ANALYZE) "public"."bloated"'
        assert findings(report, "table_bloat", "public.bloated_pkey") != []
        assert dead_rows[0]["fix_sql"] == 'VACUUM (ANALYZE) "public"."bloated"'
        assert disabled[0]["fix_sql"] == 'ALTER TABLE "public"."bloated" RESET (autovacuum_enabled)'
        assert report["status"] == "warning"

    def test_health_bloat_below_threshold_not_reported(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        db: psycopg.Connection,
    ) -> None:
        db.execute("CREATE TABLE tidy (id int PRIMARY KEY, payload text)")
        db.execute("INSERT INTO tidy SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g")
        db.execute("ANALYZE tidy")

        report = get_report(client, project, user["headers"], bloat_min_bytes=100_000)
        items = [
            i for i in report["sections"]["table_bloat"]["items"] if i["name"] == "public.tidy"
        ]

        assert findings(report, "table_bloat", "public.tidy") == []
        assert items[0]["wasted_ratio"] < 0.2

    def test_health_reports_sequential_scans(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        db: psycopg.Connection,
    ) -> None:
        db.execute("CREATE TABLE scanned (id int, v int)")
        db.execute("INSERT INTO scanned SELECT g, g % 10 FROM generate_series(1, 300) g")
        for _ in range(6):
            db.execute("SELECT count(*) FROM scanned WHERE v = 7")
        flush_statistics(db)

        report = get_report(
            client, project, user["headers"], seq_scan_min_rows=100, seq_scan_min_count=5
        )
        found = findings(report, "missing_indexes", "public.scanned")
        default = get_report(client, project, user["headers"])

        assert len(found) == 1
        assert "300 rows" in found[0]["message"]
        assert findings(default, "missing_indexes", "public.scanned") == []

    def test_health_reports_unindexed_foreign_key(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        db: psycopg.Connection,
    ) -> None:
        db.execute("CREATE TABLE parent (id int PRIMARY KEY)")
        db.execute('CREATE TABLE "we;ird ""kid""" ("Parent--id" int REFERENCES parent)')
        db.execute("CREATE TABLE indexed_kid (parent_id int REFERENCES parent)")
        db.execute("CREATE INDEX ON indexed_kid (parent_id)")

        report = get_report(client, project, user["headers"])
        found = [
            f
            for f in findings(report, "missing_indexes")
            if f["object_type"] == "foreign_key" and 'kid"""' in f["object"]
        ]
        indexed = [f for f in findings(report, "missing_indexes") if "indexed_kid" in f["object"]]

        assert len(found) == 1
        assert found[0]["fix_sql"] == (
            'CREATE INDEX CONCURRENTLY ON "public"."we;ird ""kid""" ("Parent--id")'
        )
        assert indexed == []

        db.execute(found[0]["fix_sql"])
        fixed = get_report(client, project, user["headers"])

        assert [f for f in findings(fixed, "missing_indexes") if 'kid"""' in f["object"]] == []

    def test_health_reports_duplicate_index(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        db: psycopg.Connection,
    ) -> None:
        db.execute("CREATE TABLE orders (id int PRIMARY KEY, customer int, placed date)")
        db.execute("CREATE INDEX orders_customer_a ON orders (customer)")
        db.execute("CREATE INDEX orders_customer_b ON orders (customer)")
        db.execute("CREATE INDEX orders_placed ON orders (placed)")
        db.execute("CREATE INDEX orders_placed_customer ON orders (placed, customer)")
        db.execute("CREATE INDEX orders_customer_partial ON orders (customer) WHERE placed IS NULL")

        report = get_report(client, project, user["headers"])
        exact = findings(report, "duplicate_indexes", "public.orders_customer_b")
        prefix = findings(report, "duplicate_indexes", "public.orders_placed")
        reported = {f["object"] for f in findings(report, "duplicate_indexes")}

        assert "public.orders_customer_a" in exact[0]["message"]
        assert exact[0]["fix_sql"] == 'DROP INDEX CONCURRENTLY "public"."orders_customer_b"'
        assert "public.orders_placed_customer" in prefix[0]["message"]
        assert "public.orders_customer_a" not in reported
        assert "public.orders_customer_partial" not in reported
        assert "public.orders_pkey" not in reported

    def test_health_reports_unused_index(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        db: psycopg.Connection,
    ) -> None:
        db.execute("CREATE TABLE events (id int PRIMARY KEY, kind text, seen int)")
        db.execute("INSERT INTO events SELECT g, 'k' || g % 5, g FROM generate_series(1, 2000) g")
        db.execute("CREATE INDEX events_kind_idle ON events (kind)")
        db.execute("CREATE INDEX events_seen_used ON events (seen)")
        db.execute("ANALYZE events")
        db.execute("SET enable_seqscan = off")
        db.execute("SELECT * FROM events WHERE seen = 10")
        db.execute("RESET enable_seqscan")
        flush_statistics(db)

        report = get_report(client, project, user["headers"])
        idle = findings(report, "unused_indexes", "public.events_kind_idle")

        assert idle[0]["severity"] == "info"
        assert idle[0]["fix_sql"] == 'DROP INDEX CONCURRENTLY "public"."events_kind_idle"'
        assert findings(report, "unused_indexes", "public.events_seen_used") == []
        assert findings(report, "unused_indexes", "public.events_pkey") == []

    def test_health_reports_invalid_index(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        db: psycopg.Connection,
    ) -> None:
        db.execute("CREATE TABLE emails (address text)")
        db.execute("INSERT INTO emails VALUES ('a@example.com'), ('a@example.com')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            db.execute("CREATE UNIQUE INDEX CONCURRENTLY emails_address_key ON emails (address)")

        report = get_report(client, project, user["headers"])
        found = findings(report, "invalid_indexes", "public.emails_address_key")

        assert found[0]["severity"] == "warning"
        assert found[0]["fix_sql"] == 'DROP INDEX CONCURRENTLY "public"."emails_address_key"'

    def test_health_reports_open_transaction(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        server_url: str,
        owner_role: str,
    ) -> None:
        with connect(server_url, project["db_name"]) as holder:
            holder.execute("BEGIN")
            holder.execute("SELECT 1 AS held_open_marker")
            pid = holder.info.backend_pid
            time.sleep(1.2)
            report = get_report(client, project, user["headers"], long_transaction_seconds=1)
            holder.execute("ROLLBACK")

        found = findings(report, "long_running", f"pid {pid}")
        items = [i for i in report["sections"]["long_running"]["items"] if i["pid"] == pid]

        assert found[0]["severity"] == "warning"
        assert "idle in transaction" in found[0]["message"]
        assert found[0]["fix_sql"] == f"SELECT pg_terminate_backend({pid})"
        assert "held_open_marker" in items[0]["query"]
        assert report["status"] == "warning"

    def test_health_reports_lock_wait(
        self, client: httpx.Client, user: dict[str, Any], project: dict[str, Any], server_url: str
    ) -> None:
        with (
            connect(server_url, project["db_name"]) as holder,
            connect(server_url, project["db_name"]) as waiter,
        ):
            holder_pid, waiter_pid = holder.info.backend_pid, waiter.info.backend_pid
            holder.execute("CREATE TABLE contended (id int PRIMARY KEY)")
            holder.execute("BEGIN")
            holder.execute("LOCK TABLE contended IN ACCESS EXCLUSIVE MODE")
            blocked = threading.Thread(target=waiter.execute, args=("SELECT * FROM contended",))
            blocked.start()
            time.sleep(1.2)
            try:
                # The report itself must not queue behind the ACCESS EXCLUSIVE lock.
                report = get_report(client, project, user["headers"], lock_wait_seconds=0.5)
            finally:
                holder.execute("ROLLBACK")
                blocked.join(timeout=30)

        found = findings(report, "long_running", f"pid {waiter_pid}")

        assert "public.contended" in found[0]["message"]
        assert str(holder_pid) in found[0]["message"]
        assert found[0]["fix_sql"] == f"SELECT pg_terminate_backend({holder_pid})"

    def test_health_reports_sequence_near_max(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        db: psycopg.Connection,
    ) -> None:
        db.execute("CREATE TABLE tickets (id serial PRIMARY KEY, note text)")
        db.execute("ALTER SEQUENCE tickets_id_seq RESTART WITH 2147483000")
        db.execute("INSERT INTO tickets (note) VALUES ('late')")
        db.execute("CREATE SEQUENCE fresh_seq")
        db.execute("SELECT nextval('fresh_seq')")

        report = get_report(client, project, user["headers"])
        found = findings(report, "sequences", "public.tickets_id_seq")

        assert found[0]["severity"] == "critical"
        assert "public.tickets.id" in found[0]["message"]
        assert report["status"] == "critical"
        assert findings(report, "sequences", "public.fresh_seq") == []

        db.execute(found[0]["fix_sql"])
        fixed = get_report(client, project, user["headers"])

        assert findings(fixed, "sequences", "public.tickets_id_seq") == []

    def test_health_reports_transaction_id_age(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        db: psycopg.Connection,
    ) -> None:
        db.execute("CREATE TABLE aging (id int)")
        for _ in range(3):
            db.execute("INSERT INTO aging VALUES (1)")

        report = get_report(
            client, project, user["headers"], xid_age_warning=2, xid_age_critical=2**31
        )
        found = [
            f for f in findings(report, "vacuum", "public.aging") if "wraparound" in f["message"]
        ]

        assert found[0]["fix_sql"] == 'VACUUM (FREEZE, ANALYZE) "public"."aging"'

    def test_health_counts_connections_by_role(
        self,
        client: httpx.Client,
        user: dict[str, Any],
        project: dict[str, Any],
        server_url: str,
    ) -> None:
        with connect(server_url, project["db_name"]):
            report = get_report(client, project, user["headers"], connections_warning_ratio=0)

        section = report["sections"]["connections"]

        assert section["summary"]["total"] >= 2
        assert sum(item["count"] for item in section["items"]) == section["summary"]["total"]
        assert section["findings"][0]["object"] == project["db_name"]

    def test_health_concurrent_reports(
        self, client: httpx.Client, user: dict[str, Any], project: dict[str, Any]
    ) -> None:
        url = f"/projects/{project['id']}/db/health"
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(
                pool.map(lambda _: client.get(url, headers=user["headers"]).status_code, range(8))
            )

        assert statuses == [200] * 8


def make_busy(conn: psycopg.Connection, marker: str) -> None:
    """Create every reportable condition in one database, with names that carry ``marker``.

    The work runs as the project's owner role, as the project's own SQL would.
    """
    if statements_preloaded(conn):
        conn.execute(ENABLE_STATEMENTS)
    owner = conn.execute(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
    ).fetchone()[0]  # type: ignore[index]
    conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(owner)))
    conn.execute(
        f"CREATE TABLE {marker}_parent (id serial PRIMARY KEY, v int) "
        "WITH (autovacuum_enabled = off)"
    )
    conn.execute(f"CREATE TABLE {marker}_child (parent_id int REFERENCES {marker}_parent)")
    conn.execute(f"INSERT INTO {marker}_parent (v) SELECT g FROM generate_series(1, 500) g")
    conn.execute(f"CREATE INDEX {marker}_dup_a ON {marker}_parent (v)")
    conn.execute(f"CREATE INDEX {marker}_dup_b ON {marker}_parent (v)")
    conn.execute(f"ANALYZE {marker}_parent")
    conn.execute(f"UPDATE {marker}_parent SET v = v + 1")
    for _ in range(3):
        conn.execute(f"SELECT count(*) FROM {marker}_parent WHERE v > 0")
    conn.execute(f"SELECT setval('{marker}_parent_id_seq', 2147483000)")
    conn.execute(f"SELECT pg_sleep(0.05) AS {marker}_sleep")
    conn.execute("RESET ROLE")
    flush_statistics(conn)


def test_health_isolated_between_projects(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    server_url: str,
) -> None:
    created = client.post(
        "/projects",
        json={"name": "Other", "slug": f"o-{uuid.uuid4().hex[:8]}"},
        headers=user["headers"],
    )
    other = created.json()
    marker_a = f"mine_{uuid.uuid4().hex[:8]}"
    marker_b = f"theirs_{uuid.uuid4().hex[:8]}"
    try:
        with (
            connect(server_url, project["db_name"]) as mine,
            connect(server_url, other["db_name"]) as theirs,
        ):
            make_busy(mine, marker_a)
            make_busy(theirs, marker_b)
            other_role = theirs.execute(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
            ).fetchone()[0]  # type: ignore[index]
            theirs.execute("BEGIN")
            theirs.execute(f"SELECT 1 AS {marker_b}_open")
            time.sleep(0.2)
            text = json.dumps(
                get_report(
                    client,
                    project,
                    user["headers"],
                    bloat_min_bytes=0,
                    bloat_min_ratio=0,
                    seq_scan_min_rows=1,
                    seq_scan_min_count=1,
                    slow_query_mean_ms=0.001,
                    long_transaction_seconds=0.1,
                    long_query_seconds=0.1,
                    lock_wait_seconds=0.1,
                    connections_warning_ratio=0,
                    limit=1000,
                )
            )
            theirs.execute("ROLLBACK")
            preloaded = statements_preloaded(mine)
    finally:
        client.delete(f"/projects/{other['id']}", headers=user["headers"])

    assert created.status_code == 201
    assert marker_a in text
    assert f"{marker_a}_dup_b" in text
    if preloaded:
        assert f"{marker_a}_sleep" in text
    assert marker_b not in text
    assert other["db_name"] not in text
    assert other_role not in text
