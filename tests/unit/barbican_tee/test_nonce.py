"""The stateless challenge nonce: format, MAC, expiry, canonical text."""

from __future__ import annotations

import base64
import re
import string

from barbican_tee.api import nonce
from barbican_tee.client import guest
from tests import base

KEY = b"k" * 32
SECRET = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
OTHER = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f1"
NOW = 1_700_000_000


def _raw(text: str) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class NonceTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.nonce = nonce.issue(KEY, SECRET, NOW + 300)

    def test_live_nonce_checks_and_fits_the_release_route(self) -> None:
        self.assertEqual((None, NOW + 300),
                         nonce.check(KEY, self.nonce, SECRET, NOW))
        self.assertEqual((None, NOW + 300),
                         nonce.check(KEY, self.nonce, SECRET, NOW + 300))
        # The release route's pattern, and the guest's report_data input.
        self.assertRegex(self.nonce, r"^[A-Za-z0-9_-]{20,64}$")
        self.assertEqual(nonce.SIZE, len(_raw(self.nonce)))
        self.assertEqual(64, len(guest.report_data(
            self.nonce, guest.make_key())))
        raw = _raw(self.nonce)
        self.assertEqual(nonce.VERSION, raw[0])
        self.assertEqual(NOW + 300, int.from_bytes(raw[1:9], "big"))
        # Random: two nonces for the same secret and expiry differ.
        self.assertNotEqual(self.nonce, nonce.issue(KEY, SECRET, NOW + 300))

    def test_expired_only_when_authentic(self) -> None:
        self.assertEqual((nonce.EXPIRED, 0),
                         nonce.check(KEY, self.nonce, SECRET, NOW + 301))
        # A later expiry written into the nonce breaks its MAC.
        raw = _raw(nonce.issue(KEY, SECRET, NOW - 1))
        raw[1:9] = (NOW + 10_000).to_bytes(8, "big")
        self.assertEqual((nonce.UNKNOWN, 0),
                         nonce.check(KEY, _text(bytes(raw)), SECRET, NOW))

    def test_every_bit_is_covered(self) -> None:
        raw = _raw(self.nonce)
        for bit in range(len(raw) * 8):
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            with self.subTest(bit=bit):
                self.assertEqual(nonce.UNKNOWN, nonce.check(
                    KEY, _text(bytes(flipped)), SECRET, NOW)[0])

    def test_other_secret_key_or_version_is_unknown(self) -> None:
        self.assertEqual(nonce.UNKNOWN,
                         nonce.check(KEY, self.nonce, OTHER, NOW)[0])
        self.assertEqual(nonce.UNKNOWN,
                         nonce.check(b"x" * 32, self.nonce, SECRET, NOW)[0])
        # The secret id is taken in its canonical form either way.
        self.assertIsNone(nonce.check(KEY, nonce.issue(
            KEY, SECRET.upper(), NOW + 1), SECRET, NOW)[0])

    def test_only_the_canonical_text_is_accepted(self) -> None:
        swapped = re.sub(r"[a-zA-Z]", lambda m: m.group().swapcase(),
                         self.nonce, count=1)
        # The last character carries 2 unused bits: another spelling of the
        # same bytes (same report_data) must not be a new nonce.
        last = (string.ascii_uppercase + string.ascii_lowercase
                + string.digits + "-_")
        index = last.index(self.nonce[-1])
        respelled = self.nonce[:-1] + last[index ^ 1]
        self.assertEqual(bytes(_raw(respelled)), bytes(_raw(self.nonce)))
        for text in (swapped, respelled, self.nonce + "A", self.nonce[:-1],
                     "A" * 43, "A" * 55, "!" * 55, ""):
            with self.subTest(text=text):
                self.assertEqual(nonce.UNKNOWN,
                                 nonce.check(KEY, text, SECRET, NOW)[0])

    def test_spent_digest(self) -> None:
        digest = nonce.spent_digest(self.nonce)
        self.assertRegex(digest, r"^[0-9a-f]{64}$")
        self.assertNotEqual(digest, nonce.spent_digest(
            nonce.issue(KEY, SECRET, NOW + 300)))
        self.assertRaises(ValueError, nonce.spent_digest, "A" * 43)
