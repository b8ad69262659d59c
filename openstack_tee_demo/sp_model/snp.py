"""Software model of the AMD secure processor: the SEV-SNP side.

The only stand-in for hardware in this project. It has its own test ARK,
ASK, ASVK (RSA, RSASSA-PSS SHA-384 salt 48 as AMD's KDS uses), a VCEK for
one chip (EC P-384, serial 0, AMD's TCB and hwID extensions) and a VLEK, and
it signs ATTESTATION_REPORT structures laid out as the SNP ABI specifies.
Production code never trusts its ARK unless told to (``extra_roots``).
"""

from __future__ import annotations

import datetime
import functools
import os
import struct

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import NameOID

from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                           "openstack-tee test secure processor"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _der_int(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _der_ia5(value: str) -> bytes:
    body = value.encode("ascii")
    return bytes([0x16, len(body)]) + body


def _ext(oid: str, value: bytes) -> x509.ExtensionType:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)


@functools.cache
def _rsa_key(label: str) -> rsa.RSAPrivateKey:
    # One key per label per test process: RSA generation is the slow part.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class SecureProcessor:
    """One test "chip" of a product, with its own root of trust."""

    def __init__(self, product: str = "Milan", label: str = "model",
                 tcb: snp.TcbVersion | None = None,
                 chip_id: bytes | None = None) -> None:
        self.product = product
        self.tcb = tcb or snp.TcbVersion(bootloader=3, tee=0, snp=8,
                                         microcode=115)
        self.chip_id = chip_id or os.urandom(64)
        self.ark_key = _rsa_key(label + "-ark")
        self.ask_key = _rsa_key(label + "-ask")
        self.asvk_key = _rsa_key(label + "-asvk")
        self.ark = self._ca(f"ARK-{product}", self.ark_key, self.ark_key,
                            f"ARK-{product}", 0x10000)
        self.ask = self._ca(f"SEV-{product}", self.ask_key, self.ark_key,
                            f"ARK-{product}", 0x10001)
        self.asvk = self._ca(f"SEV-VLEK-{product}", self.asvk_key,
                             self.ark_key, f"ARK-{product}", 0x10101)
        self.vcek_key = ec.generate_private_key(ec.SECP384R1())
        self.vlek_key = ec.generate_private_key(ec.SECP384R1())
        self.vcek_der = self.endorsement_cert(self.vcek_key, "SEV-VCEK",
                                              self.ask_key,
                                              f"SEV-{product}", self.tcb,
                                              hwid=self._hwid())
        self.vlek_der = self.endorsement_cert(self.vlek_key, "SEV-VLEK",
                                              self.asvk_key,
                                              f"SEV-VLEK-{product}",
                                              self.tcb, hwid=None)

    def _hwid(self) -> bytes:
        return self.chip_id[:8] if self.product == "Turin" else self.chip_id

    @staticmethod
    def _ca(cn: str, key: rsa.RSAPrivateKey, signer: rsa.RSAPrivateKey,
            issuer_cn: str, serial: int) -> x509.Certificate:
        return (x509.CertificateBuilder()
                .subject_name(_name(cn))
                .issuer_name(_name(issuer_cn))
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(_NOW)
                .not_valid_after(_NOW + datetime.timedelta(days=9000))
                .add_extension(x509.BasicConstraints(ca=True,
                                                     path_length=None),
                               critical=True)
                .sign(signer, hashes.SHA384(), rsa_padding=_PSS))

    def endorsement_cert(self, key: ec.EllipticCurvePrivateKey, cn: str,
                         signer: rsa.RSAPrivateKey, issuer_cn: str,
                         tcb: snp.TcbVersion, hwid: bytes | None,
                         not_after: datetime.datetime | None = None
                         ) -> bytes:
        """A VCEK/VLEK as AMD's KDS issues it (serial 0, AMD extensions).

        cryptography's builder refuses serial 0, so the certificate is
        built with serial 1 and the serial re-encoded before signing the
        TBS with the issuer's key: the same bytes KDS would produce.
        """
        a = "1.3.6.1.4.1.3704.1."
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(cn))
                   .issuer_name(_name(issuer_cn))
                   .public_key(key.public_key())
                   .serial_number(1)
                   .not_valid_before(_NOW)
                   .not_valid_after(not_after or _NOW + datetime.timedelta(
                       days=2555))
                   .add_extension(_ext(a + "1", _der_int(0)), False)
                   .add_extension(_ext(a + "2", _der_ia5(
                       f"{self.product}-B0")), False)
                   .add_extension(_ext(a + "3.1", _der_int(tcb.bootloader)),
                                  False)
                   .add_extension(_ext(a + "3.2", _der_int(tcb.tee)), False)
                   .add_extension(_ext(a + "3.3", _der_int(tcb.snp)), False)
                   .add_extension(_ext(a + "3.8", _der_int(tcb.microcode)),
                                  False))
        if tcb.fmc is not None:
            builder = builder.add_extension(_ext(a + "3.9",
                                                 _der_int(tcb.fmc)), False)
        if hwid is not None:
            builder = builder.add_extension(_ext(a + "4", hwid), False)
        # Sign once to get a well-formed certificate, then rebuild its TBS
        # with serial 0 and sign that TBS again.
        draft = builder.sign(signer, hashes.SHA384(), rsa_padding=_PSS)
        tbs = draft.tbs_certificate_bytes
        serial_one = bytes([0x02, 0x01, 0x01])
        idx = tbs.find(serial_one)
        tbs0 = tbs[:idx] + bytes([0x02, 0x01, 0x00]) + tbs[idx + 3:]
        signature = signer.sign(tbs0, _PSS, hashes.SHA384())
        draft_der = draft.public_bytes(serialization.Encoding.DER)
        alg = _der_tlv_bytes(draft_der, 1)
        bitstring = _der_wrap(0x03, b"\x00" + signature)
        return _der_wrap(0x30, tbs0 + alg + bitstring)

    def snp_platform_status(self, api: tuple[int, int] = (1, 55),
                            build: int = 21, guests: int = 0) -> bytes:
        """SNP_PLATFORM_STATUS as the Linux ioctl returns it.

        ``struct sev_user_data_snp_status`` (include/uapi/linux/psp-sev.h),
        with this chip's TCB as current and reported TCB.
        """
        tcb = _tcb_raw(self.tcb, self.product)
        return struct.pack("<BBBBIIIQQ", api[0], api[1], 1, 1, build, 0,
                           guests, tcb, tcb)

    def bundle_pem(self) -> bytes:
        """ASK, ARK and ASVK as one PEM bundle, like KDS's cert_chain."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM)
                        for c in (self.ask, self.ark, self.asvk))

    def roots(self) -> snp_certs.ProductRoots:
        return snp_certs.roots_from_bundle(self.bundle_pem())

    def report(self, *, measurement: bytes = b"\x11" * 48,
               report_data: bytes = b"\x00" * 64,
               host_data: bytes = b"\x00" * 32,
               policy: int = 0x30000, vmpl: int = 0, version: int = 3,
               signer: str = "vcek", guest_svn: int = 0,
               id_key_digest: bytes = b"\x00" * 48,
               author_key_digest: bytes = b"\x00" * 48,
               author_key_en: bool = False,
               reported_tcb: snp.TcbVersion | None = None,
               key: ec.EllipticCurvePrivateKey | None = None,
               cpuid: tuple[int, int] | None = None) -> bytes:
        """A signed report, as SNP_GUEST_REQUEST(MSG_REPORT_REQ) returns."""
        tcb_raw = _tcb_raw(reported_tcb or self.tcb, self.product)
        signing_key = 0 if signer == "vcek" else 1
        signer_info = int(author_key_en) | signing_key << 2
        fam, mod = cpuid or {"Milan": (0x19, 0x01), "Genoa": (0x19, 0x11),
                             "Turin": (0x1A, 0x02)}[self.product]
        body = struct.pack(
            "<IIQ16s16sIIQQII64s48s32s48s48s32s32sQBBB21s64sQBBBxBBBxQQQ"
            "152x",
            version, guest_svn, policy, b"\x00" * 16, b"\x00" * 16, vmpl, 1,
            tcb_raw, 0x1, signer_info, 0, report_data, measurement,
            host_data, id_key_digest, author_key_digest, os.urandom(32),
            b"\xff" * 32, tcb_raw,
            fam if version >= 3 else 0, mod if version >= 3 else 0,
            1 if version >= 3 else 0, b"\x00" * 21,
            self.chip_id if signer == "vcek" else b"\x00" * 64,
            tcb_raw, 7, 55, 1, 7, 55, 1, tcb_raw, 0, 0)
        assert len(body) == snp.SIGNED_SIZE
        if key is None:
            key = self.vcek_key if signer == "vcek" else self.vlek_key
        der = key.sign(body, ec.ECDSA(hashes.SHA384()))
        r, s = asym_utils.decode_dss_signature(der)
        sig = r.to_bytes(72, "little") + s.to_bytes(72, "little")
        return body + sig + b"\x00" * (snp.REPORT_SIZE - len(body) - 144)


def _tcb_raw(tcb: snp.TcbVersion, product: str) -> int:
    # Written out here, not TcbVersion.encode: the model stays an
    # independent reading of the ABI's layout, so a layout bug in the
    # library cannot agree with itself.
    if product == "Turin":
        b = bytes([tcb.fmc or 0, tcb.bootloader, tcb.tee, tcb.snp, 0, 0, 0,
                   tcb.microcode])
    else:
        b = bytes([tcb.bootloader, tcb.tee, 0, 0, 0, 0, tcb.snp,
                   tcb.microcode])
    return int.from_bytes(b, "little")


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_wrap(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _der_tlv_bytes(der: bytes, index: int) -> bytes:
    """The raw bytes of the index-th element inside the outer SEQUENCE."""
    pos = 1
    first = der[pos]
    pos += 1 + (first & 0x7F if first & 0x80 else 0)
    for i in range(index + 1):
        start = pos
        first = der[pos + 1]
        if first & 0x80:
            count = first & 0x7F
            length = int.from_bytes(der[pos + 2:pos + 2 + count], "big")
            pos += 2 + count + length
        else:
            pos += 2 + first
        if i == index:
            return der[start:pos]
    raise AssertionError("unreachable")
