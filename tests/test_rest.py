"""The data API at /rest/v1, driven by the real supabase client and raw HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import Client, create_client

from tests.conftest import ThreadedServer, connect, signup_and_login
from tests.restkit import (
    FUNCTIONS_SETUP,
    ITEMS_SETUP,
    PASSWORD,
    TODOS_SETUP,
    ProjectHandle,
    rest_headers,
    run_as_owner,
    signup,
)
from zbaas.config import Settings


@dataclass
class EndUser:
    id: str
    client: Client


@dataclass
class Setup:
    api: ThreadedServer
    main: ProjectHandle
    other: ProjectHandle
    alice: EndUser
    bob: EndUser


def signed_up_client(api: ThreadedServer, key: str) -> EndUser:
    """Sign a new end user up with the supabase client, which keeps the session."""
    supabase = create_client(api.url, key)
    email = f"end-{uuid.uuid4().hex[:10]}@example.com"
    response = supabase.auth.sign_up({"email": email, "password": PASSWORD})
    assert response.user is not None
    return EndUser(response.user.id, supabase)


@pytest.fixture(scope="module")
def setup(api: ThreadedServer, server_url: str, settings: Settings) -> Iterator[Setup]:
    """One project with todos (RLS on), items (RLS off) and functions; two end users."""
    with httpx.Client(base_url=api.url, timeout=60) as http:
        owner = signup_and_login(http)
        main, other = ProjectHandle(http, owner, "rest"), ProjectHandle(http, owner, "rest")
        run_as_owner(
            server_url, settings, main.project, TODOS_SETUP + ITEMS_SETUP + FUNCTIONS_SETUP
        )
        alice = signed_up_client(api, main.publishable)
        bob = signed_up_client(api, main.publishable)
        yield Setup(api, main, other, alice, bob)
        main.delete()
        other.delete()


def service(setup: Setup) -> Client:
    return create_client(setup.api.url, setup.main.secret)


def anon(setup: Setup) -> Client:
    return create_client(setup.api.url, setup.main.publishable)


def todo_titles(rows: list[Any]) -> set[str]:
    return {row["title"] for row in rows}


def new_title(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- RLS through the real client ------------------------------------------------


def test_rls_each_user_reads_own_rows(setup: Setup) -> None:
    alice_titles = {new_title("alice"), new_title("alice")}
    bob_titles = {new_title("bob")}
    setup.alice.client.table("todos").insert([{"title": t} for t in alice_titles]).execute()
    setup.bob.client.table("todos").insert([{"title": t} for t in bob_titles]).execute()

    alice_rows = setup.alice.client.table("todos").select("*").execute().data
    bob_rows = setup.bob.client.table("todos").select("*").execute().data

    assert alice_titles <= todo_titles(alice_rows)
    assert not bob_titles & todo_titles(alice_rows)
    assert bob_titles <= todo_titles(bob_rows)
    assert not alice_titles & todo_titles(bob_rows)
    assert {row["user_id"] for row in alice_rows} == {setup.alice.id}
    assert {row["user_id"] for row in bob_rows} == {setup.bob.id}


def test_rls_update_of_other_users_row_changes_nothing(setup: Setup, server_url: str) -> None:
    title = new_title("bob")
    row = setup.bob.client.table("todos").insert({"title": title}).execute().data[0]

    changed = (
        setup.alice.client.table("todos").update({"title": "stolen"}).eq("id", row["id"]).execute()
    )

    assert changed.data == []
    with connect(server_url, setup.main.project["db_name"]) as conn:
        stored = conn.execute("SELECT title FROM todos WHERE id = %s", (row["id"],)).fetchone()
    assert stored == (title,)


def test_rls_delete_of_other_users_row_changes_nothing(setup: Setup, server_url: str) -> None:
    row = setup.bob.client.table("todos").insert({"title": new_title("bob")}).execute().data[0]

    deleted = setup.alice.client.table("todos").delete().eq("id", row["id"]).execute()

    assert deleted.data == []
    with connect(server_url, setup.main.project["db_name"]) as conn:
        stored = conn.execute("SELECT count(*) FROM todos WHERE id = %s", (row["id"],)).fetchone()
    assert stored == (1,)


def test_rls_user_updates_and_deletes_own_row(setup: Setup) -> None:
    table = setup.alice.client.table
    row = table("todos").insert({"title": new_title("alice")}).execute().data[0]

    updated = table("todos").update({"done": True}).eq("id", row["id"]).execute()
    deleted = table("todos").delete().eq("id", row["id"]).execute()
    remaining = table("todos").select("id").eq("id", row["id"]).execute()

    assert updated.data[0]["done"] is True
    assert [r["id"] for r in deleted.data] == [row["id"]]
    assert remaining.data == []


def test_rls_insert_for_other_user_rejected(setup: Setup) -> None:
    with pytest.raises(APIError) as caught:
        setup.alice.client.table("todos").insert(
            {"title": "forged", "user_id": setup.bob.id}
        ).execute()

    assert caught.value.code == "42501"


def test_rls_anon_reads_nothing(setup: Setup) -> None:
    setup.alice.client.table("todos").insert({"title": new_title("alice")}).execute()

    rows = anon(setup).table("todos").select("*").execute()

    assert rows.data == []


def test_rls_anon_insert_is_401(setup: Setup) -> None:
    response = httpx.post(
        f"{setup.api.url}/rest/v1/todos",
        json={"title": "anonymous", "user_id": str(uuid.uuid4())},
        headers=rest_headers(setup.main.publishable),
    )

    assert response.status_code == 401
    assert response.json()["code"] == "42501"


def test_rls_service_role_reads_every_row(setup: Setup) -> None:
    setup.alice.client.table("todos").insert({"title": new_title("alice")}).execute()
    setup.bob.client.table("todos").insert({"title": new_title("bob")}).execute()

    rows = service(setup).table("todos").select("user_id").execute().data

    assert {setup.alice.id, setup.bob.id} <= {row["user_id"] for row in rows}


def test_other_project_key_reads_nothing(setup: Setup) -> None:
    other = create_client(setup.api.url, setup.other.secret)

    with pytest.raises(APIError) as caught:
        other.table("todos").select("*").execute()

    assert caught.value.code == "42P01"


def test_other_project_key_with_user_token_is_401(setup: Setup) -> None:
    session = setup.alice.client.auth.get_session()
    assert session is not None

    response = httpx.get(
        f"{setup.api.url}/rest/v1/todos",
        headers=rest_headers(setup.other.publishable, session.access_token),
    )

    assert response.status_code == 401
    assert response.json()["code"] == "PGRST301"


def test_claims_reach_auth_functions(setup: Setup) -> None:
    as_alice = setup.alice.client.rpc("whoami").execute().data
    as_anon = anon(setup).rpc("whoami").execute().data
    as_service = service(setup).rpc("whoami").execute().data

    assert as_alice == f"{setup.alice.id}:authenticated"
    assert as_anon == "nobody:anon"
    assert as_service == "nobody:service_role"


def test_claims_do_not_leak_between_requests(setup: Setup) -> None:
    setup.alice.client.rpc("whoami").execute()

    after = anon(setup).rpc("whoami").execute().data

    assert after == "nobody:anon"


# --- reading: select, filters, order, paging, count --------------------------------


def ids(rows: list[Any]) -> list[int]:
    return [row["id"] for row in rows]


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda q: q.eq("name", "apple"), [1]),
        (lambda q: q.neq("name", "apple"), [2, 3, 4, 5]),
        (lambda q: q.gt("score", 20), [4, 5]),
        (lambda q: q.gte("score", 20), [2, 4, 5]),
        (lambda q: q.lt("score", 20), [1]),
        (lambda q: q.lte("score", 20), [1, 2]),
        (lambda q: q.like("name", "%an%"), [2, 5]),
        (lambda q: q.ilike("name", "b%"), [2]),
        (lambda q: q.is_("score", None), [3]),
        (lambda q: q.not_.is_("score", None), [1, 2, 4, 5]),
        (lambda q: q.in_("name", ["apple", "date, dried"]), [1, 4]),
        (lambda q: q.in_("id", []), []),
        (lambda q: q.or_("score.lt.15,name.eq.eggplant"), [1, 5]),
        (lambda q: q.or_('name.eq."date, dried",and(score.gte.20,score.lte.20)'), [2, 4]),
        (lambda q: q.not_.eq("name", "apple").lt("id", 3), [2]),
    ],
)
def test_select_filters(setup: Setup, build: Any, expected: list[int]) -> None:
    query = build(service(setup).table("items").select("id")).order("id")

    assert ids(query.execute().data) == expected


def test_select_columns_and_alias(setup: Setup) -> None:
    rows = service(setup).table("items").select("id,label:name").eq("id", 1).execute().data

    assert rows == [{"id": 1, "label": "apple"}]


def test_select_keeps_json_types(setup: Setup) -> None:
    row = service(setup).table("items").select("tags,meta").eq("id", 1).execute().data[0]

    assert row == {"tags": ["fruit", "red"], "meta": {"origin": "ch"}}


def test_select_order_desc_nulls_first(setup: Setup) -> None:
    rows = (
        service(setup)
        .table("items")
        .select("id")
        .order("score", desc=True, nullsfirst=True)
        .execute()
    )

    assert ids(rows.data) == [3, 5, 4, 2, 1]


def test_select_limit_offset(setup: Setup) -> None:
    rows = service(setup).table("items").select("id").order("id").limit(2).offset(1).execute()

    assert ids(rows.data) == [2, 3]


def test_select_count_exact(setup: Setup) -> None:
    result = (
        service(setup).table("items").select("id", count="exact").gte("id", 2).limit(2).execute()
    )

    assert result.count == 4
    assert len(result.data) == 2


def test_select_content_range_header(setup: Setup) -> None:
    response = httpx.get(
        f"{setup.api.url}/rest/v1/items?select=id&order=id&limit=2&offset=1",
        headers={**rest_headers(setup.main.secret), "Prefer": "count=exact"},
    )

    assert response.status_code == 206
    assert response.headers["content-range"] == "1-2/5"


def test_select_single_returns_object(setup: Setup) -> None:
    row = service(setup).table("items").select("id,name").eq("id", 2).single().execute().data

    assert row == {"id": 2, "name": "Banana"}


def test_select_single_many_rows_is_406(setup: Setup) -> None:
    with pytest.raises(APIError) as caught:
        service(setup).table("items").select("id").single().execute()

    assert caught.value.code == "PGRST116"


def test_select_maybe_single_none(setup: Setup) -> None:
    result = service(setup).table("items").select("id").eq("id", 999).maybe_single().execute()

    assert result is None


def test_head_returns_count_only(setup: Setup) -> None:
    result = service(setup).table("items").select("id", count="exact", head=True).execute()

    assert result.count == 5


def test_unknown_table_is_404(setup: Setup) -> None:
    with pytest.raises(APIError) as caught:
        service(setup).table("no_such_table").select("*").execute()

    assert caught.value.code == "42P01"


def test_unknown_column_is_400(setup: Setup) -> None:
    response = httpx.get(
        f"{setup.api.url}/rest/v1/items?select=nope", headers=rest_headers(setup.main.secret)
    )

    assert response.status_code == 400
    assert response.json()["code"] == "42703"


def test_invalid_value_for_type_is_400(setup: Setup) -> None:
    with pytest.raises(APIError) as caught:
        service(setup).table("items").select("id").eq("id", "one").execute()

    assert caught.value.code == "22P02"


def test_other_schema_profile_is_406(setup: Setup) -> None:
    response = httpx.get(
        f"{setup.api.url}/rest/v1/users",
        headers={**rest_headers(setup.main.secret), "Accept-Profile": "auth"},
    )

    assert response.status_code == 406
    assert response.json()["code"] == "PGRST106"


def test_missing_apikey_is_401(setup: Setup) -> None:
    response = httpx.get(f"{setup.api.url}/rest/v1/items")

    assert response.status_code == 401
    assert set(response.json()) == {"code", "message", "details", "hint"}


# --- writing: insert, upsert, update, delete -----------------------------------


def test_insert_many_returns_rows(setup: Setup) -> None:
    titles = [new_title("bulk") for _ in range(3)]

    rows = setup.alice.client.table("todos").insert([{"title": t} for t in titles]).execute().data

    assert [row["title"] for row in rows] == titles


def test_insert_return_minimal_is_201_without_body(setup: Setup) -> None:
    session = setup.alice.client.auth.get_session()
    assert session is not None

    response = httpx.post(
        f"{setup.api.url}/rest/v1/todos",
        json={"title": new_title("minimal")},
        headers={
            **rest_headers(setup.main.publishable, session.access_token),
            "Prefer": "return=minimal",
        },
    )

    assert response.status_code == 201
    assert response.content == b""


def test_insert_bulk_missing_keys_become_null(setup: Setup) -> None:
    rows = (
        setup.alice.client.table("todos")
        .insert([{"title": new_title("a"), "note": "x"}, {"title": new_title("b")}])
        .execute()
        .data
    )

    assert [row["note"] for row in rows] == ["x", None]


def test_insert_duplicate_is_409(setup: Setup) -> None:
    slug = new_title("slug")
    setup.alice.client.table("todos").insert({"title": "first", "slug": slug}).execute()

    with pytest.raises(APIError) as caught:
        setup.alice.client.table("todos").insert({"title": "second", "slug": slug}).execute()

    assert caught.value.code == "23505"


def test_insert_unknown_column_is_400(setup: Setup) -> None:
    with pytest.raises(APIError) as caught:
        setup.alice.client.table("todos").insert({"title": "x", "nope": 1}).execute()

    assert caught.value.code == "PGRST204"


def test_upsert_on_conflict_merges(setup: Setup) -> None:
    slug = new_title("up")
    table = setup.alice.client.table
    first = table("todos").upsert({"title": "v1", "slug": slug}, on_conflict="slug").execute()

    second = table("todos").upsert({"title": "v2", "slug": slug}, on_conflict="slug").execute()

    assert second.data[0]["id"] == first.data[0]["id"]
    assert second.data[0]["title"] == "v2"


def test_upsert_ignore_duplicates_keeps_row(setup: Setup) -> None:
    slug = new_title("ig")
    table = setup.alice.client.table
    table("todos").insert({"title": "kept", "slug": slug}).execute()

    table("todos").upsert(
        {"title": "ignored", "slug": slug}, on_conflict="slug", ignore_duplicates=True
    ).execute()

    rows = table("todos").select("title").eq("slug", slug).execute().data
    assert rows == [{"title": "kept"}]


def test_upsert_primary_key_default(setup: Setup) -> None:
    client = service(setup)
    client.table("items").upsert({"id": 100, "name": "first"}).execute()

    client.table("items").upsert({"id": 100, "name": "second"}).execute()

    rows = client.table("items").select("name").eq("id", 100).execute().data
    client.table("items").delete().eq("id", 100).execute()
    assert rows == [{"name": "second"}]


def test_update_without_filter_is_rejected(setup: Setup) -> None:
    with pytest.raises(APIError) as caught:
        service(setup).table("items").update({"score": 0}).execute()

    assert caught.value.code == "21000"


def test_delete_without_filter_is_rejected(setup: Setup) -> None:
    with pytest.raises(APIError) as caught:
        service(setup).table("items").delete().execute()

    assert caught.value.code == "21000"


def test_update_single_many_rows_rolls_back(setup: Setup, server_url: str) -> None:
    response = httpx.patch(
        f"{setup.api.url}/rest/v1/items?id=in.(1,2)",
        json={"score": 0},
        headers={**rest_headers(setup.main.secret), "Accept": "application/vnd.pgrst.object+json"},
    )

    assert response.status_code == 406
    with connect(server_url, setup.main.project["db_name"]) as conn:
        scores = conn.execute("SELECT score FROM items WHERE id IN (1, 2) ORDER BY id").fetchall()
    assert scores == [(10,), (20,)]


def test_delete_return_minimal_is_204(setup: Setup) -> None:
    row = setup.alice.client.table("todos").insert({"title": new_title("gone")}).execute().data[0]
    session = setup.alice.client.auth.get_session()
    assert session is not None

    response = httpx.delete(
        f"{setup.api.url}/rest/v1/todos?id=eq.{row['id']}",
        headers={
            **rest_headers(setup.main.publishable, session.access_token),
            "Prefer": "return=minimal",
        },
    )

    assert response.status_code == 204


# --- functions -------------------------------------------------------------------


def test_rpc_scalar(setup: Setup) -> None:
    result = anon(setup).rpc("add_numbers", {"a": 2, "b": 40}).execute()

    assert result.data == 42


def test_rpc_get_scalar(setup: Setup) -> None:
    result = anon(setup).rpc("add_numbers", {"a": 1, "b": 2}, get=True).execute()

    assert result.data == 3


def test_rpc_array_argument(setup: Setup) -> None:
    result = anon(setup).rpc("tag_count", {"tags": ["a", "b", "c"]}).execute()

    assert result.data == 3


def test_rpc_setof_rows_with_filters(setup: Setup) -> None:
    result = (
        service(setup).rpc("items_scoring", {"min_score": 15}).select("id").lt("id", 5).execute()
    )

    assert ids(result.data) == [2, 4]


def test_rpc_default_argument(setup: Setup) -> None:
    result = service(setup).rpc("items_scoring", {}).execute()

    assert ids(result.data) == [1, 2, 4, 5]


def test_rpc_returns_table_respects_rls(setup: Setup) -> None:
    title = new_title("fn")
    setup.bob.client.table("todos").insert({"title": title}).execute()

    rows = setup.alice.client.rpc("my_todo_titles").execute().data

    assert title not in {row["todo_title"] for row in rows}


def test_rpc_void_is_204(setup: Setup) -> None:
    response = httpx.post(
        f"{setup.api.url}/rest/v1/rpc/touch_nothing",
        json={},
        headers=rest_headers(setup.main.secret),
    )

    assert response.status_code == 204


def test_rpc_volatile_over_get_is_405(setup: Setup) -> None:
    response = httpx.get(
        f"{setup.api.url}/rest/v1/rpc/touch_nothing", headers=rest_headers(setup.main.secret)
    )

    assert response.status_code == 405


def test_rpc_unknown_function_is_404(setup: Setup) -> None:
    with pytest.raises(APIError) as caught:
        anon(setup).rpc("no_such_function", {}).execute()

    assert caught.value.code == "PGRST202"


def test_rpc_unknown_argument_is_404(setup: Setup) -> None:
    with pytest.raises(APIError) as caught:
        anon(setup).rpc("add_numbers", {"a": 1, "c": 2}).execute()

    assert caught.value.code == "PGRST202"


def test_signup_then_query_with_httpx(setup: Setup) -> None:
    with httpx.Client(base_url=setup.api.url) as http:
        session = signup(http, setup.main.publishable)
        headers = rest_headers(setup.main.publishable, session["access_token"])
        created = http.post(
            "/rest/v1/todos",
            json={"title": "plain http"},
            headers={**headers, "Prefer": "return=representation"},
        )
        listed = http.get("/rest/v1/todos?select=title", headers=headers)

    assert created.status_code == 201
    assert listed.json() == [{"title": "plain http"}]
