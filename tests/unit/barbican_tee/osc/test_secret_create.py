"""``openstack tee secret create``: what it sends, and what it refuses."""

from __future__ import annotations

import base64
import io
import os
import tempfile
from typing import Any
from unittest import mock

from osc_lib import exceptions

from barbican_tee.osc.v1 import secret as osc_secret
from tests import base


class CreateSecretTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(__import__("shutil").rmtree, self.tmp, True)

    def _file(self, data: bytes) -> str:
        path = os.path.join(self.tmp, "payload")
        with open(path, "wb") as f:
            f.write(data)
        return path

    def _doc(self, *argv: str) -> dict[str, Any]:
        cmd = osc_secret.CreateSecret(mock.Mock(), mock.Mock())
        args = cmd.get_parser("tee secret create").parse_args(list(argv))
        return cmd.document(args)

    def test_binary_file(self) -> None:
        key = os.urandom(32)
        doc = self._doc("--name", "k", "--payload-file", self._file(key),
                        "--secret-type", "symmetric", "--policy", "p")
        self.assertEqual({"name": "k", "secret_type": "symmetric",
                          "policy": "p",
                          "payload": base64.b64encode(key).decode(),
                          "payload_content_type":
                              "application/octet-stream",
                          "payload_content_encoding": "base64"}, doc)

    def test_text_from_stdin(self) -> None:
        stdin = mock.Mock(buffer=io.BytesIO("pässword".encode()))
        with mock.patch("sys.stdin", stdin):
            doc = self._doc("--payload-file", "-",
                            "--payload-content-type", "text/plain")
        self.assertEqual({"payload": "pässword",
                          "payload_content_type": "text/plain"}, doc)

    def test_generate_defaults(self) -> None:
        self.assertEqual({"algorithm": "aes", "bit_length": 256},
                         self._doc("--generate"))
        self.assertEqual({"algorithm": "hmacsha256", "bit_length": 512,
                          "mode": "x"},
                         self._doc("--generate", "--algorithm",
                                   "hmacsha256", "--bit-length", "512",
                                   "--mode", "x"))

    def test_refused_before_sending(self) -> None:
        for argv, text in (
                (("--payload-file", os.devnull), "is empty"),
                (("--payload-file", "/nonexistent/key"), "cannot read"),
                (("--payload-file", self._file(b"\xff\xfe"),
                  "--payload-content-type", "text/plain"), "not UTF-8")):
            with self.subTest(text=text):
                exc = self.assertRaises(exceptions.CommandError,
                                        self._doc, *argv)
                self.assertIn(text, str(exc))

    def test_no_payload_on_the_command_line(self) -> None:
        cmd = osc_secret.CreateSecret(mock.Mock(), mock.Mock())
        parser = cmd.get_parser("tee secret create")
        with mock.patch("sys.stderr", io.StringIO()):
            for argv in (["--payload", "c2VjcmV0"], [],
                         ["--generate", "--payload-file", "f"]):
                with self.subTest(argv=argv):
                    self.assertRaises(SystemExit, parser.parse_args, argv)
