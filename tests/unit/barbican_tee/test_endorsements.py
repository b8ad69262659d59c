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
from typing import Any

from cryptography import x509
from oslo_config import cfg
import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee.api import endorsements
from barbican_tee.attestation import errors
from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs
from barbican_tee.attestation import source_bound
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
        return {"endorsements": [dict(
            {"kind": "tdx_collateral", "collateral": self.collateral,
             "quote": base64.b64encode(self.quote).decode()}, **item)]}

    def _source(self) -> endorsements.DatabaseEndorsementSource:
        conf = cfg.ConfigOpts()
        conf([], project="test")
        source = endorsements.DatabaseEndorsementSource(conf)
        source._store = self.store  # noqa: SLF001
        return source

    def _release(self, collateral: object) -> tdx.TdxClaims:
        """Verify the quote as the release does (the cache as source).

        With the collateral sent: the source's own answers use the clock,
        and GOOD_AT is past.
        """
        from barbican_tee.attestation import tdx_evidence
        conf = cfg.ConfigOpts()
        conf([], project="test")
        verifier = tdx_evidence.TdxQuoteVerifier(conf, (self._source(),))
        evidence = {"quote": base64.b64encode(self.quote).decode(),
                    "collateral": collateral}
        claims: tdx.TdxClaims = verifier.verify(evidence, GOOD_AT).details
        return claims

    def _forged(self, number: int) -> endorsements.Entry:
        """A collateral row with another tcbEvaluationDataNumber.

        Its signature no longer verifies: as a database writer with the
        KEK, or an unverified import, would have put it.
        """
        doc = dict(self.collateral)
        info = json.loads(doc["tcb_info"])
        info["tcbEvaluationDataNumber"] = number
        doc["tcb_info"] = json.dumps(info)
        return self._row(doc, number)

    @staticmethod
    def _row(doc: dict[str, Any], number: int) -> endorsements.Entry:
        """A collateral row for this FMSPC as ``put`` stores (and MACs) it."""
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return endorsements.Entry(
            endorsements._entry_id(  # noqa: SLF001
                "tdx_collateral", text.encode()), "tdx_collateral", "tdx",
            "b0c06f000000", datetime.datetime(2025, 7, 19, tzinfo=UTC),
            str(number), text)

    def test_imported_collateral_verifies_the_quote(self) -> None:
        [entry] = self.importer.verify_bundle(self._bundle(), [], GOOD_AT)
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
        # Deleted: this process keeps what verified (here at a release).
        with self.engine.begin() as conn:
            conn.execute(sa.update(db.ENDORSEMENTS).values(
                imported_by="admin"))
        self.assertEqual("UpToDate",
                         self._release(self.collateral).tcb_status)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(db.ENDORSEMENTS))
        self.assertIsNotNone(self.store.collateral(entry.lookup, GOOD_AT))

    def test_collateral_is_imported_only_verified_with_a_quote(self) -> None:
        # No quote: nothing to verify its signatures with, refused.
        with self.assertRaises(endorsements.EndorsementError) as ctx:
            self.importer.verify_bundle(self._bundle(quote=None), [],
                                        GOOD_AT)
        self.assertEqual("endorsement_quote_required", ctx.exception.code)
        # Forged (a huge tcbEvaluationDataNumber): the quote does not
        # verify with it.
        forged = json.loads(self._forged(10**9).data)
        with self.assertRaises(endorsements.EndorsementError) as ctx:
            self.importer.verify_bundle(self._bundle(collateral=forged), [],
                                        GOOD_AT)
        self.assertEqual("endorsement_untrusted", ctx.exception.code)

    def test_only_verified_collateral_is_remembered(self) -> None:
        # A row whose collateral does not verify, with the highest number:
        # served from its row (and refused by dcap-qvl at release) ...
        self.store.put([self._forged(10**9)], "admin")
        text = self.store.collateral("b0c06f000000", GOOD_AT)
        assert text is not None
        with self.assertRaises(errors.VerificationFailed):
            tdx.verify_quote(self.quote, text, GOOD_AT)
        # ... but never ranked in the process: once the genuine one is
        # imported and the forged row gone, the genuine one is served.
        [entry] = self.importer.verify_bundle(self._bundle(), [], GOOD_AT)
        self.store.put([entry], "admin")
        with self.engine.begin() as conn:
            conn.execute(sa.delete(db.ENDORSEMENTS).where(
                db.ENDORSEMENTS.c.id != entry.id))
        text = self.store.collateral("b0c06f000000", GOOD_AT)
        assert text is not None
        self.assertEqual("UpToDate",
                         tdx.verify_quote(self.quote, text,
                                          GOOD_AT).tcb_status)

    def test_older_collateral_in_the_evidence_is_refused(self) -> None:
        # Positive control: the cache holds this very collateral (17).
        [entry] = self.importer.verify_bundle(self._bundle(), [], GOOD_AT)
        self.store.put([entry], "admin")
        self.assertEqual("UpToDate",
                         self._release(self.collateral).tcb_status)
        self.assertEqual(17, self._source().tdx_collateral_number(
            self.quote))
        # Authenticated collateral with a higher number held (after a TCB
        # recovery): the older one sent with the evidence is refused.
        self.store.put([self._forged(18)], "admin")
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self._release(self.collateral)
        self.assertEqual("tdx_collateral_outdated", ctx.exception.code)
        # The process remembers the highest verified number too: rows
        # gone, a verified release's 17 still stands against an older 16
        # (that 16 is only reached after dcap-qvl verified it, so the
        # check is shown on the number directly).
        with self.engine.begin() as conn:
            conn.execute(sa.delete(db.ENDORSEMENTS))
        self.assertEqual(17, self._source().tdx_collateral_number(
            self.quote))

    def _with_crl(self, fixture: str) -> endorsements.Entry:
        """A collateral row for this FMSPC whose PCK CRL is another one.

        The CRL is Intel's own (from ``fixture``'s collateral); the row is
        MACed, as only verified collateral is on import: the order of held
        collateral is read from authenticated rows without verifying them
        again.
        """
        doc = dict(self.collateral)
        doc["pck_crl"] = json.loads(base.read_fixture(
            "dcap-qvl", "sample", fixture))["pck_crl"]
        return self._row(doc, 17)

    def test_an_older_pck_crl_in_the_evidence_is_refused(self) -> None:
        sent = tdx.collateral_crls(self.collateral)["pck_crl"]
        # Positive control: the cache holds this very collateral (the
        # same tcbEvaluationDataNumber and CRLs): accepted.
        [entry] = self.importer.verify_bundle(self._bundle(), [], GOOD_AT)
        self.store.put([entry], "admin")
        self.assertEqual("UpToDate",
                         self._release(self.collateral).tcb_status)
        # Held: the same TCB info with the PCK Platform CA's CRL of
        # 2026-02-18 (Intel's, 57 entries); the one sent is of 2025-06-19
        # (44 entries), still inside its nextUpdate at GOOD_AT. A platform
        # revoked in between must not get through with the older CRL.
        newer = self._with_crl("tdx_quote_outdated_collateral.json")
        self.store.put([newer], "admin")
        held = [snp_certs.crl_order(x509.load_der_x509_crl(der))
                for der in self._source().tdx_collateral_crls(self.quote)]
        self.assertIn(snp_certs.crl_order(sent), held)
        self.assertTrue(any(h > snp_certs.crl_order(sent) for h in held))
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self._release(self.collateral)
        self.assertEqual("tdx_collateral_outdated", ctx.exception.code)
        self.assertIn("PCK Platform CA", ctx.exception.message)
        # The held collateral served to a quote sent without any is the
        # one with the newer CRL (ranked after the same TCB info).
        text = self.store.collateral("b0c06f000000", GOOD_AT)
        assert text is not None
        self.assertEqual(newer.data, text)

    def test_a_newer_crl_of_another_issuer_refuses_nothing(self) -> None:
        # The PCK Processor CA's CRL (SGX collateral) was issued 23
        # minutes after the Platform CA's the quote's collateral has: a
        # CRL is compared with its own issuer's only.
        other = self._with_crl("sgx_quote_collateral.json")
        crls = tdx.collateral_crls(json.loads(other.data))
        mine = tdx.collateral_crls(self.collateral)["pck_crl"]
        self.assertGreater(snp_certs.crl_order(crls["pck_crl"]),
                           snp_certs.crl_order(mine))
        self.assertNotEqual(crls["pck_crl"].issuer, mine.issuer)
        self.store.put([other], "admin")
        self.assertEqual("UpToDate",
                         self._release(self.collateral).tcb_status)

    def test_the_process_remembers_the_newest_crl(self) -> None:
        # Verified in this process (as at a release): collateral with the
        # same TCB info but a newer PCK CRL is remembered over the older,
        # and stands once the rows are gone.
        self.assertEqual([], self._source().tdx_collateral_crls(
            self.quote))
        endorsements.remember_collateral(json.dumps(self.collateral))
        self.assertEqual("UpToDate",
                         self._release(self.collateral).tcb_status)
        endorsements.remember_collateral(
            self._with_crl("tdx_quote_outdated_collateral.json").data)
        # The older one verifying again does not push the newer out.
        endorsements.remember_collateral(json.dumps(self.collateral))
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self._release(self.collateral)
        self.assertEqual("tdx_collateral_outdated", ctx.exception.code)

    def test_a_row_that_does_not_authenticate_is_not_held(self) -> None:
        newer = self._with_crl("tdx_quote_outdated_collateral.json")
        self.store.put([newer], "admin")
        with self.engine.begin() as conn:
            conn.execute(sa.update(db.ENDORSEMENTS).values(mac="00" * 32))
        self.assertEqual([], self._source().tdx_collateral_crls(
            self.quote))

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


class CrlRotationTest(base.TestCase):
    """An older CRL never replaces an ARK-signed newer one (KEK rotated)."""

    def setUp(self) -> None:
        super().setUp()
        from openstack_tee_demo.sp_model import snp as spm
        self.spm = spm
        self.sp = spm.SecureProcessor()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        self.k1 = test_sealed._kek(self.tmp, "k1")
        self.engine = db.make_engine(f"sqlite:///{self.tmp}/t.sqlite")
        self.addCleanup(self.engine.dispose)
        migrations.upgrade(self.engine)
        self.importer = endorsements.Importer(
            snp.SnpVerifier(extra_roots=[self.sp.roots()]))
        endorsements._NEWEST.clear()  # noqa: SLF001
        self.addCleanup(endorsements._NEWEST.clear)  # noqa: SLF001

    def _crl(self, number: int, revoked: list[int]) -> dict[str, object]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives import serialization
        from cryptography import x509
        now = datetime.datetime.now(UTC)
        b = (x509.CertificateRevocationListBuilder()
             .issuer_name(self.sp.ark.subject)
             .last_update(now - datetime.timedelta(hours=10 - number))
             .next_update(now + datetime.timedelta(days=7))
             .add_extension(x509.CRLNumber(number), critical=False))
        for serial in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(now).build())
        der = b.sign(self.sp.ark_key, hashes.SHA384(),
                     rsa_padding=self.spm._PSS).public_bytes(  # noqa: SLF001
            serialization.Encoding.DER)
        return {"endorsements": [{"kind": "crl",
                                  "der": base64.b64encode(der).decode()}]}

    def _store(self, *keks: str) -> endorsements.EndorsementStore:
        return endorsements.EndorsementStore(
            self.engine, keyring.Keyring.from_files(keks[0],
                                                    list(keks[1:])))

    def test_an_older_crl_after_a_kek_rotation_is_refused(self) -> None:
        old, new = self._crl(1, []), self._crl(2, [0x10001])
        endorsements.import_bundle(self._store(self.k1), self.importer,
                                   new, "admin", None)
        # The old KEK retired without rewrap, the process restarted: the
        # newer row no longer authenticates, yet its ARK signature stands.
        endorsements._NEWEST.clear()  # noqa: SLF001
        k2 = test_sealed._kek(self.tmp, "k2")
        store = self._store(k2)
        with self.assertRaises(endorsements.EndorsementError) as ctx:
            endorsements.import_bundle(store, self.importer, old, "svc",
                                       None)
        self.assertEqual("crl_older", ctx.exception.code)
        # Nothing deleted: the release refuses (tampered), never serves
        # the older CRL.
        with self.assertRaises(errors.VerificationFailed) as vctx:
            store.crls("milan")
        self.assertEqual("endorsement_tampered", vctx.exception.code)
        # Positive control: the same CRL again (an administrator's
        # recovery) replaces the row, MACed under the new KEK.
        endorsements.import_bundle(store, self.importer, new, "admin", None)
        [der] = store.crls("milan")
        from cryptography import x509
        self.assertIsNotNone(x509.load_der_x509_crl(
            der).get_revoked_certificate_by_serial_number(0x10001))

    def test_a_row_not_signed_by_the_ark_does_not_rank(self) -> None:
        endorsements.import_bundle(self._store(self.k1), self.importer,
                                   self._crl(1, []), "admin", None)
        # A database writer swaps in bytes that are no ARK-signed CRL.
        with self.engine.begin() as conn:
            conn.execute(sa.update(db.ENDORSEMENTS).values(
                data=base64.b64encode(b"junk").decode()))
        endorsements._NEWEST.clear()  # noqa: SLF001
        store = self._store(self.k1)
        self.assertIsNone(store.newest_crl_order(
            "milan", self.sp.ark.subject.public_bytes(),
            self.importer.verifier.trusted_roots()))
        endorsements.import_bundle(store, self.importer, self._crl(1, []),
                                   "admin", None)

    def test_rewrap_remacs_the_endorsement_rows(self) -> None:
        from oslo_db import options as db_options

        from barbican_tee.cmd import rewrap
        from barbican_tee import conf as tee_conf
        endorsements.import_bundle(self._store(self.k1), self.importer,
                                   self._crl(2, [0x10001]), "admin", None)
        db._STORE_META.create(self.engine, checkfirst=True)  # noqa: SLF001
        k2 = test_sealed._kek(self.tmp, "k2")
        conf = cfg.ConfigOpts()
        db_options.set_defaults(conf)
        tee_conf.register_opts(conf)
        conf([], project="test")
        conf.set_override("connection", f"sqlite:///{self.tmp}/t.sqlite",
                          group="database")
        conf.set_override("kek_file", k2, group="tee_sealed")
        conf.set_override("previous_kek_files", [self.k1],
                          group="tee_sealed")
        done, _, failed = rewrap.rewrap(conf)
        self.assertEqual((1, 0), (done, failed))
        # The old KEK retired: the row authenticates under the new one.
        endorsements._NEWEST.clear()  # noqa: SLF001
        self.assertEqual(1, len(self._store(k2).crls("milan")))


class DatabaseErrorTest(base.TestCase):
    """A database error in the cache is a refusal with a code, not a 500."""

    def test_each_lookup_refuses_with_endorsement_unavailable(self) -> None:
        from barbican_tee.attestation import evidence as evidence_mod
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        ring = keyring.Keyring.from_files(test_sealed._kek(tmp, "k"), [])
        engine = db.make_engine(f"sqlite:///{tmp}/t.sqlite")
        self.addCleanup(engine.dispose)
        migrations.upgrade(engine)
        conf = cfg.ConfigOpts()
        conf([], project="test")
        source = endorsements.DatabaseEndorsementSource(conf)
        source._store = endorsements.EndorsementStore(  # noqa: SLF001
            engine, ring)
        quote = base.read_fixture(*QUOTE)
        # Positive control: an empty cache answers "nothing".
        self.assertEqual([], source.snp_crls("milan"))
        self.assertIsNone(source.snp_endorsement(b"\x01" * 64, 0, "vcek"))
        self.assertIsNone(source.tdx_collateral(quote))
        with engine.begin() as conn:
            conn.execute(sa.text(
                "ALTER TABLE tee_endorsements RENAME TO away"))
        calls = [lambda: source.snp_crls("milan"),
                 lambda: source.snp_endorsement(b"\x01" * 64, 0, "vcek"),
                 lambda: source.tdx_collateral(quote),
                 lambda: source.tdx_collateral_number(quote)]
        for call in calls:
            with self.assertRaises(evidence_mod.SourceUnavailable) as ctx:
                call()
            self.assertEqual("endorsement_unavailable", ctx.exception.code)


class VcekAnswerKeptTest(base.TestCase):
    """Found VCEKs are kept per process (TTL, never past notAfter).

    The database source as the release uses it: behind source_bound's
    bound (its class's bound_policy), on a clock the test moves.
    """

    class _Store:
        def __init__(self, answer: bytes | None) -> None:
            self.answer = answer
            self.vcek_calls = 0
            self.crl_calls = 0
            self.tdx_calls = 0

        def vcek(self, chip_id: bytes, tcb: int,
                 now: datetime.datetime) -> bytes | None:
            self.vcek_calls += 1
            return self.answer

        def crls(self, product: str) -> list[bytes]:
            self.crl_calls += 1
            return []

        def collateral(self, fmspc: str,
                       now: datetime.datetime) -> str | None:
            self.tdx_calls += 1
            return "{}"

        def newest_collateral_number(self, fmspc: str) -> int | None:
            self.tdx_calls += 1
            return 17

    def setUp(self) -> None:
        super().setUp()
        self.now = 0.0

    def _conf(self, ttl: int = 300, **overrides: int) -> cfg.ConfigOpts:
        from barbican_tee.conf import attestation as attestation_conf
        conf = cfg.ConfigOpts()
        attestation_conf.register_opts(conf)
        conf([], project="test")
        conf.set_override("endorsement_cache_ttl", ttl, "tee_attestation")
        for name, value in overrides.items():
            conf.set_override(name, value, "tee_attestation")
        return conf

    def _source(self, answer: bytes | None, ttl: int = 300,
                **overrides: int) -> tuple[source_bound.BoundedSource, Any]:
        conf = self._conf(ttl, **overrides)
        source = endorsements.DatabaseEndorsementSource(conf)
        store = self._Store(answer)
        source._store = store  # type: ignore[assignment]  # noqa: SLF001
        return source_bound.BoundedSource(source, conf,
                                          clock=lambda: self.now), store

    def _pem(self, seconds: float) -> bytes:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives import serialization
        from cryptography import x509
        from cryptography.x509.oid import NameOID
        key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SEV-VCEK")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name)
                .issuer_name(name).public_key(key.public_key())
                .serial_number(1)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(seconds=seconds))
                .sign(key, hashes.SHA384()))
        return cert.public_bytes(serialization.Encoding.PEM)

    def test_the_verifier_bounds_it_with_its_policy(self) -> None:
        conf = self._conf()
        source = endorsements.DatabaseEndorsementSource(conf)
        wrapped = source_bound.bound(source, conf)
        assert isinstance(wrapped, source_bound.BoundedSource)
        self.assertIs(source, wrapped.inner)
        self.assertIs(endorsements.DatabaseEndorsementSource.bound_policy,
                      wrapped.policy)

    def test_found_vceks_are_kept_crls_and_collateral_never(self) -> None:
        pem = self._pem(30 * 86400)
        source, store = self._source(pem)
        quote = base.read_fixture(*QUOTE)
        for _ in range(3):
            self.assertEqual(pem, source.snp_endorsement(b"\x01" * 64, 7,
                                                         "vcek"))
            source.snp_crls("milan")
            self.assertEqual("{}", source.tdx_collateral(quote))
            self.assertEqual(17, source.tdx_collateral_number(quote))
        self.assertEqual(1, store.vcek_calls)
        # CRLs: read on every release (an import refuses at once); TDX
        # collateral and its number too.
        self.assertEqual(3, store.crl_calls)
        self.assertEqual(6, store.tdx_calls)
        # Another TCB is another lookup.
        source.snp_endorsement(b"\x01" * 64, 8, "vcek")
        self.assertEqual(2, store.vcek_calls)
        # Kept for the TTL (notAfter far away), asked again after it.
        self.now = 299.0
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        self.assertEqual(2, store.vcek_calls)
        self.now = 300.0
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        self.assertEqual(3, store.vcek_calls)

    def test_not_found_unreadable_and_ttl_zero_are_not_kept(self) -> None:
        source, store = self._source(None)
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        self.assertEqual(2, store.vcek_calls)
        source, store = self._source(self._pem(30 * 86400), ttl=0)
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        self.assertEqual(2, store.vcek_calls)
        # No notAfter to bound it: answered, not kept.
        source, store = self._source(b"not a certificate")
        for _ in range(2):
            self.assertEqual(b"not a certificate", source.snp_endorsement(
                b"\x01" * 64, 7, "vcek"))
        self.assertEqual(2, store.vcek_calls)

    def test_never_kept_past_not_after(self) -> None:
        # notAfter in 100 s, inside the 300 s TTL: notAfter bounds it.
        source, store = self._source(self._pem(100))
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        self.now = 90.0
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        self.assertEqual(1, store.vcek_calls)  # positive control
        self.now = 101.0
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        self.assertEqual(2, store.vcek_calls)
        # A VCEK already past its notAfter is not kept.
        source, store = self._source(self._pem(-86400))
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        source.snp_endorsement(b"\x01" * 64, 7, "vcek")
        self.assertEqual(2, store.vcek_calls)

    def test_no_rate_or_concurrency_limit(self) -> None:
        limits = {"endorsement_source_calls_per_minute": 1,
                  "endorsement_source_concurrency": 1}
        source, store = self._source(None, **limits)
        for chip in range(5):
            self.assertIsNone(source.snp_endorsement(
                bytes([chip]) * 64, 7, "vcek"))
            source.snp_crls("milan")
        self.assertEqual(5, store.vcek_calls)
        self.assertEqual(5, store.crl_calls)
        # Positive control: a source with the default policy is limited
        # by the same options.
        limited = source_bound.BoundedSource(
            source.inner, self._conf(**limits), clock=lambda: self.now,
            policy=source_bound.BoundPolicy())
        limited.snp_endorsement(b"\x01" * 64, 7, "vcek")
        self.assertRaises(source_bound.SourceBusy, limited.snp_endorsement,
                          b"\x02" * 64, 7, "vcek")


class PaddedLookupTest(base.TestCase):
    """Rows the database matches only with trailing spaces are ignored.

    MariaDB's utf8mb4_bin pads ('milan ' = 'milan'); sqlite's RTRIM
    collation does the same, so the table here is made with it.
    """

    def test_padded_rows_are_ignored_and_logged(self) -> None:
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        ring = keyring.Keyring.from_files(test_sealed._kek(tmp, "k"), [])
        engine = db.make_engine(f"sqlite:///{tmp}/t.sqlite")
        self.addCleanup(engine.dispose)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE tee_endorsements (id TEXT PRIMARY KEY, "
                "kind TEXT, product TEXT, lookup TEXT COLLATE RTRIM, "
                "expires_at DATETIME, crl_number TEXT, data TEXT, "
                "imported_at DATETIME, imported_by TEXT, mac_kek TEXT, "
                "mac TEXT)")
            for i, lookup in enumerate(("milan ", "milan")):
                conn.execute(db.ENDORSEMENTS.insert().values(
                    id=str(i), kind="crl", product="milan", lookup=lookup,
                    expires_at=datetime.datetime(2030, 1, 1), data="x",
                    imported_at=datetime.datetime(2025, 1, 1),
                    imported_by="u"))
        store = endorsements.EndorsementStore(engine, ring)
        with self.assertLogs(endorsements.LOG.logger, "ERROR") as logs:
            rows = store._select("crl", ["milan"])  # noqa: SLF001
        self.assertEqual(["1"], [r["id"] for r in rows])
        self.assertIn("1 crl row(s)", "\n".join(logs.output))
        # Positive control: no padded row, nothing logged.
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "DELETE FROM tee_endorsements WHERE id = '0'")
        with self.assertNoLogs(endorsements.LOG.logger, "ERROR"):
            rows = store._select("crl", ["milan"])  # noqa: SLF001
        self.assertEqual(["1"], [r["id"] for r in rows])
