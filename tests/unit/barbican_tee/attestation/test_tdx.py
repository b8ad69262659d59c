"""Intel TDX quote parsing and DCAP verification, on real quotes."""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import struct
from unittest import mock

import dcap_qvl
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from barbican_tee.attestation import errors
from barbican_tee.attestation import tdx
from tests import base

UTC = datetime.UTC

DCAP = ("dcap-qvl", "sample")
SDIST = ("dcap-qvl-sdist-0.7.0", "sample")
TRUSTEE = ("trustee", "deps", "verifier", "test_data")
GO_TDX = ("go-tdx-guest", "testing", "testdata")

GOOD = DCAP + ("tdx_quote",)
GOOD_COLL = DCAP + ("tdx_quote_collateral.json",)
GOOD_AT = datetime.datetime(2025, 7, 1, tzinfo=UTC)  # in [06-19, 07-19]
OUTDATED = DCAP + ("tdx_quote_outdated",)
OUTDATED_COLL = DCAP + ("tdx_quote_outdated_collateral.json",)
OUTDATED_AT = datetime.datetime(2026, 3, 1, tzinfo=UTC)  # [02-18, 03-20]
TD15EX = SDIST + ("tdx_quote_td15ex",)
TD15EX_COLL = SDIST + ("tdx_quote_td15ex_collateral.json",)
TD15EX_AT = datetime.datetime(2026, 10, 20, tzinfo=UTC)  # [10-08, 11-06]
SGX = DCAP + ("sgx_quote",)
SGX_COLL = DCAP + ("sgx_quote_collateral.json",)

# file -> (version, body type, trailing bytes)
PARSE_ONLY = {
    TRUSTEE + ("tdx_quote_4.dat",): (4, 2, 0),
    TRUSTEE + ("tdx_quote_5.dat",): (5, 3, 0),
    TRUSTEE + ("tdx_quote_6.dat",): (4, 2, 70),
    GO_TDX + ("tdx_prod_quote_SPR_E4.dat",): (4, 2, 39),
    GO_TDX + ("quote_v5_sample.dat",): (5, 3, 0),
    GOOD: (4, 2, 70),
    OUTDATED: (5, 3, 0),
    TD15EX: (5, 4, 0),
}

ALL_QUOTES = [base.read_fixture(*p) for p in PARSE_ONLY]


def _fresh(quote: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(quote)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


class TestParse(base.TestCase):

    def test_real_quotes_parse(self):
        for parts, (version, body_type, trailing) in PARSE_ONLY.items():
            with self.subTest(quote=parts[-1]):
                raw = base.read_fixture(*parts)
                quote = tdx.parse_quote(raw)
                self.assertEqual(version, quote.version)
                self.assertEqual(body_type, quote.body_type)
                self.assertEqual(body_type, quote.report.body_type)
                self.assertEqual(0x81, quote.tee_type)
                self.assertEqual(2, quote.att_key_type)
                self.assertEqual(trailing, quote.trailing_length)
                self.assertEqual(6, quote.signature_data
                                 .certification_data_type)
                self.assertIn(b"-----BEGIN CERTIFICATE-----",
                              quote.signature_data.certification_data)
                self.assertEqual(4, len(quote.report.rtmrs))
                self.assertEqual(64, len(quote.report.report_data))
                if body_type == 2:
                    self.assertEqual("1.0", quote.report.version)
                    self.assertIsNone(quote.report.tee_tcb_svn2)
                    self.assertIsNone(quote.report.mr_service_td)
                else:
                    self.assertEqual("1.5", quote.report.version)
                    self.assertEqual(16, len(quote.report.tee_tcb_svn2))
                    self.assertEqual(48, len(quote.report.mr_service_td))

    def test_matches_dcap_qvl_parser(self):
        # dcap-qvl's Rust parser is an independent oracle for every field.
        for parts in PARSE_ONLY:
            with self.subTest(quote=parts[-1]):
                raw = base.read_fixture(*parts)
                ours = tdx.parse_quote(raw)
                theirs = dcap_qvl.parse_quote(raw)
                hdr = theirs.header
                self.assertEqual(hdr.version, ours.version)
                self.assertEqual(hdr.qe_svn, ours.qe_svn)
                self.assertEqual(hdr.pce_svn, ours.pce_svn)
                self.assertEqual(hdr.qe_vendor_id, ours.qe_vendor_id)
                self.assertEqual(hdr.user_data, ours.user_data)
                rep = theirs.report
                mine = ours.report
                for name in ("tee_tcb_svn", "mr_seam", "mr_signer_seam",
                             "seam_attributes", "td_attributes", "xfam",
                             "mr_td", "mr_config_id", "mr_owner",
                             "mr_owner_config", "report_data"):
                    self.assertEqual(getattr(rep, name),
                                     getattr(mine, name), name)
                self.assertEqual((rep.rt_mr0, rep.rt_mr1, rep.rt_mr2,
                                  rep.rt_mr3), mine.rtmrs)
                if mine.tee_tcb_svn2 is not None:
                    self.assertEqual(rep.tee_tcb_svn2, mine.tee_tcb_svn2)
                    self.assertEqual(rep.mr_service_td, mine.mr_service_td)

    def test_td15ex_extension(self):
        quote = tdx.parse_quote(base.read_fixture(*TD15EX))
        rep = dcap_qvl.parse_quote(base.read_fixture(*TD15EX)).report
        self.assertEqual(237, len(quote.report.extension))
        self.assertEqual(rep.vmid, quote.report.extension[0])
        self.assertEqual(rep.td_id, quote.report.extension[1:33])
        self.assertEqual(48 + 6 + 885, quote.signed_length)

    def test_trustee_expected_claims(self):
        expected = json.loads(base.read_fixture(
            *TRUSTEE, "parse_tdx_claims_expected.json"))
        quote = tdx.parse_quote(base.read_fixture(*TRUSTEE,
                                                  "tdx_quote_4.dat"))
        hdr = expected["quote"]["header"]
        self.assertEqual(int.from_bytes(bytes.fromhex(hdr["version"]),
                                        "little"), quote.version)
        self.assertEqual(int.from_bytes(bytes.fromhex(hdr["tee_type"]),
                                        "little"), quote.tee_type)
        self.assertEqual(hdr["vendor_id"], quote.qe_vendor_id.hex())
        self.assertEqual(hdr["user_data"], quote.user_data.hex())
        self.assertEqual(hdr["reserved"],
                         struct.pack("<HH", quote.qe_svn,
                                     quote.pce_svn).hex())
        body = expected["quote"]["body"]
        rep = quote.report
        self.assertEqual(body["mr_td"], rep.mr_td.hex())
        self.assertEqual(body["mr_seam"], rep.mr_seam.hex())
        self.assertEqual(body["mrsigner_seam"], rep.mr_signer_seam.hex())
        self.assertEqual(body["mr_config_id"], rep.mr_config_id.hex())
        self.assertEqual(body["mr_owner"], rep.mr_owner.hex())
        self.assertEqual(body["mr_owner_config"], rep.mr_owner_config.hex())
        self.assertEqual(body["tcb_svn"], rep.tee_tcb_svn.hex())
        self.assertEqual(body["seam_attributes"], rep.seam_attributes.hex())
        self.assertEqual(body["td_attributes"], rep.td_attributes.hex())
        self.assertEqual(body["xfam"], rep.xfam.hex())
        self.assertEqual(body["report_data"], rep.report_data.hex())
        for i in range(4):
            self.assertEqual(body[f"rtmr_{i}"], rep.rtmrs[i].hex())
        attrs = expected["td_attributes"]
        decoded = rep.attributes
        self.assertEqual(attrs["debug"], decoded.debug)
        self.assertEqual(attrs["septve_disable"], decoded.sept_ve_disable)
        self.assertEqual(attrs["protection_keys"], decoded.pks)
        self.assertEqual(attrs["key_locker"], decoded.kl)
        self.assertEqual(attrs["perfmon"], decoded.perfmon)
        self.assertEqual(0, decoded.reserved)

    def test_hex_quote(self):
        raw = tdx.quote_from_hex(base.read_fixture(*DCAP, "tdx-quote.hex"))
        self.assertEqual(5006, len(raw))
        quote = tdx.parse_quote(raw)
        self.assertEqual(4, quote.version)
        self.assertEqual("7ba9e262ce697908", quote.report.mr_td.hex()[:16])
        self.assertEqual(dcap_qvl.parse_quote(raw).report.report_data,
                         quote.report.report_data)
        self.assertEqual(raw, tdx.quote_from_hex(" 0X" + raw.hex() + "\n"))

    def test_bad_hex(self):
        for text in ("0x0g", "abc", b"\xff\xfe", "04 00 0", None):
            with self.subTest(text=text):
                exc = self.assertRaises(errors.InvalidInput,
                                        tdx.quote_from_hex, text)
                self.assertEqual("tdx_quote_hex_invalid", exc.code)

    def test_td_attributes_decode(self):
        attrs = tdx.TdAttributes.decode(
            1 | 1 << 28 | 1 << 29 | 1 << 30 | 1 << 31 | 1 << 63)
        self.assertTrue(all((attrs.debug, attrs.sept_ve_disable,
                             attrs.migratable, attrs.pks, attrs.kl,
                             attrs.perfmon)))
        self.assertEqual(0, attrs.reserved)
        none = tdx.TdAttributes.decode(0)
        self.assertFalse(any((none.debug, none.sept_ve_disable,
                              none.migratable, none.pks, none.kl,
                              none.perfmon)))
        for bit in (1, 7, 8, 27, 32, 62):
            with self.subTest(bit=bit):
                self.assertEqual(1 << bit,
                                 tdx.TdAttributes.decode(1 << bit).reserved)

    def test_frozen(self):
        quote = tdx.parse_quote(ALL_QUOTES[0])
        self.assertRaises(dataclasses.FrozenInstanceError, setattr,
                          quote, "version", 5)
        self.assertRaises(dataclasses.FrozenInstanceError, setattr,
                          quote.report, "mr_td", b"")


class TestParseRefusals(base.TestCase):

    def setUp(self):
        super().setUp()
        self.v4 = base.read_fixture(*TRUSTEE, "tdx_quote_4.dat")
        self.v5 = base.read_fixture(*TRUSTEE, "tdx_quote_5.dat")

    def _refused(self, data, code, cls=errors.InvalidInput):
        exc = self.assertRaises(cls, tdx.parse_quote, data)
        self.assertEqual(code, exc.code)
        return exc

    def test_truncated(self):
        for quote in (self.v4, self.v5):
            # header, v5 body descriptor, body, signature length, data
            for size in (0, 1, 47, 48, 53, 54, 631, 635, 700, 4000,
                         len(quote) - 1):
                with self.subTest(version=quote[0], size=size):
                    self._refused(quote[:size], "tdx_quote_truncated")

    def test_signature_length_beyond_data(self):
        sig_len_at = 48 + 584
        bad = _fresh(self.v4, sig_len_at, "<I", 4301)
        self._refused(bad, "tdx_quote_truncated")
        bad = _fresh(self.v4, sig_len_at, "<I", 0xFFFFFFFF)
        self._refused(bad, "tdx_quote_truncated")

    def test_signature_length_shorter_than_content(self):
        bad = _fresh(self.v4, 48 + 584, "<I", 4299)
        self._refused(bad, "tdx_signature_data_malformed")
        bad = _fresh(self.v4, 48 + 584, "<I", 100)
        self._refused(bad, "tdx_signature_data_malformed")

    def test_certification_data_type(self):
        bad = _fresh(self.v4, 48 + 584 + 4 + 128, "<H", 5)
        self._refused(bad, "tdx_certification_data_type")

    def test_trailing_bytes_tolerated_and_counted(self):
        quote = tdx.parse_quote(self.v4 + b"\x00" * 10 + b"junk")
        self.assertEqual(14, quote.trailing_length)

    def test_version(self):
        for version in (0, 1, 2, 3, 6, 0xFFFF):
            with self.subTest(version=version):
                self._refused(_fresh(self.v4, 0, "<H", version),
                              "tdx_quote_version")

    def test_sgx_quote(self):
        exc = self._refused(base.read_fixture(*SGX), "tdx_quote_is_sgx")
        self.assertIn("SGX", exc.message)
        # a version 5 quote carrying an SGX enclave report body
        self._refused(_fresh(self.v5, 48, "<H", 1), "tdx_quote_is_sgx")

    def test_tee_type(self):
        for tee in (0x80, 0x82, 0x81000000):
            with self.subTest(tee=tee):
                self._refused(_fresh(self.v4, 4, "<I", tee),
                              "tdx_quote_tee_type")

    def test_att_key_type(self):
        for akt in (0, 3, 0xFFFF):
            with self.subTest(akt=akt):
                self._refused(_fresh(self.v4, 2, "<H", akt),
                              "tdx_quote_att_key_type")

    def test_body_type(self):
        for body_type in (0, 5, 0xFFFF):
            with self.subTest(body_type=body_type):
                self._refused(_fresh(self.v5, 48, "<H", body_type),
                              "tdx_quote_body_type")

    def test_body_size(self):
        for size in (0, 584, 647, 649, 885):
            with self.subTest(size=size):
                self._refused(_fresh(self.v5, 50, "<I", size),
                              "tdx_quote_body_size")
        # a TD 1.0 body type with the 1.5 size
        self._refused(_fresh(self.v5, 48, "<H", 2), "tdx_quote_body_size")

    def test_not_bytes(self):
        for value in ("04000200", None, 42, [4, 0]):
            with self.subTest(value=value):
                self._refused(value, "tdx_quote_not_bytes")

    def test_bytearray_accepted(self):
        self.assertEqual(tdx.parse_quote(self.v4),
                         tdx.parse_quote(bytearray(self.v4)))

    def test_too_large(self):
        self._refused(self.v4 + bytes(tdx.MAX_QUOTE_SIZE),
                      "tdx_quote_too_large")


def _verify(quote=GOOD, coll=GOOD_COLL, at=GOOD_AT):
    raw = quote if isinstance(quote, bytes) else base.read_fixture(*quote)
    return tdx.verify_quote(raw, base.read_fixture(*coll), at)


class TestVerify(base.TestCase):

    def test_good_v4_up_to_date(self):
        claims = _verify()
        self.assertEqual("UpToDate", claims.tcb_status)
        self.assertEqual((), claims.advisory_ids)
        self.assertEqual("B0C06F000000", claims.fmspc)
        self.assertEqual(4, claims.quote_version)
        self.assertEqual(0x81, claims.tee_type)
        self.assertEqual(
            "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942"
            "a604a407de03ae6dc5f87f27428b2538873118b7", claims.mr_td.hex())
        self.assertEqual(
            "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ece"
            "e41d7c436489d6c8e4f92f160b7cad34207b00c1", claims.mr_seam.hex())
        self.assertEqual(
            "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c3"
            "04f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c"
            "2b523f20", claims.report_data.hex())
        self.assertEqual("44c0197b", claims.rtmrs[0].hex()[:8])
        self.assertEqual("0084452c", claims.rtmrs[1].hex()[:8])
        self.assertEqual("d833feef", claims.rtmrs[2].hex()[:8])
        self.assertEqual(bytes(48), claims.rtmrs[3])
        self.assertEqual(bytes(48), claims.mr_config_id)
        self.assertEqual(bytes(48), claims.mr_owner)
        self.assertEqual(bytes(48), claims.mr_owner_config)
        self.assertEqual(0x10000000, claims.td_attributes)
        self.assertFalse(claims.debug)
        self.assertTrue(claims.attributes.sept_ve_disable)
        self.assertEqual(0x602E7, claims.xfam)
        self.assertIsNone(claims.mr_service_td)

    def test_collateral_forms(self):
        raw = base.read_fixture(*GOOD)
        text = base.read_fixture(*GOOD_COLL)
        expected = tdx.verify_quote(raw, text, GOOD_AT)
        self.assertEqual(expected, tdx.verify_quote(
            raw, text.decode(), GOOD_AT))
        self.assertEqual(expected, tdx.verify_quote(
            raw, json.loads(text), GOOD_AT))

    def test_td15ex_up_to_date(self):
        claims = _verify(TD15EX, TD15EX_COLL, TD15EX_AT)
        self.assertEqual("UpToDate", claims.tcb_status)
        self.assertEqual((), claims.advisory_ids)
        self.assertEqual(5, claims.quote_version)
        self.assertEqual("B0C06F000000", claims.fmspc)
        self.assertEqual(bytes(48), claims.mr_service_td)
        self.assertEqual("2a674327c50218db", claims.mr_td.hex()[:16])
        self.assertFalse(claims.debug)

    def test_td15ex_every_signed_byte_flip_fails(self):
        raw = base.read_fixture(*TD15EX)
        coll = base.read_fixture(*TD15EX_COLL)
        signed = tdx.parse_quote(raw).signed_length
        self.assertEqual(939, signed)
        for offset in range(signed):
            for mask in (0x01, 0x80):
                bad = bytearray(raw)
                bad[offset] ^= mask
                with self.subTest(offset=offset, mask=mask):
                    self.assertRaises(errors.AttestationError,
                                      tdx.verify_quote, bytes(bad), coll,
                                      TD15EX_AT)

    def test_flipped_report_is_signature_failure(self):
        raw = bytearray(base.read_fixture(*GOOD))
        raw[48 + 136] ^= 1  # first byte of MR_TD
        exc = self.assertRaises(errors.VerificationFailed, _verify,
                                bytes(raw))
        self.assertEqual("tdx_signature_invalid", exc.code)

    def test_flipped_quote_signature(self):
        raw = bytearray(base.read_fixture(*GOOD))
        raw[48 + 584 + 4 + 10] ^= 1
        exc = self.assertRaises(errors.VerificationFailed, _verify,
                                bytes(raw))
        self.assertEqual("tdx_signature_invalid", exc.code)

    def test_flipped_attestation_key(self):
        # The QE report binds the attestation key by hash.
        raw = bytearray(base.read_fixture(*GOOD))
        raw[48 + 584 + 4 + 64 + 10] ^= 1
        exc = self.assertRaises(errors.VerificationFailed, _verify,
                                bytes(raw))
        self.assertEqual("tdx_qe_report_hash_mismatch", exc.code)

    def test_flipped_qe_report(self):
        raw = bytearray(base.read_fixture(*GOOD))
        raw[48 + 584 + 4 + 128 + 6 + 10] ^= 1
        exc = self.assertRaises(errors.VerificationFailed, _verify,
                                bytes(raw))
        self.assertEqual("tdx_qe_report_signature_invalid", exc.code)

    def test_outdated_no_matching_tcb(self):
        exc = self.assertRaises(errors.VerificationFailed, _verify,
                                OUTDATED, OUTDATED_COLL, OUTDATED_AT)
        self.assertEqual("tdx_tcb_no_match", exc.code)
        self.assertIn("No matching TCB level found", exc.message)

    def test_collateral_expired(self):
        for quote, coll, at in (
                (GOOD, GOOD_COLL, datetime.datetime(2025, 8, 1,
                                                    tzinfo=UTC)),
                (TD15EX, TD15EX_COLL, datetime.datetime(2026, 12, 1,
                                                        tzinfo=UTC))):
            with self.subTest(quote=quote[-1]):
                exc = self.assertRaises(errors.VerificationFailed,
                                        _verify, quote, coll, at)
                self.assertEqual("tdx_collateral_expired", exc.code)

    def test_crl_expired_far_future(self):
        at = datetime.datetime(2030, 8, 1, tzinfo=UTC)
        exc = self.assertRaises(errors.VerificationFailed, _verify,
                                GOOD, GOOD_COLL, at)
        self.assertEqual("tdx_collateral_expired", exc.code)

    def test_collateral_not_yet_valid(self):
        at = datetime.datetime(2025, 6, 1, tzinfo=UTC)
        exc = self.assertRaises(errors.VerificationFailed, _verify,
                                GOOD, GOOD_COLL, at)
        self.assertEqual("tdx_collateral_not_yet_valid", exc.code)

    def test_window_edges(self):
        # TCB info of the sample: issued 2025-06-19T10:16:03Z, next
        # update 2025-07-19T10:16:03Z.
        inside = datetime.datetime(2025, 7, 19, 10, 0, tzinfo=UTC)
        self.assertEqual("UpToDate", _verify(at=inside).tcb_status)
        after = datetime.datetime(2025, 7, 19, 10, 30, tzinfo=UTC)
        exc = self.assertRaises(errors.VerificationFailed, _verify,
                                at=after)
        self.assertEqual("tdx_collateral_expired", exc.code)

    def test_sgx_quote_refused(self):
        exc = self.assertRaises(errors.InvalidInput, _verify, SGX,
                                SGX_COLL)
        self.assertEqual("tdx_quote_is_sgx", exc.code)

    def test_wrong_collateral(self):
        exc = self.assertRaises(errors.VerificationFailed, _verify,
                                GOOD, TD15EX_COLL, TD15EX_AT)
        self.assertEqual("tdx_qe_report_signature_invalid", exc.code)

    def test_time_must_be_aware(self):
        naive = datetime.datetime(2025, 7, 1)
        exc = self.assertRaises(errors.InvalidInput, _verify, at=naive)
        self.assertEqual("tdx_verification_time_invalid", exc.code)
        exc = self.assertRaises(errors.InvalidInput, _verify,
                                at=1751328000)
        self.assertEqual("tdx_verification_time_invalid", exc.code)
        param = inspect.signature(tdx.verify_quote).parameters["at"]
        self.assertIs(inspect.Parameter.empty, param.default)

    def test_bad_collateral(self):
        raw = base.read_fixture(*GOOD)
        good = json.loads(base.read_fixture(*GOOD_COLL))
        tcb_info = json.loads(good["tcb_info"])
        del tcb_info["fmspc"]
        cases = {
            "binary": base.read_fixture(*GOOD),
            "not json": "{",
            "list": "[]",
            "missing field": {k: v for k, v in good.items()
                              if k != "pck_crl"},
            "non-string field": dict(good, tcb_info=42),
            "no fmspc": dict(good, tcb_info=json.dumps(tcb_info)),
            "bad hex": dict(good, root_ca_crl="zz"),
            "bad crl": dict(good, pck_crl="00"),
            "bad qe identity": dict(good, qe_identity="{1:2}"),
        }
        for name, coll in cases.items():
            with self.subTest(case=name):
                exc = self.assertRaises(errors.InvalidInput,
                                        tdx.verify_quote, raw, coll,
                                        GOOD_AT)
                self.assertEqual("tdx_collateral_invalid", exc.code)

    def test_cross_check_mismatch(self):
        real = tdx._qvl_verify

        def tampered(quote, coll, now):
            result = real(quote, coll, now)
            report = dict(result.report, mr_td="00" * 48)
            return dataclasses.replace(result, report=report)

        with mock.patch.object(tdx, "_qvl_verify", tampered):
            exc = self.assertRaises(errors.VerificationFailed, _verify)
        self.assertEqual("tdx_report_mismatch", exc.code)
        self.assertIn("mr_td", exc.message)

    def test_cross_check_uses_verified_report(self):
        # The report dcap-qvl verified carries the same fields we parsed.
        raw = base.read_fixture(*TD15EX)
        coll = base.read_fixture(*TD15EX_COLL)
        result = tdx._qvl_verify(raw, coll.decode(),
                                 int(TD15EX_AT.timestamp()))
        parsed = tdx.parse_quote(raw).report
        self.assertEqual(parsed.mr_td.hex(), result.report["mr_td"])
        self.assertEqual(parsed.tee_tcb_svn2.hex(),
                         result.report["tee_tcb_svn2"])
        self.assertEqual(parsed.rtmrs[2].hex(), result.report["rt_mr2"])

    def test_unknown_library_error_is_generic(self):
        with mock.patch.object(tdx.dcap_qvl, "verify",
                               side_effect=RuntimeError("boom")):
            exc = self.assertRaises(errors.VerificationFailed, _verify)
        self.assertEqual("tdx_verification_failed", exc.code)
        self.assertIn("boom", exc.message)

    def test_panic_is_mapped(self):
        class PanicException(BaseException):
            pass

        with mock.patch.object(tdx.dcap_qvl, "verify",
                               side_effect=PanicException("index")):
            exc = self.assertRaises(errors.VerificationFailed, _verify)
        self.assertEqual("tdx_verification_failed", exc.code)

    def test_keyboard_interrupt_not_swallowed(self):
        with mock.patch.object(tdx.dcap_qvl, "verify",
                               side_effect=KeyboardInterrupt):
            self.assertRaises(KeyboardInterrupt, _verify)

    def test_error_map(self):
        cases = {
            "Verification failed: No matching TCB level found":
                (errors.VerificationFailed, "tdx_tcb_no_match"),
            "Verification failed: TCB status is invalid: Revoked":
                (errors.VerificationFailed, "tdx_tcb_status_invalid"),
            "Verification failed: QE Identity expired":
                (errors.VerificationFailed, "tdx_collateral_expired"),
            "Verification failed: Failed to verify certificate chain\n\n"
            "Caused by:\n    CertExpired { time: UnixTime(1) }":
                (errors.VerificationFailed, "tdx_cert_expired"),
            "Verification failed: Failed to verify certificate chain\n\n"
            "Caused by:\n    UnknownIssuer":
                (errors.VerificationFailed, "tdx_cert_chain_invalid"),
            "Verification failed: Fmspc mismatch":
                (errors.VerificationFailed, "tdx_fmspc_mismatch"),
            "Verification failed: Debug mode is enabled":
                (errors.VerificationFailed, "tdx_debug_rejected"),
            "Verification failed: SEPT_VE_DISABLE is not enabled":
                (errors.VerificationFailed, "tdx_td_attributes_rejected"),
            "Verification failed: Signature is invalid for tcb_info in "
            "quote_collateral":
                (errors.VerificationFailed,
                 "tdx_collateral_signature_invalid"),
            "Verification failed: Failed to decode quote":
                (errors.InvalidInput, "tdx_quote_malformed"),
            "Verification failed: something new":
                (errors.VerificationFailed, "tdx_verification_failed"),
        }
        for message, (cls, code) in cases.items():
            with self.subTest(message=message):
                exc = tdx._map_qvl_error(message)
                self.assertIs(cls, type(exc))
                self.assertEqual(code, exc.code)
                self.assertIn(message.removeprefix("Verification failed: "),
                              exc.message)


_QUOTE_INDEX = st.integers(min_value=0, max_value=len(ALL_QUOTES) - 1)


class TestProperties(base.TestCase):

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=6000))
    def test_random_bytes(self, data):
        try:
            tdx.parse_quote(data)
        except errors.AttestationError:
            pass

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([b"\x04\x00\x02\x00\x81\x00\x00\x00",
                            b"\x05\x00\x02\x00\x81\x00\x00\x00"]),
           st.binary(max_size=6000))
    def test_random_bytes_behind_tdx_header(self, prefix, data):
        try:
            tdx.parse_quote(prefix + data)
        except errors.AttestationError:
            pass

    @settings(max_examples=500, deadline=None)
    @given(_QUOTE_INDEX, st.data())
    def test_single_byte_mutation(self, index, data):
        raw = bytearray(ALL_QUOTES[index])
        offset = data.draw(st.integers(0, len(raw) - 1))
        raw[offset] ^= data.draw(st.integers(1, 255))
        try:
            tdx.parse_quote(bytes(raw))
        except errors.AttestationError:
            pass

    @settings(max_examples=300, deadline=None)
    @given(_QUOTE_INDEX, st.data())
    def test_truncation(self, index, data):
        raw = ALL_QUOTES[index]
        quote = tdx.parse_quote(raw)
        end = len(raw) - quote.trailing_length
        size = data.draw(st.integers(0, len(raw)))
        if size < end:
            exc = self.assertRaises(errors.InvalidInput, tdx.parse_quote,
                                    raw[:size])
            self.assertEqual("tdx_quote_truncated", exc.code)
        else:
            self.assertEqual(quote.report,
                             tdx.parse_quote(raw[:size]).report)

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_verify_mutation(self, data):
        raw = bytearray(base.read_fixture(*GOOD))
        coll = base.read_fixture(*GOOD_COLL)
        offset = data.draw(st.integers(0, len(raw) - 1))
        raw[offset] ^= data.draw(st.integers(1, 255))
        try:
            claims = tdx.verify_quote(bytes(raw), coll, GOOD_AT)
        except errors.AttestationError:
            return
        # Only bytes that no signature covers may change without failing.
        self.assertGreaterEqual(offset, tdx.parse_quote(raw).signed_length)
        self.assertEqual(_verify(), claims)
