"""Checks on what users name: buckets, object paths, list prefixes and media types.

Object names never become file paths or S3 keys, because blobs are stored
under ids that zbaas makes. A name that looks like a path escape is rejected
anyway, so that no client, proxy or export that maps names to paths is led astray.
"""

from __future__ import annotations

import re

from zbaas.errors import InvalidInput

MAX_NAME_BYTES = 1024
MAX_BUCKET_ID_LENGTH = 63
BUCKET_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# First path segments of the storage API's own routes: a bucket of one of these
# names could not be reached at /storage/v1/object/{bucket}/...
RESERVED_BUCKET_IDS = frozenset(
    {"authenticated", "copy", "info", "list", "list-v2", "move", "public", "sign", "upload"}
)
MAX_CONTENT_TYPE_LENGTH = 255
MIME_PATTERN = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*|\*)/(?:[A-Za-z0-9!#$&^_.+-]+|\*)$")
# C0 controls, DEL and C1 controls. U+FFFD stands for bytes that were not UTF-8.
FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\\\ufffd]")


def check_bucket_id(bucket_id: str) -> str:
    """Return ``bucket_id`` when it is a usable bucket id; otherwise 422."""
    if (
        not 0 < len(bucket_id) <= MAX_BUCKET_ID_LENGTH
        or not BUCKET_ID_PATTERN.fullmatch(bucket_id)
        or bucket_id in RESERVED_BUCKET_IDS
    ):
        raise InvalidInput(
            f"invalid bucket name {bucket_id!r}: use 1 to {MAX_BUCKET_ID_LENGTH} letters, "
            "digits, '.', '_' or '-', starting with a letter or digit; "
            f"these names are reserved: {', '.join(sorted(RESERVED_BUCKET_IDS))}",
            code="invalid_bucket_name",
            details={"field": "name"},
        )
    return bucket_id


def check_object_name(name: str, *, field: str = "path") -> str:
    """Return ``name`` when it is a safe object path; otherwise 422.

    A name is at most 1,024 bytes of UTF-8, relative, with no empty, ``.`` or
    ``..`` segment, and no backslash, NUL or other control character.
    """
    _check_path(name, field=field, allow_trailing_slash=False)
    return name


def check_prefix(prefix: str, *, field: str = "prefix") -> str:
    """Return a list prefix (a name, a folder ending in ``/``, or empty) when safe; else 422."""
    if prefix:
        _check_path(prefix, field=field, allow_trailing_slash=True)
    return prefix


def _check_path(name: str, *, field: str, allow_trailing_slash: bool) -> None:
    def invalid(rule: str) -> InvalidInput:
        return InvalidInput(
            f"invalid object {field} {name[:200]!r}: {rule}",
            code="invalid_key",
            details={"field": field},
        )

    if not name:
        raise invalid("it is empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise invalid("it is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise invalid(f"it is {size} bytes of UTF-8; the maximum is {MAX_NAME_BYTES}")
    if FORBIDDEN_CHARACTERS.search(name):
        raise invalid("backslashes, control characters and invalid UTF-8 are not allowed")
    if name.startswith("/"):
        raise invalid("it must be relative, not start with '/'")
    segments = name.split("/")
    if allow_trailing_slash and segments[-1] == "":
        segments.pop()
    for segment in segments:
        if segment in ("", ".", ".."):
            raise invalid("empty, '.' and '..' segments are not allowed")


def check_content_type(value: str) -> str:
    """Return an upload's Content-Type when it is ``type/subtype`` with printable parameters.

    It is sent back as a header on every download, so nothing else may pass.
    """
    if (
        len(value) > MAX_CONTENT_TYPE_LENGTH
        or not value.isascii()
        or not value.isprintable()
        or not MIME_PATTERN.fullmatch(base_mime_type(value))
        or "*" in base_mime_type(value)
    ):
        raise InvalidInput(
            f"invalid Content-Type {value[:100]!r}: use type/subtype, such as text/plain, "
            f"in at most {MAX_CONTENT_TYPE_LENGTH} printable ASCII characters",
            code="invalid_mime_type",
        )
    return value


def check_mime_types(values: list[str]) -> list[str]:
    """Return the allowed media types of a bucket (``image/png``, ``image/*``) or 422."""
    for value in values:
        if len(value) > MAX_CONTENT_TYPE_LENGTH or not MIME_PATTERN.fullmatch(value):
            raise InvalidInput(
                f"invalid media type {value[:100]!r} in allowed_mime_types: "
                "use type/subtype or type/*",
                code="invalid_mime_type",
                details={"field": "allowed_mime_types"},
            )
    return [value.lower() for value in values]


def base_mime_type(content_type: str) -> str:
    """``text/plain;charset=UTF-8`` gives ``text/plain``."""
    return content_type.split(";", 1)[0].strip().lower()


def mime_allowed(content_type: str, allowed: list[str] | None) -> bool:
    """Check whether a bucket that allows ``allowed`` (None: anything) takes ``content_type``.

    ``image/*`` matches every image type and ``*/*`` everything, as in Supabase.
    """
    if not allowed:
        return True
    mime = base_mime_type(content_type)
    kind, _, _ = mime.partition("/")
    for pattern in allowed:
        pattern_kind, _, pattern_sub = pattern.partition("/")
        if pattern == mime or pattern == "*/*":
            return True
        if pattern_sub == "*" and pattern_kind == kind:
            return True
    return False
