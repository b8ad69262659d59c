"""The filter's input checks, in-process: payload routes, bodies, the key.

Here rather than in tests/unit: the filter imports oslo.messaging, which
imports eventlet, and the unit tests run Nova's code without it.
"""

from __future__ import annotations

import io
import json
from typing import Any

import barbican.api
from barbican.api import controllers as barbican_controllers
from jwcrypto import jwk
import webob

from barbican_tee.api import filter as tee_filter
from barbican_tee.plugin import store
from tests import base

SID = "0b8e4a5c-3f1d-4e2a-9c7b-6d5e4f3a2b1c"


def _env(body: bytes = b"", chunked: bool = False,
         length: str | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {"wsgi.input": io.BytesIO(body)}
    if chunked:
        env["HTTP_TRANSFER_ENCODING"] = "chunked"
    elif length is not None:
        env["CONTENT_LENGTH"] = length
    elif body:
        env["CONTENT_LENGTH"] = str(len(body))
    return env


class PayloadRouteTest(base.TestCase):

    def _secret(self, path: str, accept: str | None = None) -> str | None:
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": path}
        if accept is not None:
            env["HTTP_ACCEPT"] = accept
        return tee_filter._payload_secret(path, env)

    def test_payload_spellings(self) -> None:
        for tail in ("/payload", "/payload/", "/payload.txt",
                     "/payload.json", "/payload.bin", "/payload.txt/",
                     "//payload", "/payload//", "/payload/.json",
                     "/./payload", "/acl/../payload", "/payload.foo"):
            for accept in (None, "*/*", "application/json"):
                with self.subTest(tail=tail, accept=accept):
                    self.assertEqual(SID, self._secret(
                        f"/v1/secrets/{SID}{tail}", accept))

    def test_index_follows_barbicans_accept_rule(self) -> None:
        for tail in ("", "/", ".json", ".bin", "//", ".txt/"):
            path = f"/v1/secrets/{SID}{tail}"
            for accept in (None, "*/*", "application/json"):
                self.assertIsNone(self._secret(path, accept))
            for accept in ("", "text/plain", "application/octet-stream",
                           "application/json, */*", "*/* "):
                self.assertEqual(SID, self._secret(path, accept))

    def test_same_decision_as_barbican(self) -> None:
        for accept in (None, "", "*/*", "application/json", "text/plain",
                       "application/json;q=1", "garbage"):
            env = {"REQUEST_METHOD": "GET"}
            if accept is not None:
                env["HTTP_ACCEPT"] = accept
            wants_meta = barbican_controllers.is_json_request_accept(
                webob.Request(env))
            self.assertEqual(wants_meta, self._secret(
                f"/v1/secrets/{SID}", accept) is None, accept)

    def test_other_paths(self) -> None:
        for path in ("/v1/secrets", f"/v1/secrets/{SID}/acl",
                     f"/v1/secrets/{SID}/metadata", "/v1/orders",
                     "/v1/secrets/not-a-uuid/payload",
                     f"/v1/containers/{SID}/payload"):
            self.assertIsNone(self._secret(path, "text/plain"), path)
        self.assertEqual(SID, self._secret(
            f"/v1/secrets/{SID.upper()}/payload"))


class BodyTest(base.TestCase):

    def _code(self, env: dict[str, Any]) -> str:
        with self.assertRaises(tee_filter.APIError) as ctx:
            tee_filter.TEEAPIFilter._json(env)
        return ctx.exception.code

    def test_depth(self) -> None:
        body: Any = {"a": 1}
        for _ in range(31):
            body = {"a": body}
        self.assertEqual(32, json.dumps(body).count("{"))
        raw = json.dumps(body).encode()
        self.assertEqual(body, tee_filter.TEEAPIFilter._json(_env(raw)))
        raw = json.dumps({"a": [body]}).encode()
        self.assertEqual("body_too_deep", self._code(_env(raw)))
        self.assertEqual("body_too_deep",
                         self._code(_env(b"[" * 100000 + b"]" * 100000,
                                         chunked=True)))

    def test_numbers_json_does_not_have(self) -> None:
        for raw in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
                    b'{"a": 1e999}', b'{"a": [-1e400]}'):
            with self.subTest(raw=raw):
                self.assertEqual("body_not_json", self._code(_env(raw)))
        # Positive control: large but finite numbers are numbers.
        self.assertEqual({"a": 1e308, "b": 10 ** 400},
                         tee_filter.TEEAPIFilter._json(_env(
                             b'{"a": 1e308, "b": 1' + b"0" * 400 + b"}")))

    def test_lone_surrogates_are_not_text(self) -> None:
        for raw in (rb'{"a": "x\ud800"}', rb'{"a": ["\udfff"]}',
                    rb'{"\ud800": 1}', rb'{"a": {"b": "\udc00y"}}'):
            with self.subTest(raw=raw):
                self.assertEqual("body_not_text", self._code(_env(raw)))
        # A pair is one character outside the BMP: text.
        self.assertEqual({"a": "\U0001f600"},
                         tee_filter.TEEAPIFilter._json(_env(
                             rb'{"a": "\ud83d\ude00"}')))

    def test_chunked_and_lengths(self) -> None:
        raw = json.dumps({"secret_id": SID}).encode()
        self.assertEqual({"secret_id": SID},
                         tee_filter.TEEAPIFilter._json(_env(raw,
                                                            chunked=True)))
        self.assertEqual({}, tee_filter.TEEAPIFilter._json(_env()))
        big = b'"' + b"x" * tee_filter._MAX_BODY + b'"'
        self.assertEqual("body_too_large", self._code(_env(big,
                                                           chunked=True)))
        self.assertEqual("body_too_large", self._code(_env(big)))
        for length in ("-1", "abc", "1e3", "\u00b2"):
            self.assertEqual("body_length_invalid",
                             self._code(_env(raw, length=length)))


class PublicKeyTest(base.TestCase):

    def test_only_points_on_p384(self) -> None:
        good = json.loads(jwk.JWK.generate(kty="EC", crv="P-384").export(
            private_key=False))
        public = tee_filter.TEEAPIFilter._public_key(good)
        self.assertEqual((good["x"], good["y"]), (public.x, public.y))
        zero = "A" * 64
        for bad in (dict(good, y=good["x"]), dict(good, x=zero, y=zero),
                    dict(good, x="AA" + good["x"]),
                    dict(good, x=good["x"][:-2]),
                    dict(good, x=good["x"] + "="),
                    dict(good, x="+" + good["x"][1:]),
                    dict(good, x=None), {"kty": "EC", "crv": "P-384"}):
            with self.assertRaises(tee_filter.APIError) as ctx:
                tee_filter.TEEAPIFilter._public_key(bad)
            self.assertEqual("public_key_invalid", ctx.exception.code)


class SealedSecretErrorTest(base.TestCase):

    def test_is_a_barbican_403(self) -> None:
        exc = store.SealedSecretError("50% sealed", "secret_sealed")
        self.assertEqual("50% sealed", str(exc))
        self.assertEqual("secret_sealed", exc.code)
        status, message = barbican.api.generate_safe_exception_message(
            "Get", exc)
        self.assertEqual(403, status)
        self.assertIn("50% sealed", message)


class ApiPathTest(base.TestCase):
    """The path the filters route on, below Barbican's API root."""

    def test_below_the_v1_mount_whatever_is_in_front(self) -> None:
        for script, info, path in (
                ("/v1", "/tee/challenge", "/v1/tee/challenge"),
                ("/key-manager/v1", "/tee/challenge", "/v1/tee/challenge"),
                ("/proxy/key-manager/v1/", "/secrets/x/payload",
                 "/v1/secrets/x/payload"),
                ("/v1", "", "/v1"),
                ("", "/v1/tee/release", "/v1/tee/release"),
                ("/key-manager", "/v1/tee/release", "/v1/tee/release"),
                ("/key-manager/v10", "/tee/release", "/tee/release"),
                ("/xv1", "/tee/release", "/tee/release")):
            with self.subTest(script=script, info=info):
                self.assertEqual(path, tee_filter.api_path(
                    {"SCRIPT_NAME": script, "PATH_INFO": info}))
