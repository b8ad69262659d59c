"""SEV-SNP report parsing and verification, on real reports and the model."""

from __future__ import annotations

import base64
import datetime
import json
from unittest import mock
import warnings

from cryptography import x509
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1_modules import rfc5280

from barbican_tee.attestation import errors
from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs
from openstack_tee_demo.sp_model import snp as sp_model
from tests import base

VLEK_TIME = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)

# (report, endorsement cert, cert chain, verification time, expectations)
REAL = {
    "virtee_milan": (
        ("virtee-sev", "tests", "certs_data", "report_milan.hex"),
        ("virtee-sev", "tests", "certs_data", "vcek_milan.der"),
        None, None,
        dict(version=2, product="Milan", signer="vcek", policy=0x30000,
             tcb=(3, 0, 8, 115),
             measurement="7a1e5c266c0108dbc9bb94fa926951320940915d0aafb424"
                         "64bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f")),
    "go_sev_guest_milan": (
        ("go-sev-guest", "verify", "testdata", "attestation.bin"),
        ("go-sev-guest", "verify", "testdata", "vcek.testcer"),
        None, None,
        dict(version=2, product="Milan", signer="vcek",
             tcb=(2, 0, 5, 68), measurement_prefix="b07af962",
             report_data_prefix="0102030405")),
    "trustee_id_block": (
        ("trustee", "deps", "verifier", "test_data", "snp",
         "test-report.bin"),
        ("trustee", "deps", "verifier", "test_data", "snp",
         "test-vcek.der"),
        None, None,
        dict(version=2, product="Milan", signer="vcek", policy=0x3001f,
             guest_svn=4, measurement_prefix="a1f39304",
             id_key_digest_prefix="03562158")),
    "trustee_vlek": (
        ("trustee", "deps", "verifier", "test_data", "snp",
         "test-vlek-report.bin"),
        ("trustee", "deps", "verifier", "test_data", "snp",
         "test-vlek.der"),
        ("trustee", "deps", "verifier", "src", "snp",
         "milan_ask_ark_asvk.pem"),
        VLEK_TIME,
        dict(version=3, product="Milan", signer="vlek", vmpl=1)),
    "trustee_genoa": (
        ("trustee", "derived_genoa_snp_report_from_evidence-genoa.bin",),
        ("trustee", "derived_genoa_vcek_from_evidence-genoa.pem",),
        None, None,
        dict(version=3, product="Genoa", signer="vcek")),
}


def _padded_cert(der: bytes, size: int) -> bytes:
    """``der`` with one more extension, of exactly ``size`` bytes.

    Well-formed (the parser reads it when no cap stops it); its signature
    no longer matches, which only a verification would notice.
    """
    cert, _ = der_decoder.decode(der, asn1Spec=rfc5280.Certificate())
    extensions = cert["tbsCertificate"]["extensions"]
    ext = rfc5280.Extension()
    ext["extnID"] = "1.3.6.1.4.1.3704.9.9"
    extensions.append(ext)
    pad = size - len(der)
    for _ in range(10):
        ext["extnValue"] = b"\x00" * max(pad, 0)
        extensions[len(extensions) - 1] = ext
        out = bytes(der_encoder.encode(cert))
        if len(out) == size:
            return out
        pad += size - len(out)
    raise AssertionError(f"cannot pad to {size} bytes")


def _pem(der: bytes) -> bytes:
    return (b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der)
            + b"-----END CERTIFICATE-----\n")


def _load(name: str) -> tuple[bytes, bytes, list[x509.Certificate] | None,
                              datetime.datetime | None]:
    rep, cert, chain, at = REAL[name][:4]
    return (base.read_fixture(*rep), base.read_fixture(*cert),
            snp_certs.load_ca_certs(base.read_fixture(*chain))
            if chain else None, at)


class RealReportsTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.verifier = snp.SnpVerifier()

    def test_every_real_report_verifies(self) -> None:
        for name, (_, _, _, _, exp) in REAL.items():
            with self.subTest(name=name):
                raw, cert, chain, at = _load(name)
                report = snp.load_report(raw)
                got = self.verifier.verify(report, cert, chain, at)
                self.assertEqual(exp["version"], report.version)
                self.assertEqual(exp["product"], got.product.value)
                self.assertEqual(exp["signer"], got.signer.value)
                if "policy" in exp:
                    self.assertEqual(exp["policy"], report.policy.raw)
                if "tcb" in exp:
                    t = got.reported_tcb
                    self.assertEqual(exp["tcb"], (t.bootloader, t.tee,
                                                  t.snp, t.microcode))
                if "measurement" in exp:
                    self.assertEqual(exp["measurement"],
                                     report.measurement.hex())
                for field in ("measurement", "report_data",
                              "id_key_digest"):
                    prefix = exp.get(field + "_prefix")
                    if prefix:
                        self.assertTrue(
                            getattr(report, field).hex().startswith(prefix))
                if "vmpl" in exp:
                    self.assertEqual(exp["vmpl"], report.vmpl)
                if "guest_svn" in exp:
                    self.assertEqual(exp["guest_svn"], report.guest_svn)

    def test_azure_hcl_report_with_bundled_vcek_chain(self) -> None:
        # Azure's vTPM HCL report carries the SNP report at offset 0x20;
        # its vcek.pem holds the VCEK followed by ASK and ARK.
        d = ("trustee", "deps", "verifier", "test_data", "az-snp-vtpm")
        hcl = base.read_fixture(*d, "hcl-report.bin")
        vcek, chain = snp_certs.split_endorsement_bundle(
            base.read_fixture(*d, "vcek.pem"))
        self.assertEqual(2, len(chain))
        got = self.verifier.verify(hcl[0x20:0x20 + snp.REPORT_SIZE], vcek,
                                   chain)
        self.assertEqual(snp_certs.Product.MILAN, got.product)
        genoa = base.read_fixture(*d, "vcek-genoa.pem")
        self.assertEqual(base.read_fixture(
            "trustee", "derived_genoa_vcek_from_evidence-genoa.pem"), genoa)

    def test_trustee_json_report_rebuilds_and_verifies(self) -> None:
        doc = json.loads(base.read_fixture(
            "trustee", "attestation-service", "tests", "e2e",
            "evidence.json"))
        report = snp.report_from_json(doc["attestation_report"])
        got = self.verifier.verify(report,
                                   bytes(doc["cert_chain"][0]["data"]))
        self.assertEqual(snp_certs.Product.GENOA, got.product)
        self.assertEqual(bytes(doc["attestation_report"]["measurement"]),
                         report.measurement)
        # One field changed in the JSON: the rebuilt report fails to verify.
        doc["attestation_report"]["guest_svn"] = 1
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.verifier.verify(
                snp.report_from_json(doc["attestation_report"]),
                bytes(doc["cert_chain"][0]["data"]))
        self.assertEqual("snp_signature_invalid", ctx.exception.code)
        for bad in ({}, {"version": "x"}, [], None):
            with self.assertRaises(errors.InvalidInput):
                snp.report_from_json(bad)

    def test_vcek_serial_zero_loads_without_deprecation(self) -> None:
        data = base.read_fixture("virtee-sev", "tests", "certs_data",
                                 "vcek_milan.der")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cert = snp_certs.parse_endorsement_cert(data)
        self.assertEqual("Milan-B0", cert.product_name)
        self.assertEqual(64, len(cert.hwid or b""))

    def test_oversized_endorsement_cert_is_refused_before_decoding(
            self) -> None:
        # Padded with extensions to just over the cap: the size alone
        # refuses it (pyasn1 is never asked), with the usual code; the
        # real VCEK next to it parses.
        real = base.read_fixture("virtee-sev", "tests", "certs_data",
                                 "vcek_milan.der")
        self.assertLess(len(real), snp_certs.MAX_ENDORSEMENT_DER)
        self.assertEqual("Milan-B0",
                         snp_certs.parse_endorsement_cert(real).product_name)
        big = _padded_cert(real, snp_certs.MAX_ENDORSEMENT_DER + 1)
        # Without the cap it is an ordinary certificate to the parser.
        with mock.patch.object(snp_certs, "MAX_ENDORSEMENT_DER", 1 << 20):
            self.assertEqual(
                "Milan-B0",
                snp_certs.parse_endorsement_cert(big).product_name)
        self.assertEqual("Milan-B0", snp_certs.parse_endorsement_cert(
            _padded_cert(real, snp_certs.MAX_ENDORSEMENT_DER)).product_name)
        with mock.patch.object(snp_certs.der_decoder, "decode",
                               side_effect=AssertionError("decoded")):
            exc = self.assertRaises(errors.InvalidInput,
                                    snp_certs.parse_endorsement_cert, big)
        self.assertEqual("snp_cert_malformed", exc.code)
        for data in (big, _pem(big)):
            exc = self.assertRaises(errors.AttestationError,
                                    self.verifier.verify_endorsement, data)
            self.assertEqual("snp_cert_malformed", exc.code)

    def test_turin_vcek_chains_and_has_fmc(self) -> None:
        data = base.read_fixture("virtee-sev", "tests", "certs_data",
                                 "vcek_turin.der")
        cert, product = self.verifier.verify_endorsement(data)
        self.assertEqual(snp_certs.Product.TURIN, product)
        self.assertIsNotNone(cert.fmc_spl)
        self.assertEqual(8, len(cert.hwid or b""))

    def test_legacy_and_new_hwid_encodings_parse(self) -> None:
        for name in ("test-vcek-invalid-legacy.der",
                     "test-vcek-invalid-new.der"):
            cert = snp_certs.parse_endorsement_cert(base.read_fixture(
                "trustee", "deps", "verifier", "test_data", "snp", name))
            self.assertEqual(bytes(range(64)), cert.hwid)

    def test_decoded_policy_and_claims(self) -> None:
        raw, cert, _, _ = _load("virtee_milan")
        got = self.verifier.verify(snp.load_report(raw), cert)
        claims = got.claims()
        self.assertEqual(REAL["virtee_milan"][4]["measurement"],
                         claims["measurement"])
        self.assertEqual({"bootloader": 3, "tee": 0, "snp": 8,
                          "microcode": 115}, claims["reported_tcb"])
        self.assertFalse(got.report.policy.debug)
        self.assertTrue(got.report.policy.smt)
        self.assertEqual(0, got.report.policy.abi_major)

    def test_byte_flip_21_fails(self) -> None:
        raw, cert, _, _ = _load("virtee_milan")
        report = bytearray(snp.load_report(raw).raw)
        report[21] ^= 0xFF
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.verifier.verify(bytes(report), cert)
        self.assertEqual("snp_signature_invalid", ctx.exception.code)

    def test_every_single_byte_flip_in_signed_region_refused(self) -> None:
        raw, cert, _, _ = _load("virtee_milan")
        good = snp.load_report(raw).raw
        codes = set()
        for i in range(snp.SIGNED_SIZE):
            bad = bytearray(good)
            bad[i] ^= 0x01
            with self.assertRaises(errors.AttestationError,
                                   msg=f"flip at {i:#x}") as ctx:
                self.verifier.verify(bytes(bad), cert)
            codes.add(ctx.exception.code)
        self.assertIn("snp_signature_invalid", codes)
        self.assertLessEqual(codes, {
            "snp_signature_invalid", "snp_report_version",
            "snp_report_sig_algo", "snp_signer_mismatch",
            "snp_signer_unknown"})

    def test_signature_flip_refused(self) -> None:
        raw, cert, _, _ = _load("virtee_milan")
        bad = bytearray(snp.load_report(raw).raw)
        bad[snp.SIGNED_SIZE + 5] ^= 0x40
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.verifier.verify(bytes(bad), cert)
        self.assertEqual("snp_signature_invalid", ctx.exception.code)

    def test_wrong_vcek_refused(self) -> None:
        raw, _, _, _ = _load("virtee_milan")
        _, other, _, _ = _load("go_sev_guest_milan")
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.verifier.verify(snp.load_report(raw), other)
        self.assertEqual("snp_signature_invalid", ctx.exception.code)

    def test_vlek_report_against_vcek_refused(self) -> None:
        raw, _, _, _ = _load("trustee_vlek")
        _, vcek, _, _ = _load("virtee_milan")
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.verifier.verify(raw, vcek, at=VLEK_TIME)
        self.assertEqual("snp_signer_mismatch", ctx.exception.code)

    def test_expired_vlek_refused_now(self) -> None:
        raw, cert, chain, _ = _load("trustee_vlek")
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.verifier.verify(raw, cert, chain,
                                 datetime.datetime(2026, 1, 1,
                                                   tzinfo=datetime.UTC))
        self.assertEqual("snp_cert_expired", ctx.exception.code)

    def test_size_and_version_refused(self) -> None:
        raw, _, _, _ = _load("go_sev_guest_milan")
        cases = [(raw[:-1], "snp_report_truncated"),
                 (b"", "snp_report_truncated"),
                 (raw + b"\x00", "snp_report_oversized"),
                 (b"\x01\x00\x00\x00" + raw[4:], "snp_report_version"),
                 (b"\x06\x00\x00\x00" + raw[4:], "snp_report_version")]
        for data, code in cases:
            with self.subTest(code=code, size=len(data)):
                with self.assertRaises(errors.InvalidInput) as ctx:
                    snp.parse_report(data)
                self.assertEqual(code, ctx.exception.code)

    def test_builtin_roots_cover_three_products(self) -> None:
        roots = snp_certs.builtin_roots()
        self.assertEqual(set(snp_certs.Product), set(roots))
        for product, r in roots.items():
            self.assertIsNotNone(r.ask)
            self.assertIsNotNone(r.asvk)
            self.assertEqual(f"ARK-{product.value}",
                             snp_certs.common_name(r.ark))


class ModelReportsTest(base.TestCase):
    """Flows no fixture covers, with the software secure processor."""

    def setUp(self) -> None:
        super().setUp()
        self.sp = sp_model.SecureProcessor()
        self.verifier = snp.SnpVerifier(extra_roots=[self.sp.roots()])

    def test_model_report_verifies_only_when_root_is_configured(self) -> None:
        report = self.sp.report()
        self.verifier.verify(report, self.sp.vcek_der)
        with self.assertRaises(errors.VerificationFailed) as ctx:
            snp.SnpVerifier().verify(report, self.sp.vcek_der)
        self.assertEqual("snp_untrusted_root", ctx.exception.code)

    def test_foreign_root_chain_given_by_caller_is_not_trusted(self) -> None:
        chain = snp_certs.load_ca_certs(self.sp.bundle_pem())
        with self.assertRaises(errors.VerificationFailed) as ctx:
            snp.SnpVerifier().verify(self.sp.report(), self.sp.vcek_der,
                                     chain)
        self.assertEqual("snp_untrusted_root", ctx.exception.code)

    def test_vcek_tcb_must_equal_reported_tcb(self) -> None:
        report = self.sp.report(reported_tcb=snp.TcbVersion(3, 0, 9, 115))
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.verifier.verify(report, self.sp.vcek_der)
        self.assertEqual("snp_tcb_mismatch", ctx.exception.code)

    def test_chip_id_must_equal_hwid(self) -> None:
        other = sp_model.SecureProcessor()
        report = other.report(key=self.sp.vcek_key)
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.verifier.verify(report, self.sp.vcek_der)
        self.assertEqual("snp_chip_mismatch", ctx.exception.code)

    def test_vlek_needs_asvk_chain(self) -> None:
        got = self.verifier.verify(self.sp.report(signer="vlek"),
                                   self.sp.vlek_der)
        self.assertEqual(snp_certs.SignerKind.VLEK, got.signer)

    def test_versions_2_to_5_parse_and_verify(self) -> None:
        for version in (2, 3, 4, 5):
            with self.subTest(version=version):
                got = self.verifier.verify(self.sp.report(version=version),
                                           self.sp.vcek_der)
                self.assertEqual(version, got.report.version)
                self.assertEqual(version >= 5,
                                 got.report.launch_mit_vector is not None)

    def test_turin_tcb_layout(self) -> None:
        sp = sp_model.SecureProcessor(
            "Turin", tcb=snp.TcbVersion(bootloader=1, tee=2, snp=3,
                                        microcode=4, fmc=5))
        verifier = snp.SnpVerifier(extra_roots=[sp.roots()])
        got = verifier.verify(sp.report(), sp.vcek_der)
        self.assertEqual(snp.TcbVersion(1, 2, 3, 4, 5), got.reported_tcb)

    def test_product_mismatch_between_cpuid_and_key(self) -> None:
        # A report that names a Genoa CPU, correctly signed by a Milan VCEK.
        report = self.sp.report(version=3, cpuid=(0x19, 0x11))
        with self.assertRaises(errors.VerificationFailed) as ctx:
            self.verifier.verify(report, self.sp.vcek_der)
        self.assertEqual("snp_product_mismatch", ctx.exception.code)
        # The same with Milan's CPUID verifies.
        self.verifier.verify(self.sp.report(version=3, cpuid=(0x19, 0x01)),
                             self.sp.vcek_der)

    def test_crl_revokes_ask(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives import hashes

        now = datetime.datetime.now(datetime.UTC)
        crl = (x509.CertificateRevocationListBuilder()
               .issuer_name(self.sp.ark.subject)
               .last_update(now)
               .next_update(now + datetime.timedelta(days=1))
               .add_revoked_certificate(
                   x509.RevokedCertificateBuilder()
                   .serial_number(self.sp.ask.serial_number)
                   .revocation_date(now).build())
               .sign(self.sp.ark_key, hashes.SHA384(),
                     rsa_padding=padding.PSS(
                         mgf=padding.MGF1(hashes.SHA384()), salt_length=48)))
        verifier = snp.SnpVerifier(extra_roots=[self.sp.roots()],
                                   crls=[crl])
        with self.assertRaises(errors.VerificationFailed) as ctx:
            verifier.verify(self.sp.report(), self.sp.vcek_der)
        self.assertEqual("snp_cert_revoked", ctx.exception.code)
        # The same CRL does not touch the VLEK's ASVK.
        verifier.verify(self.sp.report(signer="vlek"), self.sp.vlek_der)

    def _crl(self, next_update: datetime.datetime
             ) -> x509.CertificateRevocationList:
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives import hashes

        return (x509.CertificateRevocationListBuilder()
                .issuer_name(self.sp.ark.subject)
                .last_update(next_update - datetime.timedelta(days=7))
                .next_update(next_update)
                .sign(self.sp.ark_key, hashes.SHA384(),
                      rsa_padding=padding.PSS(
                          mgf=padding.MGF1(hashes.SHA384()),
                          salt_length=48)))

    def test_stale_crl_refuses_unless_the_operator_allows_it(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        fresh = snp.SnpVerifier(extra_roots=[self.sp.roots()],
                                crls=[self._crl(now + datetime.timedelta(
                                    days=1))])
        fresh.verify(self.sp.report(), self.sp.vcek_der)
        stale_crl = self._crl(now - datetime.timedelta(hours=1))
        stale = snp.SnpVerifier(extra_roots=[self.sp.roots()],
                                crls=[stale_crl])
        for signer, cert in (("vcek", self.sp.vcek_der),
                             ("vlek", self.sp.vlek_der)):
            with self.subTest(signer=signer):
                with self.assertRaises(errors.VerificationFailed) as ctx:
                    stale.verify(self.sp.report(signer=signer), cert)
                self.assertEqual("snp_crl_expired", ctx.exception.code)
        # Also once the endorsement key is cached: the clock moves on.
        at = now - datetime.timedelta(hours=2)
        fresh_then = snp.SnpVerifier(extra_roots=[self.sp.roots()],
                                     crls=[stale_crl])
        fresh_then.verify(self.sp.report(), self.sp.vcek_der, at=at)
        with self.assertRaises(errors.VerificationFailed) as ctx:
            fresh_then.verify(self.sp.report(), self.sp.vcek_der)
        self.assertEqual("snp_crl_expired", ctx.exception.code)
        snp.SnpVerifier(extra_roots=[self.sp.roots()], crls=[stale_crl],
                        allow_stale_crls=True).verify(self.sp.report(),
                                                      self.sp.vcek_der)


class ProductHintTest(base.TestCase):
    """snp.product_hint: the CPUID fields of a raw report, unparsed."""

    def test_real_reports(self) -> None:
        for name, (rep, *_rest, expect) in REAL.items():
            # Some are hex text (as virtee ships them): the raw bytes.
            raw = snp.load_report(base.read_fixture(*rep)).raw
            want = (snp.Product[expect["product"].upper()]
                    if expect["version"] >= 3 else None)
            self.assertIs(want, snp.product_hint(raw), name)
            self.assertIs(snp.parse_report(raw).product_from_cpuid,
                          snp.product_hint(raw), name)

    def test_model_reports_and_what_is_not_a_report(self) -> None:
        for product in ("Milan", "Genoa", "Turin"):
            sp = sp_model.SecureProcessor(product=product, label="hint")
            self.assertIs(snp.Product[product.upper()],
                          snp.product_hint(sp.report()))
            self.assertIsNone(snp.product_hint(sp.report(version=2)))
            raw = sp.report()
            self.assertIsNone(snp.product_hint(raw[:-1]))
            self.assertIsNone(snp.product_hint(raw + b"\x00"))
            self.assertIsNone(snp.product_hint(
                (snp.MAX_VERSION + 1).to_bytes(4, "little") + raw[4:]))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(min_size=snp.REPORT_SIZE, max_size=snp.REPORT_SIZE))
    def test_agrees_with_the_parser(self, data: bytes) -> None:
        try:
            parsed = snp.parse_report(data).product_from_cpuid
        except errors.AttestationError:
            return
        self.assertIs(parsed, snp.product_hint(data))


class ParserPropertiesTest(base.TestCase):
    """Random input: only our exceptions may come out of the parsers."""

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=2 * snp.REPORT_SIZE + 10))
    def test_parse_report_random_bytes(self, data: bytes) -> None:
        try:
            snp.load_report(data)
        except errors.AttestationError:
            pass

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, snp.REPORT_SIZE - 1), st.integers(1, 255))
    def test_parse_report_mutations(self, index: int, mask: int) -> None:
        raw = base.read_fixture("go-sev-guest", "verify", "testdata",
                                "attestation.bin")
        bad = bytearray(raw)
        bad[index] ^= mask
        try:
            snp.parse_report(bytes(bad))
        except errors.InvalidInput:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2000))
    def test_endorsement_cert_random_bytes(self, data: bytes) -> None:
        try:
            snp_certs.parse_endorsement_cert(data)
        except errors.AttestationError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 1359), st.integers(1, 255))
    def test_endorsement_cert_mutations(self, index: int, mask: int) -> None:
        raw = bytearray(base.read_fixture("virtee-sev", "tests",
                                          "certs_data", "vcek_milan.der"))
        raw[index] ^= mask
        # Every byte is either signed, or the signature, or its algorithm
        # (which must equal the signed copy): no mutation may verify.
        self.assertRaises(errors.AttestationError,
                          snp.SnpVerifier().verify_endorsement, bytes(raw))

    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=3000))
    def test_ca_bundle_random_bytes(self, data: bytes) -> None:
        for parse in (snp_certs.load_ca_certs, snp_certs.roots_from_bundle,
                      snp_certs.load_crl):
            try:
                parse(data)
            except errors.AttestationError:
                pass

    @settings(max_examples=100, deadline=None)
    @given(st.integers(0, 6935), st.integers(1, 255))
    def test_trust_bundle_mutations(self, index: int, mask: int) -> None:
        raw = bytearray(base.read_fixture(
            "trustee", "deps", "verifier", "src", "snp",
            "milan_ask_ark_asvk.pem"))
        raw[index] ^= mask
        try:
            snp_certs.roots_from_bundle(bytes(raw))
        except errors.AttestationError:
            pass


class FromConfTest(base.TestCase):

    def test_extra_roots_and_crl_from_config(self) -> None:
        import os
        import tempfile

        from oslo_config import cfg
        from oslo_config import fixture as cfg_fixture

        sp = sp_model.SecureProcessor()
        conf = self.useFixture(cfg_fixture.Config(cfg.ConfigOpts())).conf
        tmp = tempfile.mkdtemp()
        bundle = os.path.join(tmp, "model.pem")
        with open(bundle, "wb") as f:
            f.write(sp.bundle_pem())
        verifier = snp.SnpVerifier.from_conf(conf)
        self.assertRaises(errors.VerificationFailed, verifier.verify,
                          sp.report(), sp.vcek_der)
        conf.set_override("extra_snp_trust_roots", [bundle],
                          group="tee_attestation")
        snp.SnpVerifier.from_conf(conf).verify(sp.report(), sp.vcek_der)
        conf.set_override("use_builtin_amd_roots", False,
                          group="tee_attestation")
        raw, cert, _, _ = _load("virtee_milan")
        with self.assertRaises(errors.VerificationFailed) as ctx:
            snp.SnpVerifier.from_conf(conf).verify(snp.load_report(raw),
                                                   cert)
        self.assertEqual("snp_untrusted_root", ctx.exception.code)

    def test_tcb_floors_from_config(self) -> None:
        from oslo_config import cfg
        from oslo_config import fixture as cfg_fixture

        conf = self.useFixture(cfg_fixture.Config(cfg.ConfigOpts())).conf
        verifier = snp.SnpVerifier.from_conf(conf)
        milan = verifier.tcb_floors[snp_certs.Product.MILAN]
        # Strict by default: no product without a non-zero floor.
        for product in snp_certs.Product:
            self.assertGreater(
                sum(verifier.tcb_floors[product].as_dict().values()), 0)
        self.assertEqual(snp.TcbVersion(bootloader=3, tee=0, snp=8,
                                        microcode=115), milan)
        # The model's default chip meets it.
        sp = sp_model.SecureProcessor()
        self.assertEqual([], sp.tcb.meets(milan))
        conf.set_override("tcb_floor_genoa", {
            "bootloader": "1", "tee": "0", "snp": "30", "microcode": "2"},
            group="tee_attestation")
        conf.set_override("tcb_floor_turin", {}, group="tee_attestation")
        floors = snp.SnpVerifier.from_conf(conf).tcb_floors
        self.assertEqual(snp.TcbVersion(bootloader=1, tee=0, snp=30,
                                        microcode=2),
                         floors[snp_certs.Product.GENOA])
        self.assertIsNone(floors[snp_certs.Product.TURIN])
        full = {"bootloader": "3", "tee": "0", "snp": "8",
                "microcode": "115"}
        # A field left out would be 0, below the default's: refused.
        for bad in ({"snp": "20"}, dict(full, snp="x"),
                    dict(full, snp="256"), dict(full, cpu="1"),
                    dict(full, fmc="1")):
            conf.set_override("tcb_floor_milan", bad,
                              group="tee_attestation")
            with self.assertRaises(errors.InvalidInput) as ctx:
                snp.SnpVerifier.from_conf(conf)
            self.assertEqual("config_tcb_floor", ctx.exception.code)


class TcbLayoutTest(base.TestCase):

    def test_encode_inverts_decode_per_product(self) -> None:
        tcb = snp.TcbVersion(bootloader=1, tee=2, snp=3, microcode=4)
        turin = snp.TcbVersion(bootloader=1, tee=2, snp=3, microcode=4,
                               fmc=5)
        for product, value in ((snp_certs.Product.MILAN, tcb),
                               (snp_certs.Product.GENOA, tcb),
                               (snp_certs.Product.TURIN, turin)):
            with self.subTest(product=product):
                raw = value.encode(product)
                self.assertEqual(value, snp.TcbVersion.decode(raw, product))
        # Milan/Genoa put SNP in byte 6, Turin in byte 3 (ABI table).
        self.assertEqual(3, tcb.encode(snp_certs.Product.MILAN) >> 48 & 0xFF)
        self.assertEqual(3, turin.encode(snp_certs.Product.TURIN) >> 24
                         & 0xFF)
