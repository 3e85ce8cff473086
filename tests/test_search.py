from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from tests.conftest import connect, signup_and_login
from zbaas.config import Settings
from zbaas.errors import InvalidInput
from zbaas.tenant import search

ARTICLES = [
    ("PostgreSQL full-text search", "Ranking documents with tsvector and tsquery in PostgreSQL."),
    ("Cooking pasta", "Boil water, add salt and cook the pasta for ten minutes."),
    ("Database indexes", "A GIN index makes full-text search fast on large tables."),
    ("Gardening notes", "Tomatoes need sun; basil grows well beside them."),
    ("Search engines", "Search search search: ranking matters for every search engine."),
    ("Untitled", None),
]


def owner_role(server_url: str, settings: Settings, project: dict[str, Any]) -> str:
    with connect(server_url, settings.control_database) as conn:
        row = conn.execute("SELECT owner_role FROM projects WHERE id = %s", (project["id"],))
        return str(row.fetchone()[0])  # type: ignore[index]


def give_to_owner(db: psycopg.Connection, table: str, owner: str) -> None:
    db.execute(
        sql.SQL("ALTER TABLE {} OWNER TO {}").format(
            sql.Identifier("public", table), sql.Identifier(owner)
        )
    )


def create_articles(db: psycopg.Connection, table: str, owner: str) -> str:
    """Create a small table of ``ARTICLES`` owned by the project's owner role."""
    db.execute(
        sql.SQL(
            "CREATE TABLE {} (id serial PRIMARY KEY, title text, body varchar(500), "
            "views integer NOT NULL DEFAULT 0, tags text[])"
        ).format(sql.Identifier("public", table))
    )
    for title, body in ARTICLES:
        db.execute(
            sql.SQL("INSERT INTO {} (title, body) VALUES (%s, %s)").format(
                sql.Identifier("public", table)
            ),
            (title, body),
        )
    give_to_owner(db, table, owner)
    return table


def create_posts(db: psycopg.Connection, table: str, owner: str) -> str:
    """Create 20,000 rows of generated text where 'zephyr' is in row 777 only."""
    db.execute(
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, title text NOT NULL, body text)").format(
            sql.Identifier("public", table)
        )
    )
    db.execute(
        sql.SQL(
            """
            INSERT INTO {}
            SELECT g,
                   (ARRAY['weekly', 'notes', 'report', 'update', 'review'])[1 + g % 5]
                       || ' ' || g,
                   (ARRAY['the team shipped a release', 'customers asked about pricing',
                          'the database migration finished', 'a meeting about the roadmap',
                          'fixes for the login page'])[1 + g % 5]
            FROM generate_series(1, 20000) AS g
            """
        ).format(sql.Identifier("public", table))
    )
    db.execute(
        sql.SQL("UPDATE {} SET body = 'a zephyr blew over the harbour' WHERE id = 777").format(
            sql.Identifier("public", table)
        )
    )
    give_to_owner(db, table, owner)
    db.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("public", table)))
    return table


# Creating a project costs a CREATE DATABASE, so the tests of this module share
# one project, and each test that changes a table gets a table of its own.


@pytest.fixture(scope="module")
def client(api: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def user(client: httpx.Client) -> dict[str, Any]:
    return signup_and_login(client)


def make_project(client: httpx.Client, user: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        "/projects",
        json={"name": "Search", "slug": f"s-{uuid.uuid4().hex[:8]}"},
        headers=user["headers"],
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def project(client: httpx.Client, user: dict[str, Any]) -> Iterator[dict[str, Any]]:
    body = make_project(client, user)
    yield body
    client.delete(f"/projects/{body['id']}", headers=user["headers"])


@pytest.fixture(scope="module")
def db(server_url: str, project: dict[str, Any]) -> Iterator[psycopg.Connection]:
    """A superuser connection to the project database."""
    with connect(server_url, project["db_name"]) as conn:
        yield conn


@pytest.fixture(scope="module")
def owner(server_url: str, settings: Settings, project: dict[str, Any]) -> str:
    return owner_role(server_url, settings, project)


@pytest.fixture(scope="module")
def articles(db: psycopg.Connection, owner: str) -> str:
    """``public.articles``, read by the tests and never changed."""
    return create_articles(db, "articles", owner)


@pytest.fixture(scope="module")
def big_table(db: psycopg.Connection, owner: str) -> str:
    """``public.posts``, read by the tests and never changed."""
    return create_posts(db, "posts", owner)


@pytest.fixture
def own_articles(db: psycopg.Connection, owner: str) -> str:
    """A copy of the articles table for one test, which may index or change it."""
    return create_articles(db, f"articles_{uuid.uuid4().hex[:8]}", owner)


@pytest.fixture
def own_posts(db: psycopg.Connection, owner: str) -> str:
    return create_posts(db, f"posts_{uuid.uuid4().hex[:8]}", owner)


@pytest.fixture(scope="module")
def fuzzy_project(
    client: httpx.Client, user: dict[str, Any], server_url: str, settings: Settings
) -> Iterator[dict[str, Any]]:
    """A second project, with pg_trgm enabled and the articles table."""
    body = make_project(client, user)
    with connect(server_url, body["db_name"]) as conn:
        conn.execute("CREATE EXTENSION pg_trgm")
        create_articles(conn, "articles", owner_role(server_url, settings, body))
    yield body
    client.delete(f"/projects/{body['id']}", headers=user["headers"])


def search_url(project: dict[str, Any], table: str) -> str:
    return f"/projects/{project['id']}/database/tables/{table}/search"


def post_search(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    table: str,
    **body: Any,
) -> httpx.Response:
    body.setdefault("columns", ["title", "body"])
    return client.post(search_url(project, table), json=body, headers=user["headers"])


def titles(response: httpx.Response) -> list[str]:
    return [hit["row"]["title"] for hit in response.json()["rows"]]


def test_search_ranks_rows_by_relevance(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    response = post_search(client, user, project, articles, query="search")

    assert response.status_code == 200, response.text
    assert titles(response)[0] == "Search engines"
    assert set(titles(response)) == {
        "Search engines",
        "PostgreSQL full-text search",
        "Database indexes",
    }
    ranks = [hit["rank"] for hit in response.json()["rows"]]
    assert ranks == sorted(ranks, reverse=True)
    assert response.json()["mode"] == "fulltext"


def test_search_returns_whole_rows(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    response = post_search(client, user, project, articles, query="pasta")

    row = response.json()["rows"][0]["row"]
    assert set(row) == {"id", "title", "body", "views", "tags"}
    assert row["views"] == 0


def test_search_highlights_each_column(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    response = post_search(client, user, project, articles, query="tomatoes")

    highlights = response.json()["rows"][0]["highlights"]
    assert set(highlights) == {"title", "body"}
    assert "<b>Tomatoes</b>" in highlights["body"]
    assert highlights["title"] == "Gardening notes"


def test_search_without_highlight_omits_snippets(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    response = post_search(client, user, project, articles, query="tomatoes", highlight=False)

    assert response.json()["rows"][0]["highlights"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"full-text search"', {"PostgreSQL full-text search", "Database indexes"}),
        ("pasta or tomatoes", {"Cooking pasta", "Gardening notes"}),
        ("search -engine", {"PostgreSQL full-text search", "Database indexes"}),
        ("GIN index", {"Database indexes"}),
    ],
)
def test_search_websearch_syntax(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    articles: str,
    query: str,
    expected: set[str],
) -> None:
    response = post_search(client, user, project, articles, query=query)

    assert set(titles(response)) == expected


def test_search_pages_do_not_overlap(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], big_table: str
) -> None:
    pages = [
        post_search(client, user, project, big_table, query="release", limit=50, offset=offset)
        for offset in (0, 50, 100)
    ]

    ids = [hit["row"]["id"] for page in pages for hit in page.json()["rows"]]
    assert len(ids) == 150
    assert len(set(ids)) == 150


def test_search_qualified_table_name(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    response = post_search(client, user, project, "public.articles", query="basil")

    assert titles(response) == ["Gardening notes"]


def test_search_other_language(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    # The simple configuration does not stem, so 'tomato' no longer finds 'Tomatoes'.
    english = post_search(client, user, project, articles, query="tomato")
    simple = post_search(client, user, project, articles, query="tomato", language="simple")

    assert titles(english) == ["Gardening notes"]
    assert titles(simple) == []
    assert simple.json()["language"] == "simple"


@pytest.mark.parametrize("query", ["", "   ", "the and of", "!!! ..."])
def test_search_empty_query_rejected(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str, query: str
) -> None:
    response = post_search(client, user, project, articles, query=query)

    assert response.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"query": "pasta", "limit": 0},
        {"query": "pasta", "limit": 1001},
        {"query": "pasta", "offset": -1},
        {"query": "x" * 1001},
        {"query": "pasta", "columns": []},
        {"query": "pasta", "unexpected": True},
        {"query": "pasta", "columns": ["title", "title"]},
        {"query": "pasta", "columns": ["title"] * 33},
        {"query": "pasta", "columns": ["x" * 64]},
        {"query": "pasta", "language": ""},
    ],
)
def test_search_invalid_body_rejected(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    articles: str,
    body: dict[str, Any],
) -> None:
    response = post_search(client, user, project, articles, **body)

    assert response.status_code == 422


@pytest.mark.parametrize("language", ["klingon", "english'; --", "English", "pg_catalog.english"])
def test_search_unknown_language_rejected(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    articles: str,
    language: str,
) -> None:
    response = post_search(client, user, project, articles, query="pasta", language=language)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_language"
    assert "english" in response.json()["error"]["details"]["available"]


@pytest.mark.parametrize(
    "table",
    [
        "missing",
        "articles; DROP TABLE articles",
        'articles" --',
        "pg_catalog.pg_authid",
        "information_schema.tables",
        "public.",
        ".articles",
        "nosuchschema.articles",
    ],
)
def test_search_unknown_table_not_found(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    articles: str,
    db: psycopg.Connection,
    table: str,
) -> None:
    response = post_search(client, user, project, table, query="pasta")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "table_not_found"
    assert db.execute("SELECT count(*) FROM public.articles").fetchone() == (len(ARTICLES),)


@pytest.mark.parametrize("column", ["missing", "title; --", 'title"', "TITLE"])
def test_search_unknown_column_not_found(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    articles: str,
    column: str,
) -> None:
    response = post_search(client, user, project, articles, query="pasta", columns=[column])

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "column_not_found"


@pytest.mark.parametrize("column", ["id", "views", "tags"])
def test_search_non_text_column_rejected(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    articles: str,
    column: str,
) -> None:
    response = post_search(client, user, project, articles, query="pasta", columns=[column])

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "column_not_text"


def test_search_citext_and_char_columns(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    own_articles: str,
    db: psycopg.Connection,
) -> None:
    db.execute("CREATE EXTENSION IF NOT EXISTS citext")
    table = sql.Identifier("public", own_articles)
    db.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN slug citext, ADD COLUMN code char(12)").format(table)
    )
    db.execute(
        sql.SQL("UPDATE {} SET slug = 'Pasta-Recipe', code = 'kitchen' WHERE id = 2").format(table)
    )

    response = post_search(
        client, user, project, own_articles, query="kitchen recipe", columns=["slug", "code"]
    )

    assert response.status_code == 200, response.text
    assert titles(response) == ["Cooking pasta"]


def test_search_null_column_still_matches_others(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    response = post_search(client, user, project, articles, query="untitled")

    assert titles(response) == ["Untitled"]
    assert response.json()["rows"][0]["highlights"]["body"] == ""


def test_search_without_index_reports_none(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], big_table: str
) -> None:
    response = post_search(client, user, project, big_table, query="zephyr")

    assert response.json()["index_used"] is False
    assert response.json()["index"] is None


def test_search_index_created_once(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], own_articles: str
) -> None:
    url = search_url(project, own_articles) + "/index"
    body = {"columns": ["title", "body"]}

    first = client.post(url, json=body, headers=user["headers"])
    second = client.post(url, json=body, headers=user["headers"])

    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert first.json()["name"] == f"{own_articles}_title_body_english_fts"
    assert second.json()["created"] is False
    assert first.json()["valid"] is True
    assert "USING gin (to_tsvector('english'::regconfig" in first.json()["definition"]


def test_search_index_serves_search(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    own_posts: str,
    db: psycopg.Connection,
) -> None:
    created = client.post(
        search_url(project, own_posts) + "/index",
        json={"columns": ["title", "body"]},
        headers=user["headers"],
    )
    db.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(own_posts)))

    response = post_search(client, user, project, own_posts, query="zephyr")

    assert created.status_code == 201, created.text
    assert [hit["row"]["id"] for hit in response.json()["rows"]] == [777]
    assert response.json()["index_used"] is True
    assert response.json()["index"] == created.json()["name"]


def explain_search(
    db: psycopg.Connection, table: str, columns: list[str], language: str, query: str
) -> str:
    """Return the JSON plan of the search endpoint's own statement, with seq scans off."""
    resolved = db.execute(
        "SELECT c.oid, c.relkind FROM pg_class c WHERE c.oid = %s::regclass", (table,)
    ).fetchone()
    assert resolved is not None
    schema, name = table.split(".")
    plan = search.SearchPlan(
        search.Table(resolved[0], schema, name, resolved[1]), columns, language
    )
    statement, params = search.search_statement(plan, query, 20, 0, True)
    with db.transaction():
        db.execute("SET LOCAL enable_seqscan = off")
        row = db.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params).fetchone()
    assert row is not None
    return json.dumps(row[0])


def test_search_index_used_in_explain(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    own_articles: str,
    db: psycopg.Connection,
) -> None:
    created = client.post(
        search_url(project, own_articles) + "/index",
        json={"columns": ["title", "body"]},
        headers=user["headers"],
    )

    plan = explain_search(db, f"public.{own_articles}", ["title", "body"], "english", "pasta")

    assert f'"Index Name": "{created.json()["name"]}"' in plan


def test_search_index_other_columns_not_used(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    own_articles: str,
    db: psycopg.Connection,
) -> None:
    client.post(
        search_url(project, own_articles) + "/index",
        json={"columns": ["title"]},
        headers=user["headers"],
    )

    plan = explain_search(db, f"public.{own_articles}", ["title", "body"], "english", "pasta")

    assert "Index Name" not in plan


def test_search_index_per_language(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], own_articles: str
) -> None:
    url = search_url(project, own_articles) + "/index"

    simple = client.post(
        url, json={"columns": ["title"], "language": "simple"}, headers=user["headers"]
    )
    english = client.post(url, json={"columns": ["title"]}, headers=user["headers"])

    assert simple.status_code == 201
    assert english.status_code == 201
    assert simple.json()["name"] != english.json()["name"]


def test_search_index_concurrent_requests(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    own_posts: str,
    db: psycopg.Connection,
    api: Any,
) -> None:
    url = search_url(project, own_posts) + "/index"
    statuses: list[int] = []

    def build() -> None:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            statuses.append(
                http.post(url, json={"columns": ["body"]}, headers=user["headers"]).status_code
            )

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    indexes = db.execute(
        "SELECT indexrelid::regclass::text, indisvalid FROM pg_index "
        "WHERE indrelid = %s::regclass AND NOT indisprimary",
        (own_posts,),
    ).fetchall()
    assert sorted(statuses) == [200, 200, 200, 201]
    assert indexes == [(f"{own_posts}_body_english_fts", True)]


def test_search_index_long_name_shortened(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    db: psycopg.Connection,
    owner: str,
) -> None:
    table = "t" * 40
    db.execute(
        sql.SQL("CREATE TABLE {} (a_long_column_name text, another_long_column text)").format(
            sql.Identifier(table)
        )
    )
    give_to_owner(db, table, owner)

    response = client.post(
        search_url(project, table) + "/index",
        json={"columns": ["a_long_column_name", "another_long_column"]},
        headers=user["headers"],
    )

    assert response.status_code == 201, response.text
    assert len(response.json()["name"]) <= 63
    assert response.json()["name"].endswith("_fts")


def test_search_index_name_taken_by_table_conflict(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    own_articles: str,
    db: psycopg.Connection,
) -> None:
    db.execute(
        sql.SQL("CREATE TABLE {} ()").format(sql.Identifier(f"{own_articles}_body_english_fts"))
    )

    response = client.post(
        search_url(project, own_articles) + "/index",
        json={"columns": ["body"]},
        headers=user["headers"],
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "index_exists"


def test_search_index_names_distinct_for_similar_tables(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    db: psycopg.Connection,
    owner: str,
) -> None:
    names = []
    for table in ("Notes-Table", "notes_table"):
        db.execute(sql.SQL("CREATE TABLE {} (note text)").format(sql.Identifier(table)))
        give_to_owner(db, table, owner)
        response = client.post(
            search_url(project, table) + "/index",
            json={"columns": ["note"]},
            headers=user["headers"],
        )
        assert response.status_code == 201, response.text
        names.append(response.json()["name"])

    assert names[0] != names[1]
    assert names[1] == "notes_table_note_english_fts"


def test_search_index_on_view_rejected(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    articles: str,
    db: psycopg.Connection,
    owner: str,
) -> None:
    db.execute("CREATE VIEW public.article_titles AS SELECT id, title FROM public.articles")
    db.execute(
        sql.SQL("ALTER VIEW public.article_titles OWNER TO {}").format(sql.Identifier(owner))
    )

    searched = post_search(
        client, user, project, "article_titles", query="pasta", columns=["title"]
    )
    indexed = client.post(
        search_url(project, "article_titles") + "/index",
        json={"columns": ["title"]},
        headers=user["headers"],
    )

    assert titles(searched) == ["Cooking pasta"]
    assert indexed.status_code == 422
    assert indexed.json()["error"]["code"] == "not_a_table"


def test_search_index_unknown_column_not_found(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    response = client.post(
        search_url(project, articles) + "/index",
        json={"columns": ["title", "nope"]},
        headers=user["headers"],
    )

    assert response.status_code == 404


def test_search_index_name_taken_conflict(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    own_articles: str,
    db: psycopg.Connection,
) -> None:
    db.execute(
        sql.SQL("CREATE INDEX {} ON {} (title)").format(
            sql.Identifier(f"{own_articles}_title_english_fts"), sql.Identifier(own_articles)
        )
    )

    response = client.post(
        search_url(project, own_articles) + "/index",
        json={"columns": ["title"]},
        headers=user["headers"],
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "index_exists"


def test_search_index_failed_build_leaves_nothing(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    own_articles: str,
    db: psycopg.Connection,
) -> None:
    # Over 1 MB of distinct words: to_tsvector fails with "string is too long for tsvector".
    db.execute(
        sql.SQL(
            "INSERT INTO {} (title) "
            "SELECT string_agg(md5(g::text), ' ') FROM generate_series(1, 40000) AS g"
        ).format(sql.Identifier(own_articles))
    )

    response = client.post(
        search_url(project, own_articles) + "/index",
        json={"columns": ["title"]},
        headers=user["headers"],
    )

    leftovers = db.execute(
        "SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass AND NOT indisprimary",
        (own_articles,),
    ).fetchone()
    assert response.status_code == 422
    assert response.json()["error"]["details"]["sqlstate"] == "54000"
    assert leftovers == (0,)


def test_search_fuzzy_finds_typo(
    client: httpx.Client,
    user: dict[str, Any],
    fuzzy_project: dict[str, Any],
) -> None:
    exact = post_search(client, user, fuzzy_project, "articles", query="tomatoees")
    fuzzy = post_search(client, user, fuzzy_project, "articles", query="tomatoees", fuzzy=True)

    assert titles(exact) == []
    assert fuzzy.status_code == 200, fuzzy.text
    assert fuzzy.json()["mode"] == "fuzzy"
    assert titles(fuzzy)[0] == "Gardening notes"
    assert fuzzy.json()["rows"][0]["highlights"] is None


def test_search_fuzzy_unused_when_ranked_finds_rows(
    client: httpx.Client,
    user: dict[str, Any],
    fuzzy_project: dict[str, Any],
) -> None:
    response = post_search(client, user, fuzzy_project, "articles", query="basil", fuzzy=True)

    assert response.json()["mode"] == "fulltext"
    assert titles(response) == ["Gardening notes"]


def test_search_fuzzy_past_last_page_stays_ranked(
    client: httpx.Client,
    user: dict[str, Any],
    fuzzy_project: dict[str, Any],
) -> None:
    response = post_search(
        client, user, fuzzy_project, "articles", query="basil", fuzzy=True, offset=5
    )

    assert response.json()["mode"] == "fulltext"
    assert response.json()["rows"] == []


def test_search_fuzzy_without_trgm_rejected(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    response = post_search(client, user, project, articles, query="tomatos", fuzzy=True)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "extension_required"


def test_search_secret_key_allowed(
    client: httpx.Client, project: dict[str, Any], articles: str, secret_key: str
) -> None:
    response = client.post(
        search_url(project, articles),
        json={"query": "pasta", "columns": ["title"]},
        headers={"apikey": secret_key},
    )

    assert response.status_code == 200, response.text


def test_search_publishable_key_forbidden(
    client: httpx.Client, user: dict[str, Any], project: dict[str, Any], articles: str
) -> None:
    key = client.post(
        f"/projects/{project['id']}/keys",
        json={"name": "web", "type": "publishable"},
        headers=user["headers"],
    ).json()["key"]

    searched = client.post(
        search_url(project, articles),
        json={"query": "pasta", "columns": ["title"]},
        headers={"apikey": key},
    )
    indexed = client.post(
        search_url(project, articles) + "/index",
        json={"columns": ["title"]},
        headers={"apikey": key},
    )

    assert searched.status_code == 403
    assert indexed.status_code == 403


def test_search_other_users_project_not_found(
    client: httpx.Client, project: dict[str, Any], articles: str
) -> None:
    stranger = signup_and_login(client)

    response = post_search(client, stranger, project, articles, query="pasta")

    assert response.status_code == 404


def test_search_without_credentials_unauthorized(
    client: httpx.Client, project: dict[str, Any], articles: str
) -> None:
    response = client.post(
        search_url(project, articles), json={"query": "pasta", "columns": ["title"]}
    )

    assert response.status_code == 401


def test_search_table_owner_role_cannot_read_forbidden(
    client: httpx.Client,
    user: dict[str, Any],
    project: dict[str, Any],
    db: psycopg.Connection,
) -> None:
    # A table the superuser created and kept: the owner role has no privilege on it.
    db.execute("CREATE TABLE public.private_notes (note text)")

    response = post_search(client, user, project, "private_notes", query="secret", columns=["note"])

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_privilege"


def test_search_statement_timeout(
    server_url: str, project: dict[str, Any], articles: str, db: psycopg.Connection
) -> None:
    db.execute(
        "CREATE VIEW public.slow_articles AS "
        "SELECT title, pg_sleep(0.2)::text AS pause FROM public.articles"
    )

    async def run() -> None:
        conninfo = make_conninfo(server_url, dbname=project["db_name"])
        async with await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, row_factory=dict_row
        ) as conn:
            await search.search(
                conn,
                "slow_articles",
                query="pasta",
                columns=["title", "pause"],
                language="english",
                limit=20,
                offset=0,
                highlight=True,
                fuzzy=False,
                statement_timeout_ms=100,
            )

    with pytest.raises(InvalidInput) as raised:
        asyncio.run(run())

    assert raised.value.code == "statement_timeout"
