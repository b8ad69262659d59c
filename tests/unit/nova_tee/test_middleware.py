"""The paste edit and the request handling of nova-api's filters."""

from __future__ import annotations

import configparser
import io
import json
import os
import sys
from typing import Any

from nova_tee.api import middleware
from tests import base

APP = "osapi_compute_app_v21"


def _nova_paste() -> str:
    path = os.path.join(sys.prefix, "etc", "nova", "api-paste.ini")
    with open(path) as f:
        return f.read()


def _pipelines(text: str) -> dict[str, list[str]]:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return {f"{name}/{option}": value.split()
            for name in parser.sections()
            if name.startswith("composite:openstack_compute_api_v21")
            for option, value in parser.items(name) if option != "use"}


class PasteConfigTest(base.TestCase):

    def test_both_filters_before_the_router_idempotently(self) -> None:
        once = middleware.add_to_paste_config(_nova_paste())
        pipelines = _pipelines(once)
        self.assertIn("composite:openstack_compute_api_v21/keystone",
                      pipelines)
        for name, parts in pipelines.items():
            self.assertEqual(
                [middleware.FILTER_NAME, middleware.SECRET_FILTER_NAME,
                 APP], parts[-3:], name)
        self.assertEqual(once, middleware.add_to_paste_config(once))
        parser = configparser.RawConfigParser()
        parser.read_string(once)
        self.assertEqual(middleware.SECRET_FACTORY, parser.get(
            "filter:tee_secret_check", "paste.filter_factory"))

    def test_a_file_with_only_the_first_filter_gets_the_second(
            self) -> None:
        text = _nova_paste().replace(
            f"keystonecontext {APP}",
            f"keystonecontext {middleware.FILTER_NAME} {APP}")
        self.assertIn(middleware.FILTER_NAME, text)
        pipelines = _pipelines(middleware.add_to_paste_config(text))
        for name, parts in pipelines.items():
            self.assertEqual(1, parts.count(middleware.FILTER_NAME), name)
            self.assertEqual(1, parts.count(middleware.SECRET_FILTER_NAME),
                             name)


class SecretCheckPassThroughTest(base.TestCase):
    """Requests that name no tee_secret reach Nova with their body."""

    def _call(self, method: str, path: str, body: Any) -> bytes:
        raw = json.dumps(body).encode()
        seen: list[bytes] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            seen.append(environ["wsgi.input"].read())
            return [b"nova"]

        environ = {"REQUEST_METHOD": method, "PATH_INFO": path,
                   "CONTENT_LENGTH": str(len(raw)),
                   "wsgi.input": io.BytesIO(raw), "nova.context": object()}
        out = middleware.TEESecretCheck(app)(environ, lambda *a: None)
        self.assertEqual([b"nova"], list(out))
        self.assertEqual([raw], seen)
        return raw

    def test_no_secret_named(self) -> None:
        self._call("POST", "/v2.1/servers",
                   {"server": {"name": "x", "metadata": {"a": "b"}}})
        self._call("POST", "/v2.1/servers/abc/action",
                   {"rebuild": {"imageRef": "x"}})
        self._call("POST", "/v2.1/servers/abc/action", {"reboot": {}})
        self._call("PUT", "/v2.1/servers/abc",
                   {"server": {"metadata": {"tee_secret": "x"}}})
        # Not a string: Nova's own schema answers.
        self._call("POST", "/v2.1/servers",
                   {"server": {"metadata": {"tee_secret": 5}}})


class DeleteTest(base.TestCase):
    """A delete reaches Nova unchanged; only a success is looked at."""

    def _call(self, method: str, path: str, body: Any,
              status: str) -> list[str]:
        raw = b"" if body is None else json.dumps(body).encode()
        seen: list[bytes] = []
        looked: list[str] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            seen.append(environ["wsgi.input"].read())
            start_response(status, [])
            return [b"nova"]

        environ = {"REQUEST_METHOD": method, "PATH_INFO": path,
                   "CONTENT_LENGTH": str(len(raw)),
                   "wsgi.input": io.BytesIO(raw), "nova.context": object()}
        self.patch(middleware.TEESecretCheck, "_retire_if_gone",
                   classmethod(lambda cls, ctx, server: looked.append(
                       server)))
        answered: list[str] = []
        out = middleware.TEESecretCheck(app)(
            environ, lambda code, headers, *a: answered.append(code))
        self.assertEqual([b"nova"], list(out))
        self.assertEqual([raw], seen)
        self.assertEqual([status], answered)
        return looked

    def test_deletes_that_succeeded_are_looked_at(self) -> None:
        self.assertEqual(["abc"], self._call(
            "DELETE", "/v2.1/servers/abc", None, "204 No Content"))
        self.assertEqual(["abc"], self._call(
            "POST", "/v2.1/p1/servers/abc/action", {"forceDelete": None},
            "202 Accepted"))

    def test_an_error_after_the_delete_leaves_nova_s_answer(self) -> None:
        def boom(cls: Any, ctx: Any, server: str) -> None:
            raise RuntimeError("database gone")

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("204 No Content", [])
            return [b""]

        self.patch(middleware.TEESecretCheck, "_retire_if_gone",
                   classmethod(boom))
        environ = {"REQUEST_METHOD": "DELETE",
                   "PATH_INFO": "/v2.1/servers/abc",
                   "wsgi.input": io.BytesIO(b""), "nova.context": object()}
        answered: list[str] = []
        out = middleware.TEESecretCheck(app)(
            environ, lambda code, headers, *a: answered.append(code))
        self.assertEqual([b""], list(out))
        self.assertEqual(["204 No Content"], answered)

    def test_failed_deletes_and_other_requests_are_not(self) -> None:
        self.assertEqual([], self._call(
            "DELETE", "/v2.1/servers/abc", None, "404 Not Found"))
        self.assertEqual([], self._call(
            "DELETE", "/v2.1/servers/abc", None, "409 Conflict"))
        self.assertEqual([], self._call(
            "POST", "/v2.1/servers/abc/action", {"reboot": {}},
            "202 Accepted"))
        self.assertEqual([], self._call(
            "DELETE", "/v2.1/servers/abc/metadata/k", None,
            "204 No Content"))


class BackendTest(base.TestCase):
    """Only castellan's Barbican backend is asked; decided before loading.

    Nova's ConfKeyManager without a fixed key fails to construct: a server
    create must not become a 500 because of it.
    """

    def test_backends(self) -> None:
        check = middleware.TEESecretCheck._barbican_backend
        self.assertTrue(check("barbican"))
        self.assertTrue(check("castellan.key_manager.barbican_key_manager."
                              "BarbicanKeyManager"))
        self.assertFalse(check("nova.keymgr.conf_key_mgr.ConfKeyManager"))
        self.assertFalse(check("vault"))
        self.assertFalse(check("no.such.Manager"))


class ReadBodyTest(base.TestCase):
    """The body is read for the check and handed to Nova unchanged."""

    BODY = json.dumps({"server": {"metadata": {"tee_secret": "x"}}}
                      ).encode()

    def _env(self, body: bytes, **headers: str) -> dict[str, Any]:
        return {"wsgi.input": io.BytesIO(body), **headers}

    def test_content_length_and_chunked_bodies(self) -> None:
        for env in (self._env(self.BODY, CONTENT_LENGTH=str(len(self.BODY))),
                    self._env(self.BODY, HTTP_TRANSFER_ENCODING="chunked")):
            self.assertEqual(self.BODY, middleware._read_body(env))
            self.assertEqual(self.BODY, env["wsgi.input"].read())
            env["wsgi.input"] = io.BytesIO(self.BODY)
            check = middleware.TEESecretCheck
            self.assertEqual("x", check._named_secret(
                check._request_part(env, "server")))

    def test_what_is_not_read_reaches_nova_untouched(self) -> None:
        for env in (self._env(self.BODY, CONTENT_LENGTH="12x"),
                    self._env(self.BODY)):
            stream = env["wsgi.input"]
            self.assertIsNone(middleware._read_body(env))
            self.assertIs(stream, env["wsgi.input"])
            self.assertEqual(self.BODY, env["wsgi.input"].read())
        big = b"{" + b" " * (middleware._MAX_BODY + 10) + b"}"
        env = self._env(big, HTTP_TRANSFER_ENCODING="chunked")
        self.assertIsNone(middleware._read_body(env))
        self.assertEqual(big, env["wsgi.input"].read())
        env = self._env(big, HTTP_TRANSFER_ENCODING="chunked")
        middleware._read_body(env)
        self.assertEqual(big[:5], env["wsgi.input"].read(5))
        self.assertEqual(big[5:], env["wsgi.input"].read())
