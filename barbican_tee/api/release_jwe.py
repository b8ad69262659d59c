"""The release's answer: a compact JWE to the guest's key (RFC 7516, 7518).

One recipient, ``alg`` ECDH-ES+A256KW, ``enc`` A256GCM, the guest's key on
P-384: for every release a fresh ephemeral P-384 key agrees a secret with
the guest's key (ECDH), the Concat KDF of RFC 7518 4.6.2 (SHA-256, no
PartyUInfo or PartyVInfo, as jwcrypto writes them) derives the AES-256 key
that wraps (RFC 3394) a fresh content key, and AES-256-GCM seals the
payload under a fresh 96-bit IV with the protected header as its
additional data. Every primitive is `cryptography`'s; this module only
puts them in the order and encoding the RFCs give.

jwcrypto's JWE object makes the same token at twice the cost of its
primitives (it copies its header registry and converts each key to JWK and
back for every token), which was a quarter of a release's CPU time. The
guest opens the token with jwcrypto (:mod:`barbican_tee.client.guest`);
the unit tests hold this module's tokens to jwcrypto's decryption and to
RFC 7638's thumbprint as jwcrypto computes it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf import concatkdf
from cryptography.hazmat.primitives import keywrap

ALG = "ECDH-ES+A256KW"
ENC = "A256GCM"
CURVE = "P-384"
# A P-384 coordinate: 48 bytes, big-endian (RFC 7518 6.2.1.2).
COORDINATE_BYTES = 48
_KEY_BITS = 256
# RFC 7518 4.6.2: AlgorithmID (the "alg" value, as key wrapping is used),
# PartyUInfo and PartyVInfo (empty: 4-byte zero lengths), SuppPubInfo
# (the derived key's length in bits).
_KDF_INFO = (len(ALG).to_bytes(4, "big") + ALG.encode("ascii") + bytes(8)
             + _KEY_BITS.to_bytes(4, "big"))
_IV_BYTES = 12
# 48 bytes in base64url: 64 characters, every one of them canonical (384
# bits fill them exactly, with no padding bits).
_COORDINATE = re.compile(r"[A-Za-z0-9_-]{64}")
_P384_PRIME = 2**384 - 2**128 - 2**96 + 2**32 - 1
# Members of the protected header that decide how the token is opened:
# this module's alone (apu/apv would change the key derivation).
_RESERVED = frozenset({"alg", "enc", "epk", "apu", "apv", "zip", "crit",
                       "iv", "tag", "p2s", "p2c", "jwk", "jku", "x5u",
                       "x5c", "x5t", "x5t#S256"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclasses.dataclass(frozen=True)
class Recipient:
    """The guest's public key on P-384 and its RFC 7638 thumbprint.

    Made only from canonical coordinates: base64url without padding of
    exactly 48 bytes each, below the field prime, naming a point on P-384
    (`cryptography` checks the point). Anything else is a ValueError.
    """

    x: str
    y: str
    key: ec.EllipticCurvePublicKey = dataclasses.field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        numbers = []
        for text in (self.x, self.y):
            if not isinstance(text, str) or not _COORDINATE.fullmatch(text):
                raise ValueError("a P-384 coordinate is 48 bytes, "
                                 "base64url without padding")
            value = int.from_bytes(base64.urlsafe_b64decode(text), "big")
            # `cryptography` would take x + p for x: another spelling,
            # and another thumbprint, of the same key.
            if value >= _P384_PRIME:
                raise ValueError("a P-384 coordinate must be below the prime")
            numbers.append(value)
        key = ec.EllipticCurvePublicNumbers(
            numbers[0], numbers[1], ec.SECP384R1()).public_key()
        object.__setattr__(self, "key", key)

    def thumbprint(self) -> bytes:
        """RFC 7638 SHA-256 thumbprint: 32 raw bytes.

        The members ``crv``, ``kty``, ``x``, ``y`` in that order, no
        whitespace; the coordinates are canonical (checked on creation).
        """
        doc = (f'{{"crv":"{CURVE}","kty":"EC","x":"{self.x}",'
               f'"y":"{self.y}"}}')
        return hashlib.sha256(doc.encode("ascii")).digest()

    def kid(self) -> str:
        """The thumbprint in base64url: the JWE's ``kid``."""
        return _b64url(self.thumbprint())


def seal(plaintext: bytes, recipient: Recipient,
         header: dict[str, Any]) -> str:
    """``plaintext`` as a compact JWE to ``recipient``.

    ``header`` holds the protected header's other members (``kid``, the
    lease); ``alg``, ``enc`` and ``epk`` are this function's.
    """
    if _RESERVED & header.keys():
        raise ValueError("the header members that decide how the token "
                         "is opened are not the caller's to set: "
                         + ", ".join(sorted(_RESERVED & header.keys())))
    ephemeral = ec.generate_private_key(ec.SECP384R1())
    shared = ephemeral.exchange(ec.ECDH(), recipient.key)
    kek = concatkdf.ConcatKDFHash(hashes.SHA256(), _KEY_BITS // 8,
                                  _KDF_INFO).derive(shared)
    cek = aead.AESGCM.generate_key(_KEY_BITS)
    encrypted_key = keywrap.aes_key_wrap(kek, cek)
    point = ephemeral.public_key().public_numbers()
    protected = dict(header, alg=ALG, enc=ENC, epk={
        "kty": "EC", "crv": CURVE,
        "x": _b64url(point.x.to_bytes(COORDINATE_BYTES, "big")),
        "y": _b64url(point.y.to_bytes(COORDINATE_BYTES, "big"))})
    encoded = _b64url(json.dumps(protected, separators=(",", ":"),
                                 sort_keys=True).encode("utf-8"))
    iv = os.urandom(_IV_BYTES)
    # RFC 7516 5.1 step 14: the additional data is ASCII(BASE64URL(header)).
    sealed = aead.AESGCM(cek).encrypt(iv, plaintext,
                                      encoded.encode("ascii"))
    return ".".join((encoded, _b64url(encrypted_key), _b64url(iv),
                     _b64url(sealed[:-16]), _b64url(sealed[-16:])))
