"""Stateless, self-authenticating challenge nonces.

``POST /v1/tee/challenge`` writes nothing: the nonce carries its own expiry
and a MAC over the secret it was issued for, under a key derived from the
sealed store's KEK. Its bytes (41, 55 base64url characters, all within the
release route's ``[A-Za-z0-9_-]{20,64}``) are::

    version (1) || expires_at (8, big-endian unix seconds) || random (16)
    || HMAC-SHA256(key, LABEL || secret_id || version || expires_at
                   || random)[:16]

The guest hashes the decoded bytes into its report data as before, so the
nonce's inside is no business of the client. A release checks the MAC (in
constant time) and the expiry here, and only then spends the nonce: one
``INSERT`` of :func:`spent_digest` into a table with that digest as its
primary key (see :meth:`barbican_tee.api.db.Store.spend_nonce`).

Only the canonical base64url text of the bytes is accepted: base64
decoders ignore the unused low bits of the last character, and a second
spelling of a spent nonce would otherwise be a new string for the same
report data. The spent table is keyed by the decoded bytes as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import uuid

VERSION = 1
LABEL = b"openstack-tee:nonce:v1"
_RANDOM = 16
_MAC = 16
_HEAD = struct.Struct(">BQ")
SIZE = _HEAD.size + _RANDOM + _MAC
# Spent rows outlive their nonce by this much before they are pruned, so
# that API hosts whose clocks differ by less than this cannot be played
# against each other (a row pruned by a host ahead of the one that still
# accepts the nonce).
PRUNE_GRACE = 600

UNKNOWN = "nonce_unknown"
EXPIRED = "nonce_expired"


def _mac(key: bytes, secret_id: str, head: bytes, rand: bytes) -> bytes:
    # secret_id is a canonical UUID (36 characters) and every other field
    # has a fixed size, so the concatenation is unambiguous.
    data = LABEL + secret_id.encode() + head + rand
    return hmac.new(key, data, hashlib.sha256).digest()[:_MAC]


def _canonical(secret_id: str) -> str:
    return str(uuid.UUID(secret_id))


def issue(key: bytes, secret_id: str, expires_at: int) -> str:
    """A new nonce for ``secret_id``, valid until ``expires_at``."""
    head = _HEAD.pack(VERSION, expires_at)
    rand = os.urandom(_RANDOM)
    raw = head + rand + _mac(key, _canonical(secret_id), head, rand)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(nonce: str) -> bytes | None:
    """The nonce's bytes if ``nonce`` is their canonical text, else None."""
    if len(nonce) != (SIZE * 4 + 2) // 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != SIZE or (
            base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != nonce):
        return None
    return raw


def check(key: bytes, nonce: str, secret_id: str, now: int
          ) -> tuple[str | None, int]:
    """``(None, expires_at)`` for a live nonce of ``secret_id``.

    Otherwise ``(code, 0)``: ``nonce_unknown`` for anything this service
    did not issue for this secret (wrong length, spelling, version or
    MAC), ``nonce_expired`` for an authentic nonce past its expiry. The
    MAC is checked before the expiry is believed.
    """
    raw = decode(nonce)
    if raw is None:
        return UNKNOWN, 0
    head = raw[:_HEAD.size]
    rand = raw[_HEAD.size:_HEAD.size + _RANDOM]
    tag = raw[_HEAD.size + _RANDOM:]
    expected = _mac(key, _canonical(secret_id), head, rand)
    version, expires_at = _HEAD.unpack(head)
    if not hmac.compare_digest(tag, expected) or version != VERSION:
        return UNKNOWN, 0
    if expires_at < now:
        return EXPIRED, 0
    return None, expires_at


def spent_digest(nonce: str) -> str:
    """The spent-nonce table's key: lowercase hex SHA-256 of the bytes."""
    raw = decode(nonce)
    if raw is None:
        raise ValueError("not a nonce this service issues")
    return hashlib.sha256(b"openstack-tee:spent-nonce:" + raw).hexdigest()
