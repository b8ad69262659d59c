"""Guest-owner side of a legacy SEV / SEV-ES launch.

The flow follows the AMD SEV API specification (LAUNCH_START,
LAUNCH_MEASURE, LAUNCH_SECRET) and what QEMU and libvirt pass through:

1. :func:`create_launch_session` -- the owner makes an ECDH key pair on the
   PDH's curve, derives a master secret with the platform's PDH, then
   KEK/KIK from it, picks random transport keys TEK/TIK, wraps them under
   KEK (AES-128-CTR), MACs the wrap with KIK and the policy with TIK. The
   owner's certificate (``dh_cert``) and the 128-byte ``session`` blob go
   into the domain XML (``<dhCert>``, ``<session>``, base64).
2. :func:`verify_launch_measurement` -- the platform's LAUNCH_MEASURE result
   is ``HMAC-SHA256(TIK, 0x04 || api_major || api_minor || build ||
   policy || launch_digest || mnonce) || mnonce``; it is recomputed for each
   allowed launch digest and compared in constant time.
3. :func:`build_secret_packet` -- an OVMF secret table, encrypted with TEK
   (AES-128-CTR), with the LAUNCH_SECRET header MAC under TIK.

TEK and TIK are secret: they never appear in ``repr``, messages or logs.
The KDF is NIST SP 800-108 counter mode with HMAC-SHA256 as the SEV API and
firmware use it: ``HMAC(key, i || label || 0x00 || context || L)`` with the
counter ``i`` and the length ``L`` (bits) as 32-bit *little-endian* words.
``cryptography``'s KBKDFHMAC encodes both big-endian, so the loop is built
here from ``cryptography``'s HMAC.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import os
import struct
import uuid

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import modes
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from barbican_tee.attestation import errors
from barbican_tee.attestation import sev_certs

SESSION_SIZE = 128
MEASUREMENT_SIZE = 48
KEY_SIZE = 16
DIGEST_SIZE = 32
SECRET_HEADER_SIZE = 52
SECRET_TABLE_GUID = uuid.UUID("1e74f542-71dd-4d66-963e-ef4287ff173b")
# LAUNCH_SECRET MACs the launch measurement from API 0.17 on; older
# firmware is refused rather than guessed at.
MIN_SECRET_API = (0, 17)
DEFAULT_SECRET_AREA = 4096
_STATE_VERSION = 1


def hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 over the concatenation of ``parts``."""
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    for part in parts:
        mac.update(part)
    return mac.finalize()


def kdf(key: bytes, label: bytes, context: bytes, size: int) -> bytes:
    """SEV KDF: SP 800-108 counter mode, HMAC-SHA256, little-endian words."""
    out = b""
    counter = 1
    while len(out) < size:
        out += hmac_sha256(key, struct.pack("<I", counter), label, b"\0",
                           context, struct.pack("<I", size * 8))
        counter += 1
    return out[:size]


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def _byte(value: int, name: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= 0xFF:
        raise errors.InvalidInput(f"{name} must be an integer 0..255",
                                  code="sev_platform_version")
    return bytes([value])


def _policy(value: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= 0xFFFFFFFF:
        raise errors.InvalidInput("policy must be a 32-bit unsigned integer",
                                  code="sev_policy")
    return struct.pack("<I", value)


def _key(value: bytes, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != KEY_SIZE:
        raise errors.InvalidInput(f"{name} must be {KEY_SIZE} bytes",
                                  code="sev_key_size")
    return bytes(value)


def _measurement(value: bytes | str) -> bytes:
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise errors.InvalidInput("measurement is not valid base64",
                                      code="sev_measurement_encoding") from exc
    elif isinstance(value, bytes | bytearray):
        raw = bytes(value)
    else:
        raise errors.InvalidInput("measurement must be bytes or base64",
                                  code="sev_measurement_encoding")
    if len(raw) != MEASUREMENT_SIZE:
        raise errors.InvalidInput(
            f"measurement must be {MEASUREMENT_SIZE} bytes (HMAC and "
            f"mnonce), got {len(raw)}", code="sev_measurement_size")
    return raw


def compute_launch_measurement(tik: bytes, api_major: int, api_minor: int,
                               build_id: int, policy: int, digest: bytes,
                               mnonce: bytes) -> bytes:
    """The 32-byte LAUNCH_MEASURE HMAC the firmware reports."""
    if not isinstance(digest, bytes | bytearray) \
            or len(digest) != DIGEST_SIZE:
        raise errors.InvalidInput(
            f"launch digest must be {DIGEST_SIZE} bytes (SHA-256)",
            code="sev_digest_size")
    if not isinstance(mnonce, bytes | bytearray) or len(mnonce) != 16:
        raise errors.InvalidInput("mnonce must be 16 bytes",
                                  code="sev_measurement_size")
    return hmac_sha256(_key(tik, "TIK"), b"\x04",
                       _byte(api_major, "api_major"),
                       _byte(api_minor, "api_minor"),
                       _byte(build_id, "build_id"), _policy(policy),
                       bytes(digest), bytes(mnonce))


def launch_digest_matches(tik: bytes, measurement: bytes | str,
                          api_major: int, api_minor: int, build_id: int,
                          policy: int, digest: bytes) -> bool:
    """Whether ``measurement`` was produced for launch digest ``digest``."""
    raw = _measurement(measurement)
    expected = compute_launch_measurement(tik, api_major, api_minor,
                                          build_id, policy, digest,
                                          raw[32:])
    return hmac.compare_digest(expected, raw[:32])


def verify_launch_measurement(tik: bytes, measurement: bytes | str,
                              api_major: int, api_minor: int, build_id: int,
                              policy: int,
                              allowed_digests: list[bytes]) -> bytes:
    """Return the allowed launch digest the measurement proves.

    Raises ``VerificationFailed(code="sev_measurement_mismatch")`` when no
    allowed digest matches.
    """
    if not allowed_digests:
        raise errors.InvalidInput("no allowed launch digests given",
                                  code="sev_no_allowed_digests")
    matched: bytes | None = None
    for digest in allowed_digests:
        if launch_digest_matches(tik, measurement, api_major, api_minor,
                                 build_id, policy, digest) \
                and matched is None:
            matched = bytes(digest)
    if matched is None:
        raise errors.VerificationFailed(
            "launch measurement matches none of the allowed digests",
            code="sev_measurement_mismatch")
    return matched


@dataclasses.dataclass(frozen=True)
class SecretPacket:
    """A LAUNCH_SECRET packet: header (flags, IV, MAC) and ciphertext."""

    header: bytes
    payload: bytes

    @property
    def header_b64(self) -> str:
        return base64.b64encode(self.header).decode("ascii")

    @property
    def payload_b64(self) -> str:
        return base64.b64encode(self.payload).decode("ascii")


def build_secret_table(secrets: dict[uuid.UUID | str, bytes]) -> bytes:
    """The OVMF secret table: GUID-tagged entries, padded to 16 bytes."""
    if not isinstance(secrets, dict) or not secrets:
        raise errors.InvalidInput("no secrets given",
                                  code="sev_secret_empty")
    entries = b""
    seen: set[uuid.UUID] = set()
    for key, value in secrets.items():
        try:
            guid = key if isinstance(key, uuid.UUID) else uuid.UUID(key)
        except (ValueError, TypeError, AttributeError) as exc:
            raise errors.InvalidInput("secret name is not a GUID",
                                      code="sev_secret_guid") from exc
        if guid in seen:
            raise errors.InvalidInput(f"secret GUID {guid} given twice",
                                      code="sev_secret_guid_duplicate")
        seen.add(guid)
        if not isinstance(value, bytes | bytearray):
            raise errors.InvalidInput(f"secret {guid} must be bytes",
                                      code="sev_secret_value")
        entries += (guid.bytes_le + struct.pack("<I", 20 + len(value))
                    + bytes(value))
    table = (SECRET_TABLE_GUID.bytes_le + struct.pack("<I", 20 + len(entries))
             + entries)
    # As virt-qemu-sev-validate: always 1..16 bytes of zero padding.
    return table + bytes(16 - len(table) % 16)


def build_secret_packet(tek: bytes, tik: bytes, measurement: bytes | str,
                        secrets: dict[uuid.UUID | str, bytes],
                        api_major: int, api_minor: int, *,
                        iv: bytes | None = None,
                        max_size: int = DEFAULT_SECRET_AREA) -> SecretPacket:
    """Encrypt ``secrets`` for LAUNCH_SECRET (OVMF secret table format).

    ``measurement`` is the LAUNCH_MEASURE result (48 bytes or base64);
    only its 32-byte MAC enters the header MAC. ``iv`` is for tests only.
    """
    tek = _key(tek, "TEK")
    tik = _key(tik, "TIK")
    measure = _measurement(measurement)[:32]
    version = (api_major, api_minor)
    _byte(api_major, "api_major")
    _byte(api_minor, "api_minor")
    if version < MIN_SECRET_API:
        raise errors.InvalidInput(
            f"SEV API {api_major}.{api_minor} is older than 0.17; its "
            "LAUNCH_SECRET format is not supported",
            code="sev_api_unsupported")
    table = build_secret_table(secrets)
    if len(table) > max_size:
        raise errors.InvalidInput(
            f"secret table is {len(table)} bytes, the secret area holds "
            f"{max_size}", code="sev_secret_too_large")
    if iv is None:
        iv = os.urandom(16)
    elif not isinstance(iv, bytes) or len(iv) != 16:
        raise errors.InvalidInput("IV must be 16 bytes", code="sev_iv_size")
    flags = struct.pack("<I", 0)
    payload = _aes_ctr(tek, iv, table)
    length = struct.pack("<I", len(table))
    mac = hmac_sha256(tik, b"\x01", flags, iv, length, length, payload,
                      measure)
    return SecretPacket(header=flags + iv + mac, payload=payload)


def build_session_blob(shared_secret: bytes, nonce: bytes, wrap_iv: bytes,
                       tek: bytes, tik: bytes, policy: int) -> bytes:
    """The LAUNCH_START session buffer (128 bytes).

    NONCE (16) || WRAP_TK (32) || WRAP_IV (16) || WRAP_MAC (32) ||
    POLICY_MAC (32), where the master secret is KDF(Z, NONCE,
    "sev-master-secret"), KEK/KIK are KDF(master, "", "sev-kek"/"sev-kik"),
    WRAP_TK = AES-128-CTR(KEK, WRAP_IV, TEK || TIK), WRAP_MAC =
    HMAC(KIK, WRAP_TK) and POLICY_MAC = HMAC(TIK, policy, 32-bit LE).
    """
    if len(nonce) != 16 or len(wrap_iv) != 16:
        raise errors.InvalidInput("nonce and IV must be 16 bytes",
                                  code="sev_iv_size")
    tek = _key(tek, "TEK")
    tik = _key(tik, "TIK")
    policy_le = _policy(policy)
    master = kdf(shared_secret, b"sev-master-secret", nonce, KEY_SIZE)
    kek = kdf(master, b"sev-kek", b"", KEY_SIZE)
    kik = kdf(master, b"sev-kik", b"", KEY_SIZE)
    wrap_tk = _aes_ctr(kek, wrap_iv, tek + tik)
    wrap_mac = hmac_sha256(kik, wrap_tk)
    policy_mac = hmac_sha256(tik, policy_le)
    return nonce + wrap_tk + wrap_iv + wrap_mac + policy_mac


class LaunchSession:
    """A guest owner's launch session; keeps TEK and TIK to itself."""

    __slots__ = ("policy", "dh_cert", "session", "_tek", "_tik")

    def __init__(self, policy: int, dh_cert: bytes, session: bytes,
                 tek: bytes, tik: bytes) -> None:
        _policy(policy)
        sev_certs.parse_sev_cert(dh_cert)
        if not isinstance(session, bytes) or len(session) != SESSION_SIZE:
            raise errors.InvalidInput(
                f"session blob must be {SESSION_SIZE} bytes",
                code="sev_session_size")
        self.policy = policy
        self.dh_cert = bytes(dh_cert)
        self.session = bytes(session)
        self._tek = _key(tek, "TEK")
        self._tik = _key(tik, "TIK")

    def __repr__(self) -> str:
        return (f"LaunchSession(policy={self.policy:#x}, "
                f"dh_cert=<{len(self.dh_cert)} bytes>, "
                f"session=<{len(self.session)} bytes>)")

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("LaunchSession is not picklable; use to_state()")

    @property
    def dh_cert_b64(self) -> str:
        """``<dhCert>`` for the libvirt domain XML."""
        return base64.b64encode(self.dh_cert).decode("ascii")

    @property
    def session_b64(self) -> str:
        """``<session>`` for the libvirt domain XML."""
        return base64.b64encode(self.session).decode("ascii")

    def export_transport_keys(self) -> tuple[bytes, bytes]:
        """(TEK, TIK). Secret: only for tools that need them verbatim."""
        return self._tek, self._tik

    def verify_measurement(self, measurement: bytes | str, api_major: int,
                           api_minor: int, build_id: int,
                           allowed_digests: list[bytes]) -> bytes:
        return verify_launch_measurement(self._tik, measurement, api_major,
                                         api_minor, build_id, self.policy,
                                         allowed_digests)

    def build_secret_packet(self, measurement: bytes | str,
                            secrets: dict[uuid.UUID | str, bytes],
                            api_major: int, api_minor: int) -> SecretPacket:
        return build_secret_packet(self._tek, self._tik, measurement,
                                   secrets, api_major, api_minor)

    def to_state(self) -> dict[str, str | int]:
        """A JSON-able dict holding TEK/TIK: store it encrypted."""
        return {
            "version": _STATE_VERSION,
            "policy": self.policy,
            "dh_cert": self.dh_cert_b64,
            "session": self.session_b64,
            "tek": base64.b64encode(self._tek).decode("ascii"),
            "tik": base64.b64encode(self._tik).decode("ascii"),
        }

    @classmethod
    def from_state(cls, state: dict[str, str | int]) -> LaunchSession:
        """Rebuild a session saved with :meth:`to_state`."""
        try:
            if state["version"] != _STATE_VERSION:
                raise ValueError("version")
            policy = state["policy"]
            fields = [state[k] for k in ("dh_cert", "session", "tek", "tik")]
            if not isinstance(policy, int) \
                    or not all(isinstance(f, str) for f in fields):
                raise ValueError("types")
            raw = [base64.b64decode(str(f), validate=True) for f in fields]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise errors.InvalidInput("launch session state is malformed",
                                      code="sev_session_state") from exc
        return cls(policy, raw[0], raw[1], raw[2], raw[3])


def create_launch_session(pdh: sev_certs.SevCert | bytes,
                          policy: int) -> LaunchSession:
    """Start a launch for the platform whose (verified) PDH is ``pdh``.

    Verify the platform chain first (:func:`sev_certs.verify_platform_chain`);
    this function only uses the PDH key. The owner's ECDH key is on the
    PDH's curve (P-384 on all AMD parts) and is discarded afterwards.
    """
    pdh_key = sev_certs.pdh_public_key(pdh)
    _policy(policy)
    private = ec.generate_private_key(pdh_key.curve)
    try:
        shared = private.exchange(ec.ECDH(), pdh_key)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise errors.VerificationFailed("ECDH with the PDH failed",
                                        code="sev_ecdh") from exc
    dh_cert = sev_certs.make_sev_cert(
        sev_certs.Usage.PDH, sev_certs.Algorithm.ECDH_SHA256,
        private.public_key())
    tek = os.urandom(KEY_SIZE)
    tik = os.urandom(KEY_SIZE)
    session = build_session_blob(shared, os.urandom(16), os.urandom(16),
                                 tek, tik, policy)
    return LaunchSession(policy, dh_cert.to_bytes(), session, tek, tik)
