"""The line-based paste editors, on the real files of the installed
Barbican and Nova packages: only the intended lines change."""

from __future__ import annotations

import difflib
import os
import sys
import tempfile

from barbican_tee.api import paste
from nova_tee.api import middleware
from tests import base

KEYSTONE = ("pipeline = cors request_id http_proxy_to_wsgi authtoken "
            "context microversion apiapp\n")


def _read(*parts: str) -> str:
    with open(os.path.join(sys.prefix, "etc", *parts), newline="") as f:
        return f.read()


def _changes(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) of a line diff."""
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(keepends=True),
                              after.splitlines(keepends=True)):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


class BarbicanPasteTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.text = _read("barbican", "barbican-api-paste.ini")
        # The file as Barbican 23.0.0 ships it: comments and ':'.
        self.assertIn("/v1: barbican-api-keystone\n", self.text)
        self.assertIn("#Use this pipeline for keystone auth\n", self.text)

    def test_only_the_mounted_pipeline_and_new_sections(self) -> None:
        out = paste.add_to_paste_config(self.text)
        removed, added = _changes(self.text, out)
        self.assertEqual([KEYSTONE], removed)
        line = ("pipeline = tee_peer tee_public cors request_id "
                "http_proxy_to_wsgi authtoken context tee_api microversion "
                "apiapp\n")
        self.assertEqual(line, added[0])
        # Everything else is the input, byte for byte, then whole new
        # sections at the end.
        reverted = out.replace(line, KEYSTONE)
        self.assertEqual(self.text, reverted[:len(self.text)])
        appended = reverted[len(self.text):]
        self.assertEqual(["[filter:tee_peer]", "[filter:tee_public]",
                          "[filter:tee_api]"],
                         [x for x in appended.splitlines()
                          if x.startswith("[")])
        # The unauthenticated, audit and version pipelines are untouched.
        for name in ("barbican_api", "barbican-api-keystone-audit",
                     "barbican_version"):
            self.assertEqual(
                _value(self.text, name), _value(out, name), name)
        self.assertEqual(out, paste.add_to_paste_config(out))

    def test_the_audit_pipeline_when_it_is_mounted(self) -> None:
        text = self.text.replace("/v1: barbican-api-keystone\n",
                                 "/v1: barbican-api-keystone-audit\n")
        out = paste.add_to_paste_config(text)
        removed, _added = _changes(text, out)
        self.assertEqual(1, len(removed))
        self.assertIn(" audit apiapp", removed[0])
        self.assertEqual(
            "tee_peer tee_public cors request_id http_proxy_to_wsgi "
            "authtoken context tee_api microversion audit apiapp",
            _value(out, "barbican-api-keystone-audit"))
        self.assertEqual(_value(text, "barbican-api-keystone"),
                         _value(out, "barbican-api-keystone"))

    def test_devstack_alias_pipeline_is_left_alone(self) -> None:
        # devstack's lib/barbican points barbican_api at the keystone
        # pipeline by name; /v1 still maps barbican-api-keystone.
        text = self.text.replace(
            "pipeline = cors request_id http_proxy_to_wsgi "
            "unauthenticated-context microversion apiapp\n",
            "pipeline = barbican-api-keystone\n")
        self.assertIn("pipeline = barbican-api-keystone\n", text)
        out = paste.add_to_paste_config(text)
        self.assertEqual("barbican-api-keystone",
                         _value(out, "barbican_api"))
        self.assertEqual([KEYSTONE], _changes(text, out)[0])

    def test_a_pipeline_mounted_through_another(self) -> None:
        text = self.text.replace("/v1: barbican-api-keystone\n",
                                 "/v1: alias\n") + (
            "\n[pipeline:alias]\npipeline = barbican-api-keystone\n")
        out = paste.add_to_paste_config(text)
        self.assertEqual([KEYSTONE], _changes(text, out)[0])

    def test_continuation_lines_crlf_and_comments(self) -> None:
        text = ("# top\r\n[composite:main]\r\nuse = egg:Paste#urlmap\r\n"
                "/v1/: api\r\n\r\n[pipeline:api]\r\n"
                "pipeline = cors http_proxy_to_wsgi\r\n"
                "    # a comment inside the value\r\n"
                "    authtoken context\r\n    microversion apiapp\r\n"
                "\r\n[filter:tee_api]\r\n; ours, from before\r\n"
                "paste.filter_factory: old.module:Factory\r\n"
                "    .continued\r\n")
        out = paste.add_to_paste_config(text)
        self.assertEqual(
            "# top\r\n[composite:main]\r\nuse = egg:Paste#urlmap\r\n"
            "/v1/: api\r\n\r\n[pipeline:api]\r\n"
            "pipeline = tee_peer tee_public cors http_proxy_to_wsgi\r\n"
            "    # a comment inside the value\r\n"
            "    authtoken context\r\n"
            "    tee_api microversion apiapp\r\n"
            "\r\n[filter:tee_api]\r\n; ours, from before\r\n"
            "paste.filter_factory: barbican_tee.api.filter:"
            "TEEAPIFilter.factory\r\n"
            "routes = token\r\n",
            out[:out.index("\r\n[filter:tee_peer]")])
        self.assertNotIn("\n", out.replace("\r\n", ""))
        self.assertEqual(out, paste.add_to_paste_config(out))

    def test_the_token_filter_is_known_by_its_factory(self) -> None:
        # An operator's own name for keystonemiddleware's filter: the
        # token-less routes still go in front of it.
        self.assertIn("[filter:authtoken]\n", self.text)
        text = self.text.replace("[filter:authtoken]\n",
                                 "[filter:keystone_authtoken]\n").replace(
            KEYSTONE, KEYSTONE.replace("authtoken", "keystone_authtoken"))
        out = paste.add_to_paste_config(text)
        self.assertIn("tee_peer tee_public cors request_id "
                      "http_proxy_to_wsgi keystone_authtoken context "
                      "tee_api microversion", out)
        self.assertEqual(out, paste.add_to_paste_config(out))

    def test_an_option_set_again_keeps_its_comments(self) -> None:
        text = ("[composite:main]\nuse = egg:Paste#urlmap\n/v1: api\n\n"
                "[pipeline:api]\npipeline = authtoken context apiapp\n\n"
                "[filter:tee_api]\n"
                "paste.filter_factory = barbican_tee.api.filter:"
                "TEEAPIFilter.factory\n"
                "routes =\n# operator note: keep this\n    all\n")
        out = paste.add_to_paste_config(text)
        self.assertIn("[filter:tee_api]\npaste.filter_factory = "
                      "barbican_tee.api.filter:TEEAPIFilter.factory\n"
                      "routes = token\n# operator note: keep this\n", out)
        self.assertEqual(out, paste.add_to_paste_config(out))

    def test_refuses_a_file_it_cannot_place_filters_in(self) -> None:
        text = self.text.replace("/v1: barbican-api-keystone\n",
                                 "/v1: nothing\n")
        self.assertRaises(paste.PasteEditError,
                          paste.add_to_paste_config, text)
        with tempfile.NamedTemporaryFile("w", suffix=".ini",
                                         delete=False) as f:
            f.write(text)
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(1, paste.main([f.name]))
        with open(f.name) as f2:
            self.assertEqual(text, f2.read())

    def test_refuses_tee_peer_after_http_proxy_to_wsgi(self) -> None:
        misplaced = KEYSTONE.replace("http_proxy_to_wsgi",
                                     "http_proxy_to_wsgi tee_peer")
        text = self.text.replace(KEYSTONE, misplaced)
        exc = self.assertRaises(paste.PasteEditError,
                                paste.add_to_paste_config, text)
        self.assertIn("tee_peer after http_proxy_to_wsgi", str(exc))
        self.assertIn("move tee_peer to the front", str(exc))
        # Positive control: in front of it, the same file is accepted,
        # and tee_public goes right after tee_peer.
        placed = KEYSTONE.replace("http_proxy_to_wsgi",
                                  "tee_peer http_proxy_to_wsgi")
        out = paste.add_to_paste_config(self.text.replace(KEYSTONE, placed))
        self.assertEqual(
            "cors request_id tee_peer tee_public http_proxy_to_wsgi "
            "authtoken context tee_api microversion apiapp",
            _value(out, "barbican-api-keystone"))

    def test_refuses_tee_peer_after_tee_public(self) -> None:
        # tee_public would count the client without the connection's
        # address.
        misplaced = KEYSTONE.replace(
            "cors", "tee_public tee_peer cors")
        exc = self.assertRaises(
            paste.PasteEditError, paste.add_to_paste_config,
            self.text.replace(KEYSTONE, misplaced))
        self.assertIn("tee_peer after tee_public, which counts", str(exc))
        # Nor after the context filter while tee_public is to come right
        # after it (the token-less routes would meet the token check).
        misplaced = KEYSTONE.replace("http_proxy_to_wsgi ", "").replace(
            "context", "context tee_peer")
        exc = self.assertRaises(
            paste.PasteEditError, paste.add_to_paste_config,
            self.text.replace(KEYSTONE, misplaced))
        self.assertIn("tee_peer after authtoken, while tee_public",
                      str(exc))

    def test_an_earlier_layout_is_kept_as_it_is(self) -> None:
        # The placement of earlier releases (tee_public right before the
        # token filter) still works: left alone, the edit idempotent.
        earlier = ("pipeline = cors request_id tee_peer http_proxy_to_wsgi "
                   "tee_public authtoken context tee_api microversion "
                   "apiapp\n")
        text = paste.add_to_paste_config(self.text).replace(
            "pipeline = tee_peer tee_public cors request_id "
            "http_proxy_to_wsgi authtoken context tee_api microversion "
            "apiapp\n", earlier)
        self.assertIn(earlier, text)
        self.assertEqual(text, paste.add_to_paste_config(text))
        # Without tee_peer there, it goes to the front.
        out = paste.add_to_paste_config(
            text.replace("tee_peer http_proxy_to_wsgi",
                         "http_proxy_to_wsgi"))
        self.assertEqual(
            "tee_peer cors request_id http_proxy_to_wsgi tee_public "
            "authtoken context tee_api microversion apiapp",
            _value(out, "barbican-api-keystone"))

    def test_main_rewrites_in_place_once(self) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".ini",
                                         delete=False) as f:
            f.write(self.text)
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(0, paste.main([f.name]))
        with open(f.name) as f2:
            once = f2.read()
        self.assertEqual(paste.add_to_paste_config(self.text), once)
        mtime = os.stat(f.name).st_mtime_ns
        self.assertEqual(0, paste.main([f.name]))
        self.assertEqual(mtime, os.stat(f.name).st_mtime_ns)


def _value(text: str, pipeline: str) -> str | None:
    return paste.PasteFile(text).value(f"pipeline:{pipeline}", "pipeline")


class NovaPasteTest(base.TestCase):

    def test_only_the_two_keystone_pipelines_and_new_sections(self) -> None:
        text = _read("nova", "api-paste.ini")
        self.assertIn("/v2.1/+: openstack_compute_api_v21\n", text)
        out = middleware.add_to_paste_config(text)
        removed, added = _changes(text, out)
        self.assertEqual(2, len(removed))
        for line in removed:
            self.assertTrue(line.startswith("keystone = "), line)
            self.assertIn(
                line.replace(" osapi_compute_app_v21",
                             " tee_extra_specs tee_secret_check "
                             "osapi_compute_app_v21"), added)
        reverted = out
        for line in removed:
            reverted = reverted.replace(
                line.replace(" osapi_compute_app_v21",
                             " tee_extra_specs tee_secret_check "
                             "osapi_compute_app_v21"), line)
        self.assertEqual(text, reverted[:len(text)])
        appended = reverted[len(text):]
        self.assertEqual(
            ["[filter:tee_extra_specs]", "[filter:tee_secret_check]"],
            [x for x in appended.splitlines() if x.startswith("[")])
        self.assertEqual(out, middleware.add_to_paste_config(out))
