"""The release's JWE, held to jwcrypto's decryption and thumbprint."""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives import keywrap
from jwcrypto import common as jwc_common
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk

from barbican_tee.api import release_jwe
from barbican_tee.client import guest
from tests import base

PAYLOAD = b"\x00secret payload\xff" * 3
P384_PRIME = 2**384 - 2**128 - 2**96 + 2**32 - 1
P384_B = int("b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f"
             "5013875ac656398d8a2ed19d2a85c8edd3ec2aef", 16)


def _recipient(key: jwc_jwk.JWK) -> release_jwe.Recipient:
    public = guest.public_jwk(key)
    return release_jwe.Recipient(public["x"], public["y"])


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _content_key(token: str, key: jwc_jwk.JWK) -> tuple[bytes, bytes]:
    """(content key, plaintext), derived without jwcrypto or release_jwe.

    ECDH with the ephemeral key, the Concat KDF of RFC 7518 4.6.2 as its
    single SHA-256 round, AES key unwrap, AES-GCM with the encoded header
    as additional data.
    """
    header_b64, wrapped, iv, ciphertext, tag = token.split(".")
    epk = json.loads(_b64(header_b64))["epk"]
    point = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_b64(epk["x"]), "big"),
        int.from_bytes(_b64(epk["y"]), "big"), ec.SECP384R1()).public_key()
    private = key.get_op_key("unwrapKey")
    shared = private.exchange(ec.ECDH(), point)
    alg = b"ECDH-ES+A256KW"
    other = (len(alg).to_bytes(4, "big") + alg + (0).to_bytes(4, "big")
             + (0).to_bytes(4, "big") + (256).to_bytes(4, "big"))
    kek = hashlib.sha256((1).to_bytes(4, "big") + shared + other).digest()
    cek = keywrap.aes_key_unwrap(kek, _b64(wrapped))
    plaintext = aead.AESGCM(cek).decrypt(
        _b64(iv), _b64(ciphertext) + _b64(tag), header_b64.encode("ascii"))
    return cek, plaintext


def _open(token: str, key: jwc_jwk.JWK) -> tuple[bytes, dict]:
    """jwcrypto's decryption, limited to the release's algorithms."""
    token_obj = jwc_jwe.JWE(algs=[release_jwe.ALG, release_jwe.ENC])
    token_obj.deserialize(token, key=key)
    return token_obj.payload, token_obj.jose_header


class SealTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.key = guest.make_key()
        self.recipient = _recipient(self.key)

    def test_jwcrypto_opens_it(self) -> None:
        header = {"kid": "k1", "tee_max_age": 60, "tee_lease_exp": 7}
        token = release_jwe.seal(PAYLOAD, self.recipient, header)
        payload, jose = _open(token, self.key)
        self.assertEqual(PAYLOAD, payload)
        self.assertEqual((release_jwe.ALG, release_jwe.ENC, "k1", 60, 7),
                         (jose["alg"], jose["enc"], jose["kid"],
                          jose["tee_max_age"], jose["tee_lease_exp"]))
        self.assertEqual({"kty", "crv", "x", "y"}, set(jose["epk"]))
        self.assertEqual("P-384", jose["epk"]["crv"])
        # The guest's own path (the lease is read from the same header).
        self.assertEqual(PAYLOAD, guest.decrypt(token, self.key))
        self.assertEqual(5, len(token.split(".")))

    def test_short_and_long_payloads(self) -> None:
        # Barbican stores no empty payload (nor does jwcrypto open one).
        for payload in (b"x", bytes(range(256)) * 64):
            token = release_jwe.seal(payload, self.recipient, {})
            self.assertEqual(payload, _open(token, self.key)[0])

    def test_fresh_keys_and_iv_every_time(self) -> None:
        tokens = [release_jwe.seal(PAYLOAD, self.recipient, {})
                  for _ in range(2)]
        first, second = (t.split(".") for t in tokens)
        epk = [json.loads(_b64(t[0]))["epk"] for t in (first, second)]
        self.assertNotEqual(epk[0], epk[1])
        for part in range(1, 5):
            self.assertNotEqual(first[part], second[part])
        keys = [_content_key(t, self.key) for t in tokens]
        self.assertEqual([PAYLOAD, PAYLOAD], [k[1] for k in keys])
        self.assertNotEqual(keys[0][0], keys[1][0])
        self.assertEqual(32, len(keys[0][0]))
        self.assertEqual(12, len(_b64(first[2])))
        self.assertEqual(40, len(_b64(first[1])))  # a wrapped 256-bit key
        self.assertEqual(16, len(_b64(first[4])))

    def test_ephemeral_coordinates_are_full_length(self) -> None:
        # RFC 7518 6.2.1.2: 48 bytes for P-384, leading zeros included
        # (about one ephemeral key in 128 has one).
        for _ in range(400):
            epk = json.loads(_b64(release_jwe.seal(
                PAYLOAD, self.recipient, {}).split(".")[0]))["epk"]
            self.assertEqual([48, 48], [len(_b64(epk[c]))
                                        for c in ("x", "y")])

    def test_any_change_is_refused(self) -> None:
        token = release_jwe.seal(PAYLOAD, self.recipient, {"kid": "k"})
        parts = token.split(".")
        header = json.loads(_b64(parts[0]))
        changed = [dict(header, kid="other"), dict(header, tee_max_age=1)]
        forged = [".".join([base64.urlsafe_b64encode(json.dumps(h).encode())
                            .rstrip(b"=").decode()] + parts[1:])
                  for h in changed]
        for index in range(1, 5):
            raw = bytearray(_b64(parts[index]))
            raw[len(raw) // 2] ^= 1
            copy = list(parts)
            copy[index] = base64.urlsafe_b64encode(raw).rstrip(
                b"=").decode()
            forged.append(".".join(copy))
        for bad in forged:
            with self.assertRaises(jwc_common.JWException):
                _open(bad, self.key)
        # Another key cannot open it either.
        with self.assertRaises(jwc_common.JWException):
            _open(token, guest.make_key())

    def test_the_header_members_it_owns(self) -> None:
        for name in ("alg", "enc", "epk", "zip", "crit", "apu", "apv"):
            with self.assertRaises(ValueError):
                release_jwe.seal(PAYLOAD, self.recipient, {name: "x"})


class RecipientTest(base.TestCase):

    def test_thumbprint_is_jwcrypto_rfc7638(self) -> None:
        # Until a coordinate with a leading zero byte has been seen too.
        leading_zero = 0
        for _ in range(5000):
            key = guest.make_key()
            public = guest.public_jwk(key)
            self.assertEqual(guest.thumbprint(key),
                             _recipient(key).thumbprint())
            self.assertEqual(key.thumbprint(), _recipient(key).kid())
            leading_zero += any(_b64(public[c])[0] == 0 for c in "xy")
            if leading_zero >= 2:
                break
        self.assertGreaterEqual(leading_zero, 2)

    def test_only_canonical_points_on_p384(self) -> None:
        # A key whose x has a - or _: its standard-alphabet spelling
        # (+ or /) decodes to the same bytes in a lenient decoder.
        good = guest.public_jwk(guest.make_key())
        while not set("-_") & set(good["x"]):
            good = guest.public_jwk(guest.make_key())
        x, y = good["x"], good["y"]
        release_jwe.Recipient(x, y)
        zero = "A" * 64
        short = _b64text(_b64(x)[:47])
        standard = base64.b64encode(_b64(x)).decode()
        self.assertNotEqual(standard, x)
        for bad_x, bad_y in ((x, x), (zero, zero), (x[:-2], y),
                             (x + "=", y), ("AA" + x, y), (short, y),
                             (x, "_" * 64), ("/" * 64, y), (standard, y),
                             (x + "\n", y), (None, y)):
            with self.assertRaises(ValueError):
                release_jwe.Recipient(bad_x, bad_y)  # type: ignore[arg-type]

    def test_coordinates_below_the_prime_only(self) -> None:
        # A point with a small x: x + p also fits in 48 bytes, and
        # `cryptography` takes it for the same point (another spelling,
        # another thumbprint).
        x = 1
        while True:
            rhs = (x ** 3 - 3 * x + P384_B) % P384_PRIME
            y = pow(rhs, (P384_PRIME + 1) // 4, P384_PRIME)
            if y * y % P384_PRIME == rhs:
                break
            x += 1

        def text(n: int) -> str:
            return _b64text(n.to_bytes(48, "big"))

        release_jwe.Recipient(text(x), text(y))
        with self.assertRaises(ValueError):
            release_jwe.Recipient(text(x + P384_PRIME), text(y))
