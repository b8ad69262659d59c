"""Read a WSGI request body up to a limit, chunked or not.

Shared by barbican-api's /v1/tee filter (which refuses what it cannot
read) and nova-api's ``tee_secret`` check (which hands the body on to
Nova). Standard library only: nova-api nodes import it without Barbican
installed.

A ``Content-Length`` body is read as declared, never past it. A chunked
body (no ``Content-Length``; the server hands over the decoded body and
ends it) is read to its end, one byte past the limit at most. Any other
request has no body to read.
"""

from __future__ import annotations

import io
import re
from typing import Any


class BodyError(Exception):
    """The body was not read: the caller decides what that means."""


class LengthInvalid(BodyError):
    """``Content-Length`` is not a byte count; nothing was read."""


class TooLarge(BodyError):
    """The body is over the limit."""


class Rest(io.RawIOBase):
    """What was read, then the rest of the original stream."""

    def __init__(self, head: bytes, stream: Any) -> None:
        super().__init__()
        self._head = io.BytesIO(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._head.read(size if size is not None else -1)
        if size is None or size < 0:
            return data + bytes(self._stream.read())
        if len(data) < size:
            data += bytes(self._stream.read(size - len(data)))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self._head.readline(size if size is not None else -1)
        if line.endswith(b"\n") or (size is not None and 0 <= size
                                     <= len(line)):
            return line
        rest = -1 if size is None or size < 0 else size - len(line)
        return line + bytes(self._stream.readline(rest))


def read(environ: dict[str, Any], limit: int, *,
         put_back: bool = False) -> bytes | None:
    """The request body, at most ``limit`` bytes; None if it has none.

    None: neither ``Content-Length`` nor chunked. Raises
    :class:`LengthInvalid` or :class:`TooLarge`; the stream's own errors
    (a body cut short, a malformed chunk) propagate.

    ``put_back``: ``environ["wsgi.input"]`` is replaced so that the next
    reader gets the same bytes: the body read, or, for a chunked body
    over the limit, what was read in front of the rest. Left as it was
    when nothing was read.
    """
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH")
    if declared:
        if not re.fullmatch(r"[0-9]+", declared):
            raise LengthInvalid("Content-Length is not a byte count")
        # (Length first: int() of thousands of digits raises, and costs.)
        if len(declared.lstrip("0")) > len(str(limit)) or (
                int(declared) > limit):
            raise TooLarge("Content-Length over the limit")
        raw = bytes(stream.read(int(declared)))
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = bytes(stream.read(limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        raw = b"".join(chunks)
        if size > limit:
            if put_back:
                environ["wsgi.input"] = Rest(raw, stream)
            raise TooLarge("chunked body over the limit")
    else:
        return None
    if put_back:
        environ["wsgi.input"] = io.BytesIO(raw)
    return raw
