"""``tee_sealed``: a Barbican secret store whose secrets only attest out.

Secrets are sealed with AES-256-GCM under a key-encryption key from
``[tee_sealed] kek_file``; the ciphertext lives in Barbican's own secret
store metadata (so Barbican's backups, soft deletes and projects apply),
split over several rows because a metadata value holds 255 characters.
The AAD binds each ciphertext to its record (record id, key id, secret
type), so rows cannot be swapped between secrets.

The ordinary payload API never returns a sealed secret: the paste filter
answers ``GET /v1/secrets/{id}/payload`` with 403 for every role, and this
plugin's ``get_secret`` refuses as a second line. The plaintext leaves only
through ``POST /v1/tee/release``, as a JWE to an attested guest's key.

Barbican records this class's path (``barbican_tee.plugin.store.
TEESealedSecretStore``) with every secret: it must never move.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from barbican.common import exception
from barbican.plugin.interface import secret_store as ss
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from oslo_config import cfg
from oslo_log import log as logging

from barbican_tee.conf import sealed as sealed_conf
from barbican_tee.plugin import keyring as keyring_mod

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

RECORD_VERSION = "1"
_CHUNK = 240
_SYMMETRIC = {ss.KeyAlgorithm.AES, ss.KeyAlgorithm.HMACSHA1,
              ss.KeyAlgorithm.HMACSHA256, ss.KeyAlgorithm.HMACSHA384,
              ss.KeyAlgorithm.HMACSHA512}
PLUGIN_PATH = "barbican_tee.plugin.store.TEESealedSecretStore"


class SealedSecretError(
        exception.BarbicanHTTPException):  # type: ignore[misc]
    """A sealed secret cannot be opened (the message never has secrets).

    A Barbican HTTP exception, so that when Barbican itself meets it (the
    payload API reaching ``get_secret``) the client gets a 403 with this
    message, not a 500.
    """

    status_code = 403

    def __init__(self, message: str, code: str) -> None:
        # Not BarbicanException's constructor: it %-formats the message.
        Exception.__init__(self, message)
        self.message = message
        self.client_message = message
        self.code = code


def load_keyring(conf: cfg.ConfigOpts) -> keyring_mod.Keyring:
    sealed_conf.register_opts(conf)
    return keyring_mod.Keyring.from_files(
        conf.tee_sealed.kek_file, list(conf.tee_sealed.previous_kek_files))


def _aad(record: str, kid: str, secret_type: str) -> bytes:
    return (f"openstack-tee:sealed:v{RECORD_VERSION}:{record}:{kid}:"
            f"{secret_type}").encode()


def seal(keyring: keyring_mod.Keyring, plaintext: bytes,
         secret_type: str) -> dict[str, str]:
    """Store metadata holding ``plaintext`` sealed under the current KEK."""
    record = binascii.hexlify(os.urandom(16)).decode()
    key = keyring.current
    nonce = os.urandom(12)
    ct = AESGCM(key.material).encrypt(nonce, plaintext,
                                      _aad(record, key.kid, secret_type))
    blob = base64.b64encode(nonce + ct).decode()
    meta = {"tee_v": RECORD_VERSION, "tee_record": record,
            "tee_kek": key.kid, "tee_type": secret_type,
            "tee_chunks": str((len(blob) + _CHUNK - 1) // _CHUNK)}
    for i in range(0, len(blob), _CHUNK):
        meta[f"tee_ct_{i // _CHUNK}"] = blob[i:i + _CHUNK]
    return meta


def unseal(keyring: keyring_mod.Keyring, meta: dict[str, str]) -> bytes:
    """The plaintext of a sealed record; only the release path calls it."""
    try:
        count = int(meta["tee_chunks"])
        blob = "".join(meta[f"tee_ct_{i}"] for i in range(count))
        raw = base64.b64decode(blob, validate=True)
        record, kid, secret_type = (meta["tee_record"], meta["tee_kek"],
                                    meta["tee_type"])
    except (KeyError, ValueError, binascii.Error):
        raise SealedSecretError("the sealed record is incomplete",
                                "sealed_record_corrupt") from None
    try:
        key = keyring.get(kid)
    except keyring_mod.KeyringError as exc:
        raise SealedSecretError(str(exc), "sealed_kek_unknown") from None
    try:
        return AESGCM(key.material).decrypt(
            raw[:12], raw[12:], _aad(record, kid, secret_type))
    except (InvalidTag, ValueError):
        raise SealedSecretError("the sealed record does not authenticate",
                                "sealed_record_corrupt") from None


def reseal(keyring: keyring_mod.Keyring,
           meta: dict[str, str]) -> dict[str, str] | None:
    """New metadata under the current KEK, or None if already current."""
    if meta.get("tee_kek") == keyring.current.kid:
        return None
    return seal(keyring, unseal(keyring, meta), meta["tee_type"])


class TEESealedSecretStore(ss.SecretStoreBase):  # type: ignore[misc]
    """Barbican secret store plugin ``tee_sealed``."""

    def __init__(self, conf: cfg.ConfigOpts = CONF) -> None:
        # A missing or bad KEK stops barbican-api here, loudly: Barbican
        # would otherwise skip this plugin and store elsewhere.
        try:
            self.keyring = load_keyring(conf)
        except keyring_mod.KeyringError as exc:
            LOG.critical("openstack-tee sealed store cannot start: %s", exc)
            raise

    def get_plugin_name(self) -> str:
        return "TEE sealed store (attested release only)"

    def store_secret(self, secret_dto: Any) -> dict[str, str]:
        try:
            plaintext = base64.b64decode(secret_dto.secret)
        except (binascii.Error, TypeError, ValueError):
            raise ss.SecretPayloadDecodingError() from None
        return seal(self.keyring, plaintext, str(secret_dto.type))

    def generate_symmetric_key(self, key_spec: Any) -> dict[str, str]:
        bits = int(key_spec.bit_length or 256)
        if bits <= 0 or bits % 8:
            raise ss.SecretAlgorithmNotSupportedException(key_spec.alg)
        return seal(self.keyring, os.urandom(bits // 8),
                    ss.SecretType.SYMMETRIC)

    def generate_asymmetric_key(self, key_spec: Any) -> Any:
        raise ss.SecretAlgorithmNotSupportedException(key_spec.alg)

    def generate_supports(self, key_spec: Any) -> bool:
        return bool(key_spec and key_spec.alg
                    and str(key_spec.alg).lower() in _SYMMETRIC)

    def get_secret(self, secret_type: Any, secret_metadata: Any) -> Any:
        raise SealedSecretError(
            "this secret is sealed: it is released only to an attested "
            "guest through POST /v1/tee/release", "secret_sealed")

    def delete_secret(self, secret_metadata: Any) -> None:
        # The ciphertext is in Barbican's metadata rows, deleted with the
        # secret; nothing is kept anywhere else.
        return None

    def store_secret_supports(self, key_spec: Any) -> bool:
        return True

    def get_transport_key(self) -> None:
        return None

    def is_transport_key_current(self, transport_key: Any) -> bool:
        return False
