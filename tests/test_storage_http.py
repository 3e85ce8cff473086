"""Project storage over plain HTTP: ranges, streaming, hostile paths, quota, management paths.

Every test runs against the ``storage_api`` server of conftest.py, whose settings
choose the storage backend. Only ``test_hostile_paths_write_nothing_anywhere``
looks at the backend's files, and only for the local backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from tests.conftest import (
    STORAGE_QUOTA_BYTES,
    ThreadedServer,
    connect,
    signup_and_login,
)
from tests.restkit import ProjectHandle, run_as_owner
from tests.storagekit import error_of, raw_request, storage_client, tree
from zbaas.api.storage import is_upload
from zbaas.config import Settings
from zbaas.storage import open_backend
from zbaas.storage.backend import BlobNotFound

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def http(storage_api: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=storage_api.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def owner(http: httpx.Client) -> dict[str, Any]:
    return signup_and_login(http)


@pytest.fixture(scope="module")
def handle(http: httpx.Client, owner: dict[str, Any]) -> Iterator[ProjectHandle]:
    project = ProjectHandle(http, owner, "sh")
    yield project
    project.delete()


@pytest.fixture
def fresh(http: httpx.Client, owner: dict[str, Any]) -> Iterator[ProjectHandle]:
    """A project of its own, for tests that fill its quota or delete it."""
    project = ProjectHandle(http, owner, "sq")
    yield project
    project.delete()


def keyed(key: str) -> dict[str, str]:
    return {"apikey": key, "Authorization": f"Bearer {key}"}


def unique(prefix: str = "f") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def put(
    http: httpx.Client, key: str, path: str, content: Any, content_type: str = "text/plain"
) -> httpx.Response:
    """Upload ``content`` as the raw body; a generator is sent chunked, without a length."""
    return http.put(
        f"/storage/v1/object/{path}",
        content=content,
        headers={**keyed(key), "Content-Type": content_type},
    )


def chunks(total: int, size: int = MIB, fill: bytes = b"z") -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield fill * piece


# --- downloads ----------------------------------------------------------------

CONTENT = bytes(range(256)) * 4  # 1,024 bytes that differ along the way


@pytest.fixture(scope="module")
def stored(http: httpx.Client, handle: ProjectHandle) -> str:
    path = f"default/{unique('range')}/data.bin"
    response = put(http, handle.secret, path, CONTENT, "application/octet-stream")
    assert response.status_code == 200, response.text
    return path


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-9", 0, 9), ("bytes=1000-", 1000, 1023), ("bytes=-5", 1019, 1023)]
    + [("bytes=1020-5000", 1020, 1023), ("bytes=0-0", 0, 0)],
)
def test_range_gives_206_with_those_bytes(
    http: httpx.Client, handle: ProjectHandle, stored: str, header: str, start: int, end: int
) -> None:
    response = http.get(
        f"/storage/v1/object/{stored}", headers={**keyed(handle.secret), "Range": header}
    )

    assert response.status_code == 206
    assert response.content == CONTENT[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/1024"
    assert response.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416(
    http: httpx.Client, handle: ProjectHandle, stored: str, header: str
) -> None:
    response = http.get(
        f"/storage/v1/object/{stored}", headers={**keyed(handle.secret), "Range": header}
    )

    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */1024"
    assert error_of(response)["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=9-2", "bytes=0-1,5-6", "lines=1-2", "bytes=x-y"])
def test_multi_or_invalid_range_is_ignored(
    http: httpx.Client, handle: ProjectHandle, stored: str, header: str
) -> None:
    response = http.get(
        f"/storage/v1/object/{stored}", headers={**keyed(handle.secret), "Range": header}
    )

    assert response.status_code == 200
    assert response.content == CONTENT


def test_download_headers(http: httpx.Client, handle: ProjectHandle, stored: str) -> None:
    response = http.get(f"/storage/v1/object/{stored}", headers=keyed(handle.secret))

    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == "1024"
    assert response.headers["etag"] == f'"{hashlib.md5(CONTENT).hexdigest()}"'
    assert response.headers["last-modified"].endswith(" GMT")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["accept-ranges"] == "bytes"
    assert "sandbox" in response.headers["content-security-policy"]


def test_head_and_conditional_get(http: httpx.Client, handle: ProjectHandle, stored: str) -> None:
    head = http.head(f"/storage/v1/object/{stored}", headers=keyed(handle.secret))
    again = http.get(
        f"/storage/v1/object/{stored}",
        headers={**keyed(handle.secret), "If-None-Match": head.headers["etag"]},
    )

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "1024"
    assert again.status_code == 304


def test_download_query_asks_for_an_attachment(
    http: httpx.Client, handle: ProjectHandle, stored: str
) -> None:
    named = http.get(
        f"/storage/v1/object/{stored}?download=r%C3%A9sum%C3%A9.bin", headers=keyed(handle.secret)
    )
    plain = http.get(f"/storage/v1/object/{stored}?download", headers=keyed(handle.secret))

    assert (
        named.headers["content-disposition"] == "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.bin"
    )
    assert plain.headers["content-disposition"] == "attachment; filename*=UTF-8''data.bin"


# --- streaming and body limits ------------------------------------------------


def test_upload_larger_than_the_body_cap_streams_through(
    http: httpx.Client, handle: ProjectHandle, storage_settings: Settings
) -> None:
    size = 2 * storage_settings.max_body_bytes + 12345
    path = f"default/{unique('big')}.bin"
    expected = hashlib.md5(b"".join(chunks(size))).hexdigest()

    response = put(http, handle.secret, path, chunks(size), "application/octet-stream")
    digest = hashlib.md5()
    with http.stream("GET", f"/storage/v1/object/{path}", headers=keyed(handle.secret)) as down:
        for piece in down.iter_bytes():
            digest.update(piece)

    assert response.status_code == 200, response.text
    assert down.status_code == 200
    assert down.headers["content-length"] == str(size)
    assert digest.hexdigest() == expected


def test_large_form_upload_skips_body_cap(
    storage_api: ThreadedServer, handle: ProjectHandle, storage_settings: Settings
) -> None:
    content = b"q" * (storage_settings.max_body_bytes + MIB)
    bucket = storage_client(storage_api.url, handle.secret).from_("default")
    path = f"{unique('form')}.bin"

    bucket.upload(path, content, {"content-type": "application/octet-stream"})

    assert bucket.download(path) == content


@pytest.mark.parametrize("route", ["/storage/v1/object/list/default", "/storage/v1/bucket"])
def test_other_storage_bodies_keep_the_cap(
    http: httpx.Client, handle: ProjectHandle, storage_settings: Settings, route: str
) -> None:
    body = b'{"prefix": "' + b"a" * storage_settings.max_body_bytes + b'"}'

    response = http.post(
        route, content=body, headers={**keyed(handle.secret), "Content-Type": "application/json"}
    )

    assert response.status_code == 413


# --- hostile paths ------------------------------------------------------------

HOSTILE_NAMES = [
    "../escape.txt",
    "a/../../escape.txt",
    "%2e%2e/escape.txt",
    "%2E%2E%2Fescape.txt",
    "a%2F..%2F..%2F..%2Fescape.txt",
    "./a.txt",
    "a//b.txt",
    "..%5Cescape.txt",
    "a%5C..%5Cb.txt",
    "%2Fetc%2Fpasswd",
    "a%00b.txt",
    "a%01b.txt",
    "a%0Ab.txt",
    "a%7Fb.txt",
    "a%C2%85b.txt",
    "%FF%FE.txt",
    "dir/",
    "a" * 1025,
    "%C3%A9" * 513,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_upload_path_is_422(
    storage_api: ThreadedServer, handle: ProjectHandle, name: str
) -> None:
    status, _, body = raw_request(
        storage_api.url,
        "POST",
        f"/storage/v1/object/default/{name}",
        {**keyed(handle.secret), "Content-Type": "text/plain"},
        b"x",
    )

    assert status == 422, body


@pytest.mark.parametrize("name", ["a" * 1024, "%C3%A9" * 512, "sp%20ace/%E2%9C%93.txt"])
def test_longest_and_unicode_paths_are_fine(
    storage_api: ThreadedServer, handle: ProjectHandle, name: str
) -> None:
    headers = {**keyed(handle.secret), "Content-Type": "text/plain"}

    stored, _, _ = raw_request(
        storage_api.url, "POST", f"/storage/v1/object/default/{name}", headers, b"x"
    )
    fetched, _, content = raw_request(
        storage_api.url, "GET", f"/storage/v1/object/default/{name}", keyed(handle.secret)
    )

    assert stored == 200
    assert fetched == 200
    assert content == b"x"


@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/storage/v1/object/default/{}"),
        ("GET", "/storage/v1/object/authenticated/default/{}"),
        ("GET", "/storage/v1/object/info/default/{}"),
        ("DELETE", "/storage/v1/object/default/{}"),
        ("PUT", "/projects/{project}/storage/objects/default/{}"),
        ("GET", "/projects/{project}/storage/objects/default/{}"),
        ("POST", "/storage/v1/object/upload/sign/default/{}"),
    ],
)
def test_hostile_paths_are_422_on_every_route(
    storage_api: ThreadedServer, handle: ProjectHandle, method: str, template: str
) -> None:
    for name in ("..%2Fescape.txt", "a%00b", "a%5Cb", "%2Fabs"):
        path = template.replace("{project}", handle.project["id"]).format(name)

        status, _, body = raw_request(
            storage_api.url, method, path, {**keyed(handle.secret), "Content-Type": "text/plain"}
        )

        assert status == 422, (path, body)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/storage/v1/object/move", {"sourceKey": "a.txt", "destinationKey": "../b.txt"}),
        ("/storage/v1/object/copy", {"sourceKey": "a.txt", "destinationKey": "b\\c.txt"}),
        ("/storage/v1/object/list/default", {"prefix": "../"}),
        ("/storage/v1/object/sign/default", {"expiresIn": 60, "paths": ["a\x00b"]}),
    ],
)
def test_hostile_names_in_bodies_are_422(
    http: httpx.Client, handle: ProjectHandle, route: str, body: dict[str, Any]
) -> None:
    response = http.post(route, json={"bucketId": "default", **body}, headers=keyed(handle.secret))

    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_key"


def test_remove_with_hostile_name_is_422(http: httpx.Client, handle: ProjectHandle) -> None:
    response = http.request(
        "DELETE",
        "/storage/v1/object/default",
        json={"prefixes": ["ok.txt", "../../etc/passwd"]},
        headers=keyed(handle.secret),
    )

    assert response.status_code == 422


@pytest.mark.parametrize("bucket", ["..", "..%2F..", "a%00", "x'%3B--"])
def test_hostile_bucket_in_path_is_422(
    storage_api: ThreadedServer, handle: ProjectHandle, bucket: str
) -> None:
    status, _, _ = raw_request(
        storage_api.url,
        "POST",
        f"/storage/v1/object/{bucket}/x.txt",
        {**keyed(handle.secret), "Content-Type": "text/plain"},
        b"x",
    )

    assert status == 422


def test_hostile_paths_write_nothing_anywhere(
    storage_api: ThreadedServer,
    http: httpx.Client,
    handle: ProjectHandle,
    storage_settings: Settings,
) -> None:
    if storage_settings.storage_backend != "local":
        pytest.skip("looks at the local backend's folder")
    secret = handle.secret
    client = storage_client(storage_api.url, secret)
    client.create_bucket(limited := unique("lim"), options={"file_size_limit": 10})
    client.create_bucket(images := unique("img"), options={"allowed_mime_types": ["image/*"]})
    # The folder that contains the data folder, so that a write beside it shows too.
    outer = storage_settings.data_dir.parent
    before = tree(outer)

    for name in HOSTILE_NAMES:
        for method in ("POST", "PUT"):
            raw_request(
                storage_api.url,
                method,
                f"/storage/v1/object/default/{name}",
                {**keyed(secret), "Content-Type": "text/plain"},
                b"planted",
            )
            raw_request(
                storage_api.url,
                "PUT",
                f"/projects/{handle.project['id']}/storage/objects/default/{name}",
                {**keyed(secret), "Content-Type": "text/plain"},
                b"planted",
            )
    too_big = put(http, secret, f"{limited}/big.txt", chunks(11, size=1))
    wrong_type = put(http, secret, f"{images}/a.txt", b"text")
    over_quota = put(http, secret, "default/huge.bin", chunks(STORAGE_QUOTA_BYTES + 1))

    assert tree(outer) == before
    assert too_big.status_code == 413
    assert wrong_type.status_code == 422
    assert over_quota.status_code == 413
    assert client.from_("default").list("", {"search": "planted"}) == []


# --- uploads: forms and concurrency -------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=xyz", b"not a form at all"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="cacheControl"\r\n\r\n60\r\n'
            b"--xyz--\r\n",
        ),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
            b'one\r\n--xyz\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\n'
            b"two\r\n--xyz--\r\n",
        ),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n[1, 2]\r\n'
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
            b"one\r\n--xyz--\r\n",
        ),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\ncut short',
        ),
    ],
)
def test_bad_form_is_422_and_stores_nothing(
    http: httpx.Client, handle: ProjectHandle, content_type: str, body: bytes
) -> None:
    path = f"{unique('form')}.txt"

    response = http.post(
        f"/storage/v1/object/default/{path}",
        content=body,
        headers={**keyed(handle.secret), "Content-Type": content_type},
    )
    info = http.get(f"/storage/v1/object/info/default/{path}", headers=keyed(handle.secret))

    assert response.status_code == 422, response.text
    assert info.status_code == 404


def test_concurrent_uploads_of_one_name_store_one(
    http: httpx.Client, handle: ProjectHandle
) -> None:
    path = f"default/{unique('race')}.txt"
    statuses: list[int] = []

    def upload(index: int) -> None:
        response = http.post(
            f"/storage/v1/object/{path}",
            content=str(index).encode() * 1000,
            headers={**keyed(handle.secret), "Content-Type": "text/plain"},
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] + [409] * 5


# --- quota --------------------------------------------------------------------


def test_quota_is_413_and_stores_nothing(http: httpx.Client, fresh: ProjectHandle) -> None:
    key = fresh.secret
    first = 30 * MIB

    stored = put(http, key, "default/first.bin", chunks(first))
    declared = put(http, key, "default/declared.bin", b"d" * (20 * MIB))
    streamed = put(http, key, "default/streamed.bin", chunks(20 * MIB))
    rest = put(http, key, "default/rest.bin", chunks(STORAGE_QUOTA_BYTES - first))
    one_more = put(http, key, "default/one.bin", b"1")
    listed = http.post(
        "/storage/v1/object/list/default", json={"prefix": ""}, headers=keyed(key)
    ).json()

    assert stored.status_code == 200
    assert declared.status_code == 413
    assert error_of(declared)["code"] == "quota_exceeded"
    assert streamed.status_code == 413
    assert rest.status_code == 200
    assert one_more.status_code == 413
    assert sorted(entry["name"] for entry in listed) == ["first.bin", "rest.bin"]


def test_replacing_an_object_counts_only_the_new_size(
    http: httpx.Client, fresh: ProjectHandle
) -> None:
    size = 30 * MIB

    first = put(http, fresh.secret, "default/same.bin", chunks(size))
    second = put(http, fresh.secret, "default/same.bin", chunks(size, fill=b"y"))
    head = http.head("/storage/v1/object/default/same.bin", headers=keyed(fresh.secret))

    assert first.status_code == 200
    assert second.status_code == 200
    assert head.headers["etag"] == f'"{hashlib.md5(b"y" * size).hexdigest()}"'


def test_concurrent_uploads_cannot_beat_the_quota(http: httpx.Client, fresh: ProjectHandle) -> None:
    size = 10 * MIB
    statuses: list[int] = []

    def upload(index: int) -> None:
        # Chunked, so no upload is refused by its declared length before it streams.
        response = put(http, fresh.secret, f"default/part-{index}.bin", chunks(size))
        statuses.append(response.status_code)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = http.post(
        "/storage/v1/object/list/default", json={"prefix": ""}, headers=keyed(fresh.secret)
    ).json()

    assert sorted(statuses) == [200] * 4 + [413] * 2
    assert sum(entry["metadata"]["size"] for entry in listed) == 4 * size


# --- management paths ---------------------------------------------------------


def test_platform_user_manages_objects(
    http: httpx.Client, handle: ProjectHandle, owner: dict[str, Any]
) -> None:
    base = f"/projects/{handle.project['id']}/storage"
    name = f"{unique('cli')}/report é.txt"
    url = f"{base}/objects/default/{quote(name)}"
    headers = owner["headers"]

    created = http.put(url, content=b"first", headers={**headers, "Content-Type": "text/csv"})
    replaced = http.put(url, content=b"second version", headers=headers)
    fetched = http.get(url, headers=headers)
    ranged = http.get(url, headers={**headers, "Range": "bytes=0-5"})
    head = http.head(url, headers=headers)
    buckets = http.get(f"{base}/buckets", headers=headers)
    deleted = http.delete(url, headers=headers)
    gone = http.get(url, headers=headers)
    deleted_again = http.delete(url, headers=headers)

    assert created.status_code == 201
    assert created.json()["content_type"] == "text/csv"
    assert created.json()["name"] == name
    assert replaced.status_code == 200
    assert replaced.json()["size"] == 14
    assert fetched.content == b"second version"
    assert ranged.status_code == 206
    assert ranged.content == b"second"
    assert head.headers["content-length"] == "14"
    assert head.content == b""
    assert "default" in [bucket["id"] for bucket in buckets.json()]
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert deleted_again.status_code == 404


def test_platform_listing_pages_with_a_cursor(
    http: httpx.Client, handle: ProjectHandle, owner: dict[str, Any]
) -> None:
    base = f"/projects/{handle.project['id']}/storage/objects/default"
    root = unique("pages")
    names = [f"{root}/{i:02d}.txt" for i in range(7)] + [f"{root}/sub/deep.txt"]
    for name in names:
        http.put(f"{base}/{name}", content=b"x", headers=owner["headers"])

    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = http.get(
            base,
            params={"prefix": f"{root}/", "limit": 3, "cursor": cursor},
            headers=owner["headers"],
        ).json()
        seen += [item["name"] for item in page["objects"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]

    assert seen == sorted(names)
    assert pages == 3


def test_management_paths_need_the_organization(http: httpx.Client, handle: ProjectHandle) -> None:
    base = f"/projects/{handle.project['id']}/storage"
    stranger = signup_and_login(http)

    by_stranger = http.get(f"{base}/buckets", headers=stranger["headers"])
    put_by_stranger = http.put(
        f"{base}/objects/default/x.txt", content=b"x", headers=stranger["headers"]
    )
    by_publishable = http.get(f"{base}/buckets", headers={"apikey": handle.publishable})
    anonymous = http.get(f"{base}/buckets")
    by_secret = http.get(f"{base}/buckets", headers={"apikey": handle.secret})

    assert by_stranger.status_code == 404
    assert put_by_stranger.status_code == 404
    assert by_publishable.status_code == 403
    assert anonymous.status_code == 401
    assert by_secret.status_code == 200


def test_app_and_management_paths_see_the_same_objects(
    http: httpx.Client, handle: ProjectHandle, owner: dict[str, Any]
) -> None:
    name = f"{unique('both')}.txt"
    put(http, handle.secret, f"default/{name}", b"shared")

    fetched = http.get(
        f"/projects/{handle.project['id']}/storage/objects/default/{name}",
        headers=owner["headers"],
    )

    assert fetched.content == b"shared"


# --- the project database -----------------------------------------------------


def test_deleting_the_project_deletes_every_blob(
    storage_api: ThreadedServer,
    http: httpx.Client,
    owner: dict[str, Any],
    storage_settings: Settings,
) -> None:
    project = ProjectHandle(http, owner, "sd")
    storage_client(storage_api.url, project.secret).create_bucket("second")
    uploads = [
        put(http, project.secret, path, b"doomed")
        for path in ("default/a.txt", "default/x/b.txt", "second/c.txt")
    ]
    keys = [f"{project.project['id']}/{upload.json()['Id']}" for upload in uploads]

    readable_before = asyncio.run(_readable(storage_settings, keys))
    project.delete()
    readable_after = asyncio.run(_readable(storage_settings, keys))

    assert readable_before == [True] * 3
    assert readable_after == [False] * 3


async def _readable(settings: Settings, keys: list[str]) -> list[bool]:
    backend = open_backend(settings, settings.data_dir / "storage")
    found = []
    try:
        for key in keys:
            try:
                async for _ in backend.read(key):
                    pass
                found.append(True)
            except BlobNotFound:
                found.append(False)
    finally:
        await backend.close()
    return found


def test_database_made_before_storage_gets_the_schema(
    http: httpx.Client, fresh: ProjectHandle, server_url: str
) -> None:
    with connect(server_url, fresh.project["db_name"]) as conn:
        conn.execute("DROP SCHEMA storage CASCADE")

    buckets = http.get("/storage/v1/bucket", headers=keyed(fresh.secret))
    uploaded = put(http, fresh.secret, "default/after.txt", b"x")

    assert [bucket["id"] for bucket in buckets.json()] == ["default"]
    assert uploaded.status_code == 200


def test_user_storage_schema_not_taken_over(
    http: httpx.Client,
    fresh: ProjectHandle,
    server_url: str,
    storage_settings: Settings,
) -> None:
    with connect(server_url, fresh.project["db_name"]) as conn:
        conn.execute("DROP SCHEMA storage CASCADE")
    run_as_owner(server_url, storage_settings, fresh.project, "CREATE SCHEMA storage")

    response = http.get("/storage/v1/bucket", headers=keyed(fresh.secret))

    assert response.status_code == 409
    assert error_of(response)["code"] == "storage_schema_taken"


def test_project_roles_cannot_touch_storage_metadata(
    handle: ProjectHandle, server_url: str, storage_settings: Settings
) -> None:
    for statement in (
        "SELECT * FROM storage.objects",
        "UPDATE storage.objects SET size = 0",
        "INSERT INTO storage.buckets (id, name) VALUES ('x', 'x')",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            run_as_owner(server_url, storage_settings, handle.project, statement)


def test_rest_api_does_not_serve_the_storage_schema(
    http: httpx.Client, handle: ProjectHandle
) -> None:
    response = http.get(
        "/rest/v1/objects", headers={**keyed(handle.secret), "Accept-Profile": "storage"}
    )

    assert response.status_code == 406


@pytest.mark.parametrize(
    ("method", "path", "exempt"),
    [
        ("POST", "/storage/v1/object/default/a.txt", True),
        ("PUT", "/storage/v1/object/default/a/b.txt", True),
        ("PUT", "/storage/v1/object/upload/sign/default/a.txt", True),
        ("PUT", "/projects/p/storage/objects/default/a.txt", True),
        ("GET", "/storage/v1/object/default/a.txt", False),
        ("POST", "/storage/v1/object/list/default", False),
        ("POST", "/storage/v1/object/sign/default/a.txt", False),
        ("POST", "/storage/v1/object/upload/sign/default/a.txt", False),
        ("POST", "/storage/v1/object/move", False),
        ("POST", "/storage/v1/object/default", False),
        ("POST", "/storage/v1/bucket", False),
        ("POST", "/projects/p/storage/objects/default/a.txt", False),
        ("POST", "/rest/v1/todos", False),
    ],
)
def test_only_uploads_skip_the_body_cap(method: str, path: str, exempt: bool) -> None:
    assert is_upload(method, path) is exempt


def test_platform_upload_larger_than_the_body_cap(
    http: httpx.Client, handle: ProjectHandle, owner: dict[str, Any], storage_settings: Settings
) -> None:
    size = storage_settings.max_body_bytes + MIB
    url = f"/projects/{handle.project['id']}/storage/objects/default/{unique('big')}.bin"

    response = http.put(url, content=chunks(size), headers=owner["headers"])

    assert response.status_code == 201, response.text
    assert response.json()["size"] == size


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("garbage", b"x"),
        ("text/*", b"x"),
        ("text/plain; charset=" + "u" * 300, b"x"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n'
            b"Content-Type: text/plain\x07\r\n\r\none\r\n--xyz--\r\n",
        ),
    ],
)
def test_bad_content_type_is_422(
    http: httpx.Client, handle: ProjectHandle, content_type: str, body: bytes
) -> None:
    path = f"{unique('type')}.txt"

    response = http.post(
        f"/storage/v1/object/default/{path}",
        content=body,
        headers={**keyed(handle.secret), "Content-Type": content_type},
    )

    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "invalid_mime_type"


def test_bucket_limit_past_bigint_is_422(http: httpx.Client, handle: ProjectHandle) -> None:
    response = http.post(
        "/storage/v1/bucket",
        json={"name": unique("b"), "file_size_limit": 2**64},
        headers=keyed(handle.secret),
    )

    assert response.status_code == 422
