"""``tee_sealed``: a Barbican secret store whose secrets only attest out.

Secrets are sealed with AES-256-GCM under a key-encryption key from
``[tee_sealed] kek_file``; the ciphertext lives in Barbican's own secret
store metadata (so Barbican's backups, soft deletes and projects apply),
split over several rows because a metadata value holds 255 characters.

A sealed record (format version 2) is bound to its secret and carries its
own binding: the AAD covers the secret's id and project, and the binding
state (a generation counter, the policy it is bound to with a pin of that
policy's exact content, the instance it is tied to, whether that instance
was deleted). So the record itself, which a release must open, says who may
receive it:

* a record copied onto another secret (any project) does not open;
* editing, deleting or rolling back any one of its rows makes it not open;
* every change of the binding re-seals the record with the next
  generation, so an older copy of some of its rows does not open either.

What the database alone cannot detect is all of a record's rows written
back together (a restore of the whole record, as a database rollback does):
see the admin guide's trust model.

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
import dataclasses
import json
import os
from typing import Any

from barbican.common import exception
from barbican.plugin.interface import secret_store as ss
from barbican.plugin import store_crypto
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import uuidutils

from barbican_tee.conf import sealed as sealed_conf
from barbican_tee.plugin import keyring as keyring_mod

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

# Version 1: sealed blobs (SEV launch sessions) and the secrets of earlier
# releases, whose AAD names only the record; version 2: secrets bound to
# their identity and binding state.
BLOB_VERSION = "1"
RECORD_VERSION = "2"
_CHUNK = 240
_NONE = "-"
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


@dataclasses.dataclass(frozen=True)
class Binding:
    """Who may receive a sealed secret, as its record says.

    ``policy_pin`` is the hex SHA-256 of the bound policy row's content
    (id, project and document), so a policy row restored or replaced
    behind the API's back is not the one the record names.
    """

    generation: int = 0
    policy_id: str | None = None
    policy_pin: str | None = None
    instance_uuid: str | None = None
    retired: bool = False


@dataclasses.dataclass(frozen=True)
class Record:
    """The authenticated fields of a version 2 sealed record."""

    secret_id: str
    project_id: str
    kid: str
    secret_type: str
    binding: Binding


def load_keyring(conf: cfg.ConfigOpts) -> keyring_mod.Keyring:
    sealed_conf.register_opts(conf)
    return keyring_mod.Keyring.from_files(
        conf.tee_sealed.kek_file, list(conf.tee_sealed.previous_kek_files))


def _blob_aad(record: str, kid: str, label: str) -> bytes:
    return (f"openstack-tee:sealed:v{BLOB_VERSION}:{record}:{kid}:"
            f"{label}").encode()


def _encrypt(keyring: keyring_mod.Keyring, plaintext: bytes,
             aad_for: Any) -> dict[str, str]:
    record = binascii.hexlify(os.urandom(16)).decode()
    key = keyring.current
    nonce = os.urandom(12)
    ct = AESGCM(key.material).encrypt(nonce, plaintext,
                                      aad_for(record, key.kid))
    blob = base64.b64encode(nonce + ct).decode()
    meta = {"tee_record": record, "tee_kek": key.kid,
            "tee_chunks": str((len(blob) + _CHUNK - 1) // _CHUNK)}
    for i in range(0, len(blob), _CHUNK):
        meta[f"tee_ct_{i // _CHUNK}"] = blob[i:i + _CHUNK]
    return meta


def _decrypt(keyring: keyring_mod.Keyring, meta: dict[str, str],
             aad: bytes) -> bytes:
    try:
        count = int(meta["tee_chunks"])
        if not 0 < count <= 64:
            raise ValueError("chunk count")
        blob = "".join(meta[f"tee_ct_{i}"] for i in range(count))
        raw = base64.b64decode(blob, validate=True)
        kid = meta["tee_kek"]
    except (KeyError, ValueError, binascii.Error):
        raise SealedSecretError("the sealed record is incomplete",
                                "sealed_record_corrupt") from None
    try:
        key = keyring.get(kid)
    except keyring_mod.KeyringError as exc:
        raise SealedSecretError(str(exc), "sealed_kek_unknown") from None
    try:
        return AESGCM(key.material).decrypt(raw[:12], raw[12:], aad)
    except (InvalidTag, ValueError):
        raise SealedSecretError("the sealed record does not authenticate",
                                "sealed_record_corrupt") from None


# -- version 1: sealed blobs ------------------------------------------------
def seal(keyring: keyring_mod.Keyring, plaintext: bytes,
         label: str) -> dict[str, str]:
    """A sealed blob whose AAD names ``label`` (what it is and is for)."""
    meta = _encrypt(keyring, plaintext,
                    lambda record, kid: _blob_aad(record, kid, label))
    meta.update(tee_v=BLOB_VERSION, tee_type=label)
    return meta


def unseal(keyring: keyring_mod.Keyring, meta: dict[str, str],
           label: str | None = None) -> bytes:
    """The plaintext of a sealed blob, whose label must be ``label``.

    Without ``label``, the record's own (only for upgrading the version 1
    secrets of earlier releases, whose label is their secret type).
    """
    try:
        record, kid, own = (meta["tee_record"], meta["tee_kek"],
                            meta["tee_type"])
    except KeyError:
        raise SealedSecretError("the sealed record is incomplete",
                                "sealed_record_corrupt") from None
    if meta.get("tee_v", BLOB_VERSION) != BLOB_VERSION:
        raise SealedSecretError("not a sealed blob",
                                "sealed_record_corrupt")
    return _decrypt(keyring, meta,
                    _blob_aad(record, kid, own if label is None else label))


# -- version 2: sealed secrets ----------------------------------------------
def _opt(value: str | None) -> str:
    return _NONE if value is None else value


def _record_aad(record: str, kid: str, secret_type: str, secret_id: str,
                project_id: str, binding: Binding) -> bytes:
    return json.dumps(
        ["openstack-tee:sealed:v2", record, kid, secret_type, secret_id,
         project_id, binding.generation, _opt(binding.policy_id),
         _opt(binding.policy_pin), _opt(binding.instance_uuid),
         binding.retired], separators=(",", ":")).encode()


def seal_secret(keyring: keyring_mod.Keyring, plaintext: bytes,
                secret_type: str, secret_id: str, project_id: str,
                binding: Binding = Binding()) -> dict[str, str]:
    """Store metadata holding ``plaintext`` sealed to this secret."""
    meta = _encrypt(keyring, plaintext, lambda record, kid: _record_aad(
        record, kid, secret_type, secret_id, project_id, binding))
    meta.update(
        tee_v=RECORD_VERSION, tee_type=secret_type, tee_secret=secret_id,
        tee_project=project_id, tee_gen=str(binding.generation),
        tee_policy=_opt(binding.policy_id),
        tee_pin=_opt(binding.policy_pin),
        tee_instance=_opt(binding.instance_uuid),
        tee_retired="1" if binding.retired else "0")
    return meta


def _parse_binding(meta: dict[str, str]) -> Binding:
    def opt(key: str) -> str | None:
        value = meta[key]
        return None if value == _NONE else value

    retired = meta["tee_retired"]
    if retired not in ("0", "1"):
        raise ValueError("retired flag")
    return Binding(generation=int(meta["tee_gen"]),
                   policy_id=opt("tee_policy"), policy_pin=opt("tee_pin"),
                   instance_uuid=opt("tee_instance"),
                   retired=retired == "1")


def open_secret(keyring: keyring_mod.Keyring, meta: dict[str, str],
                secret_id: str) -> tuple[bytes, Record]:
    """The plaintext and authenticated record of secret ``secret_id``.

    The AAD is built from ``secret_id`` as the caller looked it up, never
    from the record's own copy, so a record moved onto another secret does
    not open. Only the release paths use the plaintext.
    """
    version = meta.get("tee_v", BLOB_VERSION)
    if version == BLOB_VERSION:
        raise SealedSecretError(
            "the secret was sealed by an earlier release, before records "
            "were bound to their secret: the operator runs `openstack-tee "
            "rewrap` once to bind it", "sealed_record_unbound")
    if version != RECORD_VERSION:
        raise SealedSecretError("unknown sealed record version",
                                "sealed_record_corrupt")
    if meta.get("tee_secret") != secret_id:
        raise SealedSecretError(
            "the sealed record belongs to another secret",
            "sealed_record_moved")
    try:
        record = Record(secret_id=secret_id,
                        project_id=meta["tee_project"], kid=meta["tee_kek"],
                        secret_type=meta["tee_type"],
                        binding=_parse_binding(meta))
        aad = _record_aad(meta["tee_record"], record.kid,
                          record.secret_type, secret_id, record.project_id,
                          record.binding)
    except (KeyError, ValueError):
        raise SealedSecretError("the sealed record is incomplete",
                                "sealed_record_corrupt") from None
    return _decrypt(keyring, meta, aad), record


def rebind(keyring: keyring_mod.Keyring, meta: dict[str, str],
           secret_id: str, **changes: Any
           ) -> tuple[dict[str, str], Record]:
    """The record re-sealed with ``changes`` and the next generation."""
    plaintext, record = open_secret(keyring, meta, secret_id)
    binding = dataclasses.replace(
        record.binding, generation=record.binding.generation + 1,
        **changes)
    new = seal_secret(keyring, plaintext, record.secret_type, secret_id,
                      record.project_id, binding)
    return new, dataclasses.replace(record, kid=new["tee_kek"],
                                    binding=binding)


def reseal(keyring: keyring_mod.Keyring, meta: dict[str, str],
           secret_id: str) -> dict[str, str] | None:
    """The record under the current KEK, or None if already there.

    The binding and its generation stay as they are.
    """
    if meta.get("tee_kek") == keyring.current.kid and meta.get(
            "tee_v") == RECORD_VERSION:
        return None
    plaintext, record = open_secret(keyring, meta, secret_id)
    return seal_secret(keyring, plaintext, record.secret_type, secret_id,
                       record.project_id, record.binding)


def upgrade_v1(keyring: keyring_mod.Keyring, meta: dict[str, str],
               secret_id: str, project_id: str,
               binding: Binding) -> dict[str, str]:
    """A version 1 secret of an earlier release, sealed to its secret.

    Only ``openstack-tee rewrap`` calls this, trusting the database at
    that moment (see the release note): the record's identity comes from
    where the rows are.
    """
    plaintext = unseal(keyring, meta)
    return seal_secret(keyring, plaintext, meta["tee_type"], secret_id,
                       project_id, binding)


def _identity(context: Any) -> tuple[str, str]:
    """The secret's id and Keystone project at store time.

    Barbican hands a crypto-adapter plugin the secret and project models.
    A new secret has no id until Barbican saves it, after the plugin
    returns; so the plugin gives it its id (a UUID, as Barbican would) and
    Barbican saves it under that id.
    """
    secret = getattr(context, "secret_model", None)
    project = getattr(context, "project_model", None)
    if secret is None or project is None or not project.external_id:
        raise SealedSecretError(
            "Barbican gave the sealed store no secret to seal to",
            "sealed_no_identity")
    if not secret.id:
        secret.id = uuidutils.generate_uuid()
        secret.project_id = project.id
    return str(secret.id), str(project.external_id)


class TEESealedSecretStore(ss.SecretStoreBase,  # type: ignore[misc]
                           store_crypto.StoreCryptoAdapterPlugin):  # type: ignore[misc]  # noqa: E501
    """Barbican secret store plugin ``tee_sealed``.

    It is a crypto-adapter plugin only in order to be handed the secret and
    project models (Barbican passes them to no other kind of store), to
    which every record is sealed; it keeps its ciphertext in the secret's
    store metadata like any other secret store.
    """

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

    def store_secret(self, secret_dto: Any,
                     context: Any = None) -> dict[str, str]:
        try:
            plaintext = base64.b64decode(secret_dto.secret)
        except (binascii.Error, TypeError, ValueError):
            raise ss.SecretPayloadDecodingError() from None
        secret_id, project_id = _identity(context)
        return seal_secret(self.keyring, plaintext, str(secret_dto.type),
                           secret_id, project_id)

    def generate_symmetric_key(self, key_spec: Any,
                               context: Any = None) -> dict[str, str]:
        bits = int(key_spec.bit_length or 256)
        if bits <= 0 or bits % 8:
            raise ss.SecretAlgorithmNotSupportedException(key_spec.alg)
        secret_id, project_id = _identity(context)
        return seal_secret(self.keyring, os.urandom(bits // 8),
                           ss.SecretType.SYMMETRIC, secret_id, project_id)

    def generate_asymmetric_key(self, key_spec: Any,
                                context: Any = None) -> Any:
        raise ss.SecretAlgorithmNotSupportedException(key_spec.alg)

    def generate_supports(self, key_spec: Any) -> bool:
        return bool(key_spec and key_spec.alg
                    and str(key_spec.alg).lower() in _SYMMETRIC)

    def get_secret(self, secret_type: Any, secret_metadata: Any,
                   context: Any = None) -> Any:
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
