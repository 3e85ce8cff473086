"""``zbaas storage put|get|ls|rm`` against the storage tests' server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clikit import Cli, create_project, delete_project, logged_in_cli
from tests.conftest import STORAGE_FILE_SIZE_LIMIT, ThreadedServer

Session = tuple[Cli, dict[str, Any]]


@pytest.fixture(scope="module")
def session(
    storage_api: ThreadedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Session]:
    cli, user = logged_in_cli(storage_api, tmp_path_factory.mktemp("cli-storage"))
    project = create_project(cli)
    cli.env["ZBAAS_PROJECT"] = project["slug"]
    yield cli, project
    delete_project(storage_api, user, project["id"])


def test_put_get_and_rm_a_large_binary_file(session: Session) -> None:
    cli, _ = session
    # Larger than the 10 MiB cap on other request bodies, so the upload must stream.
    data = os.urandom(12 * 1024 * 1024 + 7)
    (cli.cwd / "large.bin").write_bytes(data)

    put = cli.ok("storage", "put", "large.bin", "default/blobs/large.bin")
    got = cli.ok("storage", "get", "default/blobs/large.bin", "-o", "copy.bin")
    removed = cli.ok("storage", "rm", "default/blobs/large.bin")
    after_delete = cli.fails("storage", "get", "default/blobs/large.bin", "-o", "again.bin")

    assert "Uploaded default/blobs/large.bin (12.0 MiB, application/octet-stream)." in put.stdout
    assert "12.0 MiB of 12.0 MiB" in put.stderr
    assert "/s" in put.stderr
    assert (cli.cwd / "copy.bin").read_bytes() == data
    assert "Wrote 12.0 MiB to copy.bin" in got.stdout
    assert "/s" in got.stderr
    assert "Deleted default/blobs/large.bin." in removed.stdout
    assert "(object_not_found)" in after_delete.stderr
    assert not (cli.cwd / "again.bin").exists()
    assert not [p for p in cli.cwd.iterdir() if ".part-" in p.name]


def test_put_into_folder_keeps_name_and_guesses_type(session: Session) -> None:
    cli, _ = session
    (cli.cwd / "notes.txt").write_text("hello")

    into_folder = cli.ok("storage", "put", "notes.txt", "default/docs/", "--json").json()
    into_bucket = cli.ok("storage", "put", "notes.txt", "default", "--json").json()
    typed = cli.ok(
        "storage", "put", "notes.txt", "default/raw", "--content-type", "application/x-raw"
    )
    replaced = cli.ok("storage", "put", "notes.txt", "default/docs/notes.txt")
    cli.ok("storage", "rm", "default/docs/notes.txt", "default/notes.txt", "default/raw")

    assert (into_folder["name"], into_folder["content_type"]) == ("docs/notes.txt", "text/plain")
    assert into_bucket["name"] == "notes.txt"
    assert "application/x-raw" in typed.stdout
    assert "Replaced default/docs/notes.txt" in replaced.stdout


def test_put_from_stdin_and_get_to_stdout(session: Session) -> None:
    cli, _ = session

    cli.ok("storage", "put", "-", "default/piped.txt", input="from a pipe\n")
    got = cli.ok("storage", "get", "default/piped.txt", "-o", "-")
    nameless = cli.fails("storage", "put", "-", "default/", input="x", code=2)
    cli.ok("storage", "rm", "default/piped.txt")

    assert got.stdout == "from a pipe\n"
    assert "give the object's path when uploading stdin" in nameless.stderr


def test_ls_lists_buckets_objects_and_pages(session: Session) -> None:
    cli, _ = session
    for name in ("a.txt", "b.txt", "c.txt"):
        cli.ok("storage", "put", "-", f"default/pages/{name}", input=name)

    buckets = cli.ok("storage", "ls")
    listed = cli.ok("storage", "ls", "default/pages/")
    first = cli.ok("storage", "ls", "default/pages/", "--limit", "2", "--json").json()
    second = cli.ok(
        "storage",
        "ls",
        "default/pages/",
        "--limit",
        "2",
        "--cursor",
        first["next_cursor"],
        "--json",
    ).json()
    hint = cli.ok("storage", "ls", "default/pages/", "--limit", "2")
    cli.ok("storage", "rm", "default/pages/a.txt", "default/pages/b.txt", "default/pages/c.txt")

    assert "default" in buckets.stdout
    assert all(f"pages/{n}" in listed.stdout for n in ("a.txt", "b.txt", "c.txt"))
    assert [o["name"] for o in first["objects"]] == ["pages/a.txt", "pages/b.txt"]
    assert [o["name"] for o in second["objects"]] == ["pages/c.txt"]
    assert second["next_cursor"] is None
    assert "More objects: zbaas storage ls default/pages/ --cursor" in hint.stderr


def test_put_missing_file_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("storage", "put", "no-such-file.bin", "default/x", code=2)

    assert "error: cannot read no-such-file.bin: No such file or directory" in result.stderr


def test_put_into_unknown_bucket_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("storage", "put", "-", "no-such-bucket/x.txt", input="x")

    assert "error:" in result.stderr
    assert "no-such-bucket" in result.stderr


def test_put_over_the_size_limit_fails(session: Session) -> None:
    cli, _ = session
    with (cli.cwd / "huge.bin").open("wb") as file:
        file.truncate(STORAGE_FILE_SIZE_LIMIT + 1)

    result = cli.fails("storage", "put", "huge.bin", "default/huge.bin")
    listed = cli.ok("storage", "ls", "default/huge", "--json").json()

    assert "error: the object is larger than the limit of bucket 'default'" in result.stderr
    assert "(entity_too_large)" in result.stderr
    assert listed["objects"] == []


def test_dot_segments_do_not_leave_the_bucket(session: Session) -> None:
    cli, project = session

    result = cli.fails("storage", "rm", "default/../../keys")
    still_there = cli.ok("projects", "get", project["slug"], "--json").json()

    assert "error:" in result.stderr
    assert still_there["id"] == project["id"]


def test_rm_unknown_object_fails(session: Session) -> None:
    cli, _ = session

    result = cli.fails("storage", "rm", "default/never-there.txt")

    assert "(object_not_found)" in result.stderr


def test_storage_with_a_secret_key(session: Session, tmp_path: Path) -> None:
    cli, project = session
    key = cli.ok("keys", "create", "ci", "--type", "secret", "--json").json()["key"]
    keyed = Cli(tmp_path, cli.url, env={"ZBAAS_API_KEY": key, "ZBAAS_PROJECT": project["id"]})

    keyed.ok("storage", "put", "-", "default/by-key.txt", input="k")
    got = keyed.ok("storage", "get", "default/by-key.txt", "-o", "-")
    keyed.ok("storage", "rm", "default/by-key.txt")

    assert got.stdout == "k"
