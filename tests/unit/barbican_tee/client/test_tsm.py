"""configfs-tsm against the fake tree driven by the secure-processor model."""

from __future__ import annotations

import os

import fixtures

from barbican_tee.attestation import snp
from barbican_tee.client import snp_certs
from barbican_tee.client import tsm
from openstack_tee_demo.sp_model import configfs
from openstack_tee_demo.sp_model import snp as sp_snp
from tests import base


class TestTSM(base.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sp = sp_snp.SecureProcessor()

    def _fake(self, **kwargs: object) -> configfs.FakeConfigfsTsm:
        return self.useFixture(configfs.FakeConfigfsTsm(self.sp, **kwargs))

    def test_snp_report(self) -> None:
        fake = self._fake()
        data = os.urandom(64)
        report = tsm.get_report(data, root=fake.root)
        self.assertEqual("sev_guest", report.provider)
        self.assertEqual(1, report.generation)
        parsed = snp.parse_report(report.outblob)
        self.assertEqual(data, parsed.report_data)
        assert report.auxblob is not None
        certs = snp_certs.parse_cert_table(report.auxblob)
        self.assertEqual(self.sp.vcek_der, certs["vcek"])
        self.assertEqual({"vcek", "ask", "ark"}, set(certs))
        # The entry directory is gone.
        self.assertEqual([], os.listdir(fake.root))
        self.assertEqual(1, len(fake.removed))

    def test_report_verifies(self) -> None:
        fake = self._fake()
        report = tsm.get_report(b"\x42" * 64, root=fake.root)
        verified = snp.SnpVerifier(extra_roots=[self.sp.roots()]).verify(
            report.outblob, self.sp.vcek_der)
        self.assertEqual(b"\x42" * 64, verified.report.report_data)

    def test_privlevel_counts_as_a_write(self) -> None:
        fake = self._fake()
        report = tsm.get_report(b"\x01" * 64, root=fake.root, privlevel=2)
        self.assertEqual(2, report.generation)

    def test_concurrent_writer_retried_once(self) -> None:
        fake = self._fake(conflicts=1)
        report = tsm.get_report(b"\x02" * 64, root=fake.root)
        self.assertEqual(b"\x02" * 64,
                         snp.parse_report(report.outblob).report_data)
        self.assertEqual(2, len(fake.served))
        self.assertEqual(2, len(fake.removed))

    def test_concurrent_writer_twice(self) -> None:
        fake = self._fake(conflicts=2)
        exc = self.assertRaises(tsm.TSMError, tsm.get_report,
                                b"\x03" * 64, root=fake.root)
        self.assertEqual("tsm_conflict", exc.code)
        self.assertIn("another process", exc.message)
        self.assertEqual([], os.listdir(fake.root))

    def test_missing_report_dir(self) -> None:
        tmp = self.useFixture(fixtures.TempDir()).path
        exc = self.assertRaises(tsm.TSMError, tsm.get_report, b"x",
                                root=os.path.join(tmp, "report"))
        self.assertEqual("tsm_unavailable", exc.code)
        self.assertIn("report directory does not exist", exc.message)
        exc = self.assertRaises(tsm.TSMError, tsm.get_report, b"x",
                                root=os.path.join(tmp, "tsm", "report"))
        self.assertEqual("tsm_unavailable", exc.code)
        self.assertIn("is configfs mounted", exc.message)

    def test_bad_arguments(self) -> None:
        fake = self._fake()
        exc = self.assertRaises(tsm.TSMError, tsm.get_report, b"x" * 65,
                                root=fake.root)
        self.assertEqual("tsm_bad_argument", exc.code)
        exc = self.assertRaises(tsm.TSMError, tsm.get_report, b"x",
                                root=fake.root, privlevel=4)
        self.assertEqual("tsm_bad_argument", exc.code)
        self.assertEqual([], fake.served)

    def test_empty_outblob(self) -> None:
        fake = self._fake(empty_outblob=True)
        exc = self.assertRaises(tsm.TSMError, tsm.get_report, b"x" * 64,
                                root=fake.root, wait=0.2)
        self.assertEqual("tsm_empty_outblob", exc.code)
        self.assertEqual([], os.listdir(fake.root))

    def test_unknown_provider(self) -> None:
        fake = self._fake(provider="arm_cca_guest")
        exc = self.assertRaises(tsm.TSMError, tsm.get_report, b"x" * 64,
                                root=fake.root)
        self.assertEqual("tsm_unknown_provider", exc.code)
        self.assertIn("arm_cca_guest", exc.message)

    def test_tdx_without_auxblob(self) -> None:
        fake = self._fake(provider="tdx_guest", auxblob=b"")
        report = tsm.get_report(b"\x05" * 64, root=fake.root)
        self.assertEqual("tdx_guest", report.provider)
        self.assertIsNone(report.auxblob)
