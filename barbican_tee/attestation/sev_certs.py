"""Legacy AMD SEV / SEV-ES certificates in AMD's binary formats.

Two formats exist (AMD SEV API specification, appendix C):

* the *SEV certificate* (version 1, 2084 bytes) carries the platform keys
  CEK, OCA, PEK and PDH -- ECDSA or ECDH on P-256/P-384 -- and the guest
  owner's own Diffie-Hellman key. It holds a signed body (the first 0x414
  bytes) and two signature slots. Every big number is little-endian;
* the *AMD root certificate* carries the RSA keys ARK and ASK (2048 bits on
  Naples, 4096 bits from Rome on): a 64-byte preamble, then public exponent,
  modulus and signature, each as long as the modulus, all little-endian.

The chain is ARK (self-signed) -> ASK -> CEK -> PEK -> PDH; the PEK is
signed a second time by the owner's OCA, which is self-signed. RSA
signatures are RSASSA-PSS with a salt as long as the digest; the digest is
SHA-256 for 2048-bit and SHA-384 for 4096-bit keys. ECDSA signatures use
the digest named by the signing key's algorithm.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib.resources
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives import hashes

from barbican_tee.attestation import errors

SEV_CERT_SIZE = 2084
SEV_CERT_BODY_SIZE = 0x414
_PUBKEY_OFFSET = 16
_PUBKEY_SIZE = 1028
_SIG_SLOT_SIZE = 8 + 512
_EC_COORD_SIZE = 72
_ROOT_PREAMBLE = struct.Struct("<I16s16sI16sII")
GENERATIONS = ("naples", "rome", "milan", "genoa")


class Usage(enum.IntEnum):
    """Key usage codes shared by both certificate formats."""

    ARK = 0x0000
    ASK = 0x0013
    INV = 0x1000
    OCA = 0x1001
    PEK = 0x1002
    PDH = 0x1003
    CEK = 0x1004


class Algorithm(enum.IntEnum):
    """Key and signature algorithm codes."""

    NONE = 0x0000
    RSA_SHA256 = 0x0001
    ECDSA_SHA256 = 0x0002
    ECDH_SHA256 = 0x0003
    RSA_SHA384 = 0x0101
    ECDSA_SHA384 = 0x0102
    ECDH_SHA384 = 0x0103


class Curve(enum.IntEnum):
    """Elliptic curve identifiers."""

    P256 = 1
    P384 = 2


_ECDSA = (Algorithm.ECDSA_SHA256, Algorithm.ECDSA_SHA384)
_ECDH = (Algorithm.ECDH_SHA256, Algorithm.ECDH_SHA384)
_RSA = (Algorithm.RSA_SHA256, Algorithm.RSA_SHA384)
_SHA384_ALGOS = (Algorithm.RSA_SHA384, Algorithm.ECDSA_SHA384,
                 Algorithm.ECDH_SHA384)
_PLATFORM_USAGES = (Usage.OCA, Usage.PEK, Usage.PDH, Usage.CEK)
_CURVES: dict[Curve, tuple[ec.EllipticCurve, int]] = {
    Curve.P256: (ec.SECP256R1(), 32),
    Curve.P384: (ec.SECP384R1(), 48),
}


def _hash_for(algo: Algorithm) -> hashes.HashAlgorithm:
    if algo in _SHA384_ALGOS:
        return hashes.SHA384()
    return hashes.SHA256()


def _le(data: bytes) -> int:
    return int.from_bytes(data, "little")


@dataclasses.dataclass(frozen=True)
class SevSignature:
    """One signature slot of an SEV certificate (raw, little-endian)."""

    usage: int
    algorithm: int
    data: bytes

    @property
    def is_empty(self) -> bool:
        """True when the slot holds no usable signature (as firmware)."""
        return (self.usage not in (Usage.ARK, Usage.ASK, *_PLATFORM_USAGES)
                or self.algorithm not in (*_RSA, *_ECDSA))

    def to_bytes(self) -> bytes:
        return struct.pack("<II", self.usage, self.algorithm) + self.data


EMPTY_SIGNATURE = SevSignature(Usage.INV, Algorithm.NONE, bytes(512))


@dataclasses.dataclass(frozen=True)
class SevCert:
    """A parsed SEV certificate (CEK, OCA, PEK, PDH or owner DH key)."""

    version: int
    api_major: int
    api_minor: int
    usage: Usage
    algorithm: Algorithm
    curve: Curve
    x: int
    y: int
    signatures: tuple[SevSignature, SevSignature]
    raw: bytes = dataclasses.field(repr=False)

    @property
    def body(self) -> bytes:
        """The signed part of the certificate."""
        return self.raw[:SEV_CERT_BODY_SIZE]

    def to_bytes(self) -> bytes:
        """The 2084-byte wire form (as given to QEMU / libvirt)."""
        return self.raw

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return _ec_key(self.curve, self.x, self.y)


@dataclasses.dataclass(frozen=True)
class AmdRootCert:
    """A parsed AMD root-format certificate (ARK or ASK)."""

    version: int
    key_id: bytes
    certifying_id: bytes
    usage: Usage
    modulus_bits: int
    public_exponent: int
    modulus: int = dataclasses.field(repr=False)
    signature: bytes = dataclasses.field(repr=False)
    raw: bytes = dataclasses.field(repr=False)

    @property
    def body(self) -> bytes:
        """The signed part: preamble, exponent and modulus."""
        return self.raw[:len(self.raw) - self.modulus_bits // 8]

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        if self.modulus_bits == 2048:
            return hashes.SHA256()
        return hashes.SHA384()

    def to_bytes(self) -> bytes:
        return self.raw

    def public_key(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(self.public_exponent,
                                    self.modulus).public_key()


def _ec_key(curve: Curve, x: int, y: int) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicNumbers(
            x, y, _CURVES[curve][0]).public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise errors.InvalidInput(
            "SEV certificate public key is not a point on its curve",
            code="sev_cert_public_key") from exc


def parse_sev_cert(data: bytes) -> SevCert:
    """Parse a 2084-byte SEV certificate (version 1, ECC key)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise errors.InvalidInput("SEV certificate must be bytes",
                                  code="sev_cert_size")
    data = bytes(data)
    if len(data) != SEV_CERT_SIZE:
        raise errors.InvalidInput(
            f"SEV certificate must be {SEV_CERT_SIZE} bytes, "
            f"got {len(data)}", code="sev_cert_size")
    version, api_major, api_minor, usage_raw, algo_raw = struct.unpack_from(
        "<IBBxxII", data, 0)
    if version != 1:
        raise errors.InvalidInput(
            f"unsupported SEV certificate version {version}",
            code="sev_cert_version")
    if usage_raw not in _PLATFORM_USAGES:
        raise errors.InvalidInput(
            f"SEV certificate has invalid key usage {usage_raw:#x}",
            code="sev_cert_usage")
    usage = Usage(usage_raw)
    if algo_raw not in (*_ECDSA, *_ECDH):
        raise errors.InvalidInput(
            f"unsupported SEV certificate key algorithm {algo_raw:#x}",
            code="sev_cert_algorithm")
    algorithm = Algorithm(algo_raw)
    if (usage == Usage.PDH) != (algorithm in _ECDH):
        raise errors.InvalidInput(
            f"key algorithm {algorithm.name} does not fit usage "
            f"{usage.name}", code="sev_cert_algorithm")
    (curve_raw,) = struct.unpack_from("<I", data, _PUBKEY_OFFSET)
    if curve_raw not in (Curve.P256, Curve.P384):
        raise errors.InvalidInput(
            f"unsupported SEV certificate curve {curve_raw}",
            code="sev_cert_curve")
    curve = Curve(curve_raw)
    off = _PUBKEY_OFFSET + 4
    x = _le(data[off:off + _EC_COORD_SIZE])
    y = _le(data[off + _EC_COORD_SIZE:off + 2 * _EC_COORD_SIZE])
    _ec_key(curve, x, y)
    sigs = []
    for i in range(2):
        start = SEV_CERT_BODY_SIZE + i * _SIG_SLOT_SIZE
        s_usage, s_algo = struct.unpack_from("<II", data, start)
        sigs.append(SevSignature(s_usage, s_algo,
                                 data[start + 8:start + _SIG_SLOT_SIZE]))
    return SevCert(version=version, api_major=api_major,
                   api_minor=api_minor, usage=usage, algorithm=algorithm,
                   curve=curve, x=x, y=y,
                   signatures=(sigs[0], sigs[1]), raw=data)


def make_sev_cert(usage: Usage, algorithm: Algorithm,
                  public_key: ec.EllipticCurvePublicKey, *,
                  api_major: int = 0, api_minor: int = 0,
                  signatures: tuple[SevSignature, ...] = ()) -> SevCert:
    """Lay out an SEV certificate for ``public_key`` (signatures optional).

    Used for the guest owner's own Diffie-Hellman certificate, which is
    unsigned; signature slots, when given, are copied verbatim.
    """
    if isinstance(public_key.curve, ec.SECP384R1):
        curve = Curve.P384
    elif isinstance(public_key.curve, ec.SECP256R1):
        curve = Curve.P256
    else:
        raise errors.InvalidInput("SEV keys must be on P-256 or P-384",
                                  code="sev_cert_curve")
    if len(signatures) > 2 or not (0 <= api_major < 256
                                   and 0 <= api_minor < 256):
        raise errors.InvalidInput("invalid SEV certificate fields",
                                  code="sev_cert_fields")
    nums = public_key.public_numbers()
    key = (struct.pack("<I", curve)
           + nums.x.to_bytes(_EC_COORD_SIZE, "little")
           + nums.y.to_bytes(_EC_COORD_SIZE, "little"))
    key = key.ljust(_PUBKEY_SIZE, b"\0")
    body = struct.pack("<IBBxxII", 1, api_major, api_minor, usage,
                       algorithm) + key
    slots = list(signatures) + [EMPTY_SIGNATURE] * (2 - len(signatures))
    for slot in slots:
        if len(slot.data) != 512:
            raise errors.InvalidInput("signature slot must be 512 bytes",
                                      code="sev_cert_fields")
    raw = body + b"".join(slot.to_bytes() for slot in slots)
    return parse_sev_cert(raw)


def parse_amd_root_cert(data: bytes) -> AmdRootCert:
    """Parse an ARK or ASK in AMD's root-certificate format."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise errors.InvalidInput("AMD root certificate must be bytes",
                                  code="sev_cert_size")
    data = bytes(data)
    if len(data) < _ROOT_PREAMBLE.size:
        raise errors.InvalidInput(
            f"AMD root certificate too short ({len(data)} bytes)",
            code="sev_cert_size")
    (version, key_id, sig_id, usage_raw, _reserved, psize,
     msize) = _ROOT_PREAMBLE.unpack_from(data, 0)
    if version != 1:
        raise errors.InvalidInput(
            f"unsupported AMD root certificate version {version}",
            code="sev_cert_version")
    if usage_raw not in (Usage.ARK, Usage.ASK):
        raise errors.InvalidInput(
            f"AMD root certificate has invalid usage {usage_raw:#x}",
            code="sev_cert_usage")
    if psize != msize or msize not in (2048, 4096):
        raise errors.InvalidInput(
            f"unsupported RSA key size {msize} (exponent {psize})",
            code="sev_cert_key_size")
    n = msize // 8
    expected = _ROOT_PREAMBLE.size + 3 * n
    if len(data) != expected:
        raise errors.InvalidInput(
            f"AMD root certificate must be {expected} bytes, "
            f"got {len(data)}", code="sev_cert_size")
    off = _ROOT_PREAMBLE.size
    exponent = _le(data[off:off + n])
    modulus = _le(data[off + n:off + 2 * n])
    cert = AmdRootCert(version=version, key_id=key_id,
                       certifying_id=sig_id, usage=Usage(usage_raw),
                       modulus_bits=msize, public_exponent=exponent,
                       modulus=modulus, signature=data[off + 2 * n:],
                       raw=data)
    try:
        cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise errors.InvalidInput(
            "AMD root certificate holds an invalid RSA key",
            code="sev_cert_public_key") from exc
    return cert


def _rsa_verify(signer: AmdRootCert, sig_le: bytes, body: bytes,
                what: str) -> None:
    size = signer.modulus_bits // 8
    value = _le(sig_le)
    if value.bit_length() > signer.modulus_bits:
        raise errors.VerificationFailed(
            f"{what}: signature larger than the signing key",
            code="sev_cert_signature")
    digest = signer.hash_algorithm
    try:
        signer.public_key().verify(
            value.to_bytes(size, "big"), body,
            padding.PSS(mgf=padding.MGF1(digest),
                        salt_length=digest.digest_size),
            digest)
    except (InvalidSignature, ValueError) as exc:
        raise errors.VerificationFailed(
            f"{what}: RSA signature does not verify",
            code="sev_cert_signature") from exc


def _find_slot(cert: SevCert, usage: Usage, algos: tuple[Algorithm, ...],
               what: str) -> list[SevSignature]:
    found = [s for s in cert.signatures
             if not s.is_empty and s.usage == usage
             and s.algorithm in algos]
    if not found:
        raise errors.VerificationFailed(
            f"{what}: no signature by the {usage.name}",
            code="sev_cert_signature")
    return found


def _verify_by_root(signer: AmdRootCert, cert: SevCert, what: str) -> None:
    want = (Algorithm.RSA_SHA256 if signer.modulus_bits == 2048
            else Algorithm.RSA_SHA384)
    for slot in _find_slot(cert, signer.usage, (want,), what):
        try:
            _rsa_verify(signer, slot.data, cert.body, what)
            return
        except errors.VerificationFailed:
            continue
    raise errors.VerificationFailed(
        f"{what}: RSA signature does not verify",
        code="sev_cert_signature")


def _verify_by_sev(signer: SevCert, cert: SevCert, what: str) -> None:
    if signer.algorithm not in _ECDSA:
        raise errors.VerificationFailed(
            f"{what}: the {signer.usage.name} key cannot sign",
            code="sev_cert_signature")
    digest = _hash_for(signer.algorithm)
    key = signer.public_key()
    for slot in _find_slot(cert, signer.usage, (signer.algorithm,), what):
        r = _le(slot.data[:_EC_COORD_SIZE])
        s = _le(slot.data[_EC_COORD_SIZE:2 * _EC_COORD_SIZE])
        try:
            key.verify(asym_utils.encode_dss_signature(r, s), cert.body,
                       ec.ECDSA(digest))
            return
        except (InvalidSignature, ValueError):
            continue
    raise errors.VerificationFailed(
        f"{what}: ECDSA signature does not verify",
        code="sev_cert_signature")


def _as_sev(cert: SevCert | bytes, usage: Usage, name: str) -> SevCert:
    parsed = cert if isinstance(cert, SevCert) else parse_sev_cert(cert)
    if parsed.usage != usage:
        raise errors.InvalidInput(
            f"{name} certificate has usage {parsed.usage.name}",
            code="sev_cert_role")
    return parsed


def _as_root(cert: AmdRootCert | bytes, usage: Usage,
             name: str) -> AmdRootCert:
    parsed = (cert if isinstance(cert, AmdRootCert)
              else parse_amd_root_cert(cert))
    if parsed.usage != usage:
        raise errors.InvalidInput(
            f"{name} certificate has usage {parsed.usage.name}",
            code="sev_cert_role")
    return parsed


def verify_platform_chain(ark: AmdRootCert | bytes,
                          ask: AmdRootCert | bytes,
                          cek: SevCert | bytes,
                          pek: SevCert | bytes,
                          pdh: SevCert | bytes,
                          oca: SevCert | bytes | None = None) -> None:
    """Verify ARK -> ASK -> CEK -> PEK -> PDH (and OCA -> PEK if given).

    The caller chooses the ARK (normally :func:`builtin_roots`); trust comes
    from that choice only. Raises :class:`errors.InvalidInput` or
    :class:`errors.VerificationFailed`; returns nothing on success.
    """
    ark_c = _as_root(ark, Usage.ARK, "ARK")
    ask_c = _as_root(ask, Usage.ASK, "ASK")
    cek_c = _as_sev(cek, Usage.CEK, "CEK")
    pek_c = _as_sev(pek, Usage.PEK, "PEK")
    pdh_c = _as_sev(pdh, Usage.PDH, "PDH")
    if ark_c.certifying_id != ark_c.key_id:
        raise errors.VerificationFailed("ARK is not self-signed",
                                        code="sev_cert_issuer")
    _rsa_verify(ark_c, ark_c.signature, ark_c.body, "ARK")
    if ask_c.certifying_id != ark_c.key_id:
        raise errors.VerificationFailed("ASK was not issued by this ARK",
                                        code="sev_cert_issuer")
    _rsa_verify(ark_c, ask_c.signature, ask_c.body, "ASK")
    _verify_by_root(ask_c, cek_c, "CEK")
    _verify_by_sev(cek_c, pek_c, "PEK")
    if oca is not None:
        oca_c = _as_sev(oca, Usage.OCA, "OCA")
        _verify_by_sev(oca_c, oca_c, "OCA")
        _verify_by_sev(oca_c, pek_c, "PEK")
    _verify_by_sev(pek_c, pdh_c, "PDH")


def pdh_public_key(pdh: SevCert | bytes) -> ec.EllipticCurvePublicKey:
    """The platform Diffie-Hellman key, for the launch session."""
    cert = _as_sev(pdh, Usage.PDH, "PDH")
    return cert.public_key()


@functools.cache
def builtin_roots(generation: str) -> tuple[AmdRootCert, AmdRootCert]:
    """AMD's ARK and ASK for ``generation`` (naples, rome, milan, genoa)."""
    if generation not in GENERATIONS:
        raise errors.InvalidInput(
            f"unknown SEV generation {generation!r}",
            code="sev_unknown_generation")
    base = (importlib.resources.files("barbican_tee.attestation")
            / "data" / "sev" / generation)
    ark = parse_amd_root_cert((base / "ark.cert").read_bytes())
    ask = parse_amd_root_cert((base / "ask.cert").read_bytes())
    return ark, ask
