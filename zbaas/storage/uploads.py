"""Upload bodies: a raw body, or ``multipart/form-data`` as Supabase storage clients send it.

Both hand the content on chunk by chunk as the request body arrives. Of a form,
only the small text fields around the file part (``cacheControl``,
``metadata``) are kept in memory.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from zbaas.errors import InvalidInput, PayloadTooLarge

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 16
MAX_CACHE_CONTROL_LENGTH = 200
DEFAULT_CONTENT_TYPE = "application/octet-stream"
DEFAULT_CACHE_CONTROL = "no-cache"
# Request bodies arrive in pieces of about 64 KiB; the backend gets them joined
# into pieces of this size, so that it makes fewer, larger writes.
WRITE_PIECE_BYTES = 1024 * 1024


class UploadBody(Protocol):
    """The content of one upload, with the type, cache control and metadata sent with it."""

    def chunks(self, on_type: Callable[[str], None]) -> AsyncIterator[bytes]:
        """Yield the content; call ``on_type(content_type)`` before the first byte.

        ``on_type`` may raise to reject the upload before any content is stored.
        """
        ...

    def content_type(self) -> str: ...

    def cache_control(self) -> str: ...

    def user_metadata(self) -> dict[str, Any] | None: ...


def read_body(
    body: AsyncIterator[bytes],
    content_type: str | None,
    cache_control: str | None = None,
    user_metadata: str | None = None,
) -> UploadBody:
    """Wrap a request body: a form when ``content_type`` is multipart/form-data, else raw."""
    if parse_options_header(content_type)[0] == b"multipart/form-data":
        assert content_type is not None
        return FormUpload(body, content_type)
    return RawUpload(body, content_type, cache_control, user_metadata)


def parse_cache_control(value: str | None) -> str:
    """Turn a number of seconds into ``max-age=<n>``, as Supabase does; keep other values."""
    if value is None or not value.strip():
        return DEFAULT_CACHE_CONTROL
    value = value.strip()
    if value.isdigit():
        return f"max-age={int(value)}"
    if len(value) > MAX_CACHE_CONTROL_LENGTH or not all(" " <= c <= "~" for c in value):
        raise InvalidInput(
            f"invalid cache control {value[:50]!r}: use at most {MAX_CACHE_CONTROL_LENGTH} "
            "printable ASCII characters",
            code="invalid_cache_control",
        )
    return value


def parse_user_metadata(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidInput("the metadata must be a JSON object", code="invalid_metadata")
    return parsed


async def in_pieces(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Join ``chunks`` into pieces of :data:`WRITE_PIECE_BYTES`, the last one shorter."""
    pending: list[bytes] = []
    size = 0
    async for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= WRITE_PIECE_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


class RawUpload:
    """A request body that is the content itself, typed by the request's Content-Type."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        content_type: str | None,
        cache_control: str | None,
        user_metadata: str | None,
    ) -> None:
        self.body = body
        self._content_type = content_type or DEFAULT_CONTENT_TYPE
        self._cache_control = parse_cache_control(cache_control)
        self._user_metadata = parse_user_metadata(user_metadata)

    async def chunks(self, on_type: Callable[[str], None]) -> AsyncIterator[bytes]:
        on_type(self._content_type)
        async for chunk in self.body:
            yield chunk

    def content_type(self) -> str:
        return self._content_type

    def cache_control(self) -> str:
        return self._cache_control

    def user_metadata(self) -> dict[str, Any] | None:
        return self._user_metadata


class FormUpload:
    """A ``multipart/form-data`` body whose one file part is the content."""

    def __init__(self, body: AsyncIterator[bytes], content_type: str) -> None:
        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise InvalidInput(
                "the multipart/form-data Content-Type has no boundary", code="invalid_form"
            )
        self.body = body
        self.fields: dict[str, str] = {}
        self.file_content_type: str | None = None

        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

        # State of the part being parsed.
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._in_file = False
        self._field_name: str | None = None
        self._field = bytearray()
        self._pending: list[bytes] = []
        self._ended = False

    async def chunks(self, on_type: Callable[[str], None]) -> AsyncIterator[bytes]:
        """Yield the file part's bytes as they arrive.

        ``on_type`` gets the file part's Content-Type once its headers are read,
        before any of its bytes are yielded. A form without a file, or one that
        ends early, raises 422 after the last byte, which makes the backend
        discard what it received.
        """
        announced = False
        async for chunk in self.body:
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidInput(
                    f"the multipart/form-data body is malformed: {exc}", code="invalid_form"
                ) from None
            if self.file_content_type is not None and not announced:
                on_type(self.file_content_type)
                announced = True
            pending, self._pending = self._pending, []
            for piece in pending:
                yield piece
        self._parser.finalize()
        if not self._ended:
            raise InvalidInput(
                "the multipart/form-data body ended before its closing boundary",
                code="invalid_form",
            )
        if self.file_content_type is None:
            raise InvalidInput(
                "the form has no file part: send the content in a part with a filename",
                code="invalid_form",
            )

    def content_type(self) -> str:
        return self.file_content_type or DEFAULT_CONTENT_TYPE

    def cache_control(self) -> str:
        return parse_cache_control(self.fields.get("cacheControl"))

    def user_metadata(self) -> dict[str, Any] | None:
        return parse_user_metadata(self.fields.get("metadata"))

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False
        self._field_name = None
        self._field = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        if b"filename" in options:
            if self.file_content_type is not None:
                raise InvalidInput("send one file per upload request", code="invalid_form")
            content_type = self._headers.get(b"content-type", b"").decode("latin-1")
            self.file_content_type = content_type or DEFAULT_CONTENT_TYPE
            self._in_file = True
            return
        if len(self.fields) >= MAX_FIELDS:
            raise InvalidInput(f"the form has more than {MAX_FIELDS} fields", code="invalid_form")
        self._field_name = options.get(b"name", b"").decode("utf-8", errors="replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        self._field += data[start:end]
        if len(self._field) > MAX_FIELD_BYTES:
            raise PayloadTooLarge(
                f"the form field {self._field_name!r} is larger than {MAX_FIELD_BYTES} bytes",
                code="field_too_large",
            )

    def _part_end(self) -> None:
        if self._field_name is not None:
            try:
                self.fields[self._field_name] = self._field.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"the form field {self._field_name!r} is not UTF-8 text",
                    code="invalid_form",
                ) from None
        self._in_file = False
        self._field_name = None

    def _end(self) -> None:
        self._ended = True
