"""Measure full-text search latency on 1,000,000 rows, through the API and directly.

Prints the median latency of the search endpoint without and with its GIN
index, the median of the same SQL run directly over psycopg with the index,
and the ratio API/direct with the index.

Run: ``.venv/bin/python benchmarks/search.py``. It starts embedded PostgreSQL
18 in a temporary folder, or uses the server in ``ZBAAS_DATABASE_URL``, where
it creates a control database and one project, and drops both at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ThreadedServer, drop_leftovers, signup_and_login  # noqa: E402
from zbaas.config import Settings  # noqa: E402
from zbaas.postgres.embedded import EmbeddedPostgres  # noqa: E402
from zbaas.tenant import search  # noqa: E402


def words(text: str) -> list[str]:
    return text.split()


# Frequent words, drawn with a skew towards the start of the list, as in real prose.
COMMON_WORDS = words(
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will can more about up out them some could what into than time only other new "
    "people year work way day man world life part child back after use good make system "
    "state place case group company number water team customer product data report service "
    "market price order user account support release update feature issue project plan "
    "meeting review design build test deploy server network storage database query index "
    "search result page email message payment invoice contract office travel weather city"
)
# Rarer topic words, drawn uniformly for the title and the body of each row, so
# each of the 159 is in about 1.3% of rows.
TOPIC_WORDS = words(
    "aardvark acoustics alchemy almanac amphibian anthology aqueduct archipelago armadillo "
    "astronomy avalanche badminton ballad barometer basilica bassoon biscuit blizzard "
    "boulevard bouquet brewery bulldozer butterscotch cactus calligraphy canyon caravan "
    "cardigan carnival cartography cathedral cauliflower cello chandelier chameleon "
    "chrysanthemum cinnamon clarinet compass constellation coral crocodile crossword "
    "cuckoo dandelion dinosaur dolphin dragonfly dulcimer eclipse elephant embroidery "
    "espresso falcon ferret fjord flamingo folklore fossil gazebo geyser giraffe glacier "
    "gondola gramophone granite harmonica harpsichord hedgehog hibiscus hummingbird iceberg "
    "iguana jasmine jellyfish kaleidoscope kangaroo kayak kiwi labyrinth lagoon lantern "
    "lighthouse limestone lobster locomotive lullaby macaroni magnolia mandolin marathon "
    "marmalade meadow meteor monsoon mosaic nebula nutmeg oasis observatory octopus orchid "
    "origami ostrich pagoda panorama papyrus parchment peacock pelican penguin pinecone "
    "platypus porcupine pretzel pyramid quartz quiver raccoon rainbow reindeer rhubarb "
    "saffron sapphire saxophone scarecrow sequoia shipwreck skyscraper snorkel sonnet "
    "squirrel stalactite submarine sunflower tambourine tapestry telescope thunderstorm "
    "tornado toucan trombone tundra tulip umbrella unicorn vanilla velvet violin volcano "
    "walrus waterfall whirlpool windmill wolverine xylophone yacht zeppelin zucchini"
)

# websearch_to_tsquery syntax. Every row has one topic word in its title and one
# in its body, so two topic words match about 80 rows in 1,000,000, and a topic
# word with a frequent word a few thousand.
QUERIES = [
    "glacier saxophone",
    "volcano harpsichord -weather",
    '"penguin team"',
    "lighthouse or tornado iceberg",
    "glacier customer",
]
# A search without the index parses every row: 60 s per search on 1,000,000 rows
# was measured on 2 busy cores, so only the first few queries run there.
UNINDEXED_QUERIES = 3


def word_expression(array: str, count: int, skew: float) -> str:
    """Return SQL that joins ``count`` random words of ``array``; a skew > 1 favours the start."""
    pick = f"{array}[1 + floor(power(random(), {skew}) * cardinality({array}))::int]"
    return " || ' ' || ".join([pick] * count)


def generate_rows(conn: psycopg.Connection, rows: int) -> None:
    """Insert ``rows`` rows of generated text, 250,000 rows per INSERT ... SELECT."""
    topic = "t[1 + floor(random() * cardinality(t))::int]"
    title = f"{word_expression('c', 4, 2.0)} || ' ' || {topic}"
    before, after = word_expression("c", 10, 2.0), word_expression("c", 8, 2.0)
    body = f"{before} || ' ' || {topic} || ' ' || {after}"
    statement = (
        "INSERT INTO public.articles (id, title, body) "
        f"SELECT g, {title}, {body} "
        "FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g, "
        "(SELECT %(common)s::text[] AS c, %(topics)s::text[] AS t) AS words"
    )
    batch = 250_000
    for start in range(1, rows + 1, batch):
        conn.execute(
            statement,
            {
                "start": start,
                "stop": min(start + batch - 1, rows),
                "common": COMMON_WORDS,
                "topics": TOPIC_WORDS,
            },
        )


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def post_search(client: httpx.Client, url: str, headers: dict[str, str], query: str) -> bool:
    """Search through the API and return whether an index served the search."""
    body = {"query": query, "columns": ["title", "body"], "limit": 20}
    response = client.post(url, json=body, headers=headers)
    response.raise_for_status()
    return bool(response.json()["index_used"])


def time_unindexed(
    client: httpx.Client, url: str, headers: dict[str, str], repeats: int
) -> tuple[list[float], set[bool]]:
    """Time the first queries through the API; return the times and index_used values."""
    samples: list[float] = []
    served: set[bool] = set()
    for query in QUERIES[:UNINDEXED_QUERIES]:
        for _ in range(repeats):
            started = time.perf_counter()
            served.add(post_search(client, url, headers, query))
            samples.append(time.perf_counter() - started)
    return samples, served


def time_indexed(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    conn: psycopg.Connection,
    plan: search.SearchPlan,
    repeats: int,
) -> tuple[list[float], list[float], set[bool]]:
    """Time each query through the API and directly, alternating the two.

    Alternating gives both the same cache state and the same load from other
    processes on the machine. Returns API times, direct times and index_used values.
    """
    api: list[float] = []
    direct: list[float] = []
    served: set[bool] = set()
    for query in QUERIES:
        statement, params = search.search_statement(plan, query, 20, 0, True)
        post_search(client, url, headers, query)
        conn.execute(statement, params).fetchall()
        for _ in range(repeats):
            started = time.perf_counter()
            served.add(post_search(client, url, headers, query))
            api.append(time.perf_counter() - started)

            started = time.perf_counter()
            conn.execute(statement, params).fetchall()
            direct.append(time.perf_counter() - started)
    return api, direct, served


def run(server_url: str, data_dir: Path, rows: int, repeats: int, seq_repeats: int) -> None:
    settings = Settings(
        database_url=server_url,
        control_database=f"zbaas_bench_{secrets.token_hex(4)}",
        data_dir=data_dir,
        secret_key=secrets.token_urlsafe(48),
        search_statement_timeout_ms=600_000,
        migration_statement_timeout_ms=600_000,
    )
    api = ThreadedServer(settings)
    api.start()
    try:
        with httpx.Client(base_url=api.url, timeout=900) as client:
            measure(client, server_url, settings, rows, repeats, seq_repeats)
    finally:
        api.stop()
        drop_leftovers(server_url, settings.control_database)


def measure(
    client: httpx.Client,
    server_url: str,
    settings: Settings,
    rows: int,
    repeats: int,
    seq_repeats: int,
) -> None:
    user = signup_and_login(client)
    created = client.post(
        "/projects",
        json={"name": "Search benchmark", "slug": f"bench-{uuid.uuid4().hex[:8]}"},
        headers=user["headers"],
    )
    created.raise_for_status()
    project: dict[str, Any] = created.json()
    url = f"/projects/{project['id']}/database/tables/articles/search"

    control_url = make_conninfo(server_url, dbname=settings.control_database)
    with psycopg.connect(control_url, autocommit=True) as control:
        owner = control.execute(
            "SELECT owner_role FROM projects WHERE id = %s", (project["id"],)
        ).fetchone()[0]  # type: ignore[index]

    with psycopg.connect(
        make_conninfo(server_url, dbname=project["db_name"]), autocommit=True
    ) as conn:
        started = time.perf_counter()
        conn.execute("CREATE TABLE public.articles (id bigint PRIMARY KEY, title text, body text)")
        generate_rows(conn, rows)
        conn.execute(
            sql.SQL("ALTER TABLE public.articles OWNER TO {}").format(sql.Identifier(owner))
        )
        conn.execute("VACUUM ANALYZE public.articles")
        print(f"generated {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        sample = conn.execute("SELECT title, body FROM public.articles WHERE id = 1").fetchone()
        print(f"sample row: {sample}", flush=True)

        without, served = time_unindexed(client, url, user["headers"], seq_repeats)
        print(
            f"API without index: median {median_ms(without):.1f} ms over {len(without)} searches "
            f"(index used: {sorted(served)})",
            flush=True,
        )

        started = time.perf_counter()
        index = client.post(
            url + "/index", json={"columns": ["title", "body"]}, headers=user["headers"]
        )
        index.raise_for_status()
        conn.execute("ANALYZE public.articles")
        print(
            f"built {index.json()['name']} ({index.json()['size_bytes'] / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )

        table = search.Table(0, "public", "articles", "r")
        plan = search.SearchPlan(table, ["title", "body"], "english")
        with_index, direct, served = time_indexed(client, url, user["headers"], conn, plan, repeats)
        print(
            f"API with index: median {median_ms(with_index):.2f} ms over {len(with_index)} "
            f"searches (index used: {sorted(served)})",
            flush=True,
        )
        for i, query in enumerate(QUERIES):
            part = slice(i * repeats, (i + 1) * repeats)
            print(
                f"  {query!r}: API {median_ms(with_index[part]):.2f} ms, "
                f"direct {median_ms(direct[part]):.2f} ms",
                flush=True,
            )
        print(
            f"direct SQL with index: median {median_ms(direct):.2f} ms over {len(direct)} searches",
            flush=True,
        )

    # The fixed cost of any authenticated request (token, session and membership
    # checks in the control database), which a direct connection does not pay.
    floor: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        client.get(f"/projects/{project['id']}", headers=user["headers"]).raise_for_status()
        floor.append(time.perf_counter() - started)
    print(f"API floor, GET /projects/{{id}}: median {median_ms(floor):.2f} ms")
    print(
        f"ratio API/direct with index: {median_ms(with_index) / median_ms(direct):.2f}x "
        "(target at most 1.5x)"
    )
    print(f"ratio API without/with index: {median_ms(without) / median_ms(with_index):.0f}x")
    client.delete(f"/projects/{project['id']}", headers=user["headers"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows to generate.")
    parser.add_argument(
        "--repeats", type=int, default=20, help="Timed searches per query with the index."
    )
    parser.add_argument(
        "--seq-repeats", type=int, default=1, help="Timed searches per query without the index."
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zbaas-bench-") as folder:
        server_url = os.environ.get("ZBAAS_DATABASE_URL")
        embedded = None
        if server_url is None:
            embedded = EmbeddedPostgres(Path(folder) / "embedded")
            server_url = embedded.start()
        try:
            run(server_url, Path(folder) / "data", args.rows, args.repeats, args.seq_repeats)
        finally:
            if embedded is not None:
                embedded.stop()


if __name__ == "__main__":
    main()
