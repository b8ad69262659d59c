"""Software model of the AMD secure processor for legacy SEV / SEV-ES.

The only stand-in for hardware in the SEV tests. It computes the real
formulas of the SEV API specification, independently of
``barbican_tee.attestation.sev``: its own certificate encoding, KDF, key
unwrap, launch digest, LAUNCH_MEASURE HMAC and LAUNCH_SECRET check.

* :class:`SevPlatform` owns a test ARK/ASK (RSA, AMD root format) and a
  CEK, OCA, PEK and PDH (SEV format) with real signatures.
* :meth:`SevPlatform.launch_start` unwraps TEK/TIK from the owner's
  session blob as firmware does, checking WRAP_MAC and POLICY_MAC, and
  returns a :class:`GuestLaunch` that measures data, reports the
  measurement and accepts a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import uuid

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric import utils
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import modes
from cryptography.hazmat.primitives import hashes

ARK, ASK, OCA, PEK, PDH, CEK = 0x0, 0x13, 0x1001, 0x1002, 0x1003, 0x1004
RSA_SHA256, ECDSA_SHA256, ECDH_SHA256, RSA_SHA384 = 0x1, 0x2, 0x3, 0x101
P384 = 2
SECRET_TABLE_GUID = uuid.UUID("1e74f542-71dd-4d66-963e-ef4287ff173b")


class SevModelError(Exception):
    """The model refused a command, as firmware returns an error status."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _kdf(key: bytes, label: bytes, ctx: bytes) -> bytes:
    """SEV KDF for one 16-byte output block (counter 1, L = 128)."""
    return _hmac(key, _le(1, 4) + label + b"\0" + ctx + _le(128, 4))[:16]


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    c = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    return c.update(data) + c.finalize()


def _pss(bits: int) -> tuple[padding.PSS, hashes.HashAlgorithm]:
    h: hashes.HashAlgorithm = (hashes.SHA256() if bits == 2048
                               else hashes.SHA384())
    return padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h


def root_cert(usage: int, key_id: bytes, sig_id: bytes,
              public: rsa.RSAPublicKey, signer: rsa.RSAPrivateKey) -> bytes:
    """An ARK/ASK in AMD's root-certificate format, signed by ``signer``."""
    bits = public.key_size
    n = bits // 8
    nums = public.public_numbers()
    body = (struct.pack("<I16s16sI16sII", 1, key_id, sig_id, usage,
                        bytes(16), bits, bits)
            + _le(nums.e, n) + _le(nums.n, n))
    pad, h = _pss(signer.key_size)
    sig = signer.sign(body, pad, h)
    return body + _le(int.from_bytes(sig, "big"), signer.key_size // 8)


def sev_cert_body(usage: int, algo: int, public: ec.EllipticCurvePublicKey,
                  api: tuple[int, int] = (0, 24)) -> bytes:
    nums = public.public_numbers()
    key = struct.pack("<I", P384) + _le(nums.x, 72) + _le(nums.y, 72)
    return (struct.pack("<IBBxxII", 1, api[0], api[1], usage, algo)
            + key.ljust(1028, b"\0"))


def ecdsa_slot(signer_usage: int, key: ec.EllipticCurvePrivateKey,
               body: bytes) -> bytes:
    r, s = utils.decode_dss_signature(
        key.sign(body, ec.ECDSA(hashes.SHA256())))
    return (struct.pack("<II", signer_usage, ECDSA_SHA256)
            + (_le(r, 72) + _le(s, 72)).ljust(512, b"\0"))


def rsa_slot(key: rsa.RSAPrivateKey, body: bytes) -> bytes:
    pad, h = _pss(key.key_size)
    sig = key.sign(body, pad, h)
    algo = RSA_SHA256 if key.key_size == 2048 else RSA_SHA384
    return (struct.pack("<II", ASK, algo)
            + _le(int.from_bytes(sig, "big"), 512))


EMPTY_SLOT = struct.pack("<II", 0x1000, 0) + bytes(512)


class SevPlatform:
    """An SEV platform: test roots, platform keys and firmware commands."""

    def __init__(self, rsa_bits: int = 2048, api: tuple[int, int] = (0, 24),
                 build_id: int = 15) -> None:
        self.api = api
        self.build_id = build_id
        self.ark_key = rsa.generate_private_key(65537, rsa_bits)
        self.ask_key = rsa.generate_private_key(65537, rsa_bits)
        ark_id, ask_id = os.urandom(16), os.urandom(16)
        self.ark = root_cert(ARK, ark_id, ark_id, self.ark_key.public_key(),
                             self.ark_key)
        self.ask = root_cert(ASK, ask_id, ark_id, self.ask_key.public_key(),
                             self.ark_key)
        curve = ec.SECP384R1()
        self.cek_key = ec.generate_private_key(curve)
        self.oca_key = ec.generate_private_key(curve)
        self.pek_key = ec.generate_private_key(curve)
        self.pdh_key = ec.generate_private_key(curve)
        body = sev_cert_body(CEK, ECDSA_SHA256, self.cek_key.public_key(),
                             api)
        self.cek = body + rsa_slot(self.ask_key, body) + EMPTY_SLOT
        body = sev_cert_body(OCA, ECDSA_SHA256, self.oca_key.public_key(),
                             api)
        self.oca = body + ecdsa_slot(OCA, self.oca_key, body) + EMPTY_SLOT
        body = sev_cert_body(PEK, ECDSA_SHA256, self.pek_key.public_key(),
                             api)
        self.pek = (body + ecdsa_slot(OCA, self.oca_key, body)
                    + ecdsa_slot(CEK, self.cek_key, body))
        body = sev_cert_body(PDH, ECDH_SHA256, self.pdh_key.public_key(),
                             api)
        self.pdh = body + ecdsa_slot(PEK, self.pek_key, body) + EMPTY_SLOT

    def launch_start(self, dh_cert: bytes, session: bytes,
                     policy: int) -> GuestLaunch:
        """LAUNCH_START: unwrap TEK/TIK and check the policy MAC."""
        if len(dh_cert) != 2084 or len(session) != 128:
            raise SevModelError("invalid_length")
        version, usage, curve = (struct.unpack_from("<I", dh_cert, 0)[0],
                                 struct.unpack_from("<I", dh_cert, 8)[0],
                                 struct.unpack_from("<I", dh_cert, 16)[0])
        if version != 1 or usage != PDH or curve != P384:
            raise SevModelError("invalid_certificate")
        x = int.from_bytes(dh_cert[20:92], "little")
        y = int.from_bytes(dh_cert[92:164], "little")
        try:
            owner = ec.EllipticCurvePublicNumbers(
                x, y, ec.SECP384R1()).public_key()
        except ValueError as exc:
            raise SevModelError("invalid_certificate") from exc
        z = self.pdh_key.exchange(ec.ECDH(), owner)
        nonce, wrap_tk = session[0:16], session[16:48]
        wrap_iv, wrap_mac = session[48:64], session[64:96]
        policy_mac = session[96:128]
        master = _kdf(z, b"sev-master-secret", nonce)
        kek = _kdf(master, b"sev-kek", b"")
        kik = _kdf(master, b"sev-kik", b"")
        if not hmac.compare_digest(_hmac(kik, wrap_tk), wrap_mac):
            raise SevModelError("wrap_mac_mismatch")
        tk = _ctr(kek, wrap_iv, wrap_tk)
        tek, tik = tk[:16], tk[16:]
        if not hmac.compare_digest(_hmac(tik, _le(policy, 4)), policy_mac):
            raise SevModelError("policy_failure")
        return GuestLaunch(self, policy, tek, tik)


class GuestLaunch:
    """One guest context between LAUNCH_START and LAUNCH_SECRET."""

    def __init__(self, platform: SevPlatform, policy: int, tek: bytes,
                 tik: bytes) -> None:
        self.platform = platform
        self.policy = policy
        self._tek = tek
        self._tik = tik
        self._ld = hashlib.sha256()
        self._measure: bytes | None = None

    def launch_update_data(self, data: bytes) -> None:
        """LAUNCH_UPDATE_DATA (and _VMSA): extend the launch digest."""
        if self._measure is not None:
            raise SevModelError("invalid_guest_state")
        self._ld.update(data)

    measure_firmware = launch_update_data

    def launch_measure(self) -> bytes:
        """LAUNCH_MEASURE: MEASURE (32) || MNONCE (16)."""
        mnonce = os.urandom(16)
        major, minor = self.platform.api
        msg = (bytes([0x04, major, minor, self.platform.build_id])
               + _le(self.policy, 4) + self._ld.digest() + mnonce)
        self._measure = _hmac(self._tik, msg)
        return self._measure + mnonce

    def launch_secret(self, header: bytes,
                      payload: bytes) -> dict[uuid.UUID, bytes]:
        """LAUNCH_SECRET: check the header MAC, decrypt, read the table."""
        if self._measure is None:
            raise SevModelError("invalid_guest_state")
        if len(header) != 52:
            raise SevModelError("invalid_length")
        flags, iv, mac = header[:4], header[4:20], header[20:52]
        length = _le(len(payload), 4)
        expected = _hmac(self._tik, b"\x01" + flags + iv + length + length
                         + payload + self._measure)
        if not hmac.compare_digest(expected, mac):
            raise SevModelError("header_mac_mismatch")
        return parse_secret_table(_ctr(self._tek, iv, payload))


def parse_secret_table(table: bytes) -> dict[uuid.UUID, bytes]:
    """Read the table as OVMF's secret consumer would."""
    if uuid.UUID(bytes_le=table[:16]) != SECRET_TABLE_GUID:
        raise SevModelError("bad_table_guid")
    total = struct.unpack_from("<I", table, 16)[0]
    if total > len(table):
        raise SevModelError("bad_table_length")
    out: dict[uuid.UUID, bytes] = {}
    off = 20
    while off < total:
        guid = uuid.UUID(bytes_le=table[off:off + 16])
        size = struct.unpack_from("<I", table, off + 16)[0]
        if size < 20 or off + size > total:
            raise SevModelError("bad_entry_length")
        out[guid] = table[off + 20:off + size]
        off += size
    return out
