"""Project storage through the unmodified storage client of the pinned ``supabase`` package.

Every test runs against the ``storage_api`` server of conftest.py, whose settings
choose the storage backend.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from storage3 import SyncStorageClient
from storage3.exceptions import StorageApiError

from tests.conftest import ThreadedServer, signup_and_login
from tests.restkit import ProjectHandle
from tests.storagekit import end_user, error_of, storage_client


@pytest.fixture(scope="module")
def handle(storage_api: ThreadedServer) -> Iterator[ProjectHandle]:
    """One project for the module, with a public bucket ``pub`` beside ``default``."""
    with httpx.Client(base_url=storage_api.url, timeout=60) as http:
        owner = signup_and_login(http)
        project = ProjectHandle(http, owner, "st")
        storage_client(storage_api.url, project.secret).create_bucket(
            "pub", options={"public": True}
        )
        yield project
        project.delete()


@pytest.fixture
def admin(storage_api: ThreadedServer, handle: ProjectHandle) -> SyncStorageClient:
    """The storage client with the project's secret key."""
    return storage_client(storage_api.url, handle.secret)


@pytest.fixture
def anon(storage_api: ThreadedServer, handle: ProjectHandle) -> SyncStorageClient:
    """The storage client with the publishable key and no signed-in user."""
    return storage_client(storage_api.url, handle.publishable)


def unique(prefix: str = "f") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def status_of(error: pytest.ExceptionInfo[StorageApiError]) -> int:
    return int(error.value.status)


# --- buckets ------------------------------------------------------------------


def test_new_project_has_default_bucket(admin: SyncStorageClient) -> None:
    buckets = {bucket.id: bucket for bucket in admin.list_buckets()}

    assert "default" in buckets
    assert buckets["default"].public is False
    assert buckets["default"].file_size_limit is None


def test_create_get_update_bucket(admin: SyncStorageClient) -> None:
    name = unique("b")

    created = admin.create_bucket(
        name, options={"public": False, "file_size_limit": 1000, "allowed_mime_types": ["image/*"]}
    )
    admin.update_bucket(name, {"public": True, "file_size_limit": 2000})
    bucket = admin.get_bucket(name)

    assert created == {"name": name}
    assert bucket.public is True
    assert bucket.file_size_limit == 2000
    assert bucket.allowed_mime_types == ["image/*"]
    assert name in [b.id for b in admin.list_buckets()]


def test_empty_then_delete_bucket(admin: SyncStorageClient) -> None:
    name = unique("b")
    admin.create_bucket(name)
    admin.from_(name).upload("x/one.txt", b"1")
    admin.from_(name).upload("two.txt", b"2")

    with pytest.raises(StorageApiError) as not_empty:
        admin.delete_bucket(name)
    emptied = admin.empty_bucket(name)
    deleted = admin.delete_bucket(name)

    assert status_of(not_empty) == 409
    assert emptied == {"message": "Successfully emptied"}
    assert deleted == {"message": "Successfully deleted"}
    assert name not in [b.id for b in admin.list_buckets()]


def test_create_bucket_twice_is_409(admin: SyncStorageClient) -> None:
    name = unique("b")
    admin.create_bucket(name)

    with pytest.raises(StorageApiError) as error:
        admin.create_bucket(name)

    assert status_of(error) == 409


@pytest.mark.parametrize(
    "name",
    ["a'; DROP TABLE storage.objects; --", "..", "a/b", "", "list", "x" * 64, 'q"uote', "é"],
)
def test_create_bucket_with_bad_name_is_422(admin: SyncStorageClient, name: str) -> None:
    with pytest.raises(StorageApiError) as error:
        admin.create_bucket(name)

    assert status_of(error) == 422


def test_bucket_with_bad_mime_pattern_is_422(admin: SyncStorageClient) -> None:
    with pytest.raises(StorageApiError) as error:
        admin.create_bucket(unique("b"), options={"allowed_mime_types": ["image/png; x"]})

    assert status_of(error) == 422


def test_publishable_key_cannot_change_buckets(
    anon: SyncStorageClient, admin: SyncStorageClient
) -> None:
    name = unique("b")
    admin.create_bucket(name)

    with pytest.raises(StorageApiError) as create:
        anon.create_bucket(unique("b"))
    with pytest.raises(StorageApiError) as update:
        anon.update_bucket(name, {"public": True})
    with pytest.raises(StorageApiError) as delete:
        anon.delete_bucket(name)

    assert status_of(create) == status_of(update) == status_of(delete) == 403
    assert admin.get_bucket(name).public is False


# --- objects ------------------------------------------------------------------


def test_upload_download_info_remove(admin: SyncStorageClient) -> None:
    bucket = admin.from_("default")
    path = f"{unique('dir')}/hello.txt"

    uploaded = bucket.upload(
        path,
        b"hello world",
        {"content-type": "text/plain", "cache-control": "60", "metadata": {"kind": "greeting"}},
    )
    content = bucket.download(path)
    info = bucket.info(path)
    removed = bucket.remove([path])

    assert uploaded.path == path
    assert uploaded.full_path == f"default/{path}"
    assert content == b"hello world"
    assert info["size"] == 11
    assert info["content_type"] == "text/plain"
    assert info["cache_control"] == "max-age=60"
    assert info["metadata"] == {"kind": "greeting"}
    assert info["etag"] == '"5eb63bbbe01eeed093cb22bb8f5acdc3"'
    assert [item["name"] for item in removed] == [path]
    assert bucket.exists(path) is False


def test_upload_existing_without_upsert_is_409(admin: SyncStorageClient) -> None:
    bucket = admin.from_("default")
    path = f"{unique()}.txt"
    bucket.upload(path, b"first")

    with pytest.raises(StorageApiError) as error:
        bucket.upload(path, b"second")
    bucket.upload(path, b"third", {"upsert": "true"})
    bucket.update(path, b"fourth")

    assert status_of(error) == 409
    assert bucket.download(path) == b"fourth"


def test_exists(admin: SyncStorageClient) -> None:
    bucket = admin.from_("default")
    path = f"{unique()}.txt"
    bucket.upload(path, b"x")

    assert bucket.exists(path) is True
    assert bucket.exists(f"{path}.missing") is False


def test_missing_object_raises_with_status_and_our_message(admin: SyncStorageClient) -> None:
    with pytest.raises(StorageApiError) as error:
        admin.from_("default").download(f"{unique()}.txt")

    assert status_of(error) == 404
    assert "object_not_found" in error.value.message


def test_list_folders_first_then_files(admin: SyncStorageClient) -> None:
    bucket = admin.from_("default")
    root = unique("list")
    for name in ("b.txt", "a.txt", "sub/c.txt", "sub/deeper/d.txt", "other/e.txt"):
        bucket.upload(f"{root}/{name}", name.encode())

    top = bucket.list(root)
    sub = bucket.list(f"{root}/sub/")

    assert [(e["name"], e["id"] is None) for e in top] == [
        ("other", True),
        ("sub", True),
        ("a.txt", False),
        ("b.txt", False),
    ]
    assert top[2]["metadata"]["size"] == 5
    assert top[2]["metadata"]["mimetype"].startswith("text/plain")
    assert [e["name"] for e in sub] == ["deeper", "c.txt"]


def test_list_limit_offset_sort_search(admin: SyncStorageClient) -> None:
    bucket = admin.from_("default")
    root = unique("page")
    for name in ("apple.txt", "Banana.txt", "cherry.txt", "apricot.txt", "a_b.txt", "axb.txt"):
        bucket.upload(f"{root}/{name}", b"x")

    first = bucket.list(root, {"limit": 2, "offset": 0})
    second = bucket.list(root, {"limit": 2, "offset": 2})
    descending = bucket.list(root, {"sortBy": {"column": "name", "order": "desc"}})
    searched = bucket.list(root, {"search": "AP"})
    underscore = bucket.list(root, {"search": "a_"})

    assert [e["name"] for e in first] == ["Banana.txt", "a_b.txt"]
    assert [e["name"] for e in second] == ["apple.txt", "apricot.txt"]
    assert [e["name"] for e in descending][0] == "cherry.txt"
    assert sorted(e["name"] for e in searched) == ["apple.txt", "apricot.txt"]
    assert [e["name"] for e in underscore] == ["a_b.txt"]


@pytest.mark.parametrize(
    "options",
    [
        {"sortBy": {"column": "name; DROP TABLE storage.objects", "order": "asc"}},
        {"sortBy": {"column": "name", "order": "sideways"}},
        {"limit": 0},
        {"limit": 100_000},
        {"offset": -1},
    ],
)
def test_list_with_bad_options_is_422(admin: SyncStorageClient, options: Any) -> None:
    with pytest.raises(StorageApiError) as error:
        admin.from_("default").list("", options)

    assert status_of(error) == 422


def test_move_and_copy(admin: SyncStorageClient) -> None:
    bucket = admin.from_("default")
    root = unique("mv")
    bucket.upload(f"{root}/a.txt", b"content")

    bucket.move(f"{root}/a.txt", f"{root}/b.txt")
    copied = bucket.copy(f"{root}/b.txt", f"{root}/c.txt")
    with pytest.raises(StorageApiError) as taken:
        bucket.move(f"{root}/b.txt", f"{root}/c.txt")

    assert bucket.exists(f"{root}/a.txt") is False
    assert bucket.download(f"{root}/b.txt") == b"content"
    assert bucket.download(f"{root}/c.txt") == b"content"
    assert copied["Key"] == f"default/{root}/c.txt"
    assert status_of(taken) == 409


def test_remove_skips_missing_names(admin: SyncStorageClient) -> None:
    bucket = admin.from_("default")
    path = f"{unique()}.txt"
    bucket.upload(path, b"x")

    removed = bucket.remove([path, f"{path}.missing"])

    assert [item["name"] for item in removed] == [path]


def test_remove_too_many_names_is_422(admin: SyncStorageClient) -> None:
    with pytest.raises(StorageApiError) as error:
        admin.from_("default").remove([f"n{i}" for i in range(1001)])

    assert status_of(error) == 422


# --- limits -------------------------------------------------------------------


def test_upload_over_bucket_limit_is_413(admin: SyncStorageClient) -> None:
    name = unique("small")
    admin.create_bucket(name, options={"file_size_limit": 1000})
    bucket = admin.from_(name)

    bucket.upload("fits.bin", b"x" * 1000, {"content-type": "application/octet-stream"})
    with pytest.raises(StorageApiError) as error:
        bucket.upload("big.bin", b"x" * 1001, {"content-type": "application/octet-stream"})

    assert status_of(error) == 413
    assert [e["name"] for e in bucket.list()] == ["fits.bin"]


def test_type_not_allowed_is_rejected_and_not_stored(admin: SyncStorageClient) -> None:
    name = unique("images")
    admin.create_bucket(name, options={"allowed_mime_types": ["image/*", "application/pdf"]})
    bucket = admin.from_(name)

    bucket.upload("a.png", b"\x89PNG", {"content-type": "image/png"})
    bucket.upload("b.pdf", b"%PDF", {"content-type": "application/pdf"})
    with pytest.raises(StorageApiError) as error:
        bucket.upload("c.txt", b"text", {"content-type": "text/plain"})

    assert status_of(error) == 422
    assert "invalid_mime_type" in error.value.message
    assert sorted(e["name"] for e in bucket.list()) == ["a.png", "b.pdf"]


def test_copy_into_bucket_of_other_types_is_422(admin: SyncStorageClient) -> None:
    name = unique("images")
    admin.create_bucket(name, options={"allowed_mime_types": ["image/*"]})
    path = f"{unique()}.txt"
    admin.from_("default").upload(path, b"text", {"content-type": "text/plain"})

    response = httpx.post(
        str(admin._base_url) + "object/copy",
        headers=dict(admin._headers),
        json={"bucketId": "default", "sourceKey": path, "destinationKey": "x.txt"}
        | {"destinationBucket": name},
    )

    assert response.status_code == 422
    assert admin.from_(name).list() == []


# --- signed URLs --------------------------------------------------------------


@pytest.mark.parametrize("name", ["file.txt", "a file #1?.txt", "résumé ✓.txt"])
def test_signed_url_downloads_without_a_key(admin: SyncStorageClient, name: str) -> None:
    path = f"{unique('signed')}/{name}"
    admin.from_("default").upload(path, b"secret content")

    signed = admin.from_("default").create_signed_url(path, 60)
    response = httpx.get(signed["signedURL"])

    assert signed["signedUrl"] == signed["signedURL"]
    assert response.status_code == 200
    assert response.content == b"secret content"


def _forged(signed_url: str, changes: dict[str, Any]) -> str:
    """The signed URL with its token's payload changed and the signature kept."""
    base, token = signed_url.split("?token=")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{base}?token={header}.{encoded}.{signature}"


def test_tampered_signed_url_is_403(admin: SyncStorageClient) -> None:
    root = unique("signed")
    admin.from_("default").upload(f"{root}/a.txt", b"a")
    admin.from_("default").upload(f"{root}/b.txt", b"b")
    url = admin.from_("default").create_signed_url(f"{root}/a.txt", 60)["signedURL"]

    other_path = httpx.get(url.replace("/a.txt?", "/b.txt?"))
    later = httpx.get(_forged(url, {"exp": int(time.time()) + 10**6}))
    other_url = httpx.get(_forged(url, {"url": f"default/{root}/b.txt"}))

    for response in (other_path, later, other_url):
        assert response.status_code == 403
        assert error_of(response)["code"] == "invalid_signature"


def test_expired_signed_url_is_403(admin: SyncStorageClient) -> None:
    path = f"{unique()}.txt"
    admin.from_("default").upload(path, b"x")
    url = admin.from_("default").create_signed_url(path, 1)["signedURL"]

    time.sleep(2.1)
    response = httpx.get(url)

    assert response.status_code == 403
    assert "expired" in error_of(response)["message"]


def test_signed_url_for_missing_object_is_404(admin: SyncStorageClient) -> None:
    with pytest.raises(StorageApiError) as error:
        admin.from_("default").create_signed_url(f"{unique()}.txt", 60)

    assert status_of(error) == 404


def test_signed_urls_for_several_paths(admin: SyncStorageClient) -> None:
    path = f"{unique()}.txt"
    admin.from_("default").upload(path, b"many")

    items = admin.from_("default").create_signed_urls([path, f"{path}.missing"], 60)

    assert items[0]["error"] is None
    assert httpx.get(items[0]["signedURL"]).content == b"many"
    assert items[1]["signedURL"] is None
    assert items[1]["error"]


def test_signed_upload_url(admin: SyncStorageClient) -> None:
    bucket = admin.from_("default")
    path = f"{unique('up')}/file.txt"

    signed = bucket.create_signed_upload_url(path)
    uploaded = bucket.upload_to_signed_url(path, signed["token"], b"via signed url")
    again = httpx.put(signed["signed_url"], files={"file": ("file.txt", b"again", "text/plain")})

    assert uploaded.full_path == f"default/{path}"
    assert bucket.download(path) == b"via signed url"
    assert again.status_code == 409


def test_signed_tokens_are_not_interchangeable(admin: SyncStorageClient) -> None:
    bucket = admin.from_("default")
    path = f"{unique()}.txt"
    bucket.upload(path, b"x")
    upload_token = bucket.create_signed_upload_url(f"{path}.new")["token"]
    download_url = bucket.create_signed_url(path, 60)["signedURL"]
    download_token = download_url.split("?token=")[1]

    with pytest.raises(StorageApiError) as other_path:
        bucket.upload_to_signed_url(f"{path}.elsewhere", upload_token, b"y")
    with pytest.raises(StorageApiError) as download_for_upload:
        bucket.upload_to_signed_url(path, download_token, b"y")
    upload_for_download = httpx.get(download_url.replace(download_token, upload_token))

    assert status_of(other_path) == 403
    assert status_of(download_for_upload) == 403
    assert upload_for_download.status_code == 403
    assert bucket.download(path) == b"x"


# --- access rules -------------------------------------------------------------


def test_anyone_reads_a_public_bucket(
    storage_api: ThreadedServer, admin: SyncStorageClient, anon: SyncStorageClient, handle: Any
) -> None:
    path = f"{unique()}.txt"
    admin.from_("pub").upload(path, b"public")

    downloaded = anon.from_("pub").download(path)
    listed = [e["name"] for e in anon.from_("pub").list()]
    public_url = anon.from_("pub").get_public_url(path)
    fetched = httpx.get(public_url, headers={"apikey": handle.publishable})
    signed = anon.from_("pub").create_signed_url(path, 60)

    assert downloaded == b"public"
    assert path in listed
    assert fetched.content == b"public"
    assert httpx.get(signed["signedURL"]).content == b"public"


def test_anon_cannot_write_a_public_bucket(anon: SyncStorageClient) -> None:
    with pytest.raises(StorageApiError) as error:
        anon.from_("pub").upload(f"{unique()}.txt", b"x")

    assert status_of(error) == 403


def test_anon_may_do_nothing_in_a_private_bucket(
    admin: SyncStorageClient, anon: SyncStorageClient
) -> None:
    path = f"{unique()}.txt"
    admin.from_("default").upload(path, b"private")
    bucket = anon.from_("default")
    attempts = {
        "download": lambda: bucket.download(path),
        "info": lambda: bucket.info(path),
        "list": lambda: bucket.list(),
        "upload": lambda: bucket.upload(f"{unique()}.txt", b"x"),
        "remove": lambda: bucket.remove([path]),
        "sign": lambda: bucket.create_signed_url(path, 60),
        "move": lambda: bucket.move(path, f"{path}.moved"),
    }

    for action, attempt in attempts.items():
        with pytest.raises(StorageApiError) as error:
            attempt()
        assert status_of(error) == 403, action
    assert admin.from_("default").download(path) == b"private"


def test_public_route_refuses_a_private_bucket(
    admin: SyncStorageClient, anon: SyncStorageClient, handle: Any
) -> None:
    path = f"{unique()}.txt"
    admin.from_("default").upload(path, b"private")

    response = httpx.get(
        anon.from_("default").get_public_url(path), headers={"apikey": handle.secret}
    )

    assert response.status_code == 403
    assert error_of(response)["code"] == "bucket_not_public"


def test_end_user_reads_and_writes_only_their_folder(
    storage_api: ThreadedServer, admin: SyncStorageClient, handle: Any
) -> None:
    user, user_id = end_user(storage_api.url, handle.publishable)
    other, other_id = end_user(storage_api.url, handle.publishable)
    mine = user.storage.from_("default")
    admin.from_("default").upload(f"{other_id}/theirs.txt", b"theirs")
    admin.from_("default").upload(f"{unique()}.txt", b"root")

    mine.upload(f"{user_id}/notes/mine.txt", b"mine")
    downloaded = mine.download(f"{user_id}/notes/mine.txt")
    listed_root = [e["name"] for e in mine.list()]
    listed_own = [e["name"] for e in mine.list(f"{user_id}/notes")]
    with pytest.raises(StorageApiError) as write_other:
        mine.upload(f"{other_id}/planted.txt", b"x")
    with pytest.raises(StorageApiError) as read_other:
        mine.download(f"{other_id}/theirs.txt")
    with pytest.raises(StorageApiError) as write_root:
        mine.upload(f"{unique()}.txt", b"x")
    with pytest.raises(StorageApiError) as move_out:
        mine.move(f"{user_id}/notes/mine.txt", f"{other_id}/mine.txt")
    with pytest.raises(StorageApiError) as other_reads:
        other.storage.from_("default").download(f"{user_id}/notes/mine.txt")
    removed = mine.remove([f"{user_id}/notes/mine.txt"])

    assert downloaded == b"mine"
    assert listed_root == [user_id]
    assert listed_own == ["mine.txt"]
    for error in (write_other, read_other, write_root, move_out, other_reads):
        assert status_of(error) == 403
    assert [item["name"] for item in removed] == [f"{user_id}/notes/mine.txt"]
    assert admin.from_("default").download(f"{other_id}/theirs.txt") == b"theirs"


def test_uploads_record_their_owner(
    storage_api: ThreadedServer, admin: SyncStorageClient, handle: Any
) -> None:
    user, user_id = end_user(storage_api.url, handle.publishable)
    path = f"{user_id}/owned.txt"

    user.storage.from_("default").upload(path, b"x")
    removed = admin.from_("default").remove([path])

    assert removed[0]["owner"] == user_id


def test_end_user_cannot_create_buckets(storage_api: ThreadedServer, handle: Any) -> None:
    user, _ = end_user(storage_api.url, handle.publishable)

    with pytest.raises(StorageApiError) as error:
        user.storage.create_bucket(unique("b"))

    assert status_of(error) == 403


def test_other_projects_key_sees_none_of_these_objects(
    storage_api: ThreadedServer, admin: SyncStorageClient, handle: Any
) -> None:
    path = f"{unique()}.txt"
    admin.from_("default").upload(path, b"mine")
    with httpx.Client(base_url=storage_api.url, timeout=60) as http:
        other = ProjectHandle(http, signup_and_login(http), "st")
        try:
            with pytest.raises(StorageApiError) as error:
                storage_client(storage_api.url, other.secret).from_("default").download(path)
        finally:
            other.delete()

    assert status_of(error) == 404
