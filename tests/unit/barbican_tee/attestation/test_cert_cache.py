"""barbican_tee.attestation.cert_cache: parsed once per exact bytes."""

from __future__ import annotations

from unittest import mock

from barbican_tee.attestation import cert_cache
from barbican_tee.attestation import errors
from barbican_tee.attestation import snp_certs
from tests import base

CHAIN = ("trustee", "deps", "verifier", "src", "snp",
         "milan_ask_ark_asvk.pem")


class CertCacheTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        cert_cache._cache.clear()  # noqa: SLF001
        self.addCleanup(cert_cache._cache.clear)  # noqa: SLF001

    def test_same_bytes_parse_once_to_the_same_certificates(self) -> None:
        data = base.read_fixture(*CHAIN)
        with mock.patch.object(snp_certs, "load_ca_certs",
                               wraps=snp_certs.load_ca_certs) as parse:
            first = cert_cache.load_ca_certs(data)
            second = cert_cache.load_ca_certs(data)
            self.assertEqual(1, parse.call_count)
            # Other bytes (one more newline) are parsed anew.
            cert_cache.load_ca_certs(data + b"\n")
            self.assertEqual(2, parse.call_count)
        self.assertEqual(first, second)
        self.assertEqual(snp_certs.load_ca_certs(data), first)
        self.assertEqual(3, len(first))

    def test_bad_bytes_fail_every_time(self) -> None:
        data = base.read_fixture(*CHAIN)
        bad = data.replace(b"MII", b"MIJ", 1)
        for _ in range(2):
            with self.assertRaises(errors.InvalidInput) as ctx:
                cert_cache.load_ca_certs(bad)
            self.assertEqual("snp_cert_malformed", ctx.exception.code)
        self.assertEqual({}, dict(cert_cache._cache))  # noqa: SLF001
