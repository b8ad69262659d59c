"""Key-encryption keys of the sealed store, and what is derived from them.

The current KEK seals new secrets; previous KEKs still open old ones, so a
KEK can be rotated without losing a secret (``openstack-tee rewrap`` then
re-seals everything under the current key). Each key is named by a short
identifier derived from it (never the key itself), which sealed records
carry. Row MACs for the attestation tables use a key derived from the KEK
with HKDF, so one secret file protects both.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
import stat

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32


class KeyringError(Exception):
    """A KEK file is missing or unusable (the message names the file)."""


@dataclasses.dataclass(frozen=True)
class Key:
    kid: str
    material: bytes = dataclasses.field(repr=False)
    # Derived keys by purpose, derived once (HKDF is deterministic; the
    # purposes are the suite's own few labels). Kept with the KEK itself.
    _derived: dict[str, bytes] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False)

    def derive(self, purpose: str) -> bytes:
        found = self._derived.get(purpose)
        if found is None:
            found = self._derived[purpose] = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"openstack-tee:{purpose}:v1".encode()
            ).derive(self.material)
        return found


def key_id(material: bytes) -> str:
    # A public name for the key: a hash prefix, with its own label so it
    # cannot be confused with any other use of the key.
    return hashlib.sha256(b"openstack-tee:kek-id:" + material).hexdigest()[
        :16]


def load_key_file(path: str) -> Key:
    """The KEK in ``path``; refused if any user may read it.

    Only its owner (and group) may have access: a KEK readable by every
    local user is refused, with what to do, before it is read.
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o007:
                raise KeyringError(
                    f"the KEK file {path!r} is accessible to every local "
                    f"user (mode {stat.S_IMODE(mode):04o}): chmod 600 it, "
                    "owned by the user barbican-api runs as")
            text = f.read().strip()
    except OSError as exc:
        raise KeyringError(
            f"cannot read the KEK file {path!r}: {exc.strerror}") from None
    try:
        material = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(
            f"the KEK file {path!r} is not base64") from None
    if len(material) != KEY_SIZE:
        raise KeyringError(
            f"the KEK in {path!r} is {len(material)} bytes, not {KEY_SIZE} "
            "(make one with: head -c 32 /dev/urandom | base64)")
    return Key(kid=key_id(material), material=material)


def write_key_file(path: str) -> Key:
    """Create a new random KEK file (mode 0600); refuse to overwrite."""
    material = os.urandom(KEY_SIZE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(material) + b"\n")
    return Key(kid=key_id(material), material=material)


class Keyring:
    """The current KEK and the previous ones, by identifier."""

    def __init__(self, current: Key, previous: list[Key] | None = None
                 ) -> None:
        self.current = current
        self._by_id = {k.kid: k for k in (previous or [])}
        self._by_id[current.kid] = current

    @classmethod
    def from_files(cls, current: str | None,
                   previous: list[str]) -> Keyring:
        if not current:
            raise KeyringError(
                "[tee_sealed] kek_file is not set: the sealed store has no "
                "key-encryption key and will not start")
        return cls(load_key_file(current),
                   [load_key_file(p) for p in previous])

    def get(self, kid: str) -> Key:
        try:
            return self._by_id[kid]
        except KeyError:
            raise KeyringError(
                f"no KEK with id {kid} is configured (add its file to "
                "[tee_sealed] previous_kek_files)") from None

    def mac(self, kid: str, data: bytes) -> bytes:
        key = self.get(kid).derive("row-mac")
        return hmac.new(key, data, hashlib.sha256).digest()

    def check_mac(self, kid: str, data: bytes, mac: bytes | str) -> bool:
        """Whether ``mac`` (bytes, or hex as a row stores it) is ``data``'s.

        Anything else a database row may hold (not hex, NULL, another
        type, an unknown KEK id) is False: a row that does not
        authenticate, never an error.
        """
        if isinstance(mac, str):
            try:
                mac = bytes.fromhex(mac)
            except ValueError:
                return False
        if not isinstance(mac, bytes) or not isinstance(kid, str):
            return False
        try:
            expected = self.mac(kid, data)
        except KeyringError:
            return False
        return hmac.compare_digest(expected, mac)
