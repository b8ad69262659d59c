"""Reading a request body up to a limit (barbican_tee.api.request_body)."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

from barbican_tee.api import request_body
from tests import base

LIMIT = 64


class _Decoded(io.RawIOBase):
    """A server's decoded chunked body: short reads, and a record of them."""

    def __init__(self, body: bytes, piece: int = 7) -> None:
        super().__init__()
        self._body = io.BytesIO(body)
        self._piece = piece
        self.asked: list[int] = []

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self.asked.append(-1 if size is None else size)
        if size is None or size < 0:
            return self._body.read()
        return self._body.read(min(size, self._piece))

    def readline(self, size: int | None = -1) -> bytes:
        return self._body.readline(-1 if size is None else size)

    @property
    def consumed(self) -> int:
        return self._body.tell()


class _Endless(io.RawIOBase):
    """A chunked body that never ends."""

    def __init__(self) -> None:
        super().__init__()
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        assert size is not None and size >= 0, "unbounded read"
        self.consumed += size
        return b"x" * size


class _CutShort(io.RawIOBase):
    """The server's error for a body cut short or a malformed chunk."""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        raise OSError("client closed the connection mid-body")


def _env(stream: Any, **headers: str) -> dict[str, Any]:
    return {"wsgi.input": stream, **headers}


def _chunked(body: bytes) -> dict[str, Any]:
    return _env(_Decoded(body), HTTP_TRANSFER_ENCODING="chunked")


class ContentLengthTest(base.TestCase):

    def test_read_as_declared(self) -> None:
        body = b'{"a": 1}'
        env = _env(io.BytesIO(body), CONTENT_LENGTH=str(len(body)))
        self.assertEqual(body, request_body.read(env, LIMIT))

    def test_at_the_limit_and_one_byte_over(self) -> None:
        body = b"x" * (LIMIT + 1)
        env = _env(io.BytesIO(body), CONTENT_LENGTH=str(LIMIT))
        self.assertEqual(body[:LIMIT], request_body.read(env, LIMIT))
        stream = io.BytesIO(body)
        env = _env(stream, CONTENT_LENGTH=str(LIMIT + 1))
        self.assertRaises(request_body.TooLarge, request_body.read, env,
                          LIMIT, put_back=True)
        # Refused on the header alone: nothing read, nothing replaced.
        self.assertIs(stream, env["wsgi.input"])
        self.assertEqual(0, stream.tell())

    def test_not_a_byte_count(self) -> None:
        for declared in ("12x", "-1", "+5", " 5", "5 ", "0x10", "1e3",
                         "\u0665"):
            stream = io.BytesIO(b"12345")
            env = _env(stream, CONTENT_LENGTH=declared)
            self.assertRaises(request_body.LengthInvalid, request_body.read,
                              env, LIMIT, put_back=True)
            self.assertIs(stream, env["wsgi.input"], declared)
            self.assertEqual(0, stream.tell(), declared)
        # Both are BodyError, which nova-api's check catches as one.
        self.assertTrue(issubclass(request_body.LengthInvalid,
                                   request_body.BodyError))
        self.assertTrue(issubclass(request_body.TooLarge,
                                   request_body.BodyError))

    def test_declared_shorter_than_sent(self) -> None:
        # Never past the declared length: the rest is not this body.
        stream = io.BytesIO(b'{"a": 1}{"b": 2}')
        env = _env(stream, CONTENT_LENGTH="8")
        self.assertEqual(b'{"a": 1}', request_body.read(env, LIMIT,
                                                         put_back=True))
        self.assertEqual(b'{"a": 1}', env["wsgi.input"].read())
        self.assertEqual(8, stream.tell())

    def test_declared_longer_than_sent(self) -> None:
        # A stream that ends early gives what there is; the server's own
        # error for a body cut short reaches the caller.
        env = _env(io.BytesIO(b"abc"), CONTENT_LENGTH="10")
        self.assertEqual(b"abc", request_body.read(env, LIMIT))
        env = _env(_CutShort(), CONTENT_LENGTH="10")
        self.assertRaises(OSError, request_body.read, env, LIMIT)

    def test_declared_length_wins_over_chunked(self) -> None:
        env = _env(io.BytesIO(b"abcdef"), CONTENT_LENGTH="3",
                   HTTP_TRANSFER_ENCODING="chunked")
        self.assertEqual(b"abc", request_body.read(env, LIMIT))


class ChunkedTest(base.TestCase):

    def test_read_to_its_end_in_short_pieces(self) -> None:
        body = bytes(range(50))
        env = _chunked(body)
        self.assertEqual(body, request_body.read(env, LIMIT))
        # Never more asked for than the limit allows.
        self.assertTrue(all(0 < n <= LIMIT + 1
                            for n in env["wsgi.input"].asked))

    def test_transfer_encoding_spellings(self) -> None:
        for value in ("chunked", "Chunked", "gzip, chunked", "CHUNKED"):
            env = _env(_Decoded(b"abc"), HTTP_TRANSFER_ENCODING=value)
            self.assertEqual(b"abc", request_body.read(env, LIMIT), value)
        env = _env(_Decoded(b"abc"), HTTP_TRANSFER_ENCODING="gzip")
        self.assertIsNone(request_body.read(env, LIMIT))

    def test_at_the_limit(self) -> None:
        body = b"y" * LIMIT
        self.assertEqual(body, request_body.read(_chunked(body), LIMIT))

    def test_one_byte_over(self) -> None:
        body = b"y" * LIMIT + b"z"
        env = _chunked(body)
        stream = env["wsgi.input"]
        self.assertRaises(request_body.TooLarge, request_body.read, env,
                          LIMIT)
        self.assertEqual(LIMIT + 1, stream.consumed)
        self.assertIs(stream, env["wsgi.input"])

    def test_over_the_limit_put_back_whole(self) -> None:
        body = b"line one\nline two\n" + b"z" * (3 * LIMIT) + b"\nend\n"
        env = _chunked(body)
        self.assertRaises(request_body.TooLarge, request_body.read, env,
                          LIMIT, put_back=True)
        self.assertEqual(body, env["wsgi.input"].read())
        env = _chunked(body)
        self.assertRaises(request_body.TooLarge, request_body.read, env,
                          LIMIT, put_back=True)
        rest = env["wsgi.input"]
        self.assertEqual(b"line one\n", rest.readline())
        self.assertEqual(b"line", rest.readline(4))
        self.assertEqual(b" two\n", rest.read(5))
        # Across the joint between what was read and the stream (which,
        # as a raw stream may, answers in short pieces).
        got = rest.read(2 * LIMIT)
        self.assertGreater(len(got), LIMIT + 1 - 18)
        while len(got) < 2 * LIMIT:
            got += rest.read(2 * LIMIT - len(got))
        self.assertEqual(body[18:18 + 2 * LIMIT], got)
        self.assertEqual(b"z" * LIMIT + b"\n", rest.readline())
        self.assertEqual(b"end\n", rest.readline())
        self.assertEqual(b"", rest.read())

    def test_an_endless_body_is_not_read_past_the_limit(self) -> None:
        stream = _Endless()
        env = _env(stream, HTTP_TRANSFER_ENCODING="chunked")
        self.assertRaises(request_body.TooLarge, request_body.read, env,
                          LIMIT)
        self.assertEqual(LIMIT + 1, stream.consumed)

    def test_malformed_chunk(self) -> None:
        env = _env(_CutShort(), HTTP_TRANSFER_ENCODING="chunked")
        self.assertRaises(OSError, request_body.read, env, LIMIT)


class EmptyAndAbsentTest(base.TestCase):

    def test_empty_bodies(self) -> None:
        for env in (_env(io.BytesIO(b"ignored"), CONTENT_LENGTH="0"),
                    _chunked(b"")):
            self.assertEqual(b"", request_body.read(env, LIMIT,
                                                    put_back=True))
            self.assertEqual(b"", env["wsgi.input"].read())

    def test_no_body(self) -> None:
        # Neither a length nor chunked (an empty header is no length).
        for env in (_env(io.BytesIO(b"abc")),
                    _env(io.BytesIO(b"abc"), CONTENT_LENGTH="")):
            stream = env["wsgi.input"]
            self.assertIsNone(request_body.read(env, LIMIT, put_back=True))
            self.assertIs(stream, env["wsgi.input"])
            self.assertEqual(b"abc", stream.read())

    def test_put_back_or_not(self) -> None:
        body = b'{"x": "y"}'
        stream = io.BytesIO(body)
        env = _env(stream, CONTENT_LENGTH=str(len(body)))
        request_body.read(env, LIMIT)
        self.assertIs(stream, env["wsgi.input"])
        self.assertEqual(b"", env["wsgi.input"].read())
        env = _env(io.BytesIO(body), CONTENT_LENGTH=str(len(body)))
        request_body.read(env, LIMIT, put_back=True)
        self.assertEqual(body, env["wsgi.input"].read())


class DependencyFreeTest(base.TestCase):
    """nova-api nodes import the module without Barbican installed."""

    def test_imports_nothing_but_the_standard_library(self) -> None:
        code = ("import sys\n"
                "before = set(sys.modules)\n"
                "import barbican_tee.api.request_body\n"
                "new = set(sys.modules) - before\n"
                "ours = {'barbican_tee', 'barbican_tee.api',\n"
                "        'barbican_tee.api.request_body'}\n"
                "std = set(sys.stdlib_module_names)\n"
                "print(sorted(m for m in new - ours\n"
                "             if m.split('.')[0] not in std))\n")
        out = subprocess.run([sys.executable, "-c", code], check=True,
                             capture_output=True, text=True).stdout
        self.assertEqual("[]", out.strip())
