"""The release's JWE, held to jwcrypto's decryption and thumbprint."""

from __future__ import annotations

import base64
import json

from jwcrypto import common as jwc_common
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk

from barbican_tee.api import release_jwe
from barbican_tee.client import guest
from tests import base

PAYLOAD = b"\x00secret payload\xff" * 3


def _recipient(key: jwc_jwk.JWK) -> release_jwe.Recipient:
    public = guest.public_jwk(key)
    return release_jwe.Recipient.from_coordinates(public["x"], public["y"])


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
        first, second = (release_jwe.seal(PAYLOAD, self.recipient, {})
                         .split(".") for _ in range(2))
        epk = [json.loads(_b64(t[0]))["epk"] for t in (first, second)]
        self.assertNotEqual(epk[0], epk[1])
        for part in range(1, 5):
            self.assertNotEqual(first[part], second[part])
        self.assertEqual(12, len(_b64(first[2])))
        self.assertEqual(40, len(_b64(first[1])))  # a wrapped 256-bit key
        self.assertEqual(16, len(_b64(first[4])))

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
        for name in ("alg", "enc", "epk", "zip", "crit"):
            with self.assertRaises(ValueError):
                release_jwe.seal(PAYLOAD, self.recipient, {name: "x"})


class RecipientTest(base.TestCase):

    def test_thumbprint_is_jwcrypto_rfc7638(self) -> None:
        # Many keys: some coordinates start with zero bytes.
        for _ in range(200):
            key = guest.make_key()
            self.assertEqual(guest.thumbprint(key),
                             _recipient(key).thumbprint())

    def test_only_canonical_points_on_p384(self) -> None:
        good = guest.public_jwk(guest.make_key())
        x, y = good["x"], good["y"]
        release_jwe.Recipient.from_coordinates(x, y)
        zero = "A" * 64
        short = base64.urlsafe_b64encode(_b64(x)[:47]).rstrip(b"=").decode()
        # Python's decoder takes the standard alphabet's + and / as well.
        standard = base64.b64encode(_b64(x)).decode()
        for bad_x, bad_y in ((x, x), (zero, zero), (x[:-2], y),
                             (x + "=", y), ("AA" + x, y), (short, y),
                             (x, "_" * 64), ("/" * 64, y)):
            with self.assertRaises(ValueError):
                release_jwe.Recipient.from_coordinates(bad_x, bad_y)
        if standard != x:
            with self.assertRaises(ValueError):
                release_jwe.Recipient.from_coordinates(standard, y)
