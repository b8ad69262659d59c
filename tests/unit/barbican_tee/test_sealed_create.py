"""``POST /v1/tee/secrets``'s checks, as Barbican's validators make them.

The route itself (RBAC, quota, the store, binding) runs against a real
barbican-api in tests/functional/barbican/test_sealed_create.py.
"""

from __future__ import annotations

import base64
from typing import Any
from unittest import mock

from barbican.common import config as barbican_config
from barbican.common import utils as barbican_utils
import fixtures
import sqlalchemy as sa
import webob  # type: ignore[import-untyped]

from barbican_tee.api import sealed_create
from tests import base

KEY = base64.b64encode(b"\x07" * 32).decode()
POLICY = "abcdef00-0000-4000-8000-000000000000"
SECRET = "12345678-0000-4000-8000-000000000000"
OCTET = {"payload_content_type": "application/octet-stream",
         "payload_content_encoding": "base64"}


class ParseTest(base.TestCase):

    def _code(self, body: dict[str, Any]) -> tuple[int, str]:
        exc = self.assertRaises(sealed_create.CreateError,
                                sealed_create.parse, body)
        return exc.status, exc.code

    def test_stored(self) -> None:
        new = sealed_create.parse({"payload": KEY, "name": " k ", **OCTET})
        self.assertFalse(new.generate)
        # Barbican's validator normalizes: the name is stripped.
        self.assertEqual("k", new.fields["name"])
        self.assertNotIn(KEY, repr(new))

    def test_generated(self) -> None:
        new = sealed_create.parse({"algorithm": "AES", "bit_length": 192,
                                   "mode": "xts"})
        self.assertTrue(new.generate)
        self.assertEqual("symmetric", new.fields["secret_type"])

    def test_refusals(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({}, "secret_content_missing"),
            ({"payload": None, **OCTET}, "payload_invalid"),
            ({"payload": "", **OCTET}, "payload_invalid"),
            ({"payload": KEY}, "payload_content_type_invalid"),
            ({"payload": KEY, "name": 5, **OCTET}, "name_invalid"),
            ({"payload": KEY, "expiration": "2000-01-01", **OCTET},
             "expiration_invalid"),
            ({"payload": KEY, "transport_key_id": "x", **OCTET},
             "field_unknown"),
            ({"algorithm": "aes", "bit_length": 0}, "bit_length_invalid"),
            ({"algorithm": "aes", "bit_length": 264}, "bit_length_invalid"),
            ({"algorithm": "hmacsha256", "bit_length": 64},
             "bit_length_invalid"),
            ({"algorithm": "des", "bit_length": 64},
             "algorithm_unsupported"),
            ({"algorithm": "aes", "bit_length": 256,
              "secret_type": "private"}, "secret_type_invalid"),
        ]
        for body, code in cases:
            with self.subTest(code=code, body=str(body)[:60]):
                self.assertEqual((400, code), self._code(body))

    def test_too_large(self) -> None:
        self.assertEqual((413, "payload_too_large"), self._code(
            {"payload": "x" * 100_000, "payload_content_type":
             "text/plain"}))


class SecretHrefTest(base.TestCase):
    """The ref is the one Barbican's own POST /v1/secrets would give."""

    def setUp(self) -> None:
        super().setUp()
        conf = barbican_config.CONF
        conf.set_override("host_href", None)
        self.addCleanup(conf.clear_override, "host_href")

    def _environ(self, **extra: str) -> dict[str, Any]:
        environ: dict[str, Any] = webob.Request.blank(
            "/v1/tee/secrets").environ
        environ.update(SCRIPT_NAME=extra.pop("script", "/v1"),
                       PATH_INFO="/tee/secrets", **extra)
        return environ

    def test_like_barbican(self) -> None:
        for extra in ({"HTTP_HOST": "kms.example:9311"},
                      {"HTTP_HOST": "kms.example",
                       "HTTP_X_FORWARDED_PROTO": "https"},
                      {"HTTP_HOST": "lb.example",
                       "script": "/key-manager/v1"}):
            with self.subTest(**extra):
                environ = self._environ(**extra)
                ours = sealed_create.secret_href(environ, "abc")
                with mock.patch("pecan.request", webob.Request(environ)):
                    theirs = barbican_utils.hostname_for_refs(
                        "secrets/abc")
                self.assertEqual(theirs, ours)
        self.assertEqual(
            "https://kms.example/v1/secrets/abc",
            sealed_create.secret_href(self._environ(
                HTTP_HOST="kms.example", HTTP_X_FORWARDED_PROTO="https"),
                "abc"))

    def test_host_href(self) -> None:
        barbican_config.CONF.set_override("host_href",
                                          "https://kms.example:9311/")
        self.assertEqual(
            "https://kms.example:9311/v1/secrets/abc",
            sealed_create.secret_href(self._environ(HTTP_HOST="x"), "abc"))


class CleanupOnFailedBindingTest(base.TestCase):
    """A secret created with ``policy`` whose binding fails is deleted.

    Whatever the failure (a database error too, not only a refusal),
    and a failing deletion never hides the binding's error.
    """

    def setUp(self) -> None:
        super().setUp()
        from barbican_tee.api import filter as filter_mod
        self.filter_mod = filter_mod
        tee = object.__new__(filter_mod.TEEAPIFilter)
        self.tee = tee
        for name, value in (("_barbican_allows_create", True),
                            ("_json", {"policy": POLICY}),
                            ("_context", None), ("_own_policy", {})):
            patcher = mock.patch.object(
                filter_mod.TEEAPIFilter, name, return_value=value)
            patcher.start()
            self.addCleanup(patcher.stop)
        for name, value in (("parse", mock.Mock(generate=True)),
                            ("create", SECRET),
                            ("secret_href", "href")):
            patcher = mock.patch.object(sealed_create, name,
                                        return_value=value)
            patcher.start()
            self.addCleanup(patcher.stop)
        patcher = mock.patch.object(sealed_create, "delete")
        self.delete = patcher.start()
        self.addCleanup(patcher.stop)
        self.env = {"barbican.context": mock.Mock(project_id="p",
                                                  user_id="u")}

    def _fail_binding(self, exc: BaseException) -> BaseException:
        with mock.patch.object(self.filter_mod.TEEAPIFilter, "_bind_policy",
                               side_effect=exc):
            return self.assertRaises(type(exc), self.tee.create_secret,
                                     self.env)

    def test_bound(self) -> None:
        # Positive control: a binding that succeeds deletes nothing.
        with mock.patch.object(self.filter_mod.TEEAPIFilter,
                               "_bind_policy"):
            status, answer = self.tee.create_secret(self.env)
        self.assertEqual((201, POLICY), (status, answer["policy_id"]))
        self.delete.assert_not_called()

    def test_refused_binding(self) -> None:
        error = self.filter_mod.APIError(409, "binding_conflict", "x")
        self.assertIs(error, self._fail_binding(error))
        self.delete.assert_called_once_with(SECRET, "p")

    def test_database_error(self) -> None:
        error = sa.exc.OperationalError("UPDATE", {}, Exception("gone"))
        self.assertIs(error, self._fail_binding(error))
        self.delete.assert_called_once_with(SECRET, "p")

    def test_failed_deletion_does_not_hide_the_error(self) -> None:
        self.delete.side_effect = sa.exc.OperationalError(
            "DELETE", {}, Exception("gone too"))
        logger = self.useFixture(fixtures.FakeLogger())
        error = sa.exc.OperationalError("UPDATE", {}, Exception("gone"))
        self.assertIs(error, self._fail_binding(error))
        self.delete.assert_called_once_with(SECRET, "p")
        self.assertIn(f"sealed secret {SECRET} left unbound",
                      logger.output)
        self.assertNotIn("gone", logger.output)
