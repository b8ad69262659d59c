"""The SEV-SNP certificate table (GHCB extended-report format)."""

from __future__ import annotations

import struct
import uuid

from cryptography.hazmat.primitives import serialization
import hypothesis
from hypothesis import strategies as st

from barbican_tee.client import snp_certs
from openstack_tee_demo.sp_model import snp as sp_snp
from tests import base

_DER = serialization.Encoding.DER


def _entry(guid: uuid.UUID | bytes, offset: int, length: int) -> bytes:
    raw = guid.bytes if isinstance(guid, uuid.UUID) else guid
    return struct.pack("<16sII", raw, offset, length)


def _fake_der(body: bytes) -> bytes:
    assert len(body) < 0x80
    return b"\x30" + bytes([len(body)]) + body


class TestCertTable(base.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sp = sp_snp.SecureProcessor()

    def test_guid_byte_order_and_layout(self) -> None:
        # RFC 4122 byte order, as AMD's tools and go-sev-guest use.
        self.assertEqual(bytes.fromhex("63da758de6644564adc5f4b93be8accd"),
                         snp_certs.GUID_VCEK.bytes)
        cert = _fake_der(b"abc")
        table = snp_certs.build_cert_table({snp_certs.GUID_VCEK: cert})
        self.assertEqual(snp_certs.GUID_VCEK.bytes, table[:16])
        self.assertEqual((48, len(cert)),
                         struct.unpack("<II", table[16:24]))
        self.assertEqual(b"\x00" * 24, table[24:48])
        self.assertEqual({"vcek": cert}, snp_certs.parse_cert_table(table))

    def test_model_certificates_round_trip(self) -> None:
        certs = {
            snp_certs.GUID_VCEK: self.sp.vcek_der,
            snp_certs.GUID_VLEK: self.sp.vlek_der,
            snp_certs.GUID_ASK: self.sp.ask.public_bytes(_DER),
            snp_certs.GUID_ARK: self.sp.ark.public_bytes(_DER),
        }
        table = snp_certs.build_cert_table(certs)
        # The host pads auxblob to whole pages.
        table += b"\x00" * (-len(table) % 4096)
        parsed = snp_certs.parse_cert_table(table)
        self.assertEqual({"vcek": self.sp.vcek_der,
                          "vlek": self.sp.vlek_der,
                          "ask": certs[snp_certs.GUID_ASK],
                          "ark": certs[snp_certs.GUID_ARK]}, parsed)

    def test_unknown_guid_kept_by_name_and_padding_cut(self) -> None:
        other = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea")
        cert = _fake_der(b"xyz")
        header = 3 * 24
        blob = (_entry(other, header, len(cert) + 5)
                + _entry(snp_certs.GUID_ARK, header + len(cert) + 5, 0)
                + b"\x00" * 24 + cert + b"\x00" * 5)
        self.assertEqual({str(other): cert},
                         snp_certs.parse_cert_table(blob))

    def test_empty_table(self) -> None:
        self.assertEqual({}, snp_certs.parse_cert_table(b"\x00" * 4096))

    def _assert_bad(self, blob: bytes, words: str) -> None:
        exc = self.assertRaises(snp_certs.CertTableError,
                                snp_certs.parse_cert_table, blob)
        self.assertEqual("snp_cert_table_malformed", exc.code)
        self.assertIn(words, exc.message)

    def test_no_terminator(self) -> None:
        self._assert_bad(b"", "truncated")
        self._assert_bad(_entry(snp_certs.GUID_VCEK, 48, 3) + b"\x30\x01a",
                         "no all-zero terminator")

    def test_out_of_bounds(self) -> None:
        blob = _entry(snp_certs.GUID_VCEK, 48, 100) + b"\x00" * 24 + (
            _fake_der(b"a"))
        self._assert_bad(blob, "runs past the end")

    def test_offset_overflow(self) -> None:
        blob = _entry(snp_certs.GUID_VCEK, 0xFFFFFFFF, 0xFFFFFFFF) + (
            b"\x00" * 24)
        self._assert_bad(blob, "runs past the end")

    def test_offset_into_table(self) -> None:
        blob = _entry(snp_certs.GUID_VCEK, 0, 24) + b"\x00" * 24
        self._assert_bad(blob, "into the table")

    def test_duplicate(self) -> None:
        cert = _fake_der(b"a")
        blob = (_entry(snp_certs.GUID_VCEK, 72, 3)
                + _entry(snp_certs.GUID_VCEK, 72, 3) + b"\x00" * 24 + cert)
        self._assert_bad(blob, "appears twice")

    def test_not_der(self) -> None:
        blob = _entry(snp_certs.GUID_ASK, 48, 4) + b"\x00" * 24 + b"junk"
        self._assert_bad(blob, "the ask certificate is not DER")

    def test_der_longer_than_entry(self) -> None:
        blob = _entry(snp_certs.GUID_ARK, 48, 4) + b"\x00" * 24 + (
            b"\x30\x10ab")
        self._assert_bad(blob, "runs past its table entry")

    def test_too_many_entries(self) -> None:
        blob = _entry(uuid.uuid4(), 0, 0) * (snp_certs.MAX_ENTRIES + 1)
        self._assert_bad(blob + b"\x00" * 24, "more than")

    @hypothesis.settings(max_examples=500, deadline=None)
    @hypothesis.given(st.binary(max_size=512))
    def test_random_bytes(self, blob: bytes) -> None:
        try:
            certs = snp_certs.parse_cert_table(blob)
        except snp_certs.CertTableError as exc:
            self.assertTrue(exc.message)
            return
        for der in certs.values():
            self.assertEqual(0x30, der[0])

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(
        st.lists(st.tuples(
            st.sampled_from(sorted(snp_certs.KNOWN_GUIDS, key=str)),
            st.integers(0, 300), st.integers(0, 300)), max_size=5),
        st.binary(max_size=300))
    def test_random_tables(self, entries: list[tuple[uuid.UUID, int, int]],
                           tail: bytes) -> None:
        blob = b"".join(_entry(g, o, n) for g, o, n in entries)
        blob += b"\x00" * 24 + tail
        try:
            certs = snp_certs.parse_cert_table(blob)
        except snp_certs.CertTableError:
            return
        for der in certs.values():
            self.assertLessEqual(len(der), len(blob))
