"""The endorsement cache's TDX side, with Intel's real collateral.

No TDX model signs quotes, and every real collateral of the fixtures is
past its nextUpdate today, so the TDX collateral is imported and used at
a time inside its validity (the verification time is explicit
throughout), on a sqlite database migrated to head.
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import tempfile

from oslo_config import cfg
import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee.api import endorsements
from barbican_tee.attestation import errors
from barbican_tee.attestation import snp
from barbican_tee.attestation import tdx
from barbican_tee import migrations
from barbican_tee.plugin import keyring
from tests import base
from tests.unit.barbican_tee import test_sealed

UTC = datetime.UTC
QUOTE = ("dcap-qvl", "sample", "tdx_quote")
COLLATERAL = ("dcap-qvl", "sample", "tdx_quote_collateral.json")
GOOD_AT = datetime.datetime(2025, 7, 1, tzinfo=UTC)  # in [06-19, 07-19]


class TdxCollateralCacheTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        self.kek_path = test_sealed._kek(tmp, "k")
        self.ring = keyring.Keyring.from_files(self.kek_path, [])
        self.engine = db.make_engine(f"sqlite:///{tmp}/t.sqlite")
        self.addCleanup(self.engine.dispose)
        migrations.upgrade(self.engine)
        self.store = endorsements.EndorsementStore(self.engine, self.ring)
        self.importer = endorsements.Importer(snp.SnpVerifier())
        self.quote = base.read_fixture(*QUOTE)
        self.collateral = json.loads(base.read_fixture(*COLLATERAL))
        endorsements._NEWEST.clear()  # noqa: SLF001
        self.addCleanup(endorsements._NEWEST.clear)  # noqa: SLF001

    def _bundle(self, **item: object) -> dict[str, object]:
        return {"endorsements": [dict({"kind": "tdx_collateral",
                                       "collateral": self.collateral},
                                      **item)]}

    def test_imported_collateral_verifies_the_quote(self) -> None:
        [entry] = self.importer.verify_bundle(
            self._bundle(quote=base64.b64encode(self.quote).decode()), [],
            GOOD_AT)
        self.assertEqual("b0c06f000000", entry.lookup)
        # The quote's own PCK certificate names the same FMSPC.
        self.assertEqual(entry.lookup, endorsements.quote_fmspc(self.quote))
        self.assertEqual([True], self.store.put([entry], "admin"))
        text = self.store.collateral(entry.lookup, GOOD_AT)
        assert text is not None
        claims = tdx.verify_quote(self.quote, text, GOOD_AT)
        self.assertEqual("UpToDate", claims.tcb_status)
        # Past the TCB info's nextUpdate: refused with its code.
        later = datetime.datetime(2025, 8, 1, tzinfo=UTC)
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.store.collateral(entry.lookup, later)
        self.assertEqual("endorsement_expired", ctx.exception.code)
        # Another platform's FMSPC: nothing.
        self.assertIsNone(self.store.collateral("000000000000", GOOD_AT))

    def test_expired_or_foreign_collateral_is_not_imported(self) -> None:
        with self.assertRaises(endorsements.EndorsementError) as ctx:
            self.importer.verify_bundle(
                self._bundle(), [], datetime.datetime.now(UTC))
        self.assertEqual("endorsement_expired", ctx.exception.code)
        # Another quote's collateral does not verify its quote.
        other = base.read_fixture("dcap-qvl", "sample",
                                  "tdx_quote_outdated")
        with self.assertRaises(endorsements.EndorsementError) as ctx:
            self.importer.verify_bundle(
                self._bundle(quote=base64.b64encode(other).decode()), [],
                GOOD_AT)
        self.assertEqual("endorsement_untrusted", ctx.exception.code)

    def test_a_row_changed_or_deleted_in_the_database(self) -> None:
        [entry] = self.importer.verify_bundle(self._bundle(), [], GOOD_AT)
        self.store.put([entry], "admin")
        self.assertIsNotNone(self.store.collateral(entry.lookup, GOOD_AT))
        with self.engine.begin() as conn:
            conn.execute(sa.update(db.ENDORSEMENTS).values(
                imported_by="mallory"))
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.store.collateral(entry.lookup, GOOD_AT)
        self.assertEqual("endorsement_tampered", ctx.exception.code)
        # Deleted: this process keeps what it authenticated.
        with self.engine.begin() as conn:
            conn.execute(sa.delete(db.ENDORSEMENTS))
        self.assertIsNotNone(self.store.collateral(entry.lookup, GOOD_AT))

    def test_the_source_outside_an_api_process_holds_nothing(self) -> None:
        conf = cfg.ConfigOpts()
        conf([], project="test")
        source = endorsements.DatabaseEndorsementSource(conf)
        self.assertIsNone(source.snp_endorsement(b"\x01" * 64, 0, "vcek"))
        self.assertEqual([], source.snp_crls("milan"))
        self.assertIsNone(source.tdx_collateral(self.quote))

    def test_rewrap_macs_the_rows_under_the_new_kek(self) -> None:
        [entry] = self.importer.verify_bundle(self._bundle(), [], GOOD_AT)
        self.store.put([entry], "admin")
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        new = test_sealed._kek(tmp, "new")
        other = test_sealed._kek(tmp, "other")  # not the row's KEK
        # Without the row's KEK it does not authenticate, and rewrap
        # cannot make it (positive control below).
        self.assertEqual(0, endorsements.remac(
            self.engine, keyring.Keyring.from_files(new, [other])))
        self.assertEqual(1, endorsements.remac(
            self.engine, keyring.Keyring.from_files(new, [self.kek_path])))
        endorsements._NEWEST.clear()  # noqa: SLF001
        store = endorsements.EndorsementStore(
            self.engine, keyring.Keyring.from_files(new, []))
        self.assertIsNotNone(store.collateral(entry.lookup, GOOD_AT))
        # And the old keyring alone no longer authenticates it.
        endorsements._NEWEST.clear()  # noqa: SLF001
        with self.assertRaises(errors.VerificationFailed):
            self.store.collateral(entry.lookup, GOOD_AT)
